//! Labelled image datasets in the two layouts common in the field.
//!
//! - **Manifest**: a folder with `manifest.csv`, columns `path,label` and optionally `split`,
//!   `mask`, `group` (cells may be empty; paths relative to the folder, never leaving it).
//! - **Class folders**: `<root>/<class>/*.png|jpg|…`, or `<root>/<split>/<class>/…` when the
//!   top level is made of split names (`train`, `val`, `test`).
//!
//! Loading never trusts the data: unreadable, truncated or empty images are skipped and counted,
//! missing files are listed, paths escaping the folder are refused, and the class/split rules
//! training needs are checked before any training starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use kernels::{Frame, PixelFormat};

/// Image file extensions read from class folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];
/// Class names recognised as PASS when the user names none (case-insensitive).
pub const DEFAULT_PASS_NAMES: &[&str] = &[
    "good",
    "ok",
    "pass",
    "normal",
    "free",
    "defect-free",
    "no_defect",
];
/// The largest image side decoded (pixels); larger images are refused with a message.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Errors that stop a dataset from being used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The folder does not exist or cannot be listed.
    #[error("cannot read dataset folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest is malformed.
    #[error("manifest {path} line {line}: {msg}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line number (1 = header).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The dataset breaks a rule training needs.
    #[error("dataset {path}: {msg}")]
    Invalid {
        /// The dataset folder.
        path: PathBuf,
        /// What is wrong and what to do.
        msg: String,
    },
}

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Path as written in the dataset (relative to its folder).
    pub rel_path: String,
    /// Class name.
    pub label: String,
    /// Split name, if the dataset gives one.
    pub split: Option<String>,
    /// Defect mask (absolute path), if any.
    pub mask: Option<PathBuf>,
    /// Group key (rows of one group stay on one side of a split).
    pub group: Option<String>,
}

/// A dataset as listed on disk (images not yet decoded).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// All rows whose image file exists.
    pub samples: Vec<Sample>,
    /// Rows whose image file is missing (relative paths).
    pub missing: Vec<String>,
    /// Rows without a label yet (relative paths): listed, left to the Label tab, not trained on.
    pub unlabelled: Vec<String>,
    /// Which layout was found.
    pub layout: Layout,
}

/// The dataset layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `manifest.csv`.
    Manifest,
    /// One folder per class (optionally under split folders).
    ClassFolders,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_lowercase().as_str()))
}

/// Resolves a manifest path, refusing absolute paths and `..`.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "path {rel:?} leaves the dataset folder (absolute or containing '..'); use paths relative to the folder"
        ));
    }
    Ok(root.join(p))
}

impl Dataset {
    /// Opens a dataset folder in either layout (`manifest.csv` wins when present).
    pub fn open(root: &Path) -> Result<Self, DatasetError> {
        let meta = std::fs::metadata(root).map_err(|source| DatasetError::Folder {
            path: root.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DatasetError::Invalid {
                path: root.to_owned(),
                msg: "is not a folder".into(),
            });
        }
        let manifest = root.join("manifest.csv");
        if manifest.exists() {
            Self::open_manifest(root, &manifest)
        } else {
            Self::open_folders(root)
        }
    }

    fn open_manifest(root: &Path, manifest: &Path) -> Result<Self, DatasetError> {
        let err = |line: usize, msg: String| DatasetError::Manifest {
            path: manifest.to_owned(),
            line,
            msg,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .trim(csv::Trim::All)
            .from_path(manifest)
            .map_err(|e| err(1, e.to_string()))?;
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| err(1, e.to_string()))?
            .iter()
            .map(|h| h.to_lowercase())
            .collect();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(path_col), Some(label_col)) = (col("path"), col("label")) else {
            return Err(err(
                1,
                format!("needs the columns `path` and `label`, found {headers:?}"),
            ));
        };
        let (split_col, mask_col, group_col) = (col("split"), col("mask"), col("group"));
        let mut samples = Vec::new();
        let mut missing = Vec::new();
        let mut unlabelled = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| err(line, e.to_string()))?;
            let cell = |c: Option<usize>| {
                c.and_then(|c| record.get(c))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let Some(rel) = cell(Some(path_col)) else {
                return Err(err(line, "empty path".into()));
            };
            let Some(label) = cell(Some(label_col)) else {
                unlabelled.push(rel);
                continue;
            };
            let path = safe_join(root, &rel).map_err(|m| err(line, m))?;
            let mask = match cell(mask_col) {
                Some(m) => Some(safe_join(root, &m).map_err(|m| err(line, m))?),
                None => None,
            };
            if !path.is_file() {
                missing.push(rel);
                continue;
            }
            samples.push(Sample {
                path,
                rel_path: rel,
                label,
                split: cell(split_col),
                mask,
                group: cell(group_col),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            samples,
            missing,
            unlabelled,
            layout: Layout::Manifest,
        })
    }

    fn open_folders(root: &Path) -> Result<Self, DatasetError> {
        let list = |dir: &Path| -> Result<Vec<PathBuf>, DatasetError> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|source| DatasetError::Folder {
                    path: dir.to_owned(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            v.sort();
            Ok(v)
        };
        let top: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
        let split_names = ["train", "val", "valid", "validation", "test"];
        let is_split = |p: &PathBuf| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| split_names.contains(&n.to_lowercase().as_str()))
        };
        let groups: Vec<(Option<String>, PathBuf)> = if !top.is_empty() && top.iter().all(is_split)
        {
            let mut v = Vec::new();
            for s in &top {
                let name = s
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_lowercase();
                let name = if name.starts_with("val") {
                    "val".to_owned()
                } else {
                    name
                };
                for c in list(s)?.into_iter().filter(|p| p.is_dir()) {
                    v.push((Some(name.clone()), c));
                }
            }
            v
        } else {
            top.into_iter().map(|c| (None, c)).collect()
        };
        let mut samples = Vec::new();
        for (split, class_dir) in groups {
            let label = class_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            for f in list(&class_dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
            {
                let rel_path = f
                    .strip_prefix(root)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .into_owned();
                samples.push(Sample {
                    path: f,
                    rel_path,
                    label: label.clone(),
                    split: split.clone(),
                    mask: None,
                    group: None,
                });
            }
        }
        Ok(Self {
            root: root.to_owned(),
            samples,
            missing: Vec::new(),
            unlabelled: Vec::new(),
            layout: Layout::ClassFolders,
        })
    }

    /// Class names, sorted.
    pub fn classes(&self) -> Vec<String> {
        self.samples
            .iter()
            .map(|s| s.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Rows of one split.
    pub fn split(&self, name: &str) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| s.split.as_deref() == Some(name))
            .cloned()
            .collect()
    }

    /// Picks PASS classes: the user's names (checked against the classes), else the common names.
    pub fn pass_classes(&self, requested: &[String]) -> Result<Vec<String>, DatasetError> {
        let classes = self.classes();
        let invalid = |msg: String| DatasetError::Invalid {
            path: self.root.clone(),
            msg,
        };
        if !requested.is_empty() {
            for r in requested {
                if !classes.contains(r) {
                    return Err(invalid(format!(
                        "--pass {r:?} is not a class; classes are {classes:?}"
                    )));
                }
            }
            return Ok(requested.to_vec());
        }
        let found: Vec<String> = classes
            .iter()
            .filter(|c| DEFAULT_PASS_NAMES.contains(&c.to_lowercase().as_str()))
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(invalid(format!(
                "no class looks defect-free (tried {DEFAULT_PASS_NAMES:?}); name the PASS classes with --pass CLASS; classes are {classes:?}"
            )));
        }
        Ok(found)
    }

    /// The split names the rows carry, for messages: `"train, val"` (or "no splits").
    pub fn split_names(&self) -> String {
        let names: BTreeSet<&str> = self
            .samples
            .iter()
            .filter_map(|s| s.split.as_deref())
            .collect();
        if names.is_empty() {
            "no splits".into()
        } else {
            names.into_iter().collect::<Vec<_>>().join(", ")
        }
    }

    /// Training and validation rows of a classifier: [`Self::train_val_rows`], then every
    /// class must have training rows and the training split at least two classes.
    pub fn train_val(
        &self,
        train_split: &str,
        val_split: &str,
        fraction: f64,
        seed: u64,
    ) -> Result<(Vec<Sample>, Vec<Sample>), DatasetError> {
        let (train, val) = self.train_val_rows(train_split, val_split, fraction, seed)?;
        let invalid = |msg: String| DatasetError::Invalid {
            path: self.root.clone(),
            msg,
        };
        let train_classes: BTreeSet<&str> = train.iter().map(|s| s.label.as_str()).collect();
        if train_classes.len() < 2 {
            return Err(invalid(format!(
                "training a classifier needs at least two classes (the good one and a defect), found {train_classes:?} in the training split; with good images only, train an anomaly model instead (`inspector train --mode anomaly`, or \"Anomaly: good parts only\" in the Train tab)"
            )));
        }
        for c in self.classes() {
            if !train_classes.contains(c.as_str()) && val.iter().any(|s| s.label == c) {
                return Err(invalid(format!(
                    "class {c:?} has validation images but no training images"
                )));
            }
        }
        if let Some(s) = val
            .iter()
            .find(|s| !train_classes.contains(s.label.as_str()))
        {
            return Err(invalid(format!(
                "val label {:?} ({}) is unknown to the training split",
                s.label, s.rel_path
            )));
        }
        Ok((train, val))
    }

    /// Training and validation rows, whatever their classes (anomaly training reads only the
    /// PASS rows of them). When `val_split` names no rows, a seeded, stratified val split is
    /// carved out of the training rows (`fraction` of each class, whole groups).
    pub fn train_val_rows(
        &self,
        train_split: &str,
        val_split: &str,
        fraction: f64,
        seed: u64,
    ) -> Result<(Vec<Sample>, Vec<Sample>), DatasetError> {
        let has_splits = self.samples.iter().any(|s| s.split.is_some());
        let mut train = if has_splits {
            self.split(train_split)
        } else {
            self.samples.clone()
        };
        let mut val = if has_splits {
            self.split(val_split)
        } else {
            Vec::new()
        };
        let invalid = |msg: String| DatasetError::Invalid {
            path: self.root.clone(),
            msg,
        };
        if train.is_empty() {
            return Err(invalid(format!(
                "no rows in the training split {train_split:?}; the dataset has: {}",
                self.split_names()
            )));
        }
        if val.is_empty() {
            (train, val) = carve_val(train, fraction, seed);
        }
        Ok((train, val))
    }
}

/// Seeded, stratified, group-preserving val split: per class (a group's class is its most
/// common label), whole groups in a seeded order go to val until `fraction` of that class's
/// images is reached; every class with at least two groups gives one.
pub fn carve_val(rows: Vec<Sample>, fraction: f64, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let mut groups: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for (i, s) in rows.into_iter().enumerate() {
        let key = s.group.clone().unwrap_or_else(|| format!("\u{0}row{i}"));
        groups.entry(key).or_default().push(s);
    }
    let mut by_class: BTreeMap<String, Vec<(String, Vec<Sample>)>> = BTreeMap::new();
    for (key, members) in groups {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in &members {
            *counts.entry(m.label.as_str()).or_default() += 1;
        }
        let mut best: Vec<(&str, usize)> = counts.into_iter().collect();
        best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let class = best[0].0.to_owned();
        by_class.entry(class).or_default().push((key, members));
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, mut gs) in by_class {
        gs.sort_by_key(|(k, _)| splitmix(seed ^ fnv(k)));
        let total: usize = gs.iter().map(|(_, m)| m.len()).sum();
        let target = (total as f64 * fraction).round().max(1.0) as usize;
        let mut taken = 0;
        let n_groups = gs.len();
        for (i, (_, members)) in gs.into_iter().enumerate() {
            if taken < target && i + 1 < n_groups {
                taken += members.len();
                val.extend(members);
            } else {
                train.extend(members);
            }
        }
    }
    (train, val)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn splitmix(x: u64) -> u64 {
    kernels::rng::SplitMix64::new(x).next_u64()
}

/// A decoded 8-bit image in a layout the engine takes.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// Pixels, tightly packed.
    pub data: Vec<u8>,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Layout.
    pub format: PixelFormat,
}

impl DecodedImage {
    /// A whole-image frame view.
    pub fn frame(&self) -> Frame<'_> {
        Frame::new(&self.data, self.width, self.height, self.format)
    }
}

/// Decodes an image file to 8-bit gray, RGB or RGBA (16-bit and float images are converted).
/// Errors name the problem: empty file, unknown format, truncated data, too large.
///
/// A file cut short is refused, whatever its format: the PNG, BMP and TIFF decoders report
/// the missing data, but the JPEG decoder fills a cut-off scan with grey and returns no error,
/// so JPEG (and PNG) streams are first checked to run to their end marker.
pub fn decode_image(path: &Path) -> Result<DecodedImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.is_empty() {
        return Err("empty (0-byte) file".into());
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if let Some(why) = truncation(reader.format(), &bytes) {
        return Err(format!("cannot decode (truncated): {why}"));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(2 << 30);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode (damaged, truncated or unsupported): {e}"))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err("image has no pixels".into());
    }
    let (data, format) = match img.color().channel_count() {
        1 | 2 => (img.into_luma8().into_raw(), PixelFormat::Gray8),
        3 => (img.into_rgb8().into_raw(), PixelFormat::Rgb8),
        _ => (img.into_rgba8().into_raw(), PixelFormat::Rgba8),
    };
    Ok(DecodedImage {
        data,
        width,
        height,
        format,
    })
}

/// Why an image stream of `format` is cut short, or None when it runs to its end marker (or
/// the format has no such check; its decoder reports missing data itself).
pub fn truncation(format: Option<image::ImageFormat>, b: &[u8]) -> Option<&'static str> {
    match format? {
        image::ImageFormat::Jpeg => jpeg_truncation(b),
        image::ImageFormat::Png => png_truncation(b),
        _ => None,
    }
}

/// Walks a JPEG's segments (skipping their payloads and the entropy-coded scans) to the
/// end-of-image marker. An embedded thumbnail's markers sit inside a skipped segment.
fn jpeg_truncation(b: &[u8]) -> Option<&'static str> {
    const CUT: &str = "the JPEG data ends before its end-of-image marker (the file was cut short)";
    if b.len() < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return None; // not a JPEG start: the decoder names the problem
    }
    let mut i = 2;
    loop {
        // The next marker: 0xFF (any number of fill bytes) then the marker code.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&m) = b.get(i) else {
            return Some(CUT);
        };
        i += 1;
        match m {
            0xD9 => return None,
            0x00 | 0x01 | 0xD0..=0xD7 => continue, // no length
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        else {
            return Some(CUT);
        };
        if len < 2 || i + len > b.len() {
            return Some(CUT);
        }
        i += len;
        if m == 0xDA {
            // Entropy-coded data: runs to the first marker that is not a stuffed 0xFF00 or a
            // restart marker.
            loop {
                let rest = b.get(i..).unwrap_or(&[]);
                let j = i + rest.iter().position(|&x| x == 0xFF).unwrap_or(rest.len());
                let Some(&n) = b.get(j + 1) else {
                    return Some(CUT);
                };
                if n == 0x00 || (0xD0..=0xD7).contains(&n) {
                    i = j + 2;
                } else if n == 0xFF {
                    i = j + 1;
                } else {
                    i = j;
                    break;
                }
            }
        }
    }
}

/// Walks a PNG's chunks to IEND.
fn png_truncation(b: &[u8]) -> Option<&'static str> {
    const CUT: &str = "the PNG data ends before its IEND chunk (the file was cut short)";
    let mut i = 8;
    loop {
        let Some(head) = b.get(i..i + 8) else {
            return Some(CUT);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = i.checked_add(12)?.checked_add(len)?;
        if end > b.len() {
            return Some(CUT);
        }
        if &head[4..8] == b"IEND" {
            return None;
        }
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file cut short is unreadable in every supported format, at any cut, and a whole file
    /// decodes; a real JPEG from the demo set cut to 3000 bytes included.
    #[test]
    fn truncated_images_of_every_format_are_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let gray = image::GrayImage::from_fn(120, 90, |x, y| {
            image::Luma([((x * 7 + y * 13 + (x * y) % 23) % 256) as u8])
        });
        let rgb = image::RgbImage::from_fn(80, 60, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x * y) % 251) as u8])
        });
        let mut files = Vec::new();
        for ext in ["png", "jpg", "bmp", "tiff"] {
            for (kind, img) in [
                ("gray", image::DynamicImage::ImageLuma8(gray.clone())),
                ("rgb", image::DynamicImage::ImageRgb8(rgb.clone())),
            ] {
                let p = dir.path().join(format!("{kind}.{ext}"));
                img.save(&p).unwrap();
                files.push(p);
            }
        }
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../datasets/magnetic-tile-demo/MT_Crack/Imgs/exp1_num_32128.jpg");
        let real = dir.path().join("real.jpg");
        std::fs::copy(&demo, &real).unwrap();
        files.push(real);
        for p in &files {
            let bytes = std::fs::read(p).unwrap();
            assert!(decode_image(p).is_ok(), "{} whole", p.display());
            let n = bytes.len();
            for cut in [3000, n / 2, n * 9 / 10, n - 2, n - 1, 10] {
                if cut >= n {
                    continue;
                }
                let q = dir.path().join(format!(
                    "cut-{cut}-{}",
                    p.file_name().unwrap().to_string_lossy()
                ));
                std::fs::write(&q, &bytes[..cut]).unwrap();
                let e = decode_image(&q).expect_err(&format!("{} cut to {cut} bytes", p.display()));
                assert!(
                    e.contains("truncated") || e.contains("cannot decode"),
                    "{}: {e}",
                    q.display()
                );
            }
        }
        // A JPEG with bytes after its end marker (some cameras pad) is whole.
        let mut padded = std::fs::read(dir.path().join("rgb.jpg")).unwrap();
        padded.extend_from_slice(&[0; 16]);
        let p = dir.path().join("padded.jpg");
        std::fs::write(&p, padded).unwrap();
        assert!(decode_image(&p).is_ok());
    }
}
