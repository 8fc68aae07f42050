//! What the operator does to the running station: start and pause it, load a model and
//! confirm its activation, change the threshold, source and region, open a reject, override a
//! verdict, start a shift, acknowledge an alarm, and record it all as events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;
use kernels::Decision;

use super::state::*;
use crate::data::assets::{DEFAULT_MODEL, bundled};
use crate::line_station::{LineOptions, LineStation};
use crate::records::history::{self, Op, Recorder, RecorderOptions, RecorderSink};
use crate::records::settings::SettingsSaver;
use crate::station::pipeline::{self, Event, Pipeline, PipelineOptions, Verdict};
use crate::station::source::SourceSpec;

impl InspectorApp {
    pub(super) fn start(&mut self) {
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
            review_band: self.settings.review_band,
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
        let line_settings = self.settings.line.clone();
        self.line_in_use = line_settings.clone();
        self.line_error = None;
        // Stopped on the start thread: dropping a pipeline waits for the frame being judged.
        let old_pipeline = self.pipeline.take();
        // The Modbus port is free again before the new server binds it.
        let old_line = self.line.take();
        let spawned = std::thread::Builder::new()
            .name("pipeline-start".into())
            .spawn(move || {
                // Its own device: the window's frames never queue behind an inference.
                let gpu = gpu.station();
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
                drop(old_pipeline);
                if let Some(l) = old_line {
                    let _ = l.finish(Duration::from_secs(2), || {});
                }
                let make_sink = || {
                    rec.clone().map(|r| {
                        let mut s = RecorderSink::new(r, &station, pass_sample);
                        s.run_id = run_id.clone();
                        s
                    })
                };
                let mut line = None;
                let mut line_error = None;
                let wake_ctx = ctx.clone();
                let pipeline = model.and_then(|m| {
                    let boxed = |s: RecorderSink| Box::new(s) as Box<dyn pipeline::VerdictSink>;
                    let sink = match LineOptions::from_settings(&line_settings, &station) {
                        Ok(Some(o)) => {
                            match LineStation::start(&o, make_sink(), &m.1, &source.uri()) {
                                Ok((l, s)) => {
                                    line = Some(l);
                                    Some(s)
                                }
                                Err(e) => {
                                    line_error = Some(e);
                                    make_sink().map(boxed)
                                }
                            }
                        }
                        Ok(None) => make_sink().map(boxed),
                        Err(e) => {
                            line_error = Some(e);
                            make_sink().map(boxed)
                        }
                    };
                    let trigger = line.as_ref().and_then(|l: &LineStation| l.trigger());
                    Pipeline::start_triggered(
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
                        trigger,
                    )
                });
                let _ = tx.send(Started {
                    pipeline,
                    recorder,
                    fallback,
                    line,
                    line_error,
                });
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.starting = Some(rx),
            Err(e) => self.notify(Level::Error, format!("cannot start inspection: {e}")),
        }
    }

    /// Stops inspection and starts it again with the settings as they are now (line I/O).
    pub fn restart_station(&mut self) {
        if self.starting.is_some() {
            self.notify(
                Level::Warning,
                "inspection is still starting: try again in a moment",
            );
            return;
        }
        self.start();
    }

    /// Starts or ends drawing an ROI on the live view: the newest frame is held still for the
    /// drawing (the stream goes on being judged) and let go at the end.
    pub fn set_roi_edit(&mut self, on: bool) {
        self.roi_edit = on;
        self.roi_drag = None;
        self.roi_drag_end = None;
        self.roi_hold = None;
        if on
            && let Some(v) = self.last.clone()
            && let Some(d) = &v.display
        {
            let tex =
                self.ctx
                    .load_texture("roi-frame", d.frame.clone(), egui::TextureOptions::LINEAR);
            self.roi_hold = Some((v, tex));
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

    pub(super) fn operator(&self) -> String {
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
        let from = self.decision_now(&v);
        let to = if from == "fail" { "pass" } else { "fail" };
        self.override_frame(&v, to, reason)?;
        self.override_target = None;
        self.override_reason.clear();
        Ok(())
    }

    /// Saves a person's decision on the REVIEW part the open form shows (PASS or FAIL) with
    /// `reason`: recorded in the history like an override of the model's REVIEW.
    pub fn save_decision(&mut self, to: Decision, reason: &str) -> Result<(), String> {
        let Some(v) = self.override_target.as_ref().map(|t| t.verdict.clone()) else {
            return Err("open the override form on a frame first".into());
        };
        if to == Decision::Review {
            return Err("a person's decision is PASS or FAIL".into());
        }
        self.override_frame(&v, to.as_str(), reason)?;
        self.override_target = None;
        self.override_reason.clear();
        Ok(())
    }

    /// The verdict frame `v` has now: a person's, else the model's.
    fn decision_now(&self, v: &Verdict) -> String {
        self.overridden
            .get(&v.seq)
            .cloned()
            .unwrap_or_else(|| v.word().to_string())
    }

    /// Overrides the verdict on frame `v` (named by its sequence number in this run) with
    /// `reason`; recorded in the history.
    pub(super) fn override_frame(
        &mut self,
        v: &Verdict,
        to: &str,
        reason: &str,
    ) -> Result<(), String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("give a reason for the override".into());
        }
        let from = self.decision_now(v);
        let to = to.to_string();
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
        let what = match (from.as_str(), to.as_str()) {
            ("review", "pass") => "decided good",
            ("review", _) => "decided defective",
            (_, "pass") => "false reject",
            _ => "missed defect",
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

    /// Where the threshold in use came from: "the model's own", "set by hand at … by …".
    pub fn threshold_origin(&self) -> String {
        match (&self.settings.threshold, &self.settings.threshold_set) {
            (None, _) => "the model's own".into(),
            (Some(_), Some(s)) => s.words(),
            (Some(_), None) => "set by hand (when and by whom not recorded)".into(),
        }
    }

    /// The threshold in force and where it came from, in words: "0.200 (set by hand at … by …)".
    pub fn threshold_words(&self) -> String {
        match self.threshold_in_use() {
            Some(t) => format!("{t:.3} ({})", self.threshold_origin()),
            None => "— (no model loaded yet)".into(),
        }
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
        self.settings.threshold_set =
            t.map(|_| crate::records::settings::ThresholdSet::now("set by hand", self.operator()));
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

    /// Switches the review band on (PASS / REVIEW / FAIL where the model has one) or off
    /// (two-way at the FAIL threshold); recorded as an event.
    pub fn set_review_band(&mut self, on: bool) {
        if self.settings.review_band == on {
            return;
        }
        self.settings.review_band = on;
        self.settings_changed();
        if let Some(p) = &self.pipeline {
            p.set_review_band(on);
        }
        self.record_event(
            "review_band_changed",
            format!(
                "review band {} by {}",
                if on { "on" } else { "off (two-way)" },
                self.operator()
            ),
        );
    }

    /// The review band in force, in words: its PASS threshold, or why there is none.
    pub fn review_band_words(&self) -> String {
        let Some(m) = &self.model else {
            return "— (no model loaded yet)".into();
        };
        match (self.settings.review_band, m.pass_threshold) {
            (false, _) => "off: two-way, PASS below the FAIL threshold".into(),
            (true, None) => "this model has no review band: two-way".into(),
            (true, Some(p)) => {
                let fail = self.threshold_in_use().unwrap_or(m.threshold);
                format!(
                    "PASS below {:.3}, REVIEW from {:.3} up to the FAIL threshold {fail:.3}",
                    p.min(fail),
                    p.min(fail)
                )
            }
        }
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
}
