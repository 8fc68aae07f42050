//! Rejected frames archived as PNG files next to the database, kept under a disk budget by
//! deleting the oldest first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::schema::*;
use crate::data::dataset::DecodedImage;

/// Pixels to archive with a row.
#[derive(Clone, Debug)]
pub struct Archive {
    /// The frame.
    pub image: Arc<DecodedImage>,
    /// The heatmap as RGBA, `(width, height, pixels)`.
    pub heatmap_rgba: (u32, u32, Vec<u8>),
}

/// Writes archived images and keeps them under the budget, deleting the oldest files.
pub(super) struct Archiver {
    pub(super) dir: PathBuf,
    pub(super) budget: u64,
    pub(super) total: u64,
    pub(super) files: VecDeque<(PathBuf, u64)>,
}

impl Archiver {
    pub(super) fn new(dir: PathBuf, budget: u64) -> Self {
        let mut files = Vec::new();
        collect_files(&dir, &mut files, 0);
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let total = files.iter().map(|f| f.1).sum();
        Self {
            dir,
            budget,
            total,
            files: files.into(),
        }
    }

    pub(super) fn store(&mut self, row: &mut InspectionRow, a: &Archive) -> Result<(), String> {
        let day = row.ts.get(..10).unwrap_or("undated").to_string();
        let dir = self.dir.join(&day);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create archive folder {}: {e}", dir.display()))?;
        let stem = format!("{}-{:08}", sanitize(&row.run_id), row.seq);
        let img_rel = format!("{day}/{stem}.png");
        let heat_rel = format!("{day}/{stem}-heat.png");
        let img = &a.image;
        let color = match img.format {
            kernels::PixelFormat::Gray8 => image::ExtendedColorType::L8,
            kernels::PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
            kernels::PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
        };
        let mut written = 0;
        for (rel, data, w, h, c) in [
            (&img_rel, &img.data[..], img.width, img.height, color),
            (
                &heat_rel,
                &a.heatmap_rgba.2[..],
                a.heatmap_rgba.0,
                a.heatmap_rgba.1,
                image::ExtendedColorType::Rgba8,
            ),
        ] {
            let path = self.dir.join(rel);
            image::save_buffer_with_format(&path, data, w, h, c, image::ImageFormat::Png)
                .map_err(|e| format!("cannot archive {}: {e}", path.display()))?;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.files.push_back((path, size));
            self.total += size;
            written += 1;
        }
        debug_assert_eq!(written, 2);
        row.image_path = Some(img_rel);
        row.heatmap_path = Some(heat_rel);
        while self.total > self.budget {
            let Some((p, size)) = self.files.pop_front() else {
                break;
            };
            let _ = std::fs::remove_file(&p);
            self.total = self.total.saturating_sub(size);
        }
        Ok(())
    }
}

pub(super) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>, depth: usize) {
    if depth > 3 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out, depth + 1);
        } else if let Ok(m) = e.metadata() {
            out.push((p, m.len()));
        }
    }
}
