//! Training on the pretrained backbone: features once, then a per-position head in seconds.
//!
//! The backbone (EfficientNet-Lite0, `assets/backbones/`) stays frozen, so an image's features
//! depend only on the image: the `kernels` engine extracts them once per image (the same
//! engine, preprocessing and weights that inspect at the station), and burn trains only the
//! head on the cached features:
//!
//! - local features: stage 2, 3 and 4 outputs, each averaged over 3×3 positions, at stride 16
//!   (`Layer::LocalFeatures`, 232 channels);
//! - a per-position head: 1×1 conv 232 → 128, ReLU, 1×1 conv 128 → one score per class,
//!   trained with class-weighted cross-entropy (weights ∝ 1/√frequency) where a position's class
//!   is the image's defect class inside its mask and its PASS class elsewhere; defective images
//!   without a mask train through their most defect-like position (`position_head`);
//!   `--members N` trains N such heads from different seeds and exports their average as one
//!   wider head (default 1: measured, three did not pay);
//! - `Layer::DefectMaxPool` (the image is judged by its most defect-like position), then a
//!   linear calibration over the class scores there: one shift of every FAIL score, fitted on
//!   out-of-fold scores of the training images (two heads on part-disjoint halves), so the
//!   class decision is calibrated and the PASS/FAIL ranking is the head's own;
//! - the threshold chosen on val for the miss-rate target.
//!
//! Input standardisation of the features is folded into the first head convolution at export,
//! so the exported model is plain `ModelSpec` layers that the engine runs as one network.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context as _, bail};
use burn::tensor::{Device, Tensor, TensorData};
use kernels::{Layer, LayerWeights, Model, ModelSpec, Resize, backbone};

use super::checkpoint::checkpoint_dir;
use super::features::{
    Features, backbone_path, extract_splits, feature_channels, feature_network, hash_of,
};
use super::head_checkpoint;
use super::head_select;
use super::nn::{HIDDEN, PositionHead};
use super::position_head::{
    HeadData, ROWS_PER_STEP, average_with_more, defect_max, fit_head, fit_head_from,
    standardisation, standardise,
};
use super::splits::{load_split, prepare};
use super::tensor_io::tensor_vec;
use super::types::{EpochRecord, Progress, TrainConfig, TrainSummary};
use crate::evaluation::metrics::{self, val_metrics};

/// The full model spec: backbone, local features, head, defect max pool, calibration.
pub fn head_spec(
    name: &str,
    b: &backbone::Backbone,
    hidden: u32,
    classes: Vec<String>,
    pass: Vec<String>,
) -> anyhow::Result<ModelSpec> {
    let features = feature_channels(b);
    let k = classes.len() as u32;
    let mut layers = b.layers.clone();
    layers.extend([
        Layer::conv(features, hidden, 1, 1, 0),
        Layer::Relu,
        Layer::conv(hidden, k, 1, 1, 0),
        Layer::DefectMaxPool,
        Layer::Linear {
            in_features: k,
            out_features: k,
        },
    ]);
    let spec = ModelSpec::new(name, b.input.clone(), layers, classes, pass);
    spec.validate()?;
    Ok(spec)
}

/// The image-level head's spec: backbone, local features, global pool, one linear.
pub fn image_spec(
    name: &str,
    b: &backbone::Backbone,
    pool: head_select::Pool,
    classes: Vec<String>,
    pass: Vec<String>,
) -> anyhow::Result<ModelSpec> {
    let mut layers = b.layers.clone();
    layers.extend([
        match pool {
            head_select::Pool::Avg => Layer::GlobalAvgPool,
            head_select::Pool::Max => Layer::GlobalMaxPool,
            head_select::Pool::AvgMax => bail!("no engine layer pools both average and maximum"),
        },
        Layer::Linear {
            in_features: feature_channels(b),
            out_features: classes.len() as u32,
        },
    ]);
    let spec = ModelSpec::new(name, b.input.clone(), layers, classes, pass);
    spec.validate()?;
    Ok(spec)
}

/// Class scores `[cells][k]` of every valid cell of every image, by the head.
fn cell_scores(
    head: &PositionHead,
    f: &Features,
    mean: &[f32],
    inv: &[f32],
    device: &Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(f.maps.len());
    // Images in groups, so each matrix product is large enough to be efficient.
    let idx: Vec<usize> = (0..f.maps.len()).collect();
    for group in idx.chunks(32) {
        let mut rows = Vec::new();
        let mut counts = Vec::new();
        for &i in group {
            let (r, cells) = f.rows(i);
            counts.push(cells.len());
            rows.extend(r);
        }
        standardise(&mut rows, mean, inv);
        let n = rows.len() / f.c;
        let x = Tensor::<2>::from_data(TensorData::new(rows, [n, f.c]), device);
        let s = tensor_vec(head.forward(x))?;
        let k = s.len() / n.max(1);
        let mut at = 0;
        for cnt in counts {
            out.push(s[at * k..(at + cnt) * k].to_vec());
            at += cnt;
        }
    }
    Ok(out)
}

/// The calibration that keeps the PASS/FAIL ranking: one shift `β` added to every FAIL
/// class's score (the FAIL score stays a monotone function of the uncalibrated one, so AUROC
/// and the threshold's trade-off are unchanged), chosen on out-of-fold scores to maximise
/// accuracy + macro F1 of the class decision.
fn fit_shift(z: &[Vec<f32>], labels: &[usize], is_pass: &[bool], classes: &[String]) -> f32 {
    let mut best = (f64::NEG_INFINITY, 0.0f32);
    for step in -200..=200 {
        let beta = step as f32 * 0.05;
        let pairs = z.iter().zip(labels).map(|(zi, &t)| {
            let shifted: Vec<f32> = zi
                .iter()
                .zip(is_pass)
                .map(|(v, &p)| if p { *v } else { v + beta })
                .collect();
            (t, metrics::argmax(&shifted).unwrap_or(0))
        });
        let c = metrics::Confusion::new(classes.to_vec(), pairs);
        let score = c.accuracy() + c.macro_f1();
        // Ties go to the smallest |β| (the least change).
        if score > best.0 + 1e-12 || (score >= best.0 - 1e-12 && beta.abs() < best.1.abs()) {
            best = (score, beta);
        }
    }
    best.1
}

fn calibrated_probs(z: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let k = b.len();
    let logits: Vec<f64> = (0..k)
        .map(|o| b[o] as f64 + (0..k).map(|j| (w[o * k + j] * z[j]) as f64).sum::<f64>())
        .collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Splits images into two folds by part (`group`; an image without one is its own part).
fn fold_of(paths: &[String], groups: &[Option<String>], seed: u64) -> Vec<usize> {
    paths
        .iter()
        .zip(groups)
        .map(|(p, g)| {
            let key = g.as_deref().unwrap_or(p);
            (hash_of(&[key.as_bytes(), &seed.to_le_bytes()]) % 2) as usize
        })
        .collect()
}

/// Trains a backbone preset (see the module docs). `side` and `resize` come from the preset.
pub fn train(
    cfg: &TrainConfig,
    side: u32,
    resize: Resize,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
    let prep = prepare(cfg)?;
    let classes = prep.classes.clone();
    let pass = prep.pass.clone();
    let mut skipped = Vec::new();
    let train_set = load_split(&prep.train_rows, &classes, &mut skipped);
    let val_set = load_split(&prep.val_rows, &classes, &mut skipped);
    for (i, c) in classes.iter().enumerate() {
        if !train_set.labels.contains(&i) {
            bail!("class {c:?} has no readable training images");
        }
    }
    if val_set.images.is_empty() {
        bail!("no readable validation images");
    }
    if cfg.members == 0 {
        bail!("--members must be at least 1 (the number of position heads averaged)");
    }
    let weights_path = backbone_path();
    let (b, lf) = feature_network(&weights_path, side, resize)?;
    let mut spec = head_spec(
        &cfg.preset,
        &b,
        HIDDEN * cfg.members as u32,
        classes.clone(),
        pass.clone(),
    )?;
    let plan = spec.validate()?;
    let k = classes.len();
    let is_pass = plan.is_pass.clone();
    // Resume: the head after the last finished epoch of a cancelled run.
    let ckpt = checkpoint_dir(&cfg.out);
    let resumed = if cfg.resume {
        head_checkpoint::load(&ckpt, cfg, &classes)?
    } else {
        None
    };

    // Feature extraction through the inspection engine, on a device apart from the window's.
    let gpu = super::nn::background_gpu()?;
    let mut probe_weights = b.weights.clone();
    probe_weights.resize(spec.layers.len(), None);
    let n_layers = spec.layers.len();
    for (i, l) in spec.layers.iter().enumerate().skip(b.layers.len()) {
        if let Some((w, bias)) = l.parameter_shapes() {
            probe_weights[i] = Some(LayerWeights {
                weight: vec![0.0; w.iter().product()],
                bias: vec![0.0; bias],
            });
        }
    }
    debug_assert_eq!(probe_weights.len(), n_layers);
    let probe = Model::new(spec.clone(), probe_weights)?;
    progress(Progress::Started {
        train: train_set.images.len(),
        val: val_set.images.len(),
        skipped: skipped.clone(),
        backend: format!(
            "features: kernels engine on {}; head: cpu (burn flex)",
            gpu.describe()
        ),
        first_epoch: resumed.as_ref().map_or(0, |(s, _)| s.epoch) + 1,
    });
    let total_images = train_set.images.len() + val_set.images.len();
    let t_extract = Instant::now();
    let (train_f, val_f, extracted) = extract_splits(
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
    let n_train = train_set.images.len();

    let primary_pass = (0..k)
        .filter(|&c| is_pass[c])
        .max_by_key(|&c| train_set.labels.iter().filter(|&&l| l == c).count())
        .unwrap_or(0);
    let (mean, inv) = standardisation(&train_f);
    let base = Device::flex();
    base.seed(cfg.seed);
    let data = HeadData {
        f: &train_f,
        labels: &train_set.labels,
        masks: &train_set.masks,
        input: &spec.input,
        is_pass: &is_pass,
        primary_pass,
        mean: &mean,
        inv: &inv,
    };
    let all: Vec<usize> = (0..n_train).collect();
    let identity: Vec<f32> = (0..k * k).map(|i| (i / k == i % k) as u8 as f32).collect();
    let zeros = vec![0.0; k];
    let val_probs_of = |head: &PositionHead,
                        w: &[f32],
                        b: &[f32]|
     -> anyhow::Result<(Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        let scores = cell_scores(head, &val_f, &mean, &inv, &base)?;
        let pooled: Vec<Vec<f32>> = scores
            .iter()
            .map(|s| defect_max(s, k, &is_pass).1)
            .collect();
        let probs = pooled.iter().map(|z| calibrated_probs(z, w, b)).collect();
        Ok((pooled, probs))
    };
    let t_head = Instant::now();
    let (mut history, start) = match resumed {
        Some((state, start)) => (state.history, Some(start)),
        None => (Vec::new(), None),
    };
    let first_epoch = start.as_ref().map_or(0, |s| s.epochs);
    let steps_hint = data.rows_hint(&all).div_ceil(ROWS_PER_STEP).max(1);
    let prog = std::cell::RefCell::new(&mut *progress);
    let head = fit_head_from(
        &data,
        &all,
        cfg,
        &base,
        cancel,
        start,
        &mut |epoch, step, loss| {
            (prog.borrow_mut())(Progress::Step {
                epoch,
                step,
                steps: steps_hint,
                loss,
            })
        },
        &mut |epoch, loss, acc, head| {
            let (_, probs) = val_probs_of(head, &identity, &zeros)?;
            let vm = val_metrics(&spec, &probs, &val_set.labels);
            let per_epoch =
                t_head.elapsed().as_secs_f64() / epoch.saturating_sub(first_epoch).max(1) as f64;
            let record = EpochRecord {
                epoch,
                train_loss: loss,
                train_accuracy: acc,
                val_accuracy: vm.confusion.accuracy(),
                val_macro_f1: vm.confusion.macro_f1(),
                val_auroc: vm.auroc,
                lr: cfg.lr,
                elapsed_s: started.elapsed().as_secs_f64(),
                eta_s: per_epoch * (cfg.epochs - epoch) as f64,
            };
            history.push(record.clone());
            // The last finished epoch is what a resume continues from.
            head_checkpoint::save(
                &ckpt,
                head,
                &head_checkpoint::HeadCheckpoint {
                    preset: cfg.preset.clone(),
                    data: cfg.data.clone(),
                    classes: classes.clone(),
                    epoch,
                    history: history.clone(),
                },
            )?;
            // The last epoch is reported after the calibration below, with the figures the
            // summary gives, so the two lines agree.
            if epoch < cfg.epochs {
                (prog.borrow_mut())(Progress::Epoch(record));
            }
            Ok(())
        },
    )?;
    drop(prog);
    let head = average_with_more(head, &data, &all, cfg, &base, cancel)?;

    // Calibration refit on out-of-fold pooled scores: the training images' own scores are
    // inflated by the head having seen them, so two heads, each trained on half of the parts
    // (groups kept together), score the other half.
    let folds = fold_of(&train_set.paths, &train_set.groups, cfg.seed);
    let mut pooled: Vec<Vec<f32>> = vec![Vec::new(); n_train];
    for fold in 0..2 {
        let fit_on: Vec<usize> = (0..n_train).filter(|&i| folds[i] != fold).collect();
        let held: Vec<usize> = (0..n_train).filter(|&i| folds[i] == fold).collect();
        if fit_on.is_empty() || held.is_empty() {
            continue;
        }
        let h = fit_head(
            &data,
            &fit_on,
            cfg,
            &base,
            cancel,
            &mut |_, _, _| {},
            &mut |_, _, _, _| Ok(()),
        )?;
        let h = average_with_more(h, &data, &fit_on, cfg, &base, cancel)?;
        let scores = cell_scores(&h, &train_f, &mean, &inv, &base)?;
        for &i in &held {
            pooled[i] = defect_max(&scores[i], k, &is_pass).1;
        }
    }
    // The head for this product: the position head's out-of-fold scores against image-level
    // heads cross-validated on the same part-disjoint folds (`head_select`).
    let position_oof: Vec<Option<f32>> = pooled
        .iter()
        .map(|z| (!z.is_empty()).then(|| spec.fail_score(&calibrated_probs(z, &identity, &zeros))))
        .collect();
    let train_defective: Vec<bool> = train_set.labels.iter().map(|&l| !is_pass[l]).collect();
    let (choice, image_head) = head_select::choose(
        cfg.head,
        &train_f,
        &train_set.labels,
        &train_defective,
        &folds,
        k,
        &position_oof,
        &|p| spec.fail_score(p),
    );
    tracing::info!(
        "head candidates (part-disjoint 2-fold CV on the training split):\n{}\nkept: {} ({})",
        choice.table(),
        choice.kept().head,
        choice.why
    );
    let head_s = t_head.elapsed().as_secs_f64();
    let (cal_idx, cal_z): (Vec<usize>, Vec<Vec<f32>>) = pooled
        .into_iter()
        .enumerate()
        .filter(|(_, z)| !z.is_empty())
        .unzip();
    let cal_labels: Vec<usize> = cal_idx.iter().map(|&i| train_set.labels[i]).collect();
    // One shift of every FAIL score: any calibration that re-weighs classes lowered val AUROC
    // by 0.03–0.05 (assets/models/README.md), this one sets the class decision and leaves the
    // PASS/FAIL ranking as the head makes it.
    let cal_w = identity.clone();
    let cal_b: Vec<f32> = if cal_z.is_empty() {
        zeros.clone()
    } else {
        let beta = fit_shift(&cal_z, &cal_labels, &is_pass, &spec.classes);
        tracing::info!("calibration: FAIL classes shifted by {beta:.2}");
        is_pass
            .iter()
            .map(|&p| if p { 0.0 } else { beta })
            .collect()
    };
    let (_, probs) = val_probs_of(&head, &cal_w, &cal_b)?;
    let mut vm = val_metrics(&spec, &probs, &val_set.labels);
    let c = train_f.c;

    // Export: fold the standardisation into the first head convolution.
    let hidden_w = tensor_vec(head.hidden.weight.val())?; // [c, hidden]
    let hidden_b = tensor_vec(
        head.hidden
            .bias
            .as_ref()
            .map(|b| b.val())
            .context("hidden layer without bias")?,
    )?;
    let out_w = tensor_vec(head.out.weight.val())?; // [hidden, k]
    let out_b = tensor_vec(
        head.out
            .bias
            .as_ref()
            .map(|b| b.val())
            .context("output without bias")?,
    )?;
    let hd = head.hidden_width();
    let mut w1 = vec![0f32; hd * c];
    let mut b1 = hidden_b.clone();
    for o in 0..hd {
        for j in 0..c {
            let wv = hidden_w[j * hd + o] * inv[j];
            w1[o * c + j] = wv;
            b1[o] -= wv * mean[j];
        }
    }
    let mut w2 = vec![0f32; k * hd];
    for o in 0..k {
        for j in 0..hd {
            w2[o * hd + j] = out_w[j * k + o];
        }
    }
    let mut weights = b.weights.clone(); // ends with the local features (no weights)
    weights.push(Some(LayerWeights {
        weight: w1,
        bias: b1,
    }));
    weights.push(None); // relu
    weights.push(Some(LayerWeights {
        weight: w2,
        bias: out_b,
    }));
    weights.push(None); // defect max pool
    weights.push(Some(LayerWeights {
        weight: cal_w,
        bias: cal_b,
    }));
    // The image-level head, where cross-validation kept it: the averaged features and one
    // linear layer (standardisation folded in) replace the per-position head.
    if let Some((pool, m)) = &image_head {
        let val_pooled = head_select::pooled(&val_f, *pool);
        let probs: Vec<Vec<f32>> = val_pooled.iter().map(|x| m.probs(x)).collect();
        let mut image = image_spec(&cfg.preset, &b, *pool, classes.clone(), pass.clone())?;
        image.training = std::mem::take(&mut spec.training);
        spec = image;
        vm = val_metrics(&spec, &probs, &val_set.labels);
        let (weight, bias) = m.folded();
        weights = b.weights.clone();
        weights.push(None); // global pool
        weights.push(Some(LayerWeights { weight, bias }));
    }
    if let Some(last) = history.last_mut() {
        // Earlier epochs show the position head before calibration; the last one the model
        // as exported.
        last.val_accuracy = vm.confusion.accuracy();
        last.val_macro_f1 = vm.confusion.macro_f1();
        last.val_auroc = vm.auroc;
        last.elapsed_s = started.elapsed().as_secs_f64();
        last.eta_s = 0.0;
        progress(Progress::Epoch(last.clone()));
    }
    let band = cfg.band_on(&vm);
    let threshold = band.threshold;
    let rates = metrics::review_rates(&vm.scores, &vm.defective, band.pass_threshold, threshold);
    spec.threshold = threshold;
    spec.pass_threshold = band.pass_threshold;
    let summary = TrainSummary {
        model: cfg.out.clone(),
        preset: cfg.preset.clone(),
        classes: spec.classes.clone(),
        pass_classes: spec.pass_classes.clone(),
        train_images: train_set.images.len(),
        val_images: val_set.images.len(),
        skipped: skipped.len(),
        missing: prep.missing,
        best_epoch: cfg.epochs,
        epochs_run: history.len(),
        val_accuracy: vm.confusion.accuracy(),
        val_macro_f1: vm.confusion.macro_f1(),
        val_auroc: vm.auroc,
        threshold,
        pass_threshold: band.pass_threshold,
        val_miss_rate: rates.auto_pass_miss_rate,
        val_false_reject_rate: rates.auto_fail_false_reject_rate,
        val_review_share: rates.review_share,
        train_seconds: started.elapsed().as_secs_f64(),
        backend: format!(
            "features: kernels engine on {}; head: cpu (burn flex)",
            gpu.describe()
        ),
        early_stopped: false,
        threshold_rule: band.rule.clone(),
        ignored_defects: 0,
        bank_entries: None,
        head: Some(choice.clone()),
    };
    spec.training = serde_json::json!({
        "dataset": cfg.data.display().to_string(),
        "date": chrono::Utc::now().to_rfc3339(),
        "config": cfg,
        "backbone": {
            "weights": weights_path.display().to_string(),
            "architecture": "efficientnet-lite0 stem + stages 0-4, ImageNet, frozen",
            "features": "stages 2-4, 3x3 local average, stride 16",
        },
        "timing_s": { "features": extract_s, "head": head_s, "total": started.elapsed().as_secs_f64() },
        "features_extracted": extracted,
        "features_cached": total_images - extracted,
        "summary": &summary,
        "val_confusion": vm.confusion,
        "history": history,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let exported = Model::new(spec, weights)?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    exported.save(&cfg.out)?;
    Ok(summary)
}
