//! Defect Inspector: the library behind the `inspector` binary (CLI now, the app window later).
//!
//! - [`cli`]: argument parsing and dispatch.
//! - [`bench`]: `inspector bench`, the engine vs burn vs CPU benchmark.
//! - [`nn`]: burn modules built from a `kernels::ModelSpec`.

pub mod bench;
pub mod cli;
pub mod nn;
