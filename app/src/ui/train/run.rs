//! A training run in the Train tab: starting, resuming and cancelling the worker, its
//! progress with ETA, and the live loss and accuracy curves.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;
use egui::{Color32, RichText};

use crate::records::versions;
use crate::training::{self, EpochRecord, TrainConfig, TrainSummary};

use super::form::{about_four_labels, for_the_form, pass_list, seconds};
use super::view::*;

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
            cfg.augment = crate::training::augment::AugmentConfig::off();
        }
        if self.anomaly {
            cfg.mode = training::TrainMode::Anomaly;
            cfg.epochs = 1; // one pass: features, memory bank, threshold
            cfg.bank = (self.bank > 0).then_some(self.bank);
            cfg.max_false_reject = (self.false_reject_pct / 100.0).clamp(0.0, 1.0);
        }
        cfg
    }

    /// Starts a new run of the form's settings in a worker.
    pub fn start(&mut self, gpu: &crate::ui::Gpu, ctx: &egui::Context) {
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
    pub fn resume(&mut self, gpu: &crate::ui::Gpu, ctx: &egui::Context) {
        let Some(point) = self.resume_from.take() else {
            self.status = "nothing to resume: no cancelled run kept a finished epoch".into();
            return;
        };
        let mut cfg = point.cfg;
        cfg.resume = true;
        self.launch(cfg, gpu, ctx);
    }

    pub(in crate::ui) fn launch(
        &mut self,
        cfg: TrainConfig,
        gpu: &crate::ui::Gpu,
        ctx: &egui::Context,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<Msg>(256);
        let flag = cancel.clone();
        let gpu = gpu.clone();
        let ctx = ctx.clone();
        let run = cfg.clone();
        let spawned = std::thread::Builder::new()
            .name("training".into())
            .spawn(move || {
                let t0 = Instant::now();
                let tx2 = tx.clone();
                let ctx2 = ctx.clone();
                let mut progress = move |p: training::Progress| {
                    if matches!(p, training::Progress::Step { .. }) {
                        // Steps are many: drop one rather than wait for the UI.
                        let _ = tx2.try_send(Msg::Progress(p));
                    } else {
                        let _ = tx2.send(Msg::Progress(p));
                    }
                    ctx2.request_repaint();
                };
                let tx3 = tx.clone();
                let ctx3 = ctx.clone();
                let mut evaluating = move |done: usize, total: usize| {
                    let _ = tx3.try_send(Msg::Evaluating { done, total });
                    ctx3.request_repaint();
                };
                let result = match training::train(&cfg, &mut progress, &flag) {
                    Ok(summary) => finish(&cfg, summary, &gpu.background(), &mut evaluating)
                        .map(|mut r| {
                            r.wall_s = t0.elapsed().as_secs_f64();
                            r
                        })
                        .map_err(Failure::Error),
                    Err(_) if flag.load(Ordering::SeqCst) => Err(Failure::Cancelled {
                        kept_epoch: training::checkpoint_epoch(&cfg.out),
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
                self.per_image_s = None;
                self.val_images = 0;
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
    pub(in crate::ui) fn run_epochs(&self) -> usize {
        self.run.as_ref().map_or(self.epochs, |c| c.epochs).max(1)
    }

    /// Takes one report of the training loop, received at `now`.
    pub(in crate::ui) fn on_progress(&mut self, p: training::Progress, now: Instant) {
        let epochs = self.run_epochs();
        match p {
            training::Progress::Started {
                train,
                val,
                backend,
                skipped,
                first_epoch,
            } => {
                self.first_epoch = first_epoch;
                self.val_images = val;
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
            training::Progress::Step {
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
                    .is_some_and(|c| c.mode == training::TrainMode::Anomaly);
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
                        if phase == 0 {
                            // Seconds per image: the final evaluation's estimate.
                            let images = (done - from) * steps as f64;
                            let secs = now.saturating_duration_since(at).as_secs_f64();
                            if images >= 1.0 && secs > 0.0 {
                                self.per_image_s = Some(secs / images);
                            }
                        }
                    }
                    _ => {
                        self.eta_anchor = Some((now, done, phase));
                        self.eta_s = None;
                    }
                }
                // The final evaluation follows the epochs: the time left includes it.
                if phase > 0 {
                    self.eta_s = self
                        .eta_s
                        .map(|s| s + self.evaluation_estimate().unwrap_or(0.0));
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
            training::Progress::Epoch(e) => {
                let eta = if e.epoch >= epochs {
                    // What is left is the evaluation through the engine: estimated from the
                    // feature extraction's rate until it reports its own progress.
                    self.eta_s = self.evaluation_estimate();
                    self.eta_anchor = None;
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

    /// Seconds the final evaluation should take, from the rate measured while extracting
    /// features (None without a measurement).
    fn evaluation_estimate(&self) -> Option<f64> {
        self.per_image_s.map(|s| s * self.val_images as f64)
    }

    /// Takes the final evaluation's progress (`done` of `total` val images through the engine)
    /// at `now`: its own ETA, from its own rate.
    pub(in crate::ui) fn on_evaluating(&mut self, done: usize, total: usize, now: Instant) {
        const PHASE: usize = usize::MAX;
        let total = total.max(1);
        let share = done as f64 / total as f64;
        match self.eta_anchor {
            Some((at, from, PHASE)) => self.eta_s = eta_from(at, from, now, share),
            _ => {
                self.eta_anchor = Some((now, share, PHASE));
                self.eta_s = self
                    .per_image_s
                    .map(|s| s * total.saturating_sub(done) as f64);
            }
        }
        let eta = self
            .eta_s
            .map(|s| format!(", ETA {}", seconds(s)))
            .unwrap_or_default();
        self.status =
            format!("evaluating on val through the inspection engine: {done}/{total} images{eta}");
    }

    /// A run ended without a model.
    pub(in crate::ui) fn on_failure(&mut self, f: Failure) {
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
    pub(in crate::ui) fn side_job(
        &self,
        ctx: &egui::Context,
        job: impl FnOnce() -> Msg + Send + 'static,
    ) {
        let tx = self.side_tx.clone();
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("train-side".into())
            .spawn(move || {
                let _ = tx.send(job());
                ctx.request_repaint();
            });
    }

    pub(in crate::ui) fn refresh_versions(&mut self, ctx: &egui::Context) {
        let dir = self.versions_dir.clone();
        self.versions = Some(Vec::new());
        self.side_job(ctx, move || Msg::Versions(versions::list(&dir)));
    }
}

/// Seconds left when the share `from` of the work was done at `at` and `done` is done `now`:
/// the rate since `at` applied to the rest (None until there is progress to measure).
pub fn eta_from(at: Instant, from: f64, now: Instant, done: f64) -> Option<f64> {
    let secs = now.checked_duration_since(at)?.as_secs_f64();
    let progress = done - from;
    (progress > 1e-9 && secs > 0.0).then(|| secs / progress * (1.0 - done).max(0.0))
}

/// "0.25", "0.5", "1": as many decimals as the value needs (egui_plot's default writes 0.5 as
/// "0" on these steps).
pub(in crate::ui) fn tick_label(v: f64) -> String {
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

pub(in crate::ui) fn curves(t: &TrainView, ui: &mut egui::Ui) {
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

/// After training: evaluate the best model on the same val rows through the engine, reporting
/// each image to `evaluating` (done, total).
pub(in crate::ui) fn finish(
    cfg: &TrainConfig,
    summary: TrainSummary,
    gpu: &crate::ui::Gpu,
    evaluating: &mut dyn FnMut(usize, usize),
) -> Result<TrainResult, String> {
    let ds = crate::data::dataset::Dataset::open(&cfg.data).map_err(|e| e.to_string())?;
    let (_, val) = ds
        .train_val(&cfg.split_train, &cfg.split_val, cfg.val_fraction, cfg.seed)
        .map_err(|e| e.to_string())?;
    let model = kernels::Model::load(&summary.model).map_err(|e| e.to_string())?;
    let detailed = crate::evaluation::eval::evaluate_samples_with(
        &model,
        &val,
        &gpu.device,
        &gpu.queue,
        &gpu.label,
        evaluating,
    )
    .map_err(|e| format!("{e:#}"))?;
    let classes = model.spec.classes.clone();
    let gallery = detailed
        .images
        .iter()
        .filter(|i| i.predicted != i.label)
        .take(24)
        .filter_map(|i| {
            let img = crate::data::dataset::decode_image(&i.path).ok()?;
            Some((
                crate::station::display::frame_image(&img, 96),
                format!(
                    "{}\n{} as {}",
                    i.rel_path, classes[i.label], classes[i.predicted]
                ),
            ))
        })
        .collect();
    let fingerprint = crate::data::labeling::LabelSet::open(&cfg.data)
        .map(|s| s.fingerprint())
        .unwrap_or_default();
    Ok(TrainResult {
        summary,
        detailed,
        classes,
        fingerprint,
        wall_s: 0.0,
        gallery,
    })
}

/// The line a finished run leaves in the status: what was kept, in the words of its kind (an
/// anomaly model has no epochs), and the time the person waited.
pub fn finished_line(res: &TrainResult) -> String {
    let s = &res.summary;
    let waited = seconds(res.wall_s);
    match s.bank_entries {
        Some(bank) => format!(
            "finished in {waited}: anomaly model, memory bank of {bank} entries from {} good \
             images; threshold {:.3} ({}); val miss {:.1} %, false reject {:.1} %, AUROC {}",
            s.train_images,
            s.threshold,
            s.threshold_rule,
            s.val_miss_rate * 100.0,
            s.val_false_reject_rate * 100.0,
            s.val_auroc.map_or("n/a".into(), |a| format!("{a:.3}"))
        ),
        None => format!(
            "finished in {waited}: best epoch {} of {}, val accuracy {:.3}",
            s.best_epoch, s.epochs_run, s.val_accuracy
        ),
    }
}
