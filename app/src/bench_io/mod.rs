//! `inspector bench-io`: the line I/O numbers of issue 20, measured on loopback.
//!
//! - Modbus: the real station as `inspector inspect --trigger` starts it (the line station, the
//!   pipeline in triggered mode with the model on the GPU engine, a synthetic source, the
//!   history in a temporary folder) and a tokio-modbus client in this process acting as the PLC.
//!   Per trigger: the time from writing the Trigger edge to reading the new result (Results
//!   Valid, then the input registers with the next Inspection ID); the model's own time for that
//!   frame (the engine call, [`Verdict::engine_ms`]); and their difference, the overhead: what
//!   the station adds around the model (Modbus, the capture thread and its frame, the queue, the
//!   history, the registers, the PLC's polling). Every result is checked: one per trigger,
//!   consecutive IDs, no error code, the k-th trigger's result recorded for the k-th frame.
//! - MQTT (with `--mqtt` of a running broker): results recorded through the station's own path
//!   (the line I/O's sink, the history writer, the outbox) while the publisher runs, timed until
//!   the broker has acknowledged all (sustained messages/s); then results recorded while no
//!   publisher runs (an outage), and the publisher started: the catch-up rate. A subscriber on
//!   `PREFIX/#` checks that every result arrived (duplicates allowed).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::data::assets::{DEFAULT_MODEL, bundled};
use crate::data::dataset::DecodedImage;
use crate::line_station::{LineOptions, LineStation};
use crate::records::history::{HistoryResults, Recorder, RecorderOptions, RecorderSink, Store};
use crate::records::mqtt::{MqttConfig, MqttPublisher};
use crate::station::line_io::registers::{
    COIL_RESULTS_ACK, COIL_TRIGGER, COIL_TRIGGER_ENABLE, DI_MISSED_TRIGGER, DI_READY,
    DI_RESULTS_VALID, DISCRETE_INPUTS, INPUT_REGISTERS, IR_ERROR, IR_INSPECTION_ID, IR_VERDICT,
    IR_WAITING, verdict,
};
use crate::station::line_io::{LineConfig, LineIo, ModbusConfig};
use crate::station::pipeline::{
    self, Event, ModelInfo, Pipeline, PipelineOptions, Verdict, VerdictSink,
};
use crate::station::source::SourceSpec;

/// Station name stored with the bench's results.
const STATION: &str = "bench-io";
/// The fail-safe window during the untimed first triggers (shader compilation may take long).
const WARMUP_WINDOW: Duration = Duration::from_secs(60);

/// Options of `inspector bench-io`.
#[derive(Debug, clap::Args)]
pub struct BenchIoArgs {
    /// Timed triggers over the Modbus loopback (0: skip the Modbus part).
    #[arg(long, default_value_t = 10_000)]
    pub triggers: usize,
    /// Untimed triggers first (shader compilation, caches); their results are checked too.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Synthetic frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "256x256")]
    pub size: String,
    /// Fail-safe response window, ms, for the timed triggers (generous, so that a slow GPU or
    /// lavapipe does not trip it; a fail-safe result counts as an error).
    #[arg(long, default_value_t = 5000)]
    pub window_ms: u64,
    /// Pause between two polls of the PLC, µs (0: back to back).
    #[arg(long, default_value_t = 0)]
    pub poll_us: u64,
    /// A running broker, mqtt://HOST:PORT/PREFIX (mqtts:// for TLS; credentials from
    /// DI_MQTT_USER and DI_MQTT_PASSWORD). Without it the MQTT part is skipped.
    #[arg(long, value_name = "mqtt://HOST:PORT/PREFIX")]
    pub mqtt: Option<String>,
    /// Results per MQTT measurement (sustained, and catch-up).
    #[arg(long, default_value_t = 5000)]
    pub mqtt_results: u64,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// Percentiles of a series, ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Stats {
    fn of(v: &[f64]) -> Self {
        let q = |q| pipeline::percentile(v.to_vec(), q).unwrap_or(f64::NAN);
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: q(1.0),
            mean: if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            },
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3} ms",
            self.p50, self.p90, self.p99, self.max, self.mean
        )
    }
}

/// The Modbus part's results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModbusReport {
    /// Timed triggers.
    pub triggers: usize,
    /// Untimed triggers before them.
    pub warmup: usize,
    /// The fail-safe window of the timed triggers, ms.
    pub window_ms: u64,
    /// Pause between polls, µs.
    pub poll_us: u64,
    /// The model.
    pub model: String,
    /// The synthetic frame size.
    pub frame: String,
    /// The GPU adapter.
    pub adapter: String,
    /// Trigger edge written → new result read.
    pub latency_ms: Stats,
    /// The engine call for the same frame.
    pub model_ms: Stats,
    /// Latency minus the model's time.
    pub overhead_ms: Stats,
    /// Capture → verdict inside the station (queue + engine + history), for reference.
    pub capture_to_verdict_ms: Stats,
    /// The overhead's part inside the frame's path: capture → verdict minus the engine call
    /// (making the frame, the queue, preparing it, the verdict).
    pub around_engine_ms: Stats,
    /// The rest: latency minus capture → verdict (the Trigger's write and the capture thread's
    /// wake-up before; recording the result, the registers and the polls after).
    pub outside_frame_path_ms: Stats,
    /// One poll of the discrete inputs, round trip (what noticing a result costs at most,
    /// with the input registers' read after it).
    pub poll_round_trip_ms: Stats,
    /// Triggers that got no result (refused, or none in time).
    pub missed: u64,
    /// Results that were wrong: an error code (fail-safe), a skipped or repeated ID, no
    /// verdict, a result not for its trigger's frame.
    pub errors: u64,
    /// The first few errors in words.
    pub error_details: Vec<String>,
    /// Timed triggers per second, whole handshakes.
    pub handshakes_per_s: f64,
}

/// One MQTT measurement.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MqttRun {
    /// Results.
    pub results: u64,
    /// From the first result recorded (sustained) or the publisher's start (catch-up) to the
    /// broker's last acknowledgement, s.
    pub seconds: f64,
    /// Results acknowledged by the broker per second.
    pub msgs_per_s: f64,
    /// Sustained: time to record all results, s; catch-up: time to connect, s.
    pub other_s: f64,
    /// Distinct results the subscriber received.
    pub received_distinct: u64,
    /// Result messages the subscriber received (duplicates included).
    pub received_total: u64,
}

/// The MQTT part's results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MqttReport {
    /// The broker.
    pub broker: String,
    /// Publisher running while results are recorded.
    pub sustained: MqttRun,
    /// Results recorded during an outage, then sent.
    pub catch_up: MqttRun,
}

/// Everything measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchIoReport {
    /// None: skipped (`--triggers 0`).
    pub modbus: Option<ModbusReport>,
    /// None: skipped (no `--mqtt`).
    pub mqtt: Option<MqttReport>,
    /// The build the numbers come from ("debug" or "release").
    pub build: String,
}

/// A folder of this run under the temp folder, removed at the end.
struct BenchDir(PathBuf);

impl BenchDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("inspector-bench-io-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parse_size(s: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = s
        .split_once(['x', 'X', '×'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if (8..=8192).contains(&w) && (8..=8192).contains(&h) => Ok((w, h)),
        _ => anyhow::bail!("--size {s:?}: expected WIDTHxHEIGHT, 8 to 8192 each, e.g. 256x256"),
    }
}

/// Runs `inspector bench-io`.
pub fn run(args: BenchIoArgs) -> anyhow::Result<()> {
    let size = parse_size(&args.size)?;
    anyhow::ensure!(
        (1..=60_000).contains(&args.window_ms),
        "--window-ms {}: must be between 1 and 60000",
        args.window_ms
    );
    let mqtt = args
        .mqtt
        .as_deref()
        .map(|u| MqttConfig::parse(u, STATION))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let model_path = args.model.clone().unwrap_or_else(|| bundled(DEFAULT_MODEL));
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let text = !args.json;
    if text {
        println!("bench-io ({build} build)");
    }
    let mut report = BenchIoReport {
        build: build.into(),
        ..BenchIoReport::default()
    };
    if args.triggers > 0 {
        let m = modbus_part(&args, &model_path, size)?;
        if text {
            print_modbus(&m);
        }
        report.modbus = Some(m);
    } else if text {
        println!("Modbus: skipped (--triggers 0)");
    }
    match mqtt {
        Some(config) => {
            let m = mqtt_part(&args, &model_path, config)?;
            if text {
                print_mqtt(&m, args.mqtt_results);
            }
            report.mqtt = Some(m);
        }
        None if text => {
            println!("MQTT: skipped (no --mqtt mqtt://HOST:PORT/PREFIX of a running broker given)")
        }
        None => {}
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    let failed = report
        .modbus
        .as_ref()
        .is_some_and(|m| m.missed > 0 || m.errors > 0);
    anyhow::ensure!(
        !failed,
        "the Modbus handshake missed or got wrong results (see above)"
    );
    Ok(())
}

fn print_modbus(m: &ModbusReport) {
    println!(
        "Modbus: {} timed triggers (after {} untimed), model {}, synthetic {} frames, {}",
        m.triggers, m.warmup, m.model, m.frame, m.adapter
    );
    println!(
        "response window {} ms (fail-safe); PLC polls {}",
        m.window_ms,
        if m.poll_us == 0 {
            "back to back".to_string()
        } else {
            format!("every {} µs", m.poll_us)
        }
    );
    println!(
        "latency   (Trigger edge written → new result read)  {}",
        m.latency_ms.line()
    );
    println!(
        "model     (the engine call for that frame)          {}",
        m.model_ms.line()
    );
    println!(
        "overhead  (latency − model, per trigger)            {}",
        m.overhead_ms.line()
    );
    println!(
        "capture→verdict (in the station, for reference)     {}",
        m.capture_to_verdict_ms.line()
    );
    println!(
        "  of it: capture→verdict − model (frame path)     {}",
        m.around_engine_ms.line()
    );
    println!(
        "  of it: latency − capture→verdict (the rest)     {}",
        m.outside_frame_path_ms.line()
    );
    println!(
        "poll      (one discrete-input read, round trip)    {}",
        m.poll_round_trip_ms.line()
    );
    println!(
        "overhead p99 {:.3} ms: {} the aim of ≤ 2 ms",
        m.overhead_ms.p99,
        if m.overhead_ms.p99 <= 2.0 {
            "within"
        } else {
            "above"
        }
    );
    println!(
        "results: {} missed, {} errors; {:.1} handshakes/s",
        m.missed, m.errors, m.handshakes_per_s
    );
    for e in &m.error_details {
        println!("  error: {e}");
    }
}

fn print_mqtt(m: &MqttReport, results: u64) {
    println!(
        "MQTT: broker {}, {results} results per measurement",
        m.broker
    );
    println!(
        "sustained: {:.0} msgs/s ({} acknowledged in {:.3} s; recording them took {:.3} s); \
         subscriber got {} distinct, {} messages",
        m.sustained.msgs_per_s,
        m.sustained.results,
        m.sustained.seconds,
        m.sustained.other_s,
        m.sustained.received_distinct,
        m.sustained.received_total
    );
    println!(
        "catch-up: {:.0} msgs/s ({} recorded during the outage, acknowledged {:.3} s after the \
         publisher started, {:.3} s of it connecting); subscriber got {} distinct, {} messages",
        m.catch_up.msgs_per_s,
        m.catch_up.results,
        m.catch_up.seconds,
        m.catch_up.other_s,
        m.catch_up.received_distinct,
        m.catch_up.received_total
    );
}

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

fn modbus_part(
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

/// A verdict as the pipeline would report it, for the MQTT part (no engine in the loop):
/// every 20th a FAIL (archived with its small frame, as a reject is).
fn bench_verdict(seq: u64, image: &Arc<DecodedImage>, model: &ModelInfo) -> Verdict {
    let fail = seq.is_multiple_of(20);
    let class_idx = model
        .classes
        .iter()
        .position(|c| model.pass_classes.contains(c) != fail)
        .unwrap_or(0);
    let n = model.classes.len().max(1);
    let mut probabilities = vec![0.0; n];
    probabilities[class_idx.min(n - 1)] = 0.9;
    Verdict {
        seq,
        origin: format!("bench frame {seq}"),
        source: "synthetic".into(),
        timestamp: chrono::Utc::now(),
        fail,
        class: model.classes.get(class_idx).cloned().unwrap_or_default(),
        confidence: 0.9,
        score: if fail { 0.9 } else { 0.1 },
        threshold: model.threshold,
        latency_ms: 0.0,
        engine_ms: 0.0,
        probabilities,
        heatmap: kernels::Heatmap {
            width: 1,
            height: 1,
            class_index: class_idx,
            values: vec![0.5],
        },
        roi: kernels::Roi {
            x: 0,
            y: 0,
            width: image.width,
            height: image.height,
        },
        model_id: model.id.clone(),
        model_hash: model.hash.clone(),
        image: image.clone(),
        display: None,
    }
}

fn with_credentials(mut c: MqttConfig) -> MqttConfig {
    c.username = std::env::var("DI_MQTT_USER").ok();
    c.password = std::env::var("DI_MQTT_PASSWORD").ok();
    c
}

/// Waits until `done` or `within` passes; false on the timeout.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn mqtt_part(
    args: &BenchIoArgs,
    model_path: &Path,
    config: MqttConfig,
) -> anyhow::Result<MqttReport> {
    let m = args.mqtt_results.max(1);
    let (_, info) = pipeline::load_model(model_path).map_err(anyhow::Error::msg)?;
    let dir = BenchDir::new()?;
    let image = Arc::new(DecodedImage {
        data: (0..32 * 32).map(|i| (i % 251) as u8).collect(),
        width: 32,
        height: 32,
        format: kernels::PixelFormat::Gray8,
    });
    let broker = format!(
        "{}://{}:{}/{}",
        if config.tls { "mqtts" } else { "mqtt" },
        config.host,
        config.port,
        config.prefix
    );
    let sustained_cfg = with_credentials(MqttConfig {
        station: format!("{STATION}-sustained"),
        ..config.clone()
    });
    let catch_up_cfg = with_credentials(MqttConfig {
        station: format!("{STATION}-catch-up"),
        ..config.clone()
    });
    let filter = if config.prefix.is_empty() {
        "#".to_string()
    } else {
        format!("{}/#", config.prefix)
    };
    let sub = Subscriber::start(&with_credentials(config.clone()), &filter)?;
    // Allow 1 ms per result beyond a minute before calling the broker stuck.
    let patience = Duration::from_secs(60) + Duration::from_millis(m);

    // Sustained: the publisher runs while the station records.
    let db = dir.0.join("sustained.sqlite");
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let sink = RecorderSink::new(recorder.clone(), &sustained_cfg.station, 0.0);
    let (line, mut sink) = LineStation::start(
        &LineOptions {
            modbus: None,
            triggered: false,
            window: Duration::from_secs(5),
            mqtt: Some(sustained_cfg.clone()),
        },
        Some(sink),
        &info,
        "synthetic",
    )
    .map_err(anyhow::Error::msg)?;
    let publisher = line.mqtt.as_ref().context("no MQTT publisher")?;
    if !wait_until(Duration::from_secs(10), || publisher.status().connected) {
        anyhow::bail!(
            "MQTT: not connected to {broker} within 10 s: {}",
            publisher.status().error.unwrap_or_default()
        );
    }
    if !args.json {
        eprintln!("MQTT: sustained, {m} results…");
    }
    let t0 = Instant::now();
    for k in 1..=m {
        sink.record(&bench_verdict(k, &image, &info))
            .map_err(anyhow::Error::msg)?;
    }
    let recorded_s = t0.elapsed().as_secs_f64();
    let acked = wait_until(patience, || publisher.status().acked >= m);
    let seconds = t0.elapsed().as_secs_f64();
    let got_all = acked;
    let status = publisher.status();
    let left = line.finish(Duration::from_secs(5), || recorder.finish());
    anyhow::ensure!(
        got_all,
        "MQTT sustained: {} of {m} acknowledged within {} s ({})",
        status.acked,
        patience.as_secs(),
        left.unwrap_or_default()
    );
    let topic = sustained_cfg.topic("result");
    sub.wait_for(&topic, m, Duration::from_secs(10));
    let (received_distinct, received_total) = sub.count(&topic);
    let sustained = MqttRun {
        results: m,
        seconds,
        msgs_per_s: m as f64 / seconds,
        other_s: recorded_s,
        received_distinct,
        received_total,
    };

    // Catch-up: recorded while no publisher runs (the outbox fills), then the publisher starts.
    let db = dir.0.join("catch-up.sqlite");
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let store = HistoryResults::new(
        RecorderSink::new(recorder.clone(), &catch_up_cfg.station, 0.0),
        true,
        &info,
        "synthetic",
    );
    let io = LineIo::new(
        &LineConfig {
            triggered: false,
            window: Duration::from_secs(5),
            first_id: 1,
        },
        Some(Box::new(store)),
    );
    let mut sink = io.sink();
    if !args.json {
        eprintln!("MQTT: catch-up, {m} results recorded during the outage…");
    }
    for k in 1..=m {
        sink.record(&bench_verdict(k, &image, &info))
            .map_err(anyhow::Error::msg)?;
    }
    io.stop();
    io.close_store();
    recorder.finish();
    let waiting = Store::open(&db)?.outbox_left()?;
    anyhow::ensure!(
        waiting == m,
        "MQTT catch-up: {waiting} results in the outbox, expected {m}"
    );
    let t0 = Instant::now();
    let publisher = MqttPublisher::start(catch_up_cfg.clone(), &db).map_err(anyhow::Error::msg)?;
    if !wait_until(Duration::from_secs(10), || publisher.status().connected) {
        anyhow::bail!(
            "MQTT: not connected to {broker} within 10 s: {}",
            publisher.status().error.unwrap_or_default()
        );
    }
    let connect_s = t0.elapsed().as_secs_f64();
    let acked = wait_until(patience, || publisher.status().acked >= m);
    let seconds = t0.elapsed().as_secs_f64();
    let status = publisher.status();
    let left = publisher.finish(Duration::from_secs(5));
    anyhow::ensure!(
        acked,
        "MQTT catch-up: {} of {m} acknowledged within {} s ({left} left)",
        status.acked,
        patience.as_secs()
    );
    let topic = catch_up_cfg.topic("result");
    sub.wait_for(&topic, m, Duration::from_secs(10));
    let (received_distinct, received_total) = sub.count(&topic);
    let catch_up = MqttRun {
        results: m,
        seconds,
        msgs_per_s: m as f64 / seconds,
        other_s: connect_s,
        received_distinct,
        received_total,
    };
    sub.stop();
    anyhow::ensure!(
        sustained.received_distinct == m && catch_up.received_distinct == m,
        "MQTT: the subscriber received {} and {} distinct results, expected {m} each",
        sustained.received_distinct,
        catch_up.received_distinct
    );
    Ok(MqttReport {
        broker,
        sustained,
        catch_up,
    })
}

/// Per topic: messages received, and the distinct inspection ids among them.
type Received = HashMap<String, (u64, BTreeSet<i64>)>;

/// A subscriber counting result messages per topic.
struct Subscriber {
    got: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(config: &MqttConfig, filter: &str) -> anyhow::Result<Self> {
        let got: Arc<Mutex<Received>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut o = rumqttc::MqttOptions::new(
            format!("inspector-bench-io-sub-{}", std::process::id()),
            config.host.clone(),
            config.port,
        );
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(true);
        if let Some(u) = &config.username {
            o.set_credentials(u.clone(), config.password.clone().unwrap_or_default());
        }
        if config.tls {
            o.set_transport(rumqttc::Transport::tls_with_default_config());
        }
        let (client, mut conn) = rumqttc::Client::new(o, 1000);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .map_err(|e| anyhow::anyhow!("MQTT subscriber: {e}"))?;
        let (g, s, sub) = (got.clone(), stop.clone(), subscribed.clone());
        let topics = filter.to_string();
        let thread = std::thread::Builder::new()
            .name("bench-io-subscriber".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match conn.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                            let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|v| v.get("inspection_id")?.as_i64());
                            if let (Some(id), Ok(mut g)) = (id, g.lock()) {
                                let e = g.entry(p.topic.clone()).or_default();
                                e.0 += 1;
                                e.1.insert(id);
                            }
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                            sub.store(true, Ordering::SeqCst);
                        }
                        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
                            if sub.load(Ordering::SeqCst) =>
                        {
                            // Reconnected with a clean session: subscribe again.
                            let _ = client.try_subscribe(topics.clone(), rumqttc::QoS::AtLeastOnce);
                        }
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                        _ => {}
                    }
                }
                let _ = client.try_disconnect();
            })?;
        let me = Self {
            got,
            stop,
            thread: Some(thread),
        };
        if !wait_until(Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        }) {
            anyhow::bail!(
                "MQTT subscriber: no subscription to {filter} on {}:{} within 10 s (is the \
                 broker running?)",
                config.host,
                config.port
            );
        }
        Ok(me)
    }

    /// (distinct inspection ids, messages) on `topic`.
    fn count(&self, topic: &str) -> (u64, u64) {
        self.got
            .lock()
            .ok()
            .and_then(|g| g.get(topic).map(|(n, ids)| (ids.len() as u64, *n)))
            .unwrap_or((0, 0))
    }

    fn wait_for(&self, topic: &str, distinct: u64, within: Duration) -> bool {
        wait_until(within, || self.count(topic).0 >= distinct)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentiles() {
        assert_eq!(parse_size("320x200").ok(), Some((320, 200)));
        assert_eq!(parse_size("64×48").ok(), Some((64, 48)));
        assert!(parse_size("0x10").is_err() && parse_size("abc").is_err());
        let s = Stats::of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p50, s.p99, s.max), (51.0, 99.0, 100.0));
    }
}
