//! `inspector bench`: the kernels engine vs burn-wgpu vs the CPU reference on "ref-cnn", in one
//! run on one adapter.
//!
//! (a) engine: raw 8-bit frames uploaded → probabilities + heatmap back on the CPU;
//! (b) burn: the same weights as a burn module on burn-wgpu on the same adapter, timed from the
//!     normalised input tensor's upload to the probabilities back on the CPU;
//! (c) the f64 CPU reference from `kernels::reference`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kernels::rng::SplitMix64;
use kernels::{Engine, Frame, Model, ModelSpec, PixelFormat};
use serde::Serialize;

/// ONNX Runtime on this machine's 2 CPU threads runs ref-cnn in about this many ms per image at
/// batch 1 (figure quoted in the kernels issue, not measured by this command).
pub const ONNX_RUNTIME_CPU_MS_QUOTED: f64 = 0.47;

/// Options of `inspector bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Timed iterations per engine/burn measurement (after warm-up).
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// Timed iterations of the (slow) CPU reference at batch 1; batch 32 gets a third.
    #[arg(long, default_value_t = 6)]
    pub cpu_iters: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u32, 32])]
    pub batches: Vec<u32>,
    /// Skip the CPU reference.
    #[arg(long)]
    pub no_cpu: bool,
    /// Skip burn (and do not start its runtime at all).
    #[arg(long)]
    pub no_burn: bool,
    /// Run the engine on its own wgpu device instead of the one shared with burn.
    #[arg(long)]
    pub own_device: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Timing summary of one (implementation, batch) pair.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// Median milliseconds per call.
    pub p50_ms: f64,
    /// 90th percentile milliseconds per call.
    pub p90_ms: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Effective GFLOP/s at the median.
    pub gflop_per_s: f64,
    /// Timed calls.
    pub samples: usize,
}

fn summarize(mut samples: Vec<Duration>, batch: u32, flops_per_image: u64) -> Timing {
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    let p50 = pct(0.5);
    Timing {
        p50_ms: p50,
        p90_ms: pct(0.9),
        images_per_s: batch as f64 / (p50 / 1e3),
        gflop_per_s: flops_per_image as f64 * batch as f64 / (p50 / 1e3) / 1e9,
        samples: samples.len(),
    }
}

fn time<F: FnMut() -> anyhow::Result<()>>(
    warmup: usize,
    iters: usize,
    mut f: F,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed())
        })
        .collect()
}

/// Runs the benchmark and prints the table or JSON.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (burn_device, shared) = if args.no_burn && args.own_device {
        (None, None)
    } else {
        let (d, g) = crate::nn::shared_gpu()?;
        (Some(d), Some(g))
    };
    let gpu = match (&shared, args.own_device) {
        (Some(g), false) => g.clone(),
        _ => kernels::GpuContext::headless()?,
    };
    let info = gpu.adapter.get_info();
    let spec = ModelSpec::ref_cnn(vec!["good".into(), "defect".into()], vec!["good".into()]);
    let model = Model::random(spec, 42)?;
    let flops = model.spec.flops_per_image();
    let max_batch = args.batches.iter().copied().max().unwrap_or(1);
    let mut engine = Engine::new(&gpu.device, &gpu.queue, &model, max_batch, gpu.describe())?;
    let burn_model = match (&burn_device, args.no_burn) {
        (Some(d), false) => Some(crate::nn::BurnModel::from_model(&model, d)?),
        _ => None,
    };

    let mut rng = SplitMix64::new(7);
    let (h, w) = (model.spec.input.height, model.spec.input.width);
    let images: Vec<Vec<u8>> = (0..max_batch)
        .map(|_| rng.bytes((h * w) as usize))
        .collect();
    let mut report = serde_json::Map::new();
    let mut table = Vec::new();
    for &batch in &args.batches {
        let frames: Vec<Frame<'_>> = images[..batch as usize]
            .iter()
            .map(|d| Frame::new(d, w, h, PixelFormat::Gray8))
            .collect();
        if !args.json {
            eprintln!("batch {batch}: engine…");
        }
        let eng = time(3, args.iters, || {
            engine.infer(&frames).map(|_| ()).map_err(Into::into)
        })?;
        let mut rows = vec![("engine", summarize(eng, batch, flops))];
        if let Some(bm) = &burn_model {
            if !args.json {
                eprintln!("batch {batch}: burn…");
            }
            let inputs: Vec<Vec<f32>> = frames
                .iter()
                .map(|f| {
                    kernels::reference::preprocess(&model, f)
                        .map(|v| v.into_iter().map(|x| x as f32).collect())
                })
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            let device = burn_device.as_ref().context("burn device")?;
            // Upload of the normalised input, forward, softmax, read back.
            let brn = time(3, args.iters, || {
                crate::train::predict(bm, device, &inputs, &model.spec.input, batch as usize)
                    .map(|_| ())
            })?;
            rows.push(("burn", summarize(brn, batch, flops)));
        }
        if !args.no_cpu {
            if !args.json {
                eprintln!("batch {batch}: cpu reference…");
            }
            let iters = if batch > 1 {
                (args.cpu_iters / 3).max(1)
            } else {
                args.cpu_iters
            };
            let cpu = time(0, iters, || {
                for f in &frames {
                    kernels::reference::infer(&model, f).map_err(anyhow::Error::msg)?;
                }
                Ok(())
            })?;
            rows.push(("cpu_reference", summarize(cpu, batch, flops)));
        }
        for (name, t) in rows {
            table.push((name, batch, t.clone()));
            let entry = report.entry(name).or_insert_with(|| serde_json::json!({}));
            entry[format!("batch_{batch}")] = serde_json::to_value(&t)?;
        }
    }

    let get = |name: &str, batch: u32| {
        table
            .iter()
            .find(|(n, b, _)| *n == name && *b == batch)
            .map(|(_, _, t)| t)
    };
    let mut ratios = serde_json::Map::new();
    for &batch in &args.batches {
        if let (Some(e), Some(b)) = (get("engine", batch), get("burn", batch)) {
            ratios.insert(
                format!("burn_over_engine_batch_{batch}"),
                (b.p50_ms / e.p50_ms).into(),
            );
        }
        if let (Some(e), Some(c)) = (get("engine", batch), get("cpu_reference", batch)) {
            ratios.insert(
                format!("cpu_reference_over_engine_batch_{batch}"),
                (c.p50_ms / e.p50_ms).into(),
            );
        }
        if let Some(e) = get("engine", batch) {
            ratios.insert(
                format!("engine_ms_per_image_over_onnxruntime_quoted_batch_{batch}"),
                (e.p50_ms / batch as f64 / ONNX_RUNTIME_CPU_MS_QUOTED).into(),
            );
        }
    }
    report.insert("adapter".into(), info.name.clone().into());
    report.insert(
        "backend".into(),
        format!("{:?}", info.backend).to_lowercase().into(),
    );
    report.insert("model".into(), "ref-cnn".into());
    report.insert("flops_per_image".into(), flops.into());
    report.insert(
        "dispatches_per_call".into(),
        engine.dispatch_stats().dispatches.into(),
    );
    report.insert(
        "submissions_per_call".into(),
        engine.dispatch_stats().submissions.into(),
    );
    report.insert("ratios".into(), ratios.clone().into());

    if args.json {
        println!("{}", serde_json::Value::Object(report));
        return Ok(());
    }
    println!(
        "adapter: {} ({:?}), model ref-cnn, {:.1} MFLOP/image, {} dispatches + 1 submission per call",
        info.name,
        info.backend,
        flops as f64 / 1e6,
        engine.dispatch_stats().dispatches
    );
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>12} {:>10}",
        "impl", "batch", "p50 ms", "p90 ms", "images/s", "GFLOP/s"
    );
    for (name, batch, t) in &table {
        println!(
            "{name:<14} {batch:>5} {:>10.3} {:>10.3} {:>12.1} {:>10.2}",
            t.p50_ms, t.p90_ms, t.images_per_s, t.gflop_per_s
        );
    }
    for (k, v) in &ratios {
        println!("{k}: {:.2}", v.as_f64().context("ratio")?);
    }
    Ok(())
}
