//! Defect Inspector: the library behind the `inspector` binary (CLI now, the app window later).
//!
//! - [`cli`]: argument parsing and dispatch.
//! - [`bench`]: `inspector bench`, the engine vs burn vs CPU benchmark.
//! - [`nn`]: burn modules built from a `kernels::ModelSpec`.
//! - [`dataset`], [`augment`], [`train`], [`metrics`]: datasets, training and evaluation.

pub mod augment;
pub mod bench;
pub mod cli;
pub mod dataset;
pub mod eval;
pub mod metrics;
pub mod nn;
pub mod train;
