//! The History tab's state: the filter controls, the page on screen and the refresh held
//! back, the open row, the export, and the worker it talks to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::query::{PageResult, Reply, Request, query_loop};
use crate::records::history::{self, Filter, InspectionRow};
use crate::records::plant::read::RecordsLocation;

pub(super) const RANGES: [&str; 5] = ["This shift", "24 h", "7 days", "All", "Custom"];

pub(super) struct Worker {
    pub(super) tx: Sender<Request>,
    pub(super) rx: Receiver<Reply>,
}

/// The tab's state.
pub struct HistoryView {
    pub(super) worker: Option<Worker>,
    /// What the worker reads (it is started again when this changes).
    pub(super) worker_at: Option<RecordsLocation>,
    /// Read the plant database (Settings › Plant database) instead of this station's history.
    pub plant: bool,
    /// Plant mode: "" = every station.
    pub station: String,
    /// Plant mode: "" = every line.
    pub line: String,
    /// Plant mode: the reject rate per hour drawn per station too.
    pub split: bool,
    /// The plant database's answer to the last decision made here.
    pub(super) plant_override: Option<Result<String, String>>,
    /// "Send to the Label tab" was pressed with no dataset open there: say so and offer one.
    pub needs_dataset: bool,
    /// Index into the time ranges.
    pub range: usize,
    pub(super) custom_since: String,
    pub(super) custom_until: String,
    /// "", "pass" or "fail".
    pub verdict: String,
    /// "" = all.
    pub class: String,
    pub(super) model: String,
    pub(super) overridden: usize,
    pub(super) text: String,
    pub(super) page: u64,
    /// The result on screen. A periodic refresh of the same query never reorders it: newer
    /// results wait in `incoming` until the user asks for them.
    pub result: Option<PageResult>,
    /// A refresh of the query on screen whose rows differ (new verdicts), held back so rows do
    /// not move under the pointer; "N new — show" puts it on screen.
    pub incoming: Option<PageResult>,
    pub(super) pending: bool,
    pub(super) requested: Option<(Filter, u64, bool)>,
    /// The controls (filters and page) the pending request was made for, and those of the
    /// result on screen.
    pub(super) requested_key: String,
    pub(super) shown_key: String,
    pub(super) last_refresh: Option<Instant>,
    pub(super) thumbs: HashMap<i64, egui::TextureHandle>,
    /// The row whose details are open, chosen by row id.
    pub(super) selected: Option<InspectionRow>,
    pub(super) detail: Option<(
        i64,
        Option<egui::TextureHandle>,
        Option<egui::TextureHandle>,
    )>,
    /// Where "Export to this path" writes (empty: the default name in the default folder; a
    /// relative path is taken in the default folder, see [`export_target`](super::export_target)).
    pub export_path: String,
    /// The save dialog chose `export_path`: export on the next frame.
    pub export_requested: bool,
    /// The last export's outcome.
    pub exported: Option<Result<(PathBuf, usize), String>>,
    pub(super) error: Option<String>,
    pub(super) reason: String,
    pub(super) detail_dims: (u32, u32),
}

impl Default for HistoryView {
    fn default() -> Self {
        Self {
            worker: None,
            worker_at: None,
            plant: false,
            station: String::new(),
            line: String::new(),
            split: false,
            plant_override: None,
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
            station: opt(&self.station).filter(|_| self.plant),
            line: opt(&self.line).filter(|_| self.plant),
            ..Filter::default()
        })
    }

    /// What the user asked to see: the filter controls and the page (relative time ranges
    /// are the same query as the clock moves on).
    pub(super) fn controls_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.plant,
            self.station,
            self.line,
            self.split,
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
    pub(super) fn show_result(&mut self, p: PageResult, ctx: &egui::Context) {
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
    pub(super) fn receive(&mut self, p: PageResult, ctx: &egui::Context) {
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

    /// A worker reading `at`: the one running, or a new one when the records to read changed
    /// (the old one ends when its channel closes; what was on screen goes with it).
    pub(super) fn ensure_worker(&mut self, at: &RecordsLocation, ctx: &egui::Context) {
        if self.worker.is_some() && self.worker_at.as_ref() == Some(at) {
            return;
        }
        if self.worker_at.is_some() {
            self.worker = None;
            self.result = None;
            self.incoming = None;
            self.pending = false;
            self.requested = None;
            self.thumbs.clear();
            self.selected = None;
            self.detail = None;
            self.error = None;
        }
        self.worker_at = Some(at.clone());
        let (req_tx, req_rx) = bounded::<Request>(4);
        let (rep_tx, rep_rx) = bounded::<Reply>(4);
        let at = at.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("history-query".into())
            .spawn(move || query_loop(at, req_rx, rep_tx, ctx));
        if spawned.is_ok() {
            self.worker = Some(Worker {
                tx: req_tx,
                rx: rep_rx,
            });
        }
    }

    pub(super) fn send(&mut self, r: Request) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|w| w.tx.try_send(r).is_ok())
    }
}
