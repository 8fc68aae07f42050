//! The Settings tab: source (demo, folder, camera, synthetic), model (hot swap), threshold,
//! region of interest, operator and station, theme, line I/O, plant database, history and
//! alarm options.

use std::path::PathBuf;

use egui::RichText;

use super::file_dialog::{DialogKind, DialogRequest, Target};
use super::source_draft::{KINDS, RESOLUTIONS};
use super::{InspectorApp, Level};

pub(super) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.heading("Source");
        source(app, ui);
        ui.separator();
        ui.heading("Model");
        model(app, ui);
        ui.separator();
        ui.heading("Threshold");
        threshold(app, ui);
        ui.separator();
        ui.heading("Region of interest");
        ui.horizontal(|ui| {
            match app.settings.roi {
                Some([x, y, w, h]) => ui.label(format!("x {x}, y {y}, {w} × {h} pixels")),
                None => ui.label("whole frame"),
            };
            if ui.button("Draw on the live view").clicked() {
                app.set_roi_edit(true);
                app.tab = super::Tab::Inspect;
            }
            if app.settings.roi.is_some() && ui.button("Clear").clicked() {
                app.set_roi(None);
            }
        });
        ui.separator();
        ui.heading("Station");
        egui::Grid::new("station").num_columns(2).show(ui, |ui| {
            ui.label("Operator");
            ui.add(egui::TextEdit::singleline(&mut app.settings.operator).id_salt("operator"));
            ui.end_row();
            ui.label("Station name");
            ui.add(egui::TextEdit::singleline(&mut app.settings.station).id_salt("station"));
            ui.end_row();
            ui.label("Theme");
            ui.horizontal(|ui| {
                let before = app.settings.dark;
                ui.radio_value(&mut app.settings.dark, true, "Dark");
                ui.radio_value(&mut app.settings.dark, false, "Light");
                if before != app.settings.dark {
                    ui.ctx().set_theme(if app.settings.dark {
                        egui::Theme::Dark
                    } else {
                        egui::Theme::Light
                    });
                }
            });
            ui.end_row();
        });
        ui.separator();
        ui.heading("Line I/O");
        super::line_panel::settings_section(app, ui);
        ui.separator();
        ui.heading("History and alarms");
        egui::Grid::new("history-settings")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("Database");
                ui.vertical(|ui| {
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::TextEdit::singleline(&mut app.db_path_input)
                                .desired_width(420.0)
                                .id_salt("db-path"),
                        )
                        .labelled_by(l.id);
                        let near = app.db_path_input.clone();
                        app.dialogs.button_ui(ui, Target::Database, || {
                            DialogRequest::new(DialogKind::OpenFile, "History database", &near)
                                .filter("SQLite database", &["sqlite", "db", "sqlite3"])
                        });
                        if ui.button("Use this database").clicked() {
                            use_database(app);
                        }
                    });
                    ui.label(format!("in use: {}", app.db_path().display()));
                    let next = app.db_path_next_start();
                    if next != app.db_path() {
                        ui.label(format!("from the next start: {}", next.display()));
                    }
                    app.dialogs.note_ui(ui, Target::Database);
                });
                ui.end_row();
                ui.label("Archived PASS sample");
                let mut pct = app.settings.pass_sample * 100.0;
                if ui
                    .add(egui::Slider::new(&mut pct, 0.0..=100.0).suffix(" %"))
                    .changed()
                {
                    app.settings.pass_sample = pct / 100.0;
                }
                ui.end_row();
                ui.label("Archive disk budget");
                ui.add(
                    egui::DragValue::new(&mut app.settings.archive_budget_mib)
                        .range(16..=1_000_000)
                        .suffix(" MiB"),
                );
                ui.end_row();
                ui.label("Alarm after consecutive FAILs");
                ui.add(
                    egui::DragValue::new(&mut app.settings.alarm_consecutive_fails).range(0..=1000),
                );
                ui.end_row();
                ui.label("Reject-rate alarm window");
                ui.add(
                    egui::DragValue::new(&mut app.settings.alarm_window)
                        .range(10..=500)
                        .suffix(" parts"),
                );
                ui.end_row();
                ui.label("Alarm when REVIEW exceeds (of that window)");
                ui.add(
                    egui::DragValue::new(&mut app.settings.alarm_review_percent)
                        .range(0.0..=100.0)
                        .suffix(" %"),
                )
                .on_hover_text("0 = off");
                ui.end_row();
            });
        ui.label("Database, sample and budget changes apply at the next start.");
        ui.separator();
        ui.heading("Plant database");
        super::plant_panel::settings_section(app, ui);
    });
}

fn source(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let d = &mut app.source_draft;
    ui.horizontal(|ui| {
        for (i, k) in KINDS.iter().enumerate() {
            ui.radio_value(&mut d.kind, i, *k);
        }
    });
    let mut refresh = false;
    match d.kind {
        0 => {
            ui.label("The bundled magnetic-tile demo images, looping.");
        }
        1 => {
            ui.horizontal(|ui| {
                let l = ui.label("Folder");
                ui.add(
                    egui::TextEdit::singleline(&mut d.folder)
                        .desired_width(420.0)
                        .hint_text("/path/to/images")
                        .id_salt("folder"),
                )
                .labelled_by(l.id);
                let near = d.folder.clone();
                app.dialogs.button_ui(ui, Target::SourceFolder, || {
                    DialogRequest::new(DialogKind::PickFolder, "Folder of images to replay", &near)
                });
                ui.checkbox(&mut d.looping, "loop");
            });
            app.dialogs.note_ui(ui, Target::SourceFolder);
        }
        2 => {
            ui.horizontal(|ui| {
                ui.label("Camera");
                match &app.camera_list {
                    Some(Ok(list)) if !list.is_empty() => {
                        egui::ComboBox::from_id_salt("camera")
                            .selected_text(format!("camera {}", d.camera))
                            .show_ui(ui, |ui| {
                                for (i, c) in list.iter().enumerate() {
                                    let idx = c.index.parse().unwrap_or(i as u32);
                                    ui.selectable_value(
                                        &mut d.camera,
                                        idx,
                                        format!("{}: {}", c.index, c.name),
                                    );
                                }
                            });
                    }
                    Some(Ok(_)) => {
                        ui.label("no cameras found — plug one in and press Refresh");
                    }
                    Some(Err(e)) => {
                        ui.colored_label(ui.visuals().error_fg_color, e);
                    }
                    None => {
                        ui.label("press Refresh to list cameras");
                    }
                }
                refresh = ui.button("Refresh").clicked();
            });
            ui.horizontal(|ui| {
                ui.label("Resolution");
                egui::ComboBox::from_id_salt("resolution")
                    .selected_text(RESOLUTIONS[d.resolution].0)
                    .show_ui(ui, |ui| {
                        for (i, r) in RESOLUTIONS.iter().enumerate() {
                            ui.selectable_value(&mut d.resolution, i, r.0);
                        }
                    });
                ui.label("Frame rate");
                ui.add(egui::DragValue::new(&mut d.camera_fps).range(1..=240));
            });
        }
        _ => {
            ui.horizontal(|ui| {
                ui.label("Frame size");
                ui.add(egui::DragValue::new(&mut d.synthetic_size).range(32..=4096));
            });
        }
    }
    ui.horizontal(|ui| {
        ui.label("Replay rate (folder, demo, synthetic)");
        ui.add(
            egui::Slider::new(&mut app.settings.replay_fps, 0.2..=60.0)
                .logarithmic(true)
                .suffix(" fps"),
        );
    });
    if refresh {
        app.refresh_cameras();
    }
    if ui.button(RichText::new("Apply source").strong()).clicked() {
        match app.source_draft.spec() {
            Ok(s) => {
                app.set_source(s);
                app.tab = super::Tab::Inspect;
            }
            Err(e) => app.notify(Level::Warning, e),
        }
    }
}

fn model(app: &mut InspectorApp, ui: &mut egui::Ui) {
    if let Some(m) = &app.model {
        // The threshold the station applies, not the model file's (they differ when one was
        // set by hand or kept on activation).
        ui.label(format!(
            "In use: {} — {} — input {} — classes {} (PASS: {}) — threshold {}",
            m.id,
            m.path.display(),
            m.input,
            m.classes.join(", "),
            m.pass_classes.join(", "),
            app.threshold_words()
        ));
    }
    ui.horizontal(|ui| {
        let label = ui.label("Model file");
        ui.add(
            egui::TextEdit::singleline(&mut app.model_path_input)
                .desired_width(480.0)
                .id_salt("model-path"),
        )
        .labelled_by(label.id);
        let near = app.model_path_input.clone();
        app.dialogs.button_ui(ui, Target::SettingsModel, || {
            DialogRequest::new(DialogKind::OpenFile, "Model file", &near)
                .filter("Model (.safetensors)", &["safetensors"])
        });
        if ui
            .button("Models nearby")
            .on_hover_text(
                "list the .safetensors files next to the typed path and the bundled ones",
            )
            .clicked()
        {
            // Folder listing is disk work (a network share can take seconds): a helper thread
            // does it and the result shows up when it is ready.
            let (tx, rx) = crossbeam_channel::bounded(1);
            let current = app.model_path_input.clone();
            std::thread::spawn(move || {
                let _ = tx.send(list_models(&current));
            });
            app.model_choices_rx = Some(rx);
        }
        if ui.button(RichText::new("Load model").strong()).clicked() {
            let p = PathBuf::from(app.model_path_input.trim());
            app.load_model(p);
        }
    });
    app.dialogs.note_ui(ui, Target::SettingsModel);
    if let Some(e) = &app.model_error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    if let Some(rx) = &app.model_choices_rx {
        match rx.try_recv() {
            Ok(list) => {
                app.model_choices = Some(list);
                app.model_choices_rx = None;
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {
                ui.label("listing model files…");
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(50));
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => app.model_choices_rx = None,
        }
    }
    if let Some(choices) = app.model_choices.clone() {
        ui.group(|ui| {
            if choices.is_empty() {
                ui.label("no .safetensors files in that folder or in assets/models");
            }
            for c in choices {
                if ui.link(c.display().to_string()).clicked() {
                    app.model_path_input = c.display().to_string();
                    app.model_choices = None;
                }
            }
        });
    }
}

/// "Use this database": the typed path becomes the history database from the next start.
fn use_database(app: &mut InspectorApp) {
    let typed = app.db_path_input.trim();
    if typed.is_empty() {
        app.notify(
            Level::Warning,
            "type the history database file (an existing one, or a new name to create) or press Browse…",
        );
        return;
    }
    if typed.ends_with('/') || typed.ends_with(std::path::MAIN_SEPARATOR) {
        app.notify(
            Level::Warning,
            format!(
                "{typed} is a folder: the history database is a file, e.g. {typed}history.sqlite"
            ),
        );
        return;
    }
    let path = std::path::absolute(typed).unwrap_or_else(|_| PathBuf::from(typed));
    app.db_path_input = path.display().to_string();
    if app.settings.db_path.as_ref() == Some(&path) {
        app.notify(Level::Info, format!("already chosen: {}", path.display()));
        return;
    }
    app.settings.db_path = Some(path.clone());
    app.settings_changed();
    app.notify(
        Level::Info,
        format!(
            "history database chosen: it is used from the next start (created if it does not exist) — {}",
            path.display()
        ),
    );
}

/// `.safetensors` files in the folder of `current` and in the bundled models folder.
fn list_models(current: &str) -> Vec<PathBuf> {
    let mut dirs = vec![crate::data::assets::bundled("assets/models")];
    let p = PathBuf::from(current.trim());
    if p.is_dir() {
        dirs.push(p);
    } else if let Some(parent) = p.parent() {
        dirs.push(parent.to_path_buf());
    }
    let mut out: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn threshold(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let model_t = app.model.as_ref().map(|m| m.threshold).unwrap_or(0.5);
    let mut own = app.settings.threshold.is_none();
    // While the slider is dragged its value waits here: the station applies it (and the
    // settings say so) only when the pointer lets go.
    let drag_id = ui.scope_id().with("threshold-drag");
    let dragging: Option<f32> = ui.data(|d| d.get_temp(drag_id));
    let mut t = dragging.unwrap_or(app.settings.threshold.unwrap_or(model_t));
    ui.label(format!("Threshold in force: {}", app.threshold_words()));
    ui.horizontal(|ui| {
        let before = own;
        ui.checkbox(
            &mut own,
            format!("use the model's threshold ({model_t:.3})"),
        );
        if own != before {
            app.set_threshold(if own { None } else { Some(t) });
        }
    });
    let mut band = app.settings.review_band;
    if ui
        .checkbox(
            &mut band,
            "Review band: parts the model is unsure of go to REVIEW (a person decides)",
        )
        .changed()
    {
        app.set_review_band(band);
    }
    ui.label(format!("Review band in force: {}", app.review_band_words()));
    if !own {
        let r = ui.add(egui::Slider::new(&mut t, 0.0..=1.0).text("FAIL when score >="));
        // Applied and logged once, when the operator lets go of the slider.
        if r.drag_stopped() || (r.changed() && !r.dragged()) {
            ui.data_mut(|d| d.remove::<f32>(drag_id));
            app.set_threshold(Some(t));
        } else if r.changed() || dragging.is_some() && r.dragged() {
            ui.data_mut(|d| d.insert_temp(drag_id, t));
        }
        if r.dragged() {
            ui.label(format!("{t:.3} applies when you let go"));
        } else if dragging.is_some() && !r.dragged() {
            ui.data_mut(|d| d.remove::<f32>(drag_id));
        }
    }
}
