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

use super::{InspectorApp, Level};
use crate::eval::{Detailed, EvalReport};
use crate::train::{self, EpochRecord, OptimizerKind, TrainConfig, TrainSummary};
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

enum Msg {
    /// What the training loop reports.
    Progress(train::Progress),
    Done(Result<Box<TrainResult>, String>),
    Saved(Result<VersionInfo, String>),
    Versions(Vec<VersionInfo>),
    Compared(Vec<(String, Result<EvalReport, String>)>),
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
    cancel: Option<Arc<AtomicBool>>,
    rx: Option<Receiver<Msg>>,
    started: Option<Instant>,
    /// Epochs finished in this run.
    pub history: Vec<EpochRecord>,
    steps: Vec<[f64; 2]>,
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

    /// Starts training in a worker.
    pub fn start(&mut self, gpu: &super::Gpu, ctx: &egui::Context) {
        let data = PathBuf::from(self.data.trim());
        let out = self.versions_dir.join("runs").join(format!(
            "run-{}.safetensors",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        let mut cfg = TrainConfig::new(data, out);
        cfg.split_train = self.split_train.clone();
        cfg.split_val = self.split_val.clone();
        cfg.preset = self.preset.clone();
        cfg.optimizer = self.optimizer;
        cfg.epochs = self.epochs.max(1);
        cfg.lr = self.lr;
        if !self.augment {
            cfg.augment = crate::augment::AugmentConfig::off();
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<Msg>(256);
        let flag = cancel.clone();
        let gpu = gpu.clone();
        let ctx = ctx.clone();
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
                let result = train::train(&cfg, &mut progress, &flag)
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|summary| finish(&cfg, summary, &gpu));
                let _ = tx.send(Msg::Done(result.map(Box::new)));
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.cancel = Some(cancel);
                self.rx = Some(rx);
                self.started = Some(Instant::now());
                self.history.clear();
                self.steps.clear();
                self.result = None;
                self.gallery.clear();
                self.comparison = None;
                self.status = "loading the dataset…".into();
            }
            Err(e) => self.status = format!("ERROR: cannot start training: {e}"),
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
            Msg::Progress(train::Progress::Started {
                train,
                val,
                backend,
                skipped,
                ..
            }) => {
                t.status = format!(
                    "training on {train} images, validating on {val} ({} unreadable skipped), backend {backend}",
                    skipped.len()
                )
            }
            Msg::Progress(train::Progress::Step {
                epoch,
                step,
                steps,
                loss,
            }) => {
                t.steps
                    .push([(epoch - 1) as f64 + step as f64 / steps.max(1) as f64, loss]);
                let eta = t
                    .history
                    .last()
                    .map(|e| format!(", ETA {:.0} s", e.eta_s))
                    .unwrap_or_default();
                t.status = format!(
                    "epoch {epoch}/{}: step {step}/{steps}, loss {loss:.4}{eta}",
                    t.epochs
                );
            }
            Msg::Progress(train::Progress::Epoch(e)) => {
                t.status = format!(
                    "epoch {} done: val accuracy {:.3}, AUROC {}, ETA {:.0} s",
                    e.epoch,
                    e.val_accuracy,
                    e.val_auroc
                        .map(|a| format!("{a:.3}"))
                        .unwrap_or_else(|| "n/a".into()),
                    e.eta_s
                );
                t.history.push(e);
            }
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
                    Err(e) => {
                        t.status = if e.contains("cancelled") {
                            format!("cancelled: {e}")
                        } else {
                            format!("ERROR: {e}")
                        }
                    }
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
        .exact_size(340.0)
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

fn settings(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    let t = &mut app.train;
    let running = t.running();
    ui.add_enabled_ui(!running, |ui| {
        let l = ui.label("Dataset folder");
        ui.add(egui::TextEdit::singleline(&mut t.data).id_salt("train-data")).labelled_by(l.id);
        if let Some(set) = &app.label.set
            && ui.button("Use the Label tab's dataset").clicked()
        {
            t.data = set.root.display().to_string();
        }
        egui::Grid::new("train-grid").num_columns(2).show(ui, |ui| {
            ui.label("Training split");
            ui.add(egui::TextEdit::singleline(&mut t.split_train).desired_width(100.0).id_salt("split-train"));
            ui.end_row();
            ui.label("Val split");
            ui.add(egui::TextEdit::singleline(&mut t.split_val).desired_width(100.0).id_salt("split-val"));
            ui.end_row();
            ui.label("Preset");
            egui::ComboBox::from_id_salt("preset")
                .selected_text(t.preset.clone())
                .show_ui(ui, |ui| {
                    for p in train::PRESETS {
                        ui.selectable_value(&mut t.preset, p.name.to_string(), p.name);
                    }
                });
            ui.end_row();
            ui.label("Optimizer");
            egui::ComboBox::from_id_salt("optimizer")
                .selected_text(format!("{:?}", t.optimizer))
                .show_ui(ui, |ui| {
                    for (o, n) in [
                        (OptimizerKind::Sgd, "SGD"),
                        (OptimizerKind::Momentum, "SGD + momentum"),
                        (OptimizerKind::Adam, "Adam"),
                        (OptimizerKind::Adamw, "AdamW"),
                    ] {
                        ui.selectable_value(&mut t.optimizer, o, n);
                    }
                });
            ui.end_row();
            ui.label("Epochs");
            ui.add(egui::DragValue::new(&mut t.epochs).range(1..=500));
            ui.end_row();
            ui.label("Learning rate");
            ui.add(egui::DragValue::new(&mut t.lr).range(1e-5..=1.0).speed(0.001));
            ui.end_row();
            ui.label("Augmentation");
            ui.checkbox(&mut t.augment, "flips, rotation, brightness/contrast, crops");
            ui.end_row();
        });
        ui.label("Unlabelled images are skipped; without a val split, 15 % of each class is held out (whole groups).");
    });
    ui.horizontal(|ui| {
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
        if running {
            ui.spinner();
        }
    });
    let t = &app.train;
    if let Some(s) = t.started.filter(|_| t.running()) {
        ui.label(format!("running for {:.0} s", s.elapsed().as_secs_f64()));
    }
    let color = if t.status.starts_with("ERROR") {
        ui.visuals().error_fg_color
    } else {
        ui.visuals().text_color()
    };
    ui.colored_label(color, &t.status);
}

fn curves(t: &TrainView, ui: &mut egui::Ui) {
    use egui_plot::{Legend, Line, Plot, PlotPoints};
    ui.label(RichText::new("Training loss (per step) and accuracy (per epoch)").strong());
    let loss = t.steps.clone();
    let val: Vec<[f64; 2]> = t
        .history
        .iter()
        .map(|e| [e.epoch as f64, e.val_accuracy])
        .collect();
    let tr: Vec<[f64; 2]> = t
        .history
        .iter()
        .map(|e| [e.epoch as f64, e.train_accuracy])
        .collect();
    Plot::new("train-curves")
        .height(200.0)
        .legend(Legend::default())
        .allow_scroll(false)
        .show(ui, |p| {
            p.line(
                Line::new("loss", PlotPoints::from(loss)).color(Color32::from_rgb(230, 160, 40)),
            );
            p.line(
                Line::new("val accuracy", PlotPoints::from(val))
                    .color(Color32::from_rgb(60, 170, 80)),
            );
            p.line(
                Line::new("train accuracy", PlotPoints::from(tr))
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
        "chosen by training (miss <= 1 %): {:.3}",
        res.summary.threshold
    ));
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
        ui.label(
            RichText::new(format!(
                "⚠ This model cannot reach a useful false-reject rate at the miss target: {:.0} % of \
                 good val parts would be rejected (useful: ≤ {:.0} %). The threshold is held down \
                 by the least defect-like defective images: {}. Check their labels and masks, add \
                 similar examples, or accept more misses.",
                100.0 * res.summary.val_false_reject_rate,
                100.0 * USEFUL_FALSE_REJECT,
                names.join(", ")
            ))
            .color(Color32::from_rgb(230, 160, 40)),
        );
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
