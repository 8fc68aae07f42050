//! The shared training vocabulary: what a run is asked to do ([`TrainConfig`] and its enums),
//! what it reports while running ([`Progress`], [`EpochRecord`]) and what it returns
//! ([`TrainSummary`], [`Cancelled`]). Every trainer (from scratch, head, anomaly) and every
//! caller (CLI, Train tab, tests) reads these; this module imports no trainer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use crate::evaluation::metrics;

/// Anomaly mode: how many nearest memory-bank entries reweight a score (anomalib's
/// `num_neighbors`).
pub const NEIGHBORS: u32 = 9;

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
    /// Largest val miss rate the chosen threshold may have (with the review band: of the
    /// parts passed automatically, below the band).
    pub max_miss_rate: f64,
    /// The review band's other target: the largest val false-reject rate of the parts failed
    /// automatically (at or above the FAIL threshold).
    #[serde(default = "default_max_fail_false_reject")]
    pub max_fail_false_reject: f64,
    /// Set a review band (two thresholds, REVIEW between them) where val allows; false: one
    /// threshold, two-way.
    #[serde(default = "default_true")]
    pub review_band: bool,
    /// Pretrained-backbone classifier: which head (`auto`: the best by part-disjoint
    /// cross-validation on the training split).
    #[serde(default)]
    pub head: super::head_select::HeadKind,
    /// Pretrained-backbone position head: how many heads (each from its own seed) are trained
    /// and averaged into one (1: a single head).
    #[serde(default = "default_members")]
    pub members: usize,
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

pub(crate) fn default_neighbors() -> u32 {
    NEIGHBORS
}

pub(crate) fn default_max_false_reject() -> f64 {
    0.01
}

pub(crate) fn default_max_fail_false_reject() -> f64 {
    0.02
}

fn default_true() -> bool {
    true
}

impl TrainConfig {
    /// The review band on val from this run's targets (see [`metrics::choose_band`]).
    pub fn band_on(&self, vm: &metrics::ValMetrics) -> metrics::Band {
        metrics::choose_band(
            &vm.scores,
            &vm.defective,
            self.max_miss_rate,
            self.max_fail_false_reject,
            self.review_band,
        )
    }

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
            max_fail_false_reject: default_max_fail_false_reject(),
            review_band: true,
            head: super::head_select::HeadKind::Auto,
            members: default_members(),
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

/// Position heads averaged into the exported one, by default. Measured on magnetic-tile val
/// (seeds 1–5 and 42, `README.md`): one head AUROC 0.860–0.884 (mean 0.868), three averaged
/// 0.862–0.878 (mean 0.871) with a review share 1.2 points larger on average: it does not pay
/// for its 3× head time, so one.
pub const DEFAULT_MEMBERS: usize = 1;

fn default_members() -> usize {
    DEFAULT_MEMBERS
}

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "lite0";
/// The optimizer used when none is named (the default model was trained with it).
pub const DEFAULT_OPTIMIZER: OptimizerKind = OptimizerKind::Adam;
/// The peak learning rate used when none is given.
pub const DEFAULT_LR: f64 = 0.001;
/// The epochs run when none are given.
pub const DEFAULT_EPOCHS: usize = 4;

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
    /// FAIL threshold chosen on val.
    pub threshold: f32,
    /// The review band's PASS threshold chosen on val (None: two-way).
    pub pass_threshold: Option<f32>,
    /// Val miss rate of the automatic PASS (defective parts passed without a person).
    pub val_miss_rate: f64,
    /// Val false-reject rate of the automatic FAIL (good parts failed without a person).
    pub val_false_reject_rate: f64,
    /// Val share of the images that went to REVIEW.
    pub val_review_share: f64,
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
    /// Pretrained-backbone classifier: the heads cross-validated and the one kept.
    pub head: Option<super::head_select::HeadChoice>,
}

/// The run was cancelled; the last finished epoch is in the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("training cancelled; resume with --resume (checkpoint {0})")]
pub struct Cancelled(pub PathBuf);
