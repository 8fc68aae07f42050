//! Pixels for people: frames and heatmaps as RGBA / egui images. Called from workers, so the UI
//! thread only uploads textures.

use kernels::{Heatmap, PixelFormat};

use crate::data::dataset::DecodedImage;

/// Heatmap values scaled to 0..=1 by the largest positive value (negative evidence is 0).
///
/// A FAIL verdict can rest on evidence that is negative everywhere (a low threshold, or a
/// max-score model whose positions all lean to PASS); with `fail`, such a map is shown relative
/// to its own range instead, so a rejected part always shows where its evidence is strongest.
/// A PASS verdict with no positive evidence shows nothing.
pub fn normalized(h: &Heatmap, fail: bool) -> Vec<f32> {
    let max = h.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![0.0; h.values.len()];
    }
    if max > 0.0 {
        return h.values.iter().map(|v| (v / max).clamp(0.0, 1.0)).collect();
    }
    let min = h.values.iter().copied().fold(f32::INFINITY, f32::min);
    if !fail || max - min <= f32::EPSILON * max.abs().max(1.0) {
        return vec![0.0; h.values.len()];
    }
    h.values
        .iter()
        .map(|v| ((v - min) / (max - min)).clamp(0.0, 1.0))
        .collect()
}

/// The colour of heat `t` in 0..=1: dark red → red → yellow, opaque in proportion to heat.
pub fn heat_color(t: f32) -> [u8; 4] {
    let t = t.clamp(0.0, 1.0);
    let r = (255.0 * (0.5 + t).min(1.0)) as u8;
    let g = (255.0 * ((t - 0.5) * 2.0).clamp(0.0, 1.0)) as u8;
    let a = (255.0 * t.powf(0.8)) as u8;
    [r, g, 0, a]
}

/// The heatmap as RGBA at its own resolution: `(width, height, pixels)`; `fail` as in
/// [`normalized`].
pub fn heatmap_rgba(h: &Heatmap, fail: bool) -> (u32, u32, Vec<u8>) {
    let px = normalized(h, fail)
        .into_iter()
        .flat_map(heat_color)
        .collect();
    (h.width, h.height, px)
}

/// A frame as egui pixels, shrunk (box filter) so its longer side is at most `max_side`.
pub fn frame_image(img: &DecodedImage, max_side: u32) -> egui::ColorImage {
    let (w, h) = (img.width, img.height);
    let step = w.max(h).div_ceil(max_side.max(1)).max(1);
    let (ow, oh) = (w.div_ceil(step), h.div_ceil(step));
    let bpp = img.format.bytes_per_pixel() as usize;
    let mut out = Vec::with_capacity((ow * oh) as usize);
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut acc, mut n) = ([0u32; 3], 0u32);
            for y in (oy * step)..((oy + 1) * step).min(h) {
                for x in (ox * step)..((ox + 1) * step).min(w) {
                    let i = (y as usize * w as usize + x as usize) * bpp;
                    let p = &img.data[i..i + bpp];
                    let rgb = match img.format {
                        PixelFormat::Gray8 => [p[0]; 3],
                        PixelFormat::Rgb8 | PixelFormat::Rgba8 => [p[0], p[1], p[2]],
                    };
                    for c in 0..3 {
                        acc[c] += rgb[c] as u32;
                    }
                    n += 1;
                }
            }
            let n = n.max(1);
            out.push(egui::Color32::from_rgb(
                (acc[0] / n) as u8,
                (acc[1] / n) as u8,
                (acc[2] / n) as u8,
            ));
        }
    }
    egui::ColorImage::new([ow as usize, oh as usize], out)
}

/// The heatmap as an egui image (linear filtering makes it smooth on screen).
pub fn heatmap_image(h: &Heatmap, fail: bool) -> egui::ColorImage {
    let (w, hh, px) = heatmap_rgba(h, fail);
    egui::ColorImage::from_rgba_unmultiplied([w as usize, hh as usize], &px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_and_averages() {
        let img = DecodedImage {
            data: vec![0, 255, 0, 255, 10, 10, 10, 10, 7, 7, 7, 7],
            width: 4,
            height: 3,
            format: PixelFormat::Gray8,
        };
        let c = frame_image(&img, 2);
        assert_eq!(c.size, [2, 2]);
        // First block: 0,255,10,10 → 68.
        assert_eq!(c.pixels[0], egui::Color32::from_gray(68));
        assert_eq!(c.pixels[2], egui::Color32::from_gray(7));
    }

    #[test]
    fn heat_is_normalised() {
        let h = Heatmap {
            width: 2,
            height: 1,
            class_index: 0,
            values: vec![-3.0, 2.0],
        };
        assert_eq!(normalized(&h, false), vec![0.0, 1.0]);
        assert_eq!(normalized(&h, true), vec![0.0, 1.0]);
        let (w, hh, px) = heatmap_rgba(&h, true);
        assert_eq!((w, hh, px.len()), (2, 1, 8));
        assert_eq!(px[3], 0);
        assert_eq!(px[7], 255);
        // No positive evidence: nothing on a PASS, the map's own range on a FAIL.
        let neg = Heatmap {
            values: vec![-4.0, -2.0, -3.0],
            width: 3,
            ..h
        };
        assert_eq!(normalized(&neg, false), vec![0.0, 0.0, 0.0]);
        assert_eq!(normalized(&neg, true), vec![0.0, 1.0, 0.5]);
        let flat = Heatmap {
            values: vec![-1.0; 3],
            ..neg
        };
        assert_eq!(normalized(&flat, true), vec![0.0, 0.0, 0.0]);
    }
}
