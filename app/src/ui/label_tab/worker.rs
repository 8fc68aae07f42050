//! The Label tab's workers: the loader thread (opening a dataset, decoding thumbnails and full
//! images, predicting with the active model) and the saver thread (every change written at
//! once, atomically, in order), the messages they take and answer, and [`Prediction`].

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::data::labeling::{self, LabelRow, LabelSet};
use crate::ui::gpu::Gpu;

/// Thumbnail size, pixels.
pub(super) const THUMB: u32 = 96;

pub(super) enum Load {
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

pub(super) enum Loaded {
    Opened(PathBuf, Result<LabelSet, String>),
    Thumb(String, Option<egui::ColorImage>),
    Full {
        row: usize,
        image: Result<(egui::ColorImage, u32, u32), String>,
        mask: Option<Vec<u8>>,
    },
    /// (predictions, whether the run was cancelled before the end)
    Predictions(Result<(HashMap<String, Prediction>, bool), String>),
    /// Images predicted so far, of how many, and the predictions of the batch just done (shown
    /// as they arrive; the final [`Loaded::Predictions`] holds them all).
    PredictProgress(usize, usize, HashMap<String, Prediction>),
}

/// Disk writes, in order.
pub(in crate::ui) enum Save {
    Manifest(PathBuf, Vec<LabelRow>),
    Mask(PathBuf, u32, u32, Vec<u8>),
    Import(PathBuf, PathBuf),
    Checked(PathBuf, BTreeSet<String>),
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

/// Starts the loader thread: jobs in, results out (each one asks `ctx` for a repaint).
pub(super) fn spawn_loader(ctx: &egui::Context, gpu: &Gpu) -> (Sender<Load>, Receiver<Loaded>) {
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
                        let progress = |done: usize, total: usize, batch| {
                            let _ = otx.try_send(Loaded::PredictProgress(done, total, batch));
                            ctx.request_repaint();
                        };
                        Loaded::Predictions(predict(
                            &gpu.background(),
                            &model,
                            &rows,
                            &cancel,
                            progress,
                        ))
                    }
                };
                if otx.send(out).is_err() {
                    return;
                }
                ctx.request_repaint();
            }
        });
    (tx, orx)
}

/// Starts the saver thread: writes in, one message per write out.
pub(super) fn spawn_saver(ctx: &egui::Context) -> (Sender<Save>, Receiver<String>) {
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
                    Save::Checked(root, checked) => labeling::write_checked(&root, &checked)
                        .map(|()| "saved the checked list".to_owned()),
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
    (tx, erx)
}

/// Images per engine call once the first results are out (the engine is several times faster
/// per image at 32 than at 1).
pub(super) const PREDICT_BATCH: usize = 32;
/// The first call's size: small, so that the first predictions show within a second or two.
const FIRST_BATCH: usize = 4;

/// Runs `rows` through `model` in batches, telling `progress` (done, total, the batch's
/// predictions) after each batch; stops early (keeping what it has) when `cancel` is set.
fn predict(
    gpu: &Gpu,
    model: &std::path::Path,
    rows: &[(String, PathBuf)],
    cancel: &AtomicBool,
    progress: impl Fn(usize, usize, HashMap<String, Prediction>),
) -> Result<(HashMap<String, Prediction>, bool), String> {
    let (m, _) = crate::station::pipeline::load_model(model)?;
    let mut engine = kernels::Engine::new(
        &gpu.device,
        &gpu.queue,
        &m,
        PREDICT_BATCH as u32,
        gpu.label.clone(),
    )
    .map_err(|e| e.to_string())?;
    let pass_labels = m
        .spec
        .is_anomaly()
        .then(|| crate::evaluation::eval::pass_labels(&m.spec));
    let said = |probabilities: &[f32]| {
        crate::evaluation::metrics::argmax(probabilities).map(|best| Prediction {
            class: m.spec.classes[best].clone(),
            probabilities: m
                .spec
                .classes
                .iter()
                .cloned()
                .zip(probabilities.iter().copied())
                .collect(),
            pass_labels: pass_labels.clone(),
        })
    };
    let mut out = HashMap::new();
    let mut done = 0;
    progress(0, rows.len(), HashMap::new());
    while done < rows.len() {
        if cancel.load(Ordering::Relaxed) {
            return Ok((out, true));
        }
        let n = if done == 0 {
            FIRST_BATCH
        } else {
            PREDICT_BATCH
        };
        let chunk = &rows[done..(done + n).min(rows.len())];
        // Unreadable images are left out (no prediction), as before.
        let images: Vec<(&String, crate::data::dataset::DecodedImage)> = chunk
            .iter()
            .filter_map(|(k, p)| Some((k, crate::data::dataset::decode_image(p).ok()?)))
            .collect();
        let frames: Vec<_> = images.iter().map(|(_, i)| i.frame()).collect();
        let results = match engine.infer(&frames) {
            Ok(r) => r.into_iter().map(Some).collect(),
            // One bad image must not cost the batch: one at a time.
            Err(_) => frames
                .iter()
                .map(|f| engine.infer(std::slice::from_ref(f)).ok()?.pop())
                .collect::<Vec<_>>(),
        };
        let mut batch = HashMap::new();
        for ((key, _), r) in images.iter().zip(results) {
            if let Some(p) = r.and_then(|r| said(&r.probabilities)) {
                batch.insert((*key).clone(), p);
            }
        }
        done += chunk.len();
        out.extend(batch.clone());
        progress(done, rows.len(), batch);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
