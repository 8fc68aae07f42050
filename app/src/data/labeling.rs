//! Editable datasets for the Label tab: rows with optional labels, masks as PNG files the size of
//! their image, and a `manifest.csv` that is always written atomically (temporary file, then
//! rename), so a crash never leaves half a manifest.
//!
//! A folder opens in any of three forms: with `manifest.csv` (the training layout; empty labels
//! allowed here and skipped by training), one folder per class (converted to a manifest on the
//! first save), or a plain folder of unlabelled images.

use std::path::{Path, PathBuf};

use crate::data::dataset::{self, Dataset, Layout};

/// One image of a dataset being labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRow {
    /// Path relative to the dataset folder, `/`-separated.
    pub path: String,
    /// Class, or None while unlabelled.
    pub label: Option<String>,
    /// Split ("train", "val", …), if any.
    pub split: Option<String>,
    /// Mask PNG relative to the dataset folder, if any.
    pub mask: Option<String>,
    /// Group (physical part), if any.
    pub group: Option<String>,
}

/// A dataset being labelled.
#[derive(Clone, Debug)]
pub struct LabelSet {
    /// The folder.
    pub root: PathBuf,
    /// The rows, in manifest order.
    pub rows: Vec<LabelRow>,
    /// Known classes, in the order number keys pick them.
    pub classes: Vec<String>,
    /// Images an engineer checked and whose label stands although the model disagrees
    /// (`checked.txt` in the dataset folder, one path per line).
    pub checked: std::collections::BTreeSet<String>,
}

/// The file that lists checked images, in the dataset folder.
pub const CHECKED_FILE: &str = "checked.txt";

/// Writes the checked list atomically.
pub fn write_checked(
    root: &Path,
    checked: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let mut text = String::new();
    for p in checked {
        text.push_str(p);
        text.push('\n');
    }
    write_atomic(&root.join(CHECKED_FILE), text.as_bytes())
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl LabelSet {
    /// Opens `root` in any of the three forms.
    pub fn open(root: &Path) -> Result<Self, String> {
        if !root.is_dir() {
            return Err(format!("{} is not a folder", root.display()));
        }
        let manifest = root.join("manifest.csv");
        let rows = if manifest.is_file() {
            read_manifest(&manifest)?
        } else {
            match Dataset::open(root) {
                Ok(ds) if ds.layout == Layout::ClassFolders && !ds.samples.is_empty() => ds
                    .samples
                    .iter()
                    .map(|s| LabelRow {
                        path: rel(root, &s.path),
                        label: Some(s.label.clone()),
                        split: s.split.clone(),
                        mask: None,
                        group: None,
                    })
                    .collect(),
                _ => {
                    let mut files = Vec::new();
                    crate::data::files::list_images(root, &mut files);
                    files.sort();
                    files
                        .iter()
                        .filter(|p| !p.components().any(|c| c.as_os_str() == "masks"))
                        .map(|p| LabelRow {
                            path: rel(root, p),
                            label: None,
                            split: None,
                            mask: None,
                            group: None,
                        })
                        .collect()
                }
            }
        };
        let mut classes: Vec<String> = Vec::new();
        for r in &rows {
            if let Some(l) = &r.label
                && !classes.contains(l)
            {
                classes.push(l.clone());
            }
        }
        classes.sort();
        let checked = std::fs::read_to_string(root.join(CHECKED_FILE))
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            root: root.to_path_buf(),
            rows,
            classes,
            checked,
        })
    }

    /// Creates an empty dataset folder with a manifest.
    pub fn create(root: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        if root.join("manifest.csv").exists() {
            return Self::open(root);
        }
        let set = Self {
            root: root.to_path_buf(),
            rows: Vec::new(),
            classes: Vec::new(),
            checked: Default::default(),
        };
        write_manifest(&set.root, &set.rows)?;
        Ok(set)
    }

    /// Where row `i`'s mask is (or will be) stored.
    pub fn mask_path(&self, i: usize) -> (String, PathBuf) {
        let r = self.rows[i]
            .mask
            .clone()
            .unwrap_or_else(|| format!("masks/{}.png", self.rows[i].path.replace('/', "__")));
        let p = self.root.join(&r);
        (r, p)
    }

    /// Adds a class (no-op when known). Returns its index.
    pub fn add_class(&mut self, name: &str) -> Result<usize, String> {
        let name = name.trim();
        if name.is_empty() || name.contains([',', '"', '\n']) {
            return Err(format!("{name:?} is not a usable class name"));
        }
        if let Some(i) = self.classes.iter().position(|c| c == name) {
            return Ok(i);
        }
        self.classes.push(name.to_string());
        Ok(self.classes.len() - 1)
    }

    /// A fingerprint of the labels: FNV-1a of the manifest text this set would write.
    pub fn fingerprint(&self) -> String {
        format!(
            "{:016x}",
            crate::data::files::fnv1a(manifest_text(&self.rows).as_bytes())
        )
    }
}

/// Reads a manifest, allowing empty labels (unlabelled rows).
pub fn read_manifest(path: &Path) -> Result<Vec<LabelRow>, String> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let headers = r
        .headers()
        .map_err(|e| format!("{}: bad header: {e}", path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let Some(pcol) = col("path") else {
        return Err(format!(
            "{}: the header must have a `path` column (path,label,split,mask,group)",
            path.display()
        ));
    };
    let (lcol, scol, mcol, gcol) = (col("label"), col("split"), col("mask"), col("group"));
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("{} line {}: {e}", path.display(), i + 2))?;
        let get = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let Some(p) = get(Some(pcol)) else { continue };
        rows.push(LabelRow {
            path: p,
            label: get(lcol),
            split: get(scol),
            mask: get(mcol),
            group: get(gcol),
        });
    }
    Ok(rows)
}

fn manifest_text(rows: &[LabelRow]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["path", "label", "split", "mask", "group"]);
    for r in rows {
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        let _ = w.write_record([
            r.path.clone(),
            o(&r.label),
            o(&r.split),
            o(&r.mask),
            o(&r.group),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then
/// renamed over the target. The file keeps its permissions (a new one gets the permissions any
/// newly created file gets, 0644 under the usual umask): the temporary file is private (0600)
/// until it takes the target's place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Created like any new file (the umask applies).
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| format!("cannot keep the permissions of {}: {e}", path.display()))?;
    }
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(())
}

/// Writes `manifest.csv` atomically.
pub fn write_manifest(root: &Path, rows: &[LabelRow]) -> Result<(), String> {
    write_atomic(&root.join("manifest.csv"), manifest_text(rows).as_bytes())
}

/// Encodes a 0/255 mask as an 8-bit gray PNG and writes it atomically.
pub fn write_mask(path: &Path, width: u32, height: u32, mask: &[u8]) -> Result<(), String> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(mask, width, height, image::ExtendedColorType::L8)
        .map_err(|e| format!("cannot encode mask {}: {e}", path.display()))?;
    write_atomic(path, &png)
}

/// Reads a mask PNG as 0/255 bytes, resized to `width`×`height` when its size differs.
pub fn read_mask(path: &Path, width: u32, height: u32) -> Option<Vec<u8>> {
    let img = dataset::decode_image(path).ok()?;
    let gray = match img.format {
        kernels::PixelFormat::Gray8 => img.data,
        kernels::PixelFormat::Rgb8 => img.data.chunks(3).map(|p| p[0]).collect(),
        kernels::PixelFormat::Rgba8 => img.data.chunks(4).map(|p| p[0]).collect(),
    };
    let buf = image::GrayImage::from_raw(img.width, img.height, gray)?;
    let buf = if (img.width, img.height) != (width, height) {
        image::imageops::resize(&buf, width, height, image::imageops::FilterType::Nearest)
    } else {
        buf
    };
    // The values as stored: soft (anti-aliased) edges survive an edit, an undo and a save.
    Some(buf.into_raw())
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_folder_opens_unlabelled_and_saves_atomically() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.png", "a.png"] {
            image::GrayImage::new(4, 3)
                .save(dir.path().join(n))
                .unwrap();
        }
        let mut set = LabelSet::open(dir.path()).unwrap();
        assert_eq!(set.rows.len(), 2);
        assert_eq!(set.rows[0].path, "a.png");
        assert!(set.rows.iter().all(|r| r.label.is_none()));
        let i = set.add_class("Crack").unwrap();
        set.rows[0].label = Some(set.classes[i].clone());
        write_manifest(&set.root, &set.rows).unwrap();
        let again = LabelSet::open(dir.path()).unwrap();
        assert_eq!(again.rows[0].label.as_deref(), Some("Crack"));
        assert_eq!(again.rows[1].label, None);
        assert_eq!(again.classes, ["Crack"]);
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(set.add_class("a,b").is_err());
    }

    #[test]
    fn masks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("masks/x.png");
        let mask: Vec<u8> = (0..12).map(|i| if i % 3 == 0 { 255 } else { 0 }).collect();
        write_mask(&p, 4, 3, &mask).unwrap();
        assert_eq!(read_mask(&p, 4, 3).unwrap(), mask);
        assert_eq!(read_mask(&p, 8, 6).unwrap().len(), 48);
    }

    #[test]
    fn masks_keep_their_soft_edges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.png");
        let values = vec![0, 64, 128, 255, 200, 1];
        write_mask(&p, 3, 2, &values).unwrap();
        assert_eq!(read_mask(&p, 3, 2), Some(values));
    }

    #[test]
    fn the_checked_list_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.csv"), "path,label\na.png,good\n").unwrap();
        let mut set = LabelSet::open(dir.path()).unwrap();
        assert!(set.checked.is_empty());
        set.checked.insert("a.png".into());
        set.checked.insert("sub/b c.png".into());
        write_checked(dir.path(), &set.checked).unwrap();
        let again = LabelSet::open(dir.path()).unwrap();
        assert_eq!(again.checked, set.checked);
    }

    #[cfg(unix)]
    #[test]
    fn rewritten_files_keep_their_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let set_mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let manifest = dir.path().join("manifest.csv");
        std::fs::write(&manifest, "path,label\n").unwrap();
        let mask = dir.path().join("masks/a.png.png");
        write_mask(&mask, 2, 2, &[0, 255, 0, 0]).unwrap();
        // A new file gets what any new file gets here (not the temporary file's 0600).
        std::fs::write(dir.path().join("plain"), b"x").unwrap();
        assert_eq!(mode(&mask), mode(&dir.path().join("plain")));
        for m in [0o644, 0o664, 0o640] {
            set_mode(&manifest, m);
            set_mode(&mask, m);
            write_manifest(dir.path(), &[]).unwrap();
            write_mask(&mask, 2, 2, &[255, 255, 0, 0]).unwrap();
            assert_eq!(mode(&manifest), m, "manifest.csv");
            assert_eq!(mode(&mask), m, "mask");
        }
        assert_eq!(read_mask(&mask, 2, 2).unwrap(), [255, 255, 0, 0]);
    }
}
