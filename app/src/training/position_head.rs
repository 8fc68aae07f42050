//! Fitting the per-position head on cached features: rows of every valid cell labelled from
//! the defect masks (the PASS class outside them), defective images without a mask through
//! their most defect-like cell (re-chosen every epoch by the current head), class-weighted
//! cross-entropy by Adam; and the ensemble of several such heads, each from its own seed,
//! averaged into one head ([`average_with_more`]). [`super::head`] drives it.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kernels::InputSpec;

use super::checkpoint::checkpoint_dir;
use super::features::Features;
use super::head_checkpoint;
use super::nn::{HIDDEN, PositionHead};
use super::tensor_io::tensor_vec;
use super::types::{Cancelled, TrainConfig};
use crate::data::dataset::DecodedImage;
use crate::evaluation::metrics;

/// Position rows per optimisation step.
pub(crate) const ROWS_PER_STEP: usize = 2048;

/// Which valid cells of an image hold defect pixels of its mask (row-major over valid cells).
pub(crate) fn defect_cells(
    input: &InputSpec,
    mask: &DecodedImage,
    grid: (usize, usize),
    valid: (usize, usize),
) -> Vec<bool> {
    let (gw, gh) = grid;
    let (vw, vh) = valid;
    let (cw, ch) = input.content_size(mask.width, mask.height);
    let bpp = mask.format.bytes_per_pixel() as usize;
    let (iw, ih) = (input.width as f64, input.height as f64);
    let mut out = Vec::with_capacity(vw * vh);
    for gy in 0..vh {
        for gx in 0..vw {
            // The cell's input pixels, then the mask pixels they are sampled from.
            let (x0, x1) = (gx as f64 * iw / gw as f64, (gx + 1) as f64 * iw / gw as f64);
            let (y0, y1) = (gy as f64 * ih / gh as f64, (gy + 1) as f64 * ih / gh as f64);
            let sx = |x: f64| (x * mask.width as f64 / cw as f64).clamp(0.0, mask.width as f64);
            let sy = |y: f64| (y * mask.height as f64 / ch as f64).clamp(0.0, mask.height as f64);
            let (mx0, mx1) = (
                sx(x0).floor() as u32,
                (sx(x1).ceil() as u32).min(mask.width),
            );
            let (my0, my1) = (
                sy(y0).floor() as u32,
                (sy(y1).ceil() as u32).min(mask.height),
            );
            let mut hit = false;
            'scan: for my in my0..my1 {
                for mx in mx0..mx1 {
                    if mask.data[(my as usize * mask.width as usize + mx as usize) * bpp] > 127 {
                        hit = true;
                        break 'scan;
                    }
                }
            }
            out.push(hit);
        }
    }
    out
}

/// Per-channel mean and 1/std over every valid training cell.
pub(crate) fn standardisation(f: &Features) -> (Vec<f32>, Vec<f32>) {
    let hw = f.h * f.w;
    let (mut sum, mut sq, mut n) = (vec![0f64; f.c], vec![0f64; f.c], 0f64);
    for (i, map) in f.maps.iter().enumerate() {
        let (vw, vh) = f.valid[i];
        for y in 0..vh {
            for x in 0..vw {
                let p = y * f.w + x;
                for ch in 0..f.c {
                    let v = map[ch * hw + p] as f64;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
                n += 1.0;
            }
        }
    }
    let n = n.max(1.0);
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let inv: Vec<f32> = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| {
            let var = (q / n - (s / n).powi(2)).max(0.0);
            (1.0 / (var.sqrt() + 1e-3)) as f32
        })
        .collect();
    (mean, inv)
}

pub(crate) fn standardise(rows: &mut [f32], mean: &[f32], inv: &[f32]) {
    let c = mean.len();
    for r in rows.chunks_exact_mut(c) {
        for ((v, m), s) in r.iter_mut().zip(mean).zip(inv) {
            *v = (*v - m) * s;
        }
    }
}

/// The defect max pool on one image's cell scores: (best cell, its scores).
pub(crate) fn defect_max(scores: &[f32], k: usize, is_pass: &[bool]) -> (usize, Vec<f32>) {
    let mut best = (f32::NEG_INFINITY, 0);
    for (cell, s) in scores.chunks_exact(k).enumerate() {
        let (mut fail, mut pass) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (j, &v) in s.iter().enumerate() {
            if is_pass[j] {
                pass = pass.max(v);
            } else {
                fail = fail.max(v);
            }
        }
        if fail - pass > best.0 {
            best = (fail - pass, cell);
        }
    }
    (best.1, scores[best.1 * k..(best.1 + 1) * k].to_vec())
}

/// What a head trains on: cached features, labels, masks.
pub(crate) struct HeadData<'a> {
    pub(crate) f: &'a Features,
    pub(crate) labels: &'a [usize],
    pub(crate) masks: &'a [Option<DecodedImage>],
    pub(crate) input: &'a InputSpec,
    pub(crate) is_pass: &'a [bool],
    pub(crate) primary_pass: usize,
    pub(crate) mean: &'a [f32],
    pub(crate) inv: &'a [f32],
}

impl HeadData<'_> {
    pub(crate) fn rows_hint(&self, images: &[usize]) -> usize {
        images
            .iter()
            .map(|&i| self.f.valid[i].0 * self.f.valid[i].1)
            .sum()
    }
}

/// `first` averaged with `cfg.members − 1` more heads fitted on the same images, each from its
/// own seed ([`PositionHead::average`]); `first` itself with one member.
pub(crate) fn average_with_more(
    first: PositionHead,
    d: &HeadData<'_>,
    images: &[usize],
    cfg: &TrainConfig,
    base: &Device,
    cancel: &AtomicBool,
) -> anyhow::Result<PositionHead> {
    if cfg.members <= 1 {
        return Ok(first);
    }
    let mut members = vec![first];
    for m in 1..cfg.members {
        let member_cfg = TrainConfig {
            seed: cfg.seed.wrapping_add(m as u64),
            ..cfg.clone()
        };
        members.push(fit_head(
            d,
            images,
            &member_cfg,
            base,
            cancel,
            &mut |_, _, _| {},
            &mut |_, _, _, _| Ok(()),
        )?);
    }
    PositionHead::average(&members)
}

/// Trains a per-position head on the images `images` of `d` (see the module docs). `on_step`
/// gets (epoch, step, loss); `on_epoch` gets (epoch, mean loss, row accuracy, the head).
pub(crate) fn fit_head(
    d: &HeadData<'_>,
    images: &[usize],
    cfg: &TrainConfig,
    base: &Device,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize, usize, f64),
    on_epoch: &mut dyn FnMut(usize, f64, f64, &PositionHead) -> anyhow::Result<()>,
) -> anyhow::Result<PositionHead> {
    fit_head_from(d, images, cfg, base, cancel, None, on_step, on_epoch)
}

/// [`fit_head`], continuing from `start` when given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_head_from(
    d: &HeadData<'_>,
    images: &[usize],
    cfg: &TrainConfig,
    base: &Device,
    cancel: &AtomicBool,
    start: Option<head_checkpoint::HeadStart>,
    on_step: &mut dyn FnMut(usize, usize, f64),
    on_epoch: &mut dyn FnMut(usize, f64, f64, &PositionHead) -> anyhow::Result<()>,
) -> anyhow::Result<PositionHead> {
    let f = d.f;
    let c = f.c;
    let k = d.is_pass.len();
    let mut rows: Vec<f32> = Vec::new();
    let mut row_labels: Vec<i64> = Vec::new();
    let mut maskless: Vec<usize> = Vec::new();
    for &i in images {
        let label = d.labels[i];
        let (r, cells) = f.rows(i);
        if d.is_pass[label] {
            rows.extend(r);
            row_labels.extend(std::iter::repeat_n(label as i64, cells.len()));
            continue;
        }
        match &d.masks[i] {
            Some(mask) => {
                let hits = defect_cells(d.input, mask, (f.w, f.h), f.valid[i]);
                rows.extend(r);
                row_labels.extend(hits.iter().map(|&h| {
                    if h {
                        label as i64
                    } else {
                        d.primary_pass as i64
                    }
                }));
            }
            None => maskless.push(i),
        }
    }
    standardise(&mut rows, d.mean, d.inv);
    // Class weights ∝ 1/√(position frequency), mean 1 over the positions.
    let mut counts = vec![0f64; k];
    for &l in &row_labels {
        counts[l as usize] += 1.0;
    }
    for &i in &maskless {
        counts[d.labels[i]] += 1.0;
    }
    let raw: Vec<f64> = counts.iter().map(|&n| 1.0 / n.max(1.0).sqrt()).collect();
    let norm = counts.iter().zip(&raw).map(|(n, w)| n * w).sum::<f64>()
        / counts.iter().sum::<f64>().max(1.0);
    let class_weights: Vec<f32> = raw.iter().map(|w| (w / norm) as f32).collect();

    let device = base.clone().autodiff();
    let mut head = PositionHead {
        hidden: LinearConfig::new(c, HIDDEN as usize).init(&device),
        out: LinearConfig::new(HIDDEN as usize, k).init(&device),
    };
    let first_epoch = start.as_ref().map_or(0, |s| s.epochs.min(cfg.epochs));
    if let Some(s) = &start {
        s.apply(&mut head, &device)?;
    }
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(Some(class_weights))
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let n_rows = row_labels.len();
    let mut rng = super::augment::sample_rng(cfg.seed, 0, usize::MAX);
    // A resumed run: the finished epochs' shuffles again (their count of rows is fixed), so the
    // epochs that follow see the data in the order an uninterrupted run would.
    for _ in 0..first_epoch {
        let total = n_rows + maskless.len();
        for j in (1..total).rev() {
            rng.below(j as u64 + 1);
        }
    }
    for epoch in first_epoch..cfg.epochs {
        // Defective images without a mask: their most defect-like cell, by the current head.
        let valid_head = head.valid();
        let mut mil_rows = Vec::new();
        let mut mil_labels = Vec::new();
        for &i in &maskless {
            let (mut r, _) = f.rows(i);
            standardise(&mut r, d.mean, d.inv);
            let n = r.len() / c;
            let x = Tensor::<2>::from_data(TensorData::new(r.clone(), [n, c]), base);
            let s = tensor_vec(valid_head.forward(x))?;
            let (cell, _) = defect_max(&s, k, d.is_pass);
            mil_rows.extend_from_slice(&r[cell * c..(cell + 1) * c]);
            mil_labels.push(d.labels[i] as i64);
        }
        let total = n_rows + mil_labels.len();
        let mut order: Vec<usize> = (0..total).collect();
        for j in (1..total).rev() {
            order.swap(j, rng.below(j as u64 + 1) as usize);
        }
        let (mut loss_sum, mut correct, mut steps) = (0.0, 0usize, 0usize);
        for (step, idx) in order.chunks(ROWS_PER_STEP).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                // The last finished epoch is in the checkpoint (see `head_checkpoint`).
                return Err(Cancelled(checkpoint_dir(&cfg.out)).into());
            }
            let mut xs = Vec::with_capacity(idx.len() * c);
            let mut ys = Vec::with_capacity(idx.len());
            for &j in idx {
                if j < n_rows {
                    xs.extend_from_slice(&rows[j * c..(j + 1) * c]);
                    ys.push(row_labels[j]);
                } else {
                    let m = j - n_rows;
                    xs.extend_from_slice(&mil_rows[m * c..(m + 1) * c]);
                    ys.push(mil_labels[m]);
                }
            }
            let x = Tensor::<2>::from_data(TensorData::new(xs, [idx.len(), c]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys.clone(), [idx.len()]), &device);
            let logits = head.forward(x);
            let pred = tensor_vec(logits.clone().detach())?;
            for (row, &t) in pred.chunks(k).zip(&ys) {
                correct += (metrics::argmax(row).unwrap_or(0) as i64 == t) as usize;
            }
            let loss = loss_fn.forward(logits, y);
            let lv = tensor_vec(loss.clone())?
                .first()
                .copied()
                .unwrap_or(f32::NAN) as f64;
            if !lv.is_finite() {
                bail!(
                    "training diverged (loss {lv}) at epoch {}; lower --lr",
                    epoch + 1
                );
            }
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(cfg.lr, head, grads);
            loss_sum += lv;
            steps += 1;
            on_step(epoch + 1, step + 1, lv);
        }
        on_epoch(
            epoch + 1,
            loss_sum / steps.max(1) as f64,
            correct as f64 / total.max(1) as f64,
            &head.valid(),
        )?;
    }
    Ok(head.valid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three randomly initialised heads averaged into one: on random rows its class scores are
    /// the mean of the three heads' scores (f32 sums over 3 × 8 hidden units: within 1e-5).
    #[test]
    fn an_averaged_head_scores_the_mean_of_its_members() {
        let device = Device::flex();
        device.seed(3);
        let (c, hidden, k, rows) = (7, 8, 3, 5);
        let members: Vec<PositionHead> = (0..3)
            .map(|_| PositionHead {
                hidden: LinearConfig::new(c, hidden).init(&device),
                out: LinearConfig::new(hidden, k).init(&device),
            })
            .collect();
        let mut rng = kernels::rng::SplitMix64::new(11);
        let x: Vec<f32> = (0..rows * c).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let input = || Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, c]), &device);
        let each: Vec<Vec<f32>> = members
            .iter()
            .map(|m| tensor_vec(m.forward(input())).unwrap())
            .collect();
        let avg = PositionHead::average(&members).unwrap();
        assert_eq!(avg.hidden_width(), 3 * hidden);
        let got = tensor_vec(avg.forward(input())).unwrap();
        assert_eq!(got.len(), rows * k);
        for (i, g) in got.iter().enumerate() {
            let want = each.iter().map(|e| e[i]).sum::<f32>() / 3.0;
            assert!((g - want).abs() < 1e-5, "{i}: {g} vs {want}");
        }
        assert!(PositionHead::average(&[]).is_err());
    }
}
