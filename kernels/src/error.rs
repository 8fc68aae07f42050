//! Typed errors of the kernels crate.

use std::path::PathBuf;

/// A `ModelSpec` that breaks a rule.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Wrong format tag or version.
    #[error("model format: {0}")]
    Format(String),
    /// Bad input description.
    #[error("model input: {0}")]
    Input(String),
    /// Bad class list.
    #[error("model classes: {0}")]
    Classes(String),
    /// Threshold outside 0..=1.
    #[error("model threshold must be within 0..=1, found {0}")]
    Threshold(f32),
    /// A review band whose lower edge is not within 0..=threshold.
    #[error(
        "model review band: its PASS threshold {pass} must be within 0 and the FAIL threshold {fail}"
    )]
    ReviewBand {
        /// The lower edge.
        pass: f32,
        /// The FAIL threshold.
        fail: f32,
    },
    /// Bad layer list as a whole.
    #[error("model layers: {0}")]
    Layers(String),
    /// One layer is wrong.
    #[error("layer {index} ({kind}): {msg}")]
    Layer {
        /// Layer index.
        index: usize,
        /// Layer kind.
        kind: &'static str,
        /// What is wrong.
        msg: String,
    },
}

/// Why a model file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// I/O failure on the file.
    #[error("cannot {action} model file {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than any model this build accepts.
    #[error(
        "model file is {size} bytes, larger than the {limit}-byte limit: is it really a model?"
    )]
    TooLarge {
        /// File size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// Not a readable safetensors container.
    #[error("not a valid safetensors model file (damaged or truncated?): {0}")]
    Container(String),
    /// No `model_spec` metadata.
    #[error(
        "the file has no model_spec metadata: it is a safetensors file, but not a Defect Inspector model"
    )]
    MissingSpec,
    /// The metadata is not valid `ModelSpec` JSON.
    #[error("the model_spec metadata is not valid: {0}")]
    SpecJson(String),
    /// The spec breaks a rule.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A tensor the spec needs is missing.
    #[error("layer {layer} ({kind}): tensor {name:?} is missing")]
    MissingTensor {
        /// Layer index.
        layer: usize,
        /// Layer kind.
        kind: &'static str,
        /// Tensor name.
        name: String,
    },
    /// A tensor has the wrong shape or type.
    #[error("layer {layer} ({kind}): tensor {name:?} has {found}, expected {expected}")]
    BadTensor {
        /// Layer index.
        layer: usize,
        /// Layer kind.
        kind: &'static str,
        /// Tensor name.
        name: String,
        /// What the spec requires.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("layer {layer} ({kind}): tensor {name:?} holds a non-finite value")]
    NonFinite {
        /// Layer index.
        layer: usize,
        /// Layer kind.
        kind: &'static str,
        /// Tensor name.
        name: String,
    },
    /// The file holds tensors the spec does not know.
    #[error("unexpected tensor {0:?}: the file does not match its model_spec")]
    UnexpectedTensor(String),
}

/// Failures of the GPU engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No adapter could be found.
    #[error(
        "no GPU adapter found (WGPU_BACKEND={backend_env:?}). On a machine without a GPU install Mesa's \
         Vulkan software driver: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu); otherwise install \
         your GPU vendor's Vulkan driver. Details: {detail}"
    )]
    NoAdapter {
        /// The value of `WGPU_BACKEND`, if set.
        backend_env: Option<String>,
        /// wgpu's message.
        detail: String,
    },
    /// The adapter refused to create a device.
    #[error("the GPU adapter {adapter:?} refused to create a device: {detail}")]
    Device {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        detail: String,
    },
    /// The model is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The model needs a buffer larger than the device allows.
    #[error(
        "{what} needs {bytes} bytes, more than this GPU allows in one buffer ({limit}); lower the batch size or the model input size"
    )]
    TooLargeForDevice {
        /// What buffer.
        what: String,
        /// Needed size.
        bytes: u64,
        /// Device limit.
        limit: u64,
    },
    /// Bad call arguments.
    #[error("frame {index}: {msg}")]
    BadFrame {
        /// Frame index in the batch.
        index: usize,
        /// What is wrong.
        msg: String,
    },
    /// Too many frames in one call.
    #[error("batch of {got} frames exceeds this engine's maximum batch of {max}")]
    BatchTooLarge {
        /// Frames given.
        got: usize,
        /// Maximum.
        max: u32,
    },
    /// The GPU reported an error while running.
    #[error("GPU error: {0}")]
    Gpu(String),
}
