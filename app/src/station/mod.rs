//! The station: live inspection of parts.
//!
//! - [`source`]: frame sources (image folders, cameras, the synthetic source);
//! - [`pipeline`]: the capture and inference workers;
//! - [`verdict`]: what they report: the [`verdict::Verdict`], events, counters, the loaded model;
//! - [`display`]: frames and heatmaps as pixels for people;
//! - [`trigger`]: triggered capture (one frame per trigger);
//! - [`line_io`]: the PLC's trigger and results over Modbus TCP, the fail-safe.
//!
//! The headless commands (`inspector inspect`, `cameras`, `history`) sit above this layer in
//! [`crate::headless`], because they also write the records. Imports only [`crate::data`].

pub mod display;
pub mod line_io;
pub mod pipeline;
pub mod source;
pub mod trigger;
pub mod verdict;
