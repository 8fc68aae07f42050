//! Shared helpers for the integration tests: generated datasets in temporary folders.

use std::path::Path;

use kernels::rng::SplitMix64;

/// Writes a `w × h` gray PNG of class `class` ("good": noise; "scratch": a bright line;
/// "spot": a dark disc), seeded.
pub fn write_synthetic(path: &Path, class: &str, w: u32, h: u32, seed: u64) {
    write_synthetic_with_mask(path, None, class, w, h, seed);
}

/// [`write_synthetic`], also writing the defect mask (255 on the defect, 0 elsewhere) to `mask`.
pub fn write_synthetic_with_mask(
    path: &Path,
    mask: Option<&Path>,
    class: &str,
    w: u32,
    h: u32,
    seed: u64,
) {
    let mut rng = SplitMix64::new(seed);
    let mut img = image::GrayImage::new(w, h);
    let mut m = image::GrayImage::new(w, h);
    for p in img.pixels_mut() {
        p.0[0] = 110 + (rng.below(40) as u8);
    }
    match class {
        "scratch" => {
            let y0 = rng.below(h as u64 / 2) as i64 + h as i64 / 4;
            let slope = rng.uniform(-0.3, 0.3);
            for x in 0..w {
                let y = y0 + (slope * x as f32) as i64;
                for dy in -1..=1 {
                    let yy = y + dy;
                    if (0..h as i64).contains(&yy) {
                        img.put_pixel(x, yy as u32, image::Luma([235]));
                        m.put_pixel(x, yy as u32, image::Luma([255]));
                    }
                }
            }
        }
        "spot" => {
            let (cx, cy) = (
                rng.below(w as u64 / 2) + w as u64 / 4,
                rng.below(h as u64 / 2) + h as u64 / 4,
            );
            let r = 3 + rng.below(3) as i64;
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
                    if dx * dx + dy * dy <= r * r {
                        img.put_pixel(x, y, image::Luma([20]));
                        m.put_pixel(x, y, image::Luma([255]));
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    img.save(path).expect("save png");
    if let Some(mask) = mask {
        m.save(mask).expect("save mask png");
    }
}

/// The classes of [`synthetic_manifest`].
pub const CLASSES: [&str; 3] = ["good", "scratch", "spot"];

/// A manifest dataset of the three synthetic classes with `train` and `val` rows per class,
/// images of varying size. Returns the manifest rows written.
pub fn synthetic_manifest(root: &Path, train: usize, val: usize, seed: u64) -> Vec<String> {
    synthetic_dataset(root, train, val, seed, false)
}

/// [`synthetic_manifest`] with a mask file for every image (`<image>_mask.png`, in the `mask`
/// column): the defect pixels of "scratch" and "spot", empty for "good".
pub fn synthetic_manifest_with_masks(
    root: &Path,
    train: usize,
    val: usize,
    seed: u64,
) -> Vec<String> {
    synthetic_dataset(root, train, val, seed, true)
}

fn synthetic_dataset(root: &Path, train: usize, val: usize, seed: u64, masks: bool) -> Vec<String> {
    let mut rows = vec!["path,label,split,mask,group".to_owned()];
    let mut k = 0u64;
    for class in CLASSES {
        for i in 0..train + val {
            let split = if i < train { "train" } else { "val" };
            let rel = format!("{class}/{split}_{i}.png");
            let (w, h) = (40 + (k % 7) as u32 * 3, 36 + (k % 5) as u32 * 4);
            let mask = masks.then(|| format!("{class}/{split}_{i}_mask.png"));
            write_synthetic_with_mask(
                &root.join(&rel),
                mask.as_ref().map(|m| root.join(m)).as_deref(),
                class,
                w,
                h,
                seed.wrapping_add(k),
            );
            rows.push(format!(
                "{rel},{class},{split},{},",
                mask.unwrap_or_default()
            ));
            k += 1;
        }
    }
    std::fs::write(root.join("manifest.csv"), rows.join("\n") + "\n").expect("write manifest");
    rows
}

/// A fresh temp folder with [`synthetic_manifest`] in it (with `masks`,
/// [`synthetic_manifest_with_masks`]); the folder and the manifest's rows.
pub fn synthetic_dir(
    train: usize,
    val: usize,
    seed: u64,
    masks: bool,
) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let rows = synthetic_dataset(dir.path(), train, val, seed, masks);
    (dir, rows)
}
