//! Line I/O in the app (issue 20): Settings › Line I/O starts the Modbus server with the
//! station; a real Modbus client acting as the PLC triggers it and gets exactly one result per
//! trigger; the Inspect tab shows the PLC and the broker at a glance; a PLC that goes away is
//! an alarm; an unreachable broker is said while inspection goes on; Settings applies a change
//! by restarting the station on the new port; a real broker (mosquitto) is shown connected,
//! "Test connection" reaches it, and losing it does not stop inspection.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable as _;
use inspector::records::settings::{LineSettings, Settings};
use inspector::station::line_io::registers::*;
use inspector::ui::Tab;
use tokio_modbus::prelude::*;

mod common;
use common::step_until;
#[path = "common/broker.rs"]
mod broker;
use broker::Broker;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

enum Plc {
    /// Inspection IDs and verdicts of the results, one per trigger.
    Results(Vec<(u16, u16)>),
}

/// A PLC on its own thread: enables triggering, runs `triggers` full handshakes, reports the
/// results, keeps polling every 20 ms until `hang_up` says so, then closes its connection.
fn plc(
    addr: SocketAddr,
    triggers: usize,
    hang_up: crossbeam_channel::Receiver<()>,
) -> crossbeam_channel::Receiver<Plc> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();
            ctx.write_single_coil(COIL_TRIGGER_ENABLE, true)
                .await
                .unwrap()
                .unwrap();
            let read_ir = |r: Result<Result<Vec<u16>, _>, _>| r.unwrap().unwrap();
            let mut last = read_ir(ctx.read_input_registers(0, INPUT_REGISTERS).await)[0];
            let mut results = Vec::new();
            for _ in 0..triggers {
                let end = Instant::now() + Duration::from_secs(120);
                while !ctx
                    .read_discrete_inputs(0, DISCRETE_INPUTS)
                    .await
                    .unwrap()
                    .unwrap()[DI_READY as usize]
                {
                    assert!(Instant::now() < end, "the station never became Ready");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ctx.write_single_coil(COIL_TRIGGER, true)
                    .await
                    .unwrap()
                    .unwrap();
                let regs = loop {
                    let r = read_ir(ctx.read_input_registers(0, INPUT_REGISTERS).await);
                    if r[IR_INSPECTION_ID as usize] != last {
                        break r;
                    }
                    assert!(Instant::now() < end, "no result for the trigger");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                last = regs[IR_INSPECTION_ID as usize];
                results.push((last, regs[IR_VERDICT as usize]));
                for (coil, v) in [
                    (COIL_TRIGGER, false),
                    (COIL_RESULTS_ACK, true),
                    (COIL_RESULTS_ACK, false),
                ] {
                    ctx.write_single_coil(coil, v).await.unwrap().unwrap();
                }
            }
            tx.send(Plc::Results(results)).unwrap();
            while hang_up.try_recv().is_err() {
                let _ = ctx.read_discrete_inputs(0, DISCRETE_INPUTS).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = ctx.disconnect().await;
        });
    });
    rx
}

#[test]
fn a_plc_triggers_the_app_one_result_each_and_losing_it_is_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, dead_broker) = (free_port(), free_port());
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        replay_fps: 20.0,
        alarm_consecutive_fails: 0,
        line: LineSettings {
            modbus: true,
            triggered: true,
            listen: format!("127.0.0.1:{port}"),
            // Inference on lavapipe can take seconds under load: no fail-safe here.
            window_ms: 30_000,
            mqtt_url: format!("mqtt://127.0.0.1:{dead_broker}/plant"),
            ..LineSettings::default()
        },
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.line.is_some()),
        "the line I/O did not start: {:?}",
        h.state().line_error
    );
    h.run_steps(2);
    assert!(h.query_by_label("PLC not connected").is_some());
    assert!(
        h.query_by_label("Broker not connected").is_some(),
        "an unreachable broker is shown"
    );
    // Triggered: nothing is judged without a trigger.
    std::thread::sleep(Duration::from_millis(1500));
    h.run_steps(2);
    assert_eq!(h.state().counters.inspected, 0, "judged without a trigger");

    let (hang_up, hung) = crossbeam_channel::bounded(1);
    let results = plc(SocketAddr::from(([127, 0, 0, 1], port)), 3, hung);
    let mut got = None;
    let end = Instant::now() + Duration::from_secs(300);
    while got.is_none() {
        assert!(Instant::now() < end, "the PLC got no results");
        h.step();
        if let Ok(Plc::Results(r)) = results.try_recv() {
            got = Some(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = got.unwrap();
    assert_eq!(got.len(), 3);
    assert!(
        got.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)),
        "consecutive inspection IDs: {got:?}"
    );
    assert!(got.iter().all(|(_, v)| (1..=3).contains(v)), "{got:?}");
    assert!(step_until(&mut h, Duration::from_secs(10), |a| a
        .counters
        .inspected
        == 3));
    h.run_steps(2);
    assert!(
        h.query_by_label("PLC connected").is_some(),
        "the PLC is shown connected"
    );
    assert!(h.state().alarm.is_none());
    // Exactly one result per trigger: nothing more while the PLC only polls.
    std::thread::sleep(Duration::from_millis(1000));
    h.run_steps(2);
    assert_eq!(h.state().counters.inspected, 3);

    // The PLC goes away: an alarm, and the Inspect tab says so.
    hang_up.send(()).unwrap();
    assert!(
        step_until(&mut h, Duration::from_secs(20), |a| a
            .alarm
            .as_ref()
            .is_some_and(|al| al.text.contains("PLC connection lost"))),
        "no alarm for the lost PLC: {:?}",
        h.state().alarm.as_ref().map(|a| a.text.clone())
    );
    h.run_steps(2);
    assert!(h.query_by_label("PLC LOST").is_some());

    // Settings › Line I/O: another port, applied, restarts the server there.
    let port2 = free_port();
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    assert!(
        h.query_by_label("Register map (for the PLC program)")
            .is_some()
    );
    common::type_into(&mut h, "Listen on", &format!("127.0.0.1:{port2}"));
    h.get_by_label("Apply (restarts inspection with this line I/O)")
        .click();
    h.step();
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .line
            .as_ref()
            .and_then(|l| l.server.as_ref())
            .is_some_and(|s| s.local_addr().port() == port2)),
        "the server did not move to the new port: {:?}",
        h.state().line_error
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port2)).is_ok());
}

/// With a real broker (mosquitto): the Inspect tab shows it connected and counts the results
/// it acknowledged; Settings' "Test connection" says it connected; when the broker goes away
/// the tab says so and inspection goes on.
#[test]
fn the_broker_state_is_shown_tested_and_its_loss_does_not_stop_inspection() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        replay_fps: 20.0,
        alarm_consecutive_fails: 0,
        line: LineSettings {
            mqtt_url: format!("mqtt://127.0.0.1:{}/plant", broker.port),
            ..LineSettings::default()
        },
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    let acked = |a: &inspector::ui::InspectorApp| {
        a.line
            .as_ref()
            .and_then(|l| l.mqtt.as_ref())
            .map(|m| m.status())
            .filter(|s| s.connected)
            .map(|s| s.acked)
    };
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| acked(a)
            .is_some_and(|n| n >= 2)),
        "the broker acknowledged no results: {:?}",
        h.state().line_error
    );
    h.run_steps(2);
    assert!(h.query_by_label("Broker connected").is_some());
    assert!(
        h.query_by_label("PLC not connected").is_none(),
        "no Modbus asked for"
    );

    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    h.get_by_label("Test connection").click();
    let said = format!("connected to the broker 127.0.0.1:{}", broker.port);
    let end = Instant::now() + Duration::from_secs(20);
    while h.query_by_label(&said).is_none() {
        assert!(
            Instant::now() < end,
            "Test connection said nothing like {said:?}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }

    drop(broker);
    h.state_mut().tab = Tab::Inspect;
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| acked(a).is_none()),
        "the lost broker is not shown"
    );
    let seen = h.state().counters.inspected;
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= seen + 2),
        "inspection stopped with the broker"
    );
    h.run_steps(2);
    assert!(h.query_by_label("Broker not connected").is_some());
}
