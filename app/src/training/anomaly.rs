//! Anomaly mode: a model trained from good parts only (PatchCore, Roth et al., CVPR 2022), for a
//! new product before any defect has been seen.
//!
//! - Features: the frozen backbone's local features, the same ones the classifier's head reads
//!   (`features::feature_network`: stages 2–4, 3×3 local average, stride 16, 232 channels),
//!   extracted by the kernels engine and shared with the classifier through the feature cache.
//! - Memory bank: every valid position of the good training images is a candidate; greedy
//!   k-center coreset subsampling (on a seeded sparse random projection, as anomalib does) keeps
//!   `--bank` entries (default: 10 % of the candidates, at most 4,096) that cover them best.
//! - Scoring (`kernels::Layer::MemoryBank`, on the GPU): a position's score is its distance to
//!   the nearest entry, the image's the largest over its positions, reweighted by the support
//!   of the nearest entry (anomalib's `num_neighbors` = 9).
//! - Threshold: with defective val images, the largest that keeps the val miss rate within
//!   `max_miss_rate` (as for the classifier); with good val images only, the smallest that keeps
//!   their false-reject rate within `max_false_reject` (default 1 %).
//! - Calibration: P(anomaly) = sigmoid((score − threshold) / σ), σ the spread of the good val
//!   scores, so the chosen threshold is P = 0.5 and the station's threshold slider works as for
//!   a classifier.
//!
//! One file of about 810 lines, 65 of them tests: the coreset, the CPU scoring rule (which must
//! match the kernels' `memory_bank` layer), the threshold and calibration are one algorithm
//! that `train` runs top to bottom and that is read together; the pieces it shares with the
//! head trainer are already in [`super::features`] and [`super::splits`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use kernels::{Layer, LayerWeights, Model, ModelSpec, Resize};

use super::features::{self, Features};
use super::splits::load_split;
use super::types::{CoresetKind, EpochRecord, Progress, TrainConfig, TrainSummary};
use crate::data::dataset::{Dataset, Sample};
use crate::evaluation::metrics;
use crate::evaluation::metrics::val_metrics;

/// Fewest readable good training images an anomaly model is built from.
pub const MIN_GOOD_IMAGES: usize = 10;
/// The memory bank's budget: 64 MiB of f32 features (72,315 entries of 232 features), which
/// also keeps it far inside a GPU's storage-buffer limit (lavapipe: 128 MiB).
pub const BANK_BUDGET_BYTES: u64 = 64 << 20;
/// The candidates' budget (all good positions, before subsampling): 1 GiB of f32.
pub const CANDIDATE_BUDGET_BYTES: u64 = 1 << 30;
/// Default bank size as a fraction of the candidates (anomalib's `coreset_sampling_ratio`)...
pub const DEFAULT_CORESET_RATIO: f64 = 0.1;
/// ... at most this many entries: on magnetic-tile (126,800 good positions) 1,268 / 4,096 /
/// 12,680 entries gave val AUROC 0.823 / 0.813 / 0.840 (20 val parts: within their noise),
/// while training time and the station's time per frame grow with the bank.
pub const DEFAULT_MAX_BANK: usize = 4096;
/// Dimensions of the random projection the coreset is selected on.
pub const PROJECTION_DIM: usize = 64;
/// The name of the FAIL class of every anomaly model.
pub const ANOMALY_CLASS: &str = "anomaly";

/// How the threshold was chosen, for the summary and the Train tab.
fn rule_text(defective: usize, good: usize, cfg: &TrainConfig) -> String {
    if defective > 0 {
        format!(
            "miss rate ≤ {:.1} % on {defective} defective val images ({good} good)",
            cfg.max_miss_rate * 100.0
        )
    } else {
        format!(
            "false-reject rate ≤ {:.1} % on {good} good val images (no defective val images)",
            cfg.max_false_reject * 100.0
        )
    }
}

/// The training and val rows of an anomaly run: the training split's PASS rows (others are
/// ignored, with a count), the val split (carved from the training rows, whole groups, when it
/// has none), the PASS classes and the count of missing files.
struct Rows {
    good: Vec<Sample>,
    val: Vec<Sample>,
    pass: Vec<String>,
    ignored: usize,
    missing: usize,
}

fn rows(cfg: &TrainConfig) -> anyhow::Result<Rows> {
    let ds = Dataset::open(&cfg.data)?;
    let pass = ds.pass_classes(&cfg.pass)?;
    let (mut good, val) =
        ds.train_val_rows(&cfg.split_train, &cfg.split_val, cfg.val_fraction, cfg.seed)?;
    let all = good.len();
    good.retain(|s| pass.contains(&s.label));
    Ok(Rows {
        ignored: all - good.len(),
        good,
        val,
        pass,
        missing: ds.missing.len(),
    })
}

/// Seeded sparse random projection `[d] → [PROJECTION_DIM]` (Li et al.: entries ±√(s / k) with
/// probability 1 / (2s) each, s = √d), applied to `rows` (`n × d`).
fn project(rows: &[f32], d: usize, seed: u64) -> Vec<f32> {
    let k = PROJECTION_DIM;
    let s = (d as f64).sqrt();
    let v = (s / k as f64).sqrt() as f32;
    let mut rng = kernels::rng::SplitMix64::new(seed);
    // Per input dimension, its (output, sign) entries.
    let cols: Vec<Vec<(usize, f32)>> = (0..d)
        .map(|_| {
            (0..k)
                .filter_map(|o| {
                    let u = rng.uniform(0.0, 1.0) as f64;
                    if u < 0.5 / s {
                        Some((o, v))
                    } else if u < 1.0 / s {
                        Some((o, -v))
                    } else {
                        None
                    }
                })
                .collect()
        })
        .collect();
    let n = rows.len() / d;
    let mut out = vec![0f32; n * k];
    for i in 0..n {
        let o = &mut out[i * k..(i + 1) * k];
        for (j, col) in cols.iter().enumerate() {
            let x = rows[i * d + j];
            if x != 0.0 {
                for &(t, w) in col {
                    o[t] += w * x;
                }
            }
        }
    }
    out
}

/// Squared distance of two equal-length rows (8 partial sums, so it vectorises).
fn dist2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Greedy k-center coreset: starting from a seeded random row, repeatedly adds the row farthest
/// from everything chosen so far, `m` rows in all (of `rows`, `n × d`). Runs on every core;
/// `tick(chosen)` reports progress; `cancel` stops it.
fn greedy_coreset(
    rows: &[f32],
    d: usize,
    m: usize,
    seed: u64,
    cancel: &AtomicBool,
    tick: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<usize>> {
    let n = rows.len() / d;
    let m = m.min(n);
    if m == 0 {
        return Ok(Vec::new());
    }
    let mut rng = kernels::rng::SplitMix64::new(seed);
    let first = rng.below(n as u64) as usize;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let chunk = n.div_ceil(threads);
    let mut mind = vec![f32::INFINITY; n];
    let mut chosen = Vec::with_capacity(m);
    chosen.push(first);
    let mut center = first;
    let every = (m / 100).max(1);
    while chosen.len() < m {
        if cancel.load(Ordering::Relaxed) {
            bail!("training cancelled while building the memory bank");
        }
        let c = &rows[center * d..(center + 1) * d];
        // Update the distances to the chosen set with the newest center; the farthest row wins.
        let best = std::thread::scope(|scope| {
            let handles: Vec<_> = mind
                .chunks_mut(chunk)
                .enumerate()
                .map(|(t, part)| {
                    scope.spawn(move || {
                        let base = t * chunk;
                        let mut best = (f32::NEG_INFINITY, 0usize);
                        for (j, md) in part.iter_mut().enumerate() {
                            let i = base + j;
                            let v = dist2(&rows[i * d..(i + 1) * d], c);
                            if v < *md {
                                *md = v;
                            }
                            if *md > best.0 {
                                best = (*md, i);
                            }
                        }
                        best
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).fold(
                (f32::NEG_INFINITY, 0usize),
                |a, b| if b.0 > a.0 { b } else { a },
            )
        });
        if best.0 <= 0.0 {
            break; // every row coincides with a chosen one
        }
        center = best.1;
        chosen.push(center);
        if chosen.len() % every == 0 {
            tick(chosen.len());
        }
    }
    tick(chosen.len());
    Ok(chosen)
}

/// The anomaly model's spec: backbone, local features, memory bank.
pub fn anomaly_spec(
    name: &str,
    b: &kernels::backbone::Backbone,
    features: u32,
    entries: u32,
    neighbors: u32,
    pass_name: &str,
) -> anyhow::Result<ModelSpec> {
    let mut layers = b.layers.clone();
    layers.push(Layer::MemoryBank {
        entries,
        features,
        neighbors,
    });
    let spec = ModelSpec::new(
        name,
        b.input.clone(),
        layers,
        vec![pass_name.to_owned(), ANOMALY_CLASS.to_owned()],
        vec![pass_name.to_owned()],
    );
    spec.validate()?;
    Ok(spec)
}

/// `P(anomaly)` of a raw score under the calibration `[center, scale]`.
fn calibrated(score: f64, center: f64, scale: f64) -> f32 {
    (1.0 / (1.0 + (-(score - center) / scale).exp())) as f32
}

/// Trains an anomaly model from the good images (see the module docs); `side` and `resize`
/// come from the backbone preset.
pub fn train(
    cfg: &TrainConfig,
    side: u32,
    resize: Resize,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
    if !(1..=16).contains(&cfg.neighbors) {
        bail!(
            "--neighbors {}: the support size must be 1..=16",
            cfg.neighbors
        );
    }
    if cfg.bank == Some(0) {
        bail!("--bank 0: a memory bank needs at least one entry");
    }
    let Rows {
        good: train_rows,
        val: val_rows,
        pass,
        ignored,
        missing,
    } = rows(cfg)?;
    if ignored > 0 {
        tracing::info!(
            "anomaly mode: {ignored} defect images of the training split are ignored (it learns \
             from good parts only)"
        );
    }
    let labels: Vec<String> = train_rows
        .iter()
        .chain(&val_rows)
        .map(|s| s.label.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut skipped = Vec::new();
    let train_set = load_split(&train_rows, &labels, &mut skipped);
    if train_set.images.len() < MIN_GOOD_IMAGES {
        bail!(
            "anomaly training needs at least {MIN_GOOD_IMAGES} readable good training images; \
             the split {:?} of {} has {} of the PASS classes {pass:?}. Add good images, or name \
             the good classes with --pass",
            cfg.split_train,
            cfg.data.display(),
            train_set.images.len()
        );
    }
    let val_set = load_split(&val_rows, &labels, &mut skipped);
    if val_set.images.is_empty() {
        bail!(
            "no readable validation images in {} (split {:?}): the threshold is chosen on them",
            cfg.data.display(),
            cfg.split_val
        );
    }
    let val_defective: Vec<bool> = val_set
        .labels
        .iter()
        .map(|&l| !pass.contains(&labels[l]))
        .collect();
    let pass_name = if pass.len() == 1 {
        pass[0].clone()
    } else {
        pass.join("+")
    };

    let weights_path = features::backbone_path();
    let (b, lf) = features::feature_network(&weights_path, side, resize)?;
    let features = features::feature_channels(&b);
    let d = features as usize;
    let probe_spec = anomaly_spec(&cfg.preset, &b, features, 1, 1, &pass_name)?;
    let mut probe_weights = b.weights.clone();
    probe_weights.push(Some(LayerWeights {
        weight: vec![0.0; d],
        bias: vec![0.0, 1.0],
    }));
    let probe = Model::new(probe_spec.clone(), probe_weights)?;
    // On a device apart from the window's (see `background_gpu`).
    let gpu = super::nn::background_gpu()?;
    let backend = format!(
        "features: kernels engine on {}; coreset and val scores: cpu",
        gpu.describe()
    );
    progress(Progress::Started {
        train: train_set.images.len(),
        val: val_set.images.len(),
        skipped: skipped.clone(),
        backend: backend.clone(),
        first_epoch: 1,
    });

    // 1. Features of the good training images and of the val images.
    let t_extract = Instant::now();
    let (train_f, val_f, extracted) = features::extract_splits(
        &probe,
        lf,
        &weights_path,
        &gpu,
        &train_set,
        &val_set,
        cancel,
        progress,
    )?;
    let extract_s = t_extract.elapsed().as_secs_f64();

    // 2. Candidates: every valid position of every good image.
    let candidates = candidates(&train_f, cfg.seed)?;
    let n_cand = candidates.len() / d;
    let want = match cfg.bank {
        Some(m) => m,
        None => {
            ((n_cand as f64 * DEFAULT_CORESET_RATIO).round() as usize).clamp(1, DEFAULT_MAX_BANK)
        }
    };
    let bytes = want as u64 * d as u64 * 4;
    if bytes > BANK_BUDGET_BYTES {
        bail!(
            "a memory bank of {want} entries × {d} features needs {:.1} MiB, over the {} MiB \
             budget: choose --bank {} or fewer",
            bytes as f64 / (1 << 20) as f64,
            BANK_BUDGET_BYTES >> 20,
            BANK_BUDGET_BYTES / (d as u64 * 4)
        );
    }
    if want > n_cand {
        tracing::warn!(
            "--bank {want} is more than the {n_cand} good positions; the bank keeps all of them"
        );
    }
    let m = want.min(n_cand);

    // 3. Greedy k-center coreset on the projection.
    let t_bank = Instant::now();
    let chosen = {
        let mut tick = |k: usize| {
            progress(Progress::Step {
                epoch: 1,
                step: k,
                steps: m,
                loss: f64::NAN,
            })
        };
        match cfg.coreset {
            CoresetKind::Greedy => {
                let projected = project(&candidates, d, cfg.seed ^ 0x9e37_79b9);
                greedy_coreset(&projected, PROJECTION_DIM, m, cfg.seed, cancel, &mut tick)?
            }
            CoresetKind::Random => {
                let mut rng = kernels::rng::SplitMix64::new(cfg.seed);
                let mut all: Vec<usize> = (0..n_cand).collect();
                for i in 0..m {
                    let j = i + rng.below((n_cand - i) as u64) as usize;
                    all.swap(i, j);
                }
                all.truncate(m);
                tick(m);
                all
            }
        }
    };
    let m = chosen.len();
    let mut bank = Vec::with_capacity(m * d);
    for &i in &chosen {
        bank.extend_from_slice(&candidates[i * d..(i + 1) * d]);
    }
    let norm = (candidates.iter().map(|&x| x as f64 * x as f64).sum::<f64>()
        / n_cand.max(1) as f64)
        .sqrt();
    drop(candidates);
    let bank_s = t_bank.elapsed().as_secs_f64();

    // 4. Raw val scores from the cached val features, on the CPU: the same rule as the
    // engine's memory-bank kernels (tests/tests/training.rs checks that `eval` through the
    // engine reproduces these figures).
    let t_val = Instant::now();
    let spec0 = anomaly_spec(
        &cfg.preset,
        &b,
        d as u32,
        m as u32,
        cfg.neighbors,
        &pass_name,
    )?;
    let mut weights = b.weights.clone();
    weights.push(Some(LayerWeights {
        weight: bank.clone(),
        bias: vec![0.0, 1.0],
    }));
    let scores = score_images(
        &val_f,
        &bank,
        d,
        cfg.neighbors as usize,
        cancel,
        &mut |done| {
            progress(Progress::Step {
                epoch: 2,
                step: done,
                steps: val_set.images.len(),
                loss: f64::NAN,
            })
        },
    )?;
    let val_s = t_val.elapsed().as_secs_f64();

    // 5. Threshold and calibration.
    let good: Vec<f64> = scores
        .iter()
        .zip(&val_defective)
        .filter(|(_, d)| !**d)
        .map(|(s, _)| *s)
        .collect();
    let mut def: Vec<f64> = scores
        .iter()
        .zip(&val_defective)
        .filter(|(_, d)| **d)
        .map(|(s, _)| *s)
        .collect();
    let spread =
        spread_of(if good.len() >= 2 { &good } else { &scores }).max(1e-6 * norm.max(1e-3));
    let threshold = if !def.is_empty() {
        def.sort_by(f64::total_cmp);
        let allowed = metrics::allowed_count(cfg.max_miss_rate, def.len());
        def[allowed.min(def.len() - 1)] - 1e-4 * spread
    } else {
        let mut g = good.clone();
        g.sort_by(|a, b| b.total_cmp(a));
        let allowed = metrics::allowed_count(cfg.max_false_reject, g.len());
        match g.get(allowed) {
            // Just above the highest good score that must pass.
            Some(&s) => s + 1e-4 * spread,
            None => g.last().copied().unwrap_or(0.0),
        }
    };
    let rule = rule_text(def.len(), good.len(), cfg);
    let probs: Vec<Vec<f32>> = scores
        .iter()
        .map(|&s| {
            let p = calibrated(s, threshold, spread);
            vec![1.0 - p, p]
        })
        .collect();
    let mut spec = spec0;
    spec.threshold = 0.5;
    let val_labels: Vec<usize> = val_defective.iter().map(|&d| d as usize).collect();
    let vm = val_metrics(&spec, &probs, &val_labels);
    // The calibration puts the miss target at 0.5; with enough defective and good val images
    // a review band is set on the calibrated scores like a classifier's.
    let band = cfg.band_on(&vm);
    let rule = match band.pass_threshold {
        Some(_) => {
            spec.threshold = band.threshold;
            spec.pass_threshold = band.pass_threshold;
            format!(
                "{rule}; review band on the calibrated scores: {}",
                band.rule
            )
        }
        None => rule,
    };
    let rates = metrics::review_rates(
        &vm.scores,
        &vm.defective,
        spec.pass_threshold,
        spec.threshold,
    );
    if let Some(w) = weights.last_mut().and_then(Option::as_mut) {
        w.bias = vec![threshold as f32, spread as f32];
    }
    let record = EpochRecord {
        epoch: 1,
        train_loss: f64::NAN,
        train_accuracy: f64::NAN,
        val_accuracy: vm.confusion.accuracy(),
        val_macro_f1: vm.confusion.macro_f1(),
        val_auroc: vm.auroc,
        lr: 0.0,
        elapsed_s: started.elapsed().as_secs_f64(),
        eta_s: 0.0,
    };
    progress(Progress::Epoch(record.clone()));
    tracing::info!(
        "anomaly bank: {m} of {n_cand} good positions ({} images); features {extract_s:.1} s, \
         coreset {bank_s:.1} s, val {val_s:.1} s; threshold {threshold:.4} ({rule})",
        train_set.images.len()
    );
    let summary = TrainSummary {
        model: cfg.out.clone(),
        preset: cfg.preset.clone(),
        classes: spec.classes.clone(),
        pass_classes: spec.pass_classes.clone(),
        train_images: train_set.images.len(),
        val_images: val_set.images.len(),
        skipped: skipped.len(),
        missing,
        best_epoch: 1,
        epochs_run: 1,
        val_accuracy: vm.confusion.accuracy(),
        val_macro_f1: vm.confusion.macro_f1(),
        val_auroc: vm.auroc,
        threshold: spec.threshold,
        pass_threshold: spec.pass_threshold,
        val_miss_rate: rates.auto_pass_miss_rate,
        val_false_reject_rate: rates.auto_fail_false_reject_rate,
        val_review_share: rates.review_share,
        train_seconds: started.elapsed().as_secs_f64(),
        backend,
        early_stopped: false,
        threshold_rule: rule.clone(),
        ignored_defects: ignored,
        bank_entries: Some(m),
        head: None,
    };
    spec.training = serde_json::json!({
        "kind": "anomaly",
        "dataset": cfg.data.display().to_string(),
        "date": chrono::Utc::now().to_rfc3339(),
        "config": cfg,
        "pass_labels": pass,
        "backbone": {
            "weights": weights_path.display().to_string(),
            "architecture": "efficientnet-lite0 stem + stages 0-4, ImageNet, frozen",
            "features": "stages 2-4, 3x3 local average, stride 16",
        },
        "memory_bank": {
            "entries": m,
            "features": d,
            "candidates": n_cand,
            "good_images": train_set.images.len(),
            "ignored_defect_images": ignored,
            "method": match cfg.coreset {
                CoresetKind::Greedy => format!(
                    "greedy k-center coreset on a {PROJECTION_DIM}-d sparse random projection, seed {}",
                    cfg.seed
                ),
                CoresetKind::Random => format!("random sample, seed {}", cfg.seed),
            },
            "ratio": m as f64 / n_cand.max(1) as f64,
            "neighbors": cfg.neighbors,
        },
        "calibration": { "center": threshold, "scale": spread, "rule": rule },
        "timing_s": {
            "features": extract_s, "coreset": bank_s, "val": val_s,
            "total": started.elapsed().as_secs_f64(),
        },
        "features_extracted": extracted,
        "summary": &summary,
        "val_confusion": vm.confusion,
        "history": [record],
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let exported = Model::new(spec, weights)?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    exported.save(&cfg.out)?;
    Ok(summary)
}

/// Nearest bank entry of `x`: (index, squared distance); ties to the lower index.
fn nearest(x: &[f32], bank: &[f32], d: usize) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (e, b) in bank.chunks_exact(d).enumerate() {
        let v = dist2(x, b);
        if v < best.1 {
            best = (e, v);
        }
    }
    best
}

/// PatchCore's image score of one image's feature rows (`cells × d`, valid cells only): the
/// largest nearest-entry distance, reweighted by the support of that entry (the entry and its
/// `neighbors − 1` nearest other entries): `(1 − softmax(d)_0) · raw`. The rule of
/// `kernels::Layer::MemoryBank`.
pub fn image_score(rows: &[f32], bank: &[f32], d: usize, neighbors: usize) -> f64 {
    let mut best = (-1f32, 0usize, 0usize);
    for (p, x) in rows.chunks_exact(d).enumerate() {
        let (e, v) = nearest(x, bank, d);
        let s = v.max(0.0).sqrt();
        if s > best.0 {
            best = (s, p, e);
        }
    }
    let (raw, p, e) = best;
    let m = bank.len() / d;
    let k = neighbors.max(1) - 1;
    if k == 0 || m < 2 || raw < 0.0 {
        return raw.max(0.0) as f64;
    }
    let center = &bank[e * d..(e + 1) * d];
    let mut others: Vec<(f32, usize)> = (0..m)
        .filter(|&j| j != e)
        .map(|j| (dist2(center, &bank[j * d..(j + 1) * d]), j))
        .collect();
    let k = k.min(others.len());
    let by = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if k < others.len() {
        others.select_nth_unstable_by(k, by);
    }
    others.truncate(k);
    let x = &rows[p * d..(p + 1) * d];
    let mut dists = vec![raw as f64];
    dists.extend(
        others
            .iter()
            .map(|&(_, j)| (dist2(x, &bank[j * d..(j + 1) * d]) as f64).sqrt()),
    );
    let mx = dists.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = dists.iter().map(|v| (v - mx).exp()).sum();
    (1.0 - (dists[0] - mx).exp() / sum) * raw as f64
}

/// [`image_score`] of every image of `f`, on every core; `tick(done)` reports progress.
fn score_images(
    f: &Features,
    bank: &[f32],
    d: usize,
    neighbors: usize,
    cancel: &AtomicBool,
    tick: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<f64>> {
    let n = f.maps.len();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut scores = vec![0f64; n];
    std::thread::scope(|scope| {
        let chunk = n.div_ceil(threads).max(1);
        let handles: Vec<_> = scores
            .chunks_mut(chunk)
            .enumerate()
            .map(|(t, out)| {
                let done = &done;
                scope.spawn(move || {
                    for (j, o) in out.iter_mut().enumerate() {
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let (rows, _) = f.rows(t * chunk + j);
                        *o = image_score(&rows, bank, d, neighbors);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Report progress from this thread while the workers run.
        while handles.iter().any(|h| !h.is_finished()) {
            tick(done.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    if cancel.load(Ordering::Relaxed) {
        bail!("training cancelled while scoring the val images");
    }
    tick(n);
    Ok(scores)
}

/// All valid positions of every image as rows (`n × c`); beyond the candidate budget, a seeded
/// random subset of them.
fn candidates(f: &Features, seed: u64) -> anyhow::Result<Vec<f32>> {
    let total: usize = f.valid.iter().map(|(w, h)| w * h).sum();
    let limit = (CANDIDATE_BUDGET_BYTES / (f.c as u64 * 4)) as usize;
    let keep = if total > limit {
        tracing::warn!(
            "{total} good positions exceed the {} MiB candidate budget; a random {limit} of \
             them are used",
            CANDIDATE_BUDGET_BYTES >> 20
        );
        limit as f64 / total as f64
    } else {
        1.0
    };
    let mut rng = kernels::rng::SplitMix64::new(seed ^ 0x5eed);
    let mut out = Vec::with_capacity(total.min(limit) * f.c);
    for i in 0..f.maps.len() {
        let (rows, _) = f.rows(i);
        for r in rows.chunks_exact(f.c) {
            if keep >= 1.0 || (rng.uniform(0.0, 1.0) as f64) < keep {
                out.extend_from_slice(r);
            }
        }
    }
    if out.is_empty() {
        bail!("the good images gave no feature positions");
    }
    Ok(out)
}

/// A robust spread: 1.4826 × the median absolute deviation, or the standard deviation when
/// that is 0.
fn spread_of(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 1.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = s[s.len() / 2];
    let mut dev: Vec<f64> = s.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = 1.4826 * dev[dev.len() / 2];
    if mad > 0.0 {
        return mad;
    }
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coreset_covers_clusters_before_repeating_one() {
        // Four tight clusters of 50 points in 3-d: a 4-point coreset takes one from each.
        let mut rng = kernels::rng::SplitMix64::new(7);
        let centers = [
            [0.0, 0.0, 0.0],
            [10.0, 0.0, 0.0],
            [0.0, 10.0, 0.0],
            [0.0, 0.0, 10.0],
        ];
        let mut rows = Vec::new();
        for c in &centers {
            for _ in 0..50 {
                for k in 0..3 {
                    rows.push(c[k] + rng.uniform(-0.1, 0.1));
                }
            }
        }
        let cancel = AtomicBool::new(false);
        let chosen = greedy_coreset(&rows, 3, 4, 1, &cancel, &mut |_| {}).expect("coreset");
        let mut clusters: Vec<usize> = chosen.iter().map(|&i| i / 50).collect();
        clusters.sort();
        assert_eq!(clusters, vec![0, 1, 2, 3]);
        // Asking for more rows than there are keeps them all, once each.
        let all = greedy_coreset(&rows[..30], 3, 50, 1, &cancel, &mut |_| {}).expect("all");
        let mut s = all.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 10);
        cancel.store(true, Ordering::Relaxed);
        assert!(greedy_coreset(&rows, 3, 100, 1, &cancel, &mut |_| {}).is_err());
    }

    #[test]
    fn projection_keeps_distances_roughly() {
        let mut rng = kernels::rng::SplitMix64::new(3);
        let d = 232;
        let rows: Vec<f32> = (0..40 * d).map(|_| rng.uniform(0.0, 1.0)).collect();
        let p = project(&rows, d, 11);
        let k = PROJECTION_DIM;
        let mut ratios = Vec::new();
        for i in 0..20 {
            let j = 39 - i;
            let a = dist2(&rows[i * d..(i + 1) * d], &rows[j * d..(j + 1) * d]);
            let b = dist2(&p[i * k..(i + 1) * k], &p[j * k..(j + 1) * k]);
            ratios.push(b / a);
        }
        let mean = ratios.iter().sum::<f32>() / ratios.len() as f32;
        assert!(
            (0.6..1.6).contains(&mean),
            "mean distance ratio {mean}: {ratios:?}"
        );
    }

    #[test]
    fn spread_is_robust_and_never_zero_for_distinct_values() {
        assert!((spread_of(&[1.0, 2.0, 3.0, 4.0, 100.0]) - 1.4826).abs() < 1e-9);
        assert!(spread_of(&[2.0, 2.0, 2.0, 5.0]) > 0.0);
        assert_eq!(spread_of(&[]), 1.0);
    }
}
