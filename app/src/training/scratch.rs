//! Training defect classifiers with burn: presets built from `ModelSpec`, class-weighted loss,
//! seeded augmentation, SGD / momentum / Adam(W), cosine learning-rate schedule with warm-up,
//! early stopping on val, the best epoch kept, checkpoints to resume from, and export to the
//! `kernels` model file with batch-norm folded and the decision threshold chosen on val.
//!
//! The loop is written by hand (no burn-train) so the CLI and the app's Train tab can drive it
//! through one [`Progress`] callback and one cancel flag.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use kernels::{InputSpec, Layer, LayerWeights, Model, ModelSpec, Resize, Roi};
use serde::{Deserialize, Serialize};

use crate::augment::{self, AugmentConfig};
use crate::dataset::{self, Dataset, DecodedImage, Sample};
use crate::metrics::{self, Confusion};
use crate::nn::{Block, BurnModel};

/// Which optimizer to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum 0.9 (Nesterov).
    Momentum,
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Where to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-wgpu on the GPU (lavapipe on machines without one).
    Wgpu,
    /// burn's pure-Rust CPU backend (flex).
    Cpu,
    /// wgpu on a real GPU, the CPU backend where the only adapter is a CPU rasteriser.
    Auto,
}

/// What a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    /// A defect classifier from labelled good and defective images (and masks).
    #[default]
    Classifier,
    /// An anomaly model from good images only (`train_anomaly`): a memory bank of good-part
    /// features; a backbone preset is needed.
    Anomaly,
}

/// Everything a training run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Dataset folder.
    pub data: PathBuf,
    /// Model file to write.
    pub out: PathBuf,
    /// Training split name.
    pub split_train: String,
    /// Validation split name.
    pub split_val: String,
    /// Preset name (see [`PRESETS`]).
    pub preset: String,
    /// Epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// PASS classes (empty: recognise common names).
    pub pass: Vec<String>,
    /// Backend.
    pub backend: BackendKind,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Stop after this many epochs without val improvement (0 = never).
    pub patience: usize,
    /// Largest val miss rate the chosen threshold may have.
    pub max_miss_rate: f64,
    /// Fraction of training rows carved out for val when the dataset has none.
    pub val_fraction: f64,
    /// Continue from the checkpoint next to `out` if there is one.
    pub resume: bool,
    /// Classifier or anomaly model.
    #[serde(default)]
    pub mode: TrainMode,
    /// Anomaly mode: memory-bank entries (`None`: 10 % of the good positions).
    #[serde(default)]
    pub bank: Option<usize>,
    /// Anomaly mode without defective val images: the largest false-reject rate of the good
    /// val images at the chosen threshold.
    #[serde(default = "default_max_false_reject")]
    pub max_false_reject: f64,
    /// Anomaly mode: how the bank is chosen from the good positions.
    #[serde(default)]
    pub coreset: CoresetKind,
    /// Anomaly mode: support size of the score reweighting (1 = the raw nearest distance).
    #[serde(default = "default_neighbors")]
    pub neighbors: u32,
}

/// How an anomaly model's memory bank is chosen from the good positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CoresetKind {
    /// Greedy k-center (PatchCore): each entry is the position farthest from those chosen.
    #[default]
    Greedy,
    /// A seeded random sample (faster; for comparison).
    Random,
}

fn default_neighbors() -> u32 {
    crate::train_anomaly::NEIGHBORS
}

fn default_max_false_reject() -> f64 {
    0.01
}

impl TrainConfig {
    /// Defaults that work without touching anything.
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            out,
            split_train: "train".into(),
            split_val: "val".into(),
            preset: DEFAULT_PRESET.into(),
            epochs: DEFAULT_EPOCHS,
            batch_size: 16,
            optimizer: DEFAULT_OPTIMIZER,
            lr: DEFAULT_LR,
            weight_decay: 1e-4,
            seed: 42,
            pass: Vec::new(),
            backend: BackendKind::Auto,
            augment: AugmentConfig::default(),
            patience: 10,
            max_miss_rate: 0.01,
            val_fraction: 0.15,
            resume: false,
            mode: TrainMode::Classifier,
            bank: None,
            max_false_reject: default_max_false_reject(),
            coreset: CoresetKind::Greedy,
            neighbors: default_neighbors(),
        }
    }
}

/// A model preset: input side and feature layers (global pool + classifier are appended).
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Name.
    pub name: &'static str,
    /// What it is for.
    pub about: &'static str,
    /// Input side in pixels (square).
    pub side: u32,
    /// Feature layers: (out channels, kernel, stride, max-pool window after: 0 = none, `k` = a
    /// `k`×`k` window with stride `k`).
    pub convs: &'static [(u32, u32, u32, u32)],
    /// How the feature map becomes class scores.
    pub head: Head,
    /// Side of the square patches a [`Head::MaxScore`] model trains on (0: whole images). The
    /// network is convolutional up to its max pool, so it trains on patches of the input-size
    /// image and judges whole images; with masks, a patch is defective exactly when it holds
    /// defect pixels. Patches spend the compute on the defects instead of on acres of clean
    /// surface, which is what lets a CPU train at a resolution small defects survive.
    pub patch: u32,
    /// `Some(resize)`: the pretrained backbone with a per-position head (`train_head`), the
    /// input `side`×`side` pixels, the region stretched or fitted keeping its shape.
    pub backbone: Option<Resize>,
}

/// The classifier head of a preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Global average pool of the features, then the linear classifier.
    Avg,
    /// A 1×1 convolution scoring every position for every class (no relu), the global max pool
    /// (the image is judged by its most defect-like position), then a linear calibration. The
    /// score map is trained from the defect masks where the dataset has them.
    MaxScore,
}

/// The presets. `ref-cnn` is the kernels benchmark model.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        about: "for tests and smoke runs: 32×32, 2 convs (8-16)",
        side: 32,
        convs: &[(8, 3, 1, 2), (16, 3, 1, 0)],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tiny-seg",
        about: "for tests and smoke runs: tiny with the mask-trained max-score head",
        side: 32,
        convs: &[(8, 3, 1, 2), (16, 3, 1, 0)],
        head: Head::MaxScore,
        patch: 24,
        backbone: None,
    },
    Preset {
        name: "ref-cnn",
        about: "the kernels benchmark CNN: 128×128, 4 convs (16-32-64-64), ~99 MFLOP",
        side: 128,
        convs: &[(16, 3, 1, 2), (32, 3, 1, 2), (64, 3, 1, 2), (64, 3, 1, 0)],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-s",
        about: "small and fast: 96×96, 5 convs (16-32-48-64-96), ~44 MFLOP",
        side: 96,
        convs: &[
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (48, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 0),
        ],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-m",
        about: "medium: 160×160, strided stem + 5 convs (24-32-64-96-128), ~150 MFLOP",
        side: 160,
        convs: &[
            (24, 5, 2, 0),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 2),
            (128, 3, 1, 0),
        ],
        head: Head::Avg,
        patch: 0,
        backbone: None,
    },
    Preset {
        name: "tile-seg",
        about: "default: 256×256, 6 convs (16-32-64-64-96-96), per-position class scores \
                trained from defect masks on 112-px patches, global max pool, ~0.47 GFLOP",
        side: 256,
        convs: &[
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 0),
            (96, 3, 1, 0),
        ],
        head: Head::MaxScore,
        patch: 112,
        backbone: None,
    },
    Preset {
        name: "lite0",
        about: "default: pretrained EfficientNet-Lite0 (frozen, stages 0-4), 256 px keeping the \
                part's shape, per-position head 232-128-classes trained from masks, judged by the \
                most defect-like position; ~0.64 GFLOP",
        side: 256,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-384",
        about: "lite0 at 384 px keeping the part's shape (small defects), ~1.4 GFLOP",
        side: 384,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-tiny",
        about: "for tests and smoke runs: lite0 at 64 px keeping the part's shape",
        side: 64,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Fit),
    },
    Preset {
        name: "lite0-stretch",
        about: "lite0 at 256 px, the region stretched to a square",
        side: 256,
        convs: &[],
        head: Head::MaxScore,
        patch: 0,
        backbone: Some(Resize::Stretch),
    },
];

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "lite0";
/// The optimizer used when none is named (the default model was trained with it).
pub const DEFAULT_OPTIMIZER: OptimizerKind = OptimizerKind::Adam;
/// The peak learning rate used when none is given.
pub const DEFAULT_LR: f64 = 0.001;
/// The epochs run when none are given.
pub const DEFAULT_EPOCHS: usize = 4;

/// Builds the spec of `preset` for a dataset's classes and input statistics.
pub fn preset_spec(
    preset: &str,
    input: InputSpec,
    classes: Vec<String>,
    pass: Vec<String>,
) -> anyhow::Result<ModelSpec> {
    let Some(p) = PRESETS.iter().find(|p| p.name == preset) else {
        bail!(
            "unknown preset {preset:?}; choose one of {:?}",
            PRESETS.iter().map(|p| p.name).collect::<Vec<_>>()
        );
    };
    let input = InputSpec {
        height: p.side,
        width: p.side,
        ..input
    };
    let mut layers = Vec::new();
    let mut c = input.channels;
    for &(o, k, s, pool) in p.convs {
        layers.push(Layer::conv(c, o, k, s, k / 2));
        layers.push(Layer::Relu);
        if pool > 0 {
            layers.push(Layer::MaxPool2d {
                kernel: pool,
                stride: pool,
            });
        }
        c = o;
    }
    match p.head {
        Head::Avg => layers.push(Layer::GlobalAvgPool),
        Head::MaxScore => {
            let k = classes.len() as u32;
            layers.push(Layer::conv(c, k, 1, 1, 0));
            layers.push(Layer::GlobalMaxPool);
            c = k;
        }
    }
    layers.push(Layer::Linear {
        in_features: c,
        out_features: classes.len() as u32,
    });
    let spec = ModelSpec::new(p.name, input, layers, classes, pass);
    spec.validate()?;
    Ok(spec)
}

/// What the loop reports.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Data loaded; training starts.
    Started {
        /// Training images.
        train: usize,
        /// Validation images.
        val: usize,
        /// Skipped unreadable images (path, reason).
        skipped: Vec<(String, String)>,
        /// Backend description.
        backend: String,
        /// First epoch (1-based; > 1 when resuming).
        first_epoch: usize,
    },
    /// One optimisation step done.
    Step {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (1-based).
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// Loss of this step.
        loss: f64,
    },
    /// One epoch done and evaluated.
    Epoch(EpochRecord),
}

/// Metrics of one epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Accuracy on the (augmented) training batches, in training mode.
    pub train_accuracy: f64,
    /// Val accuracy.
    pub val_accuracy: f64,
    /// Val macro F1.
    pub val_macro_f1: f64,
    /// Val PASS/FAIL AUROC.
    pub val_auroc: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Seconds since training started (this process).
    pub elapsed_s: f64,
    /// Estimated seconds left.
    pub eta_s: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// Model file written.
    pub model: PathBuf,
    /// Preset.
    pub preset: String,
    /// Classes.
    pub classes: Vec<String>,
    /// PASS classes.
    pub pass_classes: Vec<String>,
    /// Training / val images used.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Unreadable images skipped.
    pub skipped: usize,
    /// Missing files listed in the manifest.
    pub missing: usize,
    /// Epoch kept.
    pub best_epoch: usize,
    /// Epochs run (in this and earlier resumed runs).
    pub epochs_run: usize,
    /// Val accuracy of the kept model.
    pub val_accuracy: f64,
    /// Val macro F1.
    pub val_macro_f1: f64,
    /// Val PASS/FAIL AUROC.
    pub val_auroc: Option<f64>,
    /// Threshold chosen on val.
    pub threshold: f32,
    /// Val miss rate at the threshold.
    pub val_miss_rate: f64,
    /// Val false-reject rate at the threshold.
    pub val_false_reject_rate: f64,
    /// Wall-clock seconds of this process's training.
    pub train_seconds: f64,
    /// Backend used.
    pub backend: String,
    /// Whether the run stopped early on val.
    pub early_stopped: bool,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Anomaly mode: defect images of the training split that were ignored.
    pub ignored_defects: usize,
    /// Anomaly mode: memory-bank entries.
    pub bank_entries: Option<usize>,
}

/// The run was cancelled; the last finished epoch is in the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("training cancelled; resume with --resume (checkpoint {0})")]
pub struct Cancelled(pub PathBuf);

/// How a classifier's threshold is chosen, in words.
pub fn miss_rule(cfg: &TrainConfig, defective: &[bool]) -> String {
    let n = defective.iter().filter(|&&d| d).count();
    format!(
        "miss rate ≤ {:.1} % on {n} defective val images ({} good)",
        cfg.max_miss_rate * 100.0,
        defective.len() - n
    )
}

/// Checkpoint folder next to the model file: `<out>.ckpt/`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

/// The last finished epoch kept in the checkpoint next to `out` (either kind of preset), if
/// there is one: what a resumed run continues from.
pub fn checkpoint_epoch(out: &Path) -> Option<usize> {
    let dir = checkpoint_dir(out);
    ["state.json", crate::head_checkpoint::HEAD_CHECKPOINT]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .find_map(|v| v["epoch"].as_u64())
        .map(|e| e as usize)
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    spec: ModelSpec,
    epoch: usize,
    best_score: f64,
    best_epoch: usize,
    history: Vec<EpochRecord>,
}

/// Resolves `BackendKind::Auto` and returns the burn device (without autodiff) and a label.
pub fn device_for(kind: BackendKind) -> anyhow::Result<(Device, String)> {
    match kind {
        BackendKind::Cpu => Ok((Device::flex(), "cpu (burn flex)".into())),
        BackendKind::Wgpu => {
            let (d, gpu) = crate::nn::shared_gpu()?;
            Ok((d, format!("wgpu: {}", gpu.describe())))
        }
        BackendKind::Auto => {
            let (d, gpu) = crate::nn::shared_gpu()?;
            if gpu.adapter.get_info().device_type == wgpu::DeviceType::Cpu {
                // Measured: flex trains faster than burn-wgpu on lavapipe (see README).
                Ok((
                    Device::flex(),
                    format!(
                        "cpu (burn flex; the only GPU adapter, {}, is a CPU rasteriser)",
                        gpu.describe()
                    ),
                ))
            } else {
                Ok((d, format!("wgpu: {}", gpu.describe())))
            }
        }
    }
}

/// Decoded images in parallel (2 workers); unreadable ones come back as errors.
fn decode_all(samples: &[Sample]) -> Vec<Result<DecodedImage, String>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let chunk = samples.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|x| dataset::decode_image(&x.path))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Loaded images of one split with label indices.
pub(crate) struct Split {
    pub images: Vec<DecodedImage>,
    pub labels: Vec<usize>,
    pub paths: Vec<String>,
    /// Absolute file of each image.
    pub files: Vec<PathBuf>,
    /// Each image's part (`group`), if the dataset names one.
    pub groups: Vec<Option<String>>,
    /// Bounding box of each image's defect mask, if it has a readable, non-empty one.
    pub defect_boxes: Vec<Option<Roi>>,
    /// The defect mask of each image, if it has a readable, non-empty one of the image's size.
    pub masks: Vec<Option<DecodedImage>>,
}

/// The mask at `path` and the bounding box of its bright pixels, when it matches the image size
/// and is not empty.
fn load_mask(path: &Path, width: u32, height: u32) -> Option<(DecodedImage, Roi)> {
    let m = dataset::decode_image(path).ok()?;
    if m.width != width || m.height != height {
        tracing::warn!(
            "ignoring mask {}: it is {}×{}, the image {width}×{height}",
            path.display(),
            m.width,
            m.height
        );
        return None;
    }
    let bpp = m.format.bytes_per_pixel() as usize;
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (i, px) in m.data.chunks_exact(bpp).enumerate() {
        if px[0] > 127 {
            let (x, y) = (i as u32 % width, i as u32 / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0 <= x1).then(|| {
        (
            m,
            Roi {
                x: x0,
                y: y0,
                width: x1 - x0 + 1,
                height: y1 - y0 + 1,
            },
        )
    })
}

pub(crate) fn load_split(
    samples: &[Sample],
    classes: &[String],
    skipped: &mut Vec<(String, String)>,
) -> Split {
    let mut out = Split {
        images: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
        files: Vec::new(),
        groups: Vec::new(),
        defect_boxes: Vec::new(),
        masks: Vec::new(),
    };
    for (s, img) in samples.iter().zip(decode_all(samples)) {
        match img {
            Ok(img) => {
                let mask = s
                    .mask
                    .as_deref()
                    .and_then(|m| load_mask(m, img.width, img.height));
                out.defect_boxes.push(mask.as_ref().map(|(_, b)| *b));
                out.masks.push(mask.map(|(m, _)| m));
                out.images.push(img);
                out.labels
                    .push(classes.iter().position(|c| *c == s.label).unwrap_or(0));
                out.paths.push(s.rel_path.clone());
                out.files.push(s.path.clone());
                out.groups.push(s.group.clone());
            }
            Err(e) => {
                tracing::warn!("skipping {}: {e}", s.rel_path);
                skipped.push((s.rel_path.clone(), e));
            }
        }
    }
    out
}

/// Per-channel mean/std of the training images (0..1 pixel units), sampled.
fn input_stats(images: &[DecodedImage], channels: u32) -> (Vec<f32>, Vec<f32>) {
    let c = channels as usize;
    let (mut sum, mut sq, mut n) = (vec![0f64; c], vec![0f64; c], 0f64);
    for img in images {
        let bpp = img.format.bytes_per_pixel() as usize;
        for px in img.data.chunks_exact(bpp).step_by(7) {
            let rgb = if bpp == 1 {
                [px[0]; 3]
            } else {
                [px[0], px[1], px[2]]
            };
            let vals: Vec<f64> = if c == 1 {
                vec![
                    (0.299 * rgb[0] as f64 + 0.587 * rgb[1] as f64 + 0.114 * rgb[2] as f64) / 255.0,
                ]
            } else {
                rgb.iter().map(|&v| v as f64 / 255.0).collect()
            };
            for (i, v) in vals.into_iter().enumerate() {
                sum[i] += v;
                sq[i] += v * v;
            }
            n += 1.0;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n.max(1.0)) as f32).collect();
    let std: Vec<f32> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / n.max(1.0) - (*m as f64).powi(2)).max(1e-6).sqrt() as f32).max(0.02))
        .collect();
    (mean, std)
}

fn lr_at(cfg: &TrainConfig, epoch0: usize, step: usize, steps: usize) -> f64 {
    // Linear warm-up over the first epoch, then cosine decay to 2 % of the peak.
    let t = epoch0 as f64 + step as f64 / steps.max(1) as f64;
    if t < 1.0 {
        return cfg.lr * (0.1 + 0.9 * t);
    }
    let total = (cfg.epochs as f64 - 1.0).max(1.0);
    let p = ((t - 1.0) / total).clamp(0.0, 1.0);
    cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// Probabilities `[n × classes]` of `model` on preprocessed tensors, in batches, without autodiff.
pub fn predict(
    model: &BurnModel,
    device: &Device,
    tensors: &[Vec<f32>],
    input: &InputSpec,
    batch: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (c, h, w) = (
        input.channels as usize,
        input.height as usize,
        input.width as usize,
    );
    let mut out = Vec::with_capacity(tensors.len());
    for chunk in tensors.chunks(batch.max(1)) {
        let flat: Vec<f32> = chunk.concat();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), device);
        let probs = activation::softmax(model.forward(x), 1);
        let v = probs
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading probabilities: {e:?}"))?;
        let k = v.len() / chunk.len();
        out.extend(v.chunks(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// The global-pool outputs (for a max-score head: each class's highest position score) of
/// whole `images`, preprocessed as inference does, through `model` in inference mode.
fn pooled_scores<'a>(
    model: &BurnModel,
    device: &Device,
    images: impl Iterator<Item = &'a DecodedImage>,
    input: &InputSpec,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (c, h, w) = (
        input.channels as usize,
        input.height as usize,
        input.width as usize,
    );
    let images: Vec<&DecodedImage> = images.collect();
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(16) {
        let mut flat = Vec::with_capacity(chunk.len() * c * h * w);
        for img in chunk {
            let t = kernels::reference::preprocess_input(input, &img.frame())
                .map_err(anyhow::Error::msg)?;
            flat.extend(t.into_iter().map(|x| x as f32));
        }
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), device);
        let (_, map) = model.forward_with_map(x);
        let map = map.context("the model has no global pool")?;
        let [n, k, mh, mw] = map.dims();
        let v = tensor_vec(map.reshape([n, k, mh * mw]).max_dim(2).reshape([n, k]))?;
        out.extend(v.chunks(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Val metrics from probabilities.
pub struct ValMetrics {
    /// Confusion matrix.
    pub confusion: Confusion,
    /// FAIL scores.
    pub scores: Vec<f32>,
    /// Whether each image is defective.
    pub defective: Vec<bool>,
    /// AUROC.
    pub auroc: Option<f64>,
}

/// Metrics of probabilities against labels.
pub fn val_metrics(spec: &ModelSpec, probs: &[Vec<f32>], labels: &[usize]) -> ValMetrics {
    let pairs = probs
        .iter()
        .zip(labels)
        .map(|(p, &t)| (t, metrics::argmax(p).unwrap_or(0)));
    let confusion = Confusion::new(spec.classes.clone(), pairs);
    let scores: Vec<f32> = probs.iter().map(|p| spec.fail_score(p)).collect();
    let defective: Vec<bool> = labels
        .iter()
        .map(|&t| !spec.pass_classes.contains(&spec.classes[t]))
        .collect();
    let auroc = metrics::auroc(&scores, &defective);
    ValMetrics {
        confusion,
        scores,
        defective,
        auroc,
    }
}

pub(crate) fn tensor_vec<const D: usize>(t: Tensor<D>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor: {e:?}"))
}

/// Exports a trained burn model to kernels weights, folding batch-norm into the convolutions.
pub fn export_weights(
    model: &BurnModel,
    spec: &ModelSpec,
) -> anyhow::Result<Vec<Option<LayerWeights>>> {
    let mut out = Vec::new();
    for (block, layer) in model.blocks.iter().zip(&spec.layers) {
        out.push(match (block, layer) {
            (Block::Conv(c), Layer::Conv2d { out_channels, .. }) => {
                let mut weight = tensor_vec(c.conv.weight.val())?;
                let mut bias = match &c.conv.bias {
                    Some(b) => tensor_vec(b.val())?,
                    None => vec![0.0; *out_channels as usize],
                };
                if let Some(bn) = &c.bn {
                    let gamma = tensor_vec(bn.gamma.val())?;
                    let beta = tensor_vec(bn.beta.val())?;
                    let mean = tensor_vec(bn.running_mean.value())?;
                    let var = tensor_vec(bn.running_var.value())?;
                    let per_out = weight.len() / bias.len();
                    for o in 0..bias.len() {
                        let scale = gamma[o] / (var[o] + bn.epsilon as f32).sqrt();
                        for w in &mut weight[o * per_out..(o + 1) * per_out] {
                            *w *= scale;
                        }
                        bias[o] = (bias[o] - mean[o]) * scale + beta[o];
                    }
                }
                Some(LayerWeights { weight, bias })
            }
            (
                Block::Linear(l),
                Layer::Linear {
                    in_features,
                    out_features,
                },
            ) => {
                let t = tensor_vec(l.weight.val())?; // [in, out]
                let (i_f, o_f) = (*in_features as usize, *out_features as usize);
                let mut weight = vec![0.0; i_f * o_f];
                for j in 0..i_f {
                    for o in 0..o_f {
                        weight[o * i_f + j] = t[j * o_f + o];
                    }
                }
                let bias = match &l.bias {
                    Some(b) => tensor_vec(b.val())?,
                    None => vec![0.0; o_f],
                };
                Some(LayerWeights { weight, bias })
            }
            _ => None,
        });
    }
    Ok(out)
}

/// All parameters and batch-norm statistics of `model` by stable name (for checkpoints).
/// Named tensors: (name, shape, values).
type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn model_tensors(model: &BurnModel) -> anyhow::Result<NamedTensors> {
    let mut v = Vec::new();
    for (i, b) in model.blocks.iter().enumerate() {
        match b {
            Block::Conv(c) => {
                v.push((
                    format!("{i}.conv.weight"),
                    c.conv.weight.shape().dims::<4>().to_vec(),
                    tensor_vec(c.conv.weight.val())?,
                ));
                if let Some(bias) = &c.conv.bias {
                    v.push((
                        format!("{i}.conv.bias"),
                        bias.shape().dims::<1>().to_vec(),
                        tensor_vec(bias.val())?,
                    ));
                }
                if let Some(bn) = &c.bn {
                    let n = vec![bn.gamma.shape().dims::<1>()[0]];
                    v.push((
                        format!("{i}.bn.gamma"),
                        n.clone(),
                        tensor_vec(bn.gamma.val())?,
                    ));
                    v.push((
                        format!("{i}.bn.beta"),
                        n.clone(),
                        tensor_vec(bn.beta.val())?,
                    ));
                    v.push((
                        format!("{i}.bn.mean"),
                        n.clone(),
                        tensor_vec(bn.running_mean.value())?,
                    ));
                    v.push((
                        format!("{i}.bn.var"),
                        n,
                        tensor_vec(bn.running_var.value())?,
                    ));
                }
            }
            Block::Linear(l) => {
                v.push((
                    format!("{i}.linear.weight"),
                    l.weight.shape().dims::<2>().to_vec(),
                    tensor_vec(l.weight.val())?,
                ));
                if let Some(bias) = &l.bias {
                    v.push((
                        format!("{i}.linear.bias"),
                        bias.shape().dims::<1>().to_vec(),
                        tensor_vec(bias.val())?,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(v)
}

/// Writes named tensors as a safetensors file, atomically.
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, None)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(())
}

/// Reads the tensor `name` of a safetensors file written by [`save_tensors`]: (shape, values).
pub(crate) fn read_tensor(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("checkpoint lacks {name}"))?;
    Ok((
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    ))
}

fn load_tensors(model: BurnModel, path: &Path, device: &Device) -> anyhow::Result<BurnModel> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("checkpoint {} is damaged", path.display()))?;
    let get = |name: String| -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
        let t = st
            .tensor(&name)
            .with_context(|| format!("checkpoint lacks {name}"))?;
        Ok((
            t.shape().to_vec(),
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    };
    fn t4(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), dev)
    }
    fn t2(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(d, [s[0], s[1]]), dev)
    }
    fn t1(s: Vec<usize>, d: Vec<f32>, dev: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(d, [s[0]]), dev)
    }
    let mut model = model;
    for (i, b) in model.blocks.iter_mut().enumerate() {
        match b {
            Block::Conv(c) => {
                let (s, d) = get(format!("{i}.conv.weight"))?;
                c.conv.weight = Param::from_tensor(t4(s, d, device));
                if c.conv.bias.is_some() {
                    let (s, d) = get(format!("{i}.conv.bias"))?;
                    c.conv.bias = Some(Param::from_tensor(t1(s, d, device)));
                }
                if let Some(bn) = &mut c.bn {
                    let (s, d) = get(format!("{i}.bn.gamma"))?;
                    bn.gamma = Param::from_tensor(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.beta"))?;
                    bn.beta = Param::from_tensor(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.mean"))?;
                    bn.running_mean = burn::module::RunningState::new(t1(s, d, device));
                    let (s, d) = get(format!("{i}.bn.var"))?;
                    bn.running_var = burn::module::RunningState::new(t1(s, d, device));
                }
            }
            Block::Linear(l) => {
                let (s, d) = get(format!("{i}.linear.weight"))?;
                l.weight = Param::from_tensor(t2(s, d, device));
                if l.bias.is_some() {
                    let (s, d) = get(format!("{i}.linear.bias"))?;
                    l.bias = Some(Param::from_tensor(t1(s, d, device)));
                }
            }
            _ => {}
        }
    }
    Ok(model)
}

/// The best (batch-norm) burn model of a run, from its checkpoint folder, in inference mode.
pub fn load_best(spec: &ModelSpec, out: &Path, device: &Device) -> anyhow::Result<BurnModel> {
    let model = load_tensors(
        BurnModel::init(spec, true, device)?,
        &checkpoint_dir(out).join("best.safetensors"),
        device,
    )?;
    Ok(model.valid())
}

/// A random `p`×`p` patch of a `[c, h, w]` tensor and its `[h, w]` mask. With a mask, 4 in 5
/// patches are placed over a random defect pixel (anywhere within the patch), so defects are
/// seen often; the rest, and every patch of a clean image, are placed at random.
fn take_patch(
    x: Vec<f32>,
    mask: Option<Vec<f32>>,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    rng: &mut kernels::rng::SplitMix64,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (ph, pw) = (p.min(h), p.min(w));
    // Origins are drawn from a range reaching a quarter patch past each side and then clamped,
    // so about one patch in four lies on each image border: borders (tile edges, the zero
    // padding) must be learnt as clean surface too, or every image edge looks like a break.
    let along = |rng: &mut kernels::rng::SplitMix64, len: usize, plen: usize| -> usize {
        let slack = plen / 4;
        let o = rng.below((len - plen + 2 * slack + 1) as u64) as usize;
        o.saturating_sub(slack).min(len - plen)
    };
    let uniform = |rng: &mut kernels::rng::SplitMix64| (along(rng, w, pw), along(rng, h, ph));
    let (ox, oy) = match &mask {
        Some(m) if rng.next_f64() < 0.8 => {
            let hits: Vec<usize> = (0..m.len()).filter(|&i| m[i] >= 0.5).collect();
            if hits.is_empty() {
                uniform(rng)
            } else {
                let k = hits[rng.below(hits.len() as u64) as usize];
                let (px, py) = (k % w, k / w);
                let ox = px.saturating_sub(rng.below(pw as u64) as usize);
                let oy = py.saturating_sub(rng.below(ph as u64) as usize);
                (ox.min(w - pw), oy.min(h - ph))
            }
        }
        _ => uniform(rng),
    };
    let crop = |plane: &[f32]| -> Vec<f32> {
        (0..ph)
            .flat_map(|y| {
                plane[(oy + y) * w + ox..(oy + y) * w + ox + pw]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let xs = (0..c)
        .flat_map(|ch| crop(&x[ch * h * w..(ch + 1) * h * w]))
        .collect();
    (xs, mask.map(|m| crop(&m)))
}

/// What a cell of the score map is trained towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// Defect-free surface.
    Background,
    /// A defect of this class (index into the classes).
    Defect(usize),
    /// Not known (a defect image without a usable mask): no pixel loss.
    Unknown,
}

/// Mask supervision of a [`Head::MaxScore`] model: every position of the score map is a
/// classification of its own — background where the mask is dark (and everywhere on a PASS
/// image), the image's defect class where it is bright — so each defect image teaches the
/// network where its defect is, not just that there is one.
///
/// At each position the PASS classes share one fixed logit 0 and each FAIL class `k` has the
/// score `z_k`; the max pool then judges an image by `max z_k`, the evidence of its most
/// defect-like position, and the linear layer after it starts as the identity on FAIL classes.
struct MaskSupervision {
    is_pass: Vec<bool>,
    /// FAIL class indices, in order; position `r` of this list is channel `1 + r` of the
    /// per-position log-probabilities.
    fail: Vec<usize>,
    /// Score map size.
    map_h: usize,
    map_w: usize,
}

impl MaskSupervision {
    /// The supervision for `spec`, if its head is a scoring conv + global max pool, for training
    /// inputs of `patch`×`patch` pixels (0: the spec's input size).
    fn of(spec: &ModelSpec, patch: u32) -> anyhow::Result<Option<Self>> {
        let mut spec = spec.clone();
        if patch > 0 {
            spec.input.width = patch;
            spec.input.height = patch;
        }
        let plan = spec.validate()?;
        let map = plan.shapes[plan.gap_layer];
        if !matches!(spec.layers[plan.gap_layer], Layer::GlobalMaxPool)
            || map.c as usize != spec.classes.len()
        {
            return Ok(None);
        }
        Ok(Some(Self {
            fail: (0..spec.classes.len())
                .filter(|&k| !plan.is_pass[k])
                .collect(),
            is_pass: plan.is_pass,
            map_h: map.h as usize,
            map_w: map.w as usize,
        }))
    }

    /// The linear calibration starts as the identity on FAIL scores and 0 for PASS classes.
    fn init_calibration(&self, mut model: BurnModel, device: &Device) -> BurnModel {
        let k = self.is_pass.len();
        if let Some(Block::Linear(l)) = model.blocks.last_mut() {
            let mut w = vec![0f32; k * k]; // burn layout [in, out]
            for &f in &self.fail {
                w[f * k + f] = 1.0;
            }
            l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [k, k]), device));
            l.bias = Some(Param::from_tensor(Tensor::zeros([k], device)));
        }
        model
    }

    /// Refits the last linear layer (the calibration from max-pooled class scores to class
    /// logits) on `feats` by class-weighted cross-entropy, full batch, starting from its current
    /// weights and held near them by a small L2 pull.
    fn refit_calibration(
        &self,
        mut model: BurnModel,
        feats: &[Vec<f32>],
        labels: &[usize],
        class_weights: &[f32],
        device: &Device,
    ) -> anyhow::Result<BurnModel> {
        let k = self.is_pass.len();
        let Some(Block::Linear(l)) = model.blocks.last_mut() else {
            return Ok(model);
        };
        let wt = tensor_vec(l.weight.val())?; // [in, out]
        let b0 = match &l.bias {
            Some(b) => tensor_vec(b.val())?,
            None => vec![0.0; k],
        };
        // Parameters as one vector: W[o][i] then b[o].
        let mut theta: Vec<f64> = (0..k * k)
            .map(|oi| wt[(oi % k) * k + oi / k] as f64)
            .chain(b0.iter().map(|&b| b as f64))
            .collect();
        let theta0 = theta.clone();
        let (mut m, mut v) = (vec![0f64; theta.len()], vec![0f64; theta.len()]);
        let total_w: f64 = labels.iter().map(|&y| class_weights[y] as f64).sum();
        let (lr, l2, b1, b2) = (0.01, 1e-3, 0.9, 0.999);
        let mut z = vec![0f64; k];
        for it in 1..=1500 {
            let mut g = vec![0f64; theta.len()];
            for (f, &y) in feats.iter().zip(labels) {
                for o in 0..k {
                    z[o] = theta[k * k + o]
                        + (0..k).map(|i| theta[o * k + i] * f[i] as f64).sum::<f64>();
                }
                let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - mx).exp()).sum();
                let cw = class_weights[y] as f64 / total_w;
                for o in 0..k {
                    let d = cw * ((z[o] - mx).exp() / sum - (o == y) as u8 as f64);
                    for i in 0..k {
                        g[o * k + i] += d * f[i] as f64;
                    }
                    g[k * k + o] += d;
                }
            }
            for j in 0..theta.len() {
                let gj = g[j] + l2 * (theta[j] - theta0[j]);
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                let (mh, vh) = (m[j] / (1.0 - b1.powi(it)), v[j] / (1.0 - b2.powi(it)));
                theta[j] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let w: Vec<f32> = (0..k * k)
            .map(|ji| theta[(ji % k) * k + ji / k] as f32) // back to [in, out]
            .collect();
        l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [k, k]), device));
        let b: Vec<f32> = theta[k * k..].iter().map(|&x| x as f32).collect();
        l.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [k]),
            device,
        )));
        Ok(model)
    }

    /// The cell targets of one image of class `label` from its augmented mask plane
    /// (`[h, w]` at the input size), if it has one.
    fn cell_labels(&self, label: usize, mask: Option<&[f32]>, h: usize, w: usize) -> Vec<Cell> {
        let n = self.map_h * self.map_w;
        if self.is_pass[label] {
            return vec![Cell::Background; n];
        }
        match mask {
            Some(m) => augment::mask_cells(m, h, w, self.map_h, self.map_w)
                .into_iter()
                .map(|d| {
                    if d {
                        Cell::Defect(label)
                    } else {
                        Cell::Background
                    }
                })
                .collect(),
            None => vec![Cell::Unknown; n],
        }
    }

    /// Pixel loss of a batch: mean cross-entropy over background cells plus the class-weighted
    /// mean over defect cells (defects cover a few percent of an image; both halves count alike).
    fn loss(
        &self,
        map: Tensor<4>,
        cells: &[Vec<Cell>],
        class_weights: &[f32],
        device: &Device,
    ) -> Tensor<1> {
        let [n, _, mh, mw] = map.dims();
        let n_bg = cells
            .iter()
            .flatten()
            .filter(|c| **c == Cell::Background)
            .count();
        let def_sum: f32 = cells
            .iter()
            .flatten()
            .map(|c| match c {
                Cell::Defect(k) => class_weights[*k],
                _ => 0.0,
            })
            .sum();
        let mut targets = Vec::with_capacity(n * mh * mw);
        let mut weights = Vec::with_capacity(n * mh * mw);
        for c in cells.iter().flatten() {
            let (t, w) = match *c {
                Cell::Background => (0i64, 1.0 / n_bg.max(1) as f32),
                Cell::Defect(k) => {
                    let r = self.fail.iter().position(|&f| f == k).unwrap_or(0);
                    (1 + r as i64, class_weights[k] / def_sum.max(1e-6))
                }
                Cell::Unknown => (0, 0.0),
            };
            targets.push(t);
            weights.push(w);
        }
        let fail: Vec<i64> = self.fail.iter().map(|&f| f as i64).collect();
        let fail = Tensor::<1, Int>::from_data(TensorData::new(fail, [self.fail.len()]), device);
        let scores = Tensor::cat(
            vec![
                Tensor::<4>::zeros([n, 1, mh, mw], device),
                map.select(1, fail),
            ],
            1,
        );
        let log_p = activation::log_softmax(scores, 1);
        let t = Tensor::<4, Int>::from_data(TensorData::new(targets, [n, 1, mh, mw]), device);
        let w = Tensor::<4>::from_data(TensorData::new(weights, [n, 1, mh, mw]), device);
        (log_p.gather(1, t) * w).sum().neg()
    }
}

/// Runs training. `progress` sees every step and epoch; setting `cancel` stops within one step.
/// What every training run reads first: the classes and the two splits.
pub(crate) struct Prepared {
    pub classes: Vec<String>,
    pub pass: Vec<String>,
    pub train_rows: Vec<Sample>,
    pub val_rows: Vec<Sample>,
    pub missing: usize,
}

/// Opens the dataset, chooses PASS classes and the train / val rows.
pub(crate) fn prepare(cfg: &TrainConfig) -> anyhow::Result<Prepared> {
    let ds = Dataset::open(&cfg.data)?;
    if !ds.missing.is_empty() {
        tracing::warn!(
            "{} files listed in the manifest are missing, e.g. {}",
            ds.missing.len(),
            ds.missing[0]
        );
    }
    let pass = ds.pass_classes(&cfg.pass)?;
    let (train_rows, val_rows) =
        ds.train_val(&cfg.split_train, &cfg.split_val, cfg.val_fraction, cfg.seed)?;
    let classes: Vec<String> = train_rows
        .iter()
        .map(|s| s.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let pass: Vec<String> = pass.into_iter().filter(|p| classes.contains(p)).collect();
    if pass.is_empty() || pass.len() == classes.len() {
        bail!(
            "training needs at least one PASS and one FAIL class among {classes:?} (pass: {:?})",
            cfg.pass
        );
    }
    Ok(Prepared {
        classes,
        pass,
        train_rows,
        val_rows,
        missing: ds.missing.len(),
    })
}

/// Trains `cfg.preset` on `cfg.data` and writes the model; backbone presets go to
/// [`crate::train_head::train`].
pub fn train(
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
    let backbone = PRESETS
        .iter()
        .find(|p| p.name == cfg.preset)
        .and_then(|p| Some((p.side, p.backbone?)));
    if cfg.mode == TrainMode::Anomaly {
        let Some((side, resize)) = backbone else {
            bail!(
                "anomaly mode needs a pretrained-backbone preset ({}); {:?} is not one",
                PRESETS
                    .iter()
                    .filter(|p| p.backbone.is_some())
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                cfg.preset
            );
        };
        return crate::train_anomaly::train(cfg, side, resize, progress, cancel);
    }
    if let Some((side, resize)) = backbone {
        return crate::train_head::train(cfg, side, resize, progress, cancel);
    }
    let Prepared {
        classes,
        pass,
        train_rows,
        val_rows,
        missing,
    } = prepare(cfg)?;
    let mut skipped = Vec::new();
    let train_set = load_split(&train_rows, &classes, &mut skipped);
    let val_set = load_split(&val_rows, &classes, &mut skipped);
    for (i, c) in classes.iter().enumerate() {
        if !train_set.labels.contains(&i) {
            bail!("class {c:?} has no readable training images");
        }
    }
    if val_set.images.is_empty() {
        bail!("no readable validation images");
    }
    let channels = if train_set
        .images
        .iter()
        .all(|i| i.format == kernels::PixelFormat::Gray8)
    {
        1
    } else {
        3
    };
    let (mean, std) = input_stats(&train_set.images, channels);
    let input = InputSpec {
        channels,
        height: 1,
        width: 1,
        mean,
        std,
        resize: Default::default(),
    };
    let mut spec = preset_spec(&cfg.preset, input, classes.clone(), pass.clone())?;

    let (base_device, backend_label) = device_for(cfg.backend)?;
    base_device.seed(cfg.seed);
    let device = base_device.clone().autodiff();
    let mut model = BurnModel::init_seeded(&spec, true, &device, cfg.seed)?;
    let preset_patch = PRESETS
        .iter()
        .find(|p| p.name == cfg.preset)
        .map_or(0, |p| p.patch);
    let (supervision, patch) = match MaskSupervision::of(&spec, preset_patch)? {
        Some(ms) => {
            let with_mask = (0..train_set.images.len())
                .filter(|&i| !ms.is_pass[train_set.labels[i]])
                .map(|i| train_set.masks[i].is_some() as usize);
            let (n_masks, n_defective) = with_mask.fold((0, 0), |(m, n), x| (m + x, n + 1));
            tracing::info!(
                "mask supervision: {n_masks} of {n_defective} defective training images have a mask"
            );
            // Patches need to know where the defect is: defective images without a mask are
            // left out of patch training when they are few (an empty or missing mask is usually
            // a labelling slip); when many lack one, train on whole images instead.
            let patch = if n_masks * 10 >= n_defective * 9 {
                preset_patch
            } else {
                if preset_patch > 0 {
                    tracing::warn!(
                        "{} of {n_defective} defective training images have no mask: training on \
                         whole images, not {preset_patch}-px patches",
                        n_defective - n_masks
                    );
                }
                0
            };
            let ms = MaskSupervision::of(&spec, patch)?;
            (ms, patch as usize)
        }
        None => (None, 0),
    };
    if let Some(ms) = &supervision {
        model = ms.init_calibration(model, &device);
    }
    // The pass class a clean patch of a defective image counts as: the commonest one.
    let primary_pass = (0..classes.len())
        .filter(|&k| pass.contains(&classes[k]))
        .max_by_key(|&k| train_set.labels.iter().filter(|&&l| l == k).count())
        .unwrap_or(0);

    // Resume.
    let ckpt = checkpoint_dir(&cfg.out);
    let mut first_epoch = 0;
    let mut best_score = f64::NEG_INFINITY;
    let mut best_epoch = 0;
    let mut history: Vec<EpochRecord> = Vec::new();
    if cfg.resume && ckpt.join("state.json").exists() {
        let state: CheckpointState = serde_json::from_slice(&std::fs::read(
            ckpt.join("state.json"),
        )?)
        .with_context(|| {
            format!(
                "checkpoint {} is damaged; delete it to start over",
                ckpt.display()
            )
        })?;
        if state.spec.classes != spec.classes || state.spec.layers != spec.layers {
            bail!(
                "checkpoint {} is for another dataset or preset; delete it or train without --resume",
                ckpt.display()
            );
        }
        spec = state.spec;
        model = load_tensors(model, &ckpt.join("last.safetensors"), &device)?;
        first_epoch = state.epoch;
        best_score = state.best_score;
        best_epoch = state.best_epoch;
        history = state.history;
    } else {
        std::fs::create_dir_all(&ckpt)
            .with_context(|| format!("creating checkpoint folder {}", ckpt.display()))?;
    }

    // Class weights: inverse square-root frequency, normalised to mean 1.
    let counts: Vec<f64> = (0..classes.len())
        .map(|c| train_set.labels.iter().filter(|&&l| l == c).count() as f64)
        .collect();
    let raw: Vec<f64> = counts.iter().map(|&n| 1.0 / n.max(1.0).sqrt()).collect();
    let norm = raw.iter().sum::<f64>() / raw.len() as f64;
    let weights: Vec<f32> = raw.iter().map(|w| (w / norm) as f32).collect();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(Some(weights.clone()))
        .init(&device);

    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    let mut optim = match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Momentum => SgdConfig::new()
            .with_weight_decay(wd)
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(0.9)
                    .with_dampening(0.0)
                    .with_nesterov(true),
            ))
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init(),
    };

    let val_tensors: Vec<Vec<f32>> = val_set
        .images
        .iter()
        .map(|img| {
            kernels::reference::preprocess_input(&spec.input, &img.frame())
                .map(|v| v.into_iter().map(|x| x as f32).collect())
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    progress(Progress::Started {
        train: train_set.images.len(),
        val: val_set.images.len(),
        skipped: skipped.clone(),
        backend: backend_label.clone(),
        first_epoch: first_epoch + 1,
    });

    let (c, h, w) = (
        spec.input.channels as usize,
        spec.input.height as usize,
        spec.input.width as usize,
    );
    // The training images used: in patch mode, defective ones without a mask sit out.
    let used: Vec<usize> = (0..train_set.images.len())
        .filter(|&i| match &supervision {
            Some(ms) if patch > 0 => {
                ms.is_pass[train_set.labels[i]] || train_set.masks[i].is_some()
            }
            _ => true,
        })
        .collect();
    for i in (0..train_set.images.len()).filter(|i| !used.contains(i)) {
        tracing::warn!(
            "{} is defective but has no usable mask: left out of patch training",
            train_set.paths[i]
        );
    }
    let n = used.len();
    let bs = cfg.batch_size.clamp(1, n);
    let steps = n.div_ceil(bs);
    let mut early_stopped = false;
    let loop_start = Instant::now();
    for epoch in first_epoch..cfg.epochs {
        // Seeded shuffle.
        let mut order: Vec<usize> = used.clone();
        let mut rng = augment::sample_rng(cfg.seed, epoch, usize::MAX);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        for (step, idx) in order.chunks(bs).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled(ckpt).into());
            }
            let (th, tw) = if patch > 0 { (patch, patch) } else { (h, w) };
            let mut xs = Vec::with_capacity(idx.len() * c * th * tw);
            let mut cells = Vec::new();
            let mut ys: Vec<i64> = Vec::with_capacity(idx.len());
            for &i in idx {
                let mut r = augment::sample_rng(cfg.seed, epoch, i);
                let mut label = train_set.labels[i];
                let mask = match &supervision {
                    Some(ms) if !ms.is_pass[label] => train_set.masks[i].as_ref(),
                    _ => None,
                };
                let (x, m) = augment::augmented_with_mask(
                    &spec.input,
                    &train_set.images[i].frame(),
                    mask.map(|m| m.frame()).as_ref(),
                    &cfg.augment,
                    &mut r,
                    train_set.defect_boxes[i],
                )
                .map_err(anyhow::Error::msg)?;
                let (x, m) = if patch > 0 {
                    take_patch(x, m, c, h, w, patch, &mut r)
                } else {
                    (x, m)
                };
                xs.extend(x);
                if let Some(ms) = &supervision {
                    let cl = ms.cell_labels(label, m.as_deref(), th, tw);
                    if patch > 0
                        && !ms.is_pass[label]
                        && !cl.iter().any(|c| matches!(c, Cell::Defect(_)))
                    {
                        // A patch of a defective image that misses the defect is clean surface.
                        label = primary_pass;
                    }
                    cells.push(cl);
                }
                ys.push(label as i64);
            }
            let x = Tensor::<4>::from_data(TensorData::new(xs, [idx.len(), c, th, tw]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys.clone(), [idx.len()]), &device);
            let (logits, map) = model.forward_with_map(x);
            let pred = tensor_vec(logits.clone().detach())?;
            let k = pred.len() / idx.len();
            for (row, &t) in pred.chunks(k).zip(&ys) {
                let p = metrics::argmax(row).unwrap_or(0);
                correct += (p as i64 == t) as usize;
            }
            let mut loss = loss_fn.forward(logits, y);
            if let (Some(ms), Some(map)) = (&supervision, map) {
                loss = loss + ms.loss(map, &cells, &weights, &device);
            }
            let loss_value = tensor_vec(loss.clone())?
                .first()
                .copied()
                .unwrap_or(f32::NAN) as f64;
            if !loss_value.is_finite() {
                bail!(
                    "training diverged (loss {loss_value}) at epoch {}; lower --lr",
                    epoch + 1
                );
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr_at(cfg, epoch, step, steps), model, grads);
            loss_sum += loss_value;
            progress(Progress::Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: loss_value,
            });
        }

        let valid = model.valid();
        let probs = predict(&valid, &base_device, &val_tensors, &spec.input, 32)?;
        let vm = val_metrics(&spec, &probs, &val_set.labels);
        let acc = vm.confusion.accuracy();
        let mf1 = vm.confusion.macro_f1();
        // Selection score: accuracy plus PASS/FAIL AUROC, the two quality targets. Accuracy
        // alone picks the early epochs that call everything PASS (the majority class).
        // In patch training the linear calibration has only seen patches; whole images have
        // more positions (so higher maxima) until it is refitted at export: select on AUROC.
        let score = if patch > 0 {
            vm.auroc.unwrap_or(0.0) + 1e-3 * acc
        } else {
            acc + vm.auroc.unwrap_or(0.0)
        };
        let done = epoch + 1 - first_epoch;
        let per_epoch = loop_start.elapsed().as_secs_f64() / done as f64;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / steps as f64,
            train_accuracy: correct as f64 / n as f64,
            val_accuracy: acc,
            val_macro_f1: mf1,
            val_auroc: vm.auroc,
            lr: lr_at(cfg, epoch + 1, 0, steps),
            elapsed_s: started.elapsed().as_secs_f64(),
            eta_s: per_epoch * (cfg.epochs - epoch - 1) as f64,
        };
        history.push(record.clone());
        progress(Progress::Epoch(record));
        // From the inference copy: its batch-norm statistics include the last update.
        let tensors = model_tensors(&valid)?;
        if score > best_score {
            best_score = score;
            best_epoch = epoch + 1;
            save_tensors(&ckpt.join("best.safetensors"), &tensors)?;
        }
        save_tensors(&ckpt.join("last.safetensors"), &tensors)?;
        let state = CheckpointState {
            config: cfg.clone(),
            spec: spec.clone(),
            epoch: epoch + 1,
            best_score,
            best_epoch,
            history: history.clone(),
        };
        let tmp = ckpt.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(&tmp, ckpt.join("state.json"))?;
        if cfg.patience > 0 && epoch + 1 >= best_epoch + cfg.patience {
            early_stopped = true;
            break;
        }
    }

    // Export the best epoch.
    let mut best = load_best(&spec, &cfg.out, &base_device)?;
    if patch > 0
        && let Some(ms) = &supervision
    {
        // Refit the linear calibration on whole training images (no augmentation): it was
        // trained on patches, and the image decision is made on whole images.
        let inputs = used.iter().map(|&i| &train_set.images[i]);
        let feats = pooled_scores(&best, &base_device, inputs, &spec.input)?;
        let labels: Vec<usize> = used.iter().map(|&i| train_set.labels[i]).collect();
        best = ms.refit_calibration(best, &feats, &labels, &weights, &base_device)?;
        save_tensors(&ckpt.join("best.safetensors"), &model_tensors(&best)?)?;
    }
    let probs = predict(&best, &base_device, &val_tensors, &spec.input, 32)?;
    let vm = val_metrics(&spec, &probs, &val_set.labels);
    let threshold = metrics::choose_threshold(&vm.scores, &vm.defective, cfg.max_miss_rate);
    let rates = metrics::rates_at(&vm.scores, &vm.defective, threshold);
    spec.threshold = threshold;
    let summary = TrainSummary {
        model: cfg.out.clone(),
        preset: cfg.preset.clone(),
        classes: spec.classes.clone(),
        pass_classes: spec.pass_classes.clone(),
        train_images: train_set.images.len(),
        val_images: val_set.images.len(),
        skipped: skipped.len(),
        missing,
        best_epoch,
        epochs_run: history.len(),
        val_accuracy: vm.confusion.accuracy(),
        val_macro_f1: vm.confusion.macro_f1(),
        val_auroc: vm.auroc,
        threshold,
        val_miss_rate: rates.miss_rate,
        val_false_reject_rate: rates.false_reject_rate,
        train_seconds: started.elapsed().as_secs_f64(),
        backend: backend_label,
        early_stopped,
        threshold_rule: miss_rule(cfg, &vm.defective),
        ignored_defects: 0,
        bank_entries: None,
    };
    spec.training = serde_json::json!({
        "dataset": cfg.data.display().to_string(),
        "date": chrono::Utc::now().to_rfc3339(),
        "config": cfg,
        "summary": &summary,
        "val_confusion": vm.confusion,
        "history": history,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let weights = export_weights(&best, &spec)?;
    let exported = Model::new(spec, weights)?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    exported.save(&cfg.out)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One optimisation step must move every trainable tensor (conv weights and biases,
    /// batch-norm scale and shift, classifier), or part of the network never learns.
    #[test]
    fn one_step_moves_every_parameter() {
        let input = InputSpec {
            channels: 1,
            height: 16,
            width: 16,
            mean: vec![0.5],
            std: vec![0.25],
            resize: Default::default(),
        };
        let spec = preset_spec(
            "tiny",
            input,
            vec!["bad".into(), "good".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let spec = ModelSpec {
            input: InputSpec {
                height: 16,
                width: 16,
                ..spec.input.clone()
            },
            ..spec
        };
        let device = Device::flex().autodiff();
        let model = BurnModel::init_seeded(&spec, true, &device, 7).expect("init");
        let before = model_tensors(&model.valid()).expect("before");
        let xs: Vec<f32> = (0..4 * 16 * 16)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(xs, [4, 1, 16, 16]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 0, 1], [4]), &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim = SgdConfig::new().init();
        let model = optim.step(0.1, model, grads);
        let after = model_tensors(&model.valid()).expect("after");
        for ((name, _, a), (_, _, b)) in before.iter().zip(&after) {
            // Running statistics are not trained; a conv bias before batch-norm has no gradient.
            if name.ends_with(".bn.mean")
                || name.ends_with(".bn.var")
                || name.ends_with(".conv.bias")
            {
                continue;
            }
            let moved = a.iter().zip(b).any(|(p, q)| (p - q).abs() > 1e-9);
            assert!(moved, "{name} did not change in a training step");
        }
    }

    /// Backpropagated gradients of the conv weights match finite differences of the loss.
    #[test]
    fn conv_gradients_match_finite_differences() {
        let spec = preset_spec(
            "tiny",
            InputSpec {
                channels: 1,
                height: 1,
                width: 1,
                mean: vec![0.5],
                std: vec![0.25],
                resize: Default::default(),
            },
            vec!["bad".into(), "good".into(), "other".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..4 * 32 * 32)
            .map(|i| (((i * 37 + i / 7 * 11) % 101) as f32 / 50.0) - 1.0)
            .collect();
        for bn in [false, true] {
            let model = BurnModel::init_seeded(&spec, bn, &device, 3).expect("init");
            let loss_of = |m: &BurnModel| {
                let x =
                    Tensor::<4>::from_data(TensorData::new(xs.clone(), [4, 1, 32, 32]), &device);
                let y =
                    Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
                CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(m.forward(x), y)
            };
            let loss = loss_of(&model);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let dir = tempfile::tempdir().expect("tmp");
            let file = dir.path().join("t.safetensors");
            for (bi, block) in model.blocks.iter().enumerate() {
                let Block::Conv(cb) = block else { continue };
                let g = tensor_vec(grads.get::<4>(cb.conv.weight.id).expect("grad")).expect("g");
                let base = model_tensors(&model).expect("tensors");
                let name = format!("{bi}.conv.weight");
                let k = base.iter().position(|t| t.0 == name).expect("named");
                // The elements with the largest gradients.
                let mut order: Vec<usize> = (0..g.len()).collect();
                order.sort_by(|a, b| g[*b].abs().total_cmp(&g[*a].abs()));
                for &e in order.iter().take(3) {
                    let eps = 1e-2f32;
                    let mut f = [0f64; 2];
                    for (side, sign) in [(0, 1.0f32), (1, -1.0f32)] {
                        let mut t = base.clone();
                        t[k].2[e] += sign * eps;
                        save_tensors(&file, &t).expect("save");
                        let m = load_tensors(
                            BurnModel::init(&spec, bn, &device).expect("m"),
                            &file,
                            &device,
                        )
                        .expect("load");
                        f[side] = tensor_vec(loss_of(&m)).expect("l")[0] as f64;
                    }
                    let numeric = (f[0] - f[1]) / (2.0 * eps as f64);
                    let analytic = g[e] as f64;
                    eprintln!("bn {bn} {name}[{e}]: analytic {analytic:.5} numeric {numeric:.5}");
                    assert!(
                        (numeric - analytic).abs() <= 0.05 * analytic.abs() + 5e-4,
                        "bn {bn} {name}[{e}]: analytic {analytic} vs numeric {numeric}"
                    );
                }
            }
        }
    }

    /// After many training steps on one batch, the inference copy (running statistics) gives the
    /// same outputs as training mode (batch statistics) on that batch.
    #[test]
    fn running_statistics_match_batch_statistics() {
        let spec = preset_spec(
            "tiny",
            InputSpec {
                channels: 1,
                height: 1,
                width: 1,
                mean: vec![0.5],
                std: vec![0.25],
                resize: Default::default(),
            },
            vec!["bad".into(), "good".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..8 * 32 * 32)
            .map(|i| (((i * 37 + i / 7 * 11) % 101) as f32 / 25.0) + 1.0)
            .collect();
        let mut model = BurnModel::init_seeded(&spec, true, &device, 3).expect("init");
        let mut optim = SgdConfig::new().init();
        let x = || Tensor::<4>::from_data(TensorData::new(xs.clone(), [8, 1, 32, 32]), &device);
        let y = || {
            Tensor::<1, Int>::from_data(
                TensorData::new(vec![0i64, 1, 0, 1, 0, 1, 0, 1], [8]),
                &device,
            )
        };
        for _ in 0..100 {
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(model.forward(x()), y());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-6, model, grads);
        }
        let train_out = tensor_vec(model.forward(x())).expect("train");
        let plain = Device::flex();
        let valid = model.valid();
        let xv = Tensor::<4>::from_data(TensorData::new(xs.clone(), [8, 1, 32, 32]), &plain);
        let valid_out = tensor_vec(valid.forward(xv)).expect("valid");
        let tensors = model_tensors(&valid).expect("t");
        for t in &tensors {
            if t.0.contains(".bn.") {
                eprintln!("{} {:?}", t.0, &t.2[..4.min(t.2.len())]);
            }
        }
        eprintln!("train {:?}\nvalid {:?}", &train_out[..4], &valid_out[..4]);
        for (a, b) in train_out.iter().zip(&valid_out) {
            assert!(
                (a - b).abs() < 1e-2 * (1.0 + a.abs()),
                "train {a} vs inference {b}"
            );
        }
    }
}
