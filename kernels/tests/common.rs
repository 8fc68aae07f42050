//! Helpers shared by the kernels test binaries.
#![allow(dead_code)]

use std::sync::OnceLock;

use kernels::rng::SplitMix64;
use kernels::{Engine, Frame, GpuContext, InputSpec, Layer, Model, ModelSpec, reference};

/// One GPU device per test binary (lavapipe compiles shaders slowly; share it).
pub fn gpu() -> &'static GpuContext {
    static GPU: OnceLock<GpuContext> = OnceLock::new();
    GPU.get_or_init(|| match GpuContext::headless() {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    })
}

/// A fresh seed per run (printed so a failure can be replayed with `KERNELS_TEST_SEED`).
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("KERNELS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (t as u64) ^ (std::process::id() as u64).rotate_left(32)
        });
    eprintln!("{test}: KERNELS_TEST_SEED={seed}");
    seed
}

/// `n` class names, the first one PASS.
pub fn classes(n: usize) -> (Vec<String>, Vec<String>) {
    let c: Vec<String> = (0..n)
        .map(|i| {
            if i == 0 {
                "good".into()
            } else {
                format!("defect{i}")
            }
        })
        .collect();
    (c.clone(), vec![c[0].clone()])
}

/// A conv layer.
pub fn conv(i: u32, o: u32, kernel: u32, stride: u32, padding: u32) -> Layer {
    Layer::conv(i, o, kernel, stride, padding)
}

/// A spec with the given input and feature layers, closed by global pool + linear.
pub fn spec(
    channels: u32,
    h: u32,
    w: u32,
    mut layers: Vec<Layer>,
    last_c: u32,
    n_classes: usize,
) -> ModelSpec {
    let (classes, pass) = classes(n_classes);
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Linear {
        in_features: last_c,
        out_features: n_classes as u32,
    });
    let mean = (0..channels).map(|c| 0.4 + 0.05 * c as f32).collect();
    let std = (0..channels).map(|c| 0.2 + 0.03 * c as f32).collect();
    ModelSpec::new(
        "test",
        InputSpec {
            channels,
            height: h,
            width: w,
            mean,
            std,
            resize: Default::default(),
        },
        layers,
        classes,
        pass,
    )
}

/// Random pixels of a `w × h` frame with `bpp` bytes per pixel.
pub fn pixels(rng: &mut SplitMix64, w: u32, h: u32, bpp: u32) -> Vec<u8> {
    rng.bytes((w * h * bpp) as usize)
}

/// `max |a − b| / max(max |b|, 1e-6)`: the error relative to the reference tensor's scale.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-6);
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Runs `frames` through `engine` (outputs poisoned first) and compares every probability and
/// heatmap value with the f64 reference, within `tolerance` relative error (`rel_err`).
pub fn check(tolerance: f64, model: &Model, engine: &mut Engine, frames: &[Frame<'_>], what: &str) {
    engine.poison_outputs();
    let got = engine
        .infer(frames)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    for (i, (g, f)) in got.iter().zip(frames).enumerate() {
        let want = reference::infer(model, f).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            g.probabilities
                .iter()
                .chain(&g.heatmap.values)
                .all(|v| v.is_finite()),
            "{what} frame {i}: unwritten (NaN) output"
        );
        let pe = rel_err(&g.probabilities, &want.probabilities);
        assert!(
            pe <= tolerance,
            "{what} frame {i} ({}×{} roi {:?}): probabilities rel err {pe:e}\n gpu {:?}\n ref {:?}",
            f.width,
            f.height,
            f.roi,
            g.probabilities,
            want.probabilities
        );
        assert_eq!(
            g.heatmap.class_index, want.heatmap.class_index,
            "{what} frame {i}"
        );
        let he = rel_err(&g.heatmap.values, &want.heatmap.values);
        assert!(he <= tolerance, "{what} frame {i}: heatmap rel err {he:e}");
    }
}
