//! The anomaly model's head (`Layer::MemoryBank`, PatchCore) on the GPU engine against the f64
//! CPU reference: fresh random networks and frames, odd bank sizes (one entry, fewer entries
//! than the support, several slices with a short last one), feature sizes not a multiple of 4,
//! stretched and fitted inputs, batches whose positions are not a multiple of the tile; and the
//! model file rules for the new kind.
//!
//! Tolerance: relative error (`common::rel_err`) ≤ 1e-4 on probabilities and heatmaps, as for
//! every engine test. The bank is built from the network's own features (plus noise), and the
//! calibration is set from the reference's scores, so scores spread around the decision point
//! instead of saturating the sigmoid.

mod common;

use common::*;
use kernels::ops::bank::BankSplit;
use kernels::ops::tuning::KernelConfig;
use kernels::rng::SplitMix64;
use kernels::{
    Engine, Frame, InputSpec, Layer, Model, ModelError, ModelSpec, PixelFormat, Resize, reference,
};

const TOLERANCE: f64 = 1e-4;
const FEATURES: u32 = 19;
/// The memory bank's layer index in [`bank_spec`].
const BANK: usize = 2;

/// conv 4×4/4 (19 channels, not a multiple of 4) → 3×3 local features → memory bank. The
/// feature part is shallow on purpose: a score's error is at most its features' (triangle
/// inequality), and the deep backbone's own f32 error is tested in backbone_ops.rs; here the
/// head is under test.
fn bank_spec(h: u32, w: u32, entries: u32, neighbors: u32, resize: Resize) -> ModelSpec {
    let layers = vec![
        Layer::conv(3, FEATURES, 4, 4, 0),
        Layer::LocalFeatures {
            from: vec![0],
            kernel: 3,
        },
        Layer::MemoryBank {
            entries,
            features: FEATURES,
            neighbors,
        },
    ];
    ModelSpec::new(
        "bank-test",
        InputSpec {
            channels: 3,
            height: h,
            width: w,
            mean: vec![0.45, 0.5, 0.4],
            std: vec![0.25, 0.2, 0.3],
            resize,
        },
        layers,
        vec!["good".into(), "anomaly".into()],
        vec!["good".into()],
    )
}

/// A random model whose bank holds features of `frames` (some positions, jittered) and random
/// vectors, calibrated so the reference's image scores straddle 0.
fn calibrated(rng: &mut SplitMix64, spec: ModelSpec, frames: &[Frame<'_>]) -> Model {
    let mut model = Model::random(spec, rng.next_u64()).expect("model");
    let bank_layer = model.spec.layers.len() - 1;
    let feat_layer = bank_layer - 1;
    let Layer::MemoryBank {
        entries, features, ..
    } = model.spec.layers[bank_layer]
    else {
        unreachable!()
    };
    let (m, d) = (entries as usize, features as usize);
    let mut pool: Vec<Vec<f64>> = Vec::new();
    for f in frames {
        let x = reference::preprocess(&model, f).expect("preprocess");
        let out = reference::layer_outputs(&model, x);
        let s = model.plan.shapes[feat_layer + 1];
        let hw = (s.h * s.w) as usize;
        for p in 0..hw {
            pool.push((0..d).map(|c| out[feat_layer][c * hw + p]).collect());
        }
    }
    let w = model.weights[bank_layer].as_mut().expect("bank weights");
    for e in 0..m {
        if e % 3 != 2 {
            let v = &pool[rng.below(pool.len() as u64) as usize];
            for c in 0..d {
                w.weight[e * d + c] = (v[c] + rng.uniform(-0.05, 0.05) as f64) as f32;
            }
        }
    }
    w.bias = vec![0.0, 1.0];
    let scores: Vec<f64> = frames
        .iter()
        .map(|f| {
            let p = reference::infer(&model, f).expect("infer").probabilities[1] as f64;
            (p / (1.0 - p)).ln() // the logit = the score itself at center 0, scale 1
        })
        .collect();
    let lo = scores.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w = model.weights[bank_layer].as_mut().expect("bank weights");
    // An f32 score is off by ~1e-6 of the feature norm (at most the features' own error), so
    // the scale is at least 5 % of the RMS feature norm: a bank sitting close to the features
    // would otherwise magnify that past the tolerance.
    let norm = (pool
        .iter()
        .map(|v| v.iter().map(|x| x * x).sum::<f64>())
        .sum::<f64>()
        / pool.len() as f64)
        .sqrt();
    let mid = (lo + hi) / 2.0;
    w.bias = vec![mid as f32, ((hi - lo) / 4.0).max(0.05 * norm) as f32];
    Model::new(model.spec.clone(), model.weights.clone()).expect("valid model")
}

/// The engine against the reference on `frames`: probabilities within `TOLERANCE` absolute, and
/// heatmaps within `TOLERANCE` of `max(1, max |z|)`: z is in units of the calibration scale,
/// and a map that hovers around the centre (|z| ≪ 1) must not make the bound vanish.
fn check_bank(model: &Model, engine: &mut Engine, frames: &[Frame<'_>], what: &str) {
    engine.poison_outputs();
    let got = engine
        .infer(frames)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    for (i, (g, f)) in got.iter().zip(frames).enumerate() {
        let want = reference::infer(model, f).expect("reference");
        let pe = rel_err(&g.probabilities, &want.probabilities);
        assert!(
            pe <= TOLERANCE,
            "{what} frame {i}: probabilities {:?} vs {:?}",
            g.probabilities,
            want.probabilities
        );
        assert_eq!(
            g.heatmap.class_index, want.heatmap.class_index,
            "{what} frame {i}"
        );
        assert_eq!(
            (g.heatmap.width, g.heatmap.height),
            (want.heatmap.width, want.heatmap.height),
            "{what} frame {i}: heatmap size"
        );
        let scale = want.heatmap.values.iter().fold(1f32, |m, v| m.max(v.abs()));
        let he = g
            .heatmap
            .values
            .iter()
            .zip(&want.heatmap.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        assert!(
            he as f64 <= TOLERANCE && g.heatmap.values.iter().all(|v| v.is_finite()),
            "{what} frame {i}: heatmap error {he:e}"
        );
    }
}

fn random_cases(rng: &mut SplitMix64, n: usize) -> Vec<(Vec<u8>, u32, u32, PixelFormat)> {
    (0..n)
        .map(|i| {
            let (w, h) = (8 + rng.below(90) as u32, 8 + rng.below(90) as u32);
            let format = [PixelFormat::Gray8, PixelFormat::Rgb8, PixelFormat::Rgba8][i % 3];
            (pixels(rng, w, h, format.bytes_per_pixel()), w, h, format)
        })
        .collect()
}

fn frames(cases: &[(Vec<u8>, u32, u32, PixelFormat)]) -> Vec<Frame<'_>> {
    cases
        .iter()
        .map(|(d, w, h, f)| Frame {
            data: d,
            width: *w,
            height: *h,
            format: *f,
            roi: None,
        })
        .collect()
}

#[test]
fn memory_bank_matches_the_reference_on_odd_banks_and_shapes() {
    let mut rng = SplitMix64::new(seed("memory_bank"));
    let g = gpu();
    // (entries, neighbors): one entry; fewer entries than the support; one slice; several
    // slices with a short last one (4099 = 16·256 + 3); no reweighting.
    let banks = [(1, 9), (5, 9), (37, 3), (1001, 9), (4099, 16), (300, 1)];
    for (round, &(entries, neighbors)) in banks.iter().enumerate() {
        let resize = [Resize::Stretch, Resize::Fit][round % 2];
        // Sides up to 52: up to 13×13 = 169 positions, more than one score workgroup's 64.
        let h = 17 + rng.below(36) as u32;
        let w = 17 + rng.below(36) as u32;
        let cases = random_cases(&mut rng, 5);
        let fr = frames(&cases);
        let spec = bank_spec(h, w, entries, neighbors, resize);
        let model = calibrated(&mut rng, spec, &fr);
        // Both rows of the adapter table, whatever this adapter is: few long slices (CPU) and
        // many short ones folded by bank_reduce with the support search spread out (GPU).
        for split in [BankSplit::CPU, BankSplit::GPU, TINY_SPLIT] {
            let mut engine = with_split(&model, 5, split);
            let what =
                format!("bank {entries} support {neighbors} input {h}×{w} {resize:?} {split:?}");
            check_bank(&model, &mut engine, &fr, &format!("{what} batch 5"));
            check_bank(&model, &mut engine, &fr[2..3], &format!("{what} batch 1"));
            check_bank(&model, &mut engine, &fr[..3], &format!("{what} batch 3"));
        }
        let mut engine = Engine::new(&g.device, &g.queue, &model, 5, g.describe()).expect("engine");
        let what = format!("bank {entries} support {neighbors} input {h}×{w} {resize:?}");
        let got = engine.infer(&fr).expect("infer");
        let p: Vec<f32> = got.iter().map(|r| r.probabilities[1]).collect();
        assert_eq!(
            got[0].heatmap.class_index, 1,
            "{what}: the heatmap shows the anomaly"
        );
        // The calibration keeps the scores off the sigmoid's flat ends.
        assert!(
            p.iter().any(|&v| (0.01..0.99).contains(&v)),
            "{what}: saturated scores {p:?}"
        );
    }
}

/// Frames far from square under `Resize::Fit`: whole tiles of 32 positions lie in the letterbox
/// padding (the distance kernel skips them, leaving their partial minima unwritten), next to
/// images that fill the input; every result still matches the reference. That the skip saves
/// time is measured by `inspector bench` (bank time on a wide and on a square frame), not here.
#[test]
fn far_from_square_frames_match_the_reference_around_skipped_tiles() {
    let mut rng = SplitMix64::new(seed("bank_letterbox"));
    let g = gpu();
    let cases: Vec<(Vec<u8>, u32, u32, PixelFormat)> =
        [(96u32, 9u32), (9, 96), (40, 40), (120, 20)]
            .iter()
            .map(|&(w, h)| (pixels(&mut rng, w, h, 1), w, h, PixelFormat::Gray8))
            .collect();
    let fr = frames(&cases);
    // 48×48 input → a 12×12 map: a 96×9 frame covers one row of it, 11 rows (132 positions,
    // four whole tiles) are padding.
    let spec = bank_spec(48, 48, 777, 9, Resize::Fit);
    let model = calibrated(&mut rng, spec, &fr);
    let mut engine = Engine::new(&g.device, &g.queue, &model, 4, g.describe()).expect("engine");
    check_bank(&model, &mut engine, &fr, "letterboxed batch of 4");
    check_bank(&model, &mut engine, &fr[..1], "one wide frame");
    for split in [BankSplit::CPU, BankSplit::GPU, TINY_SPLIT] {
        let mut engine = with_split(&model, 4, split);
        check_bank(
            &model,
            &mut engine,
            &fr,
            &format!("letterboxed batch of 4, {split:?}"),
        );
        check_bank(
            &model,
            &mut engine,
            &fr[..1],
            &format!("one wide frame, {split:?}"),
        );
    }
}

#[test]
fn a_bank_entry_equal_to_a_feature_scores_zero_there() {
    // The nearest-entry distance is exact at 0: a frame whose every feature is in the bank has
    // raw score 0, so P(anomaly) = sigmoid(−center / scale) whatever the support.
    let mut rng = SplitMix64::new(seed("bank_zero"));
    let g = gpu();
    let cases = random_cases(&mut rng, 1);
    let fr = frames(&cases);
    let spec = bank_spec(24, 20, 1, 1, Resize::Stretch);
    let model = Model::random(spec, rng.next_u64()).expect("model");
    let x = reference::preprocess(&model, &fr[0]).expect("preprocess");
    let out = reference::layer_outputs(&model, x);
    let s = model.plan.shapes[BANK];
    let hw = (s.h * s.w) as usize;
    let mut weights = model.weights.clone();
    let entries = hw as u32;
    let bank: Vec<f32> = (0..hw)
        .flat_map(|p| (0..FEATURES as usize).map(move |c| (c, p)))
        .map(|(c, p)| out[BANK - 1][c * hw + p] as f32)
        .collect();
    weights[BANK] = Some(kernels::LayerWeights {
        weight: bank,
        bias: vec![2.0, 0.5],
    });
    let mut spec = model.spec.clone();
    spec.layers[BANK] = Layer::MemoryBank {
        entries,
        features: FEATURES,
        neighbors: 4,
    };
    let model = Model::new(spec, weights).expect("model");
    let mut engine = Engine::new(&g.device, &g.queue, &model, 1, g.describe()).expect("engine");
    let got = engine.infer(&fr).expect("infer");
    let want = 1.0 / (1.0 + (2.0f32 / 0.5).exp());
    assert!(
        (got[0].probabilities[1] - want).abs() < 1e-4,
        "P(anomaly) {} vs {want}",
        got[0].probabilities[1]
    );
    assert!(
        got[0]
            .heatmap
            .values
            .iter()
            .all(|&z| (z + 4.0).abs() < 1e-3)
    );
}

#[test]
fn memory_bank_spec_rules_and_model_file() {
    let spec = bank_spec(32, 32, 50, 9, Resize::Fit);
    assert!(spec.is_anomaly());
    assert_eq!(spec.version, 2, "anomaly models are format version 2");
    assert_eq!(
        common::spec(1, 16, 16, vec![conv(1, 4, 3, 1, 1)], 4, 2).version,
        1
    );
    assert_eq!(spec.class_of_label("scratch", &["ok".into()]), Some(1));
    assert_eq!(spec.class_of_label("ok", &["ok".into()]), Some(0));
    assert_eq!(spec.class_of_label("good", &[]), Some(0));

    let bad = |f: &dyn Fn(&mut ModelSpec)| {
        let mut s = spec.clone();
        f(&mut s);
        s.validate().expect_err("must be refused").to_string()
    };
    let e = bad(&|s| {
        s.layers[BANK] = Layer::MemoryBank {
            entries: 50,
            features: 20,
            neighbors: 9,
        }
    });
    assert!(
        e.contains("20-feature entries for a 19-channel input"),
        "{e}"
    );
    let e = bad(&|s| {
        s.layers[BANK] = Layer::MemoryBank {
            entries: 50,
            features: FEATURES,
            neighbors: 17,
        }
    });
    assert!(e.contains("neighbors must be 1..=16"), "{e}");
    let e = bad(&|s| {
        s.classes.push("third".into());
    });
    assert!(e.contains("two classes, PASS then anomaly"), "{e}");
    let e = bad(&|s| s.version = 1);
    assert!(e.contains("cannot hold a memory_bank layer"), "{e}");
    let e = bad(&|s| {
        let last = s.layers.pop().expect("layer");
        s.layers.push(last);
        s.layers.push(Layer::Relu);
    });
    assert!(e.contains("must be the last layer"), "{e}");

    // Round trip through the file, and a damaged calibration.
    let mut rng = SplitMix64::new(seed("bank_file"));
    let model = Model::random(spec.clone(), rng.next_u64()).expect("model");
    let bytes = model.to_bytes().expect("bytes");
    let back = Model::from_bytes(&bytes).expect("reads back");
    assert_eq!(back.spec, model.spec);
    assert_eq!(back.weights, model.weights);
    let mut w = model.weights.clone();
    if let Some(lw) = w[BANK].as_mut() {
        lw.bias[1] = 0.0;
    }
    let e = Model::new(spec.clone(), w)
        .expect_err("scale 0")
        .to_string();
    assert!(e.contains("score scale > 0"), "{e}");

    // Files from a newer app: a later format version, or a layer kind this build lacks.
    let newer = |json: String| {
        let st = safetensors::serialize(
            Vec::<(String, safetensors::tensor::TensorView<'_>)>::new(),
            Some(std::collections::HashMap::from([(
                kernels::SPEC_METADATA_KEY.to_owned(),
                json,
            )])),
        )
        .expect("serialize");
        match Model::from_bytes(&st) {
            Err(e @ ModelError::SpecJson(_)) => e.to_string(),
            other => panic!("expected a spec error, got {other:?}"),
        }
    };
    let mut v = serde_json::to_value(&spec).expect("json");
    v["version"] = 3.into();
    v["layers"][BANK]["kind"] = "memory_bank_v2".into();
    let e = newer(v.to_string());
    assert!(
        e.contains("format version 3") && e.contains("update the app"),
        "{e}"
    );
    v["version"] = 2.into();
    let e = newer(v.to_string());
    assert!(
        e.contains("\"memory_bank_v2\"") && e.contains("update the app"),
        "{e}"
    );
}

/// A split finer than any adapter's: slices of 32 entries, support groups of 16 entries, so
/// small test banks still cross many slices and groups.
const TINY_SPLIT: BankSplit = BankSplit {
    min_slice: 32,
    max_slices: 4096,
    target_groups: 1 << 20,
    support_len: 16,
    max_support_groups: 512,
};

fn with_split(model: &Model, max_batch: u32, split: BankSplit) -> Engine {
    let g = gpu();
    let mut config = KernelConfig::for_device(&g.device);
    config.bank = split;
    let engine = Engine::with_config(&g.device, &g.queue, model, max_batch, g.describe(), config)
        .expect("engine");
    assert_eq!(engine.kernel_config().bank, split);
    engine
}

#[test]
fn every_bank_split_cuts_every_entry_once() {
    for split in [BankSplit::CPU, BankSplit::GPU, TINY_SPLIT] {
        for entries in [1, 31, 32, 33, 255, 256, 257, 4099, 16_384, 65_536, 100_003] {
            for positions in [1, 169, 256, 256 * 32] {
                let (slices, len) = split.slicing(entries, positions);
                assert_eq!(len % kernels::ops::bank::TILE_ENTRIES, 0);
                assert!(slices * len >= entries, "{entries}: {slices} × {len}");
                assert!(
                    (slices - 1) * len < entries,
                    "{entries}: an empty last slice"
                );
                assert!(slices <= split.max_slices.max(1));
            }
            let groups = split.support_groups(entries);
            assert!(groups >= 1 && groups <= split.max_support_groups);
        }
    }
    // On a GPU a 64k bank at batch 1 (256 positions, 8 tiles) fills thousands of workgroups.
    let (slices, _) = BankSplit::GPU.slicing(65_536, 256);
    assert!(slices * 8 >= 4096, "{slices}");
}

#[test]
fn bank_slicing_covers_every_entry_once() {
    for entries in [1, 31, 32, 33, 255, 256, 257, 4099, 16_384, 65_536, 100_003] {
        let (slices, len) = kernels::ops::bank::slicing(entries);
        assert_eq!(len % kernels::ops::bank::TILE_ENTRIES, 0);
        assert!(slices * len >= entries, "{entries}: {slices} × {len}");
        assert!(
            (slices - 1) * len < entries,
            "{entries}: an empty last slice"
        );
        assert!(slices <= 32);
    }
}
