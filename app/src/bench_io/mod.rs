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

mod modbus;
mod mqtt;

use std::collections::{BTreeSet, HashMap};
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
use crate::station::line_io::{LineConfig, LineIo};
use crate::station::pipeline::{self, ModelInfo, Verdict, VerdictSink};
use modbus::modbus_part;
use mqtt::mqtt_part;

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
