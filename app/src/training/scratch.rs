//! The from-scratch trainer: a whole-image CNN (the presets without a backbone) trained by burn,
//! with class-weighted loss, the per-position mask loss of the max-score presets
//! ([`super::mask_supervision`]), seeded augmentation, SGD / momentum / Adam(W), a cosine
//! learning-rate schedule with warm-up, early stopping on val, the best epoch kept, checkpoints
//! to resume from, cancel, and a calibration refit; [`predict`] gives a burn model's
//! probabilities (also for the benchmark and the tests). The presets and their `ModelSpec`s are
//! in [`super::presets`], the export with batch-norm folded in [`super::export`], the threshold
//! chosen on val by [`crate::evaluation::metrics`].
//!
//! The loop is written by hand (no burn-train) so the CLI and the app's Train tab can drive it
//! through one [`Progress`] callback and one cancel flag; [`super::train`] is the one entry point.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use kernels::{InputSpec, Model, ModelSpec};
use serde::{Deserialize, Serialize};

use super::augment;
use super::checkpoint::checkpoint_dir;
use super::export::{export_weights, load_best, load_tensors, model_tensors};
use super::mask_supervision::{Cell, MaskSupervision, take_patch};
use super::nn::BurnModel;
use super::presets::{PRESETS, preset_spec};
use super::splits::{Prepared, load_split, prepare};
use super::tensor_io::{save_tensors, tensor_vec};
use super::types::{
    BackendKind, Cancelled, EpochRecord, OptimizerKind, Progress, TrainConfig, TrainSummary,
};
use crate::data::dataset::DecodedImage;
use crate::evaluation::metrics::{self, val_metrics};

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    spec: ModelSpec,
    epoch: usize,
    best_score: f64,
    best_epoch: usize,
    history: Vec<EpochRecord>,
}

/// Resolves `BackendKind::Auto` and returns the burn device (without autodiff) and a label.
pub fn device_for(kind: BackendKind) -> anyhow::Result<(Device, String)> {
    match kind {
        BackendKind::Cpu => Ok((Device::flex(), "cpu (burn flex)".into())),
        BackendKind::Wgpu => {
            let (d, gpu) = super::nn::shared_gpu()?;
            Ok((d, format!("wgpu: {}", gpu.describe())))
        }
        BackendKind::Auto => {
            let (d, gpu) = super::nn::shared_gpu()?;
            if gpu.adapter.get_info().device_type == wgpu::DeviceType::Cpu {
                // Measured: flex trains faster than burn-wgpu on lavapipe (see README).
                Ok((
                    Device::flex(),
                    format!(
                        "cpu (burn flex; the only GPU adapter, {}, is a CPU rasteriser)",
                        gpu.describe()
                    ),
                ))
            } else {
                Ok((d, format!("wgpu: {}", gpu.describe())))
            }
        }
    }
}

/// Per-channel mean/std of the training images (0..1 pixel units), sampled.
fn input_stats(images: &[DecodedImage], channels: u32) -> (Vec<f32>, Vec<f32>) {
    let c = channels as usize;
    let (mut sum, mut sq, mut n) = (vec![0f64; c], vec![0f64; c], 0f64);
    for img in images {
        let bpp = img.format.bytes_per_pixel() as usize;
        for px in img.data.chunks_exact(bpp).step_by(7) {
            let rgb = if bpp == 1 {
                [px[0]; 3]
            } else {
                [px[0], px[1], px[2]]
            };
            let vals: Vec<f64> = if c == 1 {
                vec![
                    (0.299 * rgb[0] as f64 + 0.587 * rgb[1] as f64 + 0.114 * rgb[2] as f64) / 255.0,
                ]
            } else {
                rgb.iter().map(|&v| v as f64 / 255.0).collect()
            };
            for (i, v) in vals.into_iter().enumerate() {
                sum[i] += v;
                sq[i] += v * v;
            }
            n += 1.0;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n.max(1.0)) as f32).collect();
    let std: Vec<f32> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / n.max(1.0) - (*m as f64).powi(2)).max(1e-6).sqrt() as f32).max(0.02))
        .collect();
    (mean, std)
}

fn lr_at(cfg: &TrainConfig, epoch0: usize, step: usize, steps: usize) -> f64 {
    // Linear warm-up over the first epoch, then cosine decay to 2 % of the peak.
    let t = epoch0 as f64 + step as f64 / steps.max(1) as f64;
    if t < 1.0 {
        return cfg.lr * (0.1 + 0.9 * t);
    }
    let total = (cfg.epochs as f64 - 1.0).max(1.0);
    let p = ((t - 1.0) / total).clamp(0.0, 1.0);
    cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
}

/// Probabilities `[n × classes]` of `model` on preprocessed tensors, in batches, without autodiff.
pub fn predict(
    model: &BurnModel,
    device: &Device,
    tensors: &[Vec<f32>],
    input: &InputSpec,
    batch: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (c, h, w) = (
        input.channels as usize,
        input.height as usize,
        input.width as usize,
    );
    let mut out = Vec::with_capacity(tensors.len());
    for chunk in tensors.chunks(batch.max(1)) {
        let flat: Vec<f32> = chunk.concat();
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), device);
        let probs = activation::softmax(model.forward(x), 1);
        let v = probs
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading probabilities: {e:?}"))?;
        let k = v.len() / chunk.len();
        out.extend(v.chunks(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// The global-pool outputs (for a max-score head: each class's highest position score) of
/// whole `images`, preprocessed as inference does, through `model` in inference mode.
fn pooled_scores<'a>(
    model: &BurnModel,
    device: &Device,
    images: impl Iterator<Item = &'a DecodedImage>,
    input: &InputSpec,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (c, h, w) = (
        input.channels as usize,
        input.height as usize,
        input.width as usize,
    );
    let images: Vec<&DecodedImage> = images.collect();
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(16) {
        let mut flat = Vec::with_capacity(chunk.len() * c * h * w);
        for img in chunk {
            let t = kernels::reference::preprocess_input(input, &img.frame())
                .map_err(anyhow::Error::msg)?;
            flat.extend(t.into_iter().map(|x| x as f32));
        }
        let x = Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), c, h, w]), device);
        let (_, map) = model.forward_with_map(x);
        let map = map.context("the model has no global pool")?;
        let [n, k, mh, mw] = map.dims();
        let v = tensor_vec(map.reshape([n, k, mh * mw]).max_dim(2).reshape([n, k]))?;
        out.extend(v.chunks(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Trains a from-scratch preset (`cfg.preset` without a backbone) on `cfg.data` and writes
/// the model; [`super::train`] sends backbone presets and anomaly mode elsewhere.
pub fn train(
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
    let Prepared {
        classes,
        pass,
        train_rows,
        val_rows,
        missing,
    } = prepare(cfg)?;
    let mut skipped = Vec::new();
    let train_set = load_split(&train_rows, &classes, &mut skipped);
    let val_set = load_split(&val_rows, &classes, &mut skipped);
    for (i, c) in classes.iter().enumerate() {
        if !train_set.labels.contains(&i) {
            bail!("class {c:?} has no readable training images");
        }
    }
    if val_set.images.is_empty() {
        bail!("no readable validation images");
    }
    let channels = if train_set
        .images
        .iter()
        .all(|i| i.format == kernels::PixelFormat::Gray8)
    {
        1
    } else {
        3
    };
    let (mean, std) = input_stats(&train_set.images, channels);
    let input = InputSpec {
        channels,
        height: 1,
        width: 1,
        mean,
        std,
        resize: Default::default(),
    };
    let mut spec = preset_spec(&cfg.preset, input, classes.clone(), pass.clone())?;

    let (base_device, backend_label) = device_for(cfg.backend)?;
    base_device.seed(cfg.seed);
    let device = base_device.clone().autodiff();
    let mut model = BurnModel::init_seeded(&spec, true, &device, cfg.seed)?;
    let preset_patch = PRESETS
        .iter()
        .find(|p| p.name == cfg.preset)
        .map_or(0, |p| p.patch);
    let (supervision, patch) = match MaskSupervision::of(&spec, preset_patch)? {
        Some(ms) => {
            let with_mask = (0..train_set.images.len())
                .filter(|&i| !ms.is_pass[train_set.labels[i]])
                .map(|i| train_set.masks[i].is_some() as usize);
            let (n_masks, n_defective) = with_mask.fold((0, 0), |(m, n), x| (m + x, n + 1));
            tracing::info!(
                "mask supervision: {n_masks} of {n_defective} defective training images have a mask"
            );
            // Patches need to know where the defect is: defective images without a mask are
            // left out of patch training when they are few (an empty or missing mask is usually
            // a labelling slip); when many lack one, train on whole images instead.
            let patch = if n_masks * 10 >= n_defective * 9 {
                preset_patch
            } else {
                if preset_patch > 0 {
                    tracing::warn!(
                        "{} of {n_defective} defective training images have no mask: training on \
                         whole images, not {preset_patch}-px patches",
                        n_defective - n_masks
                    );
                }
                0
            };
            let ms = MaskSupervision::of(&spec, patch)?;
            (ms, patch as usize)
        }
        None => (None, 0),
    };
    if let Some(ms) = &supervision {
        model = ms.init_calibration(model, &device);
    }
    // The pass class a clean patch of a defective image counts as: the commonest one.
    let primary_pass = (0..classes.len())
        .filter(|&k| pass.contains(&classes[k]))
        .max_by_key(|&k| train_set.labels.iter().filter(|&&l| l == k).count())
        .unwrap_or(0);

    // Resume.
    let ckpt = checkpoint_dir(&cfg.out);
    let mut first_epoch = 0;
    let mut best_score = f64::NEG_INFINITY;
    let mut best_epoch = 0;
    let mut history: Vec<EpochRecord> = Vec::new();
    if cfg.resume && ckpt.join("state.json").exists() {
        let state: CheckpointState = serde_json::from_slice(&std::fs::read(
            ckpt.join("state.json"),
        )?)
        .with_context(|| {
            format!(
                "checkpoint {} is damaged; delete it to start over",
                ckpt.display()
            )
        })?;
        if state.spec.classes != spec.classes || state.spec.layers != spec.layers {
            bail!(
                "checkpoint {} is for another dataset or preset; delete it or train without --resume",
                ckpt.display()
            );
        }
        spec = state.spec;
        model = load_tensors(model, &ckpt.join("last.safetensors"), &device)?;
        first_epoch = state.epoch;
        best_score = state.best_score;
        best_epoch = state.best_epoch;
        history = state.history;
    } else {
        std::fs::create_dir_all(&ckpt)
            .with_context(|| format!("creating checkpoint folder {}", ckpt.display()))?;
    }

    // Class weights: inverse square-root frequency, normalised to mean 1.
    let counts: Vec<f64> = (0..classes.len())
        .map(|c| train_set.labels.iter().filter(|&&l| l == c).count() as f64)
        .collect();
    let raw: Vec<f64> = counts.iter().map(|&n| 1.0 / n.max(1.0).sqrt()).collect();
    let norm = raw.iter().sum::<f64>() / raw.len() as f64;
    let weights: Vec<f32> = raw.iter().map(|w| (w / norm) as f32).collect();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(Some(weights.clone()))
        .init(&device);

    let wd = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    let mut optim = match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Momentum => SgdConfig::new()
            .with_weight_decay(wd)
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(0.9)
                    .with_dampening(0.0)
                    .with_nesterov(true),
            ))
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(wd).init(),
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init(),
    };

    let val_tensors: Vec<Vec<f32>> = val_set
        .images
        .iter()
        .map(|img| {
            kernels::reference::preprocess_input(&spec.input, &img.frame())
                .map(|v| v.into_iter().map(|x| x as f32).collect())
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    progress(Progress::Started {
        train: train_set.images.len(),
        val: val_set.images.len(),
        skipped: skipped.clone(),
        backend: backend_label.clone(),
        first_epoch: first_epoch + 1,
    });

    let (c, h, w) = (
        spec.input.channels as usize,
        spec.input.height as usize,
        spec.input.width as usize,
    );
    // The training images used: in patch mode, defective ones without a mask sit out.
    let used: Vec<usize> = (0..train_set.images.len())
        .filter(|&i| match &supervision {
            Some(ms) if patch > 0 => {
                ms.is_pass[train_set.labels[i]] || train_set.masks[i].is_some()
            }
            _ => true,
        })
        .collect();
    for i in (0..train_set.images.len()).filter(|i| !used.contains(i)) {
        tracing::warn!(
            "{} is defective but has no usable mask: left out of patch training",
            train_set.paths[i]
        );
    }
    let n = used.len();
    let bs = cfg.batch_size.clamp(1, n);
    let steps = n.div_ceil(bs);
    let mut early_stopped = false;
    let loop_start = Instant::now();
    for epoch in first_epoch..cfg.epochs {
        // Seeded shuffle.
        let mut order: Vec<usize> = used.clone();
        let mut rng = augment::sample_rng(cfg.seed, epoch, usize::MAX);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        for (step, idx) in order.chunks(bs).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled(ckpt).into());
            }
            let (th, tw) = if patch > 0 { (patch, patch) } else { (h, w) };
            let mut xs = Vec::with_capacity(idx.len() * c * th * tw);
            let mut cells = Vec::new();
            let mut ys: Vec<i64> = Vec::with_capacity(idx.len());
            for &i in idx {
                let mut r = augment::sample_rng(cfg.seed, epoch, i);
                let mut label = train_set.labels[i];
                let mask = match &supervision {
                    Some(ms) if !ms.is_pass[label] => train_set.masks[i].as_ref(),
                    _ => None,
                };
                let (x, m) = augment::augmented_with_mask(
                    &spec.input,
                    &train_set.images[i].frame(),
                    mask.map(|m| m.frame()).as_ref(),
                    &cfg.augment,
                    &mut r,
                    train_set.defect_boxes[i],
                )
                .map_err(anyhow::Error::msg)?;
                let (x, m) = if patch > 0 {
                    take_patch(x, m, c, h, w, patch, &mut r)
                } else {
                    (x, m)
                };
                xs.extend(x);
                if let Some(ms) = &supervision {
                    let cl = ms.cell_labels(label, m.as_deref(), th, tw);
                    if patch > 0
                        && !ms.is_pass[label]
                        && !cl.iter().any(|c| matches!(c, Cell::Defect(_)))
                    {
                        // A patch of a defective image that misses the defect is clean surface.
                        label = primary_pass;
                    }
                    cells.push(cl);
                }
                ys.push(label as i64);
            }
            let x = Tensor::<4>::from_data(TensorData::new(xs, [idx.len(), c, th, tw]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys.clone(), [idx.len()]), &device);
            let (logits, map) = model.forward_with_map(x);
            let pred = tensor_vec(logits.clone().detach())?;
            let k = pred.len() / idx.len();
            for (row, &t) in pred.chunks(k).zip(&ys) {
                let p = metrics::argmax(row).unwrap_or(0);
                correct += (p as i64 == t) as usize;
            }
            let mut loss = loss_fn.forward(logits, y);
            if let (Some(ms), Some(map)) = (&supervision, map) {
                loss = loss + ms.loss(map, &cells, &weights, &device);
            }
            let loss_value = tensor_vec(loss.clone())?
                .first()
                .copied()
                .unwrap_or(f32::NAN) as f64;
            if !loss_value.is_finite() {
                bail!(
                    "training diverged (loss {loss_value}) at epoch {}; lower --lr",
                    epoch + 1
                );
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr_at(cfg, epoch, step, steps), model, grads);
            loss_sum += loss_value;
            progress(Progress::Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: loss_value,
            });
        }

        let valid = model.valid();
        let probs = predict(&valid, &base_device, &val_tensors, &spec.input, 32)?;
        let vm = val_metrics(&spec, &probs, &val_set.labels);
        let acc = vm.confusion.accuracy();
        let mf1 = vm.confusion.macro_f1();
        // Selection score: accuracy plus PASS/FAIL AUROC, the two quality targets. Accuracy
        // alone picks the early epochs that call everything PASS (the majority class).
        // In patch training the linear calibration has only seen patches; whole images have
        // more positions (so higher maxima) until it is refitted at export: select on AUROC.
        let score = if patch > 0 {
            vm.auroc.unwrap_or(0.0) + 1e-3 * acc
        } else {
            acc + vm.auroc.unwrap_or(0.0)
        };
        let done = epoch + 1 - first_epoch;
        let per_epoch = loop_start.elapsed().as_secs_f64() / done as f64;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / steps as f64,
            train_accuracy: correct as f64 / n as f64,
            val_accuracy: acc,
            val_macro_f1: mf1,
            val_auroc: vm.auroc,
            lr: lr_at(cfg, epoch + 1, 0, steps),
            elapsed_s: started.elapsed().as_secs_f64(),
            eta_s: per_epoch * (cfg.epochs - epoch - 1) as f64,
        };
        history.push(record.clone());
        progress(Progress::Epoch(record));
        // From the inference copy: its batch-norm statistics include the last update.
        let tensors = model_tensors(&valid)?;
        if score > best_score {
            best_score = score;
            best_epoch = epoch + 1;
            save_tensors(&ckpt.join("best.safetensors"), &tensors)?;
        }
        save_tensors(&ckpt.join("last.safetensors"), &tensors)?;
        let state = CheckpointState {
            config: cfg.clone(),
            spec: spec.clone(),
            epoch: epoch + 1,
            best_score,
            best_epoch,
            history: history.clone(),
        };
        let tmp = ckpt.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        std::fs::rename(&tmp, ckpt.join("state.json"))?;
        if cfg.patience > 0 && epoch + 1 >= best_epoch + cfg.patience {
            early_stopped = true;
            break;
        }
    }

    // Export the best epoch.
    let mut best = load_best(&spec, &cfg.out, &base_device)?;
    if patch > 0
        && let Some(ms) = &supervision
    {
        // Refit the linear calibration on whole training images (no augmentation): it was
        // trained on patches, and the image decision is made on whole images.
        let inputs = used.iter().map(|&i| &train_set.images[i]);
        let feats = pooled_scores(&best, &base_device, inputs, &spec.input)?;
        let labels: Vec<usize> = used.iter().map(|&i| train_set.labels[i]).collect();
        best = ms.refit_calibration(best, &feats, &labels, &weights, &base_device)?;
        save_tensors(&ckpt.join("best.safetensors"), &model_tensors(&best)?)?;
    }
    let probs = predict(&best, &base_device, &val_tensors, &spec.input, 32)?;
    let vm = val_metrics(&spec, &probs, &val_set.labels);
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
        missing,
        best_epoch,
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
        backend: backend_label,
        early_stopped,
        threshold_rule: band.rule.clone(),
        ignored_defects: 0,
        bank_entries: None,
        head: None,
    };
    spec.training = serde_json::json!({
        "dataset": cfg.data.display().to_string(),
        "date": chrono::Utc::now().to_rfc3339(),
        "config": cfg,
        "summary": &summary,
        "val_confusion": vm.confusion,
        "history": history,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let weights = export_weights(&best, &spec)?;
    let exported = Model::new(spec, weights)?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    exported.save(&cfg.out)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::nn::Block;

    /// One optimisation step must move every trainable tensor (conv weights and biases,
    /// batch-norm scale and shift, classifier), or part of the network never learns.
    #[test]
    fn one_step_moves_every_parameter() {
        let input = InputSpec {
            channels: 1,
            height: 16,
            width: 16,
            mean: vec![0.5],
            std: vec![0.25],
            resize: Default::default(),
        };
        let spec = preset_spec(
            "tiny",
            input,
            vec!["bad".into(), "good".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let spec = ModelSpec {
            input: InputSpec {
                height: 16,
                width: 16,
                ..spec.input.clone()
            },
            ..spec
        };
        let device = Device::flex().autodiff();
        let model = BurnModel::init_seeded(&spec, true, &device, 7).expect("init");
        let before = model_tensors(&model.valid()).expect("before");
        let xs: Vec<f32> = (0..4 * 16 * 16)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(xs, [4, 1, 16, 16]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 0, 1], [4]), &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim = SgdConfig::new().init();
        let model = optim.step(0.1, model, grads);
        let after = model_tensors(&model.valid()).expect("after");
        for ((name, _, a), (_, _, b)) in before.iter().zip(&after) {
            // Running statistics are not trained; a conv bias before batch-norm has no gradient.
            if name.ends_with(".bn.mean")
                || name.ends_with(".bn.var")
                || name.ends_with(".conv.bias")
            {
                continue;
            }
            let moved = a.iter().zip(b).any(|(p, q)| (p - q).abs() > 1e-9);
            assert!(moved, "{name} did not change in a training step");
        }
    }

    /// Backpropagated gradients of the conv weights match finite differences of the loss.
    #[test]
    fn conv_gradients_match_finite_differences() {
        let spec = preset_spec(
            "tiny",
            InputSpec {
                channels: 1,
                height: 1,
                width: 1,
                mean: vec![0.5],
                std: vec![0.25],
                resize: Default::default(),
            },
            vec!["bad".into(), "good".into(), "other".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..4 * 32 * 32)
            .map(|i| (((i * 37 + i / 7 * 11) % 101) as f32 / 50.0) - 1.0)
            .collect();
        for bn in [false, true] {
            let model = BurnModel::init_seeded(&spec, bn, &device, 3).expect("init");
            let loss_of = |m: &BurnModel| {
                let x =
                    Tensor::<4>::from_data(TensorData::new(xs.clone(), [4, 1, 32, 32]), &device);
                let y =
                    Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
                CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(m.forward(x), y)
            };
            let loss = loss_of(&model);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let dir = tempfile::tempdir().expect("tmp");
            let file = dir.path().join("t.safetensors");
            for (bi, block) in model.blocks.iter().enumerate() {
                let Block::Conv(cb) = block else { continue };
                let g = tensor_vec(grads.get::<4>(cb.conv.weight.id).expect("grad")).expect("g");
                let base = model_tensors(&model).expect("tensors");
                let name = format!("{bi}.conv.weight");
                let k = base.iter().position(|t| t.0 == name).expect("named");
                // The elements with the largest gradients.
                let mut order: Vec<usize> = (0..g.len()).collect();
                order.sort_by(|a, b| g[*b].abs().total_cmp(&g[*a].abs()));
                for &e in order.iter().take(3) {
                    let eps = 1e-2f32;
                    let mut f = [0f64; 2];
                    for (side, sign) in [(0, 1.0f32), (1, -1.0f32)] {
                        let mut t = base.clone();
                        t[k].2[e] += sign * eps;
                        save_tensors(&file, &t).expect("save");
                        let m = load_tensors(
                            BurnModel::init(&spec, bn, &device).expect("m"),
                            &file,
                            &device,
                        )
                        .expect("load");
                        f[side] = tensor_vec(loss_of(&m)).expect("l")[0] as f64;
                    }
                    let numeric = (f[0] - f[1]) / (2.0 * eps as f64);
                    let analytic = g[e] as f64;
                    eprintln!("bn {bn} {name}[{e}]: analytic {analytic:.5} numeric {numeric:.5}");
                    assert!(
                        (numeric - analytic).abs() <= 0.05 * analytic.abs() + 5e-4,
                        "bn {bn} {name}[{e}]: analytic {analytic} vs numeric {numeric}"
                    );
                }
            }
        }
    }

    /// After many training steps on one batch, the inference copy (running statistics) gives the
    /// same outputs as training mode (batch statistics) on that batch.
    #[test]
    fn running_statistics_match_batch_statistics() {
        let spec = preset_spec(
            "tiny",
            InputSpec {
                channels: 1,
                height: 1,
                width: 1,
                mean: vec![0.5],
                std: vec![0.25],
                resize: Default::default(),
            },
            vec!["bad".into(), "good".into()],
            vec!["good".into()],
        )
        .expect("spec");
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..8 * 32 * 32)
            .map(|i| (((i * 37 + i / 7 * 11) % 101) as f32 / 25.0) + 1.0)
            .collect();
        let mut model = BurnModel::init_seeded(&spec, true, &device, 3).expect("init");
        let mut optim = SgdConfig::new().init();
        let x = || Tensor::<4>::from_data(TensorData::new(xs.clone(), [8, 1, 32, 32]), &device);
        let y = || {
            Tensor::<1, Int>::from_data(
                TensorData::new(vec![0i64, 1, 0, 1, 0, 1, 0, 1], [8]),
                &device,
            )
        };
        for _ in 0..100 {
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(model.forward(x()), y());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-6, model, grads);
        }
        let train_out = tensor_vec(model.forward(x())).expect("train");
        let plain = Device::flex();
        let valid = model.valid();
        let xv = Tensor::<4>::from_data(TensorData::new(xs.clone(), [8, 1, 32, 32]), &plain);
        let valid_out = tensor_vec(valid.forward(xv)).expect("valid");
        let tensors = model_tensors(&valid).expect("t");
        for t in &tensors {
            if t.0.contains(".bn.") {
                eprintln!("{} {:?}", t.0, &t.2[..4.min(t.2.len())]);
            }
        }
        eprintln!("train {:?}\nvalid {:?}", &train_out[..4], &valid_out[..4]);
        for (a, b) in train_out.iter().zip(&valid_out) {
            assert!(
                (a - b).abs() < 1e-2 * (1.0 + a.abs()),
                "train {a} vs inference {b}"
            );
        }
    }
}
