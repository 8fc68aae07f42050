//! The plant database in the app: the forwarder's state on the Inspect tab (connected or not,
//! forwarded up to when, records waiting), the backlog alarm, and Settings › Plant database
//! (URL, password for this session, line, alarm limit, Test connection, Apply). The forwarder
//! itself is [`crate::records::plant::Forwarder`]'s thread; this module starts and stops it on
//! a helper thread and reads its snapshots (a mutex held for a copy, never the network).

use std::time::Duration;

use crossbeam_channel::bounded;
use egui::{Color32, RichText};

use super::state::*;
use crate::records::plant::{Forwarder, ForwarderOptions, PlantStore, PlantUrl, split_password};

impl InspectorApp {
    /// (Re)starts forwarding as Settings › Plant database has it: the old forwarder gets a
    /// moment to send what waits, then the new one starts, on a helper thread (the UI never
    /// waits on the network or the disk). Needs the history writer's database.
    pub(super) fn start_plant(&mut self) {
        if self.plant.starting.is_some() {
            self.notify(
                Level::Warning,
                "the plant forwarder is still starting: press Apply again in a moment",
            );
            return;
        }
        let old = self.plant.forwarder.take();
        self.plant.in_use = self.settings.plant.clone();
        self.plant.error = None;
        self.plant.alarm_latched = false;
        let url = match PlantUrl::from_settings(&self.settings.plant) {
            Ok(u) => u,
            Err(e) => {
                self.plant.error = Some(e.clone());
                self.notify(
                    Level::Error,
                    format!("{e}. Records are kept in the station's history; fix the URL in Settings › Plant database"),
                );
                None
            }
        };
        let db = self.db_path();
        let mut options = ForwarderOptions::new(&self.settings.station, &self.settings.plant.line);
        options.backlog_alarm = self.settings.plant.backlog_alarm.max(1);
        let ctx = self.ctx.clone();
        let (tx, rx) = bounded(1);
        let spawned = std::thread::Builder::new()
            .name("plant-start".into())
            .spawn(move || {
                if let Some(f) = old {
                    let left = f.finish(Duration::from_secs(2));
                    if left > 0 {
                        tracing::info!("{left} records wait for the plant database");
                    }
                }
                let started = match url {
                    Some(url) => Forwarder::start(&db, url, options)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    None => Ok(None),
                };
                let _ = tx.send(started);
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.plant.starting = Some(rx),
            Err(e) => self.plant.error = Some(format!("cannot start the plant forwarder: {e}")),
        }
    }

    /// Takes what the helper threads answered (the forwarder, the connection test).
    pub(super) fn poll_plant(&mut self) {
        if let Some(rx) = &self.plant.starting
            && let Ok(r) = rx.try_recv()
        {
            self.plant.starting = None;
            match r {
                Ok(Some(f)) => {
                    let url = f.status().url;
                    self.notify(
                        Level::Info,
                        format!(
                            "forwarding this station's records to the plant database {url} as \
                             {} on {}",
                            self.settings.station,
                            self.plant.in_use.line.trim()
                        ),
                    );
                    self.plant.forwarder = Some(f);
                }
                Ok(None) => {}
                Err(e) => {
                    self.notify(
                        Level::Error,
                        format!("{e}. Records are kept in the station's history"),
                    );
                    self.plant.error = Some(e);
                }
            }
        }
        if let Some(rx) = &self.plant.test
            && let Ok(r) = rx.try_recv()
        {
            self.plant.test = None;
            self.plant.test_result = Some(r);
        }
    }

    /// The backlog alarm text, once each time the records waiting pass the limit.
    pub(super) fn plant_alarm(&mut self) -> Option<String> {
        let s = self.plant.forwarder.as_ref()?.status();
        if !s.backlog_alarm {
            self.plant.alarm_latched = false;
            return None;
        }
        if self.plant.alarm_latched {
            return None;
        }
        self.plant.alarm_latched = true;
        Some(format!(
            "{} records wait for the plant database {} (limit {}){}; they are safe in the \
             station's history",
            s.backlog.total(),
            s.url,
            self.plant.in_use.backlog_alarm,
            s.error
                .map(|e| format!(": {e}"))
                .unwrap_or_else(|| ": it is not keeping up".into())
        ))
    }

    /// Applies Settings › Plant database: recorded as an event, saved, forwarder restarted.
    pub fn apply_plant_settings(&mut self) {
        let p = &self.settings.plant;
        let words = if p.url.trim().is_empty() {
            "plant database: off".to_string()
        } else {
            format!(
                "plant database {} on line {} (alarm beyond {} waiting)",
                p.url.trim(),
                p.line.trim(),
                p.backlog_alarm
            )
        };
        self.record_event(
            "plant_db_changed",
            format!("{words} by {}", self.operator()),
        );
        self.settings_changed();
        self.start_plant();
    }

    /// At exit, after the history writer finished: a few seconds to send what waits.
    pub(super) fn finish_plant(&mut self) {
        if let Some(f) = self.plant.forwarder.take() {
            let left = f.finish(Duration::from_secs(3));
            if left > 0 {
                tracing::info!(
                    "{left} records wait for the plant database; they are sent at the next start"
                );
            }
        }
    }
}

/// The forwarder's state on the Inspect tab, under the line I/O. Nothing when it is off.
pub(super) fn status(app: &InspectorApp, ui: &mut egui::Ui) {
    let bad = ui.visuals().error_fg_color;
    let warn = ui.visuals().warn_fg_color;
    let good = Color32::from_rgb(60, 170, 80);
    if let Some(e) = &app.plant.error {
        ui.colored_label(bad, format!("Plant database not in use: {e}"));
    }
    let Some(f) = &app.plant.forwarder else {
        return;
    };
    let s = f.status();
    let waiting = s.backlog.total();
    let upto = s
        .forwarded_upto
        .as_deref()
        .map(super::history_tab::local_time)
        .unwrap_or_else(|| "nothing yet".into());
    ui.horizontal_wrapped(|ui| {
        if s.connected {
            ui.label(
                RichText::new("Plant DB connected")
                    .strong()
                    .size(18.0)
                    .color(good),
            );
            ui.label(format!(
                "forwarded up to {upto} · {waiting} waiting · {} sent this run",
                s.forwarded.total()
            ));
        } else {
            ui.label(
                RichText::new("Plant DB not connected")
                    .strong()
                    .size(18.0)
                    .color(warn),
            );
            ui.label(format!(
                "{} — {waiting} records wait in the history and are sent when it is back \
                 (forwarded up to {upto})",
                s.error.as_deref().unwrap_or("connecting…")
            ));
        }
    });
    if s.backlog_alarm {
        ui.colored_label(
            bad,
            format!(
                "Plant backlog over its limit: {waiting} waiting (limit {})",
                app.plant.in_use.backlog_alarm
            ),
        );
    }
}

/// Settings › Plant database. Changes take effect when Apply restarts the forwarder.
pub(super) fn settings_section(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let p = &mut app.settings.plant;
    egui::Grid::new("plant-db").num_columns(2).show(ui, |ui| {
        let lab = ui.label("Plant database");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut p.url)
                    .hint_text("postgres://USER@HOST:5432/DATABASE (empty: off)")
                    .desired_width(360.0)
                    .id_salt("plant-url"),
            )
            .labelled_by(lab.id);
        // A password typed into the URL goes to the password field: never saved, never shown.
        if edit.changed()
            && let Some((url, pw)) = split_password(p.url.trim())
        {
            p.url = url;
            p.password.0 = pw;
        }
        ui.end_row();
        let lab = ui.label("Password");
        ui.add(
            egui::TextEdit::singleline(&mut p.password.0)
                .password(true)
                .hint_text("this session only (else DI_PLANT_PASSWORD)")
                .desired_width(240.0)
                .id_salt("plant-password"),
        )
        .labelled_by(lab.id);
        ui.end_row();
        let lab = ui.label("Line");
        ui.add(
            egui::TextEdit::singleline(&mut p.line)
                .desired_width(160.0)
                .id_salt("plant-line"),
        )
        .labelled_by(lab.id);
        ui.end_row();
        ui.label("Backlog alarm");
        ui.add(
            egui::DragValue::new(&mut p.backlog_alarm)
                .range(1..=10_000_000)
                .suffix(" records waiting"),
        )
        .on_hover_text("Alarm when more records than this wait for the plant database");
        ui.end_row();
    });
    ui.label(
        RichText::new(format!(
            "Forwarded as station \"{}\" (Settings › Station). Every record is kept in this \
             station's history first and sent when the server acknowledges it; nothing is lost \
             while the network or the server is down.",
            app.settings.station
        ))
        .small(),
    );
    ui.horizontal(|ui| {
        let changed = app.settings.plant != app.plant.in_use;
        if ui
            .add_enabled(
                changed && app.plant.starting.is_none(),
                egui::Button::new("Apply"),
            )
            .on_hover_text("restart forwarding with these settings")
            .clicked()
        {
            app.apply_plant_settings();
        }
        let testing = app.plant.test.is_some();
        if ui
            .add_enabled(
                !testing && !app.settings.plant.url.trim().is_empty(),
                egui::Button::new("Test the plant connection"),
            )
            .clicked()
        {
            app.plant.test_result = None;
            match PlantUrl::from_settings(&app.settings.plant) {
                Ok(Some(url)) => {
                    let (tx, rx) = bounded(1);
                    let ctx = ui.ctx().clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name("plant-test".into())
                            .spawn(move || {
                                let r = test_connection(&url);
                                let _ = tx.send(r);
                                ctx.request_repaint();
                            });
                    if spawned.is_ok() {
                        app.plant.test = Some(rx);
                    }
                }
                Ok(None) => {}
                Err(e) => app.plant.test_result = Some(Err(e)),
            }
        }
        if testing {
            ui.spinner();
        }
    });
    match &app.plant.test_result {
        Some(Ok(s)) => {
            ui.colored_label(Color32::from_rgb(60, 170, 80), s);
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        None => {}
    }
}

/// Connects as the station would (the schema is created or migrated) and says what is there.
fn test_connection(url: &PlantUrl) -> Result<String, String> {
    let mut store = PlantStore::open(url).map_err(|e| e.to_string())?;
    let stations = store.distinct("station_id").map_err(|e| e.to_string())?;
    Ok(format!(
        "connected to {}: {} station{} forwarding so far",
        url.redacted(),
        stations.len(),
        if stations.len() == 1 { "" } else { "s" }
    ))
}
