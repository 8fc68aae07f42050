//! egui_kittest drives the real app (real pipeline, real engine on lavapipe, real database) on
//! the bundled demo images: verdicts appear and change, pause stops them, a damaged model file
//! is refused with a message while the current model stays, and the History tab filters and
//! exports what was recorded.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use inspector::records::settings::Settings;
use inspector::ui::{InspectorApp, Tab};

mod common;
use common::{step_until, wait_until_drained};

fn harness(db: &Path) -> Harness<'static, InspectorApp> {
    let settings = Settings {
        replay_fps: 20.0,
        db_path: Some(db.to_path_buf()),
        operator: "tester".into(),
        alarm_consecutive_fails: 3,
        ..Settings::default()
    };
    common::harness(settings, |_| {})
}

fn banner_word(h: &Harness<'static, InspectorApp>) -> Option<&'static str> {
    if h.query_by_label("FAIL").is_some() {
        Some("FAIL")
    } else if h.query_by_label("PASS").is_some() {
        Some("PASS")
    } else {
        None
    }
}

#[test]
fn inspect_tab_shows_changing_verdicts_pause_stops_them_and_bad_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(&dir.path().join("h.sqlite"));
    assert!(h.query_by_label("WAITING").is_some() || h.state().last.is_some());
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= 6
            && a.last.is_some()),
        "no verdicts within two minutes"
    );
    h.step();
    assert!(banner_word(&h).is_some(), "the banner shows PASS or FAIL");
    assert!(h.query_by_label_contains("Demo mode").is_some());
    // Verdicts change: the frame shown advances.
    let first = h.state().last.as_ref().unwrap().seq;
    assert!(step_until(&mut h, Duration::from_secs(60), |a| a
        .last
        .as_ref()
        .unwrap()
        .seq
        > first + 2));
    let origin = h.state().last.as_ref().unwrap().origin.clone();
    // (A reject's thumbnail may name the same frame.)
    assert!(
        h.query_all_by_label_contains(&origin).next().is_some() || {
            h.step();
            h.query_all_by_label_contains(&h.state().last.as_ref().unwrap().origin.clone())
                .next()
                .is_some()
        }
    );

    // Acknowledging an alarm leaves the other controls where they are (no jump under the
    // pointer): the alarm strip keeps its height.
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.alarm.is_some()),
        "no alarm (3 FAILs in a row) on the demo images"
    );
    h.step();
    let before = h.get_by_label("Pause").rect();
    h.get_by_label("Acknowledge").click();
    h.step();
    h.step();
    if h.state().alarm.is_none() {
        assert_eq!(
            h.get_by_label("Pause").rect(),
            before,
            "the Pause button moved"
        );
    }

    // A last-reject thumbnail opens that reject (frame, heatmap, verdict) while inspection
    // goes on, and its override acts on it.
    let reject = h.state().counters.last_rejects.back().unwrap().clone();
    let text = format!(
        "{} {:.0}%\n{}",
        reject.class,
        100.0 * reject.confidence,
        reject
            .timestamp
            .with_timezone(&chrono::Local)
            .format("%H:%M:%S")
    );
    h.get_all_by_label(&text).next().unwrap().click();
    h.step();
    assert_eq!(h.state().opened_reject(), Some(reject.seq));
    let seen = h.state().counters.inspected;
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a.counters.inspected
            > seen + 1),
        "inspection stopped while a reject was open"
    );
    h.step();
    h.get_by_label("Override this verdict…").click();
    h.step();
    assert_eq!(h.state().opened_reject(), None);
    assert_eq!(h.state().override_target().map(|t| t.0), Some(reject.seq));
    h.get_by_label("Cancel").click();
    h.step();
    assert!(h.state().override_target().is_none());

    // Pause stops inspection.
    h.get_by_label("Pause").click();
    h.step();
    assert!(h.state().is_paused());
    assert!(
        h.query_by_label("Resume").is_some() || {
            h.step();
            h.query_by_label("Resume").is_some()
        }
    );
    // The banner says PAUSED (not the last verdict) and there is no frame rate.
    h.step();
    assert!(
        h.query_by_label("PAUSED").is_some(),
        "the banner shows PAUSED"
    );
    assert!(
        banner_word(&h).is_none(),
        "no live-looking PASS/FAIL while paused"
    );
    assert!(
        h.query_all_by_label("—").next().is_some(),
        "no frame rate while paused"
    );
    // Frames captured before the pause (in flight or queued) may still land.
    assert!(wait_until_drained(&mut h, Duration::from_secs(30)));
    let paused_at = h.state().counters.inspected;
    std::thread::sleep(Duration::from_millis(1500));
    h.step();
    assert_eq!(
        h.state().counters.inspected,
        paused_at,
        "inspection went on while paused"
    );
    h.get_by_label("Resume").click();
    assert!(step_until(&mut h, Duration::from_secs(60), |a| a
        .counters
        .inspected
        > paused_at + 1));

    // Override the last verdict with a reason.
    h.get_by_label("Override…").click();
    h.step();
    h.get_by_label("Save override").click();
    h.step();
    assert!(
        h.state().overridden.is_empty(),
        "an override without a reason is refused"
    );
    h.state_mut().notices.clear();
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Reason")
        .focus();
    h.step();
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Reason")
        .type_text("dust on the lens");
    h.step();
    h.get_by_label("Save override").click();
    h.step();
    assert_eq!(h.state().overridden.len(), 1);

    // Draw a region of interest on the paused live view: later verdicts use it.
    h.get_by_label("Pause").click();
    h.run_steps(3);
    std::thread::sleep(Duration::from_millis(300));
    h.run_steps(3);
    h.get_by_label("Draw ROI").click();
    h.step();
    // Near the top-left corner: the demo frames differ in size (113 to 608 pixels wide), and
    // an ROI starting outside a frame is refused (the previous one comes back).
    let r = h.state().live_rect.unwrap();
    let (a, b) = (
        r.lerp_inside(egui::vec2(0.05, 0.05)),
        r.lerp_inside(egui::vec2(0.5, 0.5)),
    );
    common::drag(&mut h, a, b);
    let roi = h
        .state()
        .settings
        .roi
        .expect("the dragged rectangle became the ROI");
    assert!(roi[2] > 8 && roi[3] > 8);
    assert!(step_until(&mut h, Duration::from_secs(60), |a| a
        .last
        .as_ref()
        .is_some_and(|v| v.roi.x == roi[0] && v.roi.y == roi[1])));

    h.get_by_label("Clear ROI").click();
    h.step();
    assert!(h.state().settings.roi.is_none());

    // A damaged model file is refused and the current model stays.
    let model_before = h.state().model.as_ref().unwrap().id.clone();
    let bad = dir.path().join("damaged.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    h.state_mut().tab = Tab::Settings;
    h.step();
    h.state_mut().notices.clear();
    set_model_path(&mut h, &bad);
    h.get_by_label("Load model").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .notices
            .iter()
            .any(|n| n.text.contains("damaged.safetensors"))),
        "no message about the damaged model"
    );
    h.step();
    assert!(
        h.query_all_by_label_contains("damaged.safetensors")
            .next()
            .is_some(),
        "the message is on screen"
    );
    let msg = h
        .state()
        .notices
        .iter()
        .find(|n| n.text.contains("damaged"))
        .unwrap()
        .text
        .clone();
    assert!(
        msg.contains("refused") && msg.contains("current model stays"),
        "{msg}"
    );
    assert_eq!(h.state().model.as_ref().unwrap().id, model_before);
    // "Models nearby" lists the model files next to the typed path and the bundled ones (read
    // by a helper thread); picking one fills the field.
    h.get_by_label("Models nearby").click();
    let link = |p: std::path::PathBuf| p.display().to_string();
    let bundled =
        link(inspector::data::assets::bundled("assets/models").join("default.safetensors"));
    let mut listed = false;
    for _ in 0..200 {
        h.step();
        if h.query_by_role_and_label(egui::accesskit::Role::Link, &bundled)
            .is_some()
        {
            listed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(listed, "Browse did not list the bundled model {bundled}");
    assert!(
        h.query_by_role_and_label(egui::accesskit::Role::Link, &link(bad.clone()))
            .is_some(),
        "the file next to the typed path is listed too"
    );
    h.get_by_role_and_label(egui::accesskit::Role::Link, &bundled)
        .click();
    h.run_steps(2);
    assert_eq!(h.state().model_path_input(), bundled);
    // Inspection goes on with the old model.
    h.state_mut().tab = Tab::Inspect;
    let n = h.state().counters.inspected;
    assert!(step_until(&mut h, Duration::from_secs(60), |a| a
        .counters
        .inspected
        > n + 1));
}

fn set_model_path(h: &mut Harness<'static, InspectorApp>, p: &Path) {
    // Type the path into the model field like a user: select what is there, then type over it.
    let field = h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Model file");
    field.focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_role_and_label(egui::accesskit::Role::TextInput, "Model file")
        .type_text(&p.display().to_string());
    h.step();
    let shown = h.state().model_path_input().to_string();
    assert_eq!(shown, p.display().to_string());
}

#[test]
fn history_tab_filters_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let mut h = harness(&db);
    assert!(step_until(&mut h, Duration::from_secs(120), |a| a
        .counters
        .inspected
        >= 8));
    h.get_by_label("Pause").click();
    h.step();
    assert!(wait_until_drained(&mut h, Duration::from_secs(30)));
    let c = h.state().counters.clone();
    // Open History: all rows of the last 24 h.
    h.get_by_label("History").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .history
            .result
            .as_ref()
            .is_some_and(|r| r.total == c.inspected)),
        "history shows {:?} rows, expected {}",
        h.state().history.result.as_ref().map(|r| r.total),
        c.inspected
    );
    h.step();
    assert!(
        h.query_by_label_contains(&format!("{} matching rows", c.inspected))
            .is_some()
    );
    // Filter on FAIL.
    h.get_by_role_and_label(egui::accesskit::Role::ComboBox, "Verdict")
        .click();
    h.run_steps(3);
    h.get_by_label("fail").click();
    h.step();
    assert_eq!(h.state().history.verdict, "fail");
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .history
        .result
        .as_ref()
        .is_some_and(|r| r.filter.verdict.as_deref() == Some("fail"))));
    let fails = h.state().history.result.as_ref().unwrap().total;
    assert_eq!(fails, c.fail);
    // Export the filtered rows.
    let csv = dir.path().join("fails.csv");
    h.state_mut().history.export_path = csv.display().to_string();
    h.step();
    h.get_by_label("Export to this path").click();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .history
        .exported
        .is_some()));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count() as u64, 1 + fails);
    assert!(text.lines().skip(1).all(|l| l.contains(",fail,")));
    h.step();
    assert!(
        h.query_by_label_contains(&format!("exported {fails} rows"))
            .is_some()
    );
    // Sending a reject to the Label tab with no dataset open there says so and offers one.
    let origin = h.state().history.result.as_ref().unwrap().rows[0]
        .origin
        .clone();
    h.get_all_by_label(&origin).next().unwrap().click();
    // Let the details (and their archived image, loaded on a worker) settle: the button
    // sits below the image.
    step_until(&mut h, Duration::from_secs(2), |_| false);
    assert!(h.query_by_label_contains(&format!("{origin} — ")).is_some());
    h.get_by_label("Send to the Label tab's dataset").click();
    h.run_steps(2);
    assert!(
        h.query_by_label("No dataset is open in the Label tab.")
            .is_some()
    );
    h.get_by_label("Open one in the Label tab").click();
    h.run_steps(2);
    assert_eq!(h.state().tab, Tab::Label);
}
