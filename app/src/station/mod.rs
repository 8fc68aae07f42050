//! The station: live inspection of parts.
//!
//! - [`source`]: frame sources (image folders, cameras, the synthetic source);
//! - [`pipeline`]: the capture and inference workers and the [`pipeline::Verdict`] they emit;
//! - [`display`]: frames and heatmaps as pixels for people.
//!
//! The headless commands (`inspector inspect`, `cameras`, `history`) sit above this layer in
//! [`crate::headless`], because they also write the records. Imports only [`crate::data`].

pub mod display;
pub mod pipeline;
pub mod source;
