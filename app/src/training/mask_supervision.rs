//! Mask supervision for the from-scratch max-score presets: where a defective image has a
//! mask, the score map is trained position by position (defect inside, PASS outside), on
//! patches taken around the defect.

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use kernels::{Layer, ModelSpec};

use super::augment;
use super::nn::{Block, BurnModel};
use super::tensor_io::tensor_vec;

/// A random `p`×`p` patch of a `[c, h, w]` tensor and its `[h, w]` mask. With a mask, 4 in 5
/// patches are placed over a random defect pixel (anywhere within the patch), so defects are
/// seen often; the rest, and every patch of a clean image, are placed at random.
pub(crate) fn take_patch(
    x: Vec<f32>,
    mask: Option<Vec<f32>>,
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    rng: &mut kernels::rng::SplitMix64,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (ph, pw) = (p.min(h), p.min(w));
    // Origins are drawn from a range reaching a quarter patch past each side and then clamped,
    // so about one patch in four lies on each image border: borders (tile edges, the zero
    // padding) must be learnt as clean surface too, or every image edge looks like a break.
    let along = |rng: &mut kernels::rng::SplitMix64, len: usize, plen: usize| -> usize {
        let slack = plen / 4;
        let o = rng.below((len - plen + 2 * slack + 1) as u64) as usize;
        o.saturating_sub(slack).min(len - plen)
    };
    let uniform = |rng: &mut kernels::rng::SplitMix64| (along(rng, w, pw), along(rng, h, ph));
    let (ox, oy) = match &mask {
        Some(m) if rng.next_f64() < 0.8 => {
            let hits: Vec<usize> = (0..m.len()).filter(|&i| m[i] >= 0.5).collect();
            if hits.is_empty() {
                uniform(rng)
            } else {
                let k = hits[rng.below(hits.len() as u64) as usize];
                let (px, py) = (k % w, k / w);
                let ox = px.saturating_sub(rng.below(pw as u64) as usize);
                let oy = py.saturating_sub(rng.below(ph as u64) as usize);
                (ox.min(w - pw), oy.min(h - ph))
            }
        }
        _ => uniform(rng),
    };
    let crop = |plane: &[f32]| -> Vec<f32> {
        (0..ph)
            .flat_map(|y| {
                plane[(oy + y) * w + ox..(oy + y) * w + ox + pw]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let xs = (0..c)
        .flat_map(|ch| crop(&x[ch * h * w..(ch + 1) * h * w]))
        .collect();
    (xs, mask.map(|m| crop(&m)))
}

/// What a cell of the score map is trained towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    /// Defect-free surface.
    Background,
    /// A defect of this class (index into the classes).
    Defect(usize),
    /// Not known (a defect image without a usable mask): no pixel loss.
    Unknown,
}

/// Mask supervision of a [`Head::MaxScore`] model: every position of the score map is a
/// classification of its own — background where the mask is dark (and everywhere on a PASS
/// image), the image's defect class where it is bright — so each defect image teaches the
/// network where its defect is, not just that there is one.
///
/// At each position the PASS classes share one fixed logit 0 and each FAIL class `k` has the
/// score `z_k`; the max pool then judges an image by `max z_k`, the evidence of its most
/// defect-like position, and the linear layer after it starts as the identity on FAIL classes.
pub(crate) struct MaskSupervision {
    pub(crate) is_pass: Vec<bool>,
    /// FAIL class indices, in order; position `r` of this list is channel `1 + r` of the
    /// per-position log-probabilities.
    pub(crate) fail: Vec<usize>,
    /// Score map size.
    pub(crate) map_h: usize,
    pub(crate) map_w: usize,
}

impl MaskSupervision {
    /// The supervision for `spec`, if its head is a scoring conv + global max pool, for training
    /// inputs of `patch`×`patch` pixels (0: the spec's input size).
    pub(crate) fn of(spec: &ModelSpec, patch: u32) -> anyhow::Result<Option<Self>> {
        let mut spec = spec.clone();
        if patch > 0 {
            spec.input.width = patch;
            spec.input.height = patch;
        }
        let plan = spec.validate()?;
        let map = plan.shapes[plan.gap_layer];
        if !matches!(spec.layers[plan.gap_layer], Layer::GlobalMaxPool)
            || map.c as usize != spec.classes.len()
        {
            return Ok(None);
        }
        Ok(Some(Self {
            fail: (0..spec.classes.len())
                .filter(|&k| !plan.is_pass[k])
                .collect(),
            is_pass: plan.is_pass,
            map_h: map.h as usize,
            map_w: map.w as usize,
        }))
    }

    /// The linear calibration starts as the identity on FAIL scores and 0 for PASS classes.
    pub(crate) fn init_calibration(&self, mut model: BurnModel, device: &Device) -> BurnModel {
        let k = self.is_pass.len();
        if let Some(Block::Linear(l)) = model.blocks.last_mut() {
            let mut w = vec![0f32; k * k]; // burn layout [in, out]
            for &f in &self.fail {
                w[f * k + f] = 1.0;
            }
            l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [k, k]), device));
            l.bias = Some(Param::from_tensor(Tensor::zeros([k], device)));
        }
        model
    }

    /// Refits the last linear layer (the calibration from max-pooled class scores to class
    /// logits) on `feats` by class-weighted cross-entropy, full batch, starting from its current
    /// weights and held near them by a small L2 pull.
    pub(crate) fn refit_calibration(
        &self,
        mut model: BurnModel,
        feats: &[Vec<f32>],
        labels: &[usize],
        class_weights: &[f32],
        device: &Device,
    ) -> anyhow::Result<BurnModel> {
        let k = self.is_pass.len();
        let Some(Block::Linear(l)) = model.blocks.last_mut() else {
            return Ok(model);
        };
        let wt = tensor_vec(l.weight.val())?; // [in, out]
        let b0 = match &l.bias {
            Some(b) => tensor_vec(b.val())?,
            None => vec![0.0; k],
        };
        // Parameters as one vector: W[o][i] then b[o].
        let mut theta: Vec<f64> = (0..k * k)
            .map(|oi| wt[(oi % k) * k + oi / k] as f64)
            .chain(b0.iter().map(|&b| b as f64))
            .collect();
        let theta0 = theta.clone();
        let (mut m, mut v) = (vec![0f64; theta.len()], vec![0f64; theta.len()]);
        let total_w: f64 = labels.iter().map(|&y| class_weights[y] as f64).sum();
        let (lr, l2, b1, b2) = (0.01, 1e-3, 0.9, 0.999);
        let mut z = vec![0f64; k];
        for it in 1..=1500 {
            let mut g = vec![0f64; theta.len()];
            for (f, &y) in feats.iter().zip(labels) {
                for o in 0..k {
                    z[o] = theta[k * k + o]
                        + (0..k).map(|i| theta[o * k + i] * f[i] as f64).sum::<f64>();
                }
                let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - mx).exp()).sum();
                let cw = class_weights[y] as f64 / total_w;
                for o in 0..k {
                    let d = cw * ((z[o] - mx).exp() / sum - (o == y) as u8 as f64);
                    for i in 0..k {
                        g[o * k + i] += d * f[i] as f64;
                    }
                    g[k * k + o] += d;
                }
            }
            for j in 0..theta.len() {
                let gj = g[j] + l2 * (theta[j] - theta0[j]);
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                let (mh, vh) = (m[j] / (1.0 - b1.powi(it)), v[j] / (1.0 - b2.powi(it)));
                theta[j] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let w: Vec<f32> = (0..k * k)
            .map(|ji| theta[(ji % k) * k + ji / k] as f32) // back to [in, out]
            .collect();
        l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [k, k]), device));
        let b: Vec<f32> = theta[k * k..].iter().map(|&x| x as f32).collect();
        l.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [k]),
            device,
        )));
        Ok(model)
    }

    /// The cell targets of one image of class `label` from its augmented mask plane
    /// (`[h, w]` at the input size), if it has one.
    pub(crate) fn cell_labels(
        &self,
        label: usize,
        mask: Option<&[f32]>,
        h: usize,
        w: usize,
    ) -> Vec<Cell> {
        let n = self.map_h * self.map_w;
        if self.is_pass[label] {
            return vec![Cell::Background; n];
        }
        match mask {
            Some(m) => augment::mask_cells(m, h, w, self.map_h, self.map_w)
                .into_iter()
                .map(|d| {
                    if d {
                        Cell::Defect(label)
                    } else {
                        Cell::Background
                    }
                })
                .collect(),
            None => vec![Cell::Unknown; n],
        }
    }

    /// Pixel loss of a batch: mean cross-entropy over background cells plus the class-weighted
    /// mean over defect cells (defects cover a few percent of an image; both halves count alike).
    pub(crate) fn loss(
        &self,
        map: Tensor<4>,
        cells: &[Vec<Cell>],
        class_weights: &[f32],
        device: &Device,
    ) -> Tensor<1> {
        let [n, _, mh, mw] = map.dims();
        let n_bg = cells
            .iter()
            .flatten()
            .filter(|c| **c == Cell::Background)
            .count();
        let def_sum: f32 = cells
            .iter()
            .flatten()
            .map(|c| match c {
                Cell::Defect(k) => class_weights[*k],
                _ => 0.0,
            })
            .sum();
        let mut targets = Vec::with_capacity(n * mh * mw);
        let mut weights = Vec::with_capacity(n * mh * mw);
        for c in cells.iter().flatten() {
            let (t, w) = match *c {
                Cell::Background => (0i64, 1.0 / n_bg.max(1) as f32),
                Cell::Defect(k) => {
                    let r = self.fail.iter().position(|&f| f == k).unwrap_or(0);
                    (1 + r as i64, class_weights[k] / def_sum.max(1e-6))
                }
                Cell::Unknown => (0, 0.0),
            };
            targets.push(t);
            weights.push(w);
        }
        let fail: Vec<i64> = self.fail.iter().map(|&f| f as i64).collect();
        let fail = Tensor::<1, Int>::from_data(TensorData::new(fail, [self.fail.len()]), device);
        let scores = Tensor::cat(
            vec![
                Tensor::<4>::zeros([n, 1, mh, mw], device),
                map.select(1, fail),
            ],
            1,
        );
        let log_p = activation::log_softmax(scores, 1);
        let t = Tensor::<4, Int>::from_data(TensorData::new(targets, [n, 1, mh, mw]), device);
        let w = Tensor::<4>::from_data(TensorData::new(weights, [n, 1, mh, mw]), device);
        (log_p.gather(1, t) * w).sum().neg()
    }
}
