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
use kernels::{InputSpec, Layer, LayerWeights, Model, ModelSpec, Roi};
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
            epochs: 30,
            batch_size: 16,
            optimizer: OptimizerKind::Momentum,
            lr: 0.05,
            weight_decay: 1e-4,
            seed: 42,
            pass: Vec::new(),
            backend: BackendKind::Auto,
            augment: AugmentConfig::default(),
            patience: 10,
            max_miss_rate: 0.01,
            val_fraction: 0.15,
            resume: false,
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
    /// `k`×`k` window with stride `k`). A last window as large as the final feature map makes
    /// the global average pool a global max pool, which keeps small defects visible.
    pub convs: &'static [(u32, u32, u32, u32)],
}

/// The presets. `ref-cnn` is the kernels benchmark model.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        about: "for tests and smoke runs: 32×32, 2 convs (8-16)",
        side: 32,
        convs: &[(8, 3, 1, 2), (16, 3, 1, 0)],
    },
    Preset {
        name: "ref-cnn",
        about: "the kernels benchmark CNN: 128×128, 4 convs (16-32-64-64), ~99 MFLOP",
        side: 128,
        convs: &[(16, 3, 1, 2), (32, 3, 1, 2), (64, 3, 1, 2), (64, 3, 1, 0)],
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
    },
    Preset {
        name: "tile-m",
        about: "default: 160×160, strided stem + 5 convs (24-32-64-96-128), ~150 MFLOP",
        side: 160,
        convs: &[
            (24, 5, 2, 0),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 2),
            (128, 3, 1, 0),
        ],
    },
    Preset {
        name: "ref-gmp",
        about: "experimental: ref-cnn with an 8×8 max-pool before the global pool, ~99 MFLOP",
        side: 128,
        convs: &[(16, 3, 1, 2), (32, 3, 1, 2), (64, 3, 1, 2), (64, 3, 1, 8)],
    },
    Preset {
        name: "tile-g160",
        about: "experimental: 160×160, 5 convs (16-32-64-96-128), global max pool, ~192 MFLOP",
        side: 160,
        convs: &[
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 2),
            (128, 3, 1, 10),
        ],
    },
    Preset {
        name: "tile-g256",
        about: "experimental: 256×256, 6 convs (8-16-32-64-96-128), global max pool, ~166 MFLOP",
        side: 256,
        convs: &[
            (8, 3, 1, 2),
            (16, 3, 1, 2),
            (32, 3, 1, 2),
            (64, 3, 1, 2),
            (96, 3, 1, 2),
            (128, 3, 1, 8),
        ],
    },
];

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "ref-cnn";

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
        layers.push(Layer::Conv2d {
            in_channels: c,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: k / 2,
        });
        layers.push(Layer::Relu);
        if pool > 0 {
            layers.push(Layer::MaxPool2d {
                kernel: pool,
                stride: pool,
            });
        }
        c = o;
    }
    layers.push(Layer::GlobalAvgPool);
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
}

/// The run was cancelled; the last finished epoch is in the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("training cancelled; resume with --resume (checkpoint {0})")]
pub struct Cancelled(pub PathBuf);

/// Checkpoint folder next to the model file: `<out>.ckpt/`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
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
struct Split {
    images: Vec<DecodedImage>,
    labels: Vec<usize>,
    paths: Vec<String>,
    /// Bounding box of each image's defect mask, if it has a readable, non-empty one.
    defect_boxes: Vec<Option<Roi>>,
}

/// Bounding box of the non-zero pixels of the mask at `path`, when it matches the image size.
fn mask_box(path: &Path, width: u32, height: u32) -> Option<Roi> {
    let m = dataset::decode_image(path).ok()?;
    if m.width != width || m.height != height {
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
    (x0 <= x1).then(|| Roi {
        x: x0,
        y: y0,
        width: x1 - x0 + 1,
        height: y1 - y0 + 1,
    })
}

fn load_split(
    samples: &[Sample],
    classes: &[String],
    skipped: &mut Vec<(String, String)>,
) -> Split {
    let mut out = Split {
        images: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
        defect_boxes: Vec::new(),
    };
    for (s, img) in samples.iter().zip(decode_all(samples)) {
        match img {
            Ok(img) => {
                out.defect_boxes.push(
                    s.mask
                        .as_deref()
                        .and_then(|m| mask_box(m, img.width, img.height)),
                );
                out.images.push(img);
                out.labels
                    .push(classes.iter().position(|c| *c == s.label).unwrap_or(0));
                out.paths.push(s.rel_path.clone());
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
    let pairs = probs.iter().zip(labels).map(|(p, &t)| {
        let pred = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        (t, pred)
    });
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

fn tensor_vec<const D: usize>(t: Tensor<D>) -> anyhow::Result<Vec<f32>> {
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
fn model_tensors(model: &BurnModel) -> anyhow::Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
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

fn save_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> anyhow::Result<()> {
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

/// Runs training. `progress` sees every step and epoch; setting `cancel` stops within one step.
pub fn train(
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
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
    };
    let mut spec = preset_spec(&cfg.preset, input, classes.clone(), pass.clone())?;

    let (base_device, backend_label) = device_for(cfg.backend)?;
    base_device.seed(cfg.seed);
    let device = base_device.clone().autodiff();
    let mut model = BurnModel::init_seeded(&spec, true, &device, cfg.seed)?;

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
        .with_weights(Some(weights))
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
    let n = train_set.images.len();
    let bs = cfg.batch_size.clamp(1, n);
    let steps = n.div_ceil(bs);
    let mut early_stopped = false;
    let loop_start = Instant::now();
    for epoch in first_epoch..cfg.epochs {
        // Seeded shuffle.
        let mut order: Vec<usize> = (0..n).collect();
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
            let mut xs = Vec::with_capacity(idx.len() * c * h * w);
            for &i in idx {
                let mut r = augment::sample_rng(cfg.seed, epoch, i);
                xs.extend(
                    augment::augmented_keeping(
                        &spec.input,
                        &train_set.images[i].frame(),
                        &cfg.augment,
                        &mut r,
                        train_set.defect_boxes[i],
                    )
                    .map_err(anyhow::Error::msg)?,
                );
            }
            let ys: Vec<i64> = idx.iter().map(|&i| train_set.labels[i] as i64).collect();
            let x = Tensor::<4>::from_data(TensorData::new(xs, [idx.len(), c, h, w]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys, [idx.len()]), &device);
            let logits = model.forward(x);
            let pred = tensor_vec(logits.clone().detach())?;
            let k = pred.len() / idx.len();
            for (row, &i) in pred.chunks(k).zip(idx) {
                let p = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(j, _)| j)
                    .unwrap_or(0);
                correct += (p == train_set.labels[i]) as usize;
            }
            let loss = loss_fn.forward(logits, y);
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
        let score = acc + vm.auroc.unwrap_or(0.0);
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
    let best = load_best(&spec, &cfg.out, &base_device)?;
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
        missing: ds.missing.len(),
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
