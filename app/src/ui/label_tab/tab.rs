//! The Label tab drawn: the dataset chooser, prediction with the active model, keyboard
//! labelling, classes and filters, and the thumbnail grid beside the editor.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use egui::{Color32, RichText, Sense, vec2};

use super::editor::big_view;
use super::view::{FILTERS, GRID_PAGE, LabelView, MaskEdit};
use super::worker::{Load, Loaded, Save, THUMB};
use crate::ui::InspectorApp;

pub(in crate::ui) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    let model_path = app.model.as_ref().map(|m| m.path.clone());
    let v = &mut app.label;
    v.start_threads(&ctx, &app.gpu);
    if let (Some(job), Some((tx, _))) = (v.pending_open.take(), &v.loader)
        && let Err(e) = tx.try_send(Load::Open(job.0.clone(), job.1))
    {
        // The loader is busy with thumbnails: try again next frame.
        if let crossbeam_channel::TrySendError::Full(Load::Open(root, create)) = e {
            v.pending_open = Some((root, create));
        }
    }
    // Results from the workers.
    if let Some((_, rx)) = &v.loader {
        let got: Vec<Loaded> = rx.try_iter().collect();
        for l in got {
            match l {
                Loaded::Opened(root, set) => v.opened(root, set),
                Loaded::Thumb(key, img) => {
                    v.pending.remove(&key);
                    if let Some(img) = img {
                        let t = ctx.load_texture(
                            format!("label-{key}"),
                            img,
                            egui::TextureOptions::LINEAR,
                        );
                        v.thumbs.insert(key, t);
                    }
                }
                Loaded::Full { row, image, mask } => match image {
                    Ok((img, w, h)) => {
                        let t = ctx.load_texture("label-big", img, egui::TextureOptions::LINEAR);
                        v.big = Some((row, t, w, h));
                        v.mask = Some(MaskEdit {
                            row,
                            width: w,
                            height: h,
                            data: mask.unwrap_or_else(|| vec![0; (w * h) as usize]),
                            tex: None,
                            changed: false,
                        });
                    }
                    Err(e) => v.status = format!("ERROR: cannot show this image: {e}"),
                },
                Loaded::Predictions(p) => {
                    v.predict_progress = None;
                    match p {
                        Ok((p, cancelled)) => {
                            v.status = if cancelled {
                                format!("cancelled: kept the {} images predicted so far", p.len())
                            } else {
                                format!("predicted {} images with the active model", p.len())
                            };
                            v.predictions = Some(p);
                        }
                        Err(e) => v.status = format!("ERROR: {e}"),
                    }
                }
                Loaded::PredictProgress(done, total, batch) => {
                    if let Some(p) = &mut v.predict_progress {
                        p.0 = done;
                        p.1 = total;
                        // Shown as they arrive: the grid and the editor fill while it runs.
                        v.predictions.get_or_insert_default().extend(batch);
                    }
                }
            }
        }
    }
    if let Some((_, rx)) = &v.saver
        && let Some(last) = rx.try_iter().last()
    {
        v.status = last;
    }
    // Dataset chooser.
    ui.horizontal(|ui| {
        let l = ui.label("Dataset folder");
        ui.add(
            egui::TextEdit::singleline(&mut v.folder)
                .desired_width(420.0)
                .id_salt("label-folder"),
        )
        .labelled_by(l.id);
        let near = v.folder.clone();
        app.dialogs
            .button_ui(ui, crate::ui::file_dialog::Target::LabelDataset, || {
                crate::ui::file_dialog::DialogRequest::new(
                    crate::ui::file_dialog::DialogKind::PickFolder,
                    "Dataset folder to open",
                    &near,
                )
            });
        if ui.button("Open").clicked() {
            v.open(false);
        }
        if ui.button("Create").clicked() {
            v.open(true);
        }
        if let Some(m) = &model_path
            && v.set.is_some()
            && ui.button("Predict with active model").clicked()
            && let (Some(set), Some((tx, _))) = (&v.set, &v.loader)
        {
            let rows = set
                .rows
                .iter()
                .map(|r| (r.path.clone(), set.root.join(&r.path)))
                .collect();
            let cancel = Arc::new(AtomicBool::new(false));
            if tx
                .try_send(Load::Predict {
                    model: m.clone(),
                    rows,
                    cancel: cancel.clone(),
                })
                .is_ok()
            {
                v.predict_cancel = cancel;
                v.predict_progress = Some((0, set.rows.len(), std::time::Instant::now()));
                // This run's predictions only, from its first batch on.
                v.predictions = Some(HashMap::new());
                v.status.clear();
            }
        }
        if let Some((done, total, since)) = v.predict_progress {
            let secs = since.elapsed().as_secs_f64().max(1e-3);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                format!("{:.0} s left", (total - done.min(total)) as f64 / rate)
            } else {
                "estimating…".into()
            };
            ui.label(format!(
                "predicting {done}/{total} · {rate:.1} images/s · {eta}"
            ));
            if ui.button("Cancel prediction").clicked() {
                v.predict_cancel.store(true, Ordering::Relaxed);
            }
        }
    });
    app.dialogs
        .note_ui(ui, crate::ui::file_dialog::Target::LabelDataset);
    if !v.status.is_empty() {
        let c = if v.status.starts_with("ERROR") {
            ui.visuals().error_fg_color
        } else {
            ui.visuals().text_color()
        };
        ui.colored_label(c, &v.status);
    }
    if v.set.is_none() {
        ui.label("Open a folder: a dataset with manifest.csv, one folder per class, or just images to label. \
                  Create makes a new, empty dataset.");
        return;
    }
    // Keyboard: 1–9 label, arrows move, Ctrl+Z undo (not while typing in a field).
    if !ctx.egui_wants_keyboard_input() {
        let keys = [
            egui::Key::Num1,
            egui::Key::Num2,
            egui::Key::Num3,
            egui::Key::Num4,
            egui::Key::Num5,
            egui::Key::Num6,
            egui::Key::Num7,
            egui::Key::Num8,
            egui::Key::Num9,
        ];
        // Every key of the frame, in the order pressed: three class keys typed faster than a
        // frame label three images (one each), not one.
        let actions: Vec<KeyAction> = ctx.input(|i| {
            i.events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::Key {
                        key,
                        pressed: true,
                        modifiers,
                        ..
                    } => {
                        if let Some(k) = keys.iter().position(|c| c == key) {
                            Some(KeyAction::Assign(k))
                        } else if matches!(key, egui::Key::ArrowRight | egui::Key::ArrowDown) {
                            Some(KeyAction::Step(1))
                        } else if matches!(key, egui::Key::ArrowLeft | egui::Key::ArrowUp) {
                            Some(KeyAction::Step(-1))
                        } else if modifiers.command && *key == egui::Key::Z {
                            Some(KeyAction::Undo)
                        } else {
                            None
                        }
                    }
                    _ => None,
                })
                .collect()
        });
        for a in actions {
            match a {
                KeyAction::Assign(k) => v.assign(k),
                KeyAction::Step(d) => v.step(d),
                KeyAction::Undo => v.undo(),
            }
        }
    }
    // Classes and filters.
    ui.horizontal_wrapped(|ui| {
        ui.label("Classes (keys):");
        let classes = v
            .set
            .as_ref()
            .map(|s| s.classes.clone())
            .unwrap_or_default();
        let mut clicked = None;
        for (i, c) in classes.iter().enumerate() {
            let label = if i < 9 {
                format!("{} {c}", i + 1)
            } else {
                c.clone()
            };
            if ui.button(label).clicked() {
                clicked = Some(i);
            }
        }
        if let Some(i) = clicked {
            v.assign(i);
        }
        let l = ui.label("New class");
        ui.add(
            egui::TextEdit::singleline(&mut v.new_class)
                .desired_width(120.0)
                .id_salt("new-class"),
        )
        .labelled_by(l.id);
        if ui.button("Add class").clicked()
            && let Some(set) = &mut v.set
        {
            match set.add_class(&v.new_class) {
                Ok(_) => v.new_class.clear(),
                Err(e) => v.status = format!("ERROR: {e}"),
            }
        }
    });
    ui.horizontal(|ui| {
        egui::ComboBox::from_label("show")
            .selected_text(FILTERS[v.filter])
            .show_ui(ui, |ui| {
                for (i, f) in FILTERS.iter().enumerate() {
                    ui.selectable_value(&mut v.filter, i, *f);
                }
            });
        if v.filter == 2 {
            let classes = v
                .set
                .as_ref()
                .map(|s| s.classes.clone())
                .unwrap_or_default();
            egui::ComboBox::from_id_salt("filter-class")
                .selected_text(v.filter_class.clone())
                .show_ui(ui, |ui| {
                    for c in classes {
                        ui.selectable_value(&mut v.filter_class, c.clone(), c);
                    }
                });
        }
        if v.filter == 3 {
            ui.add(
                egui::TextEdit::singleline(&mut v.filter_split)
                    .desired_width(80.0)
                    .id_salt("filter-split"),
            );
        }
        if v.filter == 4 && v.predictions.is_none() {
            ui.label("press \"Predict with active model\" first");
        }
    });
    let visible = v.visible();
    v.keep_selection_visible(&visible);
    egui::Panel::left("label-grid")
        .resizable(false)
        .exact_size(440.0)
        .show(ui, |ui| grid(v, ui, &visible));
    egui::CentralPanel::default().show(ui, |ui| big_view(v, ui));
    if let Some(row) = v.toggle_checked.take()
        && let Some(set) = &mut v.set
        && let Some(path) = set.rows.get(row).map(|r| r.path.clone())
    {
        if !set.checked.remove(&path) {
            set.checked.insert(path);
        }
        let job = Save::Checked(set.root.clone(), set.checked.clone());
        v.save(job);
    }
}

fn grid(v: &mut LabelView, ui: &mut egui::Ui, visible: &[usize]) {
    let pages = visible.len().div_ceil(GRID_PAGE).max(1);
    v.page = v.page.min(pages - 1);
    ui.horizontal(|ui| {
        ui.label(format!(
            "{} images · page {} of {pages}",
            visible.len(),
            v.page + 1
        ));
        if ui
            .add_enabled(v.page > 0, egui::Button::new("Previous page"))
            .clicked()
        {
            v.page -= 1;
        }
        if ui
            .add_enabled(v.page + 1 < pages, egui::Button::new("Next page"))
            .clicked()
        {
            v.page += 1;
        }
    });
    let Some(set) = &v.set else { return };
    let mut clicked = None;
    let mut wanted = Vec::new();
    let cols = ((ui.available_width() / (THUMB as f32 + 14.0)) as usize).max(1);
    egui::ScrollArea::vertical()
        .id_salt("label-grid-scroll")
        .show(ui, |ui| {
            egui::Grid::new("label-thumbs")
                .spacing(vec2(4.0, 4.0))
                .show(ui, |ui| {
                    for (k, &i) in visible
                        .iter()
                        .skip(v.page * GRID_PAGE)
                        .take(GRID_PAGE)
                        .enumerate()
                    {
                        let r = &set.rows[i];
                        let selected = Some(i) == v.selected;
                        let frame = egui::Frame::new()
                            .stroke(if selected {
                                egui::Stroke::new(3.0, Color32::from_rgb(0, 160, 255))
                            } else {
                                egui::Stroke::new(1.0, Color32::GRAY)
                            })
                            .inner_margin(2.0);
                        let resp = frame
                            .show(ui, |ui| {
                                ui.vertical(|ui| {
                                    ui.set_width(THUMB as f32);
                                    match v.thumbs.get(&r.path) {
                                        Some(t) => {
                                            ui.add(
                                                egui::Image::new(t)
                                                    .max_size(vec2(THUMB as f32, THUMB as f32)),
                                            );
                                        }
                                        None => {
                                            ui.allocate_space(vec2(THUMB as f32, THUMB as f32));
                                            if !v.pending.contains(&r.path) {
                                                wanted
                                                    .push((r.path.clone(), set.root.join(&r.path)));
                                            }
                                        }
                                    }
                                    let text =
                                        r.label.clone().unwrap_or_else(|| "unlabelled".into());
                                    ui.label(RichText::new(text).size(11.0));
                                })
                            })
                            .response
                            .interact(Sense::click());
                        if resp.clicked() {
                            clicked = Some(i);
                        }
                        if (k + 1) % cols == 0 {
                            ui.end_row();
                        }
                    }
                });
        });
    if let Some((tx, _)) = &v.loader {
        for (key, p) in wanted {
            if tx.try_send(Load::Thumb(key.clone(), p)).is_ok() {
                v.pending.insert(key);
            }
        }
    }
    if let Some(i) = clicked {
        v.flush_mask();
        v.selected = Some(i);
    }
}

/// A key of the Label tab, in the order pressed.
enum KeyAction {
    /// Label with class index.
    Assign(usize),
    /// Move the selection.
    Step(isize),
    /// Undo the last label or mask.
    Undo,
}
