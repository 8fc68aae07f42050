//! Files on disk that the station and the datasets both read: which files are images, and a
//! content fingerprint for model files and manifests.

use std::path::{Path, PathBuf};

/// Image file extensions a folder replay picks up.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif"];

/// Every image file below `dir` (8 levels deep at most), unsorted.
pub fn list_images(dir: &Path, out: &mut Vec<PathBuf>) {
    walk_images(dir, out, 0)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_images(&p, out, depth + 1);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

/// FNV-1a, 64 bit: a content fingerprint (not a security hash).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
