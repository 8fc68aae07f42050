//! The Train tab: choose data and settings, start and cancel training (in a worker; the same
//! `train::train` as the command line), live loss and accuracy curves with ETA, then the val
//! confusion matrix, per-class metrics, mispredicted images, threshold tuning on the val score
//! histograms, and model versions (save, list, compare, activate).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, bounded};
use egui::{Color32, RichText, vec2};

use super::file_dialog::{DialogKind, DialogRequest, Target};
use super::{InspectorApp, Level};
use crate::eval::{Detailed, EvalReport};
use crate::train::{self, BackendKind, EpochRecord, OptimizerKind, TrainConfig, TrainSummary};
use crate::versions::{self, VersionInfo};

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
    gallery: Vec<(egui::ColorImage, String)>,
}

/// Why a run ended without a model.
#[derive(Debug)]
enum Failure {
    /// The person cancelled; the last finished epoch kept in the checkpoint, if one finished.
    Cancelled { kept_epoch: Option<usize> },
    /// Anything else, in words.
    Error(String),
}

enum Msg {
    /// What the training loop reports.
    Progress(train::Progress),
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

/// "good, ok" → ["good", "ok"]: the PASS classes typed in the form.
pub fn pass_list(typed: &str) -> Vec<String> {
    typed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A training error in the form's words: the library names command-line options.
pub fn for_the_form(e: &str) -> String {
    e.replace(
        "name the PASS classes with --pass CLASS",
        "type the PASS classes in the form",
    )
    .replace("--pass ", "PASS class ")
    .replace("(pass: ", "(PASS classes typed: ")
    .replace("lower --lr", "lower the learning rate")
}

/// Seconds left when the share `from` of the work was done at `at` and `done` is done `now`:
/// the rate since `at` applied to the rest (None until there is progress to measure).
pub fn eta_from(at: Instant, from: f64, now: Instant, done: f64) -> Option<f64> {
    let secs = now.checked_duration_since(at)?.as_secs_f64();
    let progress = done - from;
    (progress > 1e-9 && secs > 0.0).then(|| secs / progress * (1.0 - done).max(0.0))
}

/// "42 s", "3 min 5 s".
fn seconds(s: f64) -> String {
    let s = s.round() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
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
    run: Option<TrainConfig>,
    /// First epoch of the running run (> 1 when resumed).
    first_epoch: usize,
    /// (when, fraction of the phase done then, phase) at the first step of the current phase:
    /// phase 0 is feature extraction, 1 the epochs.
    eta_anchor: Option<(Instant, f64, usize)>,
    /// Seconds left in the current phase, from the steps so far.
    pub eta_s: Option<f64>,
    cancel: Option<Arc<AtomicBool>>,
    rx: Option<Receiver<Msg>>,
    started: Option<Instant>,
    /// Epochs finished in this run.
    pub history: Vec<EpochRecord>,
    /// Loss per step: [epochs done, loss].
    pub steps: Vec<[f64; 2]>,
    /// Progress line.
    pub status: String,
    /// The finished run.
    pub result: Option<TrainResult>,
    gallery: Vec<(egui::TextureHandle, String)>,
    /// Threshold being tuned.
    pub threshold: f32,
    /// Version name to save.
    pub version_name: String,
    notes: String,
    versions: Option<Vec<VersionInfo>>,
    compare: [usize; 2],
    comparison: Option<Vec<(String, Result<EvalReport, String>)>>,
    /// Where versions are kept.
    pub versions_dir: PathBuf,
    side_tx: crossbeam_channel::Sender<Msg>,
    side_rx: Receiver<Msg>,
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
            preset: train::DEFAULT_PRESET.into(),
            optimizer: train::DEFAULT_OPTIMIZER,
            epochs: train::DEFAULT_EPOCHS,
            lr: train::DEFAULT_LR,
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
            cancel: None,
            rx: None,
            started: None,
            history: Vec::new(),
            steps: Vec::new(),
            status: String::new(),
            result: None,
            gallery: Vec::new(),
            threshold: 0.5,
            version_name: String::new(),
            notes: String::new(),
            versions: None,
            compare: [0, 1],
            comparison: None,
            versions_dir: versions::default_dir(),
        }
    }
}

impl TrainView {
    /// Whether a run is going.
    pub fn running(&self) -> bool {
        self.cancel.is_some()
    }

    /// The settings the form describes, writing to `out`.
    pub fn config(&self, out: PathBuf) -> TrainConfig {
        let mut cfg = TrainConfig::new(PathBuf::from(self.data.trim()), out);
        cfg.split_train = self.split_train.trim().to_string();
        cfg.split_val = self.split_val.trim().to_string();
        cfg.preset = self.preset.clone();
        cfg.optimizer = self.optimizer;
        cfg.epochs = self.epochs.max(1);
        cfg.batch_size = self.batch_size.max(1);
        cfg.lr = self.lr;
        cfg.backend = self.backend;
        cfg.pass = pass_list(&self.pass);
        if !self.augment {
            cfg.augment = crate::augment::AugmentConfig::off();
        }
        if self.anomaly {
            cfg.mode = train::TrainMode::Anomaly;
            cfg.epochs = 1; // one pass: features, memory bank, threshold
            cfg.bank = (self.bank > 0).then_some(self.bank);
            cfg.max_false_reject = (self.false_reject_pct / 100.0).clamp(0.0, 1.0);
        }
        cfg
    }

    /// Starts a new run of the form's settings in a worker.
    pub fn start(&mut self, gpu: &super::Gpu, ctx: &egui::Context) {
        let out = self.versions_dir.join("runs").join(format!(
            "run-{}.safetensors",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        let cfg = self.config(out);
        self.resume_from = None;
        self.history.clear();
        self.steps.clear();
        self.launch(cfg, gpu, ctx);
    }

    /// Continues the cancelled run from its last finished epoch (its own settings: the same
    /// dataset, preset and epochs).
    pub fn resume(&mut self, gpu: &super::Gpu, ctx: &egui::Context) {
        let Some(point) = self.resume_from.take() else {
            self.status = "nothing to resume: no cancelled run kept a finished epoch".into();
            return;
        };
        let mut cfg = point.cfg;
        cfg.resume = true;
        self.launch(cfg, gpu, ctx);
    }

    fn launch(&mut self, cfg: TrainConfig, gpu: &super::Gpu, ctx: &egui::Context) {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<Msg>(256);
        let flag = cancel.clone();
        let gpu = gpu.clone();
        let ctx = ctx.clone();
        let run = cfg.clone();
        let spawned = std::thread::Builder::new()
            .name("training".into())
            .spawn(move || {
                let tx2 = tx.clone();
                let ctx2 = ctx.clone();
                let mut progress = move |p: train::Progress| {
                    if matches!(p, train::Progress::Step { .. }) {
                        // Steps are many: drop one rather than wait for the UI.
                        let _ = tx2.try_send(Msg::Progress(p));
                    } else {
                        let _ = tx2.send(Msg::Progress(p));
                    }
                    ctx2.request_repaint();
                };
                let result = match train::train(&cfg, &mut progress, &flag) {
                    Ok(summary) => finish(&cfg, summary, &gpu).map_err(Failure::Error),
                    Err(_) if flag.load(Ordering::SeqCst) => Err(Failure::Cancelled {
                        kept_epoch: train::checkpoint_epoch(&cfg.out),
                    }),
                    Err(e) => Err(Failure::Error(for_the_form(&format!("{e:#}")))),
                };
                let _ = tx.send(Msg::Done(result.map(Box::new)));
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.cancel = Some(cancel);
                self.rx = Some(rx);
                self.started = Some(Instant::now());
                self.first_epoch = 1;
                self.eta_anchor = None;
                self.eta_s = None;
                self.run = Some(run);
                self.result = None;
                self.gallery.clear();
                self.comparison = None;
                self.status = "loading the dataset…".into();
            }
            Err(e) => self.status = format!("ERROR: cannot start training: {e}"),
        }
    }

    /// Epochs of the running (or last) run.
    fn run_epochs(&self) -> usize {
        self.run.as_ref().map_or(self.epochs, |c| c.epochs).max(1)
    }

    /// Takes one report of the training loop, received at `now`.
    fn on_progress(&mut self, p: train::Progress, now: Instant) {
        let epochs = self.run_epochs();
        match p {
            train::Progress::Started {
                train,
                val,
                backend,
                skipped,
                first_epoch,
            } => {
                self.first_epoch = first_epoch;
                // A resumed run goes on from its checkpoint: keep the curves up to there.
                self.history.retain(|e| e.epoch < first_epoch);
                self.steps.retain(|s| s[0] <= (first_epoch - 1) as f64);
                let from = if first_epoch > 1 {
                    format!(", resuming at epoch {first_epoch}")
                } else {
                    String::new()
                };
                self.status = format!(
                    "training on {train} images, validating on {val} ({} unreadable skipped), backend {backend}{from}",
                    skipped.len()
                )
            }
            train::Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                let steps = steps.max(1);
                let within = step as f64 / steps as f64;
                let anomaly = self
                    .run
                    .as_ref()
                    .is_some_and(|c| c.mode == train::TrainMode::Anomaly);
                // Phase 0: a backbone preset extracting features (per image); 1: the epochs.
                // Anomaly training: 1 is the memory bank, 2 scoring the val images.
                let (phase, done) = if epoch == 0 {
                    (0, within)
                } else if anomaly {
                    (epoch, within)
                } else {
                    (1, ((epoch - 1) as f64 + within) / epochs as f64)
                };
                match self.eta_anchor {
                    Some((at, from, ph)) if ph == phase => {
                        self.eta_s = eta_from(at, from, now, done);
                    }
                    _ => {
                        self.eta_anchor = Some((now, done, phase));
                        self.eta_s = None;
                    }
                }
                let eta = self
                    .eta_s
                    .map(|s| format!(", ETA {}", seconds(s)))
                    .unwrap_or_default();
                if epoch == 0 {
                    self.status =
                        format!("extracting backbone features: {step}/{steps} images{eta}");
                } else if anomaly && epoch == 1 {
                    self.status = format!(
                        "building the memory bank (greedy coreset): {step}/{steps} entries{eta}"
                    );
                } else if anomaly {
                    self.status = format!("scoring the val images: {step}/{steps}{eta}");
                } else {
                    if loss.is_finite() {
                        self.steps.push([(epoch - 1) as f64 + within, loss]);
                    }
                    self.status =
                        format!("epoch {epoch}/{epochs}: step {step}/{steps}, loss {loss:.4}{eta}");
                }
            }
            train::Progress::Epoch(e) => {
                let eta = if e.epoch >= epochs {
                    self.eta_s = Some(0.0);
                    "; evaluating on val through the inspection engine…".to_string()
                } else {
                    self.eta_s
                        .map(|s| format!(", ETA {}", seconds(s)))
                        .unwrap_or_default()
                };
                self.status = format!(
                    "epoch {} done: val accuracy {:.3}, AUROC {}{eta}",
                    e.epoch,
                    e.val_accuracy,
                    e.val_auroc
                        .map(|a| format!("{a:.3}"))
                        .unwrap_or_else(|| "n/a".into()),
                );
                // The last epoch of a backbone preset is reported again after calibration.
                self.history.retain(|h| h.epoch != e.epoch);
                self.history.push(e);
            }
        }
    }

    /// A run ended without a model.
    fn on_failure(&mut self, f: Failure) {
        match f {
            Failure::Cancelled {
                kept_epoch: Some(k),
            } => {
                let epochs = self.run_epochs();
                if let Some(cfg) = self.run.clone() {
                    self.resume_from = Some(ResumePoint { cfg, epoch: k });
                }
                self.status = if k >= epochs {
                    format!(
                        "cancelled after the last epoch ({k} of {epochs}) during calibration: it is kept — Resume finishes the run"
                    )
                } else {
                    format!(
                        "cancelled after epoch {k} of {epochs}: epoch {k} is kept — Resume continues from it"
                    )
                };
            }
            Failure::Cancelled { kept_epoch: None } => {
                self.status = "cancelled before the first epoch finished: nothing to resume — \
                               Start training begins again (extracted features stay cached)"
                    .into();
            }
            Failure::Error(e) => self.status = format!("ERROR: {e}"),
        }
    }

    /// Asks the run to stop (takes effect within one training step).
    pub fn cancel(&mut self) {
        if let Some(c) = &self.cancel {
            c.store(true, Ordering::SeqCst);
            self.status = "cancelling…".into();
        }
    }

    /// Runs `job` in a short-lived worker; its answer arrives on the side channel.
    fn side_job(&self, ctx: &egui::Context, job: impl FnOnce() -> Msg + Send + 'static) {
        let tx = self.side_tx.clone();
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("train-side".into())
            .spawn(move || {
                let _ = tx.send(job());
                ctx.request_repaint();
            });
    }

    fn refresh_versions(&mut self, ctx: &egui::Context) {
        let dir = self.versions_dir.clone();
        self.versions = Some(Vec::new());
        self.side_job(ctx, move || Msg::Versions(versions::list(&dir)));
    }
}

pub(super) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    if app.train.data.is_empty() {
        app.train.data = app
            .label
            .set
            .as_ref()
            .map(|s| s.root.display().to_string())
            .unwrap_or_else(|| {
                crate::headless::bundled(crate::headless::DEMO_DATASET)
                    .display()
                    .to_string()
            });
    }
    if app.train.versions.is_none() {
        app.train.refresh_versions(&ctx);
    }
    // Messages.
    let mut msgs: Vec<Msg> = app
        .train
        .rx
        .as_ref()
        .map(|r| r.try_iter().collect())
        .unwrap_or_default();
    msgs.extend(app.train.side_rx.try_iter());
    for m in msgs {
        let t = &mut app.train;
        match m {
            Msg::Progress(p) => t.on_progress(p, Instant::now()),
            Msg::Done(r) => {
                t.cancel = None;
                t.rx = None;
                match r {
                    Ok(res) => {
                        t.status = format!(
                            "finished: best epoch {}, val accuracy {:.3}, {:.0} s",
                            res.summary.best_epoch,
                            res.summary.val_accuracy,
                            res.summary.train_seconds
                        );
                        t.threshold = res.summary.threshold;
                        t.gallery = res
                            .gallery
                            .iter()
                            .enumerate()
                            .map(|(i, (img, label))| {
                                (
                                    ctx.load_texture(
                                        format!("gallery-{i}"),
                                        img.clone(),
                                        egui::TextureOptions::LINEAR,
                                    ),
                                    label.clone(),
                                )
                            })
                            .collect();
                        if t.version_name.is_empty() {
                            t.version_name =
                                format!("model-{}", chrono::Local::now().format("%Y%m%d-%H%M"));
                        }
                        t.result = Some(*res);
                    }
                    Err(f) => t.on_failure(f),
                }
            }
            Msg::Saved(r) => match r {
                Ok(v) => {
                    t.status = format!("saved version {} ({})", v.name, v.path.display());
                    t.refresh_versions(&ctx);
                }
                Err(e) => t.status = format!("ERROR: {e}"),
            },
            Msg::Versions(v) => t.versions = Some(v),
            Msg::Compared(c) => t.comparison = Some(c),
        }
    }
    egui::Panel::left("train-settings")
        .resizable(false)
        .exact_size(SETTINGS_WIDTH)
        .show(ui, |ui| settings(app, ui, &ctx));
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical()
            .id_salt("train-main")
            .show(ui, |ui| {
                curves(&app.train, ui);
                if app.train.result.is_some() {
                    results(app, ui, &ctx);
                }
                ui.separator();
                versions_ui(app, ui, &ctx);
            });
    });
}

/// Width of the settings column (the form's labels and controls fit in it whole).
pub const SETTINGS_WIDTH: f32 = 360.0;

fn settings(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    let running = app.train.running();
    let backbone = train::PRESETS
        .iter()
        .find(|p| p.name == app.train.preset)
        .is_some_and(|p| p.backbone.is_some());
    ui.add_enabled_ui(!running, |ui| {
        let l = ui.label("Dataset folder");
        ui.horizontal(|ui| {
            let t = &mut app.train;
            ui.add(
                egui::TextEdit::singleline(&mut t.data)
                    .desired_width(ui.available_width() - 96.0)
                    .id_salt("train-data"),
            )
            .labelled_by(l.id);
            let near = t.data.clone();
            app.dialogs.button_ui(ui, Target::TrainDataset, || {
                DialogRequest::new(DialogKind::PickFolder, "Dataset folder to train on", &near)
            });
        });
        app.dialogs.note_ui(ui, Target::TrainDataset);
        if let Some(set) = &app.label.set
            && ui.button("Use the Label tab's dataset").clicked()
        {
            app.train.data = set.root.display().to_string();
        }
        let t = &mut app.train;
        // Labels in their own column, controls in the next: every label is read whole.
        egui::Grid::new("train-grid")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let field =
                    |ui: &mut egui::Ui, label: &str, text: &mut String, id: &str, hint: &str| {
                        let l = ui.label(label);
                        ui.add(
                            egui::TextEdit::singleline(text)
                                .desired_width(170.0)
                                .hint_text(hint)
                                .id_salt(id),
                        )
                        .labelled_by(l.id);
                        ui.end_row();
                    };
                field(
                    ui,
                    "Training split",
                    &mut t.split_train,
                    "split-train",
                    "train",
                );
                field(ui, "Val split", &mut t.split_val, "split-val", "val");
                field(
                    ui,
                    "PASS classes",
                    &mut t.pass,
                    "pass-classes",
                    "auto (good, ok, …)",
                );
                ui.label("Model kind");
                ui.radio_value(&mut t.anomaly, false, "Classifier (labelled defects)");
                ui.end_row();
                ui.label("");
                ui.radio_value(&mut t.anomaly, true, "Anomaly: good parts only");
                ui.end_row();
                if t.anomaly && !backbone {
                    // An anomaly model needs the pretrained backbone's features.
                    t.preset = train::DEFAULT_PRESET.into();
                }
                let l = ui.label("Preset");
                egui::ComboBox::from_id_salt("preset")
                    .selected_text(t.preset.clone())
                    .show_ui(ui, |ui| {
                        for p in train::PRESETS
                            .iter()
                            .filter(|p| !t.anomaly || p.backbone.is_some())
                        {
                            ui.selectable_value(&mut t.preset, p.name.to_string(), p.name)
                                .on_hover_text(p.about);
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                if t.anomaly {
                    let l = ui.label("Memory bank");
                    ui.add(
                        egui::DragValue::new(&mut t.bank)
                            .range(0..=crate::train_anomaly::BANK_BUDGET_BYTES as usize / (232 * 4))
                            .custom_formatter(|v, _| {
                                if v == 0.0 {
                                    "auto".into()
                                } else {
                                    format!("{v:.0} entries")
                                }
                            }),
                    )
                    .labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("False-reject target");
                    ui.add(
                        egui::DragValue::new(&mut t.false_reject_pct)
                            .range(0.0..=50.0)
                            .speed(0.1)
                            .suffix(" %"),
                    )
                    .labelled_by(l.id);
                    ui.end_row();
                }
                let l = ui.label("Optimizer");
                let names = [
                    (OptimizerKind::Sgd, "SGD"),
                    (OptimizerKind::Momentum, "SGD + momentum"),
                    (OptimizerKind::Adam, "Adam"),
                    (OptimizerKind::Adamw, "AdamW"),
                ];
                let shown = names
                    .iter()
                    .find(|(o, _)| *o == t.optimizer)
                    .map_or("", |(_, n)| n);
                let classic = !t.anomaly;
                ui.add_enabled_ui(classic, |ui| {
                    egui::ComboBox::from_id_salt("optimizer")
                        .selected_text(shown)
                        .show_ui(ui, |ui| {
                            for (o, n) in names {
                                ui.selectable_value(&mut t.optimizer, o, n);
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                ui.end_row();
                let l = ui.label("Epochs");
                ui.add_enabled(classic, egui::DragValue::new(&mut t.epochs).range(1..=500))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Learning rate");
                ui.add_enabled(
                    classic,
                    egui::DragValue::new(&mut t.lr)
                        .range(1e-5..=1.0)
                        .speed(0.001)
                        .max_decimals(5),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Batch size");
                ui.add_enabled(
                    !backbone,
                    egui::DragValue::new(&mut t.batch_size)
                        .range(1..=1024)
                        .suffix(" images"),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Backend");
                ui.add_enabled_ui(!backbone, |ui| {
                    egui::ComboBox::from_id_salt("backend")
                        .selected_text(backend_name(t.backend))
                        .show_ui(ui, |ui| {
                            for b in [BackendKind::Auto, BackendKind::Cpu, BackendKind::Wgpu] {
                                ui.selectable_value(&mut t.backend, b, backend_name(b));
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                ui.end_row();
                let l = ui.label("Augmentation");
                ui.add_enabled(classic, egui::Checkbox::new(&mut t.augment, "on"))
                    .labelled_by(l.id);
                ui.end_row();
            });
        let note = |ui: &mut egui::Ui, text: &str| {
            // Wrap within what the column shows (its clip rect), whatever widened the layout.
            let width = (ui.clip_rect().right() - ui.cursor().left() - 8.0).max(120.0);
            ui.allocate_ui(vec2(width, 0.0), |ui| {
                ui.set_max_width(width);
                ui.add(egui::Label::new(RichText::new(text).size(11.5).weak()).wrap());
            });
        };
        note(
            ui,
            "PASS classes: the defect-free classes, separated by commas; empty: the classes named \
             good, ok, pass, normal or free.",
        );
        if app.train.anomaly {
            note(
                ui,
                "Anomaly model: learns from the good (PASS) images of the training split only — \
                 for a new product without labelled defects; defect images there are ignored. \
                 The threshold keeps the val miss rate within 1 % when val has defective images, \
                 else the good val images' false-reject rate within the target. Optimizer, \
                 epochs, learning rate and augmentation do not apply.",
            );
        } else if backbone {
            note(
                ui,
                "This preset trains its head on the CPU on cached backbone features, 2048 feature \
                 rows per step: batch size and backend apply to the whole-image presets.",
            );
        } else {
            note(
                ui,
                "Backend auto: the GPU, or the CPU when the only GPU is a software rasteriser.",
            );
        }
        note(
            ui,
            "Augmentation: flips, rotation, brightness/contrast and crops of the training images.",
        );
        note(
            ui,
            "Unlabelled images are skipped; without a val split, 15 % of each class is held out \
             (whole groups).",
        );
    });
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(
                !running,
                egui::Button::new(RichText::new("Start training").strong()),
            )
            .clicked()
        {
            let gpu = app.gpu.clone();
            app.train.start(&gpu, ctx);
        }
        if ui
            .add_enabled(running, egui::Button::new("Cancel training"))
            .clicked()
        {
            app.train.cancel();
        }
        if let Some(p) = app.train.resume_from.as_ref().filter(|_| !running) {
            let hover = format!(
                "continue the cancelled run from epoch {} ({} of {} epochs done; dataset {}, preset {})",
                p.epoch + 1,
                p.epoch,
                p.cfg.epochs,
                p.cfg.data.display(),
                p.cfg.preset
            );
            if ui
                .button(RichText::new("Resume training").strong())
                .on_hover_text(hover)
                .clicked()
            {
                let gpu = app.gpu.clone();
                app.train.resume(&gpu, ctx);
            }
        }
        if running {
            ui.spinner();
        }
    });
    let t = &app.train;
    if let Some(s) = t.started.filter(|_| t.running()) {
        let left = t
            .eta_s
            .map(|e| format!(" · about {} left", seconds(e)))
            .unwrap_or_default();
        ui.label(format!(
            "running for {}{left}",
            seconds(s.elapsed().as_secs_f64())
        ));
    }
    let color = if t.status.starts_with("ERROR") {
        ui.visuals().error_fg_color
    } else {
        ui.visuals().text_color()
    };
    ui.add(egui::Label::new(RichText::new(&t.status).color(color)).wrap());
}

fn backend_name(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Auto => "auto",
        BackendKind::Cpu => "CPU (burn flex)",
        BackendKind::Wgpu => "GPU (burn wgpu)",
    }
}

/// Grid steps for a short y axis: four to six labelled lines (1, 2, 2.5 or 5 × 10ⁿ apart) over
/// what is shown; egui_plot's default (powers of ten) leaves only 0 and 1 labelled on 125 px.
fn about_four_labels(input: egui_plot::GridInput) -> [f64; 3] {
    let span = (input.bounds.1 - input.bounds.0).abs().max(1e-9);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let large = power
        * match raw / power {
            m if m <= 1.0 => 1.0,
            m if m <= 2.0 => 2.0,
            m if m <= 2.5 => 2.5,
            m if m <= 5.0 => 5.0,
            _ => 10.0,
        };
    [large / 10.0, large / 2.0, large]
}

/// "0.25", "0.5", "1": as many decimals as the value needs (egui_plot's default writes 0.5 as
/// "0" on these steps).
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// The loss plot's id (its `egui_plot::PlotMemory` holds the bounds it shows).
pub fn loss_plot_id() -> egui::Id {
    egui::Id::unique("train-loss")
}

/// The accuracy plot's id.
pub fn accuracy_plot_id() -> egui::Id {
    egui::Id::unique("train-accuracy")
}

fn curves(t: &TrainView, ui: &mut egui::Ui) {
    use egui_plot::{Legend, Line, Plot, PlotPoints};
    // Loss and accuracy have their own axes: loss per step (any scale), accuracy per epoch
    // (0–1), one above the other with the same epoch axis.
    let link = egui::Id::unique("train-curves-x");
    ui.label(RichText::new("Training loss (per step)").strong());
    Plot::new("train-loss")
        .id(loss_plot_id())
        .height(125.0)
        .legend(Legend::default())
        .allow_scroll(false)
        .link_axis(link, [true, false])
        .x_axis_label("epoch")
        .y_axis_label("loss")
        // Wide enough for "0.25": a narrower axis drops every label but 0 and 1.
        .y_axis_min_width(36.0)
        .y_grid_spacer(egui_plot::uniform_grid_spacer(about_four_labels))
        .y_axis_formatter(|mark, _| tick_label(mark.value))
        .include_y(0.0)
        .show(ui, |p| {
            p.line(
                Line::new("loss", PlotPoints::from(t.steps.clone()))
                    .color(Color32::from_rgb(230, 160, 40)),
            );
        });
    ui.label(RichText::new("Accuracy (per epoch)").strong());
    let per_epoch = |f: fn(&EpochRecord) -> f64| -> Vec<[f64; 2]> {
        t.history.iter().map(|e| [e.epoch as f64, f(e)]).collect()
    };
    Plot::new("train-accuracy")
        .id(accuracy_plot_id())
        .height(125.0)
        .legend(Legend::default())
        .allow_scroll(false)
        .link_axis(link, [true, false])
        .x_axis_label("epoch")
        .y_axis_label("accuracy")
        // Wide enough for "0.25": a narrower axis drops every label but 0 and 1.
        .y_axis_min_width(36.0)
        .y_grid_spacer(egui_plot::uniform_grid_spacer(about_four_labels))
        .y_axis_formatter(|mark, _| tick_label(mark.value))
        .include_y(0.0)
        .include_y(1.0)
        .show(ui, |p| {
            p.line(
                Line::new(
                    "val accuracy",
                    PlotPoints::from(per_epoch(|e| e.val_accuracy)),
                )
                .color(Color32::from_rgb(60, 170, 80)),
            );
            p.line(
                Line::new(
                    "train accuracy",
                    PlotPoints::from(per_epoch(|e| e.train_accuracy)),
                )
                .color(Color32::from_rgb(80, 140, 230)),
            );
        });
}

/// The false-reject rate above which a model is not fit for a line at its miss target.
pub const USEFUL_FALSE_REJECT: f64 = 0.40;

fn results(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    let t = &mut app.train;
    let Some(res) = &t.result else { return };
    let r = &res.detailed.report;
    ui.separator();
    ui.heading("Validation (through the inspection engine)");
    ui.label(format!(
        "{} images · accuracy {:.3} · macro F1 {:.3} · PASS/FAIL AUROC {}",
        r.images,
        r.accuracy,
        r.macro_f1,
        r.auroc
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "n/a".into())
    ));
    ui.horizontal_top(|ui| {
        ui.vertical(|ui| {
            ui.label(RichText::new("Confusion (rows = true, columns = predicted)").strong());
            egui::Grid::new("confusion").striped(true).show(ui, |ui| {
                ui.label("");
                for c in &r.confusion.labels {
                    ui.label(c);
                }
                ui.end_row();
                for (name, row) in r.confusion.labels.iter().zip(&r.confusion.matrix) {
                    ui.label(name);
                    for n in row {
                        ui.label(n.to_string());
                    }
                    ui.end_row();
                }
            });
        });
        ui.vertical(|ui| {
            ui.label(RichText::new("Per class").strong());
            egui::Grid::new("per-class").striped(true).show(ui, |ui| {
                for h in [
                    "class",
                    "precision",
                    "recall",
                    "F1",
                    "support",
                    "AUROC vs PASS",
                ] {
                    ui.label(h);
                }
                ui.end_row();
                // The weakest defect class is what an engineer fixes first: mark it.
                let weakest = r
                    .per_class
                    .iter()
                    .filter_map(|(n, m)| m.auroc.map(|a| (n, a)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(n, _)| n.clone());
                for (name, m) in &r.per_class {
                    ui.label(name);
                    ui.label(format!("{:.3}", m.precision));
                    ui.label(format!("{:.3}", m.recall));
                    ui.label(format!("{:.3}", m.f1));
                    ui.label(m.support.to_string());
                    match m.auroc {
                        Some(a) if weakest.as_ref() == Some(name) => {
                            ui.label(RichText::new(format!("{a:.3} (weakest)")).strong())
                        }
                        Some(a) => ui.label(format!("{a:.3}")),
                        None => ui.label("—"),
                    };
                    ui.end_row();
                }
            });
            let p = &r.parts;
            ui.label(format!(
                "Per physical part ({} parts, {} defective): AUROC {} · miss {:.1} % · \
                 false reject {:.1} %",
                p.parts,
                p.defective,
                p.auroc.map_or("n/a".into(), |a| format!("{a:.3}")),
                p.miss_rate * 100.0,
                p.false_reject_rate * 100.0
            ));
        });
    });
    ui.label(
        RichText::new(format!(
            "Mispredicted val images ({} shown)",
            t.gallery.len()
        ))
        .strong(),
    );
    ui.horizontal_wrapped(|ui| {
        for (tex, label) in &t.gallery {
            ui.vertical(|ui| {
                ui.add(egui::Image::new(tex).max_size(vec2(96.0, 96.0)));
                ui.label(RichText::new(label).size(10.0));
            });
        }
    });
    // Threshold tuning.
    ui.separator();
    ui.heading("Threshold");
    let scores: Vec<f32> = res.detailed.images.iter().map(|i| i.score).collect();
    let pass_classes = res.summary.pass_classes.clone();
    let defective: Vec<bool> = res
        .detailed
        .images
        .iter()
        .map(|i| !pass_classes.contains(&res.classes[i.label]))
        .collect();
    let bins = 20;
    let mut hist = [vec![0u32; bins], vec![0u32; bins]];
    for (s, d) in scores.iter().zip(&defective) {
        let b = ((s * bins as f32) as usize).min(bins - 1);
        hist[*d as usize][b] += 1;
    }
    let bar = |h: &Vec<u32>, offset: f64| -> Vec<egui_plot::Bar> {
        h.iter()
            .enumerate()
            .map(|(i, n)| {
                egui_plot::Bar::new((i as f64 + 0.5) / bins as f64 + offset, *n as f64).width(0.02)
            })
            .collect()
    };
    let mut threshold = t.threshold;
    let resp = egui_plot::Plot::new("threshold")
        .height(180.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            p.bar_chart(
                egui_plot::BarChart::new("PASS images", bar(&hist[0], -0.011))
                    .color(Color32::from_rgb(60, 170, 80)),
            );
            p.bar_chart(
                egui_plot::BarChart::new("FAIL images", bar(&hist[1], 0.011))
                    .color(Color32::from_rgb(220, 60, 60)),
            );
            p.vline(
                egui_plot::VLine::new("threshold", threshold as f64)
                    .color(Color32::WHITE)
                    .width(2.0),
            );
            if (p.response().dragged() || p.response().clicked())
                && let Some(c) = p.pointer_coordinate()
            {
                threshold = (c.x as f32).clamp(0.0, 1.0);
            }
        });
    let _ = resp;
    ui.add(
        egui::Slider::new(&mut threshold, 0.0..=1.0)
            .text("threshold (drag the line or this slider)"),
    );
    t.threshold = threshold;
    let rates = crate::metrics::rates_at(&scores, &defective, threshold);
    ui.label(
        RichText::new(format!(
            "at {threshold:.3}: miss rate {:.2} % (defective parts passed), false-reject rate {:.2} % (good parts failed)",
            100.0 * rates.miss_rate,
            100.0 * rates.false_reject_rate
        ))
        .strong(),
    );
    ui.label(format!(
        "chosen by training ({}): {:.3}",
        res.summary.threshold_rule, res.summary.threshold
    ));
    if let Some(m) = res.summary.bank_entries {
        ui.label(format!(
            "anomaly model: a memory bank of {m} good-part features from {} good images; {} \
             defect images of the training split were ignored",
            res.summary.train_images, res.summary.ignored_defects
        ));
    }
    if res.summary.val_false_reject_rate > USEFUL_FALSE_REJECT {
        // Which defective images hold the threshold down: the lowest-scored ones.
        let mut forcing: Vec<&crate::eval::ImageResult> = res
            .detailed
            .images
            .iter()
            .zip(&defective)
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
            .collect();
        forcing.sort_by(|a, b| a.score.total_cmp(&b.score));
        let names: Vec<String> = forcing
            .iter()
            .take(3)
            .map(|i| format!("{} ({:.3})", i.rel_path, i.score))
            .collect();
        // Wrap within what the panel shows (the gallery may widen the layout beyond it).
        let width = (ui.clip_rect().right() - ui.cursor().left() - 8.0).max(200.0);
        ui.allocate_ui(vec2(width, 0.0), |ui| {
        ui.set_max_width(width);
        ui.add(egui::Label::new(
            RichText::new(format!(
                "Warning: this model cannot reach a useful false-reject rate at the miss target: {:.0} % of \
                 good val parts would be rejected (useful: ≤ {:.0} %). The threshold is held down \
                 by the least defect-like defective images: {}. Check their labels and masks, add \
                 similar examples, or accept more misses.",
                100.0 * res.summary.val_false_reject_rate,
                100.0 * USEFUL_FALSE_REJECT,
                names.join(", ")
            ))
            .color(Color32::from_rgb(230, 160, 40)),
        ).wrap());
        });
    }
    // Save as a version.
    let (model, fp, report) = (
        res.summary.model.clone(),
        res.fingerprint.clone(),
        r.clone(),
    );
    let mut save = false;
    ui.horizontal(|ui| {
        let l = ui.label("Version name");
        ui.add(
            egui::TextEdit::singleline(&mut t.version_name)
                .desired_width(180.0)
                .id_salt("version-name"),
        )
        .labelled_by(l.id);
        let l = ui.label("Notes");
        ui.add(
            egui::TextEdit::singleline(&mut t.notes)
                .desired_width(260.0)
                .id_salt("version-notes"),
        )
        .labelled_by(l.id);
        save = ui.button("Save version").clicked();
    });
    if save {
        let dir = t.versions_dir.clone();
        let (name, notes) = (t.version_name.clone(), t.notes.clone());
        let data = PathBuf::from(t.data.trim());
        let rates = (rates.miss_rate, rates.false_reject_rate);
        t.side_job(ctx, move || {
            Msg::Saved(versions::save(
                &dir, &model, &name, &notes, threshold, &data, &fp, &report, rates,
            ))
        });
    }
}

fn versions_ui(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    ui.heading("Model versions");
    let list = app.train.versions.clone().unwrap_or_default();
    ui.label(format!(
        "{} in {}",
        list.len(),
        app.train.versions_dir.display()
    ));
    let mut activate = None;
    egui::Grid::new("versions").striped(true).show(ui, |ui| {
        for h in [
            "name",
            "saved",
            "threshold",
            "val acc",
            "AUROC",
            "miss",
            "false reject",
            "notes",
            "",
        ] {
            ui.label(RichText::new(h).strong());
        }
        ui.end_row();
        for v in &list {
            let active = app.model.as_ref().is_some_and(|m| m.path == v.path);
            ui.label(if active {
                format!("{} (active)", v.name)
            } else {
                v.name.clone()
            });
            ui.label(v.created.get(..16).unwrap_or(&v.created));
            ui.label(format!("{:.3}", v.threshold));
            ui.label(format!("{:.3}", v.accuracy));
            ui.label(
                v.auroc
                    .map(|a| format!("{a:.3}"))
                    .unwrap_or_else(|| "n/a".into()),
            );
            ui.label(format!("{:.1} %", 100.0 * v.miss_rate));
            ui.label(format!("{:.1} %", 100.0 * v.false_reject_rate));
            ui.label(&v.notes);
            if ui
                .add_enabled(!active, egui::Button::new("Activate"))
                .clicked()
            {
                activate = Some(v.clone());
            }
            ui.end_row();
        }
    });
    if let Some(v) = activate {
        // The confirmation dialog records what the person decides (confirmed or cancelled).
        app.load_model(v.path.clone());
        app.notify(
            Level::Info,
            format!("version {}: confirm the activation", v.name),
        );
    }
    if list.len() >= 2 {
        let t = &mut app.train;
        ui.horizontal(|ui| {
            ui.label("Compare");
            for (k, id) in [(0, "cmp-a"), (1, "cmp-b")] {
                egui::ComboBox::from_id_salt(id)
                    .selected_text(
                        list.get(t.compare[k])
                            .map(|v| v.name.clone())
                            .unwrap_or_default(),
                    )
                    .show_ui(ui, |ui| {
                        for (i, v) in list.iter().enumerate() {
                            ui.selectable_value(&mut t.compare[k], i, &v.name);
                        }
                    });
            }
            ui.label(format!("on the val rows of {}", t.data));
            if ui.button("Compare").clicked() {
                let pair: Vec<VersionInfo> = t
                    .compare
                    .iter()
                    .filter_map(|&i| list.get(i).cloned())
                    .collect();
                let (data, st, sv) = (
                    PathBuf::from(t.data.trim()),
                    t.split_train.clone(),
                    t.split_val.clone(),
                );
                let gpu = app.gpu.clone();
                t.comparison = None;
                t.side_job(ctx, move || {
                    let rows = crate::dataset::Dataset::open(&data)
                        .map_err(|e| e.to_string())
                        .and_then(|d| d.train_val(&st, &sv, 0.15, 42).map_err(|e| e.to_string()))
                        .map(|(_, val)| val);
                    Msg::Compared(
                        pair.into_iter()
                            .map(|v| {
                                let r = rows.clone().and_then(|rows| {
                                    let m =
                                        kernels::Model::load(&v.path).map_err(|e| e.to_string())?;
                                    crate::eval::evaluate_samples(
                                        &m,
                                        &rows,
                                        &gpu.device,
                                        &gpu.queue,
                                        &gpu.label,
                                    )
                                    .map(|d| d.report)
                                    .map_err(|e| format!("{e:#}"))
                                });
                                (v.name, r)
                            })
                            .collect(),
                    )
                });
            }
        });
        if let Some(c) = &app.train.comparison {
            egui::Grid::new("comparison").striped(true).show(ui, |ui| {
                for h in [
                    "version",
                    "images",
                    "accuracy",
                    "macro F1",
                    "AUROC",
                    "threshold",
                    "miss",
                    "false reject",
                ] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for (name, r) in c {
                    ui.label(name);
                    match r {
                        Ok(r) => {
                            ui.label(r.images.to_string());
                            ui.label(format!("{:.3}", r.accuracy));
                            ui.label(format!("{:.3}", r.macro_f1));
                            ui.label(
                                r.auroc
                                    .map(|a| format!("{a:.3}"))
                                    .unwrap_or_else(|| "n/a".into()),
                            );
                            ui.label(format!("{:.3}", r.threshold));
                            ui.label(format!("{:.1} %", 100.0 * r.miss_rate));
                            ui.label(format!("{:.1} %", 100.0 * r.false_reject_rate));
                        }
                        Err(e) => {
                            ui.colored_label(ui.visuals().error_fg_color, e);
                        }
                    }
                    ui.end_row();
                }
            });
        }
    }
}

/// After training: evaluate the best model on the same val rows through the engine.
fn finish(
    cfg: &TrainConfig,
    summary: TrainSummary,
    gpu: &super::Gpu,
) -> Result<TrainResult, String> {
    let ds = crate::dataset::Dataset::open(&cfg.data).map_err(|e| e.to_string())?;
    let (_, val) = ds
        .train_val(&cfg.split_train, &cfg.split_val, cfg.val_fraction, cfg.seed)
        .map_err(|e| e.to_string())?;
    let model = kernels::Model::load(&summary.model).map_err(|e| e.to_string())?;
    let detailed = crate::eval::evaluate_samples(&model, &val, &gpu.device, &gpu.queue, &gpu.label)
        .map_err(|e| format!("{e:#}"))?;
    let classes = model.spec.classes.clone();
    let gallery = detailed
        .images
        .iter()
        .filter(|i| i.predicted != i.label)
        .take(24)
        .filter_map(|i| {
            let img = crate::dataset::decode_image(&i.path).ok()?;
            Some((
                crate::display::frame_image(&img, 96),
                format!(
                    "{}\n{} as {}",
                    i.rel_path, classes[i.label], classes[i.predicted]
                ),
            ))
        })
        .collect();
    let fingerprint = crate::labeling::LabelSet::open(&cfg.data)
        .map(|s| s.fingerprint())
        .unwrap_or_default();
    Ok(TrainResult {
        summary,
        detailed,
        classes,
        fingerprint,
        gallery,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn step(epoch: usize, step: usize, steps: usize) -> train::Progress {
        train::Progress::Step {
            epoch,
            step,
            steps,
            loss: 0.5,
        }
    }

    fn started(first_epoch: usize) -> train::Progress {
        train::Progress::Started {
            train: 10,
            val: 4,
            skipped: Vec::new(),
            backend: "cpu".into(),
            first_epoch,
        }
    }

    /// The ETA moves with the steps of an epoch, not only when an epoch ends.
    #[test]
    fn the_eta_updates_within_an_epoch() {
        let mut t = TrainView::default();
        t.run = Some(TrainConfig::new("d".into(), "m".into()));
        t.run.as_mut().unwrap().epochs = 2;
        let t0 = Instant::now();
        t.on_progress(started(1), t0);
        t.on_progress(step(1, 1, 10), t0);
        assert_eq!(t.eta_s, None, "no rate from one step");
        // 0.05 of the run in 1 s: 0.9 left takes 18 s.
        t.on_progress(step(1, 2, 10), t0 + Duration::from_secs(1));
        let first = t.eta_s.unwrap();
        assert!((first - 18.0).abs() < 1e-6, "{first}");
        assert!(t.status.contains("ETA 18 s"), "{}", t.status);
        // Later in the same epoch, slower: 0.25 in 5 s, 0.7 left = 14 s.
        t.on_progress(step(1, 6, 10), t0 + Duration::from_secs(5));
        let later = t.eta_s.unwrap();
        assert!((later - 14.0).abs() < 1e-6, "{later}");
        assert!(t.status.contains("ETA 14 s"), "{}", t.status);
        // Feature extraction (epoch 0 of a backbone preset) has its own ETA.
        let mut t = TrainView::default();
        t.on_progress(step(0, 10, 100), t0);
        t.on_progress(step(0, 30, 100), t0 + Duration::from_secs(2));
        assert!((t.eta_s.unwrap() - 7.0).abs() < 1e-6);
        assert!(
            t.status
                .starts_with("extracting backbone features: 30/100 images, ETA 7 s"),
            "{}",
            t.status
        );
        // The first epoch step starts a new measurement.
        t.on_progress(step(1, 1, 5), t0 + Duration::from_secs(3));
        assert_eq!(t.eta_s, None);
    }

    #[test]
    fn a_cancelled_run_with_a_finished_epoch_offers_resume_and_a_resumed_run_keeps_its_curves() {
        let mut t = TrainView::default();
        let mut cfg = TrainConfig::new("data".into(), "runs/r.safetensors".into());
        cfg.epochs = 6;
        t.run = Some(cfg);
        t.on_failure(Failure::Cancelled {
            kept_epoch: Some(2),
        });
        let p = t.resume_from.as_ref().unwrap();
        assert_eq!(
            (p.epoch, p.cfg.out.as_path()),
            (2, Path::new("runs/r.safetensors"))
        );
        assert!(
            t.status.contains("epoch 2 is kept") && t.status.contains("Resume"),
            "{}",
            t.status
        );
        assert!(!t.status.contains("--resume"), "{}", t.status);
        // Nothing finished: nothing to resume.
        let mut u = TrainView::default();
        u.on_failure(Failure::Cancelled { kept_epoch: None });
        assert!(u.resume_from.is_none());
        assert!(u.status.contains("nothing to resume"), "{}", u.status);
        // Resumed at epoch 3: epochs 1–2 and their steps stay, later ones go.
        let rec = |epoch| EpochRecord {
            epoch,
            train_loss: 0.1,
            train_accuracy: 0.9,
            val_accuracy: 0.8,
            val_macro_f1: 0.8,
            val_auroc: None,
            lr: 0.01,
            elapsed_s: 1.0,
            eta_s: 1.0,
        };
        t.history = vec![rec(1), rec(2), rec(3)];
        t.steps = vec![[0.5, 1.0], [1.5, 0.8], [2.0, 0.7], [2.5, 0.6]];
        t.on_progress(started(3), Instant::now());
        assert_eq!(
            t.history.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(t.steps.len(), 3);
        assert!(t.status.contains("resuming at epoch 3"), "{}", t.status);
    }

    #[test]
    fn short_axes_get_about_four_readable_labels() {
        let input = |lo: f64, hi: f64| egui_plot::GridInput {
            bounds: (lo, hi),
            base_step_size: 0.001,
        };
        let close = |got: [f64; 3], want: [f64; 3]| {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12),
                "{got:?} != {want:?}"
            )
        };
        close(about_four_labels(input(-0.05, 1.05)), [0.025, 0.125, 0.25]);
        close(about_four_labels(input(0.0, 2.6)), [0.1, 0.5, 1.0]);
        close(about_four_labels(input(0.0, 0.7)), [0.02, 0.1, 0.2]);
        assert_eq!(
            [0.25, 0.5, 1.0, 0.0, -0.0, 2.5].map(tick_label),
            ["0.25", "0.5", "1", "0", "0", "2.5"]
        );
    }

    #[test]
    fn the_form_feeds_the_same_options_as_the_command_line() {
        let mut t = TrainView {
            data: " /data/tiles ".into(),
            pass: "good, ok ,,".into(),
            batch_size: 32,
            backend: BackendKind::Cpu,
            preset: "tiny".into(),
            epochs: 7,
            ..TrainView::default()
        };
        t.augment = false;
        let cfg = t.config("out.safetensors".into());
        assert_eq!(cfg.data, Path::new("/data/tiles"));
        assert_eq!(cfg.pass, ["good", "ok"]);
        assert_eq!(cfg.batch_size, 32);
        assert_eq!(cfg.backend, BackendKind::Cpu);
        assert_eq!((cfg.preset.as_str(), cfg.epochs), ("tiny", 7));
        assert!(!cfg.resume);
        assert_eq!(
            for_the_form("--pass \"okay\" is not a class; classes are [\"bad\", \"good\"]"),
            "PASS class \"okay\" is not a class; classes are [\"bad\", \"good\"]"
        );
        assert!(
            !for_the_form("no class looks defect-free (tried [..]); name the PASS classes with --pass CLASS; classes are [..]")
                .contains("--")
        );
    }
}
