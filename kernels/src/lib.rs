//! GPU inference for Defect Inspector, in our own WGSL compute kernels on wgpu.
//!
//! - [`ModelSpec`] / [`Model`]: the model description and the `.safetensors` model file, the
//!   contract between training and inference.
//! - [`Engine`]: runs a model on a wgpu device (shared with the app's renderer, or its own
//!   [`GpuContext`]) from raw 8-bit frames to probabilities and a class-activation heatmap.
//! - [`reference`]: a plain CPU implementation of the same path, the yardstick for tests.
//!
//! This crate knows nothing of egui, burn or the app.

pub mod backbone;
mod engine;
mod error;
mod frame;
mod gpu;
mod model;
pub mod ops;
pub mod reference;
pub mod rng;
mod spec;

pub use engine::{DispatchStats, Engine, OpTime, Profile, crop_heatmap};
pub use error::{EngineError, ModelError, SpecError};
pub use frame::{Frame, MAX_FRAME_SIDE, PixelFormat, Roi};
pub use gpu::GpuContext;
pub use model::{LayerWeights, MAX_FILE_BYTES, Model, SPEC_METADATA_KEY};
pub use spec::{
    Decision, FORMAT_TAG, FORMAT_VERSION, InputSpec, Layer, ModelSpec, Plan, Resize, Shape3,
    limits, local_stride, pooled_side, valid_cells,
};

/// What the model says about one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    /// One probability per class, in the spec's class order; they sum to 1.
    pub probabilities: Vec<f32>,
    /// Where the most likely defect class is, at the last feature map's resolution.
    pub heatmap: Heatmap,
}

/// A class-activation map: `values[y * width + x]`, raw (unnormalised) class evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Width in feature-map cells.
    pub width: u32,
    /// Height in feature-map cells.
    pub height: u32,
    /// The class it shows: the most probable FAIL class.
    pub class_index: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}
