//! The app shell: each frame polls the pipeline, the writer and the dialogs, checks alarms,
//! then draws the tab bar, the open tab, the activation dialog and the status bar.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use kernels::Decision;

use super::state::*;
use super::{file_dialog, history_tab, inspect, label_tab, settings_tab, train};
use crate::records::history;
use crate::records::settings::STORAGE_KEY;
use crate::station::pipeline::{self, Event, SourceStatus, Verdict};

impl InspectorApp {
    /// Puts what the file dialogs chose into their fields (and opens, loads or exports where
    /// the button promised it).
    pub(super) fn dialog_answers(&mut self) {
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

    pub(super) fn poll(&mut self) {
        self.dialog_answers();
        self.poll_plant();
        if let Some(rx) = &self.starting
            && let Ok(started) = rx.try_recv()
        {
            self.starting = None;
            if let Some(r) = started.recorder {
                match r {
                    Ok(r) => {
                        self.recorder = Some(r);
                        // Forwarding reads what the writer committed: it starts after it.
                        self.start_plant();
                    }
                    Err(e) => self.notify(
                        Level::Error,
                        format!("{e}. Verdicts are not being recorded; choose another database in Settings"),
                    ),
                }
            }
            if let Some(f) = started.fallback {
                self.notify(Level::Warning, f);
            }
            self.line_started(started.line, started.line_error);
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
                                // No signal is an alarm: the station judges nothing.
                                let camera = self.source_is_camera();
                                self.record_event(
                                    if camera { "camera_lost" } else { "source_lost" },
                                    e.clone(),
                                );
                                self.raise_alarm(format!("NO SIGNAL: {e}"));
                            }
                        }
                        SourceStatus::Running(d) => {
                            if matches!(self.source_status, Some(SourceStatus::Lost(_))) {
                                self.notify(Level::Info, format!("{d} is back"));
                                let camera = self.source_is_camera();
                                self.record_event(
                                    if camera {
                                        "camera_found"
                                    } else {
                                        "source_found"
                                    },
                                    d.clone(),
                                );
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
                        let kept = confirmed.and_then(|a| a.threshold);
                        if kept.is_none() {
                            self.settings.threshold_set = None;
                        } else if self.settings.threshold.is_none() {
                            // The previous model's own threshold, kept: now set by hand.
                            self.settings.threshold_set =
                                Some(crate::records::settings::ThresholdSet::now(
                                    format!(
                                        "kept from model {} on activating {}",
                                        self.model.as_ref().map(|m| m.id.as_str()).unwrap_or("?"),
                                        info.id
                                    ),
                                    self.operator(),
                                ));
                        }
                        self.settings.threshold = kept;
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
        self.sync_mqtt_state();
        super::line_panel::poll_broker_test(self);
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

    pub(super) fn check_alarms(&mut self) {
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
            let fail = |d: &&Decision| **d == Decision::Fail;
            let base = c.recent.iter().take(split).filter(fail).count() as f64 / split as f64;
            let now = c.recent.iter().skip(split).filter(fail).count() as f64 / w as f64;
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
        // REVIEW parts counted apart: too many of them means the people checking them cannot
        // keep up (or the product moved away from what the model knows).
        let limit = self.settings.alarm_review_percent;
        if limit > 0.0 && c.recent.len() >= w {
            let share = 100.0
                * c.recent
                    .iter()
                    .rev()
                    .take(w)
                    .filter(|d| **d == Decision::Review)
                    .count() as f64
                / w as f64;
            if share > limit {
                if !self.review_latched {
                    self.review_latched = true;
                    raised.get_or_insert(format!(
                        "{share:.0}% of the last {w} parts went to REVIEW (alarm above {limit:.0}%): \
                         check the parts set aside and the model"
                    ));
                }
            } else {
                self.review_latched = false;
            }
        }
        if let Some(text) = self.plc_alarm() {
            raised.get_or_insert(text);
        }
        if let Some(text) = self.plant_alarm() {
            raised.get_or_insert(text);
        }
        if let Some(text) = raised {
            self.raise_alarm(text);
        }
    }

    /// Raises an alarm: recorded, told, and shown until acknowledged.
    pub(super) fn raise_alarm(&mut self, text: String) {
        self.record_event("alarm", text.clone());
        self.publish_alarm(&text);
        self.notify(Level::Warning, format!("ALARM: {text}"));
        self.alarm = Some(Alarm {
            text,
            at: chrono::Local::now(),
        });
    }

    /// Whether the source in use is a camera (else a folder or synthetic parts).
    fn source_is_camera(&self) -> bool {
        matches!(
            self.settings.source,
            Some(crate::station::source::SourceSpec::Camera { .. })
        )
    }

    /// Requests the camera list in the background.
    pub fn refresh_cameras(&mut self) {
        let (tx, rx) = bounded(1);
        let ctx = self.ctx.clone();
        let _ = std::thread::Builder::new()
            .name("camera-list".into())
            .spawn(move || {
                let _ = tx.send(crate::station::source::list_cameras());
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
            Tab::Train => train::show(self, ui),
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
    pub(super) fn activation_dialog(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn status_bar(&mut self, ui: &mut egui::Ui) {
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
                    ui.colored_label(ui.visuals().error_fg_color, format!("no signal — {e}"));
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
        let recorder = self.recorder.take();
        self.finish_line(move || {
            if let Some(r) = recorder {
                r.finish();
            }
        });
        self.finish_plant();
    }
}
