//! What every trainer reads first: the dataset's classes and train / val rows ([`prepare`]),
//! then the decoded images of a split with their labels, parts and defect masks
//! ([`load_split`]).

use std::path::{Path, PathBuf};

use anyhow::bail;
use kernels::Roi;

use super::types::TrainConfig;
use crate::data::dataset::{self, Dataset, DecodedImage, Sample};

/// What every training run reads first: the classes and the two splits.
pub(crate) struct Prepared {
    pub classes: Vec<String>,
    pub pass: Vec<String>,
    pub train_rows: Vec<Sample>,
    pub val_rows: Vec<Sample>,
    pub missing: usize,
}

/// Opens the dataset, chooses PASS classes and the train / val rows.
pub(crate) fn prepare(cfg: &TrainConfig) -> anyhow::Result<Prepared> {
    let ds = Dataset::open(&cfg.data)?;
    if !ds.missing.is_empty() {
        tracing::warn!(
            "{} files listed in the manifest are missing, e.g. {}",
            ds.missing.len(),
            ds.missing[0]
        );
    }
    let pass = ds.pass_classes(&cfg.pass)?;
    let (train_rows, val_rows) =
        ds.train_val(&cfg.split_train, &cfg.split_val, cfg.val_fraction, cfg.seed)?;
    let classes: Vec<String> = train_rows
        .iter()
        .map(|s| s.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let pass: Vec<String> = pass.into_iter().filter(|p| classes.contains(p)).collect();
    if pass.is_empty() || pass.len() == classes.len() {
        bail!(
            "training needs at least one PASS and one FAIL class among {classes:?} (pass: {:?})",
            cfg.pass
        );
    }
    Ok(Prepared {
        classes,
        pass,
        train_rows,
        val_rows,
        missing: ds.missing.len(),
    })
}

/// Decoded images in parallel (2 workers); unreadable ones come back as errors.
pub(crate) fn decode_all(samples: &[Sample]) -> Vec<Result<DecodedImage, String>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let chunk = samples.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|x| dataset::decode_image(&x.path))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Loaded images of one split with label indices.
pub(crate) struct Split {
    pub images: Vec<DecodedImage>,
    pub labels: Vec<usize>,
    pub paths: Vec<String>,
    /// Absolute file of each image.
    pub files: Vec<PathBuf>,
    /// Each image's part (`group`), if the dataset names one.
    pub groups: Vec<Option<String>>,
    /// Bounding box of each image's defect mask, if it has a readable, non-empty one.
    pub defect_boxes: Vec<Option<Roi>>,
    /// The defect mask of each image, if it has a readable, non-empty one of the image's size.
    pub masks: Vec<Option<DecodedImage>>,
}

/// The mask at `path` and the bounding box of its bright pixels, when it matches the image size
/// and is not empty.
pub(crate) fn load_mask(path: &Path, width: u32, height: u32) -> Option<(DecodedImage, Roi)> {
    let m = dataset::decode_image(path).ok()?;
    if m.width != width || m.height != height {
        tracing::warn!(
            "ignoring mask {}: it is {}×{}, the image {width}×{height}",
            path.display(),
            m.width,
            m.height
        );
        return None;
    }
    let bpp = m.format.bytes_per_pixel() as usize;
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (i, px) in m.data.chunks_exact(bpp).enumerate() {
        if px[0] > 127 {
            let (x, y) = (i as u32 % width, i as u32 / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0 <= x1).then(|| {
        (
            m,
            Roi {
                x: x0,
                y: y0,
                width: x1 - x0 + 1,
                height: y1 - y0 + 1,
            },
        )
    })
}

pub(crate) fn load_split(
    samples: &[Sample],
    classes: &[String],
    skipped: &mut Vec<(String, String)>,
) -> Split {
    let mut out = Split {
        images: Vec::new(),
        labels: Vec::new(),
        paths: Vec::new(),
        files: Vec::new(),
        groups: Vec::new(),
        defect_boxes: Vec::new(),
        masks: Vec::new(),
    };
    for (s, img) in samples.iter().zip(decode_all(samples)) {
        match img {
            Ok(img) => {
                let mask = s
                    .mask
                    .as_deref()
                    .and_then(|m| load_mask(m, img.width, img.height));
                out.defect_boxes.push(mask.as_ref().map(|(_, b)| *b));
                out.masks.push(mask.map(|(m, _)| m));
                out.images.push(img);
                out.labels
                    .push(classes.iter().position(|c| *c == s.label).unwrap_or(0));
                out.paths.push(s.rel_path.clone());
                out.files.push(s.path.clone());
                out.groups.push(s.group.clone());
            }
            Err(e) => {
                tracing::warn!("skipping {}: {e}", s.rel_path);
                skipped.push((s.rel_path.clone(), e));
            }
        }
    }
    out
}
