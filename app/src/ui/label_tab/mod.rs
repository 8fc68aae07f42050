//! The Label tab: open or create a dataset, filter a thumbnail grid (unlabelled, class, split,
//! mispredicted by the active model), label with number keys or clicks, paint defect masks with
//! brush and eraser, undo. Decoding runs in a loader thread; every change is saved at once by a
//! saver thread, atomically.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use egui::{Color32, RichText, Sense, vec2};

use super::InspectorApp;
use crate::data::labeling::{self, LabelRow, LabelSet};

const THUMB: u32 = 96;
const GRID_PAGE: usize = 60;

enum Load {
    Open(PathBuf, bool),
    Thumb(String, PathBuf),
    Full {
        row: usize,
        image: PathBuf,
        mask: Option<PathBuf>,
    },
    Predict {
        model: PathBuf,
        rows: Vec<(String, PathBuf)>,
        cancel: Arc<AtomicBool>,
    },
}

enum Loaded {
    Opened(PathBuf, Result<LabelSet, String>),
    Thumb(String, Option<egui::ColorImage>),
    Full {
        row: usize,
        image: Result<(egui::ColorImage, u32, u32), String>,
        mask: Option<Vec<u8>>,
    },
    /// (predictions, whether the run was cancelled before the end)
    Predictions(Result<(HashMap<String, Prediction>, bool), String>),
    /// Images predicted so far, of how many.
    PredictProgress(usize, usize),
}

/// Disk writes, in order.
pub(super) enum Save {
    Manifest(PathBuf, Vec<LabelRow>),
    Mask(PathBuf, u32, u32, Vec<u8>),
    Import(PathBuf, PathBuf),
    Checked(PathBuf, std::collections::BTreeSet<String>),
}

struct MaskEdit {
    row: usize,
    width: u32,
    height: u32,
    data: Vec<u8>,
    tex: Option<egui::TextureHandle>,
    changed: bool,
}

enum Undo {
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
    filter: usize,
    filter_class: String,
    filter_split: String,
    page: usize,
    new_class: String,
    thumbs: HashMap<String, egui::TextureHandle>,
    pending: HashSet<String>,
    loader: Option<(Sender<Load>, Receiver<Loaded>)>,
    saver: Option<(Sender<Save>, Receiver<String>)>,
    big: Option<(usize, egui::TextureHandle, u32, u32)>,
    full_requested: Option<usize>,
    mask: Option<MaskEdit>,
    /// Brush radius in image pixels.
    pub brush: f32,
    /// Paint (true) or erase.
    pub paint: bool,
    undo: Vec<Undo>,
    predictions: Option<HashMap<String, Prediction>>,
    /// The last message.
    pub status: String,
    /// Where the large image was drawn last frame (screen points).
    pub canvas: Option<egui::Rect>,
    pending_open: Option<(PathBuf, bool)>,
    /// The row whose "checked" mark the person toggled this frame.
    toggle_checked: Option<usize>,
    /// Where the brush was last frame during a stroke (image pixels).
    last_brush: Option<(f32, f32)>,
    /// (done, total, started) while "Predict with active model" runs.
    predict_progress: Option<(usize, usize, std::time::Instant)>,
    /// Set to stop the running prediction (it keeps what it has).
    predict_cancel: Arc<AtomicBool>,
}

/// What the active model says about one image.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// The most probable class.
    pub class: String,
    /// The probability of each of the model's classes.
    pub probabilities: Vec<(String, f32)>,
    /// For an anomaly model (classes: PASS, "anomaly"), the dataset labels it counts as PASS;
    /// every other label stands for its anomaly class.
    pub pass_labels: Option<Vec<String>>,
}

impl Prediction {
    /// The model class a dataset label stands for: the label itself for a classifier; for an
    /// anomaly model its PASS class or its anomaly class.
    pub fn class_for<'a>(&'a self, label: &'a str) -> &'a str {
        match &self.pass_labels {
            None => label,
            Some(pass) => {
                let pass_class = self.probabilities.first().map_or("", |(c, _)| c.as_str());
                let anomaly = self.probabilities.get(1).map_or("", |(c, _)| c.as_str());
                if label == pass_class || pass.iter().any(|p| p == label) {
                    pass_class
                } else {
                    anomaly
                }
            }
        }
    }

    /// How strongly the model disagrees with `label`: 1 − its probability of the class the
    /// label stands for (1 for a class the model does not know).
    pub fn disagreement(&self, label: &str) -> f32 {
        let class = self.class_for(label);
        1.0 - self
            .probabilities
            .iter()
            .find(|(c, _)| c == class)
            .map_or(0.0, |(_, p)| *p)
    }

    /// Whether the model's class differs from the one `label` stands for.
    pub fn disagrees(&self, label: &str) -> bool {
        self.class != self.class_for(label)
    }
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
            toggle_checked: None,
            last_brush: None,
            predict_progress: None,
            predict_cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

const FILTERS: [&str; 5] = ["all", "unlabelled", "class", "split", "mispredicted"];

impl LabelView {
    fn start_threads(&mut self, ctx: &egui::Context, gpu: &super::Gpu) {
        if self.loader.is_none() {
            let (tx, rx) = bounded::<Load>(256);
            let (otx, orx) = bounded::<Loaded>(256);
            let ctx = ctx.clone();
            let gpu = gpu.clone();
            let _ = std::thread::Builder::new()
                .name("label-loader".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let out = match job {
                            Load::Open(root, create) => {
                                let set = if create {
                                    LabelSet::create(&root)
                                } else {
                                    LabelSet::open(&root)
                                };
                                Loaded::Opened(root, set)
                            }
                            Load::Thumb(key, p) => Loaded::Thumb(
                                key,
                                crate::data::dataset::decode_image(&p)
                                    .ok()
                                    .map(|i| crate::station::display::frame_image(&i, THUMB)),
                            ),
                            Load::Full { row, image, mask } => {
                                let img = crate::data::dataset::decode_image(&image);
                                let mask = match (&img, mask) {
                                    (Ok(i), Some(m)) => labeling::read_mask(&m, i.width, i.height),
                                    _ => None,
                                };
                                Loaded::Full {
                                    row,
                                    image: img.map(|i| {
                                        (
                                            crate::station::display::frame_image(&i, 1024),
                                            i.width,
                                            i.height,
                                        )
                                    }),
                                    mask,
                                }
                            }
                            Load::Predict {
                                model,
                                rows,
                                cancel,
                            } => {
                                let progress = |done: usize, total: usize| {
                                    let _ = otx.try_send(Loaded::PredictProgress(done, total));
                                    ctx.request_repaint();
                                };
                                Loaded::Predictions(predict(&gpu, &model, &rows, &cancel, progress))
                            }
                        };
                        if otx.send(out).is_err() {
                            return;
                        }
                        ctx.request_repaint();
                    }
                });
            self.loader = Some((tx, orx));
        }
        if self.saver.is_none() {
            let (tx, rx) = bounded::<Save>(64);
            let (etx, erx) = bounded::<String>(64);
            let ctx = ctx.clone();
            let _ = std::thread::Builder::new()
                .name("label-saver".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let r = match job {
                            Save::Manifest(root, rows) => labeling::write_manifest(&root, &rows)
                                .map(|()| format!("saved {}", root.join("manifest.csv").display())),
                            Save::Checked(root, checked) => {
                                labeling::write_checked(&root, &checked)
                                    .map(|()| "saved the checked list".to_owned())
                            }
                            Save::Mask(p, w, h, data) => labeling::write_mask(&p, w, h, &data)
                                .map(|()| format!("saved mask {}", p.display())),
                            Save::Import(src, dest) => dest
                                .parent()
                                .map(std::fs::create_dir_all)
                                .transpose()
                                .and_then(|_| std::fs::copy(&src, &dest))
                                .map(|_| format!("imported {}", dest.display()))
                                .map_err(|e| format!("cannot copy {}: {e}", src.display())),
                        };
                        let _ = etx.send(r.unwrap_or_else(|e| format!("ERROR: {e}")));
                        ctx.request_repaint();
                    }
                });
            self.saver = Some((tx, erx));
        }
    }

    /// Queues a disk write (never blocks the UI: a full queue is reported).
    pub(super) fn save(&mut self, job: Save) {
        if let Some((tx, _)) = &self.saver
            && tx.try_send(job).is_err()
        {
            self.status = "ERROR: the saver is behind; the change is not saved yet".into();
        }
    }

    fn save_manifest(&mut self) {
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

    fn opened(&mut self, root: PathBuf, set: Result<LabelSet, String>) {
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
            }
            Err(e) => self.status = format!("ERROR: {e}"),
        }
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
    fn disagreement_of(&self, set: &LabelSet, i: usize) -> f32 {
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

    fn flush_mask(&mut self) {
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

    fn undo(&mut self) {
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

/// Runs `rows` through `model`, reporting (done, total) after each image; stops early (keeping
/// what it has) when `cancel` is set.
fn predict(
    gpu: &super::Gpu,
    model: &std::path::Path,
    rows: &[(String, PathBuf)],
    cancel: &AtomicBool,
    progress: impl Fn(usize, usize),
) -> Result<(HashMap<String, Prediction>, bool), String> {
    let (m, _) = crate::station::pipeline::load_model(model)?;
    let mut engine = kernels::Engine::new(&gpu.device, &gpu.queue, &m, 1, gpu.label.clone())
        .map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (done, (key, p)) in rows.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Ok((out, true));
        }
        progress(done, rows.len());
        let Ok(img) = crate::data::dataset::decode_image(p) else {
            continue;
        };
        let Ok(r) = engine.infer(&[img.frame()]) else {
            continue;
        };
        if let Some(r) = r.first()
            && let Some(best) = crate::evaluation::metrics::argmax(&r.probabilities)
        {
            out.insert(
                key.clone(),
                Prediction {
                    class: m.spec.classes[best].clone(),
                    probabilities: m
                        .spec
                        .classes
                        .iter()
                        .cloned()
                        .zip(r.probabilities.iter().copied())
                        .collect(),
                    pass_labels: m
                        .spec
                        .is_anomaly()
                        .then(|| crate::evaluation::eval::pass_labels(&m.spec)),
                },
            );
        }
    }
    Ok((out, false))
}

pub(super) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
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
                Loaded::PredictProgress(done, total) => {
                    if let Some(p) = &mut v.predict_progress {
                        p.0 = done;
                        p.1 = total;
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
            .button_ui(ui, super::file_dialog::Target::LabelDataset, || {
                super::file_dialog::DialogRequest::new(
                    super::file_dialog::DialogKind::PickFolder,
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
        .note_ui(ui, super::file_dialog::Target::LabelDataset);
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
        let (pressed, next, prev, undo) = ctx.input(|i| {
            (
                keys.iter().position(|k| i.key_pressed(*k)),
                i.key_pressed(egui::Key::ArrowRight) || i.key_pressed(egui::Key::ArrowDown),
                i.key_pressed(egui::Key::ArrowLeft) || i.key_pressed(egui::Key::ArrowUp),
                i.modifiers.command && i.key_pressed(egui::Key::Z),
            )
        });
        if let Some(k) = pressed {
            v.assign(k);
        }
        if next {
            v.step(1);
        }
        if prev {
            v.step(-1);
        }
        if undo {
            v.undo();
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

/// Paints the brush along the segment `from` → `to` (image pixels) of a `w`×`h` mask, in
/// stamps at most half a radius apart.
fn stroke(
    data: &mut [u8],
    (w, h): (u32, u32),
    from: (f32, f32),
    to: (f32, f32),
    rad: f32,
    value: u8,
) {
    let dist = ((to.0 - from.0).powi(2) + (to.1 - from.1).powi(2)).sqrt();
    let stamps = (dist / (rad * 0.5).max(0.5)).ceil().max(1.0) as usize;
    for s in 1..=stamps {
        let t = s as f32 / stamps as f32;
        let (x, y) = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
        stamp(data, w, h, x, y, rad, value);
    }
}

/// Paints a disc of radius `rad` at (`cx`, `cy`) (image pixels) into a `w`×`h` mask.
fn stamp(data: &mut [u8], w: u32, h: u32, cx: f32, cy: f32, rad: f32, value: u8) {
    let (x0, x1) = (
        (cx - rad).floor().max(0.0) as u32,
        ((cx + rad).ceil().max(0.0) as u32).min(w),
    );
    let (y0, y1) = (
        (cy - rad).floor().max(0.0) as u32,
        ((cy + rad).ceil().max(0.0) as u32).min(h),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= rad * rad {
                data[(y * w + x) as usize] = value;
            }
        }
    }
}

fn big_view(v: &mut LabelView, ui: &mut egui::Ui) {
    v.canvas = None;
    let Some(set) = &v.set else { return };
    if set.rows.is_empty() {
        ui.label("This dataset has no images yet: copy images into its folder and open it again, or send rejects from the History tab.");
        return;
    }
    let Some(row) = v.selected.filter(|&r| r < set.rows.len()) else {
        ui.label("No image in the editor: the grid shows none. Change the filter, or pick an image in the grid.");
        return;
    };
    let r = set.rows[row].clone();
    ui.label(
        RichText::new(format!(
            "{} — {}{}",
            r.path,
            r.label.clone().unwrap_or_else(|| "unlabelled".into()),
            r.split
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ))
        .strong(),
    );
    if let Some(p) = v.predictions.as_ref().and_then(|p| p.get(&r.path)) {
        let against = r
            .label
            .as_deref()
            .map(|l| {
                format!(
                    " (disagrees with the label by {:.0} %)",
                    100.0 * p.disagreement(l)
                )
            })
            .unwrap_or_default();
        ui.label(format!("active model says: {}{against}", p.class));
        let checked = set.checked.contains(&r.path);
        if checked {
            ui.label("✔ checked: the label stands (left out of the mispredicted list)");
        }
        let text = if checked {
            "Uncheck"
        } else {
            "Mark checked (the label is right)"
        };
        if ui.button(text).clicked() {
            v.toggle_checked = Some(row);
        }
    }
    // The same physical part under its other lightings: a label the model disputes is easier
    // to judge beside them (view only; the editor keeps to the filtered grid).
    let part = v.same_part(row);
    if !part.is_empty() {
        let group = r.group.clone().unwrap_or_default();
        ui.label(format!("Same part ({group}): {} other images", part.len()));
        let mut wanted = Vec::new();
        ui.horizontal_wrapped(|ui| {
            for &j in part.iter().take(8) {
                let o = &set.rows[j];
                ui.vertical(|ui| {
                    match v.thumbs.get(&o.path) {
                        Some(t) => {
                            ui.add(egui::Image::new(t).max_size(vec2(64.0, 64.0)));
                        }
                        None => {
                            ui.allocate_space(vec2(64.0, 64.0));
                            if !v.pending.contains(&o.path) {
                                wanted.push((o.path.clone(), set.root.join(&o.path)));
                            }
                        }
                    }
                    let said = v
                        .predictions
                        .as_ref()
                        .and_then(|p| p.get(&o.path))
                        .map(|p| format!(" → {}", p.class))
                        .unwrap_or_default();
                    ui.label(
                        RichText::new(format!(
                            "{}{said}",
                            o.label.as_deref().unwrap_or("unlabelled")
                        ))
                        .size(10.0),
                    );
                });
            }
        });
        if let Some((tx, _)) = &v.loader {
            for (key, p) in wanted {
                if tx.try_send(Load::Thumb(key.clone(), p)).is_ok() {
                    v.pending.insert(key);
                }
            }
        }
    }
    // Ask for the full image when the selection changed.
    if v.full_requested != Some(row)
        && let Some((tx, _)) = &v.loader
    {
        let mask = r.mask.as_ref().map(|m| set.root.join(m));
        let image = set.root.join(&r.path);
        if tx.try_send(Load::Full { row, image, mask }).is_ok() {
            v.full_requested = Some(row);
        }
    }
    ui.horizontal(|ui| {
        ui.selectable_value(&mut v.paint, true, "Brush");
        ui.selectable_value(&mut v.paint, false, "Eraser");
        ui.add(egui::Slider::new(&mut v.brush, 1.0..=60.0).text("size (px)"));
        if ui.button("Undo").clicked() {
            v.undo();
        }
        if ui.button("Clear mask").clicked()
            && let Some(m) = &mut v.mask
        {
            v.undo
                .push(Undo::Mask(m.row, m.data.clone(), r.mask.clone()));
            m.data.iter_mut().for_each(|p| *p = 0);
            m.tex = None;
            m.changed = true;
            v.flush_mask();
        }
    });
    let Some((brow, tex, w, h)) = v.big.as_ref().map(|b| (b.0, b.1.clone(), b.2, b.3)) else {
        ui.spinner();
        return;
    };
    if brow != row || v.mask.as_ref().is_none_or(|m| m.row != row) {
        ui.spinner();
        return;
    }
    let avail = ui.available_size();
    let scale = (avail.x / w as f32).min(avail.y / h as f32).max(0.01);
    let (rect, resp) = ui.allocate_exact_size(
        vec2(w as f32 * scale, h as f32 * scale),
        Sense::click_and_drag(),
    );
    let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
    v.canvas = Some(rect);
    let Some(m) = &mut v.mask else { return };
    if resp.drag_started() || (resp.clicked() && !resp.dragged()) {
        v.undo
            .push(Undo::Mask(m.row, m.data.clone(), r.mask.clone()));
        // egui reports a drag once the pointer has moved a few points from where the button
        // went down: the stroke starts there, not where the drag was recognised.
        v.last_brush = ui
            .input(|i| i.pointer.press_origin())
            .filter(|o| resp.drag_started() && rect.contains(*o))
            .map(|o| ((o.x - rect.min.x) / scale, (o.y - rect.min.y) / scale));
    }
    if (resp.dragged() || resp.clicked())
        && let Some(p) = resp.interact_pointer_pos()
    {
        let (cx, cy) = ((p.x - rect.min.x) / scale, (p.y - rect.min.y) / scale);
        let rad = v.brush;
        let value = if v.paint { 255 } else { 0 };
        // A continuous stroke: stamp the brush along the segment from the last position, at
        // most half a radius apart (pointer events arrive far apart on a fast drag).
        let from = v.last_brush.unwrap_or((cx, cy));
        stroke(&mut m.data, (w, h), from, (cx, cy), rad, value);
        v.last_brush = Some((cx, cy));
        m.tex = None;
        m.changed = true;
    }
    if resp.drag_stopped() {
        v.last_brush = None;
    }
    if m.tex.is_none() {
        let px: Vec<Color32> = m
            .data
            .iter()
            .map(|&p| {
                if p > 0 {
                    Color32::from_rgba_unmultiplied(255, 40, 40, 110)
                } else {
                    Color32::TRANSPARENT
                }
            })
            .collect();
        let img = egui::ColorImage::new([w as usize, h as usize], px);
        m.tex = Some(
            ui.ctx()
                .load_texture("label-mask", img, egui::TextureOptions::NEAREST),
        );
    }
    if let Some(t) = &m.tex {
        ui.painter().image(t.id(), rect, uv, Color32::WHITE);
    }
    if resp.drag_stopped() || (resp.clicked() && !resp.dragged()) {
        v.flush_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// With an anomaly model, a defect label stands for the anomaly class: a scratch the model
    /// scores anomalous agrees with its label; a good image it scores anomalous does not.
    #[test]
    fn anomaly_predictions_compare_verdicts_not_class_names() {
        let p = |anomalous: f32| Prediction {
            class: if anomalous >= 0.5 { "anomaly" } else { "Free" }.into(),
            probabilities: vec![
                ("Free".into(), 1.0 - anomalous),
                ("anomaly".into(), anomalous),
            ],
            pass_labels: Some(vec!["Free".into(), "OK".into()]),
        };
        assert!(!p(0.9).disagrees("Crack"));
        assert!(p(0.9).disagrees("Free"));
        assert!(p(0.9).disagrees("OK"));
        assert!(!p(0.2).disagrees("OK"));
        assert!((p(0.9).disagreement("Crack") - 0.1).abs() < 1e-6);
        assert!((p(0.9).disagreement("Free") - 0.9).abs() < 1e-6);
        assert_eq!(p(0.3).class_for("Blowhole"), "anomaly");
    }

    /// A stroke from one side to the other paints a continuous line, not separate dots.
    #[test]
    fn a_stroke_is_continuous() {
        let (w, h) = (100u32, 20u32);
        let mut data = vec![0u8; (w * h) as usize];
        // Two pointer positions 90 px apart, as a fast drag delivers them.
        stroke(&mut data, (w, h), (5.0, 10.0), (5.0, 10.0), 3.0, 255);
        stroke(&mut data, (w, h), (5.0, 10.0), (95.0, 10.0), 3.0, 255);
        for x in 5..95 {
            assert_eq!(data[(10 * w + x) as usize], 255, "gap at x = {x}");
        }
        // Erasing the same stroke (first event, then the jump) clears it.
        stroke(&mut data, (w, h), (5.0, 10.0), (5.0, 10.0), 3.0, 0);
        stroke(&mut data, (w, h), (5.0, 10.0), (95.0, 10.0), 3.0, 0);
        assert!(data.iter().all(|&p| p == 0));
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
}
