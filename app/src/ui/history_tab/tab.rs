//! The History tab drawn: which records (this station or the plant database), replies from the
//! worker, the filter bar, the refresh, export, paging, the table beside the open row's details
//! and the charts, and what the buttons do (send a frame to the Label tab, confirm or override
//! a verdict: through the station's writer, or in the plant database by the worker).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui::{Color32, RichText, vec2};

use super::charts::{charts, station_chart};
use super::details::{details, local_time};
use super::query::{PAGE, Reply, Request, export_file_name};
use super::view::{HistoryView, RANGES};
use crate::records::history::{self, Filter, InspectionRow};
use crate::records::plant::PlantUrl;
use crate::records::plant::read::RecordsLocation;
use crate::ui::{InspectorApp, Level};

pub(in crate::ui) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let db = app.db_path();
    let ctx = ui.ctx().clone();
    let shift = app.counters.since;
    // Which records: this station's history, or the plant database of Settings.
    ui.horizontal(|ui| {
        let l = ui.label("Records");
        ui.radio_value(&mut app.history.plant, false, "This station")
            .labelled_by(l.id);
        ui.radio_value(
            &mut app.history.plant,
            true,
            "Plant database (all stations)",
        )
        .on_hover_text("the PostgreSQL database of Settings › Plant database");
    });
    let at = if app.history.plant {
        match PlantUrl::from_settings(&app.settings.plant) {
            Ok(Some(u)) => Ok(RecordsLocation::Plant(u)),
            Ok(None) => Err(
                "no plant database is set: enter its URL in Settings › Plant database".to_string(),
            ),
            Err(e) => Err(e),
        }
    } else {
        Ok(RecordsLocation::File(db.clone()))
    };
    let at = match at {
        Ok(at) => at,
        Err(e) => {
            ui.colored_label(ui.visuals().warn_fg_color, e);
            return;
        }
    };
    let plant = app.history.plant;
    let h = &mut app.history;
    h.ensure_worker(&at, &ctx);
    // Replies.
    let replies: Vec<Reply> = h
        .worker
        .as_ref()
        .map(|w| w.rx.try_iter().collect())
        .unwrap_or_default();
    for r in replies {
        match r {
            Reply::Page(p) => {
                h.pending = false;
                h.error = None;
                h.receive(*p, &ctx);
            }
            Reply::Detail(id, img, heat) => {
                let opts = egui::TextureOptions::LINEAR;
                h.detail_dims = img.as_ref().map(|i| (i.1, i.2)).unwrap_or((0, 0));
                h.detail = Some((
                    id,
                    img.map(|i| ctx.load_texture("hist-detail", i.0, opts)),
                    heat.map(|i| ctx.load_texture("hist-detail-heat", i, opts)),
                ));
            }
            Reply::Exported(r) => h.exported = Some(r),
            Reply::Overridden(r) => {
                h.plant_override = Some(r);
                h.last_refresh = None;
            }
            Reply::Error(e) => {
                h.pending = false;
                h.error = Some(e);
            }
        }
    }
    // Filters.
    filter_bar(h, ui);
    let filter = match h.filter(shift) {
        Ok(f) => Some(f),
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
            None
        }
    };
    // Ask again when the filter or page changed, and every few seconds (new verdicts arrive).
    if let Some(f) = &filter {
        let changed = h
            .requested
            .as_ref()
            .is_none_or(|(rf, rp, rs)| !same_filter(rf, f) || *rp != h.page || *rs != h.split);
        let stale = h
            .last_refresh
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3));
        if !h.pending
            && (changed || stale)
            && h.send(Request::Page {
                filter: f.clone(),
                page: h.page,
                split: h.split,
            })
        {
            h.pending = true;
            h.requested = Some((f.clone(), h.page, h.split));
            h.requested_key = h.controls_key();
            h.last_refresh = Some(Instant::now());
        }
    }
    if let Some(e) = &h.error {
        ui.colored_label(ui.visuals().warn_fg_color, e);
    }
    // Export.
    // Export: the save dialog asks where (proposing a dated name in the documents folder); the
    // typed path is the way when no dialog can be shown.
    let today = chrono::Local::now().date_naive();
    let mut export_now = std::mem::take(&mut h.export_requested);
    ui.horizontal(|ui| {
        let near = h.export_path.clone();
        if ui
            .add_enabled(
                app.dialogs.open().is_none(),
                egui::Button::new("Export CSV…"),
            )
            .on_hover_text("choose where to save the rows the filters select")
            .clicked()
        {
            let req = crate::ui::file_dialog::DialogRequest::new(
                crate::ui::file_dialog::DialogKind::SaveFile,
                "Export the history as CSV",
                &near,
            )
            .filter("CSV", &["csv"])
            .file_name(&export_file_name(today));
            app.dialogs
                .request(crate::ui::file_dialog::Target::CsvExport, req, &ctx);
        }
        let l = ui.label("or type the CSV file");
        ui.add(
            egui::TextEdit::singleline(&mut h.export_path)
                .desired_width(300.0)
                .hint_text(format!(
                    "{} (in Documents, else home)",
                    export_file_name(today)
                ))
                .id_salt("export-path"),
        )
        .labelled_by(l.id);
        export_now |= ui.button("Export to this path").clicked();
    });
    app.dialogs
        .note_ui(ui, crate::ui::file_dialog::Target::CsvExport);
    if export_now {
        match filter.clone() {
            Some(f) => {
                let path = PathBuf::from(h.export_path.trim());
                h.exported = None;
                if !h.send(Request::Export { filter: f, path }) {
                    h.exported = Some(Err(
                        "the history worker is busy: press Export again in a moment".into(),
                    ));
                }
            }
            None => {
                h.exported = Some(Err(
                    "nothing exported: correct the filter above first".into()
                ))
            }
        }
    }
    match &h.exported {
        Some(Ok((p, n))) => {
            ui.label(format!("exported {n} rows to {}", p.display()));
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        None => {}
    }
    let Some(res) = &h.result else {
        ui.spinner();
        return;
    };
    let pages = res.total.div_ceil(PAGE).max(1);
    ui.horizontal(|ui| {
        ui.label(format!(
            "{} matching rows · page {} of {pages} · query {:.0} ms",
            res.total,
            res.page + 1,
            res.took_ms
        ));
        if ui
            .add_enabled(h.page > 0, egui::Button::new("Newer"))
            .clicked()
        {
            h.page -= 1;
        }
        if ui
            .add_enabled(h.page + 1 < pages, egui::Button::new("Older"))
            .clicked()
        {
            h.page += 1;
        }
    });
    let mut show_new = false;
    if let Some(inc) = &h.incoming {
        let n = inc.total.saturating_sub(res.total);
        let text = if n > 0 {
            format!("{n} new — show")
        } else {
            "the table has changed — show".to_string()
        };
        show_new = ui
            .button(RichText::new(text).strong())
            .on_hover_text(
                "new verdicts are held back so that rows do not move while you read or click",
            )
            .clicked();
    }
    let selected_id = h.selected.as_ref().map(|s| s.id);
    let mut open = None;
    let mut override_req = None;
    let mut send = false;
    let can_send = app.label.set.is_some();
    let mut open_label = false;
    egui::Panel::right("history-charts")
        .resizable(false)
        .exact_size(420.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("charts")
                .show(ui, |ui| {
                    // The open row's details come first, beside the table, above the charts.
                    if let Some(sel) = &h.selected {
                        if plant {
                            ui.label(match &sel.image_path {
                                Some(p) => format!(
                                    "The full-size frame is on station {} (archive/{p}); the \
                                     plant keeps a thumbnail of rejects.",
                                    sel.station
                                ),
                                None => format!(
                                    "Station {} archived no frame of this part.",
                                    sel.station
                                ),
                            });
                        } else if ui
                            .add_enabled(
                                sel.image_path.is_some(),
                                egui::Button::new("Send to the Label tab's dataset"),
                            )
                            .on_disabled_hover_text("only archived frames can be sent")
                            .clicked()
                        {
                            if can_send {
                                send = true;
                            } else {
                                h.needs_dataset = true;
                            }
                        }
                        if h.needs_dataset && !can_send {
                            ui.horizontal_wrapped(|ui| {
                                ui.label(
                                    RichText::new("No dataset is open in the Label tab.")
                                        .color(ui.visuals().warn_fg_color),
                                );
                                if ui.button("Open one in the Label tab").clicked() {
                                    open_label = true;
                                }
                            });
                        }
                        override_req =
                            details(ui, sel, h.detail.as_ref(), h.detail_dims, &mut h.reason);
                        match &h.plant_override {
                            Some(Ok(s)) => {
                                ui.label(s);
                            }
                            Some(Err(e)) => {
                                ui.colored_label(ui.visuals().error_fg_color, e);
                            }
                            None => {}
                        }
                        ui.separator();
                    }
                    charts(ui, res);
                    if !res.by_station.is_empty() {
                        station_chart(ui, &res.by_station);
                    }
                });
        });
    egui::CentralPanel::default().show(ui, |ui| {
        open = rows_table(ui, &res.rows, &h.thumbs, selected_id, plant);
    });
    if open_label {
        app.history.needs_dataset = false;
        app.tab = crate::ui::Tab::Label;
        app.notify(
            Level::Info,
            "open or create a dataset here, then send the frame from History again",
        );
        return;
    }
    let h = &mut app.history;
    if send
        && let (Some(sel), Some(set)) = (h.selected.clone(), app.label.set.as_mut())
        && let Some(img) = &sel.image_path
    {
        let src = history::archive_dir_for(&db).join(img);
        let name = format!("{}-{:08}.png", sel.run_id, sel.seq)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>();
        let rel = format!("inbox/{name}");
        if !set.rows.iter().any(|r| r.path == rel) {
            set.rows.push(crate::data::labeling::LabelRow {
                path: rel.clone(),
                label: None,
                split: None,
                mask: None,
                group: None,
            });
        }
        let (root, rows) = (set.root.clone(), set.rows.clone());
        app.label
            .save(crate::ui::label_tab::Save::Import(src, root.join(&rel)));
        app.label
            .save(crate::ui::label_tab::Save::Manifest(root, rows));
        app.notify(
            Level::Info,
            format!("{} sent to the Label tab as {rel} (unlabelled)", sel.origin),
        );
        return;
    }
    let operator = app.operator();
    let h = &mut app.history;
    if let Some(id) = open
        && let Some(r) = h
            .result
            .as_ref()
            .and_then(|res| res.rows.iter().find(|r| r.id == id))
            .cloned()
    {
        h.detail = None;
        h.send(Request::Detail(Box::new(r.clone())));
        h.selected = Some(r);
    }
    if show_new {
        h.show_incoming(&ctx);
    }
    if let Some((verdict, reason)) = override_req.clone()
        && let Some(sel) = h.selected.clone()
        && plant
    {
        // The lead's decision goes to the plant database (the worker writes it); the station
        // that judged the part takes it in from there.
        h.plant_override = None;
        if h.send(Request::PlantOverride {
            row: Box::new(sel),
            verdict,
            by: operator,
            reason,
        }) {
            // The row shows the decision once the plant has it (the refresh after the answer).
            h.reason.clear();
        } else {
            h.plant_override = Some(Err(
                "the history worker is busy: press the button again in a moment".into(),
            ));
        }
        return;
    }
    if let Some((verdict, reason)) = override_req
        && let Some(sel) = h.selected.clone()
    {
        let op = crate::records::history::Op::Override(crate::records::history::Override {
            run_id: sel.run_id.clone(),
            seq: sel.seq,
            from: sel.final_verdict().to_string(),
            verdict: verdict.clone(),
            by: app.operator(),
            at: history::rfc3339(chrono::Utc::now()),
            reason: reason.clone(),
            station: app.settings.station.clone(),
        });
        app.pending_ops.push_back(op);
        app.history.reason.clear();
        app.history.last_refresh = None;
        if let Some(s) = &mut app.history.selected {
            s.override_verdict = Some(verdict.clone());
            s.override_reason = Some(reason.clone());
        }
        app.notify(
            Level::Info,
            format!(
                "{} {} as {verdict}: {reason}",
                sel.origin,
                if verdict == sel.verdict {
                    "confirmed"
                } else {
                    "overridden"
                }
            ),
        );
    }
}

/// The filter controls, each name before its control as people read a form.
fn filter_bar(h: &mut HistoryView, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        // Each filter's name stands before its control, as people read a form.
        ui.horizontal(|ui| {
            let l = ui.label("Time");
            egui::ComboBox::from_id_salt("time")
                .selected_text(RANGES[h.range])
                .show_ui(ui, |ui| {
                    for (i, r) in RANGES.iter().enumerate() {
                        ui.selectable_value(&mut h.range, i, *r);
                    }
                })
                .response
                .labelled_by(l.id);
        });
        if h.range == 4 {
            ui.horizontal(|ui| {
                let l = ui.label("From");
                ui.add(
                    egui::TextEdit::singleline(&mut h.custom_since)
                        .hint_text("2026-11-26T06:00:00Z or 8h")
                        .desired_width(200.0)
                        .id_salt("since"),
                )
                .labelled_by(l.id);
            });
            ui.horizontal(|ui| {
                let l = ui.label("Until");
                ui.add(
                    egui::TextEdit::singleline(&mut h.custom_until)
                        .hint_text("empty = now")
                        .desired_width(160.0)
                        .id_salt("until"),
                )
                .labelled_by(l.id);
            });
        }
        ui.horizontal(|ui| {
            let l = ui.label("Verdict");
            egui::ComboBox::from_id_salt("verdict")
                .selected_text(if h.verdict.is_empty() {
                    "any"
                } else {
                    &h.verdict
                })
                .show_ui(ui, |ui| {
                    for v in ["", "pass", "review", "fail"] {
                        ui.selectable_value(
                            &mut h.verdict,
                            v.to_string(),
                            if v.is_empty() { "any" } else { v },
                        );
                    }
                })
                .response
                .labelled_by(l.id);
        });
        let classes = h
            .result
            .as_ref()
            .map(|r| r.classes.clone())
            .unwrap_or_default();
        ui.horizontal(|ui| {
            let l = ui.label("Class");
            egui::ComboBox::from_id_salt("class")
                .selected_text(if h.class.is_empty() { "any" } else { &h.class })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut h.class, String::new(), "any");
                    for c in classes {
                        ui.selectable_value(&mut h.class, c.clone(), c);
                    }
                })
                .response
                .labelled_by(l.id);
        });
        let models = h
            .result
            .as_ref()
            .map(|r| r.models.clone())
            .unwrap_or_default();
        ui.horizontal(|ui| {
            let l = ui.label("Model");
            egui::ComboBox::from_id_salt("model")
                .selected_text(if h.model.is_empty() { "any" } else { &h.model })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut h.model, String::new(), "any");
                    for m in models {
                        ui.selectable_value(&mut h.model, m.clone(), m);
                    }
                })
                .response
                .labelled_by(l.id);
        });
        ui.horizontal(|ui| {
            let l = ui.label("Overridden");
            egui::ComboBox::from_id_salt("overridden")
                .selected_text(["any", "yes", "no"][h.overridden])
                .show_ui(ui, |ui| {
                    for (i, s) in ["any", "yes", "no"].iter().enumerate() {
                        ui.selectable_value(&mut h.overridden, i, *s);
                    }
                })
                .response
                .labelled_by(l.id);
        });
        if h.plant {
            let (stations, lines) = h
                .result
                .as_ref()
                .map(|r| (r.stations.clone(), r.lines.clone()))
                .unwrap_or_default();
            for (name, value, options) in [
                ("Station", &mut h.station, stations),
                ("Line", &mut h.line, lines),
            ] {
                ui.horizontal(|ui| {
                    let l = ui.label(name);
                    egui::ComboBox::from_id_salt(name)
                        .selected_text(if value.is_empty() {
                            "any"
                        } else {
                            value.as_str()
                        })
                        .show_ui(ui, |ui| {
                            ui.selectable_value(value, String::new(), "any");
                            for o in options {
                                ui.selectable_value(value, o.clone(), o);
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
            }
            ui.checkbox(&mut h.split, "Split the chart by station");
        }
        ui.horizontal(|ui| {
            let l = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut h.text)
                    .hint_text("search file / frame")
                    .desired_width(160.0)
                    .id_salt("search"),
            )
            .labelled_by(l.id);
        });
    });
}

/// The page's rows with their thumbnails; returns the row id clicked.
fn rows_table(
    ui: &mut egui::Ui,
    rows: &[InspectionRow],
    thumbs: &std::collections::HashMap<i64, egui::TextureHandle>,
    selected_id: Option<i64>,
    plant: bool,
) -> Option<i64> {
    let mut open = None;
    egui::ScrollArea::vertical().id_salt("rows").show(ui, |ui| {
        egui::Grid::new("history-rows")
            .striped(true)
            .num_columns(if plant { 8 } else { 7 })
            .show(ui, |ui| {
                let station_head = plant.then_some("station");
                for head in ["", "time"].into_iter().chain(station_head).chain([
                    "verdict",
                    "class",
                    "confidence",
                    "model",
                    "frame",
                ]) {
                    ui.label(RichText::new(head).strong());
                }
                ui.end_row();
                for r in rows {
                    // The row's cells, unioned: the whole row opens it (not only the frame
                    // name). Labels are not selectable, so a press on one is a click.
                    let mut row_rect = egui::Rect::NOTHING;
                    let cell = |ui: &mut egui::Ui, text: RichText| {
                        ui.add(egui::Label::new(text).selectable(false)).rect
                    };
                    // Every row is as tall as a thumbnail, with or without one: rows never
                    // change height (and overlap) when thumbnails arrive.
                    row_rect = row_rect.union(
                        match thumbs.get(&r.id) {
                            Some(t) => ui.add_sized(
                                vec2(48.0, 48.0),
                                egui::Image::new(t).max_size(vec2(48.0, 48.0)),
                            ),
                            None => ui.allocate_response(vec2(48.0, 48.0), egui::Sense::hover()),
                        }
                        .rect,
                    );
                    row_rect = row_rect.union(cell(ui, RichText::new(local_time(&r.ts))));
                    if plant {
                        row_rect = row_rect.union(cell(ui, RichText::new(&r.station)));
                    }
                    let fin = r.final_verdict();
                    let color = match fin {
                        "fail" => Color32::from_rgb(0xe5, 0x39, 0x35),
                        "review" => crate::ui::inspect::REVIEW_AMBER,
                        _ => Color32::from_rgb(0x43, 0xa0, 0x47),
                    };
                    let word = if r.override_verdict.is_some() {
                        format!("{} (overridden)", fin.to_uppercase())
                    } else {
                        fin.to_uppercase()
                    };
                    row_rect = row_rect.union(cell(ui, RichText::new(word).color(color)));
                    row_rect = row_rect.union(cell(ui, RichText::new(&r.class)));
                    row_rect = row_rect.union(cell(
                        ui,
                        RichText::new(format!("{:.0}%", 100.0 * r.confidence)),
                    ));
                    row_rect = row_rect.union(cell(ui, RichText::new(&r.model_id)));
                    // The row's widgets are named by the row id alone, not by its place in
                    // the table or by what was drawn above it: a click opens the row that
                    // was pressed, even when rows or the "N new" button appear meanwhile.
                    let row_scope =
                        egui::UiBuilder::new().scope_id(egui::Id::unique(("history-row", r.id)));
                    let name = ui
                        .scope_builder(row_scope, |ui| {
                            ui.selectable_label(selected_id == Some(r.id), &r.origin)
                        })
                        .inner;
                    row_rect = row_rect.union(name.rect);
                    // Over the whole row, on top of its cells (the name button included).
                    let row = ui
                        .interact(
                            row_rect,
                            egui::Id::unique(("history-row-click", r.id)),
                            egui::Sense::click(),
                        )
                        .on_hover_cursor(egui::CursorIcon::PointingHand);
                    if row.hovered() {
                        ui.painter().rect_stroke(
                            row_rect.expand(1.0),
                            2.0,
                            ui.visuals().widgets.hovered.bg_stroke,
                            egui::StrokeKind::Outside,
                        );
                    }
                    if name.clicked() || row.clicked() {
                        open = Some(r.id);
                    }
                    ui.end_row();
                }
            });
    });
    open
}

fn same_filter(a: &Filter, b: &Filter) -> bool {
    // Relative time ranges move with the clock; compare them to the minute.
    let minute = |t: Option<i64>| t.map(|t| t / 60_000);
    minute(a.since_ms) == minute(b.since_ms)
        && minute(a.until_ms) == minute(b.until_ms)
        && a.verdict == b.verdict
        && a.class == b.class
        && a.model == b.model
        && a.overridden == b.overridden
        && a.text == b.text
        && a.station == b.station
        && a.line == b.line
}
