//! Line I/O against real counterparts on loopback: tokio-modbus's own TCP client acting as the
//! PLC against the station's Modbus server, and Debian's `mosquitto` broker started by the test
//! for MQTT.
//!
//! Sizes. One lite0-384 inference on lavapipe (no GPU) was measured at 1.7–1.8 s (p50 1.79 s
//! over 8 frames of the demo folder, `inspector inspect --fps 0.4`, on a 2-core machine with a
//! second build running), so the tests that run the real engine are sized to it:
//! [`plc_handshake_on_the_real_engine_verdicts_missed_overrun_reconnect`] judges
//! [`ENGINE_TRIGGERS`] triggers plus the overrun's 9 and a free-run reference pass over the same
//! images, about 50 inferences (1.5 min on lavapipe). `DI_LINE_IO_FULL=1` runs it with 1,000 real
//! triggers: about 30 minutes on lavapipe, seconds on a GPU — for machines that have one.
//!
//! The counts at full size run always, without the engine, on everything else that is
//! real: [`plc_handshake_1000_triggers_at_line_rate`] drives 1,000 triggers through the Modbus
//! server, the triggered source and the history, with a stand-in judge taking 2 ms per frame;
//! [`mqtt_broker_restart_mid_run_loses_nothing`] publishes 1,000 results through the history
//! (the outbox) to a broker that is killed and restarted in the middle. The real engine's path to
//! MQTT is checked by [`last_will_marks_the_station_offline_and_bad_brokers_are_clear`] (the
//! `inspector` binary).
//!
//! Tests that run the engine hold [`engine`] so they do not share the CPU with each other; the
//! others run beside them.
//!
//! Over 800 lines as one test binary: every test here shares the PLC client helpers (`plc`,
//! `di`, `ir`, `wait_di`, `inspect_once`) and the [`engine`] lock, which only serialises tests
//! inside one binary; one binary also links once (about a minute each on the 2-core CI machine).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use inspector::line_station::{LineOptions, LineStation};
use inspector::records::history::{Recorder, RecorderOptions, RecorderSink, Store};
use inspector::records::mqtt::MqttConfig;
use inspector::station::line_io::registers::*;
use inspector::station::line_io::{LineConfig, LineIo, ModbusConfig, ModbusServer};
use inspector::station::pipeline::{self, Event, Pipeline, PipelineOptions, Verdict, VerdictSink};
use inspector::station::source::{CapturedFrame, FrameSource, Pull, SourceSpec};
use inspector::station::trigger::TriggeredSource;
use kernels::Decision;
use tokio_modbus::prelude::*;

#[path = "common/broker.rs"]
mod broker;
use broker::Broker;

fn full() -> bool {
    std::env::var("DI_LINE_IO_FULL").is_ok_and(|v| v == "1")
}

/// Real-engine triggers in the handshake test (1,000 with `DI_LINE_IO_FULL=1`; see the module
/// doc for why not always).
fn engine_triggers() -> usize {
    if full() { 1000 } else { ENGINE_TRIGGERS }
}
const ENGINE_TRIGGERS: usize = 16;

/// The counts, run at full size always (no engine in the loop).
const LINE_RATE_TRIGGERS: usize = 1000;
const MQTT_RESULTS: u64 = 1000;

/// One engine test at a time (two on 2 CPU cores would each take twice as long).
fn engine() -> MutexGuard<'static, ()> {
    static ENGINE: Mutex<()> = Mutex::new(());
    ENGINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo() -> PathBuf {
    repo().join("datasets/magnetic-tile-demo")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The pipeline with a line station in front of it, recording into `db`.
fn start(
    db: &Path,
    source: SourceSpec,
    options: LineOptions,
    limit: Option<u64>,
) -> (LineStation, Pipeline, Recorder) {
    let gpu = kernels::GpuContext::headless().unwrap();
    let model = pipeline::load_model(&repo().join("assets/models/default.safetensors")).unwrap();
    let recorder = Recorder::start(db, RecorderOptions::default()).unwrap();
    let sink = RecorderSink::new(recorder.clone(), "line-test", 0.0);
    let (line, sink) = LineStation::start(&options, Some(sink), &model.1, &source.uri()).unwrap();
    let label = gpu.describe();
    let pipe = Pipeline::start_triggered(
        gpu.device,
        gpu.queue,
        label,
        model,
        source,
        PipelineOptions {
            limit,
            lossless_events: false,
            ..PipelineOptions::default()
        },
        Some(sink),
        Arc::new(|| {}),
        line.trigger(),
    )
    .unwrap();
    (line, pipe, recorder)
}

async fn plc(addr: SocketAddr) -> client::Context {
    tcp::connect_slave(addr, Slave(1)).await.unwrap()
}

async fn di(ctx: &mut client::Context) -> Vec<bool> {
    ctx.read_discrete_inputs(0, DISCRETE_INPUTS)
        .await
        .unwrap()
        .unwrap()
}

async fn ir(ctx: &mut client::Context) -> Vec<u16> {
    ctx.read_input_registers(0, INPUT_REGISTERS)
        .await
        .unwrap()
        .unwrap()
}

async fn wait_di(ctx: &mut client::Context, bit: u16, value: bool, within: Duration) {
    let end = Instant::now() + within;
    while di(ctx).await[bit as usize] != value {
        assert!(
            Instant::now() < end,
            "discrete input {bit} never became {value}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A rising edge of Results Ack, as a PLC acknowledges the result it has read.
async fn acknowledge(ctx: &mut client::Context) {
    for v in [true, false] {
        ctx.write_single_coil(COIL_RESULTS_ACK, v)
            .await
            .unwrap()
            .unwrap();
    }
}

/// One full handshake as a PLC runs it: part number, Trigger up, wait for Trigger Ack, Trigger
/// down, wait for the Inspection ID to change with Results Valid, read, acknowledge.
/// Returns the input registers of the result.
async fn inspect_once(ctx: &mut client::Context, part: u32, last_id: u16, ack: bool) -> Vec<u16> {
    ctx.write_multiple_registers(HR_PART_NUMBER, &[(part >> 16) as u16, part as u16])
        .await
        .unwrap()
        .unwrap();
    wait_di(ctx, DI_READY, true, Duration::from_secs(60)).await;
    ctx.write_single_coil(COIL_TRIGGER, true)
        .await
        .unwrap()
        .unwrap();
    wait_di(ctx, DI_TRIGGER_ACK, true, Duration::from_secs(5)).await;
    ctx.write_single_coil(COIL_TRIGGER, false)
        .await
        .unwrap()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let regs = loop {
        let r = ir(ctx).await;
        if r[IR_INSPECTION_ID as usize] != last_id && r[IR_VERDICT as usize] != 0 {
            break r;
        }
        assert!(Instant::now() < end, "no result after the trigger");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if ack {
        acknowledge(ctx).await;
    }
    regs
}

/// The verdict of the first `images` demo images (in replay order: the ones a triggered run of
/// that many takes), from a free-running replay of the same folder.
fn expected_verdicts(db: &Path, images: usize) -> HashMap<String, bool> {
    let (line, pipe, recorder) = start(
        db,
        SourceSpec::Folder {
            dir: demo(),
            looping: false,
        },
        LineOptions {
            window: Duration::from_secs(60),
            ..LineOptions::default()
        },
        Some(images as u64),
    );
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        match pipe.next_event(Duration::from_secs(60)) {
            Some(Event::Source(pipeline::SourceStatus::Ended(_))) | None => break,
            _ => {}
        }
    }
    drop(pipe);
    line.finish(Duration::ZERO, || recorder.finish());
    // From the history (every verdict is there; events may be dropped when nobody reads them).
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn
        .prepare("SELECT origin, verdict FROM inspections")
        .unwrap();
    let out: HashMap<String, bool> = q
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)? == "fail"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // The demo folder has 24 images; a longer triggered run loops over them.
    assert!(
        out.len() >= images.min(24),
        "the demo replay gave {} verdicts",
        out.len()
    );
    out
}

#[test]
fn plc_handshake_on_the_real_engine_verdicts_missed_overrun_reconnect() {
    let _engine = engine();
    let n = engine_triggers();
    let dir = tempfile::tempdir().unwrap();
    // Every trigger below takes the next image: n, then the overrun's RESULTS_BUFFER + 1.
    let expected = expected_verdicts(&dir.path().join("free-run.sqlite"), n + RESULTS_BUFFER + 1);
    let db = dir.path().join("history.sqlite");
    let (line, pipe, recorder) = start(
        &db,
        SourceSpec::Folder {
            dir: demo(),
            looping: true,
        },
        LineOptions {
            modbus: Some(ModbusConfig {
                listen: local(0),
                unit: 1,
            }),
            triggered: true,
            // lavapipe: the window must hold a CPU inference; the fail-safe has its own test.
            window: Duration::from_secs(30),
            mqtt: None,
        },
        None,
    );
    let addr = line.server.as_ref().unwrap().local_addr();
    let mut seen: Vec<(u16, u16, u32)> = Vec::new();
    rt().block_on(async {
        let mut ctx = plc(addr).await;
        // Disabled: a trigger is missed and gets no result.
        ctx.write_single_coil(COIL_TRIGGER, true)
            .await
            .unwrap()
            .unwrap();
        assert!(di(&mut ctx).await[DI_MISSED_TRIGGER as usize]);
        ctx.write_single_coil(COIL_TRIGGER, false)
            .await
            .unwrap()
            .unwrap();
        ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
            .await
            .unwrap()
            .unwrap();
        let mut last = ir(&mut ctx).await[0];
        for i in 0..n {
            let part = 7_000_000 + i as u32;
            if i == n / 2 {
                // The PLC drops its connection right after a trigger and comes back: the result
                // waits for it.
                ctx.write_single_coil(COIL_TRIGGER, true)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.disconnect().await.unwrap();
                drop(ctx);
                tokio::time::sleep(Duration::from_millis(300)).await;
                ctx = plc(addr).await;
                let end = Instant::now() + Duration::from_secs(60);
                while !di(&mut ctx).await[DI_RESULTS_VALID as usize] {
                    assert!(Instant::now() < end);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let r = ir(&mut ctx).await;
                assert_eq!(
                    r[0],
                    last.wrapping_add(1),
                    "the result survived the reconnect"
                );
                let held = ctx.read_holding_registers(0, 2).await.unwrap().unwrap();
                seen.push((r[0], r[1], (u32::from(held[0]) << 16) | u32::from(held[1])));
                last = r[0];
                ctx.write_single_coil(COIL_TRIGGER, false)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.write_single_coil(COIL_RESULTS_ACK, true)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.write_single_coil(COIL_RESULTS_ACK, false)
                    .await
                    .unwrap()
                    .unwrap();
                continue;
            }
            if i == 3 {
                // A trigger while busy: Missed Trigger, and still one result for the first.
                ctx.write_multiple_registers(0, &[(part >> 16) as u16, part as u16])
                    .await
                    .unwrap()
                    .unwrap();
                wait_di(&mut ctx, DI_READY, true, Duration::from_secs(60)).await;
                ctx.write_single_coil(COIL_TRIGGER, true)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.write_single_coil(COIL_TRIGGER, false)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.write_single_coil(COIL_TRIGGER, true)
                    .await
                    .unwrap()
                    .unwrap();
                let d = di(&mut ctx).await;
                assert!(d[DI_BUSY as usize] || d[DI_RESULTS_VALID as usize]);
                if d[DI_BUSY as usize] {
                    assert!(
                        d[DI_MISSED_TRIGGER as usize],
                        "a trigger while busy is missed"
                    );
                }
                ctx.write_single_coil(COIL_TRIGGER, false)
                    .await
                    .unwrap()
                    .unwrap();
                wait_di(&mut ctx, DI_RESULTS_VALID, true, Duration::from_secs(60)).await;
                let r = ir(&mut ctx).await;
                assert_eq!(r[0], last.wrapping_add(1));
                assert_eq!(
                    r[IR_WAITING as usize], 1,
                    "exactly one result for two edges"
                );
                seen.push((r[0], r[1], part));
                last = r[0];
                ctx.write_single_coil(COIL_RESULTS_ACK, true)
                    .await
                    .unwrap()
                    .unwrap();
                ctx.write_single_coil(COIL_RESULTS_ACK, false)
                    .await
                    .unwrap()
                    .unwrap();
                continue;
            }
            let r = inspect_once(&mut ctx, part, last, true).await;
            assert_eq!(r[0], last.wrapping_add(1), "consecutive inspection IDs");
            assert_eq!(r[IR_ERROR as usize], 0);
            assert!(r[IR_SCORE as usize] <= 1000);
            seen.push((r[0], r[1], part));
            last = r[0];
        }
        // The next accepted trigger cleared Missed Trigger.
        assert!(!di(&mut ctx).await[DI_MISSED_TRIGGER as usize]);
        // Overrun: nine results left unacknowledged.
        for k in 0..(RESULTS_BUFFER + 1) {
            let before = ctx
                .read_input_registers(IR_WAITING, 1)
                .await
                .unwrap()
                .unwrap()[0];
            wait_di(&mut ctx, DI_READY, true, Duration::from_secs(60)).await;
            ctx.write_single_coil(COIL_TRIGGER, true)
                .await
                .unwrap()
                .unwrap();
            ctx.write_single_coil(COIL_TRIGGER, false)
                .await
                .unwrap()
                .unwrap();
            wait_di(&mut ctx, DI_BUSY, false, Duration::from_secs(60)).await;
            let after = ctx
                .read_input_registers(IR_WAITING, 1)
                .await
                .unwrap()
                .unwrap()[0];
            assert_eq!(after, (before + 1).min(RESULTS_BUFFER as u16), "result {k}");
        }
        let d = di(&mut ctx).await;
        assert!(d[DI_OVERRUN as usize] && d[DI_RESULTS_VALID as usize]);
        for k in 0..RESULTS_BUFFER {
            let r = ir(&mut ctx).await;
            assert_eq!(r[0], last.wrapping_add(1), "buffered result {k} in order");
            last = r[0];
            ctx.write_single_coil(COIL_RESULTS_ACK, true)
                .await
                .unwrap()
                .unwrap();
            ctx.write_single_coil(COIL_RESULTS_ACK, false)
                .await
                .unwrap()
                .unwrap();
        }
        let d = di(&mut ctx).await;
        assert!(!d[DI_OVERRUN as usize] && !d[DI_RESULTS_VALID as usize]);
    });
    let status = line.io.status();
    assert_eq!(status.results as usize, n + RESULTS_BUFFER + 1);
    assert_eq!(status.overruns, 1);
    drop(pipe);
    line.finish(Duration::ZERO, || recorder.finish());

    // The history: one row per result, consecutive numbers, the PLC's part numbers, and the
    // verdict the PLC saw is the demo image's verdict.
    let store = Store::open(&db).unwrap();
    let rows = store.line_results().unwrap();
    assert_eq!(rows.len(), n + RESULTS_BUFFER + 1);
    for w in rows.windows(2) {
        assert_eq!(w[1].inspection_id, w[0].inspection_id + 1);
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (k, (id, verdict, part)) in seen.iter().enumerate() {
        let row = &rows[k];
        assert_eq!(row.inspection_id as u16, *id);
        assert_eq!(row.part_number, Some(*part), "part number of result {k}");
        assert_eq!(row.error_code, 0);
        let (origin, stored): (String, String) = conn
            .query_row(
                "SELECT origin, verdict FROM inspections WHERE run_id = ?1 AND seq = ?2",
                rusqlite::params![row.run_id, row.seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let want_fail = expected[&origin];
        assert_eq!(*verdict, if want_fail { 2 } else { 1 }, "{origin}");
        assert_eq!(stored == "fail", want_fail, "{origin}");
    }
}

#[test]
fn fail_safe_answers_unreadable_stalled_and_ended_and_counts_once() {
    let _engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("a-corrupt.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let good = std::fs::read_dir(demo().join("MT_Free/Imgs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .unwrap();
    std::fs::copy(
        &good,
        images.join(format!(
            "b-good.{}",
            good.extension().unwrap().to_string_lossy()
        )),
    )
    .unwrap();
    let db = dir.path().join("history.sqlite");
    let (line, pipe, recorder) = start(
        &db,
        SourceSpec::Folder {
            dir: images,
            looping: false,
        },
        LineOptions {
            modbus: Some(ModbusConfig {
                listen: local(0),
                unit: 1,
            }),
            triggered: true,
            // Set per phase below.
            window: Duration::from_secs(30),
            mqtt: None,
        },
        None,
    );
    let addr = line.server.as_ref().unwrap().local_addr();
    rt().block_on(async {
        let mut ctx = plc(addr).await;
        ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
            .await
            .unwrap()
            .unwrap();
        let mut last = ir(&mut ctx).await[0];
        // An unreadable image, a stalled engine, the end of the replay: each a FAIL with its code.
        for (k, code) in [
            ErrorCode::UnreadableImage,
            ErrorCode::NoVerdictInTime,
            ErrorCode::SourceLost,
        ]
        .into_iter()
        .enumerate()
        {
            // The stall: a window long enough for the capture thread to take the trigger and
            // the image, far shorter than one inference of this model (≥ 100 ms on lavapipe,
            // checked below from the engine's own time).
            line.io.set_window(if code == ErrorCode::NoVerdictInTime {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(30)
            });
            let t = Instant::now();
            let r = inspect_once(&mut ctx, k as u32, last, true).await;
            assert_eq!(r[IR_VERDICT as usize], verdict::FAIL, "{code:?}");
            assert_eq!(r[IR_ERROR as usize], code as u16);
            assert_eq!(r[0], last.wrapping_add(1));
            assert!(t.elapsed() < Duration::from_secs(5));
            last = r[0];
            if code == ErrorCode::NoVerdictInTime {
                // The late verdict comes and is not a second result.
                let end = Instant::now() + Duration::from_secs(120);
                while pipe.counters().inspected == 0 {
                    assert!(Instant::now() < end, "the stalled verdict never came");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let took = pipe.counters().latencies_ms.back().copied().unwrap();
                assert!(took > 50.0, "the verdict took {took} ms: not a stall");
                std::thread::sleep(Duration::from_millis(100));
                let r = ir(&mut ctx).await;
                assert_eq!((r[0], r[IR_WAITING as usize]), (last, 0));
            }
        }
        // Nothing left to judge: not ready, a trigger is missed (no silent success).
        let d = di(&mut ctx).await;
        assert!(!d[DI_READY as usize] && !d[DI_SOURCE_LIVE as usize] && d[DI_ERROR as usize]);
        ctx.write_single_coil(COIL_TRIGGER, true)
            .await
            .unwrap()
            .unwrap();
        assert!(di(&mut ctx).await[DI_MISSED_TRIGGER as usize]);
        // The registers are still served.
        assert_eq!(ir(&mut ctx).await[0], last);
    });
    drop(pipe);
    line.finish(Duration::ZERO, || recorder.finish());
    let store = Store::open(&db).unwrap();
    let rows = store.line_results().unwrap();
    assert_eq!(
        rows.iter().map(|r| r.error_code).collect::<Vec<_>>(),
        vec![4, 1, 2],
        "three results, the late verdict not among them"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (inspections, fails, late): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM inspections),
                    (SELECT COUNT(*) FROM inspections WHERE verdict = 'fail'),
                    (SELECT COUNT(*) FROM events WHERE kind = 'late_verdict')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((inspections, fails, late), (3, 3, 1));
    let class: String = conn
        .query_row(
            "SELECT class FROM inspections i JOIN line_results l ON i.run_id = l.run_id AND i.seq = l.seq WHERE l.error_code = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(class, "no verdict in time");
}

#[test]
fn bad_modbus_requests_get_exception_codes_and_the_server_keeps_serving() {
    let io = LineIo::new(&LineConfig::default(), None);
    let server = ModbusServer::start(
        &io,
        &ModbusConfig {
            listen: local(0),
            unit: 1,
        },
    )
    .unwrap();
    let addr = server.local_addr();
    // A port in use is a clear error.
    let err = ModbusServer::start(
        &io,
        &ModbusConfig {
            listen: addr,
            unit: 1,
        },
    )
    .err()
    .unwrap();
    assert!(
        err.contains("cannot listen on") && err.contains(&addr.to_string()),
        "{err}"
    );
    rt().block_on(async {
        let mut ctx = plc(addr).await;
        assert_eq!(
            ctx.read_input_registers(INPUT_REGISTERS, 1).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ctx.read_coils(0, COILS + 1).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ctx.write_single_register(HR_PART_NUMBER + 2, 1)
                .await
                .unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ctx.write_single_coil(COILS, true).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        // Input registers and discrete inputs have no write function; other functions are
        // refused as such.
        assert_eq!(
            ctx.call(Request::MaskWriteRegister(0, 0xffff, 0))
                .await
                .unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            ctx.call(Request::Custom(0x41, vec![1, 2, 3].into()))
                .await
                .unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        // Another unit id.
        ctx.set_slave(Slave(9));
        assert_eq!(
            ctx.read_coils(0, 1).await.unwrap(),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        ctx.set_slave(Slave(1));
        assert_eq!(ctx.read_coils(0, 3).await.unwrap(), Ok(vec![false; 3]));
    });
    // Raw garbage and a truncated frame close that connection only.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0, 1, 0, 0, 0, 6, 1, 3][..],
    ] {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(junk).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    rt().block_on(async {
        let mut ctx = plc(addr).await;
        assert_eq!(
            ctx.read_discrete_inputs(0, DISCRETE_INPUTS)
                .await
                .unwrap()
                .map(|v| v.len()),
            Ok(DISCRETE_INPUTS as usize)
        );
    });
    drop(server);
    io.stop();
}

/// A subscriber with a persistent session that collects (topic, payload) of `filter`.
#[allow(clippy::type_complexity)]
fn subscribe(
    port: u16,
    id: &str,
    filter: &str,
) -> (
    Arc<Mutex<Vec<(String, String)>>>,
    std::thread::JoinHandle<()>,
    Arc<AtomicBool>,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (g, s, filter, id) = (
        got.clone(),
        stop.clone(),
        filter.to_string(),
        id.to_string(),
    );
    let subscribed = Arc::new(AtomicBool::new(false));
    let sub2 = subscribed.clone();
    let t = std::thread::spawn(move || {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        client
            .subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce)
            .unwrap();
        while !s.load(Ordering::SeqCst) {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                    g.lock().unwrap().push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ));
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                    sub2.store(true, Ordering::SeqCst);
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))))
                    if !a.session_present =>
                {
                    let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                _ => {}
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(10);
    while !subscribed.load(Ordering::SeqCst) {
        assert!(Instant::now() < end, "the test subscriber never subscribed");
        std::thread::sleep(Duration::from_millis(10));
    }
    (got, t, stop)
}

/// The stand-in's decision on synthetic frame `n`: FAIL for every third frame, REVIEW for
/// every fifth of the others, PASS for the rest, so a result shows which frame it judged.
fn stand_in_decision(n: u64) -> Decision {
    if n % 3 == 0 {
        Decision::Fail
    } else if n % 5 == 0 {
        Decision::Review
    } else {
        Decision::Pass
    }
}

/// The register value of a decision.
fn register_of(d: Decision) -> u16 {
    match d {
        Decision::Pass => verdict::PASS,
        Decision::Review => verdict::REVIEW,
        Decision::Fail => verdict::FAIL,
    }
}

/// A stand-in for the engine's verdict on `frame` (the engine itself is tested elsewhere),
/// decided by [`stand_in_decision`].
fn stand_in_verdict(frame: &CapturedFrame, seq: u64) -> Verdict {
    let n: u64 = frame.origin.trim_start_matches("frame ").parse().unwrap();
    let decision = stand_in_decision(n);
    let fail = decision != Decision::Pass;
    Verdict {
        seq,
        origin: frame.origin.clone(),
        source: "synthetic".into(),
        timestamp: frame.timestamp,
        decision,
        class: if fail { "Crack" } else { "Free" }.into(),
        confidence: 0.9,
        score: match decision {
            Decision::Fail => 0.9,
            Decision::Review => 0.4,
            Decision::Pass => 0.1,
        },
        threshold: 0.5,
        pass_threshold: Some(0.3),
        latency_ms: 2.0,
        engine_ms: 2.0,
        probabilities: if fail { vec![0.1, 0.9] } else { vec![0.9, 0.1] },
        heatmap: kernels::Heatmap {
            width: 1,
            height: 1,
            class_index: 1,
            values: vec![0.5],
        },
        roi: kernels::Roi {
            x: 0,
            y: 0,
            width: frame.image.width,
            height: frame.image.height,
        },
        model_id: "stand-in@0".into(),
        model_hash: "0".into(),
        image: frame.image.clone(),
        display: None,
    }
}

/// The frame number in a stand-in verdict's origin ("frame N").
fn frame_number(origin: &str) -> u64 {
    origin.trim_start_matches("frame ").parse().unwrap()
}

/// A line station without the engine: `LineStation` as `inspector inspect` starts it, recording
/// into `db`, with its sink returned for a stand-in judge.
fn station_without_engine(
    db: &Path,
    options: LineOptions,
) -> (LineStation, Box<dyn VerdictSink>, Recorder) {
    let model = pipeline::load_model(&repo().join("assets/models/default.safetensors")).unwrap();
    let recorder = Recorder::start(db, RecorderOptions::default()).unwrap();
    let sink = RecorderSink::new(recorder.clone(), "line-test", 0.0);
    let (line, sink) = LineStation::start(&options, Some(sink), &model.1, "synthetic").unwrap();
    (line, sink, recorder)
}

#[test]
fn plc_handshake_1000_triggers_at_line_rate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let (line, mut sink, recorder) = station_without_engine(
        &db,
        LineOptions {
            modbus: Some(ModbusConfig {
                listen: local(0),
                unit: 1,
            }),
            triggered: true,
            window: Duration::from_secs(5),
            mqtt: None,
        },
    );
    // The capture side as the pipeline runs it (a stored source behind the trigger), and a judge
    // taking 2 ms per frame.
    let stop = Arc::new(AtomicBool::new(false));
    let (trigger, stop2) = (line.trigger().unwrap(), stop.clone());
    let judge = std::thread::spawn(move || {
        let spec = SourceSpec::Synthetic {
            size: (32, 32),
            seed: 5,
        };
        let mut source = TriggeredSource::new(spec.open().unwrap(), trigger, false, stop2.clone());
        let mut seq = 0;
        while !stop2.load(Ordering::SeqCst) {
            if let Pull::Frame(f) = source.pull() {
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
                sink.record(&stand_in_verdict(&f, seq)).unwrap();
            }
        }
    });
    let addr = line.server.as_ref().unwrap().local_addr();
    let started = Instant::now();
    rt().block_on(async {
        let mut ctx = plc(addr).await;
        ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
            .await
            .unwrap()
            .unwrap();
        let mut last = ir(&mut ctx).await[0];
        for i in 1..=LINE_RATE_TRIGGERS {
            if i % 250 == 0 {
                // The PLC reconnects now and then; nothing is lost.
                ctx.disconnect().await.unwrap();
                ctx = plc(addr).await;
            }
            let part = 0x0102_0000 + i as u32;
            let r = inspect_once(&mut ctx, part, last, true).await;
            assert_eq!(r[0], last.wrapping_add(1), "consecutive inspection IDs");
            // The i-th trigger judged the i-th frame: every third one FAIL, REVIEW (3) for
            // every fifth of the others.
            let want = register_of(stand_in_decision(i as u64));
            assert_eq!(r[IR_VERDICT as usize], want, "trigger {i}");
            assert_eq!(r[IR_ERROR as usize], 0);
            assert_eq!(r[IR_WAITING as usize], 1);
            last = r[0];
        }
        let d = di(&mut ctx).await;
        assert!(!d[DI_MISSED_TRIGGER as usize] && !d[DI_OVERRUN as usize]);
        assert!(d[DI_READY as usize] && !d[DI_RESULTS_VALID as usize]);
    });
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    judge.join().unwrap();
    let status = line.io.status();
    assert_eq!(
        (status.results, status.missed, status.fail_safe),
        (LINE_RATE_TRIGGERS as u64, 0, 0)
    );
    line.finish(Duration::ZERO, || recorder.finish());
    eprintln!(
        "{LINE_RATE_TRIGGERS} triggers in {:.1} s ({:.1} ms per handshake, 2 ms of it the judge)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / LINE_RATE_TRIGGERS as f64
    );
    // The history: one row per trigger, consecutive numbers, the PLC's part number, the frame.
    let store = Store::open(&db).unwrap();
    let rows = store.line_results().unwrap();
    assert_eq!(rows.len(), LINE_RATE_TRIGGERS);
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (k, row) in rows.iter().enumerate() {
        let i = k as u64 + 1;
        assert_eq!(row.inspection_id, i);
        assert_eq!(row.part_number, Some(0x0102_0000 + i as u32));
        let origin: String = conn
            .query_row(
                "SELECT origin FROM inspections WHERE run_id = ?1 AND seq = ?2",
                rusqlite::params![row.run_id, row.seq as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(frame_number(&origin), i, "trigger {i} judged {origin}");
    }
}

#[test]
fn mqtt_broker_restart_mid_run_loses_nothing() {
    let mut broker = Broker::start();
    let (got, sub, stop_sub) = subscribe(broker.port, "test-sub", "plant/line-test/result");
    std::thread::sleep(Duration::from_millis(1500)); // the session is saved (autosave 1 s)
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let mqtt = MqttConfig::parse(
        &format!("mqtt://127.0.0.1:{}/plant", broker.port),
        "line-test",
    )
    .unwrap();
    // Free-run: every verdict is a result, published from the history.
    let (line, mut sink, recorder) = station_without_engine(
        &db,
        LineOptions {
            window: Duration::from_millis(200),
            mqtt: Some(mqtt),
            ..LineOptions::default()
        },
    );
    let mut source = SourceSpec::Synthetic {
        size: (32, 32),
        seed: 3,
    }
    .open()
    .unwrap();
    let mut seq = 0;
    let mut judge = |count: u64| {
        for _ in 0..count {
            let Pull::Frame(f) = source.pull() else {
                panic!("the synthetic source always gives a frame")
            };
            seq += 1;
            sink.record(&stand_in_verdict(&f, seq)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let publisher = |line: &LineStation| line.mqtt.as_ref().unwrap().status();
    let wait_acked = |line: &LineStation, n: u64| {
        let end = Instant::now() + Duration::from_secs(60);
        while publisher(line).acked < n {
            assert!(
                Instant::now() < end,
                "the broker acknowledged {:?}",
                publisher(line)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let third = MQTT_RESULTS / 3;
    judge(third);
    wait_acked(&line, third / 2);
    // Killed mid-run, while the station is publishing.
    broker.stop();
    judge(third);
    // The station keeps inspecting; nothing is published; results wait in the history.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!publisher(&line).connected);
    let store = Store::open(&db).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while store.outbox_left().unwrap() < third {
        assert!(
            Instant::now() < end,
            "{} results wait for the broker",
            store.outbox_left().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(store);
    broker.restart();
    judge(MQTT_RESULTS - 2 * third);
    wait_acked(&line, 1);
    let msg = line
        .finish(Duration::from_secs(30), || recorder.finish())
        .unwrap();
    assert!(msg.contains("every result was acknowledged"), "{msg}");
    let id_of = |p: &str| {
        serde_json::from_str::<serde_json::Value>(p).unwrap()["inspection_id"]
            .as_u64()
            .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(30);
    let ids = loop {
        let ids: BTreeSet<u64> = got.lock().unwrap().iter().map(|(_, p)| id_of(p)).collect();
        if ids.len() as u64 >= MQTT_RESULTS || Instant::now() > end {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_sub.store(true, Ordering::SeqCst);
    sub.join().unwrap();
    assert_eq!(
        ids,
        (1..=MQTT_RESULTS).collect::<BTreeSet<_>>(),
        "every inspection ID arrived"
    );
    // Each message is the same bytes every time it is sent, and says what it judged.
    let all = got.lock().unwrap().clone();
    let mut by_id: HashMap<u64, String> = HashMap::new();
    for (_, p) in &all {
        let id = id_of(p);
        if let Some(prev) = by_id.insert(id, p.clone()) {
            assert_eq!(&prev, p, "a re-sent message differs");
        }
        let m: serde_json::Value = serde_json::from_str(p).unwrap();
        assert_eq!(m["verdict"], stand_in_decision(id).as_str(), "{p}");
        assert_eq!(m["station"], "line-test");
        assert_eq!(m["error_code"], 0);
    }
    eprintln!(
        "{} messages for {} results ({} re-sent after the restart)",
        all.len(),
        MQTT_RESULTS,
        all.len() as u64 - MQTT_RESULTS
    );
    assert_eq!(Store::open(&db).unwrap().outbox_left().unwrap(), 0);
}

#[test]
fn last_will_marks_the_station_offline_and_bad_brokers_are_clear() {
    let _engine = engine();
    let broker = Broker::start();
    let (got, sub, stop_sub) = subscribe(broker.port, "test-status", "plant/lw/#");
    let dir = tempfile::tempdir().unwrap();
    // Free-run with the register map served (`--modbus`): every frame judged, no trigger.
    let modbus_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .args([
            "inspect",
            "--source",
            "synthetic",
            "--fps",
            "5",
            "--station",
            "lw",
        ])
        .arg("--modbus")
        .arg(format!("127.0.0.1:{modbus_port}"))
        .arg("--db")
        .arg(dir.path().join("h.sqlite"))
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{}/plant", broker.port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |want: &str| {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let status = got
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(t, _)| t == "plant/lw/status")
                .map(|(_, p)| p.clone());
            if status.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < end,
                "status never became {want}: {:?}",
                got.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("online");
    // The real engine's verdicts arrive as result messages, numbered from 1.
    let end = Instant::now() + Duration::from_secs(120);
    let results = loop {
        let r: Vec<serde_json::Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == "plant/lw/result")
            .map(|(_, p)| serde_json::from_str(p).unwrap())
            .collect();
        if r.len() >= 2 {
            break r;
        }
        assert!(
            Instant::now() < end,
            "no result messages: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(results[0]["inspection_id"], 1);
    assert_eq!(results[1]["inspection_id"], 2);
    for m in &results {
        assert!(m["verdict"] == "pass" || m["verdict"] == "fail", "{m}");
        assert!(m["model"].as_str().unwrap().starts_with("lite0"), "{m}");
        assert_eq!(m["station"], "lw");
    }
    // The PLC reads the results without triggering: new inspection IDs with a verdict, and a
    // trigger is refused (Missed Trigger) in free-run.
    rt().block_on(async {
        let mut ctx = plc(local(modbus_port)).await;
        let first = ir(&mut ctx).await;
        assert!(first[IR_INSPECTION_ID as usize] >= 1, "{first:?}");
        assert!(
            [verdict::PASS, verdict::REVIEW, verdict::FAIL].contains(&first[IR_VERDICT as usize]),
            "{first:?}"
        );
        acknowledge(&mut ctx).await;
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let r = ir(&mut ctx).await;
            if r[IR_INSPECTION_ID as usize] != first[IR_INSPECTION_ID as usize]
                && r[IR_VERDICT as usize] != 0
            {
                break;
            }
            assert!(Instant::now() < end, "no new result in free-run: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
            .await
            .unwrap()
            .unwrap();
        ctx.write_single_coil(COIL_TRIGGER, true)
            .await
            .unwrap()
            .unwrap();
        assert!(
            di(&mut ctx).await[DI_MISSED_TRIGGER as usize],
            "a trigger in free-run is missed"
        );
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_for("offline");
    stop_sub.store(true, std::sync::atomic::Ordering::SeqCst);
    sub.join().unwrap();

    // A malformed broker URL or MQTT without a database: a clear message, exit code 1.
    for (args, want) in [
        (vec!["--mqtt", "http://x/y"], "mqtt://"),
        (
            vec!["--mqtt", "mqtt://127.0.0.1:notaport/p"],
            "not a number",
        ),
        (vec!["--mqtt", "mqtt://127.0.0.1:1/p"], "give --db"),
        (vec!["--trigger", "modbus:nowhere"], "ADDRESS:PORT"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_inspector"))
            .args(["inspect", "--source", "synthetic", "--limit", "1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // An unreachable broker: the station keeps inspecting and says why nothing is published.
    let out = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .args(["inspect", "--source", "synthetic", "--limit", "3", "--json"])
        .arg("--db")
        .arg(dir.path().join("u.sqlite"))
        .args(["--mqtt", "mqtt://127.0.0.1:1/plant"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains("\"verdict\"")).count(),
        3
    );
    assert!(
        stderr.contains("3 results not yet acknowledged"),
        "{stderr}"
    );
}

/// A source lost in a headless station is said to the plant: the retained status becomes
/// "no signal" and an alarm goes out on the alarm topic (a folder renamed mid-replay).
#[test]
fn a_lost_source_sets_no_signal_and_sends_an_alarm() {
    let _engine = engine();
    let broker = Broker::start();
    let (got, sub, stop_sub) = subscribe(broker.port, "test-lost", "plant/lost/#");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("line");
    std::fs::create_dir(&images).unwrap();
    for i in 0..60 {
        image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([((x * 3 + y * (i + 1)) & 0xff) as u8])
        })
        .save(images.join(format!("part{i:03}.png")))
        .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .args(["inspect", "--fps", "4", "--station", "lost", "--source"])
        .arg(format!("folder:{}", images.display()))
        .arg("--db")
        .arg(dir.path().join("h.sqlite"))
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{}/plant", broker.port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = |topic: &str, payload: Option<&str>| {
        got.lock()
            .unwrap()
            .iter()
            .any(|(t, p)| t == topic && payload.is_none_or(|want| p == want))
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < end, "{what}: {:?}", got.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("no result before the folder went", &|| {
        seen("plant/lost/result", None)
    });
    std::fs::rename(&images, dir.path().join("gone")).unwrap();
    wait("no \"no signal\" status", &|| {
        seen("plant/lost/status", Some("no signal"))
    });
    wait("no alarm", &|| {
        got.lock()
            .unwrap()
            .iter()
            .any(|(t, p)| t == "plant/lost/alarm" && p.contains("source lost"))
    });
    child.kill().unwrap();
    let _ = child.wait();
    stop_sub.store(true, Ordering::SeqCst);
    sub.join().unwrap();
}
