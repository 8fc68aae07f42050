//! `inspector eval`: runs a dataset split through the `kernels` engine — the same path as live
//! inspection — and reports accuracy, per-class metrics, the confusion matrix, PASS/FAIL AUROC
//! and the miss / false-reject rates at the model's own threshold.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use kernels::{Engine, GpuContext, Model};
use serde::Serialize;

use crate::data::dataset::{self, Dataset};
use crate::evaluation::metrics::{self, ClassMetrics, Confusion};
use crate::evaluation::parts::{PartReport, SuspectPart, part_report, suspect_parts};

/// The report `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// The split evaluated (`"all"` for every row of the dataset); null where the rows were
    /// chosen by the caller (the Train tab).
    pub split: Option<String>,
    /// Images evaluated.
    pub images: usize,
    /// Unreadable images skipped.
    pub skipped: usize,
    /// Accuracy over the model's classes.
    pub accuracy: f64,
    /// Mean F1 over classes with images.
    pub macro_f1: f64,
    /// PASS/FAIL AUROC (null without both kinds of images).
    pub auroc: Option<f64>,
    /// The model's threshold.
    pub threshold: f32,
    /// Defective images passed / defective images, at the threshold.
    pub miss_rate: f64,
    /// Good images failed / good images, at the threshold.
    pub false_reject_rate: f64,
    /// The model's review band: PASS below this (null: a two-way model).
    pub pass_threshold: Option<f32>,
    /// Images in the review band (REVIEW) / images, at the model's two thresholds (0 for a
    /// two-way model).
    pub review_share: f64,
    /// Defective images passed automatically (below the band) / defective images.
    pub auto_pass_miss_rate: f64,
    /// Good images failed automatically (at or above the FAIL threshold) / good images.
    pub auto_fail_false_reject_rate: f64,
    /// Per class: precision, recall, f1, support.
    pub per_class: std::collections::BTreeMap<String, ClassMetrics>,
    /// Confusion matrix (rows = true label).
    pub confusion: Confusion,
    /// Median engine latency per image (batch 1, upload to results), ms.
    pub latency_ms_p50: f64,
    /// Of the defective images with a non-empty mask, the share whose heatmap peak lies on the
    /// defect (within one heatmap cell of a mask pixel); absent when no image has a mask.
    pub heatmap_on_defect: Option<f64>,
    /// The same measures per physical part (rows sharing a `group`; a row without one is its
    /// own part): a part FAILs when any of its images does, its score is its images' highest.
    pub parts: PartReport,
    /// How training chose the model's head (its training record's `summary.head`: every
    /// candidate's cross-validated figures and the one kept), where it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<serde_json::Value>,
    /// The ten images the model disagrees with most (a PASS image's FAIL score, a defective
    /// image's 1 − score), strongest first: label errors or the model's blind spots.
    pub disagreements: Vec<Disagreement>,
    /// The five least defect-like defective images: the ones that hold a low-miss threshold
    /// down (and so force the false-reject rate up).
    pub hardest_defects: Vec<Disagreement>,
    /// Parts whose images, half of them or more (two at least), look like the other kind: a
    /// good part's images scored like a typical defect (at or above the median defective
    /// image's score), or a defective part's like a typical good image (at or below the median
    /// good one). Likely label errors, or a part that holds two regions: check them; eval
    /// never changes a label.
    pub suspect_parts: Vec<SuspectPart>,
}

/// An image whose label the model contradicts.
#[derive(Clone, Debug, Serialize)]
pub struct Disagreement {
    /// Path relative to the dataset.
    pub path: String,
    /// Its label.
    pub label: String,
    /// The most probable class.
    pub predicted: String,
    /// FAIL score.
    pub score: f32,
    /// Its part (group), if the dataset names one.
    pub group: Option<String>,
}

/// One evaluated image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    /// Path relative to the dataset.
    pub rel_path: String,
    /// Absolute path.
    pub path: std::path::PathBuf,
    /// True class index.
    pub label: usize,
    /// Predicted (most probable) class index.
    pub predicted: usize,
    /// FAIL score.
    pub score: f32,
}

/// A report with the per-image results behind it (the Train tab's gallery and histograms).
#[derive(Clone, Debug)]
pub struct Detailed {
    /// The report.
    pub report: EvalReport,
    /// Per image, in row order.
    pub images: Vec<ImageResult>,
}

/// Evaluates `model_path` on `split` of the dataset at `data`; without a split asked for, on the
/// split that exists (see [`choose_split`]). Labels unknown to the model are skipped with a
/// warning. The report names the split used.
pub fn evaluate(model_path: &Path, data: &Path, split: Option<&str>) -> anyhow::Result<EvalReport> {
    Ok(evaluate_detailed(model_path, data, split)?.report)
}

/// [`evaluate`] with the per-image results behind the report.
pub fn evaluate_detailed(
    model_path: &Path,
    data: &Path,
    split: Option<&str>,
) -> anyhow::Result<Detailed> {
    let model = Model::load(model_path)?;
    let ds = Dataset::open(data)?;
    let (used, rows) = choose_split(&ds, split)?;
    if split.is_none() {
        eprintln!(
            "evaluating split {used:?} ({} rows; the dataset has: {})",
            rows.len(),
            ds.split_names()
        );
    }
    let gpu = GpuContext::headless()?;
    let mut detailed = evaluate_samples(&model, &rows, &gpu.device, &gpu.queue, &gpu.describe())?;
    detailed.report.split = Some(used);
    Ok(detailed)
}

/// Writes one CSV row per evaluated image (`path,label,predicted,score,decision`: the FAIL score
/// and the three-way decision at the model's thresholds) to `out`, for a spreadsheet or a review
/// of the images the model is least sure of. The class names and thresholds are the report's
/// (the model's), so the file says what `detailed` does.
pub fn write_scores(detailed: &Detailed, out: &Path) -> anyhow::Result<()> {
    let r = &detailed.report;
    let classes = &r.confusion.labels;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    w.write_record(["path", "label", "predicted", "score", "decision"])?;
    for i in &detailed.images {
        let decision = kernels::ModelSpec::decide(i.score, r.pass_threshold, r.threshold);
        w.write_record([
            i.rel_path.as_str(),
            classes[i.label].as_str(),
            classes[i.predicted].as_str(),
            &i.score.to_string(),
            decision.as_str(),
        ])?;
    }
    w.flush()
        .with_context(|| format!("writing the scores to {}", out.display()))
}

/// Chooses `model_path`'s thresholds again on `split` of `data` through the engine: the review
/// band from `(max_miss_rate, max_fail_false_reject, band)` (see [`metrics::choose_band`]), and
/// writes the model with them to `out` (weights untouched; the training record keeps how). The
/// model's own figures on that split are then the band's by construction: report on another.
pub fn rechoose_thresholds(
    model_path: &Path,
    data: &Path,
    split: &str,
    (max_miss_rate, max_fail_false_reject, band): (f64, f64, bool),
    out: &Path,
) -> anyhow::Result<metrics::Band> {
    let mut model = Model::load(model_path)?;
    let ds = Dataset::open(data)?;
    let (used, rows) = choose_split(&ds, Some(split))?;
    let gpu = GpuContext::headless()?;
    let d = evaluate_samples(&model, &rows, &gpu.device, &gpu.queue, &gpu.describe())?;
    let scores: Vec<f32> = d.images.iter().map(|i| i.score).collect();
    let defective: Vec<bool> = d
        .images
        .iter()
        .map(|i| !model.plan.is_pass[i.label])
        .collect();
    let chosen = metrics::choose_band(
        &scores,
        &defective,
        max_miss_rate,
        max_fail_false_reject,
        band,
    );
    model.spec.threshold = chosen.threshold;
    model.spec.pass_threshold = chosen.pass_threshold;
    let record = serde_json::json!({
        "dataset": data.display().to_string(),
        "split": used,
        "date": chrono::Utc::now().to_rfc3339(),
        "band": &chosen,
        "rates": metrics::review_rates(&scores, &defective, chosen.pass_threshold, chosen.threshold),
    });
    match &mut model.spec.training {
        serde_json::Value::Object(o) => {
            o.insert("thresholds".into(), record);
        }
        other => *other = serde_json::json!({ "thresholds": record }),
    }
    model.spec.validate()?;
    model.save(out)?;
    Ok(chosen)
}

/// The rows to evaluate and the split's name: the split asked for (all rows, named `"all"`,
/// when the dataset has no splits), else `test`, else `val`, else all rows. An asked-for split
/// without rows is an error naming the splits there are.
pub fn choose_split(
    ds: &Dataset,
    requested: Option<&str>,
) -> anyhow::Result<(String, Vec<dataset::Sample>)> {
    let has_splits = ds.samples.iter().any(|s| s.split.is_some());
    let (name, rows) = match requested {
        Some(split) if has_splits => (split.to_string(), ds.split(split)),
        Some(_) => ("all".to_string(), ds.samples.clone()),
        None => ["test", "val"]
            .into_iter()
            .map(|n| (n.to_string(), ds.split(n)))
            .find(|(_, rows)| !rows.is_empty())
            .unwrap_or_else(|| ("all".to_string(), ds.samples.clone())),
    };
    anyhow::ensure!(
        !rows.is_empty(),
        "dataset {} has no rows in split {name:?}; the dataset has: {}",
        ds.root.display(),
        ds.split_names()
    );
    Ok((name, rows))
}

/// The dataset labels an anomaly model counts as PASS (its training record's `pass_labels`);
/// empty for a classifier, whose classes are the labels.
pub fn pass_labels(spec: &kernels::ModelSpec) -> Vec<String> {
    spec.training
        .get("pass_labels")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Runs `rows` through the engine on `device` and measures them.
pub fn evaluate_samples(
    model: &Model,
    rows: &[dataset::Sample],
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    adapter: &str,
) -> anyhow::Result<Detailed> {
    evaluate_samples_with(model, rows, device, queue, adapter, &mut |_, _| {})
}

/// [`evaluate_samples`], telling `progress` (rows done, rows) after each row.
pub fn evaluate_samples_with(
    model: &Model,
    rows: &[dataset::Sample],
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    adapter: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Detailed> {
    let mut engine = Engine::new(device, queue, model, 1, adapter)?;
    let spec = &model.spec;
    let pass_labels = pass_labels(spec);
    let mut skipped = 0;
    let (mut probs, mut labels, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let mut hits: Vec<bool> = Vec::new();
    let mut kept = Vec::new();
    for (done, s) in rows.iter().enumerate() {
        progress(done, rows.len());
        let Some(label) = spec.class_of_label(&s.label, &pass_labels) else {
            tracing::warn!(
                "{}: label {:?} is not a class of the model; skipped",
                s.rel_path,
                s.label
            );
            skipped += 1;
            continue;
        };
        let img = match dataset::decode_image(&s.path) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", s.rel_path);
                skipped += 1;
                continue;
            }
        };
        let t = Instant::now();
        let out = engine
            .infer(&[img.frame()])
            .with_context(|| format!("inspecting {}", s.rel_path))?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        let out = out
            .into_iter()
            .next()
            .context("engine returned no result")?;
        if !model.plan.is_pass[label]
            && let Some(m) = s.mask.as_deref()
            && let Ok(mask) = dataset::decode_image(m)
            && let Some(hit) = heatmap_hits_mask(&out.heatmap, &mask)
        {
            hits.push(hit);
        }
        probs.push(out.probabilities);
        labels.push(label);
        kept.push(s);
    }
    progress(rows.len(), rows.len());
    anyhow::ensure!(
        !probs.is_empty(),
        "no readable images with labels the model knows"
    );
    let vm = crate::evaluation::metrics::val_metrics(spec, &probs, &labels);
    let rates = metrics::rates_at(&vm.scores, &vm.defective, spec.threshold);
    latencies.sort_by(f64::total_cmp);
    let is_pass: Vec<bool> = spec
        .classes
        .iter()
        .map(|c| spec.pass_classes.contains(c))
        .collect();
    let class_auroc = metrics::per_class_auroc(&vm.scores, &labels, &is_pass);
    let per_class = spec
        .classes
        .iter()
        .cloned()
        .zip(vm.confusion.per_class())
        .zip(class_auroc)
        .map(|((name, mut m), a)| {
            m.auroc = a;
            (name, m)
        })
        .collect();
    let groups: Vec<Option<String>> = kept.iter().map(|s| s.group.clone()).collect();
    let parts = part_report(
        &groups,
        &vm.scores,
        &vm.defective,
        spec.pass_threshold,
        spec.threshold,
    );
    let band = metrics::review_rates(
        &vm.scores,
        &vm.defective,
        spec.pass_threshold,
        spec.threshold,
    );
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let against = |i: usize| {
        if vm.defective[i] {
            1.0 - vm.scores[i]
        } else {
            vm.scores[i]
        }
    };
    order.sort_by(|&a, &b| against(b).total_cmp(&against(a)));
    let entry = |i: usize| Disagreement {
        path: kept[i].rel_path.clone(),
        label: kept[i].label.clone(),
        predicted: spec.classes[metrics::argmax(&probs[i]).unwrap_or(0)].clone(),
        score: vm.scores[i],
        group: kept[i].group.clone(),
    };
    let disagreements = order.iter().take(10).map(|&i| entry(i)).collect();
    let mut hard: Vec<usize> = (0..probs.len()).filter(|&i| vm.defective[i]).collect();
    hard.sort_by(|&a, &b| vm.scores[a].total_cmp(&vm.scores[b]));
    let hardest_defects = hard.iter().take(5).map(|&i| entry(i)).collect();
    let suspect_parts = suspect_parts(
        &groups,
        &kept.iter().map(|s| s.rel_path.clone()).collect::<Vec<_>>(),
        &kept.iter().map(|s| s.label.clone()).collect::<Vec<_>>(),
        &vm.scores,
        &vm.defective,
    );
    let images = kept
        .iter()
        .zip(&probs)
        .zip(&labels)
        .zip(&vm.scores)
        .map(|(((s, p), &label), &score)| ImageResult {
            rel_path: s.rel_path.clone(),
            path: s.path.clone(),
            label,
            predicted: metrics::argmax(p).unwrap_or(0),
            score,
        })
        .collect();
    Ok(Detailed {
        report: EvalReport {
            split: None,
            images: probs.len(),
            skipped,
            accuracy: vm.confusion.accuracy(),
            macro_f1: vm.confusion.macro_f1(),
            auroc: vm.auroc,
            threshold: spec.threshold,
            miss_rate: rates.miss_rate,
            false_reject_rate: rates.false_reject_rate,
            pass_threshold: spec.pass_threshold,
            review_share: band.review_share,
            auto_pass_miss_rate: band.auto_pass_miss_rate,
            auto_fail_false_reject_rate: band.auto_fail_false_reject_rate,
            per_class,
            confusion: vm.confusion,
            latency_ms_p50: latencies[latencies.len() / 2],
            heatmap_on_defect: (!hits.is_empty())
                .then(|| hits.iter().filter(|&&h| h).count() as f64 / hits.len() as f64),
            parts,
            head: spec
                .training
                .get("summary")
                .and_then(|s| s.get("head"))
                .filter(|h| !h.is_null())
                .cloned(),
            disagreements,
            hardest_defects,
            suspect_parts,
        },
        images,
    })
}

/// Whether the hottest cell of a whole-frame `heatmap` lies on the defect of `mask` (an image of
/// the frame's size, defect where bright): within one cell of a mask pixel. `None` when the mask
/// is empty or the heatmap has no cells.
pub fn heatmap_hits_mask(heatmap: &kernels::Heatmap, mask: &dataset::DecodedImage) -> Option<bool> {
    let hot = (0..heatmap.values.len())
        .max_by(|&a, &b| heatmap.values[a].total_cmp(&heatmap.values[b]))?;
    let (hw, hh) = (heatmap.width.max(1) as u64, heatmap.height.max(1) as u64);
    let (cx, cy) = (hot as u64 % hw, hot as u64 / hw);
    let bpp = mask.format.bytes_per_pixel() as usize;
    let (w, h) = (mask.width.max(1) as u64, mask.height.max(1) as u64);
    let mut any = false;
    for (i, px) in mask.data.chunks_exact(bpp).enumerate() {
        if px[0] > 127 {
            any = true;
            let (x, y) = (i as u64 % w, i as u64 / w);
            if (x * hw / w).abs_diff(cx) <= 1 && (y * hh / h).abs_diff(cy) <= 1 {
                return Some(true);
            }
        }
    }
    any.then_some(false)
}

/// Prints the report as a table.
pub fn print(report: &EvalReport) {
    if let Some(split) = &report.split {
        println!("split {split}");
    }
    println!("images {}  skipped {}", report.images, report.skipped);
    println!(
        "accuracy {:.4}  macro F1 {:.4}",
        report.accuracy, report.macro_f1
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "class", "precision", "recall", "f1", "support", "AUROC"
    );
    for (name, m) in &report.per_class {
        println!(
            "{name:<16} {:>9.4} {:>9.4} {:>9.4} {:>8} {:>9}",
            m.precision,
            m.recall,
            m.f1,
            m.support,
            m.auroc.map_or("-".into(), |a| format!("{a:.4}"))
        );
    }
    println!(
        "confusion (rows = true, columns = predicted): {:?}",
        report.confusion.labels
    );
    for (name, row) in report.confusion.labels.iter().zip(&report.confusion.matrix) {
        println!("  {name:<16} {row:?}");
    }
    match report.auroc {
        Some(a) => println!("PASS/FAIL AUROC {a:.4}"),
        None => println!("PASS/FAIL AUROC n/a (needs both good and defective images)"),
    }
    println!(
        "threshold {:.4}: miss rate {:.4}, false-reject rate {:.4}",
        report.threshold, report.miss_rate, report.false_reject_rate
    );
    if let Some(p) = report.pass_threshold {
        println!(
            "review band: PASS below {p:.4}, FAIL from {:.4}: REVIEW {:.1} % of the images, \
             auto-pass miss rate {:.4}, auto-fail false-reject rate {:.4}",
            report.threshold,
            100.0 * report.review_share,
            report.auto_pass_miss_rate,
            report.auto_fail_false_reject_rate
        );
    }
    if let Some(h) = &report.head
        && let (Some(c), Some(k)) = (h["candidates"].as_array(), h["kept"].as_u64())
        && let Some(kept) = c.get(k as usize)
    {
        println!(
            "head: {} {} (kept by training: {})",
            kept["head"].as_str().unwrap_or("?"),
            kept["pool"].as_str().unwrap_or(""),
            h["why"].as_str().unwrap_or("")
        );
    }
    if let Some(h) = report.heatmap_on_defect {
        println!(
            "heatmap peak on the defect: {:.1} % of masked defective images",
            h * 100.0
        );
    }
    let p = &report.parts;
    println!(
        "per part ({} parts, {} defective): AUROC {}, miss rate {:.4}, false-reject rate {:.4}",
        p.parts,
        p.defective,
        p.auroc.map_or("n/a".into(), |a| format!("{a:.4}")),
        p.miss_rate,
        p.false_reject_rate
    );
    if report.pass_threshold.is_some() {
        println!(
            "per part with the review band: REVIEW {:.1} % of the parts, auto-pass miss rate \
             {:.4}, auto-fail false-reject rate {:.4}",
            100.0 * p.review_share,
            p.auto_pass_miss_rate,
            p.auto_fail_false_reject_rate
        );
    }
    for (title, list) in [
        (
            "strongest disagreements with the labels",
            &report.disagreements,
        ),
        (
            "least defect-like defective images (they hold a low-miss threshold down)",
            &report.hardest_defects,
        ),
    ] {
        println!("{title}:");
        for d in list {
            println!(
                "  {:<48} label {:<12} predicted {:<12} score {:.4} part {}",
                d.path,
                d.label,
                d.predicted,
                d.score,
                d.group.as_deref().unwrap_or("-")
            );
        }
    }
    if !report.suspect_parts.is_empty() {
        println!(
            "parts that look like the other kind (likely label errors, or two regions in one \
             part: check them; the labels are not changed):"
        );
        for s in &report.suspect_parts {
            println!("  {}: {}", s.summary(), s.contradicting.join(" "));
        }
    }
    println!("latency p50 {:.2} ms per image", report.latency_ms_p50);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::{Layout, Sample};

    fn ds(splits: &[Option<&str>]) -> Dataset {
        let samples = splits
            .iter()
            .enumerate()
            .map(|(i, s)| Sample {
                path: format!("/d/{i}.png").into(),
                rel_path: format!("{i}.png"),
                label: "Free".into(),
                split: s.map(str::to_string),
                mask: None,
                group: None,
            })
            .collect();
        Dataset {
            root: "/d".into(),
            samples,
            missing: vec![],
            unlabelled: vec![],
            layout: Layout::Manifest,
        }
    }

    /// Without `--split`: test, else val, else every row (the demo set's only split is "demo").
    #[test]
    fn eval_without_a_split_takes_the_split_that_exists() {
        let (n, r) = choose_split(&ds(&[Some("train"), Some("test"), Some("val")]), None).unwrap();
        assert_eq!((n.as_str(), r.len()), ("test", 1));
        let (n, r) = choose_split(&ds(&[Some("train"), Some("val"), Some("val")]), None).unwrap();
        assert_eq!((n.as_str(), r.len()), ("val", 2));
        let (n, r) = choose_split(&ds(&[Some("demo"), Some("demo")]), None).unwrap();
        assert_eq!((n.as_str(), r.len()), ("all", 2));
        let (n, r) = choose_split(&ds(&[None, None, None]), None).unwrap();
        assert_eq!((n.as_str(), r.len()), ("all", 3));
        // Asked for and absent: an error naming the splits there are.
        let e = choose_split(&ds(&[Some("demo")]), Some("test")).unwrap_err();
        assert!(e.to_string().contains("demo"), "{e}");
    }
}
