//! The eframe app: a tab bar (Inspect, History, Settings), a status bar, and the state shared
//! by the tabs. The UI thread only reads channels and shared counters and uploads textures: the
//! pipeline, the history writer and the history queries run in their own threads.

pub mod file_dialog;
pub mod history_tab;
mod inspect;
pub mod label_tab;
mod settings_tab;
pub mod train_tab;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use crate::headless::{DEFAULT_MODEL, DEMO_DATASET, bundled};
use crate::history::{self, EventRow, Op, Recorder, RecorderOptions, RecorderSink};
use crate::pipeline::{
    self, Counters, Event, ModelInfo, Pipeline, PipelineOptions, SourceStatus, Verdict,
};
use crate::settings::{STORAGE_KEY, Settings, SettingsSaver};
use crate::source::SourceSpec;

/// Options of `inspector app` (and of `inspector` with no arguments).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AppArgs {
    /// History database (default: the platform data directory, or the one chosen in Settings).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Start with this source instead of the saved one (folder:<DIR>, camera:<N>, synthetic).
    #[arg(long)]
    pub source: Option<String>,
    /// Start with this model instead of the saved one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Replay rate of folder and synthetic sources, frames per second.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Open this dataset in the Label tab and choose it in the Train tab.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Open on this tab: inspect, label, train, history or settings.
    #[arg(long)]
    pub tab: Option<String>,
    /// Ignore saved settings (a fresh start).
    #[arg(long)]
    pub reset_settings: bool,
    /// Quit after this many seconds (for measurements and screenshots).
    #[arg(long)]
    pub quit_after: Option<f64>,
}

/// The wgpu device the app renders with and inspects on.
#[derive(Clone)]
pub struct Gpu {
    /// Device.
    pub device: wgpu::Device,
    /// Queue.
    pub queue: wgpu::Queue,
    /// "llvmpipe (Vulkan)".
    pub label: String,
}

/// Opens the window. Burn creates the device (it needs device features the others don't ask
/// for); the inspection engine and egui's renderer share it.
pub fn run(args: AppArgs) -> anyhow::Result<()> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set). Run it \
             in a desktop session, or under `xvfb-run`; without a window, `inspector inspect \
             --source folder:datasets/magnetic-tile-demo` inspects from the command line"
        );
    }
    let (_burn_device, ctx) = crate::nn::shared_gpu()?;
    let gpu = Gpu {
        device: ctx.device.clone(),
        queue: ctx.queue.clone(),
        label: ctx.describe(),
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Defect Inspector")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([900.0, 600.0]),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: eframe::egui_wgpu::WgpuConfiguration {
            wgpu_setup: eframe::egui_wgpu::WgpuSetup::Existing(
                eframe::egui_wgpu::WgpuSetupExisting {
                    instance: ctx.instance.clone(),
                    adapter: ctx.adapter.clone(),
                    device: ctx.device.clone(),
                    queue: ctx.queue.clone(),
                },
            ),
            ..Default::default()
        },
        persist_window: true,
        ..Default::default()
    };
    eframe::run_native(
        "defect-inspector",
        options,
        Box::new(move |cc| {
            // `settings.json` is written at once on every change that alters what the station
            // does, and with eframe's storage: the newest copy, even after a SIGTERM.
            let settings_file = crate::settings::default_settings_file();
            let mut settings: Settings = if args.reset_settings {
                Settings::default()
            } else {
                settings_file
                    .as_deref()
                    .and_then(crate::settings::load_file)
                    .or_else(|| cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)))
                    .unwrap_or_default()
            };
            if let Some(s) = &args.source {
                settings.source = Some(SourceSpec::parse(s).map_err(anyhow::Error::msg)?);
            }
            if let Some(m) = &args.model {
                settings.model_path = Some(m.clone());
            }
            if let Some(db) = &args.db {
                settings.db_path = Some(db.clone());
            }
            if let Some(fps) = args.fps {
                settings.replay_fps = fps;
            }
            let mut app = InspectorApp::new(cc.egui_ctx.clone(), gpu, settings);
            if let Some(f) = settings_file {
                app.set_settings_file(f);
            }
            app.quit_after = args.quit_after.map(Duration::from_secs_f64);
            if let Some(d) = &args.dataset {
                app.label.folder = d.display().to_string();
                app.label.open(false);
                app.train.data = d.display().to_string();
            }
            match args.tab.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("inspect") => {}
                Some("history") => app.tab = Tab::History,
                Some("label") => app.tab = Tab::Label,
                Some("train") => app.tab = Tab::Train,
                Some("settings") => app.tab = Tab::Settings,
                Some(other) => {
                    return Err(format!(
                        "--tab {other}: use inspect, label, train, history or settings"
                    )
                    .into());
                }
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}

/// Tabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    /// Live inspection.
    Inspect,
    /// Labelling.
    Label,
    /// Training and model versions.
    Train,
    /// Rejection history.
    History,
    /// Settings.
    Settings,
}

/// How serious a notice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Information.
    Info,
    /// Something is wrong but work goes on.
    Warning,
    /// Something failed.
    Error,
}

/// A message for the operator.
#[derive(Clone, Debug)]
pub struct Notice {
    /// Level.
    pub level: Level,
    /// Text.
    pub text: String,
    /// When.
    pub at: chrono::DateTime<chrono::Local>,
}

/// A raised alarm, shown until acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    /// What happened.
    pub text: String,
    /// When.
    pub at: chrono::DateTime<chrono::Local>,
}

/// The frame an override form acts on: captured when the person opened the form and shown
/// (thumbnail and name) until the override is saved or cancelled, whatever the live view does.
struct OverrideTarget {
    verdict: Arc<Verdict>,
    thumb: Option<egui::TextureHandle>,
}

/// A reject opened from the "Last rejects" strip.
pub(crate) struct OpenedReject {
    pub(crate) verdict: Arc<Verdict>,
    pub(crate) frame: Option<egui::TextureHandle>,
    pub(crate) heat: Option<egui::TextureHandle>,
}

/// What a model file says about itself: its validation figures at its own threshold, from the
/// training record (`training.summary`) the trainer writes into the model spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelFigures {
    /// Validation AUROC (FAIL vs PASS).
    pub auroc: Option<f64>,
    /// Share of defective validation parts passed at the threshold.
    pub miss_rate: Option<f64>,
    /// Share of good validation parts failed at the threshold.
    pub false_reject_rate: Option<f64>,
    /// Validation images.
    pub val_images: Option<u64>,
}

impl ModelFigures {
    /// Reads the figures from a spec's training record (absent ones stay None).
    pub fn from_training(training: &serde_json::Value) -> Self {
        let s = &training["summary"];
        Self {
            auroc: s["val_auroc"].as_f64(),
            miss_rate: s["val_miss_rate"].as_f64(),
            false_reject_rate: s["val_false_reject_rate"].as_f64(),
            val_images: s["val_images"].as_u64(),
        }
    }

    /// The ways these figures fall short of the station's minimum (empty = they meet it).
    pub fn shortfalls(&self, s: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        match self.auroc {
            Some(a) if a < s.min_auroc => out.push(format!(
                "AUROC {a:.3} is below the station minimum {:.3}",
                s.min_auroc
            )),
            None => out.push("no validation AUROC recorded".into()),
            _ => {}
        }
        match self.miss_rate {
            Some(m) if m > s.max_miss_rate => out.push(format!(
                "miss rate {:.1} % is above the station maximum {:.1} %",
                100.0 * m,
                100.0 * s.max_miss_rate
            )),
            None => out.push("no validation miss rate recorded".into()),
            _ => {}
        }
        match self.false_reject_rate {
            Some(f) if f > s.max_false_reject_rate => out.push(format!(
                "false-reject rate {:.1} % is above the station maximum {:.1} %",
                100.0 * f,
                100.0 * s.max_false_reject_rate
            )),
            None => out.push("no validation false-reject rate recorded".into()),
            _ => {}
        }
        out
    }

    /// "AUROC 0.696 · miss 0.0 % · false reject 100.0 % (197 val images)".
    pub fn words(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{:.1} %", 100.0 * v));
        format!(
            "AUROC {} · miss rate {} · false-reject rate {}{}",
            self.auroc.map_or("n/a".into(), |a| format!("{a:.3}")),
            pct(self.miss_rate),
            pct(self.false_reject_rate),
            self.val_images
                .map(|n| format!(" ({n} validation images)"))
                .unwrap_or_default()
        )
    }
}

/// A model file read for activation, waiting for the person's confirmation.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// What was read (its hash names the exact file confirmed).
    pub info: ModelInfo,
    /// Its validation figures.
    pub figures: ModelFigures,
    /// Keep the threshold in use (true) or take the model's own (false).
    pub keep_threshold: bool,
}

/// A confirmed activation, until the worker reports the model in use.
struct Activation {
    path: PathBuf,
    hash: String,
    threshold: Option<f32>,
}

struct Started {
    pipeline: Result<Pipeline, String>,
    recorder: Option<Result<Recorder, String>>,
    fallback: Option<String>,
}

/// The app's state.
pub struct InspectorApp {
    /// Saved settings.
    pub settings: Settings,
    /// The open tab.
    pub tab: Tab,
    ctx: egui::Context,
    gpu: Gpu,
    pipeline: Option<Pipeline>,
    starting: Option<Receiver<Started>>,
    recorder: Option<Recorder>,
    run_id: String,
    pending_ops: VecDeque<Op>,
    /// The newest verdict.
    pub last: Option<Arc<Verdict>>,
    /// Counters as of this frame.
    pub counters: Counters,
    frame_tex: Option<egui::TextureHandle>,
    heat_tex: Option<egui::TextureHandle>,
    thumbs: HashMap<u64, egui::TextureHandle>,
    /// Source state.
    pub source_status: Option<SourceStatus>,
    /// The model in use.
    pub model: Option<ModelInfo>,
    /// Messages, newest last.
    pub notices: VecDeque<Notice>,
    /// Unacknowledged alarm.
    pub alarm: Option<Alarm>,
    /// Why the last model file was refused (shown in Settings until a model loads).
    pub model_error: Option<String>,
    consecutive_latched: bool,
    drift_latched: bool,
    /// Frames overridden in this run, with the new verdict.
    pub overridden: HashMap<u64, String>,
    override_reason: String,
    /// The frame the open override form acts on (None = the form is closed).
    override_target: Option<OverrideTarget>,
    /// The reject open in its own window.
    pub(crate) opened_reject: Option<OpenedReject>,
    roi_edit: bool,
    roi_drag: Option<egui::Pos2>,
    roi_drag_end: Option<egui::Pos2>,
    /// Where the live frame was drawn last frame (screen points).
    pub live_rect: Option<egui::Rect>,
    model_path_input: String,
    model_choices: Option<Vec<PathBuf>>,
    /// The Browse listing being read by a helper thread.
    model_choices_rx: Option<Receiver<Vec<PathBuf>>>,
    /// A model file being read for the activation dialog.
    candidate_rx: Option<Receiver<Result<Candidate, String>>>,
    /// The model waiting for confirmation (the dialog is open).
    pub candidate: Option<Candidate>,
    activation: Option<Activation>,
    settings_saver: Option<SettingsSaver>,
    source_draft: settings_tab::SourceDraft,
    cameras: Option<Receiver<Result<Vec<crate::source::CameraDesc>, String>>>,
    camera_list: Option<Result<Vec<crate::source::CameraDesc>, String>>,
    ui_times: VecDeque<f64>,
    last_log: Instant,
    started_at: Instant,
    quit_after: Option<Duration>,
    /// The History tab's state.
    pub history: history_tab::HistoryView,
    /// The Label tab's state.
    pub label: label_tab::LabelView,
    /// The Train tab's state.
    pub train: train_tab::TrainView,
    seen_unreadable: HashSet<String>,
    /// The platform file dialogs (one at a time, on a worker thread).
    pub dialogs: file_dialog::FileDialogs,
    /// The text in the Settings tab's database field.
    pub db_path_input: String,
    db_at_start: PathBuf,
}

impl InspectorApp {
    /// The app on `gpu` with `settings`; starts the pipeline and the history writer in the
    /// background.
    pub fn new(ctx: egui::Context, gpu: Gpu, settings: Settings) -> Self {
        ctx.set_theme(if settings.dark {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        let model_path_input = settings
            .model_path
            .clone()
            .unwrap_or_else(|| bundled(DEFAULT_MODEL))
            .display()
            .to_string();
        let source_draft = settings_tab::SourceDraft::from_settings(&settings);
        let db_at_start = settings
            .db_path
            .clone()
            .unwrap_or_else(history::default_db_path);
        let db_path_input = db_at_start.display().to_string();
        let mut app = Self {
            settings,
            tab: Tab::Inspect,
            ctx,
            gpu,
            pipeline: None,
            starting: None,
            recorder: None,
            run_id: history::new_run_id(),
            pending_ops: VecDeque::new(),
            last: None,
            counters: Counters::default(),
            frame_tex: None,
            heat_tex: None,
            thumbs: HashMap::new(),
            source_status: None,
            model: None,
            notices: VecDeque::new(),
            alarm: None,
            model_error: None,
            consecutive_latched: false,
            drift_latched: false,
            overridden: HashMap::new(),
            override_reason: String::new(),
            override_target: None,
            opened_reject: None,
            roi_edit: false,
            roi_drag: None,
            roi_drag_end: None,
            live_rect: None,
            model_path_input,
            model_choices: None,
            model_choices_rx: None,
            candidate_rx: None,
            candidate: None,
            activation: None,
            settings_saver: None,
            source_draft,
            cameras: None,
            camera_list: None,
            ui_times: VecDeque::new(),
            last_log: Instant::now(),
            started_at: Instant::now(),
            quit_after: None,
            history: history_tab::HistoryView::default(),
            label: label_tab::LabelView::default(),
            train: train_tab::TrainView::default(),
            seen_unreadable: HashSet::new(),
            dialogs: file_dialog::FileDialogs::default(),
            db_path_input,
            db_at_start,
        };
        app.start();
        app
    }

    /// The source in effect: the saved one, or the demo images.
    pub fn source(&self) -> SourceSpec {
        self.settings.source.clone().unwrap_or_else(demo_source)
    }

    /// Whether the app is replaying the bundled demo images.
    pub fn is_demo(&self) -> bool {
        self.settings.source.is_none()
    }

    /// The history database in use (the one chosen when the app started; a database chosen
    /// in Settings since then is used from the next start).
    pub fn db_path(&self) -> PathBuf {
        self.db_at_start.clone()
    }

    /// The history database the next start will use.
    pub fn db_path_next_start(&self) -> PathBuf {
        self.settings
            .db_path
            .clone()
            .unwrap_or_else(history::default_db_path)
    }

    /// The text in the Settings tab's model field.
    pub fn model_path_input(&self) -> &str {
        &self.model_path_input
    }

    /// Whether the pipeline is running (not starting).
    pub fn is_running(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Whether capture is paused.
    pub fn is_paused(&self) -> bool {
        self.pipeline.as_ref().is_some_and(|p| p.is_paused())
    }

    fn start(&mut self) {
        let (tx, rx) = bounded(1);
        let gpu = self.gpu.clone();
        let model_path = self
            .settings
            .model_path
            .clone()
            .unwrap_or_else(|| bundled(DEFAULT_MODEL));
        let source = self.source();
        let options = PipelineOptions {
            fps: self.settings.replay_fps,
            limit: None,
            lossless_events: false,
            roi: self.settings.roi(),
            threshold: self.settings.threshold,
            display: true,
            stop_on_roi_refused: false,
        };
        let db = self.db_path();
        let want_recorder = self.recorder.is_none();
        let budget = self.settings.archive_budget_mib << 20;
        let station = self.settings.station.clone();
        let pass_sample = self.settings.pass_sample;
        let run_id = self.run_id.clone();
        let existing = self.recorder.clone();
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("pipeline-start".into())
            .spawn(move || {
                let recorder = want_recorder.then(|| {
                    Recorder::start(
                        &db,
                        RecorderOptions {
                            archive_budget_bytes: budget,
                            ..RecorderOptions::default()
                        },
                    )
                    .map_err(|e| e.to_string())
                });
                let rec = existing.or_else(|| recorder.clone().and_then(|r| r.ok()));
                let mut fallback = None;
                let model = pipeline::load_model(&model_path).or_else(|e| {
                    let default = bundled(DEFAULT_MODEL);
                    if model_path == default {
                        return Err(e);
                    }
                    fallback = Some(format!("{e}; using the bundled model instead"));
                    pipeline::load_model(&default)
                });
                let sink = rec.map(|r| {
                    let mut s = RecorderSink::new(r, &station, pass_sample);
                    s.run_id = run_id;
                    Box::new(s) as Box<dyn pipeline::VerdictSink>
                });
                let wake_ctx = ctx.clone();
                let pipeline = model.and_then(|m| {
                    Pipeline::start(
                        gpu.device,
                        gpu.queue,
                        gpu.label,
                        m,
                        source,
                        options,
                        sink,
                        // Coalesce: at most ~20 repaints a second however fast verdicts come (rendering on a
                        // CPU rasteriser competes with inference for the same cores).
                        Arc::new(move || wake_ctx.request_repaint_after(Duration::from_millis(50))),
                    )
                });
                let _ = tx.send(Started {
                    pipeline,
                    recorder,
                    fallback,
                });
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.starting = Some(rx),
            Err(e) => self.notify(Level::Error, format!("cannot start inspection: {e}")),
        }
    }

    /// Adds a message for the operator (also logged).
    pub fn notify(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        match level {
            Level::Info => tracing::info!("{text}"),
            Level::Warning => tracing::warn!("{text}"),
            Level::Error => tracing::error!("{text}"),
        }
        self.notices.push_back(Notice {
            level,
            text,
            at: chrono::Local::now(),
        });
        while self.notices.len() > 50 {
            self.notices.pop_front();
        }
    }

    /// Records an event in the history (queued when the writer is busy; never blocks).
    pub fn record_event(&mut self, kind: &str, detail: impl Into<String>) {
        let mut e = EventRow::now(&self.settings.station, kind, detail);
        e.run_id = Some(self.run_id.clone());
        self.pending_ops.push_back(Op::Event(e));
    }

    fn flush_ops(&mut self) {
        let Some(rec) = &self.recorder else { return };
        while let Some(op) = self.pending_ops.pop_front() {
            if let Err(op) = rec.try_submit(op) {
                self.pending_ops.push_front(op);
                break;
            }
        }
    }

    /// Pauses or resumes inspection.
    pub fn set_paused(&mut self, paused: bool) {
        if let Some(p) = &self.pipeline {
            p.set_paused(paused);
            self.record_event(
                if paused { "paused" } else { "resumed" },
                format!("by {}", self.operator()),
            );
        }
    }

    fn operator(&self) -> String {
        if self.settings.operator.trim().is_empty() {
            "unnamed operator".into()
        } else {
            self.settings.operator.clone()
        }
    }

    /// Opens the override form on the newest verdict: that frame is the form's target until
    /// the override is saved or cancelled, however many frames are inspected meanwhile.
    pub fn open_override(&mut self) {
        let Some(v) = self.last.clone() else {
            self.notify(Level::Warning, "there is no verdict to override yet");
            return;
        };
        self.open_override_for(v);
    }

    /// Opens a reject from the "Last rejects" strip: its frame, heatmap and verdict in a window
    /// of their own, while inspection goes on.
    pub fn open_reject(&mut self, v: Arc<Verdict>) {
        let opts = egui::TextureOptions::LINEAR;
        let (frame, heat) = match v.display.as_ref() {
            Some(d) => (
                Some(
                    self.ctx
                        .load_texture(format!("reject-{}", v.seq), d.frame.clone(), opts),
                ),
                Some(
                    self.ctx
                        .load_texture(format!("reject-heat-{}", v.seq), d.heat.clone(), opts),
                ),
            ),
            None => (None, None),
        };
        self.opened_reject = Some(OpenedReject {
            verdict: v,
            frame,
            heat,
        });
    }

    /// The reject open in its window (sequence number), if any.
    pub fn opened_reject(&self) -> Option<u64> {
        self.opened_reject.as_ref().map(|r| r.verdict.seq)
    }

    /// Opens the override form on verdict `v` (captured now: later frames do not change it).
    pub fn open_override_for(&mut self, v: Arc<Verdict>) {
        let thumb = v.display.as_ref().map(|d| {
            let img = d.thumb.clone().unwrap_or_else(|| d.frame.clone());
            self.ctx.load_texture(
                format!("override-{}", v.seq),
                img,
                egui::TextureOptions::LINEAR,
            )
        });
        self.override_reason.clear();
        self.override_target = Some(OverrideTarget { verdict: v, thumb });
    }

    /// Closes the override form without saving.
    pub fn cancel_override(&mut self) {
        self.override_target = None;
    }

    /// The frame the open override form acts on (sequence number and origin).
    pub fn override_target(&self) -> Option<(u64, &str)> {
        self.override_target
            .as_ref()
            .map(|t| (t.verdict.seq, t.verdict.origin.as_str()))
    }

    /// Saves the open form's override with `reason` on the frame the form was opened on;
    /// recorded in the history.
    pub fn save_override(&mut self, reason: &str) -> Result<(), String> {
        let Some(v) = self.override_target.as_ref().map(|t| t.verdict.clone()) else {
            return Err("open the override form on a frame first".into());
        };
        self.override_frame(&v, reason)?;
        self.override_target = None;
        self.override_reason.clear();
        Ok(())
    }

    /// Overrides the verdict on frame `v` (named by its sequence number in this run) with
    /// `reason`; recorded in the history.
    fn override_frame(&mut self, v: &Verdict, reason: &str) -> Result<(), String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("give a reason for the override".into());
        }
        let from = self
            .overridden
            .get(&v.seq)
            .cloned()
            .unwrap_or_else(|| v.word().to_string());
        let to = if from == "fail" { "pass" } else { "fail" }.to_string();
        self.pending_ops.push_back(Op::Override(history::Override {
            run_id: self.run_id.clone(),
            seq: v.seq,
            from: from.clone(),
            verdict: to.clone(),
            by: self.operator(),
            at: history::rfc3339(chrono::Utc::now()),
            reason: reason.into(),
            station: self.settings.station.clone(),
        }));
        let what = if to == "pass" {
            "false reject"
        } else {
            "missed defect"
        };
        self.notify(
            Level::Info,
            format!(
                "{} (frame {}) overridden as {what} ({from} to {to}): {reason}",
                v.origin, v.seq
            ),
        );
        self.overridden.insert(v.seq, to);
        Ok(())
    }

    /// Writes the settings to `path` at once on every change that alters what the station
    /// does (model, threshold, source, ROI), on a helper thread.
    pub fn set_settings_file(&mut self, path: PathBuf) {
        let saver = SettingsSaver::start(path);
        saver.save(&self.settings);
        self.settings_saver = Some(saver);
    }

    /// Completed writes of the settings file (0 without one).
    pub fn settings_written(&self) -> u64 {
        self.settings_saver.as_ref().map_or(0, |s| s.written())
    }

    /// Saves the settings now (queued to the saver thread; never waits).
    pub(super) fn settings_changed(&mut self) {
        if let Some(s) = &self.settings_saver {
            s.save(&self.settings);
        }
    }

    /// Asks to activate another model: a helper thread reads the file and its validation
    /// figures, then a dialog asks for confirmation (and the threshold to use) before the
    /// worker swaps it in. A bad file is refused and the current model stays.
    pub fn load_model(&mut self, path: PathBuf) {
        if self.pipeline.is_none() {
            self.notify(
                Level::Warning,
                "inspection has not started yet; try again in a moment",
            );
            return;
        }
        let (tx, rx) = bounded(1);
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("model-read".into())
            .spawn(move || {
                let r = pipeline::load_model(&path).map(|(m, info)| Candidate {
                    figures: ModelFigures::from_training(&m.spec.training),
                    info,
                    keep_threshold: false,
                });
                let _ = tx.send(r);
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.candidate = None;
                self.candidate_rx = Some(rx);
            }
            Err(e) => self.notify(Level::Error, format!("cannot read the model: {e}")),
        }
    }

    /// The threshold in use now (the engineer's, or the model's own).
    pub fn threshold_in_use(&self) -> Option<f32> {
        self.settings
            .threshold
            .or(self.model.as_ref().map(|m| m.threshold))
    }

    /// Activates the confirmed candidate with the chosen threshold; the choice and the
    /// figures it was made on are recorded as an event.
    pub fn confirm_activation(&mut self) {
        let Some(c) = self.candidate.take() else {
            return;
        };
        let current = self.threshold_in_use();
        let threshold = if c.keep_threshold { current } else { None };
        let shortfalls = c.figures.shortfalls(&self.settings);
        let detail = format!(
            "{} from {}: {} at its threshold {:.3}; {}; threshold: {}; by {}",
            c.info.id,
            c.info.path.display(),
            c.figures.words(),
            c.info.threshold,
            if shortfalls.is_empty() {
                "meets the station minimum".to_string()
            } else {
                format!("BELOW the station minimum: {}", shortfalls.join("; "))
            },
            match threshold {
                Some(t) => format!("kept the current {t:.3}"),
                None => format!("took the model's {:.3}", c.info.threshold),
            },
            self.operator()
        );
        self.record_event("model_activation_confirmed", detail);
        if let Some(p) = &self.pipeline {
            p.load_model_with_threshold(c.info.path.clone(), threshold);
            self.activation = Some(Activation {
                path: c.info.path.clone(),
                hash: c.info.hash.clone(),
                threshold,
            });
        }
    }

    /// The model file confirmed for activation that the worker has not reported in use yet.
    pub fn activation_pending(&self) -> Option<&std::path::Path> {
        self.activation.as_ref().map(|a| a.path.as_path())
    }

    /// Closes the activation dialog; the model in use stays.
    pub fn cancel_activation(&mut self) {
        if let Some(c) = self.candidate.take() {
            self.record_event(
                "model_activation_cancelled",
                format!(
                    "{} from {} by {}",
                    c.info.id,
                    c.info.path.display(),
                    self.operator()
                ),
            );
        }
    }

    /// Sets (or clears) the threshold override; logged as an event.
    pub fn set_threshold(&mut self, t: Option<f32>) {
        let before = self
            .settings
            .threshold
            .or(self.model.as_ref().map(|m| m.threshold));
        self.settings.threshold = t;
        self.settings_changed();
        if let Some(p) = &self.pipeline {
            p.set_threshold(t);
        }
        let after = t.or(self.model.as_ref().map(|m| m.threshold));
        self.record_event(
            "threshold_changed",
            format!(
                "{} to {}{} by {}",
                before.map(|b| format!("{b:.3}")).unwrap_or_default(),
                after.map(|b| format!("{b:.3}")).unwrap_or_default(),
                if t.is_none() { " (model's own)" } else { "" },
                self.operator()
            ),
        );
    }

    /// Switches the frame source (None = the demo images).
    pub fn set_source(&mut self, source: Option<SourceSpec>) {
        self.settings.source = source;
        self.settings_changed();
        let s = self.source();
        if let Some(p) = &mut self.pipeline {
            p.set_fps(self.settings.replay_fps);
            p.set_source(s.clone());
        }
        self.source_status = None;
        self.record_event("source_changed", s.uri());
    }

    /// Sets the region of interest (frame pixels). One outside the live frame is refused: the
    /// previous one stays, and the operator is told.
    pub fn set_roi(&mut self, roi: Option<[u32; 4]>) {
        if let (Some([x, y, w, h]), Some(v)) = (roi, &self.last) {
            let r = kernels::Roi {
                x,
                y,
                width: w,
                height: h,
            };
            if !pipeline::roi_fits(r, v.image.width, v.image.height) {
                let text = format!(
                    "{}; keeping the previous one ({})",
                    Event::roi_refused_text(r, &v.origin, v.image.width, v.image.height),
                    roi_words(self.settings.roi)
                );
                self.notify(Level::Warning, text);
                return;
            }
        }
        self.settings.roi = roi;
        self.settings_changed();
        if let Some(p) = &self.pipeline {
            p.set_roi(self.settings.roi());
        }
        self.record_event("roi_changed", roi_words(roi));
    }

    /// Starts counting again (a new shift).
    pub fn new_shift(&mut self) {
        if let Some(p) = &self.pipeline {
            p.reset_counters();
        }
        self.record_event("shift_started", format!("by {}", self.operator()));
    }

    /// Acknowledges the alarm.
    pub fn acknowledge_alarm(&mut self) {
        if let Some(a) = self.alarm.take() {
            self.record_event(
                "alarm_acknowledged",
                format!("{} — by {}", a.text, self.operator()),
            );
        }
    }

    /// Puts what the file dialogs chose into their fields (and opens, loads or exports where
    /// the button promised it).
    fn dialog_answers(&mut self) {
        use file_dialog::{Outcome, Target};
        for (target, outcome) in self.dialogs.poll() {
            let path = match outcome {
                Outcome::Picked(p) => p,
                Outcome::Cancelled => continue,
                Outcome::Unavailable(why) => {
                    if target == Target::InspectModel {
                        // The model field to type in is in Settings: say it there.
                        self.dialogs.unavailable = Some((Target::SettingsModel, why));
                        self.tab = Tab::Settings;
                    }
                    continue;
                }
            };
            let text = path.display().to_string();
            match target {
                Target::SettingsModel => self.model_path_input = text,
                Target::InspectModel => {
                    self.model_path_input = text;
                    self.load_model(path);
                }
                Target::Database => self.db_path_input = text,
                Target::SourceFolder => self.source_draft.set_folder(text),
                Target::LabelDataset => {
                    self.label.folder = text;
                    self.label.open(false);
                }
                Target::TrainDataset => self.train.data = text,
                Target::CsvExport => {
                    self.history.export_path = text;
                    self.history.export_requested = true;
                }
            }
        }
    }

    fn poll(&mut self) {
        self.dialog_answers();
        if let Some(rx) = &self.starting
            && let Ok(started) = rx.try_recv()
        {
            self.starting = None;
            if let Some(r) = started.recorder {
                match r {
                    Ok(r) => self.recorder = Some(r),
                    Err(e) => self.notify(
                        Level::Error,
                        format!("{e}. Verdicts are not being recorded; choose another database in Settings"),
                    ),
                }
            }
            if let Some(f) = started.fallback {
                self.notify(Level::Warning, f);
            }
            match started.pipeline {
                Ok(p) => {
                    if self.is_demo() {
                        self.notify(
                            Level::Info,
                            "No camera selected: replaying the bundled demo images through the \
                             default model. Choose a camera in Settings > Source.",
                        );
                    }
                    self.pipeline = Some(p);
                }
                Err(e) => self.notify(Level::Error, e),
            }
        }
        let events: Vec<Event> = match &self.pipeline {
            Some(p) => p.try_events().collect(),
            None => Vec::new(),
        };
        let mut newest = None;
        for ev in events {
            match ev {
                Event::Verdict(v) => newest = Some(v),
                Event::Unreadable { origin, error } => {
                    if self.seen_unreadable.insert(origin.clone()) {
                        self.notify(Level::Warning, format!("cannot inspect {origin}: {error}"));
                    }
                }
                Event::Source(s) => {
                    match &s {
                        SourceStatus::Failed(e) => {
                            self.notify(Level::Error, e.clone());
                        }
                        SourceStatus::Lost(e) => {
                            if !matches!(self.source_status, Some(SourceStatus::Lost(_))) {
                                self.notify(Level::Error, e.clone());
                                self.record_event("camera_lost", e.clone());
                            }
                        }
                        SourceStatus::Running(d) => {
                            if matches!(self.source_status, Some(SourceStatus::Lost(_))) {
                                self.notify(Level::Info, format!("{d} is back"));
                                self.record_event("camera_found", d.clone());
                            }
                        }
                        SourceStatus::Ended(d) => {
                            self.notify(Level::Info, format!("{d}: replay finished"))
                        }
                    }
                    self.source_status = Some(s);
                }
                Event::ModelLoaded(info) => {
                    self.model_error = None;
                    let first = self.model.is_none();
                    self.model_path_input = info.path.display().to_string();
                    if !first {
                        // The threshold chosen when the activation was confirmed (the worker
                        // uses it from the model's first frame).
                        let confirmed = self.activation.take().filter(|a| a.path == info.path);
                        if let Some(a) = &confirmed
                            && a.hash != info.hash
                        {
                            self.notify(
                                Level::Warning,
                                format!(
                                    "{} changed on disk after its figures were confirmed: the model now in use is {}",
                                    info.path.display(),
                                    info.id
                                ),
                            );
                        }
                        self.settings.model_path = Some(info.path.clone());
                        self.settings.threshold = confirmed.and_then(|a| a.threshold);
                        self.settings_changed();
                        self.notify(Level::Info, format!("model {} now in use", info.id));
                    }
                    self.record_event(
                        "model_activated",
                        format!("{} from {}", info.id, info.path.display()),
                    );
                    self.model = Some(info);
                }
                Event::ModelRejected(e) => {
                    self.activation = None;
                    let msg = format!("{e}. The current model stays in use.");
                    self.model_error = Some(msg.clone());
                    self.notify(Level::Error, msg);
                }
                Event::SinkError(e) => self.notify(Level::Error, e),
                Event::Warning(w) => self.notify(Level::Warning, w),
                Event::RoiRefused {
                    roi,
                    origin,
                    width,
                    height,
                    kept,
                } => {
                    let kept_arr = kept.map(|k| [k.x, k.y, k.width, k.height]);
                    let text = format!(
                        "{}; keeping the previous one ({})",
                        Event::roi_refused_text(roi, &origin, width, height),
                        roi_words(kept_arr)
                    );
                    self.settings.roi = kept_arr;
                    self.settings_changed();
                    self.record_event("roi_refused", text.clone());
                    self.notify(Level::Warning, text);
                }
            }
        }
        if let Some(v) = newest {
            let v: Arc<Verdict> = Arc::from(v);
            if let Some(d) = &v.display {
                let opts = egui::TextureOptions::LINEAR;
                match &mut self.frame_tex {
                    Some(t) => t.set(d.frame.clone(), opts),
                    None => {
                        self.frame_tex = Some(self.ctx.load_texture("frame", d.frame.clone(), opts))
                    }
                }
                match &mut self.heat_tex {
                    Some(t) => t.set(d.heat.clone(), opts),
                    None => {
                        self.heat_tex = Some(self.ctx.load_texture("heat", d.heat.clone(), opts))
                    }
                }
            }
            self.last = Some(v);
        }
        if let Some(p) = &self.pipeline {
            self.counters = p.counters();
        }
        // Thumbnails of the last rejects.
        let keep: HashSet<u64> = self.counters.last_rejects.iter().map(|v| v.seq).collect();
        self.thumbs.retain(|k, _| keep.contains(k));
        for v in &self.counters.last_rejects {
            if !self.thumbs.contains_key(&v.seq)
                && let Some(t) = v.display.as_ref().and_then(|d| d.thumb.clone())
            {
                let tex = self.ctx.load_texture(
                    format!("reject-{}", v.seq),
                    t,
                    egui::TextureOptions::LINEAR,
                );
                self.thumbs.insert(v.seq, tex);
            }
        }
        self.check_alarms();
        if let Some(rx) = &self.candidate_rx
            && let Ok(r) = rx.try_recv()
        {
            self.candidate_rx = None;
            match r {
                Ok(c) => {
                    self.model_error = None;
                    self.candidate = Some(c);
                }
                Err(e) => {
                    let msg = format!("{e}. The current model stays in use.");
                    self.model_error = Some(msg.clone());
                    self.notify(Level::Error, msg);
                }
            }
        }
        if let Some(rx) = &self.cameras
            && let Ok(list) = rx.try_recv()
        {
            self.camera_list = Some(list);
            self.cameras = None;
        }
        self.flush_ops();
    }

    fn check_alarms(&mut self) {
        let c = &self.counters;
        let n = self.settings.alarm_consecutive_fails as u64;
        let mut raised = None;
        if n > 0 && c.consecutive_fails >= n {
            if !self.consecutive_latched {
                self.consecutive_latched = true;
                raised = Some(format!("{} FAILs in a row", c.consecutive_fails));
            }
        } else {
            self.consecutive_latched = false;
        }
        let w = self.settings.alarm_window.max(10) as usize;
        if c.recent.len() >= 2 * w {
            let split = c.recent.len() - w;
            let base = c.recent.iter().take(split).filter(|f| **f).count() as f64 / split as f64;
            let now = c.recent.iter().skip(split).filter(|f| **f).count() as f64 / w as f64;
            let (_, ucl) = history::p_chart_limits(base, w as u64);
            if now > ucl {
                if !self.drift_latched {
                    self.drift_latched = true;
                    raised.get_or_insert(format!(
                        "reject rate {:.1}% over the last {w} parts is above the control limit \
                         {:.1}% (baseline {:.1}%)",
                        100.0 * now,
                        100.0 * ucl,
                        100.0 * base
                    ));
                }
            } else {
                self.drift_latched = false;
            }
        }
        if let Some(text) = raised {
            self.record_event("alarm", text.clone());
            self.notify(Level::Warning, format!("ALARM: {text}"));
            self.alarm = Some(Alarm {
                text,
                at: chrono::Local::now(),
            });
        }
    }

    /// Requests the camera list in the background.
    pub fn refresh_cameras(&mut self) {
        let (tx, rx) = bounded(1);
        let ctx = self.ctx.clone();
        let _ = std::thread::Builder::new()
            .name("camera-list".into())
            .spawn(move || {
                let _ = tx.send(crate::source::list_cameras());
                ctx.request_repaint();
            });
        self.cameras = Some(rx);
    }

    /// Draws the whole app into `ui` (eframe and the UI tests call this).
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        self.poll();
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Defect Inspector");
                ui.separator();
                for (tab, name) in [
                    (Tab::Inspect, "Inspect"),
                    (Tab::Label, "Label"),
                    (Tab::Train, "Train"),
                    (Tab::History, "History"),
                    (Tab::Settings, "Settings"),
                ] {
                    ui.selectable_value(&mut self.tab, tab, egui::RichText::new(name).size(18.0));
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.label(&self.gpu.label);
                    if let Some(m) = &self.model {
                        ui.label(format!("model {}", m.id));
                    }
                });
            });
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Inspect => inspect::show(self, ui),
            Tab::Label => label_tab::show(self, ui),
            Tab::Train => train_tab::show(self, ui),
            Tab::History => history_tab::show(self, ui),
            Tab::Settings => settings_tab::show(self, ui),
        });
        self.activation_dialog(ui);
        // Keep the live view moving even when no event wakes us (camera lost, paused).
        ui.ctx().request_repaint_after(Duration::from_millis(250));
        self.ui_times.push_back(t0.elapsed().as_secs_f64() * 1e3);
        if self.ui_times.len() > 600 {
            self.ui_times.pop_front();
        }
        if self.last_log.elapsed() > Duration::from_secs(10) {
            self.last_log = Instant::now();
            let v: Vec<f64> = self.ui_times.iter().copied().collect();
            tracing::info!(
                "ui frame time p50 {:.2} ms p95 {:.2} ms over {} frames; {:.1} verdicts/s; capture-to-verdict p50 {:.1} ms; inspected {}",
                pipeline::percentile(v.clone(), 0.5).unwrap_or(0.0),
                pipeline::percentile(v, 0.95).unwrap_or(0.0),
                self.ui_times.len(),
                self.counters.fps(),
                self.counters.latency_p50().unwrap_or(f64::NAN),
                self.counters.inspected
            );
        }
        if let Some(q) = self.quit_after
            && self.started_at.elapsed() > q
        {
            ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// The model activation dialog: the model's figures at its threshold, a clear warning when
    /// they fall short of the station's minimum, and the threshold choice.
    fn activation_dialog(&mut self, ui: &mut egui::Ui) {
        let Some(c) = self.candidate.clone() else {
            return;
        };
        let shortfalls = c.figures.shortfalls(&self.settings);
        let current = self.threshold_in_use();
        let mut keep = c.keep_threshold;
        let (mut confirm, mut cancel) = (false, false);
        egui::Window::new("Activate model?")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::vec2(0.0, 0.0))
            .show(ui.ctx(), |ui| {
                ui.label(egui::RichText::new(format!("{} — {}", c.info.id, c.info.path.display())).strong());
                ui.label(format!(
                    "Validation at its threshold {:.3}: {}",
                    c.info.threshold,
                    c.figures.words()
                ));
                if shortfalls.is_empty() {
                    ui.label(format!(
                        "Meets the station minimum (AUROC ≥ {:.2}, miss ≤ {:.1} %, false reject ≤ {:.1} %).",
                        self.settings.min_auroc,
                        100.0 * self.settings.max_miss_rate,
                        100.0 * self.settings.max_false_reject_rate
                    ));
                } else {
                    let red = ui.visuals().error_fg_color;
                    ui.colored_label(
                        red,
                        egui::RichText::new("WARNING: this model is below the station minimum").strong(),
                    );
                    for s in &shortfalls {
                        ui.colored_label(red, format!("• {s}"));
                    }
                }
                ui.separator();
                ui.label("Threshold after activation:");
                ui.radio_value(
                    &mut keep,
                    true,
                    match current {
                        Some(t) => format!("Keep the current threshold ({t:.3})"),
                        None => "Keep the current threshold".to_string(),
                    },
                );
                ui.radio_value(
                    &mut keep,
                    false,
                    format!("Take the model's threshold ({:.3})", c.info.threshold),
                );
                ui.horizontal(|ui| {
                    confirm = ui.button(egui::RichText::new("Activate this model").strong()).clicked();
                    cancel = ui.button("Keep the current model").clicked();
                });
            });
        if let Some(cand) = &mut self.candidate {
            cand.keep_threshold = keep;
        }
        if confirm {
            self.confirm_activation();
        } else if cancel {
            self.cancel_activation();
        }
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.starting.is_some() {
                ui.spinner();
                ui.label("starting inspection…");
            }
            match &self.source_status {
                Some(SourceStatus::Running(s)) => {
                    ui.label(format!("source: {s}"));
                }
                Some(SourceStatus::Lost(e)) => {
                    ui.colored_label(ui.visuals().error_fg_color, format!("camera lost — {e}"));
                }
                Some(SourceStatus::Failed(e)) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                Some(SourceStatus::Ended(s)) => {
                    ui.label(format!("{s}: finished"));
                }
                None => {}
            }
            ui.separator();
            match &self.recorder {
                Some(r) => {
                    let st = r.status();
                    if let Some(e) = st.db_error.or(st.archive_error) {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    } else {
                        ui.label(format!(
                            "recording to {} ({} written)",
                            r.db_path().display(),
                            st.committed
                        ));
                    }
                }
                None => {
                    ui.label("not recording");
                }
            }
            ui.separator();
            let v: Vec<f64> = self.ui_times.iter().copied().collect();
            if let Some(p) = pipeline::percentile(v, 0.5) {
                ui.label(format!("UI {p:.1} ms/frame"));
            }
            if let Some(n) = self.notices.back() {
                ui.separator();
                let color = match n.level {
                    Level::Info => ui.visuals().text_color(),
                    Level::Warning => ui.visuals().warn_fg_color,
                    Level::Error => ui.visuals().error_fg_color,
                };
                ui.colored_label(color, format!("{} {}", n.at.format("%H:%M:%S"), n.text));
            }
        });
    }
}

impl eframe::App for InspectorApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.settings);
        self.settings_changed();
    }

    fn on_exit(&mut self) {
        self.flush_ops();
        self.pipeline.take();
        if let Some(r) = self.recorder.take() {
            r.finish();
        }
    }
}

/// A region of interest in words ("x,y,w,h" or "whole frame").
pub fn roi_words(roi: Option<[u32; 4]>) -> String {
    roi.map(|r| format!("{},{},{},{}", r[0], r[1], r[2], r[3]))
        .unwrap_or_else(|| "whole frame".into())
}

/// The bundled demo images, looping.
pub fn demo_source() -> SourceSpec {
    SourceSpec::Folder {
        dir: bundled(DEMO_DATASET),
        looping: true,
    }
}
