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
//!   without a mask train through their most defect-like position;
//! - `Layer::DefectMaxPool` (the image is judged by its most defect-like position), then a
//!   linear calibration over the class scores there, refitted on the training images;
//! - the threshold chosen on val for the miss-rate target.
//!
//! Input standardisation of the features is folded into the first head convolution at export,
//! so the exported model is plain `ModelSpec` layers that the engine runs as one network.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use kernels::backbone::{self, Extent};
use kernels::{InputSpec, Layer, LayerWeights, Model, ModelSpec, Resize};

use crate::dataset::DecodedImage;
use crate::metrics;
use crate::train::{
    EpochRecord, Progress, TrainConfig, TrainSummary, load_split, prepare, val_metrics,
};

/// Where the backbone weights ship, relative to the install.
pub const BACKBONE_ASSET: &str = "assets/backbones/efficientnet-lite0-s16.safetensors";
/// Hidden width of the per-position head.
pub const HIDDEN: u32 = 128;
/// Stages whose outputs make the local features.
const FEATURE_STAGES: [usize; 3] = [2, 3, 4];
/// Images per engine call during extraction.
const EXTRACT_BATCH: usize = 8;
/// Position rows per optimisation step.
const ROWS_PER_STEP: usize = 2048;

/// The backbone weights file: `DEFECT_INSPECTOR_BACKBONE` if set, else the bundled asset.
pub fn backbone_path() -> PathBuf {
    std::env::var_os("DEFECT_INSPECTOR_BACKBONE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::headless::bundled(BACKBONE_ASSET))
}

/// The backbone layers for an input, with the local-feature layer appended: `(backbone,
/// index of the LocalFeatures layer)`.
pub fn feature_network(
    weights: &Path,
    side: u32,
    resize: Resize,
) -> anyhow::Result<(backbone::Backbone, usize)> {
    let mut b = backbone::load(weights, side, side, Extent::Stages(4))
        .with_context(|| format!("loading the pretrained backbone {}", weights.display()))?;
    b.input.resize = resize;
    b.layers.push(Layer::LocalFeatures {
        from: FEATURE_STAGES.iter().map(|&s| b.stage_ends[s]).collect(),
        kernel: 3,
    });
    b.weights.push(None);
    let lf = b.layers.len() - 1;
    Ok((b, lf))
}

/// The full model spec: backbone, local features, head, defect max pool, calibration.
pub fn head_spec(
    name: &str,
    b: &backbone::Backbone,
    classes: Vec<String>,
    pass: Vec<String>,
) -> anyhow::Result<ModelSpec> {
    let features: u32 = FEATURE_STAGES.iter().map(|&s| b.stage_channels[s]).sum();
    let k = classes.len() as u32;
    let mut layers = b.layers.clone();
    layers.extend([
        Layer::conv(features, HIDDEN, 1, 1, 0),
        Layer::Relu,
        Layer::conv(HIDDEN, k, 1, 1, 0),
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

/// The per-position head as burn trains it: rows of standardised features → class scores.
#[derive(Module, Debug)]
pub struct PositionHead {
    /// 232 → 128.
    pub hidden: Linear,
    /// 128 → classes.
    pub out: Linear,
}

impl PositionHead {
    /// Class scores `[rows, classes]` of feature rows `[rows, features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(activation::relu(self.hidden.forward(x)))
    }
}

/// Cached features of one split: per image `[c, h, w]` and its valid cells.
struct Features {
    /// `[n][c·h·w]`, channel-major per image.
    maps: Vec<Vec<f32>>,
    /// Valid (not letterbox) cells per image: `(cols, rows)`.
    valid: Vec<(usize, usize)>,
    c: usize,
    h: usize,
    w: usize,
}

impl Features {
    /// Rows `[cells, c]` of image `i`'s valid cells, row-major over (y, x), and the cell indices.
    fn rows(&self, i: usize) -> (Vec<f32>, Vec<usize>) {
        let (vw, vh) = self.valid[i];
        let hw = self.h * self.w;
        let mut rows = Vec::with_capacity(vw * vh * self.c);
        let mut cells = Vec::with_capacity(vw * vh);
        for y in 0..vh {
            for x in 0..vw {
                let p = y * self.w + x;
                cells.push(p);
                rows.extend((0..self.c).map(|ch| self.maps[i][ch * hw + p]));
            }
        }
        (rows, cells)
    }
}

fn extract(
    engine: &mut kernels::Engine,
    layer: usize,
    spec: &ModelSpec,
    images: &[DecodedImage],
    cancel: &AtomicBool,
    mut tick: impl FnMut(usize),
) -> anyhow::Result<Features> {
    let plan = spec.validate()?;
    let s = plan.shapes[layer + 1];
    let (c, h, w) = (s.c as usize, s.h as usize, s.w as usize);
    let mut maps = Vec::with_capacity(images.len());
    let mut valid = Vec::with_capacity(images.len());
    for chunk in images.chunks(EXTRACT_BATCH) {
        if cancel.load(Ordering::Relaxed) {
            bail!("training cancelled during feature extraction");
        }
        let frames: Vec<_> = chunk.iter().map(|i| i.frame()).collect();
        let (_, feats) = engine.infer_with_layer(&frames, layer)?;
        maps.extend(feats);
        for img in chunk {
            let (cw, ch) = spec.input.content_size(img.width, img.height);
            valid.push((
                kernels::valid_cells(cw, s.w, spec.input.width) as usize,
                kernels::valid_cells(ch, s.h, spec.input.height) as usize,
            ));
        }
        tick(maps.len());
    }
    Ok(Features {
        maps,
        valid,
        c,
        h,
        w,
    })
}

/// Which valid cells of an image hold defect pixels of its mask (row-major over valid cells).
fn defect_cells(
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
fn standardisation(f: &Features) -> (Vec<f32>, Vec<f32>) {
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

fn standardise(rows: &mut [f32], mean: &[f32], inv: &[f32]) {
    let c = mean.len();
    for r in rows.chunks_exact_mut(c) {
        for ((v, m), s) in r.iter_mut().zip(mean).zip(inv) {
            *v = (*v - m) * s;
        }
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> anyhow::Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor: {e:?}"))
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
        let s = to_vec(head.forward(x))?;
        let k = s.len() / n.max(1);
        let mut at = 0;
        for cnt in counts {
            out.push(s[at * k..(at + cnt) * k].to_vec());
            at += cnt;
        }
    }
    Ok(out)
}

/// The defect max pool on one image's cell scores: (best cell, its scores).
fn defect_max(scores: &[f32], k: usize, is_pass: &[bool]) -> (usize, Vec<f32>) {
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

/// Multinomial logistic regression `z → W z + b` on pooled class scores (image level), from
/// the identity, with L2 pull towards it: the calibration refit.
fn fit_calibration(
    z: &[Vec<f32>],
    labels: &[usize],
    class_weights: &[f32],
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut w: Vec<f64> = (0..k * k).map(|i| (i / k == i % k) as u8 as f64).collect();
    let mut b = vec![0f64; k];
    let (lr, l2) = (0.05, 1e-3);
    let total: f64 = labels
        .iter()
        .map(|&t| class_weights[t] as f64)
        .sum::<f64>()
        .max(1e-9);
    for _ in 0..600 {
        let mut gw = vec![0f64; k * k];
        let mut gb = vec![0f64; k];
        for (zi, &t) in z.iter().zip(labels) {
            let logits: Vec<f64> = (0..k)
                .map(|o| b[o] + (0..k).map(|j| w[o * k + j] * zi[j] as f64).sum::<f64>())
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let cw = class_weights[t] as f64 / total;
            for o in 0..k {
                let g = (e[o] / s - (o == t) as u8 as f64) * cw;
                gb[o] += g;
                for j in 0..k {
                    gw[o * k + j] += g * zi[j] as f64;
                }
            }
        }
        for i in 0..k * k {
            let id = (i / k == i % k) as u8 as f64;
            w[i] -= lr * (gw[i] + l2 * (w[i] - id));
        }
        for o in 0..k {
            b[o] -= lr * gb[o];
        }
    }
    (
        w.into_iter().map(|v| v as f32).collect(),
        b.into_iter().map(|v| v as f32).collect(),
    )
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
    let weights_path = backbone_path();
    let (b, lf) = feature_network(&weights_path, side, resize)?;
    let mut spec = head_spec(&cfg.preset, &b, classes.clone(), pass.clone())?;
    let plan = spec.validate()?;
    let k = classes.len();
    let is_pass = plan.is_pass.clone();

    // Feature extraction through the inspection engine.
    let (_, gpu) = crate::nn::shared_gpu()?;
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
    let mut engine = kernels::Engine::new(
        &gpu.device,
        &gpu.queue,
        &probe,
        EXTRACT_BATCH as u32,
        gpu.describe(),
    )?;
    progress(Progress::Started {
        train: train_set.images.len(),
        val: val_set.images.len(),
        skipped: skipped.clone(),
        backend: format!(
            "features: kernels engine on {}; head: cpu (burn flex)",
            gpu.describe()
        ),
        first_epoch: 1,
    });
    let total_images = train_set.images.len() + val_set.images.len();
    let t_extract = Instant::now();
    let mut report = |done: usize| {
        progress(Progress::Step {
            epoch: 0,
            step: done,
            steps: total_images,
            loss: f64::NAN,
        })
    };
    let train_f = extract(
        &mut engine,
        lf,
        &spec,
        &train_set.images,
        cancel,
        &mut report,
    )?;
    let n_train = train_set.images.len();
    let val_f = extract(&mut engine, lf, &spec, &val_set.images, cancel, |d| {
        report(n_train + d)
    })?;
    drop(engine);
    let extract_s = t_extract.elapsed().as_secs_f64();
    tracing::info!("features of {total_images} images in {extract_s:.1} s");

    // Position labels.
    let primary_pass = (0..k)
        .filter(|&c| is_pass[c])
        .max_by_key(|&c| train_set.labels.iter().filter(|&&l| l == c).count())
        .unwrap_or(0);
    let (mean, inv) = standardisation(&train_f);
    let mut rows: Vec<f32> = Vec::new();
    let mut row_labels: Vec<i64> = Vec::new();
    let mut maskless: Vec<usize> = Vec::new();
    for i in 0..n_train {
        let label = train_set.labels[i];
        let (r, cells) = train_f.rows(i);
        if is_pass[label] {
            rows.extend(r);
            row_labels.extend(std::iter::repeat_n(label as i64, cells.len()));
            continue;
        }
        match &train_set.masks[i] {
            Some(mask) => {
                let hits =
                    defect_cells(&spec.input, mask, (train_f.w, train_f.h), train_f.valid[i]);
                rows.extend(r);
                row_labels.extend(
                    hits.iter()
                        .map(|&h| if h { label as i64 } else { primary_pass as i64 }),
                );
            }
            None => maskless.push(i),
        }
    }
    standardise(&mut rows, &mean, &inv);
    let c = train_f.c;
    tracing::info!(
        "{} labelled positions; {} defective images without a mask train through their max",
        row_labels.len(),
        maskless.len()
    );
    // Class weights ∝ 1/√(position frequency), mean 1 over the positions.
    let mut counts = vec![0f64; k];
    for &l in &row_labels {
        counts[l as usize] += 1.0;
    }
    for &i in &maskless {
        counts[train_set.labels[i]] += 1.0;
    }
    let raw: Vec<f64> = counts.iter().map(|&n| 1.0 / n.max(1.0).sqrt()).collect();
    let norm = counts.iter().zip(&raw).map(|(n, w)| n * w).sum::<f64>()
        / counts.iter().sum::<f64>().max(1.0);
    let class_weights: Vec<f32> = raw.iter().map(|w| (w / norm) as f32).collect();

    let base = Device::flex();
    base.seed(cfg.seed);
    let device = base.clone().autodiff();
    let mut head = PositionHead {
        hidden: LinearConfig::new(c, HIDDEN as usize).init(&device),
        out: LinearConfig::new(HIDDEN as usize, k).init(&device),
    };
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(Some(class_weights.clone()))
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let n_rows = row_labels.len();
    let steps = (n_rows + maskless.len()).div_ceil(ROWS_PER_STEP).max(1);
    let mut history: Vec<EpochRecord> = Vec::new();
    let t_head = Instant::now();
    let mut rng = crate::augment::sample_rng(cfg.seed, 0, usize::MAX);
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
    let identity: Vec<f32> = (0..k * k).map(|i| (i / k == i % k) as u8 as f32).collect();
    for epoch in 0..cfg.epochs {
        // Maskless defective images: their most defect-like cell, by the current head.
        let valid_head = head.valid();
        let mut mil_rows = Vec::new();
        let mut mil_labels = Vec::new();
        for &i in &maskless {
            let (r, _) = train_f.rows(i);
            let mut sr = r.clone();
            standardise(&mut sr, &mean, &inv);
            let n = sr.len() / c;
            let x = Tensor::<2>::from_data(TensorData::new(sr.clone(), [n, c]), &base);
            let s = to_vec(valid_head.forward(x))?;
            let (cell, _) = defect_max(&s, k, &is_pass);
            mil_rows.extend_from_slice(&sr[cell * c..(cell + 1) * c]);
            mil_labels.push(train_set.labels[i] as i64);
        }
        let total = n_rows + mil_labels.len();
        let mut order: Vec<usize> = (0..total).collect();
        for j in (1..total).rev() {
            order.swap(j, rng.below(j as u64 + 1) as usize);
        }
        let mut loss_sum = 0.0;
        let mut correct = 0usize;
        for (step, idx) in order.chunks(ROWS_PER_STEP).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                bail!("training cancelled");
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
            let pred = to_vec(logits.clone().detach())?;
            for (row, &t) in pred.chunks(k).zip(&ys) {
                correct += (metrics::argmax(row).unwrap_or(0) as i64 == t) as usize;
            }
            let loss = loss_fn.forward(logits, y);
            let lv = to_vec(loss.clone())?.first().copied().unwrap_or(f32::NAN) as f64;
            if !lv.is_finite() {
                bail!(
                    "training diverged (loss {lv}) at epoch {}; lower --lr",
                    epoch + 1
                );
            }
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(cfg.lr, head, grads);
            loss_sum += lv;
            progress(Progress::Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: lv,
            });
        }
        let (_, probs) = val_probs_of(&head.valid(), &identity, &vec![0.0; k])?;
        let vm = val_metrics(&spec, &probs, &val_set.labels);
        let done = epoch + 1;
        let per_epoch = t_head.elapsed().as_secs_f64() / done as f64;
        let record = EpochRecord {
            epoch: done,
            train_loss: loss_sum / steps as f64,
            train_accuracy: correct as f64 / total.max(1) as f64,
            val_accuracy: vm.confusion.accuracy(),
            val_macro_f1: vm.confusion.macro_f1(),
            val_auroc: vm.auroc,
            lr: cfg.lr,
            elapsed_s: started.elapsed().as_secs_f64(),
            eta_s: per_epoch * (cfg.epochs - done) as f64,
        };
        history.push(record.clone());
        progress(Progress::Epoch(record));
    }
    let head = head.valid();
    let head_s = t_head.elapsed().as_secs_f64();

    // Calibration refit on the training images' pooled scores (image labels, image weights).
    let train_scores = cell_scores(&head, &train_f, &mean, &inv, &base)?;
    let pooled: Vec<Vec<f32>> = train_scores
        .iter()
        .map(|s| defect_max(s, k, &is_pass).1)
        .collect();
    let img_counts: Vec<f64> = (0..k)
        .map(|c| train_set.labels.iter().filter(|&&l| l == c).count() as f64)
        .collect();
    let img_weights: Vec<f32> = img_counts
        .iter()
        .map(|&n| (1.0 / n.max(1.0).sqrt()) as f32)
        .collect();
    let (cal_w, cal_b) = fit_calibration(&pooled, &train_set.labels, &img_weights, k);
    let (val_pooled, probs) = val_probs_of(&head, &cal_w, &cal_b)?;
    let _ = val_pooled;
    let vm = val_metrics(&spec, &probs, &val_set.labels);
    let threshold = metrics::choose_threshold(&vm.scores, &vm.defective, cfg.max_miss_rate);
    let rates = metrics::rates_at(&vm.scores, &vm.defective, threshold);
    spec.threshold = threshold;

    // Export: fold the standardisation into the first head convolution.
    let hidden_w = to_vec(head.hidden.weight.val())?; // [c, hidden]
    let hidden_b = to_vec(
        head.hidden
            .bias
            .as_ref()
            .map(|b| b.val())
            .context("hidden layer without bias")?,
    )?;
    let out_w = to_vec(head.out.weight.val())?; // [hidden, k]
    let out_b = to_vec(
        head.out
            .bias
            .as_ref()
            .map(|b| b.val())
            .context("output without bias")?,
    )?;
    let hd = HIDDEN as usize;
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
        val_miss_rate: rates.miss_rate,
        val_false_reject_rate: rates.false_reject_rate,
        train_seconds: started.elapsed().as_secs_f64(),
        backend: format!(
            "features: kernels engine on {}; head: cpu (burn flex)",
            gpu.describe()
        ),
        early_stopped: false,
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
