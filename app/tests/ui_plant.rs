//! The plant database in the app (issue 22), against a real PostgreSQL (a throw-away cluster,
//! `common/postgres.rs`): Settings › Plant database starts the forwarder with the station; the
//! Inspect tab shows it connected and what waits; the server going away is said, the backlog
//! alarm is raised past its limit, inspection goes on, and when the server is back every
//! verdict arrives exactly once; the History tab reads the plant database with its station
//! and line filters, and a lead's decision made there lands in the plant's audit trail.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use egui_kittest::kittest::{NodeT as _, Queryable as _};
use inspector::records::history::{Filter, Store};
use inspector::records::plant::split_password;
use inspector::records::settings::{PlantSettings, Secret, Settings};
use inspector::ui::{InspectorApp, Tab};

mod common;
use common::{step_until, type_into};
#[path = "common/postgres.rs"]
mod postgres;
use postgres::Postgres;

fn forwarded(a: &InspectorApp) -> Option<u64> {
    let s = a.plant.forwarder.as_ref()?.status();
    s.connected.then_some(s.forwarded.inspections)
}

fn waiting(a: &InspectorApp) -> Option<u64> {
    Some(a.plant.forwarder.as_ref()?.status().backlog.inspections)
}

#[test]
fn the_station_forwards_through_an_outage_and_the_history_tab_reads_the_plant() {
    let mut pg = Postgres::start_new();
    pg.psql("postgres", "CREATE DATABASE plant");
    let dir = tempfile::tempdir().unwrap();
    // The password goes in its own field (this session only), as Settings keeps it.
    let (url, password) = split_password(&pg.url("plant")).unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        replay_fps: 20.0,
        alarm_consecutive_fails: 0,
        station: "st-ui".into(),
        plant: PlantSettings {
            url,
            line: "L7".into(),
            backlog_alarm: 5,
            password: Secret(password),
        },
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| forwarded(a)
            .is_some_and(|n| n >= 3)),
        "nothing forwarded: {:?} {:?}",
        h.state().plant.error,
        h.state().plant.forwarder.as_ref().map(|f| f.status())
    );
    h.run_steps(2);
    assert!(h.query_by_label("Plant DB connected").is_some());
    // Settings › Plant database: the test connects as the station does; no password shown.
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    // The section is at the bottom of the tab: scrolled into view as a user would.
    h.get_by_label("Test the plant connection").scroll_to_me();
    h.run_steps(3);
    h.get_by_label("Test the plant connection").click();
    let said = "connected to postgres://plant:***@127.0.0.1";
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while h.query_by_label_contains(said).is_none() {
        assert!(
            std::time::Instant::now() < end,
            "the test said nothing like {said:?}: {:?}",
            h.query_all_by_label_contains("plant")
                .filter_map(|n| n.accesskit_node().label())
                .collect::<Vec<_>>()
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.query_by_label_contains("1 station forwarding").is_some());
    assert!(h.query_by_label_contains("secret").is_none());
    h.state_mut().tab = Tab::Inspect;

    // The server goes away: said on the Inspect tab, the backlog alarm past 5 waiting, and
    // inspection goes on.
    pg.stop();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| forwarded(a).is_none()),
        "the lost server is not shown"
    );
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .alarm
            .as_ref()
            .is_some_and(|al| al.text.contains("wait for the plant database"))),
        "no backlog alarm: {:?} {:?}",
        h.state().alarm.as_ref().map(|a| a.text.clone()),
        waiting(h.state())
    );
    h.run_steps(2);
    assert!(h.query_by_label("Plant DB not connected").is_some());
    assert!(
        h.query_by_label_contains("Plant backlog over its limit")
            .is_some()
    );

    // Back: everything arrives, once. Pause so the count stands still, then compare.
    pg.start();
    h.state_mut().set_paused(true);
    assert!(common::wait_until_drained(&mut h, Duration::from_secs(60)));
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| forwarded(a).is_some()
            && waiting(a) == Some(0)),
        "the backlog did not drain: {:?}",
        h.state().plant.forwarder.as_ref().map(|f| f.status())
    );
    let local = Store::open(&dir.path().join("h.sqlite"))
        .unwrap()
        .count(&Filter::default())
        .unwrap();
    let in_plant: u64 = pg
        .psql(
            "plant",
            "SELECT COUNT(*) FROM inspections WHERE station_id = 'st-ui' AND line = 'L7'",
        )
        .parse()
        .unwrap();
    assert!(local >= 3);
    assert_eq!(in_plant, local, "every verdict exactly once in the plant");

    // The History tab on the plant database: the rows of station st-ui, its filters.
    h.state_mut().tab = Tab::History;
    h.run_steps(2);
    h.get_by_label("Plant database (all stations)").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .history
            .result
            .as_ref()
            .is_some_and(|r| r.total == local && r.stations == ["st-ui"])),
        "the plant History does not show the station's rows: {:?}",
        h.state()
            .history
            .result
            .as_ref()
            .map(|r| (r.total, r.stations.clone()))
    );
    h.run_steps(2);
    // A lead's decision on a plant row lands in the plant's audit trail and on the row.
    let first = h.state().history.result.as_ref().unwrap().rows[0].clone();
    h.query_all_by_label(&first.origin).next().unwrap().click();
    h.run_steps(3);
    type_into(&mut h, "Reason", "seen at the lead's desk");
    let other = if first.final_verdict() == "fail" {
        "PASS"
    } else {
        "FAIL"
    };
    h.get_by_label(&format!("Override to {other}")).click();
    h.run_steps(2);
    let decided = || {
        pg.psql(
            "plant",
            &format!(
                "SELECT COUNT(*) FROM overrides WHERE made_at = 'plant'
                 AND by_whom IS NOT NULL AND reason = 'seen at the lead''s desk'
                 AND verdict = '{}'",
                other.to_lowercase()
            ),
        )
    };
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while decided() != "1" {
        assert!(
            std::time::Instant::now() < end,
            "the decision is not in the plant"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        pg.psql(
            "plant",
            &format!(
                "SELECT override_verdict FROM inspections WHERE plant_row = {}",
                first.id
            )
        ),
        other.to_lowercase()
    );
    // The station takes the lead's decision into its own history (and does not send it back).
    let db = dir.path().join("h.sqlite");
    let taken = || {
        Store::open(&db)
            .unwrap()
            .query(
                &Filter {
                    overridden: Some(true),
                    ..Filter::default()
                },
                1000,
                0,
            )
            .unwrap()
            .into_iter()
            .any(|r| {
                r.run_id == first.run_id
                    && r.seq == first.seq
                    && r.override_verdict.as_deref() == Some(other.to_lowercase().as_str())
                    && r.override_reason.as_deref() == Some("seen at the lead's desk")
            })
    };
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !taken() {
        assert!(
            std::time::Instant::now() < end,
            "the station did not take in the lead's decision"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        pg.psql("plant", "SELECT COUNT(*) FROM overrides"),
        "1",
        "the decision came back to the plant as a second one"
    );
    assert!(h.query_by_label("Station").is_some());
    assert!(h.query_by_label("Line").is_some());
    assert!(h.query_by_label("Split the chart by station").is_some());
    // Another line: nothing.
    h.state_mut().history.line = "L8".into();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .history
            .result
            .as_ref()
            .is_some_and(|r| r.total == 0)),
        "the line filter is not applied"
    );
}
