//! Seeded data augmentation for training: random crop (as a region of interest, so it goes
//! through the one preprocessing contract), flips, small rotations, brightness and contrast.
//!
//! Every random draw comes from a generator seeded by `(seed, epoch, sample index)`, so the same
//! seed gives the same augmented tensors in any order and on any thread.

use kernels::rng::SplitMix64;
use kernels::{Frame, InputSpec, Roi};
use serde::{Deserialize, Serialize};

/// Augmentation switches and strengths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Random horizontal and vertical flips.
    pub flips: bool,
    /// Largest rotation in degrees (0 = off).
    pub rotate_degrees: f32,
    /// Largest brightness shift, in 0..1 pixel units (0 = off).
    pub brightness: f32,
    /// Largest relative contrast change (0 = off).
    pub contrast: f32,
    /// Smallest crop side as a fraction of the image side (1 = off).
    pub min_crop: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flips: true,
            rotate_degrees: 10.0,
            brightness: 0.1,
            contrast: 0.15,
            min_crop: 0.8,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn off() -> Self {
        Self {
            flips: false,
            rotate_degrees: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            min_crop: 1.0,
        }
    }
}

/// The generator for one sample in one epoch.
pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> SplitMix64 {
    let mut r = SplitMix64::new(seed ^ 0xA076_1D64_78BD_642F);
    let a = r.next_u64() ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    SplitMix64::new(a ^ (index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
}

/// An augmented, normalised `[c, h, w]` tensor for `frame`.
pub fn augmented(
    input: &InputSpec,
    frame: &Frame<'_>,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
) -> Result<Vec<f32>, String> {
    augmented_keeping(input, frame, cfg, rng, None)
}

/// The start and length of a random crop of `len` pixels whose length is at least `min_frac` of
/// it and which contains `[keep_start, keep_start + keep_len)` when given.
fn crop_range(
    len: u32,
    min_frac: f32,
    keep: Option<(u32, u32)>,
    rng: &mut SplitMix64,
) -> (u32, u32) {
    let f = rng.uniform(min_frac, 1.0);
    let mut size = ((len as f32 * f).round() as u32).clamp(1, len);
    let (lo, hi) = match keep {
        Some((ks, kl)) => {
            let kl = kl.clamp(1, len);
            let ks = ks.min(len - kl);
            size = size.max(kl);
            // Starts that keep the whole region inside the crop.
            ((ks + kl).saturating_sub(size), ks.min(len - size))
        }
        None => (0, len - size),
    };
    (lo + rng.below((hi - lo + 1) as u64) as u32, size)
}

/// [`augmented`], with random crops that never cut into `keep` (e.g. the bounding box of the
/// defect mask), so a defect at the border of an image is not cropped away while its label
/// still says defective.
pub fn augmented_keeping(
    input: &InputSpec,
    frame: &Frame<'_>,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
    keep: Option<Roi>,
) -> Result<Vec<f32>, String> {
    augmented_with_mask(input, frame, None, cfg, rng, keep).map(|(v, _)| v)
}

/// [`augmented_keeping`] that also returns `mask` (a frame of the same size, defect where its
/// first channel is bright) carried through the same crop, resize, flips and rotation, as an
/// `[h, w]` plane in 0..1 at the network's input size. Photometric changes leave it alone.
pub fn augmented_with_mask(
    input: &InputSpec,
    frame: &Frame<'_>,
    mask: Option<&Frame<'_>>,
    cfg: &AugmentConfig,
    rng: &mut SplitMix64,
    keep: Option<Roi>,
) -> Result<(Vec<f32>, Option<Vec<f32>>), String> {
    let crop = cfg.min_crop.clamp(0.1, 1.0);
    let roi = if crop < 1.0 {
        let (x, w) = crop_range(frame.width, crop, keep.map(|k| (k.x, k.width)), rng);
        let (y, h) = crop_range(frame.height, crop, keep.map(|k| (k.y, k.height)), rng);
        Some(Roi {
            x,
            y,
            width: w,
            height: h,
        })
    } else {
        None
    };
    let t = kernels::reference::preprocess_input(input, &Frame { roi, ..*frame })?;
    let (c, h, w) = (
        input.channels as usize,
        input.height as usize,
        input.width as usize,
    );
    let mut v: Vec<f32> = t.into_iter().map(|x| x as f32).collect();
    let mut m: Option<Vec<f32>> = match mask {
        Some(mf) => {
            if (mf.width, mf.height) != (frame.width, frame.height) {
                return Err(format!(
                    "the mask is {}×{} but the image is {}×{}",
                    mf.width, mf.height, frame.width, frame.height
                ));
            }
            let plain = InputSpec {
                channels: 1,
                mean: vec![0.0],
                std: vec![1.0],
                ..input.clone()
            };
            let t = kernels::reference::preprocess_input(&plain, &Frame { roi, ..*mf })?;
            Some(t.into_iter().map(|x| x as f32).collect())
        }
        None => None,
    };

    // Photometric: p' = (p − 0.5)·contrast + 0.5 + brightness, in 0..1 pixel units.
    let contrast = 1.0
        + if cfg.contrast > 0.0 {
            rng.uniform(-cfg.contrast, cfg.contrast)
        } else {
            0.0
        };
    let brightness = if cfg.brightness > 0.0 {
        rng.uniform(-cfg.brightness, cfg.brightness)
    } else {
        0.0
    };
    if contrast != 1.0 || brightness != 0.0 {
        for ch in 0..c {
            let (m, s) = (input.mean[ch], input.std[ch]);
            for x in &mut v[ch * h * w..(ch + 1) * h * w] {
                let p = *x * s + m;
                *x = (((p - 0.5) * contrast + 0.5 + brightness) - m) / s;
            }
        }
    }
    // Geometric: flips and a small rotation about the centre (bilinear, edges clamped).
    let flip_x = cfg.flips && rng.below(2) == 1;
    let flip_y = cfg.flips && rng.below(2) == 1;
    let angle = if cfg.rotate_degrees > 0.0 {
        rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
            .to_radians()
    } else {
        0.0
    };
    if flip_x || flip_y || angle != 0.0 {
        let warp = Warp {
            w,
            h,
            flip_x,
            flip_y,
            angle,
        };
        for ch in 0..c {
            warp.apply(&mut v[ch * h * w..(ch + 1) * h * w]);
        }
        if let Some(m) = &mut m {
            warp.apply(m);
        }
    }
    Ok((v, m))
}

/// Flips and a rotation about the centre of a `w × h` plane.
struct Warp {
    w: usize,
    h: usize,
    flip_x: bool,
    flip_y: bool,
    angle: f32,
}

impl Warp {
    /// Resamples `plane` in place (bilinear, edges clamped).
    fn apply(&self, plane: &mut [f32]) {
        let (w, h) = (self.w, self.h);
        let (sin, cos) = self.angle.sin_cos();
        let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let src = plane.to_vec();
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let mut sx = cos * dx + sin * dy + cx;
                let mut sy = -sin * dx + cos * dy + cy;
                if self.flip_x {
                    sx = w as f32 - 1.0 - sx;
                }
                if self.flip_y {
                    sy = h as f32 - 1.0 - sy;
                }
                let sx = sx.clamp(0.0, w as f32 - 1.0);
                let sy = sy.clamp(0.0, h as f32 - 1.0);
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
                let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
                plane[y * w + x] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
}

/// Downsamples an `[h, w]` mask plane to a `[mh, mw]` grid of cells: a cell is defect when any
/// pixel of its block is at least half bright.
pub fn mask_cells(mask: &[f32], h: usize, w: usize, mh: usize, mw: usize) -> Vec<bool> {
    let mut out = vec![false; mh * mw];
    for y in 0..h {
        let cy = (y * mh / h.max(1)).min(mh.saturating_sub(1));
        for x in 0..w {
            if mask[y * w + x] >= 0.5 {
                let cx = (x * mw / w.max(1)).min(mw.saturating_sub(1));
                out[cy * mw + cx] = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::PixelFormat;

    #[test]
    fn same_seed_same_tensor_other_seed_other_tensor() {
        let input = InputSpec {
            channels: 1,
            height: 24,
            width: 20,
            mean: vec![0.5],
            std: vec![0.25],
            resize: Default::default(),
        };
        let data: Vec<u8> = (0..37 * 29).map(|i| (i * 7 % 251) as u8).collect();
        let frame = Frame::new(&data, 37, 29, PixelFormat::Gray8);
        let cfg = AugmentConfig::default();
        let a = augmented(&input, &frame, &cfg, &mut sample_rng(1, 3, 5)).expect("a");
        let b = augmented(&input, &frame, &cfg, &mut sample_rng(1, 3, 5)).expect("b");
        assert_eq!(a, b);
        let others: Vec<Vec<f32>> = (0..4)
            .map(|e| augmented(&input, &frame, &cfg, &mut sample_rng(2, e, 5)).expect("c"))
            .collect();
        assert!(
            others.iter().any(|o| o != &a),
            "another seed must change the augmentation"
        );
        let plain = augmented(
            &input,
            &frame,
            &AugmentConfig::off(),
            &mut sample_rng(1, 3, 5),
        )
        .expect("off");
        let reference: Vec<f32> = kernels::reference::preprocess_input(&input, &frame)
            .expect("ref")
            .into_iter()
            .map(|x| x as f32)
            .collect();
        assert_eq!(
            plain, reference,
            "with augmentation off, training sees exactly the inference preprocessing"
        );
    }

    /// The mask goes through exactly the geometry of the image: an image that is its own mask
    /// (bright square on black) comes back equal to the augmented mask, whatever the draw.
    #[test]
    fn mask_follows_the_image_geometry() {
        let input = InputSpec {
            channels: 1,
            height: 24,
            width: 24,
            mean: vec![0.0],
            std: vec![1.0],
            resize: Default::default(),
        };
        let (w, h) = (53u32, 41u32);
        let data: Vec<u8> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if (30..45).contains(&x) && (5..20).contains(&y) {
                    255
                } else {
                    0
                }
            })
            .collect();
        let frame = Frame::new(&data, w, h, PixelFormat::Gray8);
        let cfg = AugmentConfig {
            brightness: 0.0,
            contrast: 0.0,
            ..AugmentConfig::default()
        };
        for i in 0..20 {
            let (img, mask) = augmented_with_mask(
                &input,
                &frame,
                Some(&frame),
                &cfg,
                &mut sample_rng(9, 0, i),
                None,
            )
            .expect("augment");
            let mask = mask.expect("mask");
            assert_eq!(img.len(), mask.len());
            for (a, b) in img.iter().zip(&mask) {
                assert!((a * 255.0 - b * 255.0).abs() < 1e-3, "draw {i}: {a} vs {b}");
            }
        }
        let cells = mask_cells(&[0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6], 3, 3, 2, 2);
        assert_eq!(cells, vec![true, false, false, true]);
        let other = Frame::new(&data[..40 * 41], 40, 41, PixelFormat::Gray8);
        assert!(
            augmented_with_mask(
                &input,
                &frame,
                Some(&other),
                &cfg,
                &mut sample_rng(9, 0, 0),
                None
            )
            .is_err(),
            "a mask of another size is refused"
        );
    }

    /// Random crops never cut into the region to keep, even at the image border, and still vary.
    #[test]
    fn crops_keep_the_defect_box() {
        let mut rng = sample_rng(5, 0, 0);
        let mut starts = std::collections::BTreeSet::new();
        for keep in [(0u32, 10u32), (90, 10), (40, 5), (0, 100)] {
            for _ in 0..200 {
                let (start, len) = crop_range(100, 0.5, Some(keep), &mut rng);
                assert!(
                    start + len <= 100 && len >= 50,
                    "crop {start}+{len} leaves the image"
                );
                assert!(
                    start <= keep.0 && keep.0 + keep.1 <= start + len,
                    "crop {start}+{len} cuts into {keep:?}"
                );
                starts.insert(start);
            }
        }
        assert!(starts.len() > 10, "crops should still move around");
    }
}
