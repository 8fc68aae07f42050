//! The line I/O in the app: its state on the Inspect tab (PLC and broker, readable at a
//! glance), the PLC-silence alarm, the retained MQTT status and alarm topic kept in step with
//! the station, and Settings › Line I/O (trigger source, Modbus server, broker, the register
//! map a PLC programmer needs). The server and the publisher themselves are
//! [`crate::line_station::LineStation`]'s; this module only reads their snapshots (a mutex
//! held for a copy, never the network).

use std::time::{Duration, Instant};

use egui::{Color32, RichText};

use super::state::*;
use crate::line_station::{LineStation, mqtt_config};
use crate::station::line_io::LineStatus;
use crate::station::line_io::registers::RESULTS_BUFFER;
use crate::station::pipeline::SourceStatus;

/// No request from a PLC that was polling for this long is an alarm (PLCs poll every 10–100 ms).
pub const PLC_SILENCE: Duration = Duration::from_secs(3);

impl InspectorApp {
    /// Takes the line I/O the start thread brought up (or why it could not).
    pub(super) fn line_started(&mut self, line: Option<LineStation>, error: Option<String>) {
        self.line = line;
        self.plc_seen = false;
        self.plc_latched = false;
        self.mqtt_state = "online";
        if let Some(e) = &error {
            self.notify(
                Level::Error,
                format!(
                    "{e}. The station runs without line I/O: fix it in Settings › Line I/O and \
                     press Apply"
                ),
            );
        }
        self.line_error = error;
        if let Some(l) = &self.line
            && let Some(s) = &l.server
        {
            self.notify(
                Level::Info,
                format!(
                    "Modbus server on {} ({}): the PLC can connect",
                    s.local_addr(),
                    if l.triggered {
                        "one inspection per PLC trigger"
                    } else {
                        "free-run"
                    }
                ),
            );
        }
    }

    /// Restarts the station with the line I/O as Settings has it now. The old pipeline and
    /// server stop on the start thread (the UI does not wait for them).
    pub fn apply_line_settings(&mut self) {
        self.record_event(
            "line_io_changed",
            format!("{} by {}", line_words(&self.settings.line), self.operator()),
        );
        self.settings_changed();
        self.restart_station();
    }

    /// The PLC-silence alarm text, once per loss: a PLC was polling and has said nothing for
    /// [`PLC_SILENCE`] (its connection dropped, or it hangs with the socket open).
    pub(super) fn plc_alarm(&mut self) -> Option<String> {
        let line = self.line.as_ref()?;
        let addr = line.server.as_ref()?.local_addr();
        let s = line.io.status();
        let quiet = s.last_poll.map(|t| t.elapsed());
        if plc_polling(&s) {
            self.plc_seen = true;
            self.plc_latched = false;
            return None;
        }
        if !self.plc_seen || self.plc_latched {
            return None;
        }
        self.plc_latched = true;
        Some(match quiet {
            Some(q) if s.clients > 0 => format!(
                "PLC silent: no request on {addr} for {:.0} s (connection open); the line gets \
                 no verdicts",
                q.as_secs_f64()
            ),
            _ => format!(
                "PLC connection lost on {addr}: the line gets no verdicts until it reconnects"
            ),
        })
    }

    /// Keeps the retained MQTT status ("online", "paused", "no signal") in step with the
    /// station; the publisher sends a change at once and again after each reconnection.
    pub(super) fn sync_mqtt_state(&mut self) {
        let Some(m) = self.line.as_ref().and_then(|l| l.mqtt.as_ref()) else {
            return;
        };
        let state = if self.is_paused() {
            "paused"
        } else if matches!(
            self.source_status,
            Some(SourceStatus::Lost(_) | SourceStatus::Failed(_))
        ) {
            "no signal"
        } else {
            "online"
        };
        if state != self.mqtt_state {
            self.mqtt_state = state;
            m.set_state(state);
        }
    }

    /// Sends an alarm on the MQTT alarm topic (when publishing).
    pub(super) fn publish_alarm(&self, text: &str) {
        if let Some(m) = self.line.as_ref().and_then(|l| l.mqtt.as_ref()) {
            m.alarm(text);
        }
    }

    /// Stops the line I/O at exit: the server closes, then the broker gets a few seconds to
    /// acknowledge what was sent (the rest stays in the history for the next start). `commit`
    /// finishes the history writer in between, so every result is in the outbox.
    pub(super) fn finish_line(&mut self, commit: impl FnOnce()) {
        match self.line.take() {
            Some(l) => {
                if let Some(left) = l.finish(Duration::from_secs(3), commit) {
                    tracing::info!("{left}");
                }
            }
            None => commit(),
        }
    }
}

/// "Modbus on 0.0.0.0:1502 (triggered), MQTT mqtt://…": the settings in words (no secrets).
fn line_words(l: &crate::records::settings::LineSettings) -> String {
    let modbus = if l.modbus {
        format!(
            "Modbus on {} unit {} ({}, window {} ms)",
            l.listen,
            l.unit_id,
            if l.triggered { "triggered" } else { "free-run" },
            l.window_ms
        )
    } else {
        "no Modbus".into()
    };
    let mqtt = match l.mqtt_url.trim() {
        "" => "no MQTT".to_string(),
        u => format!("MQTT {u}"),
    };
    format!("line I/O: {modbus}, {mqtt}")
}

/// A PLC is connected and made a request within [`PLC_SILENCE`].
fn plc_polling(s: &LineStatus) -> bool {
    s.clients > 0 && s.last_poll.is_some_and(|t| t.elapsed() < PLC_SILENCE)
}

fn ago(t: Option<Instant>) -> String {
    match t {
        Some(t) => format!("{:.1} s ago", t.elapsed().as_secs_f64()),
        None => "never".into(),
    }
}

/// The PLC and broker state on the Inspect tab, under the banner. Nothing when line I/O is off.
pub(super) fn status(app: &InspectorApp, ui: &mut egui::Ui) {
    let bad = ui.visuals().error_fg_color;
    let warn = ui.visuals().warn_fg_color;
    let good = Color32::from_rgb(60, 170, 80);
    if let Some(e) = &app.line_error {
        ui.colored_label(bad, format!("Line I/O not started: {e}"));
    }
    let Some(line) = &app.line else { return };
    if let Some(server) = &line.server {
        let s = line.io.status();
        let (word, colour) = if plc_polling(&s) {
            ("PLC connected", good)
        } else if app.plc_seen {
            ("PLC LOST", bad)
        } else {
            ("PLC not connected", warn)
        };
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new(word).strong().size(18.0).color(colour));
            ui.label(format!(
                "{} on {} · last request {} · {} · triggers missed {} · results waiting {}/{} \
                 · fail-safe {}",
                if line.triggered {
                    "triggered"
                } else {
                    "free-run"
                },
                server.local_addr(),
                ago(s.last_poll),
                match s.clients {
                    1 => "1 connection".to_string(),
                    n => format!("{n} connections"),
                },
                s.missed,
                s.waiting,
                RESULTS_BUFFER,
                s.fail_safe
            ));
        });
        if let Some(e) = &s.store_error {
            ui.colored_label(bad, format!("results not recorded: {e}"));
        }
    }
    if let Some(m) = &line.mqtt {
        let s = m.status();
        ui.horizontal_wrapped(|ui| {
            if s.connected {
                ui.label(
                    RichText::new("Broker connected")
                        .strong()
                        .size(18.0)
                        .color(good),
                );
                ui.label(format!(
                    "{} results acknowledged · {} in flight · last acknowledgement {}",
                    s.acked,
                    s.in_flight,
                    ago(s.last_ack)
                ));
            } else {
                ui.label(
                    RichText::new("Broker not connected")
                        .strong()
                        .size(18.0)
                        .color(warn),
                );
                ui.label(format!(
                    "{} — results wait in the history and are sent when it is back",
                    s.error.as_deref().unwrap_or("connecting…")
                ));
            }
        });
    }
}

/// Settings › Line I/O. Changes take effect when Apply restarts the station.
pub(super) fn settings_section(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let l = &mut app.settings.line;
    egui::Grid::new("line-io").num_columns(2).show(ui, |ui| {
        ui.label("Trigger source");
        ui.horizontal(|ui| {
            ui.radio_value(&mut l.triggered, false, "Free-run (every frame)");
            ui.radio_value(&mut l.triggered, true, "PLC trigger (Modbus)");
        });
        ui.end_row();
        ui.label("Modbus TCP server");
        ui.checkbox(
            &mut l.modbus,
            "Serve the register map to the PLC (needed for the PLC trigger)",
        );
        ui.end_row();
        let lab = ui.label("Listen on");
        ui.add(
            egui::TextEdit::singleline(&mut l.listen)
                .desired_width(200.0)
                .id_salt("modbus-listen"),
        )
        .labelled_by(lab.id);
        ui.end_row();
        ui.label("Unit id");
        ui.add(egui::DragValue::new(&mut l.unit_id).range(1..=247));
        ui.end_row();
        ui.label("Response window");
        ui.add(
            egui::DragValue::new(&mut l.window_ms)
                .range(1..=60_000)
                .suffix(" ms"),
        )
        .on_hover_text("A trigger with no verdict within this window gets a fail-safe FAIL");
        ui.end_row();
        let lab = ui.label("MQTT broker");
        ui.add(
            egui::TextEdit::singleline(&mut l.mqtt_url)
                .hint_text("mqtt://HOST:1883/PREFIX (empty: off)")
                .desired_width(320.0)
                .id_salt("mqtt-url"),
        )
        .labelled_by(lab.id);
        ui.end_row();
        let lab = ui.label("MQTT user");
        ui.add(
            egui::TextEdit::singleline(&mut l.mqtt_user)
                .desired_width(200.0)
                .id_salt("mqtt-user"),
        )
        .labelled_by(lab.id);
        ui.end_row();
        let lab = ui.label("MQTT password");
        ui.add(
            egui::TextEdit::singleline(&mut l.mqtt_password.0)
                .password(true)
                .hint_text("this session only (or DI_MQTT_PASSWORD)")
                .desired_width(200.0)
                .id_salt("mqtt-password"),
        )
        .labelled_by(lab.id);
        ui.end_row();
    });
    if app.settings.line.triggered && !app.settings.line.modbus {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "The PLC trigger needs the Modbus server: until it is on, the station runs free.",
        );
    }
    ui.horizontal(|ui| {
        let testing = app.mqtt_test.is_some();
        if ui
            .add_enabled(
                !app.settings.line.mqtt_url.trim().is_empty() && !testing,
                egui::Button::new("Test connection"),
            )
            .clicked()
        {
            test_broker(app);
        }
        if testing {
            ui.spinner();
        }
        match &app.mqtt_test_result {
            Some(Ok(t)) => {
                ui.colored_label(Color32::from_rgb(60, 170, 80), t);
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
    });
    let pending = app.settings.line != app.line_in_use;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(
                pending,
                egui::Button::new("Apply (restarts inspection with this line I/O)"),
            )
            .clicked()
        {
            app.apply_line_settings();
        }
        if pending {
            ui.label("changed: not in use until applied");
        }
    });
    egui::CollapsingHeader::new("Register map (for the PLC program)")
        .id_salt("register-map")
        .show(ui, |ui| {
            egui::Grid::new("register-map")
                .num_columns(3)
                .striped(true)
                .show(ui, |ui| {
                    ui.label(RichText::new("table (function codes)").strong());
                    ui.label(RichText::new("address").strong());
                    ui.label(RichText::new("meaning").strong());
                    ui.end_row();
                    for (table, addr, meaning) in REGISTER_MAP {
                        ui.label(*table);
                        ui.label(*addr);
                        ui.label(*meaning);
                        ui.end_row();
                    }
                });
        });
}

/// Runs "Test connection" on its own thread; the answer comes back through a channel.
fn test_broker(app: &mut InspectorApp) {
    let config = match mqtt_config(&app.settings.line, &app.settings.station) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            app.mqtt_test_result = Some(Err(e));
            return;
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let ctx = app.ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("mqtt-test".into())
        .spawn(move || {
            let r = crate::records::mqtt::test_connection(&config, Duration::from_secs(3));
            let _ = tx.send(r);
            ctx.request_repaint();
        });
    match spawned {
        Ok(_) => {
            app.mqtt_test = Some(rx);
            app.mqtt_test_result = None;
        }
        Err(e) => app.mqtt_test_result = Some(Err(format!("cannot test: {e}"))),
    }
}

/// Takes the test's answer when it has come.
pub(super) fn poll_broker_test(app: &mut InspectorApp) {
    if let Some(rx) = &app.mqtt_test
        && let Ok(r) = rx.try_recv()
    {
        app.mqtt_test = None;
        app.mqtt_test_result = Some(r);
    }
}

/// The fixed register map, as the README has it.
const REGISTER_MAP: &[(&str, &str, &str)] = &[
    ("coils (PLC writes; 1, 5, 15)", "0", "Trigger Enable"),
    ("", "1", "Trigger (a rising edge requests one inspection)"),
    (
        "",
        "2",
        "Results Ack (a rising edge acknowledges the oldest result)",
    ),
    (
        "discrete inputs (station; 2)",
        "0",
        "Ready (a trigger would be accepted now)",
    ),
    (
        "",
        "1",
        "Trigger Ack (set when taken, cleared when Trigger goes low)",
    ),
    ("", "2", "Busy"),
    (
        "",
        "3",
        "Results Valid (the input registers hold an unacknowledged result)",
    ),
    ("", "4", "Missed Trigger (cleared by the next accepted one)"),
    (
        "",
        "5",
        "Results Buffer Overrun (more than 8 unacknowledged results)",
    ),
    ("", "6", "Error"),
    ("", "7", "Source live"),
    (
        "input registers (station; 4)",
        "0",
        "Inspection ID (u16, +1 per result, wraps)",
    ),
    ("", "1", "Verdict: 0 none, 1 PASS, 2 FAIL, 3 REVIEW"),
    ("", "2", "class index (the model's class order)"),
    ("", "3", "score × 1000"),
    (
        "",
        "4",
        "error: 0 none, 1 no verdict in time, 2 source lost, 3 model error, 4 unreadable image",
    ),
    ("", "5", "results waiting (unacknowledged)"),
    (
        "holding registers (PLC writes; 3, 6, 16)",
        "0–1",
        "part number (u32, high word first), stored with the next result",
    ),
];
