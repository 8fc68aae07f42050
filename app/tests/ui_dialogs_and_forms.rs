//! Issue 15, "The station and the review screens tell the truth at a glance": file dialogs
//! (scripted here: the real one needs a desktop), CSV export to a chosen file, the Train form
//! (whole labels, the CLI's options, loss and accuracy on their own axes, Resume after Cancel),
//! History filters labelled before their controls, and a brush stroke dragged over the mask.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{By, NodeT as _, Queryable as _};
use inspector::ui::file_dialog::{DialogBackend, DialogKind, DialogRequest, FileDialogs, Outcome};
use inspector::ui::{InspectorApp, Tab};

mod common;
use common::{harness_in as harness, harness_on, step_until, tiny_dataset};

/// A file dialog that answers from a script and remembers what it was asked.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Outcome>>,
    asked: Mutex<Vec<DialogRequest>>,
}

impl DialogBackend for Scripted {
    fn show(&self, req: &DialogRequest) -> Outcome {
        self.asked.lock().unwrap().push(req.clone());
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Outcome::Cancelled)
    }
}

fn script(h: &mut Harness<'static, InspectorApp>) -> Arc<Scripted> {
    let s = Arc::new(Scripted::default());
    h.state_mut().dialogs = FileDialogs::with_backend(s.clone());
    s
}

fn answer(s: &Scripted, o: Outcome) {
    s.answers.lock().unwrap().push_back(o);
}

/// Clicks the `n`-th "Browse…" button on screen and waits for its answer to arrive.
fn browse(h: &mut Harness<'static, InspectorApp>, n: usize) {
    h.get_all_by_label("Browse…").nth(n).unwrap().click();
    h.step();
    assert!(
        step_until(h, Duration::from_secs(10), |a| a.dialogs.open().is_none()),
        "the dialog's answer never arrived"
    );
    h.run_steps(2);
}

#[test]
fn file_dialogs_fill_the_fields_they_were_opened_for_and_say_when_none_can_be_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    tiny_dataset(&data, 2);
    let mut h = harness(dir.path());
    let s = script(&mut h);

    // Label: the chosen folder is opened.
    h.state_mut().tab = Tab::Label;
    h.step();
    answer(&s, Outcome::Picked(data.clone()));
    browse(&mut h, 0);
    assert_eq!(h.state().label.folder, data.display().to_string());
    assert!(step_until(&mut h, Duration::from_secs(10), |a| a
        .label
        .set
        .is_some()));
    assert_eq!(s.asked.lock().unwrap()[0].kind, DialogKind::PickFolder);

    // Train: the dataset field.
    h.state_mut().tab = Tab::Train;
    h.step();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    answer(&s, Outcome::Picked(other.clone()));
    browse(&mut h, 0);
    assert_eq!(h.state().train.data, other.display().to_string());

    // Settings: the model file (a .safetensors filter), then no dialog for the database: it
    // says so beside the field, and typing still works.
    h.state_mut().tab = Tab::Settings;
    h.step();
    let model = dir.path().join("m.safetensors");
    answer(&s, Outcome::Picked(model.clone()));
    browse(&mut h, 0);
    assert_eq!(h.state().model_path_input(), model.display().to_string());
    let asked = s.asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked.kind, DialogKind::OpenFile);
    assert_eq!(asked.filters[0].1, ["safetensors"]);
    answer(
        &s,
        Outcome::Unavailable("no file dialog can be shown here: no desktop session bus".into()),
    );
    browse(&mut h, 1);
    assert!(
        h.query_by_label_contains("no desktop session bus. Type the path in the field instead.")
            .is_some(),
        "the reason is not on screen"
    );
    let db = dir.path().join("next.sqlite");
    h.state_mut().db_path_input = db.display().to_string();
    h.step();
    h.get_by_label("Use this database").click();
    h.step();
    assert_eq!(h.state().settings.db_path.as_deref(), Some(db.as_path()));
    assert_eq!(
        h.state().db_path(),
        dir.path().join("h.sqlite"),
        "the database in use changes at the next start, not now"
    );
    assert!(h.query_by_label_contains("from the next start").is_some());

    // History: Export CSV… asks where (a dated name), writes there and names the whole path.
    h.state_mut().tab = Tab::History;
    h.step();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| a
        .history
        .result
        .is_some()));
    let csv = dir.path().join("exports").join("chosen.csv");
    std::fs::create_dir(csv.parent().unwrap()).unwrap();
    answer(&s, Outcome::Picked(csv.clone()));
    h.get_by_label("Export CSV…").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .history
            .exported
            .is_some()),
        "nothing exported"
    );
    let asked = s.asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked.kind, DialogKind::SaveFile);
    let name = asked.file_name.unwrap();
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    assert_eq!(name, format!("defect-history-{today}.csv"));
    assert!(
        csv.is_file(),
        "{:?}",
        h.state().history.exported.as_ref().unwrap()
    );
    h.step();
    let msg = format!("rows to {}", csv.display());
    assert!(
        h.query_by_label_contains(&msg).is_some(),
        "the message does not give the full path {msg}"
    );
}

/// The form's labels are whole (nothing runs past the settings column), the CLI's options are
/// there, and loss and accuracy have their own axes.
#[test]
fn train_form_labels_are_whole_and_loss_and_accuracy_have_their_own_axes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    h.state_mut().tab = Tab::Train;
    h.run_steps(3);
    // The central panel (the curves) starts just right of the settings column: nothing in the
    // column may reach under it, where it would be cut off.
    let boundary = h.get_by_label("Training loss (per step)").rect().left();
    let mut checked = 0;
    for role in [
        Role::Label,
        Role::CheckBox,
        Role::Button,
        Role::TextInput,
        Role::ComboBox,
        Role::SpinButton,
    ] {
        for n in h.query_all(By::new().role(role)) {
            let r = n.rect();
            // The settings column: below the tab bar, above the status bar.
            if r.left() < boundary - 40.0 && r.top() > 40.0 && r.bottom() < 850.0 {
                checked += 1;
                assert!(
                    r.right() <= boundary - 6.0,
                    "{role:?} {:?} runs past the settings column ({r:?}; the curves start at {boundary})",
                    n.accesskit_node().value().or(n.accesskit_node().label()),
                );
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} widgets in the settings column"
    );
    // The command line's options, each with its label before it.
    for (role, name) in [
        (Role::TextInput, "PASS classes"),
        (Role::SpinButton, "Batch size"),
        (Role::ComboBox, "Backend"),
        (Role::ComboBox, "Preset"),
    ] {
        let control = h.get_by_role_and_label(role, name).rect();
        let label = h
            .query_all(By::new().role(Role::Label).label(name))
            .next()
            .unwrap_or_else(|| panic!("no label {name}"))
            .rect();
        assert!(
            label.right() <= control.left(),
            "{name}: {label:?} {control:?}"
        );
    }
    // Loss up to 2.4, accuracy 0.5–0.9: the accuracy axis stays on 0–1.
    {
        let t = &mut h.state_mut().train;
        t.steps = (0..40)
            .map(|i| [i as f64 / 10.0, 2.4 - i as f64 * 0.05])
            .collect();
        t.history = (1..=4)
            .map(|e| inspector::training::EpochRecord {
                epoch: e,
                train_loss: 1.0,
                train_accuracy: 0.5 + 0.1 * e as f64,
                val_accuracy: 0.45 + 0.1 * e as f64,
                val_macro_f1: 0.5,
                val_auroc: None,
                lr: 0.01,
                elapsed_s: 1.0,
                eta_s: 1.0,
            })
            .collect();
    }
    h.run_steps(3);
    let ctx = h.ctx.clone();
    let bounds = |id| {
        egui_plot::PlotMemory::load(&ctx, id)
            .map(|m| *m.bounds())
            .unwrap()
    };
    let loss = bounds(inspector::ui::train::loss_plot_id());
    let acc = bounds(inspector::ui::train::accuracy_plot_id());
    assert!(loss.max()[1] >= 2.4, "loss axis {loss:?}");
    assert!(
        acc.max()[1] <= 1.1 && acc.min()[1] <= 0.0 + 1e-9,
        "the accuracy axis is not its own 0–1 scale: {acc:?}"
    );
}

/// Cancel keeps the last finished epoch; Resume goes on from it to the end, and the curves
/// show every epoch once.
#[test]
fn cancel_keeps_the_last_finished_epoch_and_resume_continues_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    tiny_dataset(&data, 12);
    let mut h = harness_on(dir.path(), Tab::Train);
    {
        let t = &mut h.state_mut().train;
        t.data = data.display().to_string();
        t.preset = "tiny".into();
        t.epochs = 300;
        t.lr = 0.05;
        t.backend = inspector::training::BackendKind::Cpu;
    }
    // Lay the form out with these settings first: a click lands where the button is now.
    h.run_steps(2);
    h.get_by_label("Start training").click();
    assert!(
        step_until(&mut h, Duration::from_secs(300), |a| a.train.history.len()
            >= 2),
        "{}",
        h.state().train.status
    );
    h.get_by_label("Cancel training").click();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| !a
        .train
        .running()));
    let point = h.state().train.resume_from.clone();
    let status = h.state().train.status.clone();
    let Some(point) = point else {
        panic!("no resume point: {status}")
    };
    let kept = point.epoch;
    assert!(kept >= 2, "{status}");
    assert!(
        status.contains(&format!("epoch {kept} is kept")),
        "{status}"
    );
    h.step();
    // Resume: the same run goes on from the next epoch.
    h.get_by_label("Resume training").click();
    h.step();
    assert!(h.state().train.running());
    let want = format!("resuming at epoch {}", kept + 1);
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .train
            .status
            .contains(&want)
            || a.train.status.starts_with("epoch")),
        "{}",
        h.state().train.status
    );
    let shown = h.state().train.history.len();
    assert!(
        shown >= kept,
        "the curves lost the kept epochs: {shown} shown"
    );
    // Early stopping (patience 10) ends it; the history runs 1, 2, … without a repeat or gap.
    assert!(
        step_until(&mut h, Duration::from_secs(600), |a| !a.train.running()),
        "the resumed run did not finish"
    );
    let t = &h.state().train;
    assert!(t.status.starts_with("finished"), "{}", t.status);
    let epochs: Vec<usize> = t.history.iter().map(|e| e.epoch).collect();
    assert!(epochs.len() > kept, "{epochs:?}");
    assert_eq!(epochs, (1..=epochs.len()).collect::<Vec<_>>());
    let out = &t.result.as_ref().unwrap().summary.model;
    assert_eq!(out, &point.cfg.out, "the resumed run is the cancelled one");
    assert!(out.is_file());
}

#[test]
fn history_filters_have_their_label_before_the_control() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    h.state_mut().tab = Tab::History;
    h.run_steps(3);
    h.state_mut().history.range = 4; // custom: From and Until appear
    h.run_steps(2);
    for (role, name) in [
        (Role::ComboBox, "Time"),
        (Role::TextInput, "From"),
        (Role::TextInput, "Until"),
        (Role::ComboBox, "Verdict"),
        (Role::ComboBox, "Class"),
        (Role::ComboBox, "Model"),
        (Role::ComboBox, "Overridden"),
        (Role::TextInput, "Search"),
    ] {
        let control = h.get_by_role_and_label(role, name).rect();
        let label = h
            .query_all(By::new().role(Role::Label).label(name))
            .next()
            .unwrap_or_else(|| panic!("no label {name}"))
            .rect();
        let same_row = label.top() < control.bottom() && control.top() < label.bottom();
        assert!(
            same_row && label.right() <= control.left(),
            "{name}: label {label:?} is not before its control {control:?}"
        );
    }
}

/// A drag over the mask canvas paints one continuous stroke (every pixel on the path), and
/// Undo gives back the mask exactly as it was, soft values included, in memory and on disk.
#[test]
fn a_drag_paints_a_continuous_stroke_and_undo_restores_the_mask_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("set");
    std::fs::create_dir_all(data.join("masks")).unwrap();
    let (w, h_px) = (120u32, 90u32);
    image::GrayImage::from_fn(w, h_px, |x, y| image::Luma([((x * 2 + y) % 256) as u8]))
        .save(data.join("part.png"))
        .unwrap();
    // A soft mask: a blob with graded edges in the top-left corner.
    let before = image::GrayImage::from_fn(w, h_px, |x, y| {
        let d = ((x as f32 - 12.0).powi(2) + (y as f32 - 12.0).powi(2)).sqrt();
        image::Luma([if d < 6.0 {
            255
        } else if d < 9.0 {
            120
        } else {
            0
        }])
    });
    before.save(data.join("masks/part.png.png")).unwrap();
    std::fs::write(
        data.join("manifest.csv"),
        "path,label,split,mask,group\npart.png,crack,,masks/part.png.png,\n",
    )
    .unwrap();
    let mut h = harness_on(dir.path(), Tab::Label);
    h.state_mut().label.folder = data.display().to_string();
    h.step();
    h.get_by_label("Open").click();
    assert!(step_until(&mut h, Duration::from_secs(10), |a| a
        .label
        .mask_pixels()
        .is_some()
        && a.label.canvas.is_some()));
    h.run_steps(2);
    assert_eq!(
        h.state().label.mask_pixels().unwrap().2,
        before.as_raw().as_slice(),
        "the mask loads as stored"
    );
    h.state_mut().label.brush = 2.0;
    h.step();
    let canvas = h.state().label.canvas.unwrap();
    let scale = canvas.width() / w as f32;
    let to_screen = |x: f32, y: f32| canvas.min + egui::vec2(x * scale, y * scale);
    // From (30, 60) to (100, 20) in image pixels, in 7 pointer events ~11 px apart: five
    // times the brush radius, so separate dabs would leave gaps.
    let (a, b) = ((30.0f32, 60.0f32), (100.0f32, 20.0f32));
    h.hover_at(to_screen(a.0, a.1));
    h.step();
    h.drag_at(to_screen(a.0, a.1));
    h.step();
    for k in 1..=7 {
        let t = k as f32 / 7.0;
        h.hover_at(to_screen(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
        h.step();
    }
    h.drop_at(to_screen(b.0, b.1));
    h.run_steps(2);
    let (mw, _, px) = h.state().label.mask_pixels().unwrap();
    let mut gaps = Vec::new();
    for i in 0..=200 {
        let t = i as f32 / 200.0;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        let (xi, yi) = (x.floor() as u32, y.floor() as u32);
        if px[(yi * mw + xi) as usize] != 255 {
            gaps.push((xi, yi));
        }
    }
    assert!(gaps.is_empty(), "the stroke has gaps at {gaps:?}");
    let painted = px.iter().filter(|&&p| p == 255).count();
    let blob = before.pixels().filter(|p| p.0[0] == 255).count();
    assert!(painted > blob + 80, "only {painted} pixels painted");
    // The soft blob is untouched by the stroke.
    assert_eq!(px[(12 * mw + 12) as usize], 255);
    let mask_file = data.join("masks/part.png.png");
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| image::open(&mask_file)
            .is_ok_and(|m| m
                .to_luma8()
                .pixels()
                .filter(|p| p.0[0] == 255)
                .count()
                == painted)),
        "the stroke was not saved"
    );

    // Undo: exactly the mask before the stroke, soft edges and all.
    h.get_by_label("Undo").click();
    h.run_steps(2);
    assert_eq!(
        h.state().label.mask_pixels().unwrap().2,
        before.as_raw().as_slice(),
        "Undo did not restore the mask exactly"
    );
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| image::open(&mask_file)
            .is_ok_and(|m| m.to_luma8().as_raw() == before.as_raw())),
        "the file on disk is not the mask before the stroke"
    );
}

/// The Train tab's dataset field comes back after a restart (it used to reset to the demo set):
/// it is written to the settings file with the other settings.
#[test]
fn the_train_dataset_field_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config/settings.json");
    let f = file.clone();
    let mut h = common::harness(
        inspector::records::settings::Settings::default(),
        move |app| app.set_settings_file(f),
    );
    h.state_mut().tab = Tab::Train;
    h.step();
    let data = dir.path().join("my-tiles").display().to_string();
    common::type_into(&mut h, "Dataset folder", &data);
    let want = Some(std::path::PathBuf::from(&data));
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| {
            inspector::records::settings::load_file(&file).is_some_and(|s| s.train_data == want)
        }),
        "not in the settings file: {:?}",
        std::fs::read_to_string(&file)
    );
    drop(h);
    let saved = inspector::records::settings::load_file(&file).unwrap();
    let mut h = common::harness(saved, |_| {});
    h.state_mut().tab = Tab::Train;
    h.step();
    assert_eq!(h.state().train.data, data);
}
