//! Evaluation: how good a model is.
//!
//! - [`metrics`]: confusion, precision / recall, AUROC, miss and false-reject rates, and the
//!   val metrics of a set of probabilities (used by the trainers to pick a threshold);
//! - [`eval`]: `inspector eval`, a model file against a dataset split;
//! - [`parts`]: figures per physical part and the parts whose images contradict their label.
//!
//! Imports only [`crate::data`].

pub mod eval;
pub mod metrics;
pub mod parts;
