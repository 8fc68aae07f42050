//! Choosing the head per product by cross-validation on the cached features.
//!
//! Two kinds of head sit on the frozen backbone's local features:
//! - the **per-position** head (`head.rs`): each position scored, the image judged by its most
//!   defect-like one: suits small local defects, best with masks;
//! - the **image-level** head: the local features averaged over the whole input (the engine's
//!   `global_avg_pool`), standardised, and an L2-regularised softmax regression on them: suits
//!   defects spread over the part and labels without masks.
//!
//! Each candidate (the position head; the image head over a grid of regularisation strengths) is
//! scored on the training split by part-disjoint cross-validation — the same two folds the
//! position head's calibration already trains on (a part's images, its `group`, stay in one
//! fold) — and the best is kept: PASS/FAIL AUROC of the out-of-fold scores first, then (within
//! [`AUROC_TIE`]) the smaller review share at the default targets. All of it runs on cached
//! features: seconds.

use serde::Serialize;

use super::features::Features;
use crate::evaluation::metrics;

/// Regularisation strengths tried for the image head (mean loss + λ/2 · ‖W‖², on standardised
/// features).
pub const L2_GRID: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];
/// AUROC differences below this count as a tie (then the review share decides).
pub const AUROC_TIE: f64 = 0.002;
/// Full-batch Adam steps of one fit.
const STEPS: usize = 300;
const LR: f64 = 0.05;

/// Which head training keeps.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The best by cross-validation on the training split.
    #[default]
    Auto,
    /// The per-position head (defect max pool).
    Position,
    /// The image-level head on averaged features.
    Image,
}

/// One candidate's cross-validated figures.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// "position", "image" or "fused" (measured only).
    pub head: String,
    /// An image head's pooling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
    /// The image head's L2 strength.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<f64>,
    /// PASS/FAIL AUROC of the out-of-fold scores (None without both kinds of image).
    pub cv_auroc: Option<f64>,
    /// Review share of the out-of-fold scores at the default targets (band chosen on them).
    pub cv_review_share: f64,
    /// Images scored out of fold.
    pub images: usize,
}

/// The candidates and the one kept.
#[derive(Clone, Debug, Serialize)]
pub struct HeadChoice {
    /// What was asked for (`auto`, or a forced kind).
    pub asked: HeadKind,
    /// Every candidate, in the order tried.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the head kept.
    pub kept: usize,
    /// Why, in words.
    pub why: String,
}

impl HeadChoice {
    /// The kept candidate.
    pub fn kept(&self) -> &Candidate {
        &self.candidates[self.kept]
    }

    /// One line per candidate, the kept one marked.
    pub fn table(&self) -> String {
        self.candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{} {:<8} {:<8} {:<10} CV AUROC {}  CV review {:.1} %",
                    if i == self.kept { "*" } else { " " },
                    c.head,
                    c.pool.map(Pool::name).unwrap_or_default(),
                    c.l2.map(|l| format!("L2 {l}")).unwrap_or_default(),
                    c.cv_auroc.map_or("n/a".into(), |a| format!("{a:.4}")),
                    100.0 * c.cv_review_share
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A softmax regression on standardised features.
#[derive(Clone, Debug)]
pub struct Softmax {
    /// `[k][d]` on standardised features.
    w: Vec<f64>,
    b: Vec<f64>,
    mean: Vec<f64>,
    inv: Vec<f64>,
    k: usize,
}

impl Softmax {
    /// Fits on the rows `idx` of `x` with `labels`: class-weighted (∝ 1/√frequency, as the
    /// position head) cross-entropy plus `l2`/2 · ‖W‖², full-batch Adam from zero.
    pub fn fit(x: &[Vec<f32>], labels: &[usize], idx: &[usize], k: usize, l2: f64) -> Self {
        let d = x.first().map_or(0, Vec::len);
        let n = idx.len().max(1) as f64;
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for &i in idx {
            for (j, &v) in x[i].iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64).powi(2);
            }
        }
        for j in 0..d {
            mean[j] /= n;
            sq[j] = (sq[j] / n - mean[j].powi(2)).max(0.0);
        }
        let inv: Vec<f64> = sq.iter().map(|v| 1.0 / (v.sqrt() + 1e-6)).collect();
        let z: Vec<Vec<f64>> = idx
            .iter()
            .map(|&i| {
                x[i].iter()
                    .enumerate()
                    .map(|(j, &v)| (v as f64 - mean[j]) * inv[j])
                    .collect()
            })
            .collect();
        let mut freq = vec![0f64; k];
        for &i in idx {
            freq[labels[i]] += 1.0;
        }
        let cw: Vec<f64> = freq
            .iter()
            .map(|&f| if f > 0.0 { 1.0 / f.sqrt() } else { 0.0 })
            .collect();
        let total: f64 = idx.iter().map(|&i| cw[labels[i]]).sum::<f64>().max(1e-12);
        let mut m = Self {
            w: vec![0.0; k * d],
            b: vec![0.0; k],
            mean,
            inv,
            k,
        };
        let np = k * d + k;
        let (mut m1, mut m2) = (vec![0f64; np], vec![0f64; np]);
        let mut g = vec![0f64; np];
        let mut logits = vec![0f64; k];
        for step in 1..=STEPS {
            g.iter_mut().for_each(|v| *v = 0.0);
            for (row, &i) in z.iter().zip(idx) {
                m.logits_std(row, &mut logits);
                let wy = cw[labels[i]] / total;
                for o in 0..k {
                    let go = (logits[o] - (o == labels[i]) as u8 as f64) * wy;
                    if go == 0.0 {
                        continue;
                    }
                    let gw = &mut g[o * d..(o + 1) * d];
                    for (gj, &zj) in gw.iter_mut().zip(row) {
                        *gj += go * zj;
                    }
                    g[k * d + o] += go;
                }
            }
            for (gj, wj) in g[..k * d].iter_mut().zip(&m.w) {
                *gj += l2 * wj;
            }
            let (b1, b2) = (0.9f64, 0.999f64);
            let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            for p in 0..np {
                m1[p] = b1 * m1[p] + (1.0 - b1) * g[p];
                m2[p] = b2 * m2[p] + (1.0 - b2) * g[p] * g[p];
                let delta = LR * (m1[p] / c1) / ((m2[p] / c2).sqrt() + 1e-8);
                if p < k * d {
                    m.w[p] -= delta;
                } else {
                    m.b[p - k * d] -= delta;
                }
            }
        }
        m
    }

    /// Softmax probabilities of standardised `z` into `out`.
    fn logits_std(&self, z: &[f64], out: &mut [f64]) {
        let d = z.len();
        for (o, v) in out.iter_mut().enumerate() {
            *v = self.b[o]
                + self.w[o * d..(o + 1) * d]
                    .iter()
                    .zip(z)
                    .map(|(w, z)| w * z)
                    .sum::<f64>();
        }
        let mx = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for v in out.iter_mut() {
            *v = (*v - mx).exp();
            s += *v;
        }
        for v in out.iter_mut() {
            *v /= s;
        }
    }

    /// Class probabilities of one raw (unstandardised) feature vector.
    pub fn probs(&self, x: &[f32]) -> Vec<f32> {
        let z: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(j, &v)| (v as f64 - self.mean[j]) * self.inv[j])
            .collect();
        let mut out = vec![0f64; self.k];
        self.logits_std(&z, &mut out);
        out.into_iter().map(|p| p as f32).collect()
    }

    /// The standardisation folded in: `(weight [k][d], bias [k])` on raw features, for a
    /// `linear` layer after `global_avg_pool`.
    pub fn folded(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.mean.len();
        let mut w = vec![0f32; self.k * d];
        let mut b = vec![0f32; self.k];
        for o in 0..self.k {
            let mut bias = self.b[o];
            for j in 0..d {
                let wj = self.w[o * d + j] * self.inv[j];
                w[o * d + j] = wj as f32;
                bias -= wj * self.mean[j];
            }
            b[o] = bias as f32;
        }
        (w, b)
    }
}

/// A candidate's figures from its out-of-fold FAIL scores (`None`: not scored).
fn candidate(
    head: &str,
    pool: Option<Pool>,
    l2: Option<f64>,
    scores: &[Option<f32>],
    defective: &[bool],
) -> Candidate {
    let (s, d): (Vec<f32>, Vec<bool>) = scores
        .iter()
        .zip(defective)
        .filter_map(|(s, &d)| s.map(|s| (s, d)))
        .unzip();
    let band = metrics::choose_band(&s, &d, 0.01, 0.02, true);
    let rates = metrics::review_rates(&s, &d, band.pass_threshold, band.threshold);
    Candidate {
        head: head.into(),
        pool,
        l2,
        cv_auroc: metrics::auroc(&s, &d),
        cv_review_share: rates.review_share,
        images: s.len(),
    }
}

/// How an image-level head pools the local features over the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The average (`global_avg_pool`): defects spread over the part.
    Avg,
    /// The maximum (`global_max_pool`): small local defects.
    Max,
    /// Both, concatenated: measured only (no engine layer yet), never kept.
    AvgMax,
}

impl Pool {
    /// Whether the engine can run a head on this pooling (and so training may keep it).
    pub fn exportable(self) -> bool {
        self != Self::AvgMax
    }

    fn name(self) -> &'static str {
        match self {
            Self::Avg => "avg",
            Self::Max => "max",
            Self::AvgMax => "avg+max",
        }
    }
}

/// Each image's local features pooled by `pool` over every cell of the input, padding
/// included, as the engine's `global_avg_pool` / `global_max_pool` do: `[n][c]` (`[n][2c]` for
/// both).
pub(crate) fn pooled(f: &Features, pool: Pool) -> Vec<Vec<f32>> {
    let hw = (f.h * f.w).max(1);
    let avg = || -> Vec<Vec<f32>> {
        f.maps
            .iter()
            .map(|m| {
                (0..f.c)
                    .map(|ch| {
                        let s: f64 = m[ch * hw..(ch + 1) * hw].iter().map(|&v| v as f64).sum();
                        (s / hw as f64) as f32
                    })
                    .collect()
            })
            .collect()
    };
    let max = || -> Vec<Vec<f32>> {
        f.maps
            .iter()
            .map(|m| {
                (0..f.c)
                    .map(|ch| {
                        m[ch * hw..(ch + 1) * hw]
                            .iter()
                            .copied()
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                    .collect()
            })
            .collect()
    };
    match pool {
        Pool::Avg => avg(),
        Pool::Max => max(),
        Pool::AvgMax => avg()
            .into_iter()
            .zip(max())
            .map(|(mut a, m)| {
                a.extend(m);
                a
            })
            .collect(),
    }
}

/// The out-of-fold FAIL scores of an image head with `l2` on `x`.
fn image_oof(
    x: &[Vec<f32>],
    labels: &[usize],
    folds: &[usize],
    k: usize,
    l2: f64,
    fail_score: &dyn Fn(&[f32]) -> f32,
) -> Vec<Option<f32>> {
    let mut oof = vec![None; x.len()];
    for fold in 0..2 {
        let fit_on: Vec<usize> = (0..x.len()).filter(|&i| folds[i] != fold).collect();
        let held: Vec<usize> = (0..x.len()).filter(|&i| folds[i] == fold).collect();
        // A fold without every class cannot learn them all: leave it unscored.
        let mut has = vec![false; k];
        fit_on.iter().for_each(|&i| has[labels[i]] = true);
        if held.is_empty() || !has.iter().all(|&h| h) {
            continue;
        }
        let m = Softmax::fit(x, labels, &fit_on, k, l2);
        for &i in &held {
            oof[i] = Some(fail_score(&m.probs(&x[i])));
        }
    }
    oof
}

/// The mean of two FAIL scores' logits, as a probability.
fn fuse(a: &[Option<f32>], b: &[Option<f32>]) -> Vec<Option<f32>> {
    let logit = |p: f32| {
        let p = (p as f64).clamp(1e-6, 1.0 - 1e-6);
        (p / (1.0 - p)).ln()
    };
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let z = 0.5 * (logit((*a)?) + logit((*b)?));
            Some((1.0 / (1.0 + (-z).exp())) as f32)
        })
        .collect()
}

/// Cross-validates the candidates and keeps one (see the module docs). `features` are the
/// training images' cached features, `position_oof` the position head's out-of-fold FAIL
/// scores (None where an image was not scored), `folds` the part-disjoint fold of each training
/// image, `fail_score` turns class probabilities into the FAIL score. Returns the choice and,
/// when an image head is kept, its fit on every training image.
#[allow(clippy::too_many_arguments)]
pub(crate) fn choose(
    asked: HeadKind,
    features: &Features,
    labels: &[usize],
    defective: &[bool],
    folds: &[usize],
    k: usize,
    position_oof: &[Option<f32>],
    fail_score: &dyn Fn(&[f32]) -> f32,
) -> (HeadChoice, Option<(Pool, Softmax)>) {
    let mut candidates = vec![candidate("position", None, None, position_oof, defective)];
    if asked != HeadKind::Position {
        let mut best: Option<(f64, Vec<Option<f32>>, Pool, f64)> = None;
        for pool in [Pool::Avg, Pool::Max, Pool::AvgMax] {
            let x = pooled(features, pool);
            for &l2 in &L2_GRID {
                let oof = image_oof(&x, labels, folds, k, l2, fail_score);
                let c = candidate("image", Some(pool), Some(l2), &oof, defective);
                let a = c.cv_auroc.unwrap_or(f64::NEG_INFINITY);
                if best.as_ref().is_none_or(|b| a > b.0) {
                    best = Some((a, oof, pool, l2));
                }
                candidates.push(c);
            }
        }
        // The fusion of the two kinds (the mean of their FAIL logits), measured on the same
        // folds with the best image head; the engine cannot run two heads in one model yet,
        // so it is never kept.
        if let Some((_, oof, pool, l2)) = best {
            let fused = fuse(position_oof, &oof);
            candidates.push(candidate("fused", Some(pool), Some(l2), &fused, defective));
        }
    }
    let key = |c: &Candidate| c.cv_auroc.unwrap_or(f64::NEG_INFINITY);
    let keepable = |c: &Candidate| c.head != "fused" && c.pool.is_none_or(Pool::exportable);
    let best_of = |filter: &dyn Fn(&Candidate) -> bool| -> usize {
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate().filter(|(_, c)| filter(c)) {
            best = match best {
                None => Some(i),
                Some(b) => {
                    let (a, bb) = (key(c), key(&candidates[b]));
                    let better = a > bb + AUROC_TIE
                        || ((a - bb).abs() <= AUROC_TIE
                            && c.cv_review_share < candidates[b].cv_review_share);
                    Some(if better { i } else { b })
                }
            };
        }
        best.unwrap_or(0)
    };
    let (kept, why) = match asked {
        HeadKind::Position => (0, "--head position: forced".to_string()),
        HeadKind::Image => (
            best_of(&|c| c.head == "image" && keepable(c)),
            "--head image: forced (its pooling and L2 strength by cross-validation)".to_string(),
        ),
        HeadKind::Auto => {
            let i = best_of(&keepable);
            let why = if candidates.iter().all(|c| c.cv_auroc.is_none()) {
                "no cross-validated AUROC (the training split lacks good or defective images in \
                 a fold): the position head"
                    .to_string()
            } else {
                format!(
                    "best part-disjoint 2-fold cross-validated PASS/FAIL AUROC on the training \
                     split among the heads the engine runs (ties within {AUROC_TIE}: smaller \
                     review share)"
                )
            };
            (i, why)
        }
    };
    let kept_c = &candidates[kept];
    let fitted = kept_c.pool.filter(|_| kept_c.head == "image").map(|pool| {
        let x = pooled(features, pool);
        let all: Vec<usize> = (0..x.len()).collect();
        let l2 = kept_c.l2.unwrap_or(L2_GRID[1]);
        (pool, Softmax::fit(&x, labels, &all, k, l2))
    });
    (
        HeadChoice {
            asked,
            candidates,
            kept,
            why,
        },
        fitted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well-separated classes along one feature, plus noise features: the fit separates
    /// them, its probabilities through the folded weights equal its own, and the image head wins
    /// over a position head whose scores are noise.
    #[test]
    fn the_image_head_fits_folds_and_wins_where_it_ranks_better() {
        let mut rng = kernels::rng::SplitMix64::new(7);
        let n = 80;
        let labels: Vec<usize> = (0..n).map(|i| (i % 2 == 0) as usize).collect();
        let x: Vec<Vec<f32>> = labels
            .iter()
            .map(|&l| {
                (0..6)
                    .map(|j| {
                        let noise = rng.uniform(-0.5, 0.5);
                        if j == 2 {
                            l as f32 * 3.0 + noise
                        } else {
                            10.0 + noise
                        }
                    })
                    .collect()
            })
            .collect();
        let all: Vec<usize> = (0..n).collect();
        let m = Softmax::fit(&x, &labels, &all, 2, 1e-2);
        let (w, b) = m.folded();
        for (row, &l) in x.iter().zip(&labels) {
            let p = m.probs(row);
            assert!(p[l] > 0.9, "{p:?} for class {l}");
            // The folded linear layer gives the same logits' softmax.
            let lg: Vec<f64> = (0..2)
                .map(|o| b[o] as f64 + (0..6).map(|j| (w[o * 6 + j] * row[j]) as f64).sum::<f64>())
                .collect();
            let p1 = 1.0 / (1.0 + (lg[0] - lg[1]).exp());
            assert!((p1 as f32 - p[1]).abs() < 1e-4);
        }
        let defective: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        // One cell per image: every pooling is the vector itself.
        let f = Features {
            maps: x.clone(),
            valid: vec![(1, 1); n],
            c: 6,
            h: 1,
            w: 1,
        };
        let folds: Vec<usize> = (0..n).map(|i| (i / 4) % 2).collect();
        let noise: Vec<Option<f32>> = (0..n).map(|_| Some(rng.uniform(0.0, 1.0))).collect();
        let fail = |p: &[f32]| p[1];
        let (c, fitted) = choose(
            HeadKind::Auto,
            &f,
            &labels,
            &defective,
            &folds,
            2,
            &noise,
            &fail,
        );
        // The position head, 3 poolings × the L2 grid, the fusion.
        assert_eq!(c.candidates.len(), 2 + 3 * L2_GRID.len());
        assert!(c.kept().pool.is_some_and(Pool::exportable));
        assert_eq!(c.kept().head, "image", "{}", c.table());
        assert!(c.kept().cv_auroc.unwrap() > 0.99);
        assert!(fitted.is_some());
        // Forced to the position head: kept, and nothing fitted.
        let (c, fitted) = choose(
            HeadKind::Position,
            &f,
            &labels,
            &defective,
            &folds,
            2,
            &noise,
            &fail,
        );
        assert_eq!((c.kept, c.candidates.len()), (0, 1));
        assert!(fitted.is_none());
    }
}
