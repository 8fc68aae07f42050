//! The Label tab's state: the open dataset, the filter, the selection, the mask being edited
//! and the undo list, and what the tab does to them (label, move, undo, save).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crossbeam_channel::{Receiver, Sender};

use super::worker::{Load, Loaded, Prediction, Save, spawn_loader, spawn_saver};
use crate::data::labeling::LabelSet;
use crate::ui::gpu::Gpu;

/// Thumbnails per grid page.
pub(super) const GRID_PAGE: usize = 60;

pub(super) struct MaskEdit {
    pub(super) row: usize,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) data: Vec<u8>,
    pub(super) tex: Option<egui::TextureHandle>,
    pub(super) changed: bool,
}

pub(super) enum Undo {
    Label(usize, Option<String>),
    Mask(usize, Vec<u8>, Option<String>),
}

/// The tab's state.
pub struct LabelView {
    /// The folder field.
    pub folder: String,
    /// The open dataset.
    pub set: Option<LabelSet>,
    /// The row in the editor: always one the filter shows, or None (the editor is empty).
    pub selected: Option<usize>,
    pub(super) filter: usize,
    pub(super) filter_class: String,
    pub(super) filter_split: String,
    pub(super) page: usize,
    pub(super) new_class: String,
    pub(super) thumbs: HashMap<String, egui::TextureHandle>,
    pub(super) pending: HashSet<String>,
    pub(super) loader: Option<(Sender<Load>, Receiver<Loaded>)>,
    pub(super) saver: Option<(Sender<Save>, Receiver<String>)>,
    pub(super) big: Option<(usize, egui::TextureHandle, u32, u32)>,
    pub(super) full_requested: Option<usize>,
    pub(super) mask: Option<MaskEdit>,
    /// Brush radius in image pixels.
    pub brush: f32,
    /// Paint (true) or erase.
    pub paint: bool,
    pub(super) undo: Vec<Undo>,
    pub(super) predictions: Option<HashMap<String, Prediction>>,
    /// The last message.
    pub status: String,
    /// Where the large image was drawn last frame (screen points).
    pub canvas: Option<egui::Rect>,
    pub(super) pending_open: Option<(PathBuf, bool)>,
    /// The image to show once the dataset being opened is open ([`LabelView::reveal`]).
    pub(super) pending_reveal: Option<String>,
    /// The row whose "checked" mark the person toggled this frame.
    pub(super) toggle_checked: Option<usize>,
    /// Where the brush was last frame during a stroke (image pixels).
    pub(super) last_brush: Option<(f32, f32)>,
    /// (done, total, started) while "Predict with active model" runs.
    pub(super) predict_progress: Option<(usize, usize, std::time::Instant)>,
    /// Set to stop the running prediction (it keeps what it has).
    pub(super) predict_cancel: Arc<AtomicBool>,
}

impl Default for LabelView {
    fn default() -> Self {
        Self {
            folder: String::new(),
            set: None,
            selected: None,
            filter: 0,
            filter_class: String::new(),
            filter_split: String::new(),
            page: 0,
            new_class: String::new(),
            thumbs: HashMap::new(),
            pending: HashSet::new(),
            loader: None,
            saver: None,
            big: None,
            full_requested: None,
            mask: None,
            brush: 6.0,
            paint: true,
            undo: Vec::new(),
            predictions: None,
            status: String::new(),
            canvas: None,
            pending_open: None,
            pending_reveal: None,
            toggle_checked: None,
            last_brush: None,
            predict_progress: None,
            predict_cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

pub(super) const FILTERS: [&str; 5] = ["all", "unlabelled", "class", "split", "mispredicted"];

impl LabelView {
    pub(super) fn start_threads(&mut self, ctx: &egui::Context, gpu: &Gpu) {
        if self.loader.is_none() {
            self.loader = Some(spawn_loader(ctx, gpu));
        }
        if self.saver.is_none() {
            self.saver = Some(spawn_saver(ctx));
        }
    }

    /// Queues a disk write (never blocks the UI: a full queue is reported).
    pub(in crate::ui) fn save(&mut self, job: Save) {
        if let Some((tx, _)) = &self.saver
            && tx.try_send(job).is_err()
        {
            self.status = "ERROR: the saver is behind; the change is not saved yet".into();
        }
    }

    pub(super) fn save_manifest(&mut self) {
        if let Some(set) = &self.set {
            let job = Save::Manifest(set.root.clone(), set.rows.clone());
            self.save(job);
        }
    }

    /// Opens (or, when `create`, creates) the dataset in the folder field, in the loader thread.
    pub fn open(&mut self, create: bool) {
        self.pending_open = Some((PathBuf::from(self.folder.trim()), create));
        self.status = "opening…".into();
    }

    pub(super) fn opened(&mut self, root: PathBuf, set: Result<LabelSet, String>) {
        match set {
            Ok(set) => {
                self.status = format!(
                    "{}: {} images, {} unlabelled, classes {}",
                    root.display(),
                    set.rows.len(),
                    set.rows.iter().filter(|r| r.label.is_none()).count(),
                    set.classes.join(", ")
                );
                self.selected = (!set.rows.is_empty()).then_some(0);
                self.set = Some(set);
                self.page = 0;
                self.thumbs.clear();
                self.pending.clear();
                self.big = None;
                self.full_requested = None;
                self.mask = None;
                self.undo.clear();
                self.predictions = None;
                if let Some(path) = self.pending_reveal.take() {
                    self.select_path(&path);
                }
            }
            Err(e) => {
                self.pending_reveal = None;
                self.status = format!("ERROR: {e}");
            }
        }
    }

    /// Shows image `path` (as the manifest names it) of the dataset in `root` in the editor,
    /// with every image in the grid and the page that holds it: for an image the evaluation
    /// flags as a possible label error. Opens that dataset first when another one (or none) is
    /// open. Nothing is relabelled: the person decides.
    pub fn reveal(&mut self, root: &Path, path: &str) {
        // Compared as written (no file-system call on the UI thread): the same folder named
        // another way is only opened again, in the loader thread.
        if self.set.as_ref().is_some_and(|s| s.root == root) {
            self.select_path(path);
        } else {
            self.folder = root.display().to_string();
            self.pending_reveal = Some(path.to_owned());
            self.open(false);
        }
    }

    fn select_path(&mut self, path: &str) {
        let Some(i) = self
            .set
            .as_ref()
            .and_then(|set| set.rows.iter().position(|r| r.path == path))
        else {
            self.status = format!("{path} is not in this dataset's manifest");
            return;
        };
        self.flush_mask();
        self.filter = 0;
        self.selected = Some(i);
        self.page = i / GRID_PAGE;
        self.status = format!(
            "{path}: the evaluation flags its part as a possible label error (its images look \
             like the other kind); check the label of every image of the part"
        );
    }

    /// How many images the active model has predicted (so far, while a run goes on).
    pub fn predicted(&self) -> Option<usize> {
        self.predictions.as_ref().map(HashMap::len)
    }

    /// Whether "Predict with active model" is running.
    pub fn predicting(&self) -> bool {
        self.predict_progress.is_some()
    }

    /// The mask being edited: (width, height, one byte per pixel, 0 = no defect).
    pub fn mask_pixels(&self) -> Option<(u32, u32, &[u8])> {
        self.mask
            .as_ref()
            .map(|m| (m.width, m.height, m.data.as_slice()))
    }

    /// Painted pixels of the mask being edited (None when no image is open).
    pub fn painted(&self) -> Option<usize> {
        self.mask
            .as_ref()
            .map(|m| m.data.iter().filter(|&&p| p > 0).count())
    }

    /// Rows passing the filter.
    pub fn visible(&self) -> Vec<usize> {
        let Some(set) = &self.set else {
            return Vec::new();
        };
        let mut rows: Vec<usize> = (0..set.rows.len())
            .filter(|&i| {
                let r = &set.rows[i];
                match self.filter {
                    1 => r.label.is_none(),
                    2 => r.label.as_deref() == Some(self.filter_class.as_str()),
                    3 => r.split.as_deref().unwrap_or("") == self.filter_split,
                    4 => match (&self.predictions, &r.label) {
                        (Some(p), Some(l)) => {
                            !set.checked.contains(&r.path)
                                && p.get(&r.path).is_some_and(|pred| pred.disagrees(l))
                        }
                        _ => false,
                    },
                    _ => true,
                }
            })
            .collect();
        if self.filter == 4 {
            // The strongest disagreement with the label first.
            let key = |i: usize| self.disagreement_of(set, i);
            rows.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        }
        rows
    }

    /// How strongly the active model disagrees with row `i`'s label (0 without a prediction).
    pub(super) fn disagreement_of(&self, set: &LabelSet, i: usize) -> f32 {
        let r = &set.rows[i];
        match (&self.predictions, &r.label) {
            (Some(p), Some(l)) => p.get(&r.path).map_or(0.0, |pred| pred.disagreement(l)),
            _ => 0.0,
        }
    }

    /// The other images of row `i`'s physical part (same `group`), in dataset order.
    pub fn same_part(&self, i: usize) -> Vec<usize> {
        let Some(set) = &self.set else {
            return Vec::new();
        };
        let Some(g) = set.rows.get(i).and_then(|r| r.group.as_ref()) else {
            return Vec::new();
        };
        (0..set.rows.len())
            .filter(|&j| j != i && set.rows[j].group.as_ref() == Some(g))
            .collect()
    }

    /// Keeps the editor on an image the grid shows: when the filter drops the image in the
    /// editor, the editor moves to the next visible image (or the last one before it), or
    /// empties when nothing is visible; an empty editor takes the first visible image.
    pub fn keep_selection_visible(&mut self, visible: &[usize]) {
        let want = match self.selected {
            Some(s) if visible.contains(&s) => return,
            Some(s) => visible
                .iter()
                .copied()
                .find(|&i| i > s)
                .or(visible.last().copied()),
            None => visible.first().copied(),
        };
        self.flush_mask();
        self.selected = want;
        if let Some(p) = want.and_then(|w| visible.iter().position(|&i| i == w)) {
            self.page = p / GRID_PAGE;
        }
    }

    /// Labels the image in the editor with class `k` and moves to the next visible row. Does
    /// nothing when the editor is empty or its image is not one the grid shows.
    pub fn assign(&mut self, k: usize) {
        let Some(sel) = self.selected else {
            self.status = "no image in the editor: pick one in the grid".into();
            return;
        };
        if !self.visible().contains(&sel) {
            self.status =
                "the image in the editor is not in the grid any more: nothing labelled".into();
            return;
        }
        let Some(set) = &mut self.set else { return };
        let Some(class) = set.classes.get(k).cloned() else {
            self.status = format!("no class {} yet: add one first", k + 1);
            return;
        };
        if sel >= set.rows.len() {
            return;
        }
        let old = set.rows[sel].label.replace(class);
        self.undo.push(Undo::Label(sel, old));
        self.save_manifest();
        self.step(1);
    }

    /// Moves the selection within the visible rows. When the image in the editor has just left
    /// the filter (it was labelled), moves to the visible image after it (before it, for a
    /// negative `delta`).
    pub fn step(&mut self, delta: isize) {
        self.flush_mask();
        let vis = self.visible();
        if vis.is_empty() {
            self.selected = None;
            return;
        }
        let next = match self.selected {
            Some(s) => match vis.iter().position(|&i| i == s) {
                Some(p) => (p as isize + delta).clamp(0, vis.len() as isize - 1) as usize,
                None if delta >= 0 => vis.iter().position(|&i| i > s).unwrap_or(vis.len() - 1),
                None => vis.iter().rposition(|&i| i < s).unwrap_or(0),
            },
            None => 0,
        };
        self.selected = Some(vis[next]);
        self.page = next / GRID_PAGE;
    }

    pub(super) fn flush_mask(&mut self) {
        let Some(m) = &mut self.mask else { return };
        if !m.changed {
            return;
        }
        m.changed = false;
        let (row, w, h, data) = (m.row, m.width, m.height, m.data.clone());
        let Some(set) = &mut self.set else { return };
        let (rel, path) = set.mask_path(row);
        set.rows[row].mask = Some(rel);
        self.save(Save::Mask(path, w, h, data));
        self.save_manifest();
    }

    pub(super) fn undo(&mut self) {
        let Some(u) = self.undo.pop() else {
            self.status = "nothing to undo".into();
            return;
        };
        match u {
            Undo::Label(row, old) => {
                if let Some(set) = &mut self.set {
                    set.rows[row].label = old;
                    self.selected = Some(row);
                }
                self.save_manifest();
            }
            Undo::Mask(row, old, col) => {
                if let Some(m) = &mut self.mask
                    && m.row == row
                {
                    m.data = old;
                    m.tex = None;
                    m.changed = true;
                }
                if let Some(set) = &mut self.set {
                    set.rows[row].mask = col;
                }
                self.flush_mask();
            }
        }
        self.status = "undone".into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labeling::LabelRow;

    fn row(path: &str, label: &str, group: &str) -> LabelRow {
        LabelRow {
            path: path.into(),
            label: Some(label.into()),
            split: None,
            mask: None,
            group: Some(group.into()),
        }
    }

    fn said(class: &str, p_good: f32) -> Prediction {
        Prediction {
            class: class.into(),
            probabilities: vec![("bad".into(), 1.0 - p_good), ("good".into(), p_good)],
            pass_labels: None,
        }
    }

    /// The "mispredicted" filter lists only images whose predicted class differs from the
    /// label, the strongest disagreement first; an image's part lists its other shots.
    #[test]
    fn mispredicted_lists_the_strongest_disagreement_first_with_its_part() {
        let mut v = LabelView {
            set: Some(LabelSet {
                root: PathBuf::from("unused"),
                rows: vec![
                    row("a.png", "good", "g1"),
                    row("b.png", "good", "g1"),
                    row("c.png", "bad", "g2"),
                    row("d.png", "good", "g2"),
                    row("e.png", "bad", "g1"),
                ],
                classes: vec!["bad".into(), "good".into()],
                checked: Default::default(),
            }),
            ..LabelView::default()
        };
        v.predictions = Some(HashMap::from([
            ("a.png".into(), said("bad", 0.40)),  // disagrees by 0.60
            ("b.png".into(), said("good", 0.90)), // agrees
            ("c.png".into(), said("good", 0.80)), // disagrees by 0.80
            ("d.png".into(), said("bad", 0.05)),  // disagrees by 0.95
            ("e.png".into(), said("bad", 0.10)),  // agrees
        ]));
        v.filter = 4;
        assert_eq!(v.visible(), vec![3, 2, 0]);
        assert!((said("bad", 0.05).disagreement("good") - 0.95).abs() < 1e-6);
        assert_eq!(said("bad", 0.5).disagreement("unknown"), 1.0);
        assert_eq!(v.same_part(0), vec![1, 4]);
        assert_eq!(v.same_part(3), vec![2]);
        // A checked image leaves the list: its label stands.
        if let Some(set) = &mut v.set {
            set.checked.insert("d.png".into());
        }
        assert_eq!(v.visible(), vec![2, 0]);
        // Other filters keep dataset order.
        v.filter = 0;
        assert_eq!(v.visible(), vec![0, 1, 2, 3, 4]);
    }

    /// A flagged image of the open dataset is shown at once, whatever the filter; one of
    /// another dataset opens that dataset first and is shown when it has opened.
    #[test]
    fn reveal_shows_a_flagged_image_opening_its_dataset_if_needed() {
        let set = |root: &str| LabelSet {
            root: PathBuf::from(root),
            rows: (0..130)
                .map(|i| row(&format!("{i}.png"), "good", "g"))
                .collect(),
            classes: vec!["good".into()],
            checked: Default::default(),
        };
        let mut v = LabelView {
            set: Some(set("/data/a")),
            filter: 1,
            ..LabelView::default()
        };
        v.reveal(Path::new("/data/a"), "125.png");
        assert_eq!((v.selected, v.filter, v.page), (Some(125), 0, 2));
        assert!(v.pending_open.is_none());
        v.reveal(Path::new("/data/a"), "missing.png");
        assert_eq!(v.selected, Some(125));
        assert!(v.status.contains("not in this dataset"), "{}", v.status);
        // Another dataset: opened first (in the loader thread), then shown.
        v.reveal(Path::new("/data/b"), "7.png");
        assert_eq!(v.folder, "/data/b");
        assert_eq!(
            v.pending_open
                .as_ref()
                .map(|(p, create)| (p.clone(), *create)),
            Some((PathBuf::from("/data/b"), false))
        );
        v.opened(PathBuf::from("/data/b"), Ok(set("/data/b")));
        assert_eq!(v.selected, Some(7));
        assert!(v.pending_reveal.is_none());
    }
}
