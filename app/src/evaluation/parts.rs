//! Figures per physical part (a group of images of one part, under several lightings or views)
//! and the parts whose images contradict their label: `inspector eval`'s `parts` and
//! `suspect_parts`, cut from `eval.rs` so that file keeps to running a split through the engine.

use serde::Serialize;

use crate::evaluation::metrics;

/// A part whose images look like the other kind (see
/// [`crate::evaluation::eval::EvalReport::suspect_parts`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuspectPart {
    /// The part (group).
    pub group: String,
    /// Its label: the PASS class when every image is good, else its images' defect labels.
    pub label: String,
    /// Its images.
    pub images: usize,
    /// Those that look like the other kind, by path.
    pub contradicting: Vec<String>,
    /// Their lowest and highest FAIL score.
    pub score_range: (f32, f32),
}

impl SuspectPart {
    /// "part G (LABEL): N of its M images score like the other kind (LO–HI)".
    pub fn summary(&self) -> String {
        format!(
            "part {} ({}): {} of its {} images score like the other kind ({:.2}–{:.2})",
            self.group,
            self.label,
            self.contradicting.len(),
            self.images,
            self.score_range.0,
            self.score_range.1
        )
    }
}

/// The parts whose images look like the other kind (see
/// [`crate::evaluation::eval::EvalReport::suspect_parts`]): a threshold-free rule, so a two-way
/// model with a low threshold does not flag every good part. Rows without a group are not parts
/// (see [`crate::evaluation::eval::EvalReport::disagreements`]); parts that mix good and
/// defective labels are not judged (a part may show its defect in some views only).
pub fn suspect_parts(
    groups: &[Option<String>],
    paths: &[String],
    labels: &[String],
    scores: &[f32],
    defective: &[bool],
) -> Vec<SuspectPart> {
    let median = |want: bool| {
        let mut v: Vec<f32> = scores
            .iter()
            .zip(defective)
            .filter(|(_, d)| **d == want)
            .map(|(s, _)| *s)
            .collect();
        v.sort_by(f32::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let (Some(typical_defect), Some(typical_good)) = (median(true), median(false)) else {
        return Vec::new();
    };
    let mut parts: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, g) in groups.iter().enumerate() {
        if let Some(g) = g {
            parts.entry(g.as_str()).or_default().push(i);
        }
    }
    let mut out = Vec::new();
    for (g, idx) in parts {
        let all_defective = idx.iter().all(|&i| defective[i]);
        if !all_defective && idx.iter().any(|&i| defective[i]) {
            continue;
        }
        let against: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| {
                if all_defective {
                    scores[i] <= typical_good
                } else {
                    scores[i] >= typical_defect
                }
            })
            .collect();
        if against.len() < 2 || 2 * against.len() < idx.len() {
            continue;
        }
        let mut names: Vec<&str> = idx.iter().map(|&i| labels[i].as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let (lo, hi) = against
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| {
                (lo.min(scores[i]), hi.max(scores[i]))
            });
        out.push(SuspectPart {
            group: g.to_string(),
            label: names.join("+"),
            images: idx.len(),
            contradicting: against.iter().map(|&i| paths[i].clone()).collect(),
            score_range: (lo, hi),
        });
    }
    out
}

/// Figures per physical part.
#[derive(Clone, Debug, Serialize)]
pub struct PartReport {
    /// Parts.
    pub parts: usize,
    /// Defective parts.
    pub defective: usize,
    /// PASS/FAIL AUROC over parts.
    pub auroc: Option<f64>,
    /// Defective parts passed / defective parts, at the threshold.
    pub miss_rate: f64,
    /// Good parts failed / good parts, at the threshold.
    pub false_reject_rate: f64,
    /// Parts in the review band / parts, at the model's two thresholds.
    pub review_share: f64,
    /// Defective parts passed automatically / defective parts.
    pub auto_pass_miss_rate: f64,
    /// Good parts failed automatically / good parts.
    pub auto_fail_false_reject_rate: f64,
}

/// Part-level figures from per-image scores (see
/// [`crate::evaluation::eval::EvalReport::parts`]).
pub fn part_report(
    groups: &[Option<String>],
    scores: &[f32],
    defective: &[bool],
    pass_threshold: Option<f32>,
    threshold: f32,
) -> PartReport {
    let mut parts: std::collections::BTreeMap<String, (f32, bool)> = Default::default();
    for (i, ((g, &s), &d)) in groups.iter().zip(scores).zip(defective).enumerate() {
        let key = g.clone().unwrap_or_else(|| format!("\u{0}row{i}"));
        let e = parts.entry(key).or_insert((f32::NEG_INFINITY, false));
        e.0 = e.0.max(s);
        e.1 |= d;
    }
    let (ps, pd): (Vec<f32>, Vec<bool>) = parts.values().copied().unzip();
    let rates = metrics::rates_at(&ps, &pd, threshold);
    let band = metrics::review_rates(&ps, &pd, pass_threshold, threshold);
    PartReport {
        parts: ps.len(),
        defective: pd.iter().filter(|&&d| d).count(),
        auroc: metrics::auroc(&ps, &pd),
        miss_rate: rates.miss_rate,
        false_reject_rate: rates.false_reject_rate,
        review_share: band.review_share,
        auto_pass_miss_rate: band.auto_pass_miss_rate,
        auto_fail_false_reject_rate: band.auto_fail_false_reject_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: the median defective score is 0.8 (the 3rd of 0.1, 0.15, 0.8, 0.85,
    /// 0.9), the median good one 0.2 (the 8th of the 15 good scores, sorted). Part a (good; 2
    /// of 3 images ≥ 0.8) and d (defective; both ≤ 0.2) are suspects; b
    /// (good; 1 of 3) is not, c mixes labels, e has one image, f, h and k agree with their labels,
    /// and rows without a group are never parts.
    #[test]
    fn suspect_parts_by_hand() {
        let g = |s: &str| Some(s.to_string());
        let rows = [
            (g("a"), "ok", 0.9),
            (g("a"), "ok", 0.95),
            (g("a"), "ok", 0.1),
            (g("b"), "ok", 0.85),
            (g("b"), "ok", 0.2),
            (g("b"), "ok", 0.2),
            (g("c"), "ok", 0.9),
            (g("c"), "crack", 0.8),
            (g("d"), "crack", 0.1),
            (g("d"), "hole", 0.15),
            (g("e"), "ok", 0.99),
            (None, "ok", 0.99),
            (g("f"), "hole", 0.85),
            (g("f"), "hole", 0.9),
            (g("h"), "ok", 0.0),
            (g("h"), "ok", 0.05),
            (g("k"), "ok", 0.02),
            (g("k"), "ok", 0.03),
            (g("k"), "ok", 0.04),
            (g("k"), "ok", 0.05),
        ];
        let groups: Vec<Option<String>> = rows.iter().map(|r| r.0.clone()).collect();
        let paths: Vec<String> = (0..rows.len()).map(|i| format!("{i}.png")).collect();
        let labels: Vec<String> = rows.iter().map(|r| r.1.to_string()).collect();
        let scores: Vec<f32> = rows.iter().map(|r| r.2).collect();
        let defective: Vec<bool> = labels.iter().map(|l| l != "ok").collect();
        let got = suspect_parts(&groups, &paths, &labels, &scores, &defective);
        assert_eq!(
            got,
            vec![
                SuspectPart {
                    group: "a".into(),
                    label: "ok".into(),
                    images: 3,
                    contradicting: vec!["0.png".into(), "1.png".into()],
                    score_range: (0.9, 0.95),
                },
                SuspectPart {
                    group: "d".into(),
                    label: "crack+hole".into(),
                    images: 2,
                    contradicting: vec!["8.png".into(), "9.png".into()],
                    score_range: (0.1, 0.15),
                },
            ]
        );
        assert_eq!(
            got[0].summary(),
            "part a (ok): 2 of its 3 images score like the other kind (0.90–0.95)"
        );
        // Without defective images there is no typical defect to compare with.
        let good = vec![false; rows.len()];
        assert!(suspect_parts(&groups, &paths, &labels, &scores, &good).is_empty());
    }
}
