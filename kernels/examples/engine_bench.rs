//! Times the engine on the models the station runs, without the app: the pretrained
//! EfficientNet-Lite0 trunk (stages 0-4) + local features + the per-position head at 256 px, and
//! the anomaly model (same trunk + a memory bank of random entries), under the kernel choices
//! of this adapter's table row (`KERNELS_POINTWISE`, `KERNELS_BANK` … override it; see
//! `ops::tuning`). One JSON line per run, for tuning the table on a new adapter quickly:
//!
//!     cargo run --release -p kernels --example engine_bench -- assets/backbones/efficientnet-lite0-s16.safetensors
//!
//! `inspector bench` is the full benchmark (burn beside, the real head, per-op shares).

use std::time::Instant;

use kernels::backbone::{self, Extent};
use kernels::rng::SplitMix64;
use kernels::{Engine, Frame, GpuContext, Layer, LayerWeights, Model, ModelSpec, PixelFormat};

fn random_weights(
    rng: &mut SplitMix64,
    spec: &ModelSpec,
    from: usize,
) -> Vec<Option<LayerWeights>> {
    spec.layers[from..]
        .iter()
        .map(|l| {
            l.parameter_shapes().map(|(w, bias)| LayerWeights {
                weight: (0..w.iter().product::<usize>())
                    .map(|_| rng.uniform(-0.1, 0.1))
                    .collect(),
                bias: (0..bias).map(|_| rng.uniform(-0.1, 0.1)).collect(),
            })
        })
        .collect()
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let weights = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "assets/backbones/efficientnet-lite0-s16.safetensors".into());
    let side = 256;
    let mut b = backbone::load(weights.as_ref(), side, side, Extent::Stages(4))?;
    b.input.resize = kernels::Resize::Fit;
    let stages = [2usize, 3, 4];
    b.layers.push(Layer::LocalFeatures {
        from: stages.iter().map(|&s| b.stage_ends[s]).collect(),
        kernel: 3,
    });
    b.weights.push(None);
    let features: u32 = stages.iter().map(|&s| b.stage_channels[s]).sum();
    let trunk = b.layers.len();
    let mut rng = SplitMix64::new(5);
    let g = GpuContext::headless()?;

    // The classifier: per-position head, defect max pool, linear.
    let mut layers = b.layers.clone();
    layers.extend([
        Layer::conv(features, 128, 1, 1, 0),
        Layer::Relu,
        Layer::conv(128, 2, 1, 1, 0),
        Layer::DefectMaxPool,
        Layer::Linear {
            in_features: 2,
            out_features: 2,
        },
    ]);
    let classes = vec!["good".to_owned(), "defect".to_owned()];
    let spec = ModelSpec::new(
        "lite0-256",
        b.input.clone(),
        layers,
        classes,
        vec!["good".into()],
    );
    let mut w = b.weights.clone();
    w.extend(random_weights(&mut rng, &spec, trunk));
    let model = Model::new(spec, w)?;
    // `EB_BATCHES=1,8`, `EB_BANKS=4096`, `EB_ITERS=5` shorten the run on a CPU rasteriser.
    let list = |var: &str, default: &[u32]| -> Vec<u32> {
        std::env::var(var)
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| default.to_vec())
    };
    let batches = list("EB_BATCHES", &[1, 32, 128]);
    let max = batches.iter().copied().max().unwrap_or(1).max(32);
    let mut engine = Engine::new(&g.device, &g.queue, &model, max, g.describe())?;
    let pix: Vec<Vec<u8>> = (0..max)
        .map(|_| rng.bytes((side * side) as usize))
        .collect();
    let frames: Vec<Frame<'_>> = pix
        .iter()
        .map(|d| Frame::new(d, side, side, PixelFormat::Gray8))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("adapter".into(), g.describe().into());
    out.insert("config".into(), engine.kernel_config().describe().into());
    for &n in &batches {
        let f = &frames[..n as usize];
        for _ in 0..3 {
            engine.infer(f)?;
        }
        let iters = std::env::var("EB_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if n == 1 { 60 } else { 15 });
        let t: Vec<f64> = (0..iters)
            .map(|_| {
                let t = Instant::now();
                engine.infer(f).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        let ms = p50(t);
        out.insert(format!("b{n}_ms"), ms.into());
        out.insert(format!("b{n}_img_s"), (n as f64 / ms * 1e3).into());
    }
    let prof = engine.profile_detail(&frames[..1])?;
    out.insert(
        "b1_gpu_sum_ms".into(),
        (prof.ops.iter().map(|o| o.seconds).sum::<f64>() * 1e3).into(),
    );
    out.insert("gpu_timestamps".into(), prof.gpu_timestamps.into());
    out.insert(
        "b1_dispatches".into(),
        prof.ops
            .iter()
            .map(|o| format!("{} {:.4}", o.label, o.seconds * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
            .into(),
    );
    let prof = engine.profile_detail(&frames[..32.min(frames.len())])?;
    let mut kinds: Vec<(&str, f64)> = Vec::new();
    for o in &prof.ops {
        match kinds.iter_mut().find(|(k, _)| *k == o.kind) {
            Some(e) => e.1 += o.seconds * 1e3,
            None => kinds.push((o.kind, o.seconds * 1e3)),
        }
    }
    out.insert("b32_kinds_ms".into(), format!("{kinds:?}").into());
    drop(engine);

    // The anomaly model at 64k entries, batch 1.
    for entries in list("EB_BANKS", &[4096, 65_536]) {
        let mut layers = b.layers.clone();
        layers.push(Layer::MemoryBank {
            entries,
            features,
            neighbors: 9,
        });
        let spec = ModelSpec::new(
            "anomaly",
            b.input.clone(),
            layers,
            vec!["good".into(), "anomaly".into()],
            vec!["good".into()],
        );
        let mut w = b.weights.clone();
        w.push(Some(LayerWeights {
            weight: (0..entries as usize * features as usize)
                .map(|_| rng.uniform(0.0, 1.0))
                .collect(),
            bias: vec![1.0, 0.5],
        }));
        let model = Model::new(spec, w)?;
        // `EB_SUPPORT_GROUPS=1` searches the support in one workgroup per image (as before the
        // search was spread out), for comparing on one adapter.
        let mut config = kernels::ops::tuning::KernelConfig::for_device(&g.device);
        if let Some(n) = std::env::var("EB_SUPPORT_GROUPS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.bank.max_support_groups = n;
        }
        let mut e = Engine::with_config(&g.device, &g.queue, &model, 1, g.describe(), config)?;
        for _ in 0..3 {
            e.infer(&frames[..1])?;
        }
        let t: Vec<f64> = (0..std::env::var("EB_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30))
            .map(|_| {
                let t = Instant::now();
                e.infer(&frames[..1])
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        out.insert(format!("anomaly_{entries}_frame_ms"), p50(t).into());
        let prof = e.profile_detail(&frames[..1])?;
        let bank: Vec<String> = prof
            .ops
            .iter()
            .filter(|o| o.kind == "memory bank")
            .map(|o| format!("{} {:.4}", o.label, o.seconds * 1e3))
            .collect();
        let sum: f64 = prof
            .ops
            .iter()
            .filter(|o| o.kind == "memory bank")
            .map(|o| o.seconds * 1e3)
            .sum();
        out.insert(format!("anomaly_{entries}_bank_ms"), sum.into());
        out.insert(format!("anomaly_{entries}_bank"), bank.join(", ").into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
