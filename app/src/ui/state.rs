//! The app's state shared by the shell and the tabs: [`InspectorApp`] and the small types it
//! holds (tabs, notices, alarms, the model figures, a pending activation), its construction
//! and its read-only accessors.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::file_dialog::FileDialogs;
use super::gpu::Gpu;
use super::history_tab::HistoryView;
use super::label_tab::LabelView;
use super::source_draft::SourceDraft;
use super::train::TrainView;
use crate::data::assets::{DEFAULT_MODEL, DEMO_DATASET, bundled};
use crate::line_station::LineStation;
use crate::records::history::{self, EventRow, Op, Recorder};
use crate::records::settings::{Settings, SettingsSaver};
use crate::station::pipeline::{Counters, ModelInfo, Pipeline, SourceStatus, Verdict};
use crate::station::source::SourceSpec;

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
pub(super) struct OverrideTarget {
    pub(super) verdict: Arc<Verdict>,
    pub(super) thumb: Option<egui::TextureHandle>,
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
pub(super) struct Activation {
    pub(super) path: PathBuf,
    pub(super) hash: String,
    pub(super) threshold: Option<f32>,
}

pub(super) struct Started {
    pub(super) pipeline: Result<Pipeline, String>,
    pub(super) recorder: Option<Result<Recorder, String>>,
    pub(super) fallback: Option<String>,
    pub(super) line: Option<LineStation>,
    /// Why the line I/O asked for in Settings did not start (the station runs without it).
    pub(super) line_error: Option<String>,
}

/// What the app holds of the plant database.
#[derive(Default)]
pub struct PlantState {
    /// The running forwarder (None: forwarding is off, or it could not start).
    pub forwarder: Option<crate::records::plant::Forwarder>,
    /// Why forwarding asked for in Settings did not start (shown until it does).
    pub error: Option<String>,
    /// The settings the forwarder was started with (Settings shows Apply when they differ).
    pub(super) in_use: crate::records::settings::PlantSettings,
    /// The helper thread bringing the forwarder up.
    pub(super) starting: Option<Receiver<Result<Option<crate::records::plant::Forwarder>, String>>>,
    /// The backlog alarm is raised (not again until the backlog is under the limit).
    pub(super) alarm_latched: bool,
    /// Settings' "Test connection" while it runs, and its last answer.
    pub(super) test: Option<Receiver<Result<String, String>>>,
    pub(super) test_result: Option<Result<String, String>>,
}

/// The app's state.
pub struct InspectorApp {
    /// Saved settings.
    pub settings: Settings,
    /// The open tab.
    pub tab: Tab,
    pub(super) ctx: egui::Context,
    pub(super) gpu: Gpu,
    pub(super) pipeline: Option<Pipeline>,
    pub(super) starting: Option<Receiver<Started>>,
    /// The PLC's Modbus server and the MQTT publisher, when Settings › Line I/O has them on.
    pub line: Option<LineStation>,
    /// Why the line I/O did not start, shown on the Inspect tab until it does.
    pub line_error: Option<String>,
    /// The line settings the running station was started with (Settings shows Apply when the
    /// saved ones differ).
    pub(super) line_in_use: crate::records::settings::LineSettings,
    /// A PLC was seen since the line I/O started (its silence is an alarm from then on).
    pub(super) plc_seen: bool,
    /// The PLC-silence alarm is raised (not again until the PLC polls again).
    pub(super) plc_latched: bool,
    /// The answer of Settings' "Test connection", while it runs.
    pub(super) mqtt_test: Option<Receiver<Result<String, String>>>,
    /// Its last answer.
    pub(super) mqtt_test_result: Option<Result<String, String>>,
    /// The retained MQTT status last published ("online", "paused", "no signal").
    pub(super) mqtt_state: &'static str,
    /// Forwarding to the plant database (Settings › Plant database).
    pub plant: PlantState,
    pub(super) recorder: Option<Recorder>,
    pub(super) run_id: String,
    pub(super) pending_ops: VecDeque<Op>,
    /// The newest verdict.
    pub last: Option<Arc<Verdict>>,
    /// Counters as of this frame.
    pub counters: Counters,
    pub(super) frame_tex: Option<egui::TextureHandle>,
    pub(super) heat_tex: Option<egui::TextureHandle>,
    pub(super) thumbs: HashMap<u64, egui::TextureHandle>,
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
    pub(super) consecutive_latched: bool,
    pub(super) drift_latched: bool,
    pub(super) review_latched: bool,
    /// Frames overridden in this run, with the new verdict.
    pub overridden: HashMap<u64, String>,
    pub(super) override_reason: String,
    /// The frame the open override form acts on (None = the form is closed).
    pub(super) override_target: Option<OverrideTarget>,
    /// The reject open in its own window.
    pub(crate) opened_reject: Option<OpenedReject>,
    pub(super) roi_edit: bool,
    /// The frame held still while an ROI is drawn (the live view goes on changing size and
    /// content under a drag otherwise), with its texture.
    pub(super) roi_hold: Option<(Arc<Verdict>, egui::TextureHandle)>,
    pub(super) roi_drag: Option<egui::Pos2>,
    pub(super) roi_drag_end: Option<egui::Pos2>,
    /// Where the live frame was drawn last frame (screen points).
    pub live_rect: Option<egui::Rect>,
    /// The whole live-view area (the frame and the margin around it; an ROI drag may start
    /// anywhere in it and is clamped to the frame).
    pub live_area: Option<egui::Rect>,
    pub(super) model_path_input: String,
    pub(super) model_choices: Option<Vec<PathBuf>>,
    /// The Browse listing being read by a helper thread.
    pub(super) model_choices_rx: Option<Receiver<Vec<PathBuf>>>,
    /// A model file being read for the activation dialog.
    pub(super) candidate_rx: Option<Receiver<Result<Candidate, String>>>,
    /// The model waiting for confirmation (the dialog is open).
    pub candidate: Option<Candidate>,
    pub(super) activation: Option<Activation>,
    pub(super) settings_saver: Option<SettingsSaver>,
    pub(super) source_draft: SourceDraft,
    pub(super) cameras: Option<Receiver<Result<Vec<crate::station::source::CameraDesc>, String>>>,
    pub(super) camera_list: Option<Result<Vec<crate::station::source::CameraDesc>, String>>,
    pub(super) ui_times: VecDeque<f64>,
    pub(super) last_log: Instant,
    pub(super) started_at: Instant,
    pub(super) quit_after: Option<Duration>,
    /// The History tab's state.
    pub history: HistoryView,
    /// The Label tab's state.
    pub label: LabelView,
    /// The Train tab's state.
    pub train: TrainView,
    pub(super) seen_unreadable: HashSet<String>,
    /// The platform file dialogs (one at a time, on a worker thread).
    pub dialogs: FileDialogs,
    /// The text in the Settings tab's database field.
    pub db_path_input: String,
    pub(super) db_at_start: PathBuf,
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
        let source_draft = SourceDraft::from_settings(&settings);
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
            line: None,
            line_error: None,
            line_in_use: Default::default(),
            plc_seen: false,
            plc_latched: false,
            mqtt_test: None,
            mqtt_test_result: None,
            mqtt_state: "online",
            plant: PlantState::default(),
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
            review_latched: false,
            overridden: HashMap::new(),
            override_reason: String::new(),
            override_target: None,
            opened_reject: None,
            roi_edit: false,
            roi_hold: None,
            roi_drag: None,
            roi_drag_end: None,
            live_rect: None,
            live_area: None,
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
            history: HistoryView::default(),
            label: LabelView::default(),
            train: TrainView::default(),
            seen_unreadable: HashSet::new(),
            dialogs: FileDialogs::default(),
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

    pub(super) fn flush_ops(&mut self) {
        let Some(rec) = &self.recorder else { return };
        while let Some(op) = self.pending_ops.pop_front() {
            if let Err(op) = rec.try_submit(op) {
                self.pending_ops.push_front(op);
                break;
            }
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
