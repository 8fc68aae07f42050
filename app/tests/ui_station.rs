//! What the screen says is what the station does (issue 24, items 1, 2, 3, 9, 10). egui_kittest
//! drives the real app: a folder source vanishes in the middle of a replay, rejects arrive while
//! the pointer rests on the last-rejects strip, a threshold set by hand is the one every place
//! shows, a History row opens from any of its cells, an ROI is drawn on a live view, and a
//! REVIEW part is shown, counted and decided by a person (issue 21).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use egui_kittest::kittest::{NodeT as _, Queryable as _};
use inspector::records::history::{InspectionRow, Op, Store};
use inspector::records::settings::Settings;
use inspector::station::pipeline::SourceStatus;
use inspector::station::source::SourceSpec;
use inspector::ui::Tab;

mod common;
use common::step_until;

/// Item 1: a folder renamed mid-replay kept a green banner and "2.0 /s" while unreadable frames
/// climbed. After a few failures to read: NO SIGNAL with the reason, no frame rate, an alarm;
/// when the folder is back, frames are judged again.
#[test]
fn a_vanished_folder_shows_no_signal_with_the_reason_and_raises_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("line");
    common::tiny_dataset(&images, 3);
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        source: Some(SourceSpec::Folder {
            dir: images.clone(),
            looping: true,
        }),
        replay_fps: 10.0,
        operator: "tester".into(),
        alarm_consecutive_fails: 0,
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= 3),
        "no verdicts within two minutes"
    );
    assert!(h.state().alarm.is_none());
    let moved = dir.path().join("line-renamed");
    std::fs::rename(&images, &moved).unwrap();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| matches!(
            a.source_status,
            Some(SourceStatus::Lost(_))
        )),
        "the vanished folder was not reported lost; {} unreadable, status {:?}; notices {:?}",
        h.state().counters.unreadable,
        h.state().source_status,
        h.state()
            .notices
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
    );
    h.run_steps(2);
    assert!(
        h.query_by_label("NO SIGNAL").is_some(),
        "no NO SIGNAL banner"
    );
    assert!(
        h.query_all_by_label_contains("is gone").next().is_some(),
        "the banner does not say why"
    );
    assert!(h.query_by_label("PASS").is_none() && h.query_by_label("FAIL").is_none());
    assert!(
        h.query_by_label_contains(" /s").is_none(),
        "a frame rate is shown without frames"
    );
    let alarm = h
        .state()
        .alarm
        .clone()
        .expect("no alarm for the lost source");
    assert!(alarm.text.contains("NO SIGNAL"), "{}", alarm.text);
    assert!(h.query_by_label_contains("ALARM").is_some());

    // The folder is back: frames again, the banner judges again.
    std::fs::rename(&moved, &images).unwrap();
    let n = h.state().counters.inspected;
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| matches!(
            a.source_status,
            Some(SourceStatus::Running(_))
        ) && a
            .counters
            .inspected
            > n),
        "the folder came back but nothing was judged"
    );
    h.run_steps(2);
    assert!(h.query_by_label("NO SIGNAL").is_none());
}

fn reject_text(v: &inspector::station::pipeline::Verdict) -> String {
    format!(
        "{} {:.0}%\n{}",
        v.class,
        100.0 * v.confidence,
        v.timestamp.with_timezone(&chrono::Local).format("%H:%M:%S")
    )
}

/// Item 2: with the pointer still on the last-rejects strip the thumbnail under it changed, and
/// a click opened another reject. The strip holds still while the pointer is on it; newer
/// rejects wait behind "N new — show"; a click opens what was under the pointer.
#[test]
fn the_reject_strip_holds_still_under_the_pointer_and_opens_what_was_pressed() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        replay_fps: 20.0,
        alarm_consecutive_fails: 0,
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .counters
            .last_rejects
            .len()
            >= 2),
        "no rejects on the demo images within two minutes"
    );
    h.run_steps(2);
    let newest = h.state().counters.last_rejects.back().unwrap().clone();
    let text = reject_text(&newest);
    let pos = h
        .query_all_by_label(&text)
        .next()
        .expect("the newest reject is on the strip")
        .rect()
        .center();
    h.hover_at(pos);
    h.step();
    // Rejects go on arriving while the pointer rests there.
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .counters
            .last_rejects
            .back()
            .is_some_and(|v| v.seq > newest.seq)),
        "no newer reject within two minutes"
    );
    h.run_steps(3);
    assert!(
        h.query_all_by_label(&text).any(|n| n.rect().contains(pos)),
        "the reject under the pointer moved away"
    );
    assert!(
        h.query_by_label_contains("new — show").is_some(),
        "no \"N new — show\" control"
    );
    // Press, a newer reject meanwhile, release: the reject pressed opens.
    h.drag_at(pos);
    h.step();
    h.step();
    h.drop_at(pos);
    h.step();
    h.run_steps(2);
    assert_eq!(h.state().opened_reject(), Some(newest.seq));
}

/// Item 10: an ROI drag on a live (not paused) frame did not register, and one starting off the
/// image was ignored without a word. The demo frames differ in size (113 to 608 pixels wide), so
/// the live view changes under a drag: drawing holds the frame still while inspection goes on,
/// and a drag may start beside the frame (clamped to its edge).
#[test]
fn an_roi_drawn_on_the_live_view_holds_the_frame_and_may_start_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        replay_fps: 20.0,
        alarm_consecutive_fails: 0,
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= 2),
        "no verdicts within two minutes"
    );
    h.get_by_label("Draw ROI").click();
    h.run_steps(2);
    let (r, area) = (h.state().live_rect.unwrap(), h.state().live_area.unwrap());
    let seen = h.state().counters.inspected;
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= seen + 4),
        "inspection stopped while drawing"
    );
    h.run_steps(2);
    assert_eq!(
        h.state().live_rect.unwrap(),
        r,
        "the frame under the drawing moved"
    );
    // Start beside the frame, in the larger margin of the view.
    let (below, right) = (area.max.y - r.max.y, area.max.x - r.max.x);
    assert!(
        below.max(right) > 6.0,
        "no margin beside the frame: {r:?} in {area:?}"
    );
    let a = if below > right {
        egui::pos2(r.center().x, r.max.y + below / 2.0)
    } else {
        egui::pos2(r.max.x + right / 2.0, r.center().y)
    };
    assert!(!r.contains(a) && area.contains(a));
    let b = r.lerp_inside(egui::vec2(0.2, 0.2));
    common::drag(&mut h, a, b);
    let roi = h
        .state()
        .settings
        .roi
        .expect("the drag starting beside the frame became the ROI");
    assert!(roi[2] > 8 && roi[3] > 8, "{roi:?}");
    h.run_steps(2);
    assert!(
        h.query_by_label("Draw ROI").is_some(),
        "drawing ends with the ROI set"
    );
}

/// Item 3: Settings showed the model file's threshold while the station applied another. A
/// threshold set by hand is what Settings and Inspect show, with who set it and when.
#[test]
fn the_threshold_shown_is_the_one_in_force_and_says_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        source: Some(SourceSpec::Folder {
            dir: empty,
            looping: false,
        }),
        operator: "alice".into(),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |app| app.set_threshold(Some(0.345)));
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a.model.is_some()),
        "no model loaded"
    );
    let model_t = h.state().model.as_ref().unwrap().threshold;
    assert!((model_t - 0.345).abs() > 1e-3, "pick another test value");
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("Threshold: 0.345 (set by hand at ")
            .is_some_and(|n| n
                .accesskit_node()
                .value()
                .unwrap_or_default()
                .contains("by alice")),
        "Inspect does not show the threshold in force with its origin: {:?}",
        h.query_all_by_label_contains("hreshold")
            .map(|n| n.accesskit_node().value().unwrap_or_default())
            .collect::<Vec<_>>()
    );
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    let in_use = h
        .query_by_label_contains("In use:")
        .expect("the Settings tab names the model in use")
        .accesskit_node()
        .value()
        .unwrap_or_default();
    assert!(
        in_use.contains("threshold 0.345 (set by hand at ") && in_use.contains("by alice"),
        "{in_use}"
    );
    assert!(
        !in_use.contains(&format!("threshold {model_t:.3}")),
        "{in_use}"
    );
    // Back to the model's own: said so.
    h.state_mut().set_threshold(None);
    h.run_steps(2);
    let in_use = h
        .query_by_label_contains("In use:")
        .unwrap()
        .accesskit_node()
        .value()
        .unwrap_or_default();
    assert!(
        in_use.contains(&format!("threshold {model_t:.3} (the model's own)")),
        "{in_use}"
    );
}

fn row(i: usize, ts_ms: i64) -> InspectionRow {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap();
    InspectionRow {
        id: 0,
        run_id: "earlier-run".into(),
        seq: i as u64,
        ts: inspector::records::history::rfc3339(ts),
        ts_ms,
        station: "station-1".into(),
        source: "folder:line".into(),
        origin: format!("MT_Fray/part-{i:02}.jpg"),
        model_id: "m@00000000".into(),
        model_hash: "00".into(),
        verdict: "fail".into(),
        class: "Fray".into(),
        // A confidence per row: its cell names the row.
        confidence: 0.50 + i as f64 / 100.0,
        score: 0.9,
        threshold: 0.5,
        latency_ms: 10.0,
        image_path: None,
        heatmap_path: None,
        roi: None,
        override_verdict: None,
        override_by: None,
        override_at: None,
        override_reason: None,
    }
}

fn insert(db: &Path, rows: Vec<InspectionRow>) {
    let mut s = Store::open(db).unwrap();
    let ops: Vec<Op> = rows
        .into_iter()
        .map(|r| Op::Inspection(Box::new(r), None))
        .collect();
    s.write_batch(&ops).unwrap();
}

/// Item 9: only the frame-name cell opened a History row; any cell of the row does.
#[test]
fn a_history_row_opens_from_any_of_its_cells() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let now = chrono::Utc::now().timestamp_millis();
    insert(
        &db,
        (0..8).map(|i| row(i, now - 60_000 + i as i64)).collect(),
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let settings = Settings {
        db_path: Some(db.clone()),
        source: Some(SourceSpec::Folder {
            dir: empty,
            looping: false,
        }),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    h.state_mut().tab = Tab::History;
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .history
            .result
            .as_ref()
            .is_some_and(|r| r.total == 8)),
        "the history did not load"
    );
    h.run_steps(2);
    // The confidence cell of part-05 (55 %), not its name.
    let pos = h.get_by_label("55%").rect().center();
    h.hover_at(pos);
    h.step();
    h.drag_at(pos);
    h.step();
    h.drop_at(pos);
    h.step();
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("MT_Fray/part-05.jpg — ")
            .is_some(),
        "a click on the row's confidence cell did not open it"
    );
}

/// The review band on screen (issue 21): a model whose band covers every score sends each part
/// to REVIEW: the banner says so in its own word, the counters count it apart, a person's
/// decision (PASS or FAIL, with a reason) is recorded as an override of the REVIEW, and the
/// band is switched off per station in Settings.
#[test]
fn a_review_part_is_shown_counted_and_decided_by_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/magnetic-tile-demo");
    for (i, class) in ["MT_Free", "MT_Crack"].iter().enumerate() {
        let mut jpgs: Vec<_> = std::fs::read_dir(demo.join(class).join("Imgs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
            .collect();
        jpgs.sort();
        std::fs::copy(&jpgs[0], images.join(format!("{i}.jpg"))).unwrap();
    }
    let default =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/default.safetensors");
    let mut m = kernels::Model::load(&default).unwrap();
    m.spec.pass_threshold = Some(0.0);
    m.spec.threshold = 1.0;
    let banded = dir.path().join("banded.safetensors");
    m.save(&banded).unwrap();
    let db = dir.path().join("h.sqlite");
    let settings = Settings {
        db_path: Some(db.clone()),
        model_path: Some(banded),
        source: Some(SourceSpec::Folder {
            dir: images,
            looping: true,
        }),
        replay_fps: 5.0,
        operator: "ria".into(),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= 2),
        "no verdicts"
    );
    h.run_steps(2);
    let c = h.state().counters.clone();
    let last = h.state().last.clone().unwrap();
    assert!(last.score < 1.0, "pick another band: scored {}", last.score);
    assert_eq!(last.decision, kernels::Decision::Review);
    assert_eq!((c.pass, c.fail), (0, 0), "{c:?}");
    assert_eq!(c.review, c.inspected);
    assert!(h.query_by_label("REVIEW").is_some(), "no REVIEW banner");
    assert!(
        h.query_by_label_contains("set aside for a manual check")
            .is_some(),
        "the banner does not say what to do with the part"
    );
    assert!(
        h.query_by_label_contains("PASS below 0.000 · FAIL from 1.000")
            .is_some(),
        "the banner does not show the band in force"
    );
    // A person decides: PASS, with a reason.
    h.get_by_label("Override…").click();
    h.step();
    assert!(h.query_by_label("Save override").is_none());
    common::type_into(&mut h, "Reason", "checked under the lamp: no crack");
    h.get_by_label("Decide PASS").click();
    h.step();
    assert_eq!(
        h.state().overridden.get(&last.seq).map(String::as_str),
        Some("pass")
    );
    assert!(
        h.state()
            .notices
            .iter()
            .any(|n| n.text.contains("decided good (review to pass)")),
        "{:?}",
        h.state().notices
    );
    assert!(
        step_until(&mut h, Duration::from_secs(30), |_| {
            Store::open(&db)
                .and_then(|s| s.query(&Default::default(), 10, 0))
                .is_ok_and(|rows| {
                    rows.iter().any(|r| {
                        r.seq == last.seq
                            && r.verdict == "review"
                            && r.override_verdict.as_deref() == Some("pass")
                            && r.override_by.as_deref() == Some("ria")
                    })
                })
        }),
        "the decision on the REVIEW part is not in the history"
    );
    // Switched off per station: Settings says so and the station decides two-way.
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("Review band in force: PASS below 0.000, REVIEW from 0.000")
            .is_some()
    );
    h.get_by_label_contains("Review band: parts the model is unsure of")
        .click();
    h.run_steps(2);
    assert!(!h.state().settings.review_band);
    assert!(
        h.query_by_label_contains("Review band in force: off")
            .is_some()
    );
}
