//! Defect Inspector: the library behind the `inspector` binary (the window and the CLI).
//!
//! Three jobs, in layers (each imports only the layers below it; see ARCHITECTURE.md):
//!
//! - [`data`]: datasets, labelling, image files, bundled assets (the bottom layer);
//! - [`evaluation`]: metrics and `inspector eval`;
//! - [`station`]: frame sources, the inspection pipeline, display helpers;
//! - [`training`]: whole-image, head and anomaly training behind one [`training::train`];
//! - [`records`]: the verdict history, model versions, settings;
//! - the top: [`ui`] (the eframe app), [`headless`] (`inspector inspect`, `cameras`,
//!   `history`), [`bench`] (`inspector bench`), [`line_station`] (the line I/O put together:
//!   Modbus, fail-safe, MQTT), [`bench_io`] (`inspector bench-io`: the line I/O's latency and
//!   rates), [`bench_records`] (`inspector bench-history`, `bench-forward`: the history's and
//!   the plant database's limits) and [`cli`] (argument parsing and dispatch).

pub mod bench;
pub mod bench_io;
pub mod bench_records;
pub mod cli;
pub mod data;
pub mod evaluation;
pub mod headless;
pub mod line_station;
pub mod records;
pub mod station;
pub mod training;
pub mod ui;
