//! Data: the lowest layer, shared by the station, training, evaluation and the records.
//!
//! - [`dataset`]: image datasets (folder-per-class or CSV manifest), decoding, splits;
//! - [`labeling`]: editable label sets and defect masks for the Label tab;
//! - [`files`]: which files are images, content fingerprints;
//! - [`assets`]: the files that ship with the app (default model, backbone, demo images).
//!
//! Imports nothing from the rest of the app.

pub mod assets;
pub mod dataset;
pub mod files;
pub mod labeling;
