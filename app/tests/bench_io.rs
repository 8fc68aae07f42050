//! `inspector bench-io` end to end, small: 20 timed triggers through the real station (the
//! engine on lavapipe where there is no GPU) and 200 results per MQTT measurement to a
//! `mosquitto` started on a free loopback port. Checks that the report parses, every trigger
//! got its result and every result reached the broker and a subscriber.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

#[path = "common/broker.rs"]
mod broker;
use broker::Broker;

#[test]
fn bench_io_small_reports_every_result() {
    let broker = Broker::start();
    let out = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .env("RUST_LOG", "warn")
        .args([
            "bench-io",
            "--triggers",
            "20",
            "--warmup",
            "1",
            "--size",
            "64x48",
            "--mqtt-results",
            "200",
            "--json",
            "--mqtt",
        ])
        .arg(format!("mqtt://127.0.0.1:{}/bench-test", broker.port))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    let m = &r["modbus"];
    assert_eq!(m["triggers"], 20, "{r}");
    assert_eq!(m["missed"], 0, "{r}");
    assert_eq!(m["errors"], 0, "{r}");
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let (lat, model, over) = (&m["latency_ms"], &m["model_ms"], &m["overhead_ms"]);
    for s in [lat, model, over] {
        assert!(
            f(&s["p50"]) <= f(&s["p99"]) && f(&s["p99"]) <= f(&s["max"]),
            "{r}"
        );
    }
    // The PLC sees a result after the model judged its frame.
    assert!(f(&lat["p50"]) > 0.0 && f(&model["p50"]) > 0.0, "{r}");
    assert!(f(&lat["max"]) >= f(&model["p50"]), "{r}");
    for part in ["sustained", "catch_up"] {
        let p = &r["mqtt"][part];
        assert_eq!(p["results"], 200, "{r}");
        assert_eq!(p["received_distinct"], 200, "{r}");
        assert!(f(&p["msgs_per_s"]) > 0.0, "{r}");
    }
}

#[test]
fn bench_io_without_a_broker_says_the_mqtt_part_is_skipped() {
    let out = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .env("RUST_LOG", "warn")
        .args(["bench-io", "--triggers", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Modbus: skipped"), "{stdout}");
    assert!(stdout.contains("MQTT: skipped"), "{stdout}");
}
