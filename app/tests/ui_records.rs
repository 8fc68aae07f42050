//! What a person acts on is what gets recorded (issue 14). egui_kittest drives the real app and
//! changes the world between choosing a record and acting on it: the live frame moves on while
//! an override is typed, the Label filter hides the image in the editor before a class key is
//! pressed, new history rows arrive between pointer-down and pointer-up on a row.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use inspector::records::history::{Filter, InspectionRow, Op, Store};
use inspector::records::settings::Settings;
use inspector::ui::{InspectorApp, Tab};

mod common;
use common::{step_until, type_into};

/// Defect 1: the override form is opened on one frame; while the reason is typed the live view
/// moves on; Save must record the override on the frame the form was opened on.
#[test]
fn override_is_saved_on_the_frame_the_form_was_opened_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let settings = Settings {
        replay_fps: 20.0,
        db_path: Some(db.clone()),
        operator: "tester".into(),
        alarm_consecutive_fails: 0,
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.counters.inspected
            >= 2
            && a.last.is_some()),
        "no verdicts within two minutes"
    );
    h.get_by_label("Override…").click();
    h.step();
    // The frame live when the person pressed Override… (poll runs before the button).
    let target = h.state().last.clone().unwrap();
    h.step();
    let named = format!("Frame: {}", target.origin);
    assert!(
        h.query_by_label_contains(&named).is_some(),
        "the form names its frame"
    );
    // The line goes on while the reason is typed.
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .last
            .as_ref()
            .is_some_and(
                |v| v.seq > target.seq + 2 && v.origin != target.origin
            )),
        "the live frame did not move on"
    );
    h.get_by_role_and_label(Role::TextInput, "Reason").focus();
    h.step();
    h.get_by_role_and_label(Role::TextInput, "Reason")
        .type_text("scratch is a reflection");
    h.step();
    let still_named = h.query_by_label_contains(&named).is_some();
    h.get_by_label("Save override").click();
    h.step();
    let keys: Vec<u64> = h.state().overridden.keys().copied().collect();
    assert_eq!(
        keys,
        vec![target.seq],
        "the override landed on frame {keys:?}, the form was opened on {} ({})",
        target.seq,
        target.origin
    );
    assert!(
        still_named,
        "the open form named the live frame, not the one it was opened on"
    );
    // The database agrees: exactly the chosen frame carries the override.
    let want = if target.fail() { "pass" } else { "fail" };
    assert!(
        step_until(&mut h, Duration::from_secs(30), |_| {
            Store::open(&db)
                .and_then(|s| s.query(&Filter::default(), 100_000, 0))
                .is_ok_and(|rows| {
                    let o: Vec<&InspectionRow> = rows
                        .iter()
                        .filter(|r| r.override_verdict.is_some())
                        .collect();
                    o.len() == 1
                        && o[0].seq == target.seq
                        && o[0].origin == target.origin
                        && o[0].override_verdict.as_deref() == Some(want)
                })
        }),
        "the stored override is not on frame {} ({})",
        target.seq,
        target.origin
    );
}

/// Defect 2: the editor showed an image the filtered grid no longer contained, and a class key
/// relabelled it.
#[test]
fn a_class_key_never_relabels_an_image_the_filter_hides() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("set");
    std::fs::create_dir(&data).unwrap();
    for i in 0..5 {
        image::GrayImage::from_fn(40, 30, |x, y| {
            image::Luma([((x * 3 + y + i * 40) % 256) as u8])
        })
        .save(data.join(format!("img{i}.png")))
        .unwrap();
    }
    std::fs::write(
        data.join("manifest.csv"),
        "path,label\nimg0.png,Blowhole\nimg1.png,Break\nimg2.png,Crack\nimg3.png,\nimg4.png,\n",
    )
    .unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    h.state_mut().tab = Tab::Label;
    h.step();
    type_into(&mut h, "Dataset folder", &data.display().to_string());
    h.key_press(egui::Key::Escape);
    h.step();
    h.get_by_label("Open").click();
    assert!(step_until(&mut h, Duration::from_secs(10), |a| a
        .label
        .set
        .is_some()));
    h.run_steps(2);
    // The editor shows the first image, labelled Blowhole.
    assert!(
        h.query_by_label_contains("img0.png — Blowhole").is_some(),
        "the editor shows img0"
    );
    let classes = h.state().label.set.as_ref().unwrap().classes.clone();
    let crack = classes.iter().position(|c| c == "Crack").unwrap();
    // Show only the unlabelled images: img0 is no longer in the grid.
    h.get_by_role_and_label(Role::ComboBox, "show").click();
    h.run_steps(2);
    h.get_by_role_and_label(Role::Button, "unlabelled").click();
    h.run_steps(3);
    assert!(
        h.query_by_label_contains("2 images").is_some(),
        "the grid shows the two unlabelled images"
    );
    let hidden_shown = h.query_by_label_contains("img0.png — Blowhole").is_some();
    let moved_on = h.query_by_label_contains("img3.png — unlabelled").is_some();
    // A class key labels the image in the editor, never the hidden one.
    let keys = [egui::Key::Num1, egui::Key::Num2, egui::Key::Num3];
    h.key_press(keys[crack]);
    h.run_steps(2);
    let rows = h.state().label.set.as_ref().unwrap().rows.clone();
    assert_eq!(
        rows[0].label.as_deref(),
        Some("Blowhole"),
        "a hidden image was relabelled"
    );
    assert!(
        !hidden_shown,
        "the editor still showed img0, which the filter hides"
    );
    assert!(
        moved_on,
        "the editor did not move to the next visible image"
    );
    assert_eq!(rows[3].label.as_deref(), Some("Crack"));
    let manifest = data.join("manifest.csv");
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| {
            std::fs::read_to_string(&manifest)
                .is_ok_and(|m| m.contains("img0.png,Blowhole") && m.contains("img3.png,Crack"))
        }),
        "manifest: {:?}",
        std::fs::read_to_string(&manifest)
    );
    // Labelled, img3 leaves the filter too: the editor moves on to img4, then empties.
    assert!(h.query_by_label_contains("img4.png — unlabelled").is_some());
    h.key_press(keys[crack]);
    h.run_steps(2);
    let rows = h.state().label.set.as_ref().unwrap().rows.clone();
    assert_eq!(rows[4].label.as_deref(), Some("Crack"));
    h.key_press(keys[0]);
    h.run_steps(2);
    let after = h.state().label.set.as_ref().unwrap().rows.clone();
    assert_eq!(
        after, rows,
        "a key with nothing in the editor changed a label"
    );
    assert!(
        h.query_all_by_label_contains(".png — ").next().is_none(),
        "the editor is empty when the filter shows nothing"
    );
}

fn row(i: usize, origin: &str, ts_ms: i64) -> InspectionRow {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap();
    InspectionRow {
        id: 0,
        run_id: "earlier-run".into(),
        seq: i as u64,
        ts: inspector::records::history::rfc3339(ts),
        ts_ms,
        station: "station-1".into(),
        source: "folder:line".into(),
        origin: origin.into(),
        model_id: "m@00000000".into(),
        model_hash: "00".into(),
        verdict: "fail".into(),
        class: "Fray".into(),
        confidence: 0.9,
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

/// Defect 3: rows moved under the pointer while verdicts arrived; a click opened another record.
#[test]
fn history_click_opens_the_row_pressed_while_new_rows_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let now = chrono::Utc::now().timestamp_millis();
    insert(
        &db,
        (0..10)
            .map(|i| {
                row(
                    i,
                    &format!("MT_Fray/part-{i:02}.jpg"),
                    now - 60_000 + i as i64,
                )
            })
            .collect(),
    );
    // No live frames: an empty folder source. Only the test adds rows.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let settings = Settings {
        db_path: Some(db.clone()),
        source: Some(inspector::station::source::SourceSpec::Folder {
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
            .is_some_and(|r| r.total == 10)),
        "the history did not load"
    );
    h.run_steps(2);
    let target = "MT_Fray/part-05.jpg";
    let pos = h.get_by_label(target).rect().center();
    h.hover_at(pos);
    h.step();
    h.drag_at(pos); // pointer down on part-05
    h.step();
    // Verdicts arrive: three newer rows.
    insert(
        &db,
        (10..13)
            .map(|i| row(i, &format!("MT_Blowhole/new-{i:02}.jpg"), now + i as i64))
            .collect(),
    );
    // Long enough in wall time for the table's periodic refresh to ask and be answered, short
    // in egui time (one frame per step) so the release is still a click.
    std::thread::sleep(Duration::from_millis(3300));
    h.step();
    std::thread::sleep(Duration::from_millis(1500));
    h.drop_at(pos);
    h.step();
    h.run_steps(2);
    assert!(
        h.query_by_label_contains(&format!("{target} — ")).is_some(),
        "the details do not show the row pressed ({target}); open: {:?}",
        h.query_all_by_label_contains(".jpg — ")
            .map(|n| n.accesskit_node().value().unwrap_or_default())
            .collect::<Vec<_>>()
    );
    // The selected row is highlighted.
    let selected: Vec<String> = h
        .query_all_by_role(Role::Button)
        .filter(|n| n.accesskit_node().toggled() == Some(egui::accesskit::Toggled::True))
        .filter_map(|n| n.accesskit_node().label())
        .collect();
    assert!(
        selected.iter().any(|l| l == target),
        "the selected row is not highlighted: {selected:?}"
    );
    // The new rows wait behind a control; the table did not move under the pointer.
    let mut shown = false;
    for _ in 0..200 {
        h.step();
        if h.query_by_label_contains("3 new").is_some() {
            shown = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(shown, "no \"3 new — show\" control");
    assert!(h.query_by_label("MT_Blowhole/new-12.jpg").is_none());
    h.get_by_label_contains("3 new").click();
    h.run_steps(2);
    assert!(h.query_by_label("MT_Blowhole/new-12.jpg").is_some());
    // The details still show the row chosen.
    assert!(h.query_by_label_contains(&format!("{target} — ")).is_some());
}

fn set_model_path(h: &mut Harness<'static, InspectorApp>, p: &Path) {
    type_into(h, "Model file", &p.display().to_string());
    assert_eq!(h.state().model_path_input(), p.display().to_string());
}

fn events(db: &Path, kind: &str) -> Vec<String> {
    Store::open(db)
        .and_then(|s| s.events(10_000))
        .map(|e| {
            e.into_iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.detail)
                .collect()
        })
        .unwrap_or_default()
}

/// Activating a model shows its validation figures, warns when they are below the station's
/// minimum, asks keep-current vs take-the-model's threshold and records the choice; the new
/// model and threshold are in the settings file at once (a SIGTERM right after cannot lose
/// them: the next start reads that file).
#[test]
fn model_activation_shows_figures_warns_asks_the_threshold_and_is_saved_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let settings_file = dir.path().join("config/settings.json");
    let candidate = dir.path().join("candidate.safetensors");
    std::fs::copy(
        inspector::data::assets::bundled(inspector::data::assets::DEFAULT_MODEL),
        &candidate,
    )
    .unwrap();
    let settings = Settings {
        replay_fps: 10.0,
        db_path: Some(db.clone()),
        operator: "tester".into(),
        threshold: Some(0.3),
        ..Settings::default()
    };
    let sf = settings_file.clone();
    let mut h = common::harness(settings, move |app| app.set_settings_file(sf));
    assert!(step_until(&mut h, Duration::from_secs(120), |a| a
        .model
        .is_some()
        && a.is_running()));
    h.state_mut().tab = Tab::Settings;
    h.step();
    set_model_path(&mut h, &candidate);
    h.get_by_label("Load model").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a.candidate.is_some()),
        "no confirmation"
    );
    h.run_steps(2);
    // The figures from the model's training record, and the warning: the bundled model's
    // AUROC and false-reject rate are below the station minimum (0.95 and 10 %).
    let summary = kernels::Model::load(&candidate).unwrap().spec.training["summary"].clone();
    let auroc = summary["val_auroc"].as_f64().unwrap();
    let miss = summary["val_miss_rate"].as_f64().unwrap();
    let fr = summary["val_false_reject_rate"].as_f64().unwrap();
    assert!(
        auroc < 0.95 && fr > 0.10,
        "the bundled model meets the station minimum"
    );
    let figures = format!(
        "AUROC {auroc:.3} · miss rate {:.1} % · false-reject rate {:.1} %",
        miss * 100.0,
        fr * 100.0
    );
    assert!(h.query_by_label_contains(&figures).is_some(), "{figures}");
    let fr_warning = format!(
        "false-reject rate {:.1} % is above the station maximum 10.0 %",
        fr * 100.0
    );
    assert!(
        h.query_by_label_contains(&fr_warning).is_some(),
        "{fr_warning}"
    );
    assert!(
        h.query_by_label_contains("WARNING: this model is below the station minimum")
            .is_some()
    );
    let auroc_warning = format!("AUROC {auroc:.3} is below the station minimum 0.950");
    assert!(
        h.query_by_label_contains(&auroc_warning).is_some(),
        "{auroc_warning}"
    );
    // Nothing changes before the confirmation.
    assert_ne!(h.state().model.as_ref().unwrap().path, candidate);
    h.get_by_label("Keep the current threshold (0.300)").click();
    h.step();
    h.get_by_label("Activate this model").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .model
            .as_ref()
            .is_some_and(|m| m.path == candidate)),
        "the model was not activated"
    );
    assert_eq!(h.state().settings.threshold, Some(0.3));
    // The Inspect tab names the model that now judges (not "the default model").
    h.state_mut().tab = Tab::Inspect;
    h.run_steps(2);
    let id = h.state().model.as_ref().unwrap().id.clone();
    assert!(
        h.query_by_label_contains(&format!("through model {id}"))
            .is_some()
    );
    assert!(h.query_by_label_contains("the default model").is_none());
    h.state_mut().tab = Tab::Settings;
    h.run_steps(2);
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .last
        .as_ref()
        .is_some_and(|v| (v.threshold - 0.3).abs() < 1e-6)));
    // Saved at once (no eframe autosave in this test), for the next start.
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| {
            inspector::records::settings::load_file(&settings_file).is_some_and(|s| {
                s.model_path.as_deref() == Some(candidate.as_path()) && s.threshold == Some(0.3)
            })
        }),
        "the settings file does not hold the new model: {:?}",
        std::fs::read_to_string(&settings_file)
    );
    assert!(
        step_until(&mut h, Duration::from_secs(30), |_| {
            events(&db, "model_activation_confirmed").iter().any(|d| {
                d.contains("kept the current 0.300") && d.contains("BELOW the station minimum")
            })
        }),
        "the choice was not recorded: {:?}",
        events(&db, "model_activation_confirmed")
    );
    // Again, taking the model's threshold this time.
    set_model_path(&mut h, &candidate);
    h.get_by_label("Load model").click();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .candidate
        .is_some()));
    h.run_steps(2);
    h.get_by_label_contains("Take the model's threshold")
        .click();
    h.step();
    h.get_by_label("Activate this model").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .activation_pending()
            .is_none()
            && a.settings.threshold.is_none()),
        "threshold {:?}",
        h.state().settings.threshold
    );
    assert!(step_until(&mut h, Duration::from_secs(10), |_| {
        inspector::records::settings::load_file(&settings_file)
            .is_some_and(|s| s.threshold.is_none())
    }));
    assert!(step_until(&mut h, Duration::from_secs(30), |_| {
        events(&db, "model_activation_confirmed")
            .iter()
            .any(|d| d.contains("took the model's"))
    }));
    // Cancelling keeps the model and says so in the history.
    h.get_by_label("Load model").click();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .candidate
        .is_some()));
    h.run_steps(2);
    h.get_by_label("Keep the current model").click();
    h.step();
    assert!(h.state().candidate.is_none());
    assert!(step_until(&mut h, Duration::from_secs(30), |_| !events(
        &db,
        "model_activation_cancelled"
    )
    .is_empty()));
}

/// An ROI outside the live frame is refused in the app: the previous one stays, and the
/// operator is told.
#[test]
fn roi_outside_the_frame_is_refused_and_the_previous_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        replay_fps: 10.0,
        db_path: Some(dir.path().join("h.sqlite")),
        roi: Some([10, 10, 200, 200]),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(step_until(&mut h, Duration::from_secs(120), |a| a
        .last
        .is_some()));
    h.state_mut().set_roi(Some([5000, 5000, 100, 100]));
    h.step();
    assert_eq!(h.state().settings.roi, Some([10, 10, 200, 200]));
    assert!(
        h.state().notices.iter().any(|n| n.text.contains("outside")
            && n.text.contains("keeping the previous one (10,10,200,200)")),
        "{:?}",
        h.state().notices
    );
    h.step();
    assert!(
        h.query_by_label_contains("keeping the previous one")
            .is_some()
    );
    // Verdicts still use the previous ROI.
    let n = h.state().counters.inspected;
    assert!(step_until(&mut h, Duration::from_secs(60), |a| a
        .counters
        .inspected
        > n + 1));
    let v = h.state().last.clone().unwrap();
    assert_eq!((v.roi.x, v.roi.y), (10, 10));
}

/// A source that cannot deliver replaces the verdict banner: STOPPED with the reason, and no
/// frame rate.
#[test]
fn a_failed_source_shows_stopped_instead_of_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        source: Some(inspector::station::source::SourceSpec::Folder {
            dir: dir.path().join("no-such-folder"),
            looping: false,
        }),
        ..Settings::default()
    };
    let mut h = common::harness(settings, |_| {});
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| matches!(
            a.source_status,
            Some(inspector::station::pipeline::SourceStatus::Failed(_))
        )),
        "the missing folder was not reported"
    );
    h.run_steps(2);
    assert!(
        h.query_by_label("STOPPED").is_some(),
        "the banner shows STOPPED"
    );
    assert!(h.query_by_label_contains("the source failed").is_some());
    assert!(
        h.query_all_by_label("—").next().is_some(),
        "no frame rate without frames"
    );
    assert!(h.query_by_label("PASS").is_none() && h.query_by_label("FAIL").is_none());
}
