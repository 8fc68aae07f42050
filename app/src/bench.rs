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
    /// Skip the pretrained-backbone model.
    #[arg(long)]
    pub no_backbone: bool,
    /// Memory-bank sizes of the anomaly model to time per frame (0 entries: skip it).
    #[arg(long, value_delimiter = ',', default_values_t = vec![4096u32, 16384, 65536])]
    pub banks: Vec<u32>,
}

/// The anomaly model at 256 px (EfficientNet-Lite0 local features + a memory bank of
/// `entries` random good-part features): what the station runs in anomaly mode.
pub fn anomaly_model(entries: u32) -> anyhow::Result<Model> {
    use kernels::Resize;
    let (b, _) = crate::training::features::feature_network(
        &crate::training::features::backbone_path(),
        256,
        Resize::Fit,
    )?;
    let features = crate::training::features::feature_channels(&b);
    let spec = crate::training::anomaly::anomaly_spec(
        &format!("anomaly-256-bank{entries}"),
        &b,
        features,
        entries,
        crate::training::types::NEIGHBORS,
        "good",
    )?;
    let mut rng = SplitMix64::new(9);
    let mut weights = b.weights.clone();
    weights.push(Some(kernels::LayerWeights {
        weight: (0..entries as usize * features as usize)
            .map(|_| rng.uniform(0.0, 2.0))
            .collect(),
        bias: vec![10.0, 1.0],
    }));
    Ok(Model::new(spec, weights)?)
}

/// Per-frame time of the anomaly model at each bank size, batch 1, and the memory bank's share
/// of it (its two dispatches timed on their own).
fn anomaly_bench(
    gpu: &kernels::GpuContext,
    banks: &[u32],
    iters: usize,
    json: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    let mut rng = SplitMix64::new(13);
    // A tile-shaped frame (wider than tall), as the station sees.
    let (w, h) = (320u32, 200u32);
    let pix = rng.bytes((w * h) as usize);
    let frame = [Frame::new(&pix, w, h, PixelFormat::Gray8)];
    let sq = rng.bytes(256 * 256);
    let square = [Frame::new(&sq, 256, 256, PixelFormat::Gray8)];
    if !json {
        println!();
        println!(
            "anomaly model (lite0 256 px local features + memory bank), batch 1, {w}×{h} frame:"
        );
        println!(
            "{:>8} {:>10} {:>10} {:>10} {:>12} {:>10}",
            "bank", "p50 ms", "p90 ms", "frames/s", "bank share", "GFLOP/s"
        );
    }
    for &entries in banks.iter().filter(|&&e| e > 0) {
        let model = anomaly_model(entries)?;
        let flops = model.spec.flops_per_image();
        let mut engine = Engine::new(&gpu.device, &gpu.queue, &model, 1, gpu.describe())?;
        let t = summarize(
            time(1, iters, || {
                engine.infer(&frame).map(|_| ()).map_err(Into::into)
            })?,
            1,
            flops,
        );
        let bank_of = |ops: &[(String, f64)]| -> f64 {
            ops.iter()
                .filter(|(k, _)| k == "memory bank")
                .map(|(_, t)| t)
                .sum()
        };
        // The bank's time alone, median of 3, on this frame and on a square one (no letterbox:
        // no tile of positions is skipped).
        let mut wide_ms = Vec::new();
        let mut square_ms = Vec::new();
        let mut ops = Vec::new();
        let mut detail = None;
        for _ in 0..3 {
            let d = engine.profile_detail(&frame)?;
            ops = d
                .ops
                .iter()
                .map(|o| (o.kind.to_owned(), o.seconds))
                .collect();
            detail = Some(d);
            wide_ms.push(bank_of(&ops) * 1e3);
            square_ms.push(bank_of(&engine.profile(&square)?) * 1e3);
        }
        // The bank's own dispatches (distance, reduce, select, support, finish), last run.
        let stages: Vec<(String, f64)> = detail
            .iter()
            .flat_map(|d| d.ops.iter())
            .filter(|o| o.kind == "memory bank")
            .map(|o| (o.label.clone(), o.seconds * 1e3))
            .collect();
        wide_ms.sort_by(f64::total_cmp);
        square_ms.sort_by(f64::total_cmp);
        let total: f64 = ops.iter().map(|(_, t)| t).sum();
        let bank = bank_of(&ops);
        if !json {
            println!(
                "{entries:>8} {:>10.1} {:>10.1} {:>10.2} {:>11.1} % {:>10.2}   bank alone {:.1} ms ({:.1} ms on a square frame)",
                t.p50_ms,
                t.p90_ms,
                t.images_per_s,
                100.0 * bank / total,
                t.gflop_per_s,
                wide_ms[1],
                square_ms[1]
            );
            println!(
                "{:>8} bank dispatches: {}",
                "",
                stages
                    .iter()
                    .map(|(l, ms)| format!("{l} {ms:.3} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out.insert(
            format!("bank_{entries}"),
            serde_json::json!({
                "batch_1": t,
                "gflop_per_frame": flops as f64 / 1e9,
                "memory_bank_share": bank / total,
                "memory_bank_ms_alone": wide_ms[1],
                "memory_bank_ms_alone_square_frame": square_ms[1],
                "memory_bank_dispatch_ms": stages
                    .iter()
                    .map(|(l, ms)| (l.clone(), serde_json::json!(ms)))
                    .collect::<serde_json::Map<_, _>>(),
                "op_timing": timing_kind(detail.as_ref()),
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// Batch-1 latency of `model` under the table's alternatives that matter for it on a GEMM
/// adapter (the split-K candidate `SplitK::GPU` where the table does not split; the batch tile
/// for single frames where the table has a latency tile), each against `table`'s engine (the
/// adapter table's choice), timed round-robin `iters` times in one run. `None` where the table
/// runs no GEMM.
fn batch1_alternatives(
    model: &Model,
    table: &mut Engine,
    gpu: &kernels::GpuContext,
    frame: &Frame<'_>,
    iters: usize,
) -> anyhow::Result<Option<serde_json::Value>> {
    use kernels::ops::pointwise_gemm::SplitK;
    use kernels::ops::tuning::{KernelConfig, Pointwise};
    let base = table.kernel_config();
    if !matches!(base.pointwise, Pointwise::Gemm(_)) {
        return Ok(None);
    }
    let mut configs: Vec<(&str, KernelConfig)> = Vec::new();
    if base.split_k == SplitK::OFF {
        let split_k = SplitK::GPU;
        configs.push(("split_k_candidate", KernelConfig { split_k, ..base }));
    }
    if base.latency_tile.is_some() {
        let latency_tile = None;
        configs.push((
            "latency_tile_off",
            KernelConfig {
                latency_tile,
                ..base
            },
        ));
    }
    let mut engines = configs
        .iter()
        .map(|&(_, c)| Engine::with_config(&gpu.device, &gpu.queue, model, 1, gpu.describe(), c))
        .collect::<Result<Vec<_>, _>>()?;
    let frames = std::slice::from_ref(frame);
    let mut times = vec![Vec::with_capacity(iters); engines.len() + 1];
    for round in 0..iters + 3 {
        for (k, e) in std::iter::once(&mut *table).chain(&mut engines).enumerate() {
            let t = Instant::now();
            e.infer(frames)?;
            if round >= 3 {
                times[k].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let p50 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = serde_json::json!({ "table_batch_1_p50_ms": p50(&times[0]) });
    for (((name, config), e), t) in configs.iter().zip(&mut engines).zip(&times[1..]) {
        let prof = e.profile_detail(frames)?;
        out[*name] = serde_json::json!({
            "config": config.describe(),
            "batch_1_p50_ms": p50(t),
            "dispatches": prof.ops.len(),
            "dispatch_sum_ms": prof.ops.iter().map(|o| o.seconds).sum::<f64>() * 1e3,
        });
    }
    Ok(Some(out))
}

/// How a profile's times were taken, for the report.
fn timing_kind(p: Option<&kernels::Profile>) -> &'static str {
    match p {
        Some(p) if p.gpu_timestamps => "GPU timestamps per dispatch, one submission",
        _ => "host time, one submission per dispatch",
    }
}

/// The default backbone model (EfficientNet-Lite0 stages 0-4 + the per-position head, random
/// head weights): what the station runs.
pub fn lite0_model() -> anyhow::Result<(Model, ModelSpec)> {
    use kernels::Resize;
    let (b, _) = crate::training::features::feature_network(
        &crate::training::features::backbone_path(),
        256,
        Resize::Fit,
    )?;
    let spec = crate::training::head::head_spec(
        "lite0-256",
        &b,
        crate::training::nn::HIDDEN,
        vec!["good".into(), "defect".into()],
        vec!["good".into()],
    )?;
    let mut rng = SplitMix64::new(5);
    let mut weights = b.weights.clone();
    for l in &spec.layers[b.layers.len()..] {
        weights.push(l.parameter_shapes().map(|(w, bias)| {
            kernels::LayerWeights {
                weight: (0..w.iter().product::<usize>())
                    .map(|_| rng.uniform(-0.1, 0.1))
                    .collect(),
                bias: (0..bias).map(|_| rng.uniform(-0.1, 0.1)).collect(),
            }
        }));
    }
    let model = Model::new(spec.clone(), weights)?;
    Ok((model, spec))
}

type Rows = Vec<(&'static str, u32, Timing)>;

/// Times the engine, burn and the CPU reference on `model` at each batch size.
fn measure(
    model: &Model,
    engine: &mut Engine,
    burn_model: Option<&crate::training::nn::BurnModel>,
    burn_device: Option<&burn::tensor::Device>,
    args: &BenchArgs,
    iters: usize,
    batches: &[u32],
) -> anyhow::Result<Rows> {
    let flops = model.spec.flops_per_image();
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let mut rng = SplitMix64::new(7);
    let (h, w) = (model.spec.input.height, model.spec.input.width);
    let images: Vec<Vec<u8>> = (0..max_batch)
        .map(|_| rng.bytes((h * w) as usize))
        .collect();
    let heavy = flops > 300_000_000;
    let mut out = Vec::new();
    for &batch in batches {
        let frames: Vec<Frame<'_>> = images[..batch as usize]
            .iter()
            .map(|d| Frame::new(d, w, h, PixelFormat::Gray8))
            .collect();
        if !args.json {
            eprintln!("{} batch {batch}: engine…", model.spec.name);
        }
        let eng = time(if heavy { 1 } else { 3 }, iters, || {
            engine.infer(&frames).map(|_| ()).map_err(Into::into)
        })?;
        out.push(("engine", batch, summarize(eng, batch, flops)));
        if let (Some(bm), Some(device)) = (burn_model, burn_device) {
            if !args.json {
                eprintln!("{} batch {batch}: burn…", model.spec.name);
            }
            let inputs: Vec<Vec<f32>> = frames
                .iter()
                .map(|f| {
                    kernels::reference::preprocess(model, f)
                        .map(|v| v.into_iter().map(|x| x as f32).collect())
                })
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            // Upload of the normalised input, forward, softmax, read back.
            // burn-wgpu allocates a heavy model's batch-32 activations beyond lavapipe's 128 MiB
            // buffer limit and fails; it runs such batches 8 images at a time.
            let chunk = if heavy { batch.min(8) } else { batch } as usize;
            let brn = time(if heavy { 1 } else { 3 }, iters, || {
                crate::training::predict(bm, device, &inputs, &model.spec.input, chunk).map(|_| ())
            })?;
            out.push(("burn", batch, summarize(brn, batch, flops)));
        }
        // The f64 reference of a heavy model: batch 1 only (it takes seconds per image).
        if !args.no_cpu && !(heavy && batch > 1) {
            if !args.json {
                eprintln!("{} batch {batch}: cpu reference…", model.spec.name);
            }
            let cpu_iters = if batch > 1 || heavy {
                (args.cpu_iters / 3).max(1)
            } else {
                args.cpu_iters
            };
            let cpu = time(0, cpu_iters, || {
                for f in &frames {
                    kernels::reference::infer(model, f).map_err(anyhow::Error::msg)?;
                }
                Ok(())
            })?;
            out.push(("cpu_reference", batch, summarize(cpu, batch, flops)));
        }
    }
    Ok(out)
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
        let (d, g) = crate::training::nn::shared_gpu()?;
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
        (Some(d), false) => Some(crate::training::nn::BurnModel::from_model(&model, d)?),
        _ => None,
    };

    let mut report = serde_json::Map::new();
    let mut table = Vec::new();
    for (name, batch, t) in measure(
        &model,
        &mut engine,
        burn_model.as_ref(),
        burn_device.as_ref(),
        args,
        args.iters,
        &args.batches,
    )? {
        table.push((name, batch, t.clone()));
        let entry = report.entry(name).or_insert_with(|| serde_json::json!({}));
        entry[format!("batch_{batch}")] = serde_json::to_value(&t)?;
    }

    let ref_dispatches = engine.dispatch_stats().dispatches;
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
    report.insert("dispatches_per_call".into(), ref_dispatches.into());
    report.insert("submissions_per_call".into(), 1.into());
    report.insert("ratios".into(), ratios.clone().into());

    // The pretrained backbone with the default per-position head.
    let mut models = serde_json::Map::new();
    if !args.no_backbone {
        let (bm, spec) = lite0_model()?;
        let lname = spec.name.clone();
        let lflops = bm.spec.flops_per_image();
        drop(engine);
        let lmax = args.batches.iter().copied().max().unwrap_or(1);
        let mut leng = Engine::new(&gpu.device, &gpu.queue, &bm, lmax, gpu.describe())?;
        let lburn = match (&burn_device, args.no_burn) {
            (Some(d), false) => Some(crate::training::nn::BurnModel::from_model(&bm, d)?),
            _ => None,
        };
        let liters = (args.iters / 5).max(3);
        let rows = measure(
            &bm,
            &mut leng,
            lburn.as_ref(),
            burn_device.as_ref(),
            args,
            liters,
            &args.batches,
        )?;
        let mut entry = serde_json::json!({
            "gflop_per_image": lflops as f64 / 1e9,
            "input": format!("{}x{}", bm.spec.input.width, bm.spec.input.height),
            "dispatches_per_call": leng.dispatch_stats().dispatches,
        });
        for (name, batch, t) in &rows {
            if entry.get(*name).is_none() {
                entry[*name] = serde_json::json!({});
            }
            entry[*name][format!("batch_{batch}")] = serde_json::to_value(t)?;
        }
        // Per-op time share: each dispatch timed on its own (one submission and wait each).
        let mut rng = SplitMix64::new(11);
        let side = bm.spec.input.width;
        let pix: Vec<Vec<u8>> = (0..lmax)
            .map(|_| rng.bytes((side * side) as usize))
            .collect();
        let frames: Vec<Frame<'_>> = pix
            .iter()
            .map(|d| Frame::new(d, side, side, PixelFormat::Gray8))
            .collect();
        let mut shares: Vec<(String, f64)> = Vec::new();
        let mut detail = None;
        for _ in 0..2 {
            let d = leng.profile_detail(&frames)?;
            shares = d
                .ops
                .iter()
                .map(|o| (o.kind.to_owned(), o.seconds))
                .collect();
            detail = Some(d);
        }
        // Batch 1 dispatch by dispatch: where a single frame's latency goes (GPU time per
        // dispatch with timestamp queries; their sum against the host's wall time for the
        // same submission shows the launch and readback overhead).
        let mut one = leng.profile_detail(&frames[..1])?;
        for _ in 0..4 {
            let d = leng.profile_detail(&frames[..1])?;
            if d.host_seconds < one.host_seconds {
                one = d;
            }
        }
        let one_sum: f64 = one.ops.iter().map(|o| o.seconds).sum();
        entry["kernel_config"] = leng.kernel_config().describe().into();
        entry["op_timing"] = timing_kind(detail.as_ref()).into();
        entry["profile_batch_1"] = serde_json::json!({
            "gpu_timestamps": one.gpu_timestamps,
            "dispatch_sum_ms": one_sum * 1e3,
            "host_ms": one.host_seconds * 1e3,
            "dispatches": one.ops.iter().map(|o| serde_json::json!({
                "label": o.label, "kind": o.kind, "ms": o.seconds * 1e3,
            })).collect::<Vec<_>>(),
        });
        let total: f64 = shares.iter().map(|(_, t)| t).sum();
        let mut by_kind: Vec<(String, f64)> = Vec::new();
        for (kind, t) in shares {
            match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 += t,
                None => by_kind.push((kind, t)),
            }
        }
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        entry["op_share_batch"] = leng.sub_batch().min(lmax).into();
        entry["op_share"] = serde_json::Value::Object(
            by_kind
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        serde_json::json!({ "ms": t * 1e3, "share": t / total }),
                    )
                })
                .collect(),
        );
        // The table's alternatives at batch 1 (split-K candidate, latency tile off) against its
        // choice, timed round-robin in one run (GEMM adapters only: a CPU rasteriser has none).
        let alternatives = batch1_alternatives(&bm, &mut leng, &gpu, &frames[0], liters.max(20))?;
        if let Some(v) = &alternatives {
            entry["batch_1_alternatives"] = v.clone();
        }
        models.insert(lname.clone(), entry);
        if !args.json {
            println!();
            println!(
                "model {lname}: {:.3} GFLOP/image, {} dispatches + 1 submission per call",
                lflops as f64 / 1e9,
                leng.dispatch_stats().dispatches
            );
            println!(
                "{:<14} {:>5} {:>10} {:>10} {:>12} {:>10}",
                "impl", "batch", "p50 ms", "p90 ms", "images/s", "GFLOP/s"
            );
            for (name, batch, t) in &rows {
                println!(
                    "{name:<14} {batch:>5} {:>10.3} {:>10.3} {:>12.1} {:>10.2}",
                    t.p50_ms, t.p90_ms, t.images_per_s, t.gflop_per_s
                );
            }
            println!(
                "kernels: {}; engine time per op kind at batch {} ({}):",
                leng.kernel_config().describe(),
                leng.sub_batch().min(lmax),
                timing_kind(detail.as_ref())
            );
            for (k, t) in &by_kind {
                println!("  {k:<16} {:>9.2} ms {:>6.1} %", t * 1e3, 100.0 * t / total);
            }
            let mut top: Vec<_> = one.ops.iter().collect();
            top.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
            println!(
                "batch 1: {} dispatches sum to {:.3} ms, host wall time of the submission {:.3} ms; slowest:",
                one.ops.len(),
                one_sum * 1e3,
                one.host_seconds * 1e3
            );
            for o in top.iter().take(8) {
                println!(
                    "  {:<20} {:<16} {:>9.3} ms",
                    o.label,
                    o.kind,
                    o.seconds * 1e3
                );
            }
            if let Some(v) = &alternatives {
                let table = v["table_batch_1_p50_ms"].as_f64().unwrap_or(0.0);
                for name in ["split_k_candidate", "latency_tile_off"] {
                    if let Some(a) = v.get(name) {
                        println!(
                            "batch 1 with {}: p50 {:.3} ms ({} dispatches, sum {:.3} ms) vs \
                             {table:.3} ms with the table's, timed alternately",
                            a["config"].as_str().unwrap_or(""),
                            a["batch_1_p50_ms"].as_f64().unwrap_or(0.0),
                            a["dispatches"],
                            a["dispatch_sum_ms"].as_f64().unwrap_or(0.0),
                        );
                    }
                }
            }
        }
    }
    if args.banks.iter().any(|&b| b > 0) {
        models.insert(
            "anomaly-256".into(),
            anomaly_bench(&gpu, &args.banks, (args.iters / 5).max(3), args.json)?,
        );
    }
    report.insert("models".into(), models.into());

    if args.json {
        println!("{}", serde_json::Value::Object(report));
        return Ok(());
    }
    println!(
        "adapter: {} ({:?}), model ref-cnn, {:.1} MFLOP/image, {} dispatches + 1 submission per call",
        info.name,
        info.backend,
        flops as f64 / 1e6,
        ref_dispatches
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

/// Options of `inspector backbone-check`.
#[derive(Clone, Debug, clap::Args)]
pub struct BackboneCheckArgs {
    /// The full EfficientNet-Lite0 weights (with head and classifier), as safetensors with the
    /// EfficientNet-PyTorch tensor names.
    #[arg(long)]
    pub weights: std::path::PathBuf,
    /// Input side in pixels (images are resized to it, stretched).
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Images to classify.
    #[arg(required = true)]
    pub images: Vec<std::path::PathBuf>,
}

/// Runs the ImageNet classifier through the engine and prints each image's top-5.
pub fn backbone_check(args: &BackboneCheckArgs) -> anyhow::Result<()> {
    let b = kernels::backbone::load(
        &args.weights,
        args.size,
        args.size,
        kernels::backbone::Extent::Classifier,
    )?;
    let classes: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let spec = ModelSpec::new(
        "efficientnet-lite0-imagenet",
        b.input.clone(),
        b.layers.clone(),
        classes,
        vec!["0".into()],
    );
    let model = Model::new(spec, b.weights.clone())?;
    let gpu = kernels::GpuContext::headless()?;
    let mut engine = Engine::new(&gpu.device, &gpu.queue, &model, 1, gpu.describe())?;
    println!("adapter: {}", gpu.describe());
    for path in &args.images {
        let img = crate::data::dataset::decode_image(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let out = engine.infer(&[img.frame()])?.remove(0);
        let mut order: Vec<usize> = (0..out.probabilities.len()).collect();
        order.sort_by(|&a, &b| out.probabilities[b].total_cmp(&out.probabilities[a]));
        let top: Vec<String> = order[..5]
            .iter()
            .map(|&i| format!("{i} ({:.4})", out.probabilities[i]))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(())
}
