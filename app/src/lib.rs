//! Defect Inspector: the library behind the `inspector` binary (the window and the CLI).
//!
//! - [`ui`]: the eframe app (Inspect, Label, Train, History, Settings tabs).
//! - [`labeling`], [`versions`]: editable datasets and masks; saved model versions.
//! - [`source`] → [`pipeline`]: frame sources, capture and inference workers.
//! - [`history`]: the SQLite verdict store and its writer thread; [`display`]: pixels for people.
//! - [`headless`]: `inspector inspect`, `cameras`, `history`.
//! - [`cli`]: argument parsing and dispatch.
//! - [`bench`]: `inspector bench`, the engine vs burn vs CPU benchmark.
//! - [`nn`]: burn modules built from a `kernels::ModelSpec`.
//! - [`dataset`], [`augment`], [`train`], [`train_head`], [`head_checkpoint`], [`metrics`]:
//!   datasets, training (and resuming it) and evaluation.

pub mod augment;
pub mod bench;
pub mod cli;
pub mod dataset;
pub mod display;
pub mod eval;
pub mod head_checkpoint;
pub mod headless;
pub mod history;
pub mod labeling;
pub mod metrics;
pub mod nn;
pub mod pipeline;
pub mod settings;
pub mod source;
pub mod train;
pub mod train_anomaly;
pub mod train_head;
pub mod ui;
pub mod versions;
