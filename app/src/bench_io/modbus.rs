//! The Modbus half of `inspector bench-io`: the real station in triggered mode and a
//! tokio-modbus client in this process acting as the PLC, every result checked.

use std::net::SocketAddr;

use super::*;
use crate::station::line_io::ModbusConfig;
use crate::station::line_io::registers::{
    COIL_RESULTS_ACK, COIL_TRIGGER, COIL_TRIGGER_ENABLE, DI_MISSED_TRIGGER, DI_READY,
    DI_RESULTS_VALID, DISCRETE_INPUTS, INPUT_REGISTERS, IR_ERROR, IR_INSPECTION_ID, IR_VERDICT,
    IR_WAITING, verdict,
};
use crate::station::pipeline::{Event, Pipeline, PipelineOptions};
use crate::station::source::SourceSpec;

/// What the PLC saw.
#[derive(Default)]
struct PlcRun {
    /// Per trigger (warm-up included): ms from the edge to the result.
    latencies: Vec<f64>,
    /// Per trigger: the Inspection ID read.
    ids: Vec<u16>,
    missed: u64,
    errors: Vec<String>,
    /// The timed triggers, s.
    timed_s: f64,
    /// Round trips of the timed triggers' discrete-input polls, ms.
    polls: Vec<f64>,
    /// From the pipeline's events: (seq, engine ms, capture-to-verdict ms).
    verdicts: Vec<(u64, f64, f64)>,
    unreadable: Vec<String>,
}

pub(super) fn modbus_part(
    args: &BenchIoArgs,
    model_path: &Path,
    size: (u32, u32),
) -> anyhow::Result<ModbusReport> {
    let dir = BenchDir::new()?;
    let db = dir.0.join("history.sqlite");
    let model = pipeline::load_model(model_path).map_err(anyhow::Error::msg)?;
    let model_id = model.1.id.clone();
    let source = SourceSpec::Synthetic { size, seed: 1 };
    let gpu = kernels::GpuContext::headless()?;
    let adapter = gpu.describe();
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let sink = RecorderSink::new(recorder.clone(), STATION, 0.0);
    let options = LineOptions {
        modbus: Some(ModbusConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            unit: 1,
        }),
        triggered: true,
        window: WARMUP_WINDOW,
        mqtt: None,
    };
    let (line, sink) = LineStation::start(&options, Some(sink), &model.1, &source.uri())
        .map_err(anyhow::Error::msg)?;
    let addr = line
        .server
        .as_ref()
        .map(|s| s.local_addr())
        .context("the Modbus server did not start")?;
    let pipe = Pipeline::start_triggered(
        gpu.device.clone(),
        gpu.queue.clone(),
        adapter.clone(),
        model,
        source,
        PipelineOptions {
            lossless_events: true,
            ..PipelineOptions::default()
        },
        Some(sink),
        Arc::new(|| {}),
        line.trigger(),
    )
    .map_err(anyhow::Error::msg)?;
    if !args.json {
        eprintln!(
            "Modbus server on {addr}; {} + {} triggers…",
            args.warmup, args.triggers
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = args.warmup + args.triggers;
    let mut run = rt.block_on(plc(addr, args, &line, &pipe))?;
    // The verdicts' events come right after their results; collect the last ones.
    let end = Instant::now() + Duration::from_secs(10);
    while run.verdicts.len() < total && Instant::now() < end {
        if let Some(ev) = pipe.next_event(Duration::from_millis(100)) {
            take_event(ev, &mut run);
        }
    }
    let status = line.io.status();
    drop(pipe);
    line.finish(Duration::ZERO, || recorder.finish());

    let mut errors = std::mem::take(&mut run.errors);
    if status.fail_safe > 0 {
        errors.push(format!("{} fail-safe results", status.fail_safe));
    }
    if status.missed > 0 && run.missed == 0 {
        run.missed = status.missed;
    }
    for u in &run.unreadable {
        errors.push(format!("not judged: {u}"));
    }
    if run.verdicts.len() != run.ids.len() {
        errors.push(format!(
            "{} verdicts from the pipeline for {} results",
            run.verdicts.len(),
            run.ids.len()
        ));
    }
    // The history: one row per trigger, consecutive numbers, no error, the k-th frame.
    let rows = Store::open(&db)?.line_results()?;
    if rows.len() != run.ids.len() {
        errors.push(format!(
            "{} results in the history for {} results read",
            rows.len(),
            run.ids.len()
        ));
    }
    for (k, r) in rows.iter().enumerate() {
        let k = k as u64 + 1;
        if r.inspection_id != k || r.seq != k || r.error_code != 0 {
            errors.push(format!(
                "history row {k}: inspection {} for frame {}, error code {}",
                r.inspection_id, r.seq, r.error_code
            ));
        }
    }
    // Per timed trigger: latency, the model's time for its frame, the difference.
    let (mut latency, mut model_ms, mut overhead, mut c2v) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut around, mut outside) = (Vec::new(), Vec::new());
    for k in args.warmup..run.latencies.len() {
        let Some(&(seq, engine, capture)) = run.verdicts.get(k) else {
            break;
        };
        if seq != k as u64 + 1 {
            errors.push(format!("trigger {}: verdict of frame {seq}", k + 1));
            continue;
        }
        latency.push(run.latencies[k]);
        model_ms.push(engine);
        overhead.push(run.latencies[k] - engine);
        c2v.push(capture);
        around.push(capture - engine);
        outside.push(run.latencies[k] - capture);
    }
    let n_errors = errors.len() as u64;
    errors.truncate(10);
    Ok(ModbusReport {
        triggers: args.triggers,
        warmup: args.warmup,
        window_ms: args.window_ms,
        poll_us: args.poll_us,
        model: model_id,
        frame: format!("{}x{}", size.0, size.1),
        adapter,
        latency_ms: Stats::of(&latency),
        model_ms: Stats::of(&model_ms),
        overhead_ms: Stats::of(&overhead),
        capture_to_verdict_ms: Stats::of(&c2v),
        around_engine_ms: Stats::of(&around),
        outside_frame_path_ms: Stats::of(&outside),
        poll_round_trip_ms: Stats::of(&run.polls),
        missed: run.missed,
        errors: n_errors,
        error_details: errors,
        handshakes_per_s: if run.timed_s > 0.0 {
            args.triggers as f64 / run.timed_s
        } else {
            0.0
        },
    })
}

fn take_event(ev: Event, run: &mut PlcRun) {
    match ev {
        Event::Verdict(v) => run.verdicts.push((v.seq, v.engine_ms, v.latency_ms)),
        Event::Unreadable { origin, error } => run.unreadable.push(format!("{origin}: {error}")),
        Event::Source(pipeline::SourceStatus::Failed(e)) => run.unreadable.push(e),
        _ => {}
    }
}

/// The PLC: enable, then per trigger: Trigger up (timed from here), poll the discrete inputs
/// until Results Valid with a new Inspection ID in the input registers (timed to here), ack,
/// Trigger and Ack down.
async fn plc(
    addr: SocketAddr,
    args: &BenchIoArgs,
    line: &LineStation,
    pipe: &Pipeline,
) -> anyhow::Result<PlcRun> {
    use tokio_modbus::prelude::*;
    let mut ctx = tcp::connect_slave(addr, Slave(1))
        .await
        .with_context(|| format!("cannot connect to the Modbus server on {addr}"))?;
    let mut run = PlcRun::default();
    let total = args.warmup + args.triggers;
    let poll = Duration::from_micros(args.poll_us);
    let modbus = |e: tokio_modbus::Error| anyhow::anyhow!("Modbus: {e}");
    let exception = |e: tokio_modbus::ExceptionCode| anyhow::anyhow!("Modbus exception: {e:?}");
    ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
        .await
        .map_err(modbus)?
        .map_err(exception)?;
    let mut last = ctx
        .read_input_registers(IR_INSPECTION_ID, 1)
        .await
        .map_err(modbus)?
        .map_err(exception)?[0];
    let mut timed_from = Instant::now();
    let give_up = Duration::from_millis(args.window_ms) + WARMUP_WINDOW;
    for k in 0..total {
        if k == args.warmup {
            line.io.set_window(Duration::from_millis(args.window_ms));
            timed_from = Instant::now();
        }
        // Ready (the previous result cleared the pending trigger; the source must be live).
        let ready_by = Instant::now() + Duration::from_secs(10);
        loop {
            let d = ctx
                .read_discrete_inputs(0, DISCRETE_INPUTS)
                .await
                .map_err(modbus)?
                .map_err(exception)?;
            if d[DI_READY as usize] {
                break;
            }
            if Instant::now() > ready_by {
                run.errors
                    .push(format!("trigger {}: the station never became Ready", k + 1));
                run.missed += 1;
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t0 = Instant::now();
        ctx.write_single_coil(COIL_TRIGGER, true)
            .await
            .map_err(modbus)?
            .map_err(exception)?;
        let regs = loop {
            let asked = Instant::now();
            let d = ctx
                .read_discrete_inputs(0, DISCRETE_INPUTS)
                .await
                .map_err(modbus)?
                .map_err(exception)?;
            if k >= args.warmup {
                run.polls.push(asked.elapsed().as_secs_f64() * 1e3);
            }
            if d[DI_RESULTS_VALID as usize] {
                let r = ctx
                    .read_input_registers(0, INPUT_REGISTERS)
                    .await
                    .map_err(modbus)?
                    .map_err(exception)?;
                if r[IR_INSPECTION_ID as usize] != last {
                    break Some((t0.elapsed(), r));
                }
            } else if d[DI_MISSED_TRIGGER as usize] {
                run.errors
                    .push(format!("trigger {}: refused (Missed Trigger)", k + 1));
                break None;
            }
            if t0.elapsed() > give_up {
                run.errors.push(format!(
                    "trigger {}: no result within {} ms",
                    k + 1,
                    give_up.as_millis()
                ));
                break None;
            }
            // Keep the pipeline's event channel drained (it blocks the worker when full).
            for ev in pipe.try_events() {
                take_event(ev, &mut run);
            }
            if !poll.is_zero() {
                tokio::time::sleep(poll).await;
            }
        };
        let Some((took, r)) = regs else {
            run.missed += 1;
            return Ok(run);
        };
        let id = r[IR_INSPECTION_ID as usize];
        if id != last.wrapping_add(1) {
            run.errors.push(format!(
                "trigger {}: Inspection ID {id} after {last}",
                k + 1
            ));
        }
        if r[IR_ERROR as usize] != 0 {
            run.errors.push(format!(
                "trigger {}: error code {} (inspection {id})",
                k + 1,
                r[IR_ERROR as usize]
            ));
        }
        if ![verdict::PASS, verdict::FAIL].contains(&r[IR_VERDICT as usize]) {
            run.errors.push(format!(
                "trigger {}: verdict register {}",
                k + 1,
                r[IR_VERDICT as usize]
            ));
        }
        if r[IR_WAITING as usize] != 1 {
            run.errors.push(format!(
                "trigger {}: {} results waiting, expected 1",
                k + 1,
                r[IR_WAITING as usize]
            ));
        }
        last = id;
        run.ids.push(id);
        run.latencies.push(took.as_secs_f64() * 1e3);
        // Ack (rising edge) and Trigger down in one write, then Ack down.
        ctx.write_multiple_coils(COIL_TRIGGER, &[false, true])
            .await
            .map_err(modbus)?
            .map_err(exception)?;
        ctx.write_single_coil(COIL_RESULTS_ACK, false)
            .await
            .map_err(modbus)?
            .map_err(exception)?;
        for ev in pipe.try_events() {
            take_event(ev, &mut run);
        }
        if (k + 1) % 1000 == 0 && !args.json {
            eprintln!("{} of {total} triggers", k + 1);
        }
    }
    run.timed_s = timed_from.elapsed().as_secs_f64();
    let _ = ctx.disconnect().await;
    Ok(run)
}
