//! The Train tab's state: the form's settings, the running job and its curves, the last
//! result and the saved versions.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crossbeam_channel::{Receiver, bounded};

use crate::evaluation::eval::{Detailed, EvalReport};
use crate::records::versions::{self, VersionInfo};
use crate::training::{self, BackendKind, EpochRecord, OptimizerKind, TrainConfig, TrainSummary};

/// A finished run and its val evaluation through the engine.
pub struct TrainResult {
    /// The training summary.
    pub summary: TrainSummary,
    /// Val evaluation (per image) through the kernels engine.
    pub detailed: Detailed,
    /// Class names.
    pub classes: Vec<String>,
    /// Fingerprint of the dataset's labels.
    pub fingerprint: String,
    /// Seconds the person waited: from Start to the evaluation's end (training, the final
    /// evaluation through the engine and the gallery), not the training loop's own time.
    pub wall_s: f64,
    pub(in crate::ui) gallery: Vec<(egui::ColorImage, String)>,
}

/// Why a run ended without a model.
#[derive(Debug)]
pub(in crate::ui) enum Failure {
    /// The person cancelled; the last finished epoch kept in the checkpoint, if one finished.
    Cancelled { kept_epoch: Option<usize> },
    /// Anything else, in words.
    Error(String),
}

pub(in crate::ui) enum Msg {
    /// What the training loop reports.
    Progress(training::Progress),
    /// The final evaluation through the engine: images done of all.
    Evaluating {
        done: usize,
        total: usize,
    },
    Done(Result<Box<TrainResult>, Failure>),
    Saved(Result<VersionInfo, String>),
    Versions(Vec<VersionInfo>),
    Compared(Vec<(String, Result<EvalReport, String>)>),
}

/// A cancelled run's settings and its last finished epoch (kept in the checkpoint next to its
/// model file).
#[derive(Clone, Debug)]
pub struct ResumePoint {
    /// The run's settings (its model file names the checkpoint).
    pub cfg: TrainConfig,
    /// The last finished epoch.
    pub epoch: usize,
}

/// The tab's state.
pub struct TrainView {
    /// Dataset folder.
    pub data: String,
    /// Training split.
    pub split_train: String,
    /// Val split.
    pub split_val: String,
    /// Preset.
    pub preset: String,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Epochs.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Augmentation on.
    pub augment: bool,
    /// PASS classes, separated by commas (empty: recognised by name, as the CLI does).
    pub pass: String,
    /// Images per step (whole-image presets).
    pub batch_size: usize,
    /// Where the whole-image presets train.
    pub backend: BackendKind,
    /// Train an anomaly model from the good parts only (else a classifier).
    pub anomaly: bool,
    /// Anomaly mode: memory-bank entries (0 = automatic: 10 % of the good cells, ≤ 4,096).
    pub bank: usize,
    /// Anomaly mode with good val images only: the false-reject target, in percent.
    pub false_reject_pct: f64,
    /// A cancelled run that can go on from its last finished epoch.
    pub resume_from: Option<ResumePoint>,
    /// The running (or last) run's settings.
    pub(in crate::ui) run: Option<TrainConfig>,
    /// First epoch of the running run (> 1 when resumed).
    pub(in crate::ui) first_epoch: usize,
    /// (when, fraction of the phase done then, phase) at the first step of the current phase:
    /// phase 0 is feature extraction, 1 the epochs.
    pub(in crate::ui) eta_anchor: Option<(Instant, f64, usize)>,
    /// Seconds left in the current phase, from the steps so far.
    pub eta_s: Option<f64>,
    /// Val images of the running run (the final evaluation runs them through the engine).
    pub(in crate::ui) val_images: usize,
    /// Seconds per image measured while extracting backbone features: the estimate of the
    /// final evaluation's time until it reports its own progress.
    pub(in crate::ui) per_image_s: Option<f64>,
    pub(in crate::ui) cancel: Option<Arc<AtomicBool>>,
    pub(in crate::ui) rx: Option<Receiver<Msg>>,
    pub(in crate::ui) started: Option<Instant>,
    /// Epochs finished in this run.
    pub history: Vec<EpochRecord>,
    /// Loss per step: [epochs done, loss].
    pub steps: Vec<[f64; 2]>,
    /// Progress line.
    pub status: String,
    /// The finished run.
    pub result: Option<TrainResult>,
    pub(in crate::ui) gallery: Vec<(egui::TextureHandle, String)>,
    /// Threshold being tuned (FAIL at or above).
    pub threshold: f32,
    /// The review band's PASS threshold being tuned (None: two-way).
    pub pass_threshold: Option<f32>,
    /// Version name to save.
    pub version_name: String,
    pub(in crate::ui) notes: String,
    pub(in crate::ui) versions: Option<Vec<VersionInfo>>,
    pub(in crate::ui) compare: [usize; 2],
    pub(in crate::ui) comparison: Option<Vec<(String, Result<EvalReport, String>)>>,
    /// Where versions are kept.
    pub versions_dir: PathBuf,
    pub(in crate::ui) side_tx: crossbeam_channel::Sender<Msg>,
    pub(in crate::ui) side_rx: Receiver<Msg>,
}

impl Default for TrainView {
    fn default() -> Self {
        let (side_tx, side_rx) = bounded(16);
        Self {
            side_tx,
            side_rx,
            data: String::new(),
            split_train: "train".into(),
            split_val: "val".into(),
            preset: training::DEFAULT_PRESET.into(),
            optimizer: training::DEFAULT_OPTIMIZER,
            epochs: training::DEFAULT_EPOCHS,
            lr: training::DEFAULT_LR,
            augment: true,
            pass: String::new(),
            batch_size: 16,
            backend: BackendKind::Auto,
            anomaly: false,
            bank: 0,
            false_reject_pct: 1.0,
            resume_from: None,
            run: None,
            first_epoch: 1,
            eta_anchor: None,
            eta_s: None,
            val_images: 0,
            per_image_s: None,
            cancel: None,
            rx: None,
            started: None,
            history: Vec::new(),
            steps: Vec::new(),
            status: String::new(),
            result: None,
            gallery: Vec::new(),
            threshold: 0.5,
            pass_threshold: None,
            version_name: String::new(),
            notes: String::new(),
            versions: None,
            compare: [0, 1],
            comparison: None,
            versions_dir: versions::default_dir(),
        }
    }
}
