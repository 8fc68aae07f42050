//! Classification and PASS/FAIL metrics, shared by training (val selection, threshold choice)
//! and `inspector eval`.
//!
//! The FAIL score of an image is `1 − Σ P(pass classes)`; a part FAILs when its score is at
//! least the threshold. *Miss rate* = defective images passed / defective images;
//! *false-reject rate* = good images failed / good images.

use kernels::ModelSpec;
use serde::Serialize;

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Precision (0 when nothing was predicted as this class).
    pub precision: f64,
    /// Recall (0 when the class has no images).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Images of this class.
    pub support: usize,
    /// For a FAIL class: AUROC of its images' FAIL scores against the PASS images' (absent for
    /// PASS classes and where it cannot be measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auroc: Option<f64>,
}

/// A confusion matrix: `matrix[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Confusion {
    /// Class names, in index order.
    pub labels: Vec<String>,
    /// Rows are true labels, columns predictions.
    pub matrix: Vec<Vec<usize>>,
}

impl Confusion {
    /// Builds the matrix from `(true, predicted)` index pairs.
    pub fn new(labels: Vec<String>, pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let k = labels.len();
        let mut matrix = vec![vec![0; k]; k];
        for (t, p) in pairs {
            matrix[t][p] += 1;
        }
        Self { labels, matrix }
    }

    /// Fraction of correct predictions (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        let total: usize = self.matrix.iter().flatten().sum();
        let correct: usize = (0..self.labels.len()).map(|i| self.matrix[i][i]).sum();
        if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        }
    }

    /// Per-class precision, recall, F1, support.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        let k = self.labels.len();
        (0..k)
            .map(|c| {
                let tp = self.matrix[c][c] as f64;
                let support: usize = self.matrix[c].iter().sum();
                let predicted: usize = (0..k).map(|t| self.matrix[t][c]).sum();
                let precision = if predicted == 0 {
                    0.0
                } else {
                    tp / predicted as f64
                };
                let recall = if support == 0 {
                    0.0
                } else {
                    tp / support as f64
                };
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassMetrics {
                    precision,
                    recall,
                    f1,
                    support,
                    auroc: None,
                }
            })
            .collect()
    }

    /// Mean F1 over classes that have images.
    pub fn macro_f1(&self) -> f64 {
        let pc: Vec<ClassMetrics> = self
            .per_class()
            .into_iter()
            .filter(|m| m.support > 0)
            .collect();
        if pc.is_empty() {
            0.0
        } else {
            pc.iter().map(|m| m.f1).sum::<f64>() / pc.len() as f64
        }
    }
}

/// Index of the largest value (the predicted class of a probability or logit row); ties go to
/// the later index, `None` for an empty row. NaN sorts above every number (`total_cmp`).
pub fn argmax(values: &[f32]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Area under the ROC curve of FAIL scores (`defective = true` is the positive class), with
/// ties counted half (Mann–Whitney U). `None` when either class is absent.
pub fn auroc(scores: &[f32], defective: &[bool]) -> Option<f64> {
    let mut v: Vec<(f32, bool)> = scores
        .iter()
        .copied()
        .zip(defective.iter().copied())
        .collect();
    let pos = v.iter().filter(|x| x.1).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Rank sum of positives with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

/// Miss and false-reject rates at a threshold (score ≥ threshold → FAIL).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// Defective images passed / defective images.
    pub miss_rate: f64,
    /// Good images failed / good images.
    pub false_reject_rate: f64,
}

/// Rates at `threshold`.
pub fn rates_at(scores: &[f32], defective: &[bool], threshold: f32) -> Rates {
    let (mut miss, mut n_def, mut fr, mut n_good) = (0usize, 0usize, 0usize, 0usize);
    for (&s, &d) in scores.iter().zip(defective) {
        if d {
            n_def += 1;
            miss += (s < threshold) as usize;
        } else {
            n_good += 1;
            fr += (s >= threshold) as usize;
        }
    }
    let frac = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Rates {
        miss_rate: frac(miss, n_def),
        false_reject_rate: frac(fr, n_good),
    }
}

/// The threshold with the lowest false-reject rate whose miss rate is at most `max_miss_rate`:
/// the largest threshold that still fails all but `floor(max_miss_rate · defective)` defective
/// images, lowered by [`THRESHOLD_MARGIN`] so that the last defective image it must fail still
/// fails when another implementation (the GPU engine vs burn) scores it a few ulps lower.
/// With no defective images, 0.5.
pub fn choose_threshold(scores: &[f32], defective: &[bool], max_miss_rate: f64) -> f32 {
    let mut def: Vec<f32> = scores
        .iter()
        .zip(defective)
        .filter(|(_, d)| **d)
        .map(|(s, _)| *s)
        .collect();
    if def.is_empty() {
        return 0.5;
    }
    def.sort_by(|a, b| a.total_cmp(b));
    let allowed = allowed_count(max_miss_rate, def.len());
    (def[allowed.min(def.len() - 1)] - THRESHOLD_MARGIN).clamp(0.0, 1.0)
}

/// Fewest defective and good val images for which two thresholds are set: with fewer, one
/// image moves a rate by more than 10 %, and the band falls back to one threshold.
pub const MIN_BAND_IMAGES: usize = 10;

/// Two thresholds chosen on val: PASS below `pass_threshold`, FAIL from `threshold`, REVIEW
/// between them (`pass_threshold` None: two-way).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Band {
    /// The band's lower edge; None when val could not set two thresholds.
    pub pass_threshold: Option<f32>,
    /// FAIL at or above.
    pub threshold: f32,
    /// How they were chosen, in words (targets, counts, any fallback).
    pub rule: String,
}

/// The review band from two targets on val: the auto-pass miss rate (defective images scored
/// below `pass_threshold`, over the defective images) at most `max_miss_rate`, and the auto-fail
/// false-reject rate (good images scored at or above `threshold`, over the good images) at most
/// `max_fail_false_reject`; between them the band is as narrow as both allow. When one
/// threshold meets both, the band is empty (`pass_threshold == threshold`). With fewer than
/// [`MIN_BAND_IMAGES`] defective or good images, or `band` false, one threshold for the miss
/// target (the false-reject target then not held), said in `rule`.
pub fn choose_band(
    scores: &[f32],
    defective: &[bool],
    max_miss_rate: f64,
    max_fail_false_reject: f64,
    band: bool,
) -> Band {
    let t_pass = choose_threshold(scores, defective, max_miss_rate);
    let n_def = defective.iter().filter(|&&d| d).count();
    let n_good = defective.len() - n_def;
    let miss = format!(
        "miss ≤ {:.1} % of {n_def} defective val images",
        100.0 * max_miss_rate
    );
    if !band {
        return Band {
            pass_threshold: None,
            threshold: t_pass,
            rule: format!("two-way (review band off): {miss}; {n_good} good"),
        };
    }
    if n_def < MIN_BAND_IMAGES || n_good < MIN_BAND_IMAGES {
        return Band {
            pass_threshold: None,
            threshold: t_pass,
            rule: format!(
                "two-way: val has {n_def} defective and {n_good} good images, too few to set two thresholds (≥ {MIN_BAND_IMAGES} of each); one threshold kept for the miss target ({miss}), the false-reject target not held"
            ),
        };
    }
    let mut good: Vec<f32> = scores
        .iter()
        .zip(defective)
        .filter(|(_, d)| !**d)
        .map(|(s, _)| *s)
        .collect();
    good.sort_by(|a, b| b.total_cmp(a));
    let allowed = allowed_count(max_fail_false_reject, n_good);
    // Just above the highest good score that must not fail.
    let t_fail = match good.get(allowed) {
        Some(&s) => (s + THRESHOLD_MARGIN).min(1.0),
        None => 0.0,
    };
    let targets = format!(
        "auto-pass {miss}; auto-fail false reject ≤ {:.1} % of {n_good} good",
        100.0 * max_fail_false_reject
    );
    if t_fail <= t_pass {
        Band {
            pass_threshold: Some(t_pass),
            threshold: t_pass,
            rule: format!("{targets}: one threshold meets both (no REVIEW on val)"),
        }
    } else {
        Band {
            pass_threshold: Some(t_pass),
            threshold: t_fail,
            rule: format!("{targets}: REVIEW between them"),
        }
    }
}

/// The three-way rates at a band: what share goes to a person, and what the two automatic
/// decisions get wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ReviewRates {
    /// Images in the band (REVIEW) over all images.
    pub review_share: f64,
    /// Defective images auto-passed (scored below the band) over the defective images.
    pub auto_pass_miss_rate: f64,
    /// Good images auto-failed (scored at or above the FAIL threshold) over the good images.
    pub auto_fail_false_reject_rate: f64,
}

/// [`ReviewRates`] at `pass_below` / `fail_at` (two-way when `pass_below` is None).
pub fn review_rates(
    scores: &[f32],
    defective: &[bool],
    pass_below: Option<f32>,
    fail_at: f32,
) -> ReviewRates {
    let (mut review, mut missed, mut false_fail, mut n_def) = (0usize, 0usize, 0usize, 0usize);
    for (&s, &d) in scores.iter().zip(defective) {
        n_def += d as usize;
        match ModelSpec::decide(s, pass_below, fail_at) {
            kernels::Decision::Review => review += 1,
            kernels::Decision::Pass => missed += d as usize,
            kernels::Decision::Fail => false_fail += !d as usize,
        }
    }
    let n = scores.len();
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    ReviewRates {
        review_share: frac(review, n),
        auto_pass_miss_rate: frac(missed, n_def),
        auto_fail_false_reject_rate: frac(false_fail, n - n_def),
    }
}

/// How many of `n` images a target `rate` lets through (missed, or falsely rejected).
pub fn allowed_count(rate: f64, n: usize) -> usize {
    (rate * n as f64 + 1e-9).floor() as usize
}

/// How far below the deciding defective score the chosen threshold sits. Engine and burn agree
/// to ~1e-7 (measured), so 1e-4 covers them while moving the false-reject rate only for good
/// images scored within 1e-4 of a defective one.
pub const THRESHOLD_MARGIN: f32 = 1e-4;

/// Val metrics from probabilities.
pub struct ValMetrics {
    /// Confusion matrix.
    pub confusion: Confusion,
    /// FAIL scores.
    pub scores: Vec<f32>,
    /// Whether each image is defective.
    pub defective: Vec<bool>,
    /// AUROC.
    pub auroc: Option<f64>,
}

/// Metrics of probabilities against labels.
pub fn val_metrics(spec: &ModelSpec, probs: &[Vec<f32>], labels: &[usize]) -> ValMetrics {
    let pairs = probs
        .iter()
        .zip(labels)
        .map(|(p, &t)| (t, argmax(p).unwrap_or(0)));
    let confusion = Confusion::new(spec.classes.clone(), pairs);
    let scores: Vec<f32> = probs.iter().map(|p| spec.fail_score(p)).collect();
    let defective: Vec<bool> = labels
        .iter()
        .map(|&t| !spec.pass_classes.contains(&spec.classes[t]))
        .collect();
    let auroc = auroc(&scores, &defective);
    ValMetrics {
        confusion,
        scores,
        defective,
        auroc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-worked example: 3 classes, 10 images.
    ///
    /// ```text
    ///             pred good  pred crack  pred hole
    /// true good        4          1          0       (support 5)
    /// true crack       1          2          0       (support 3)
    /// true hole        0          1          1       (support 2)
    /// ```
    /// accuracy 7/10; good P 4/5 R 4/5; crack P 2/4 R 2/3 F1 4/7; hole P 1/1 R 1/2 F1 2/3.
    #[test]
    fn confusion_metrics_match_hand_worked_example() {
        let pairs = [
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (1, 1),
            (2, 1),
            (2, 2),
        ];
        let c = Confusion::new(vec!["good".into(), "crack".into(), "hole".into()], pairs);
        assert_eq!(c.matrix, vec![vec![4, 1, 0], vec![1, 2, 0], vec![0, 1, 1]]);
        assert!((c.accuracy() - 0.7).abs() < 1e-12);
        let pc = c.per_class();
        assert!((pc[0].precision - 0.8).abs() < 1e-12 && (pc[0].recall - 0.8).abs() < 1e-12);
        assert!((pc[1].precision - 0.5).abs() < 1e-12 && (pc[1].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((pc[1].f1 - 4.0 / 7.0).abs() < 1e-12);
        assert!((pc[2].precision - 1.0).abs() < 1e-12 && (pc[2].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            pc.iter().map(|m| m.support).collect::<Vec<_>>(),
            vec![5, 3, 2]
        );
        assert!((c.macro_f1() - (0.8 + 4.0 / 7.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn review_band_by_hand() {
        // 12 good images scored 0.00..0.55 (step 0.05), 12 defective 0.30..0.85: they overlap
        // on 0.30..0.55.
        let good: Vec<f32> = (0..12).map(|i| i as f32 * 0.05).collect();
        let def: Vec<f32> = (0..12).map(|i| 0.30 + i as f32 * 0.05).collect();
        let scores: Vec<f32> = good.iter().chain(&def).copied().collect();
        let d: Vec<bool> = (0..24).map(|i| i >= 12).collect();
        // No miss: PASS below the lowest defective 0.30; no false reject: FAIL above the
        // highest good 0.55.
        let b = choose_band(&scores, &d, 0.0, 0.0, true);
        assert!((b.pass_threshold.unwrap() - (0.30 - THRESHOLD_MARGIN)).abs() < 1e-6);
        assert!((b.threshold - (0.55 + THRESHOLD_MARGIN)).abs() < 1e-6);
        let r = review_rates(&scores, &d, b.pass_threshold, b.threshold);
        assert_eq!(
            (r.auto_pass_miss_rate, r.auto_fail_false_reject_rate),
            (0.0, 0.0)
        );
        // In the band: good 0.30..0.55 (6) and defective 0.30..0.55 (6) → 12 of 24.
        assert!((r.review_share - 0.5).abs() < 1e-12);
        // One miss and one false reject allowed (1/12 ≈ 8.4 %): the band narrows by one on
        // each side.
        let b = choose_band(&scores, &d, 0.084, 0.084, true);
        assert!((b.pass_threshold.unwrap() - (0.35 - THRESHOLD_MARGIN)).abs() < 1e-6);
        assert!((b.threshold - (0.50 + THRESHOLD_MARGIN)).abs() < 1e-6);
        let r = review_rates(&scores, &d, b.pass_threshold, b.threshold);
        assert!((r.auto_pass_miss_rate - 1.0 / 12.0).abs() < 1e-12);
        assert!((r.auto_fail_false_reject_rate - 1.0 / 12.0).abs() < 1e-12);
        assert!((r.review_share - 8.0 / 24.0).abs() < 1e-12);
        // Separable scores: one threshold meets both targets, the band is empty.
        let sep: Vec<f32> = good.iter().map(|g| g * 0.5).chain(def.clone()).collect();
        let b = choose_band(&sep, &d, 0.0, 0.0, true);
        assert_eq!(b.pass_threshold, Some(b.threshold));
        assert_eq!(
            review_rates(&sep, &d, b.pass_threshold, b.threshold).review_share,
            0.0
        );
        // Too few images, or the band off: one threshold, and the rule says why.
        let b = choose_band(&scores[6..18], &d[6..18], 0.0, 0.0, true);
        assert_eq!(b.pass_threshold, None);
        assert!(b.rule.contains("too few"), "{}", b.rule);
        let b = choose_band(&scores, &d, 0.0, 0.0, false);
        assert_eq!(b.pass_threshold, None);
        assert!((b.threshold - (0.30 - THRESHOLD_MARGIN)).abs() < 1e-6);
        // Two-way rates: nothing in review.
        let r = review_rates(&scores, &d, None, b.threshold);
        assert_eq!((r.review_share, r.auto_pass_miss_rate), (0.0, 0.0));
    }

    #[test]
    fn auroc_and_threshold_by_hand() {
        // Good scores 0.1 0.2 0.6; defective 0.4 0.6 0.9. Pairs (def > good): 0.4 beats 2,
        // 0.6 beats 2 and ties 1 (half), 0.9 beats 3 → 7.5 / 9.
        let scores = [0.1, 0.2, 0.6, 0.4, 0.6, 0.9];
        let def = [false, false, false, true, true, true];
        assert!((auroc(&scores, &def).expect("both classes") - 7.5 / 9.0).abs() < 1e-12);
        assert_eq!(auroc(&scores[..3], &def[..3]), None);
        // Miss ≤ 0 → threshold = lowest defective score 0.4: FRR 1/3 (the 0.6 good image).
        let t = choose_threshold(&scores, &def, 0.0);
        assert_eq!(t, 0.4 - THRESHOLD_MARGIN);
        let r = rates_at(&scores, &def, t);
        assert_eq!(r.miss_rate, 0.0);
        assert!((r.false_reject_rate - 1.0 / 3.0).abs() < 1e-12);
        // Allowing one miss in three (34 %) moves the threshold to 0.6.
        assert_eq!(
            choose_threshold(&scores, &def, 0.34),
            0.6 - THRESHOLD_MARGIN
        );
    }
}

/// Per FAIL class `c`: the AUROC of class `c`'s scores against the PASS images' scores.
/// `labels[i]` is image `i`'s class index; `is_pass[k]` says which classes PASS.
pub fn per_class_auroc(scores: &[f32], labels: &[usize], is_pass: &[bool]) -> Vec<Option<f64>> {
    (0..is_pass.len())
        .map(|c| {
            if is_pass[c] {
                return None;
            }
            let (s, d): (Vec<f32>, Vec<bool>) = scores
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == c || is_pass[**l])
                .map(|(s, l)| (*s, *l == c))
                .unzip();
            auroc(&s, &d)
        })
        .collect()
}
