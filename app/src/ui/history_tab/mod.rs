//! The History tab: filters, a paged table with thumbnails, details with confirm/override,
//! charts (reject rate per hour with p-chart limits, defect Pareto, yield per shift) and CSV
//! export. Queries run in a worker thread with its own database connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use egui::{Color32, RichText, vec2};

use super::{InspectorApp, Level};
use crate::records::history::{self, Filter, HourBucket, InspectionRow, Store};

/// Rows per page.
pub const PAGE: u64 = 50;
const RANGES: [&str; 5] = ["This shift", "24 h", "7 days", "All", "Custom"];

enum Request {
    Page { filter: Filter, page: u64 },
    Detail(Box<InspectionRow>),
    Export { filter: Filter, path: PathBuf },
}

enum Reply {
    Page(Box<PageResult>),
    Detail(
        i64,
        Option<(egui::ColorImage, u32, u32)>,
        Option<egui::ColorImage>,
    ),
    Exported(Result<(PathBuf, usize), String>),
    Error(String),
}

/// One page of results with the charts' data.
pub struct PageResult {
    /// The filter it answers.
    pub filter: Filter,
    /// Page number.
    pub page: u64,
    /// The rows.
    pub rows: Vec<InspectionRow>,
    /// Rows matching in all.
    pub total: u64,
    /// Per hour.
    pub hourly: Vec<HourBucket>,
    /// Fails per class.
    pub pareto: Vec<(String, u64)>,
    /// Classes and models for the filter menus.
    pub classes: Vec<String>,
    /// Models.
    pub models: Vec<String>,
    /// Thumbnails by row id.
    pub thumbs: Vec<(i64, egui::ColorImage)>,
    /// Query time, ms.
    pub took_ms: f64,
}

struct Worker {
    tx: Sender<Request>,
    rx: Receiver<Reply>,
}

/// The tab's state.
pub struct HistoryView {
    worker: Option<Worker>,
    /// "Send to the Label tab" was pressed with no dataset open there: say so and offer one.
    pub needs_dataset: bool,
    /// Index into the time ranges.
    pub range: usize,
    custom_since: String,
    custom_until: String,
    /// "", "pass" or "fail".
    pub verdict: String,
    /// "" = all.
    pub class: String,
    model: String,
    overridden: usize,
    text: String,
    page: u64,
    /// The result on screen. A periodic refresh of the same query never reorders it: newer
    /// results wait in `incoming` until the user asks for them.
    pub result: Option<PageResult>,
    /// A refresh of the query on screen whose rows differ (new verdicts), held back so rows do
    /// not move under the pointer; "N new — show" puts it on screen.
    pub incoming: Option<PageResult>,
    pending: bool,
    requested: Option<(Filter, u64)>,
    /// The controls (filters and page) the pending request was made for, and those of the
    /// result on screen.
    requested_key: String,
    shown_key: String,
    last_refresh: Option<Instant>,
    thumbs: HashMap<i64, egui::TextureHandle>,
    /// The row whose details are open, chosen by row id.
    selected: Option<InspectionRow>,
    detail: Option<(
        i64,
        Option<egui::TextureHandle>,
        Option<egui::TextureHandle>,
    )>,
    /// Where "Export to this path" writes (empty: the default name in the default folder; a
    /// relative path is taken in the default folder, see [`export_target`]).
    pub export_path: String,
    /// The save dialog chose `export_path`: export on the next frame.
    pub export_requested: bool,
    /// The last export's outcome.
    pub exported: Option<Result<(PathBuf, usize), String>>,
    error: Option<String>,
    reason: String,
    detail_dims: (u32, u32),
}

impl Default for HistoryView {
    fn default() -> Self {
        Self {
            worker: None,
            needs_dataset: false,
            range: 1,
            custom_since: String::new(),
            custom_until: String::new(),
            verdict: String::new(),
            class: String::new(),
            model: String::new(),
            overridden: 0,
            text: String::new(),
            page: 0,
            result: None,
            incoming: None,
            pending: false,
            requested: None,
            requested_key: String::new(),
            shown_key: String::new(),
            last_refresh: None,
            thumbs: HashMap::new(),
            selected: None,
            detail: None,
            export_path: String::new(),
            export_requested: false,
            exported: None,
            error: None,
            reason: String::new(),
            detail_dims: (0, 0),
        }
    }
}

impl HistoryView {
    /// The filter the controls describe; `shift_start` is the counters' start.
    pub fn filter(
        &self,
        shift_start: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Filter, String> {
        let now = chrono::Utc::now();
        let (since_ms, until_ms) = match self.range {
            0 => (shift_start.map(|s| s.timestamp_millis()), None),
            1 => (Some(now.timestamp_millis() - 86_400_000), None),
            2 => (Some(now.timestamp_millis() - 7 * 86_400_000), None),
            3 => (None, None),
            _ => (
                (!self.custom_since.trim().is_empty())
                    .then(|| history::parse_time(self.custom_since.trim(), now))
                    .transpose()?,
                (!self.custom_until.trim().is_empty())
                    .then(|| history::parse_time(self.custom_until.trim(), now))
                    .transpose()?,
            ),
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Filter {
            since_ms,
            until_ms,
            verdict: opt(&self.verdict),
            class: opt(&self.class),
            model: opt(&self.model),
            overridden: match self.overridden {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            text: opt(self.text.trim()),
        })
    }

    /// What the user asked to see: the filter controls and the page (relative time ranges
    /// are the same query as the clock moves on).
    fn controls_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.range,
            self.custom_since.trim(),
            self.custom_until.trim(),
            self.verdict,
            self.class,
            self.model,
            self.overridden,
            self.text.trim(),
            self.page
        )
    }

    /// The id of the row whose details are open.
    pub fn selected_id(&self) -> Option<i64> {
        self.selected.as_ref().map(|r| r.id)
    }

    /// Puts a page on screen, keeping the thumbnails it still shows.
    fn show_result(&mut self, p: PageResult, ctx: &egui::Context) {
        let keep: std::collections::HashSet<i64> = p.rows.iter().map(|r| r.id).collect();
        self.thumbs.retain(|id, _| keep.contains(id));
        for (id, img) in &p.thumbs {
            self.thumbs.entry(*id).or_insert_with(|| {
                ctx.load_texture(
                    format!("hist-{id}"),
                    img.clone(),
                    egui::TextureOptions::LINEAR,
                )
            });
        }
        // The open details follow their row (an override may have changed it).
        if let Some(sel) = &mut self.selected
            && let Some(r) = p.rows.iter().find(|r| r.id == sel.id)
        {
            *sel = r.clone();
        }
        self.result = Some(p);
    }

    /// A reply to the pending request: on screen at once when the user changed the query (or
    /// nothing is shown yet); a periodic refresh of the query on screen only updates the rows
    /// already shown, in place, and holds back new ones.
    fn receive(&mut self, p: PageResult, ctx: &egui::Context) {
        let key = std::mem::take(&mut self.requested_key);
        let same_query = self.result.is_some() && key == self.shown_key;
        self.shown_key = key;
        let Some(shown) = self.result.as_mut().filter(|_| same_query) else {
            self.incoming = None;
            self.show_result(p, ctx);
            return;
        };
        let same_rows = shown.rows.len() == p.rows.len()
            && shown.rows.iter().zip(&p.rows).all(|(a, b)| a.id == b.id);
        if same_rows {
            self.incoming = None;
            self.show_result(p, ctx);
            return;
        }
        // Same rows, same places: refresh what changed in them (overrides), add nothing.
        for r in &mut shown.rows {
            if let Some(n) = p.rows.iter().find(|n| n.id == r.id) {
                *r = n.clone();
            }
        }
        if let Some(sel) = &mut self.selected
            && let Some(r) = p.rows.iter().find(|r| r.id == sel.id)
        {
            *sel = r.clone();
        }
        self.incoming = Some(p);
    }

    /// Puts the held-back refresh on screen ("N new — show").
    pub fn show_incoming(&mut self, ctx: &egui::Context) {
        if let Some(p) = self.incoming.take() {
            self.show_result(p, ctx);
        }
    }

    fn ensure_worker(&mut self, db: &Path, ctx: &egui::Context) {
        if self.worker.is_some() {
            return;
        }
        let (req_tx, req_rx) = bounded::<Request>(4);
        let (rep_tx, rep_rx) = bounded::<Reply>(4);
        let db = db.to_path_buf();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("history-query".into())
            .spawn(move || query_loop(&db, req_rx, rep_tx, ctx));
        if spawned.is_ok() {
            self.worker = Some(Worker {
                tx: req_tx,
                rx: rep_rx,
            });
        }
    }

    fn send(&mut self, r: Request) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|w| w.tx.try_send(r).is_ok())
    }
}

fn query_loop(db: &Path, rx: Receiver<Request>, tx: Sender<Reply>, ctx: egui::Context) {
    // The writer creates the database; wait for it rather than creating a second one.
    let store = loop {
        if db.is_file() {
            match Store::open(db) {
                Ok(s) => break s,
                Err(e) => {
                    let _ = tx.send(Reply::Error(e.to_string()));
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(_) => {
                let _ = tx.send(Reply::Error(format!(
                    "no history yet: {} does not exist (it appears with the first recorded verdict)",
                    db.display()
                )));
                ctx.request_repaint();
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(_) => return,
        }
    };
    let archive = store.archive_dir();
    while let Ok(req) = rx.recv() {
        let reply = match req {
            Request::Page { filter, page } => {
                let t = Instant::now();
                let r = (|| -> Result<PageResult, history::HistoryError> {
                    let rows = store.query(&filter, PAGE, page * PAGE)?;
                    let thumbs = rows
                        .iter()
                        .filter_map(|r| {
                            let p = archive.join(r.image_path.as_ref()?);
                            let img = crate::data::dataset::decode_image(&p).ok()?;
                            Some((r.id, crate::station::display::frame_image(&img, 64)))
                        })
                        .collect();
                    Ok(PageResult {
                        total: store.count(&filter)?,
                        hourly: store.hourly(&filter)?,
                        pareto: store.pareto(&filter)?,
                        classes: store.distinct("class")?,
                        models: store.distinct("model_id")?,
                        filter,
                        page,
                        rows,
                        thumbs,
                        took_ms: 0.0,
                    })
                })();
                match r {
                    Ok(mut p) => {
                        p.took_ms = t.elapsed().as_secs_f64() * 1e3;
                        Reply::Page(Box::new(p))
                    }
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
            Request::Detail(row) => {
                let load = |rel: &Option<String>| {
                    let p = archive.join(rel.as_ref()?);
                    let img = crate::data::dataset::decode_image(&p).ok()?;
                    Some((
                        crate::station::display::frame_image(&img, 1024),
                        img.width,
                        img.height,
                    ))
                };
                let heat = row.heatmap_path.as_ref().and_then(|rel| {
                    let img = image::open(archive.join(rel)).ok()?.to_rgba8();
                    Some(egui::ColorImage::from_rgba_unmultiplied(
                        [img.width() as usize, img.height() as usize],
                        img.as_raw(),
                    ))
                });
                Reply::Detail(row.id, load(&row.image_path), heat)
            }
            Request::Export { filter, path } => Reply::Exported(export(&store, &filter, &path)),
        };
        if tx.send(reply).is_err() {
            return;
        }
        ctx.request_repaint();
    }
}

/// The default name of an export: `defect-history-2026-11-30.csv`.
pub fn export_file_name(today: chrono::NaiveDate) -> String {
    format!("defect-history-{}.csv", today.format("%Y-%m-%d"))
}

/// Where an export typed as `typed` goes: empty = the default name in `default_dir`, a
/// relative path = in `default_dir` (never the working directory, which a desktop launcher
/// sets to `/` or the install folder), an absolute path as it is.
pub fn export_target(typed: &str, today: chrono::NaiveDate, default_dir: &Path) -> PathBuf {
    let typed = typed.trim();
    if typed.is_empty() {
        return default_dir.join(export_file_name(today));
    }
    let p = PathBuf::from(typed);
    if p.is_absolute() {
        p
    } else {
        default_dir.join(p)
    }
}

fn export(store: &Store, filter: &Filter, typed: &Path) -> Result<(PathBuf, usize), String> {
    let today = chrono::Local::now().date_naive();
    let mut path = export_target(
        &typed.to_string_lossy(),
        today,
        &super::file_dialog::default_export_dir(),
    );
    if path.is_dir() {
        path = path.join(export_file_name(today));
    }
    let path = std::path::absolute(&path).unwrap_or(path);
    let path = path.as_path();
    let rows = store
        .query(filter, u64::MAX >> 1, 0)
        .map_err(|e| e.to_string())?;
    // Write next to the target, then rename: a failed export never leaves half a file.
    let tmp = path.with_extension("csv.partial");
    let file =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    history::write_csv(std::io::BufWriter::new(file), &rows)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path.to_path_buf(), rows.len()))
}

pub(super) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let db = app.db_path();
    let ctx = ui.ctx().clone();
    let shift = app.counters.since;
    let h = &mut app.history;
    h.ensure_worker(&db, &ctx);
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
            Reply::Error(e) => {
                h.pending = false;
                h.error = Some(e);
            }
        }
    }
    // Filters.
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
                    for v in ["", "pass", "fail"] {
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
            .is_none_or(|(rf, rp)| !same_filter(rf, f) || *rp != h.page);
        let stale = h
            .last_refresh
            .is_none_or(|t| t.elapsed() > Duration::from_secs(3));
        if !h.pending
            && (changed || stale)
            && h.send(Request::Page {
                filter: f.clone(),
                page: h.page,
            })
        {
            h.pending = true;
            h.requested = Some((f.clone(), h.page));
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
            let req = super::file_dialog::DialogRequest::new(
                super::file_dialog::DialogKind::SaveFile,
                "Export the history as CSV",
                &near,
            )
            .filter("CSV", &["csv"])
            .file_name(&export_file_name(today));
            app.dialogs
                .request(super::file_dialog::Target::CsvExport, req, &ctx);
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
        .note_ui(ui, super::file_dialog::Target::CsvExport);
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
                        if ui
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
                        ui.separator();
                    }
                    charts(ui, res);
                });
        });
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical().id_salt("rows").show(ui, |ui| {
            egui::Grid::new("history-rows")
                .striped(true)
                .num_columns(7)
                .show(ui, |ui| {
                    for head in [
                        "",
                        "time",
                        "verdict",
                        "class",
                        "confidence",
                        "model",
                        "frame",
                    ] {
                        ui.label(RichText::new(head).strong());
                    }
                    ui.end_row();
                    for r in &res.rows {
                        // Every row is as tall as a thumbnail, with or without one: rows never
                        // change height (and overlap) when thumbnails arrive.
                        match h.thumbs.get(&r.id) {
                            Some(t) => {
                                ui.add_sized(
                                    vec2(48.0, 48.0),
                                    egui::Image::new(t).max_size(vec2(48.0, 48.0)),
                                );
                            }
                            None => {
                                ui.allocate_space(vec2(48.0, 48.0));
                            }
                        }
                        ui.label(local_time(&r.ts));
                        let fin = r.final_verdict();
                        let color = if fin == "fail" {
                            Color32::from_rgb(0xe5, 0x39, 0x35)
                        } else {
                            Color32::from_rgb(0x43, 0xa0, 0x47)
                        };
                        let word = if r.override_verdict.is_some() {
                            format!("{} (overridden)", fin.to_uppercase())
                        } else {
                            fin.to_uppercase()
                        };
                        ui.colored_label(color, word);
                        ui.label(&r.class);
                        ui.label(format!("{:.0}%", 100.0 * r.confidence));
                        ui.label(&r.model_id);
                        // The row's widget is named by the row id alone, not by its place in
                        // the table or by what was drawn above it: a click opens the row that
                        // was pressed, even when rows or the "N new" button appear meanwhile.
                        let row_scope = egui::UiBuilder::new()
                            .scope_id(egui::Id::unique(("history-row", r.id)));
                        let chosen = ui
                            .scope_builder(row_scope, |ui| {
                                ui.selectable_label(selected_id == Some(r.id), &r.origin)
                            })
                            .inner
                            .clicked();
                        if chosen {
                            open = Some(r.id);
                        }
                        ui.end_row();
                    }
                });
        });
    });
    if open_label {
        app.history.needs_dataset = false;
        app.tab = super::Tab::Label;
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
            .save(super::label_tab::Save::Import(src, root.join(&rel)));
        app.label.save(super::label_tab::Save::Manifest(root, rows));
        app.notify(
            Level::Info,
            format!("{} sent to the Label tab as {rel} (unlabelled)", sel.origin),
        );
        return;
    }
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
}

fn local_time(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| ts.to_string())
}

fn charts(ui: &mut egui::Ui, res: &PageResult) {
    use egui_plot::{Bar, BarChart, Line, Plot, PlotPoints, Points};
    ui.label(RichText::new("Reject rate per hour (p-chart, 3-sigma limits)").strong());
    let total: u64 = res.hourly.iter().map(|b| b.total).sum();
    let fails: u64 = res.hourly.iter().map(|b| b.fails).sum();
    let pbar = if total > 0 {
        fails as f64 / total as f64
    } else {
        0.0
    };
    let t0 = res.hourly.first().map(|b| b.hour_ms).unwrap_or(0);
    let hours = |ms: i64| (ms - t0) as f64 / 3_600_000.0;
    let rate: Vec<[f64; 2]> = res
        .hourly
        .iter()
        .map(|b| {
            [
                hours(b.hour_ms),
                100.0 * b.fails as f64 / b.total.max(1) as f64,
            ]
        })
        .collect();
    // Limits per hour (they depend on that hour's count) as steps one hour wide, so even a
    // single hour shows them; the centre line spans the whole range.
    let steps = |lower: bool| -> Vec<[f64; 2]> {
        res.hourly
            .iter()
            .flat_map(|b| {
                let (l, u) = history::p_chart_limits(pbar, b.total);
                let y = 100.0 * if lower { l } else { u };
                let x = hours(b.hour_ms);
                [[x - 0.45, y], [x + 0.45, y]]
            })
            .collect()
    };
    let (ucl, lcl) = (steps(false), steps(true));
    let span = (
        rate.first().map_or(0.0, |p| p[0]) - 0.5,
        rate.last().map_or(0.0, |p| p[0]) + 0.5,
    );
    let centre = vec![[span.0, 100.0 * pbar], [span.1, 100.0 * pbar]];
    let out_of_control = res
        .hourly
        .iter()
        .filter(|b| {
            (b.fails as f64 / b.total.max(1) as f64) > history::p_chart_limits(pbar, b.total).1
        })
        .count();
    Plot::new("reject-rate")
        .height(160.0)
        .allow_scroll(false)
        .legend(egui_plot::Legend::default())
        .x_axis_label("hour (local time)")
        .y_axis_label("reject %")
        .include_x(span.0)
        .include_x(span.1)
        .include_y(0.0)
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() > 1e-6 {
                return String::new();
            }
            let ms = t0 + (i as i64) * 3_600_000;
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%d %H:00")
                        .to_string()
                })
                .unwrap_or_default()
        })
        .show(ui, |p| {
            let red = Color32::from_rgb(0xe5, 0x39, 0x35);
            p.points(
                Points::new("reject %", PlotPoints::from(rate.clone()))
                    .radius(3.0)
                    .color(red),
            );
            p.line(Line::new("reject %", PlotPoints::from(rate)).color(red));
            p.line(Line::new("centre line", PlotPoints::from(centre)).color(Color32::LIGHT_BLUE));
            for (name, pts, colour) in [
                ("UCL (3σ)", ucl, Color32::GRAY),
                ("LCL (3σ)", lcl, Color32::DARK_GRAY),
            ] {
                for seg in pts.chunks(2) {
                    p.line(Line::new(name, PlotPoints::from(seg.to_vec())).color(colour));
                }
            }
        });
    ui.label(format!(
        "centre line {:.1}% over {} hours; {} hours above the upper limit",
        100.0 * pbar,
        res.hourly.len(),
        out_of_control
    ));
    ui.label(
        RichText::new("Defect Pareto (FAILs by class, most first; line: cumulative %)").strong(),
    );
    // Bars in falling order with the class names under them, and the cumulative share drawn
    // on the same axis (100 % at the tallest bar's height).
    let mut pareto = res.pareto.clone();
    pareto.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = pareto.iter().map(|(_, n)| n).sum();
    let top = pareto.first().map_or(1, |(_, n)| (*n).max(1)) as f64;
    let bars: Vec<Bar> = pareto
        .iter()
        .enumerate()
        .map(|(i, (c, n))| Bar::new(i as f64, *n as f64).name(c))
        .collect();
    let mut cum = 0u64;
    let cumulative: Vec<[f64; 2]> = pareto
        .iter()
        .enumerate()
        .map(|(i, (_, n))| {
            cum += n;
            [i as f64, top * cum as f64 / total.max(1) as f64]
        })
        .collect();
    let names: Vec<String> = pareto.iter().map(|(c, _)| c.clone()).collect();
    Plot::new("pareto")
        .height(160.0)
        .allow_scroll(false)
        .x_axis_label("defect class")
        .y_axis_label("FAILs")
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |p| {
            p.bar_chart(BarChart::new("fails", bars));
            p.line(
                Line::new("cumulative %", PlotPoints::from(cumulative))
                    .color(Color32::from_rgb(230, 160, 40)),
            );
        });
    let mut cum = 0u64;
    ui.label(
        pareto
            .iter()
            .map(|(c, n)| {
                cum += n;
                format!(
                    "{c} {n} ({:.0} % cumulative)",
                    100.0 * cum as f64 / total.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join(" · "),
    );
    ui.label(RichText::new("Yield per shift (06–14, 14–22, 22–06 local)").strong());
    let shifts = yield_per_shift(&res.hourly);
    let bars: Vec<Bar> = shifts
        .iter()
        .enumerate()
        .map(|(i, (name, y))| {
            Bar::new(i as f64, *y)
                .name(name)
                .fill(Color32::from_rgb(0x43, 0xa0, 0x47))
        })
        .collect();
    let shift_names: Vec<String> = shifts.iter().map(|(n, _)| n.clone()).collect();
    Plot::new("yield")
        .height(120.0)
        .allow_scroll(false)
        .y_axis_label("yield %")
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                shift_names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |p| p.bar_chart(BarChart::new("yield %", bars)));
    if let Some((name, y)) = shifts.last() {
        ui.label(format!("latest shift {name}: yield {y:.1}%"));
    }
}

/// Yield (%) per 8-hour shift starting 06:00, 14:00 and 22:00 local time, oldest first.
pub fn yield_per_shift(hourly: &[HourBucket]) -> Vec<(String, f64)> {
    use chrono::{Local, TimeZone as _, Timelike as _};
    let mut shifts: Vec<(String, u64, u64)> = Vec::new();
    for b in hourly {
        let Some(t) = Local.timestamp_millis_opt(b.hour_ms).single() else {
            continue;
        };
        let h = t.hour();
        let (start_day, label) = match h {
            6..=13 => (t.date_naive(), "early"),
            14..=21 => (t.date_naive(), "late"),
            22..=23 => (t.date_naive(), "night"),
            _ => (t.date_naive().pred_opt().unwrap_or(t.date_naive()), "night"),
        };
        let name = format!("{} {label}", start_day.format("%m-%d"));
        match shifts.last_mut() {
            Some(s) if s.0 == name => {
                s.1 += b.total;
                s.2 += b.fails;
            }
            _ => shifts.push((name, b.total, b.fails)),
        }
    }
    shifts
        .into_iter()
        .map(|(n, t, f)| (n, 100.0 * (t - f) as f64 / t.max(1) as f64))
        .collect()
}

/// Shows a row; returns (verdict, reason) when the lead confirms or overrides it.
fn details(
    ui: &mut egui::Ui,
    r: &InspectionRow,
    detail: Option<&(
        i64,
        Option<egui::TextureHandle>,
        Option<egui::TextureHandle>,
    )>,
    dims: (u32, u32),
    reason: &mut String,
) -> Option<(String, String)> {
    ui.label(RichText::new(format!("{} — {}", r.origin, local_time(&r.ts))).strong());
    ui.label(format!(
        "model said {} ({} {:.1}%, score {:.3}, threshold {:.3}), model {}, station {}, latency {:.1} ms",
        r.verdict.to_uppercase(),
        r.class,
        100.0 * r.confidence,
        r.score,
        r.threshold,
        r.model_id,
        r.station,
        r.latency_ms
    ));
    if let (Some(v), Some(why)) = (&r.override_verdict, &r.override_reason) {
        let who = r
            .override_by
            .clone()
            .filter(|w| !w.trim().is_empty())
            .unwrap_or_else(|| "an unnamed operator".into());
        let when = r
            .override_at
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(local_time)
            .unwrap_or_else(|| "an unrecorded time".into());
        ui.label(format!(
            "overridden to {} by {who} at {when}: {why}",
            v.to_uppercase()
        ));
    }
    match detail {
        Some((id, img, heat)) if *id == r.id => {
            if img.is_none() {
                ui.label("no archived image (passes are sampled; old images are pruned by the disk budget)");
            }
            if let Some(t) = img {
                let resp = ui.add(egui::Image::new(t).max_size(vec2(380.0, 300.0)));
                if let Some(h) = heat {
                    // The heatmap covers the region of interest the model saw.
                    let rect = match r.roi {
                        Some([x, y, w, hh]) if dims.0 > 0 && dims.1 > 0 => {
                            let (sx, sy) = (
                                resp.rect.width() / dims.0 as f32,
                                resp.rect.height() / dims.1 as f32,
                            );
                            egui::Rect::from_min_size(
                                resp.rect.min + egui::vec2(x as f32 * sx, y as f32 * sy),
                                egui::vec2(w as f32 * sx, hh as f32 * sy),
                            )
                        }
                        _ => resp.rect,
                    };
                    ui.painter().image(
                        h.id(),
                        rect,
                        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                        Color32::from_white_alpha(120),
                    );
                }
            }
        }
        _ => {
            ui.spinner();
        }
    }
    ui.add(
        egui::TextEdit::singleline(reason)
            .hint_text("reason (required)")
            .id_salt("lead-reason"),
    );
    let mut out = None;
    ui.horizontal(|ui| {
        let enabled = !reason.trim().is_empty();
        let current = r.final_verdict().to_string();
        if ui
            .add_enabled(
                enabled,
                egui::Button::new(format!("Confirm {}", current.to_uppercase())),
            )
            .clicked()
        {
            out = Some((current.clone(), reason.trim().to_string()));
        }
        let other = if current == "fail" { "pass" } else { "fail" };
        if ui
            .add_enabled(
                enabled,
                egui::Button::new(format!("Override to {}", other.to_uppercase())),
            )
            .clicked()
        {
            out = Some((other.to_string(), reason.trim().to_string()));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_goes_to_the_default_folder_unless_the_path_is_absolute() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap_or_default();
        let docs = Path::new("/home/lead/Documents");
        assert_eq!(export_file_name(today), "defect-history-2026-11-30.csv");
        assert_eq!(
            export_target("", today, docs),
            docs.join("defect-history-2026-11-30.csv")
        );
        assert_eq!(
            export_target("  shift-b.csv ", today, docs),
            docs.join("shift-b.csv")
        );
        assert_eq!(
            export_target("/mnt/share/fails.csv", today, docs),
            Path::new("/mnt/share/fails.csv")
        );
    }
}
