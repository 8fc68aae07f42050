//! egui_kittest drives the Label and Train tabs: label three images with the keyboard and find
//! the manifest updated; paint a mask and find the PNG; train on a tiny dataset, see progress
//! and a finished model, save it as a version; cancel a run.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use inspector::ui::{InspectorApp, Tab};

mod common;
use common::{harness_in as harness, harness_on, step_until, tiny_dataset};

/// [`common::type_into`], then leaves the field so number keys label images again.
fn type_into(h: &mut Harness<'static, InspectorApp>, label: &str, text: &str) {
    common::type_into(h, label, text);
    h.key_press(egui::Key::Escape);
    h.step();
}

/// Opens `folder` in the Label tab (typed into its field, then Open) and waits until it is open.
fn open_dataset(h: &mut Harness<'static, InspectorApp>, folder: &std::path::Path) {
    type_into(h, "Dataset folder", &folder.display().to_string());
    h.get_by_label("Open").click();
    assert!(step_until(h, Duration::from_secs(10), |a| a
        .label
        .set
        .is_some()));
}

#[test]
fn label_three_images_with_the_keyboard_and_paint_a_mask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("unlabelled");
    std::fs::create_dir(&data).unwrap();
    for i in 0..4 {
        image::GrayImage::from_fn(80, 60, |x, y| image::Luma([((x + y + i * 9) % 256) as u8]))
            .save(data.join(format!("img{i}.png")))
            .unwrap();
    }
    let mut h = harness_on(dir.path(), Tab::Label);
    open_dataset(&mut h, &data);
    assert_eq!(h.state().label.set.as_ref().unwrap().rows.len(), 4);
    for class in ["good", "crack"] {
        type_into(&mut h, "New class", class);
        h.get_by_label("Add class").click();
        h.step();
    }
    assert_eq!(
        h.state().label.set.as_ref().unwrap().classes,
        ["good", "crack"]
    );
    // Keys 1, 2, 1 label three images, each moving on to the next.
    for key in [egui::Key::Num1, egui::Key::Num2, egui::Key::Num1] {
        h.key_press(key);
        h.step();
    }
    let manifest = data.join("manifest.csv");
    let want = "img0.png,good,,,\nimg1.png,crack,,,\nimg2.png,good,,,\nimg3.png,,,,\n";
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| {
            std::fs::read_to_string(&manifest).is_ok_and(|m| m.ends_with(want))
        }),
        "manifest: {:?}",
        std::fs::read_to_string(&manifest)
    );
    // Back to the first image and paint on it.
    for _ in 0..3 {
        h.key_press(egui::Key::ArrowLeft);
        h.step();
    }
    assert_eq!(h.state().label.selected, Some(0));
    assert!(step_until(&mut h, Duration::from_secs(10), |a| a
        .label
        .canvas
        .is_some()));
    h.run_steps(2);
    let canvas = h.state().label.canvas.unwrap();
    let start = canvas.center();
    h.hover_at(start);
    h.step();
    h.drag_at(start);
    h.step();
    for k in 1..=5 {
        h.hover_at(start + egui::vec2(6.0 * k as f32, 0.0));
        h.step();
    }
    assert!(
        h.state().label.painted().unwrap() > 20,
        "the brush paints while dragging"
    );
    h.drop_at(start + egui::vec2(30.0, 0.0));
    h.run_steps(2);
    let mask = data.join("masks/img0.png.png");
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| mask.is_file()),
        "no mask written; status {:?}",
        h.state().label.status
    );
    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!(m.dimensions(), (80, 60), "the mask has the image's size");
    let painted = m.pixels().filter(|p| p.0[0] == 255).count();
    assert!(painted > 20, "only {painted} pixels painted");
    assert!(
        step_until(&mut h, Duration::from_secs(10), |_| {
            std::fs::read_to_string(&manifest)
                .is_ok_and(|m| m.contains("img0.png,good,,masks/img0.png.png,"))
        }),
        "mask column not in manifest: {:?}",
        std::fs::read_to_string(&manifest)
    );
    // Undo removes the stroke.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.step();
    assert!(step_until(&mut h, Duration::from_secs(10), |_| {
        image::open(&mask).is_ok_and(|m| m.to_luma8().pixels().all(|p| p.0[0] == 0))
    }));
}

#[test]
fn train_tab_trains_saves_a_version_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    tiny_dataset(&data, 12);
    let mut h = harness_on(dir.path(), Tab::Train);
    type_into(&mut h, "Dataset folder", &data.display().to_string());
    {
        let t = &mut h.state_mut().train;
        t.preset = "tiny".into();
        t.epochs = 4;
        t.lr = 0.05;
    }
    // Lay the form out with these settings first: a click lands where the button is now.
    h.run_steps(2);
    h.get_by_label("Start training").click();
    h.step();
    assert!(h.state().train.running());
    assert!(
        step_until(&mut h, Duration::from_secs(600), |a| !a.train.running()),
        "training did not finish"
    );
    let t = &h.state().train;
    assert!(t.status.starts_with("finished"), "{}", t.status);
    assert!(!t.history.is_empty(), "no epoch progress was shown");
    let res = t.result.as_ref().unwrap();
    assert!(res.summary.model.is_file());
    assert_eq!(res.detailed.report.images, 6);
    h.step();
    assert!(h.query_by_label_contains("Confusion").is_some());
    // A part eval flags as a likely label error is named under the per-part figures.
    assert!(
        h.query_by_label_contains("Check the label of part")
            .is_none()
    );
    h.state_mut()
        .train
        .result
        .as_mut()
        .unwrap()
        .detailed
        .report
        .suspect_parts
        .push(inspector::evaluation::parts::SuspectPart {
            group: "g42".into(),
            label: "good".into(),
            images: 6,
            contradicting: vec![
                "good/3.png".into(),
                "good/7.png".into(),
                "good/11.png".into(),
            ],
            score_range: (0.97, 0.99),
        });
    h.run_steps(2);
    assert!(
        h.query_by_label_contains(
            "Check the label of part g42 (good): 3 of its 6 images score like the other kind \
             (0.97–0.99), e.g. good/3.png"
        )
        .is_some()
    );
    // "Show in Label" opens the dataset in the Label tab with that image in the editor.
    h.get_by_label("Show in Label").click();
    h.run_steps(2);
    assert_eq!(h.state().tab, Tab::Label);
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .label
            .set
            .as_ref()
            .zip(a.label.selected)
            .is_some_and(|(set, i)| set.rows[i].path == "good/3.png")),
        "{}",
        h.state().label.status
    );
    assert!(h.state().label.status.contains("possible label error"));
    h.state_mut().tab = Tab::Train;
    h.run_steps(2);
    // Save it as a version and find it listed.
    type_into(&mut h, "Version name", "tiny-v1");
    // The results sit below the two curves: bring the button into view before clicking it.
    h.get_by_label("Save version").scroll_to_me();
    h.run_steps(10);
    h.get_by_label("Save version").click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), |a| a
            .train
            .status
            .contains("saved version tiny-v1")),
        "{}",
        h.state().train.status
    );
    assert!(dir.path().join("versions/tiny-v1.safetensors").is_file());
    h.step();
    // Cancel a long run: it stops within a second of the request.
    h.state_mut().train.epochs = 500;
    h.get_by_label("Start training").click();
    h.step();
    let ok = step_until(&mut h, Duration::from_secs(120), |a| {
        a.train.status.starts_with("epoch")
    });
    assert!(ok, "status: {}", h.state().train.status);
    h.get_by_label("Cancel training").click();
    let asked = Instant::now();
    assert!(step_until(&mut h, Duration::from_secs(30), |a| !a
        .train
        .running()));
    let took = asked.elapsed();
    assert!(
        h.state().train.status.starts_with("cancelled"),
        "{}",
        h.state().train.status
    );
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
}

/// "Predict with active model" shows its progress, can be cancelled (keeping what it has), and
/// a full run feeds the "mispredicted" filter.
#[test]
fn predict_with_the_active_model_shows_progress_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    // Enough images that the cancel lands before the end even on a fast GPU.
    tiny_dataset(&data, 30);
    let mut h = harness(dir.path());
    assert!(step_until(&mut h, Duration::from_secs(120), |a| a
        .model
        .is_some()));
    h.state_mut().tab = Tab::Label;
    h.step();
    open_dataset(&mut h, &data);
    h.run_steps(2);
    // Cancel at once: the run stops early and says what it kept.
    h.get_by_label("Predict with active model").click();
    h.step();
    assert!(h.query_by_label_contains("predicting ").is_some());
    h.get_by_label("Cancel prediction").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |a| a
            .label
            .status
            .starts_with("cancelled: kept the")),
        "status {:?}",
        h.state().label.status
    );
    // A whole run: predictions show as they arrive, before it ends (batch by batch).
    h.get_by_label("Predict with active model").click();
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a
            .label
            .predicted()
            .is_some_and(|n| n > 0)),
        "status {:?}",
        h.state().label.status
    );
    let so_far = h.state().label.predicted().unwrap();
    assert!(
        h.state().label.predicting() && so_far < 60,
        "{so_far} predicted, still running: {}",
        h.state().label.predicting()
    );
    assert!(h.query_by_label_contains("predicting ").is_some());
    assert!(
        step_until(&mut h, Duration::from_secs(120), |a| a.label.status
            == "predicted 60 images with the active model"),
        "status {:?}",
        h.state().label.status
    );
    assert!(h.query_by_label_contains("predicting ").is_none());
    assert_eq!(h.state().label.predicted(), Some(60));
}

/// The Train tab trains an anomaly model from the good parts only: the kind is chosen in the
/// form, the preset falls back to a backbone one, and the results say how the threshold was
/// chosen and how large the memory bank is.
#[test]
fn train_tab_trains_an_anomaly_model_from_good_parts_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    tiny_dataset(&data, 16);
    let mut h = harness(dir.path());
    h.state_mut().tab = Tab::Train;
    h.state_mut().train.preset = "tiny".into();
    h.step();
    type_into(&mut h, "Dataset folder", &data.display().to_string());
    h.get_by_label("Anomaly: good parts only").click();
    h.run_steps(3);
    assert!(h.state().train.anomaly);
    assert_eq!(
        h.state().train.preset,
        inspector::training::DEFAULT_PRESET,
        "a whole-image preset gives way to the backbone"
    );
    h.state_mut().train.preset = "lite0-tiny".into();
    h.step();
    h.get_by_label("Start training").click();
    let clicked = Instant::now();
    h.step();
    assert!(
        step_until(&mut h, Duration::from_secs(600), |a| !a.train.running()),
        "training did not finish"
    );
    let waited = clicked.elapsed().as_secs_f64();
    let t = &h.state().train;
    assert!(t.status.starts_with("finished"), "{}", t.status);
    // An anomaly run in its own words, not "best epoch 1".
    assert!(
        t.status.contains("anomaly model, memory bank of")
            && t.status.contains("val miss")
            && !t.status.contains("epoch"),
        "{}",
        t.status
    );
    let res = t.result.as_ref().unwrap();
    // The time reported is the time waited, the final evaluation included.
    assert!(
        res.wall_s <= waited
            && res.wall_s >= waited - 2.0
            && res.wall_s >= res.summary.train_seconds,
        "reported {} s, waited {waited} s, training loop {} s",
        res.wall_s,
        res.summary.train_seconds
    );
    assert_eq!(
        res.summary.train_images, 12,
        "the good training images only"
    );
    assert_eq!(res.summary.ignored_defects, 12);
    assert!(res.summary.bank_entries.is_some());
    assert_eq!(res.detailed.report.images, 8);
    let model = kernels::Model::load(&res.summary.model).unwrap();
    assert!(model.spec.is_anomaly());
    h.run_steps(3);
    assert!(
        h.query_by_label_contains(
            "chosen by training (miss rate ≤ 1.0 % on 4 defective val images"
        )
        .is_some()
    );
    assert!(h.query_by_label_contains("a memory bank of").is_some());
    // The threshold line lies on the histogram's axis, wherever the scores are.
    let threshold = h.state().train.threshold as f64;
    let ctx = h.ctx.clone();
    let mem = egui_plot::PlotMemory::load(&ctx, inspector::ui::train::threshold_plot_id()).unwrap();
    let b = *mem.bounds();
    assert!(
        b.min()[0] <= threshold && threshold <= b.max()[0],
        "threshold {threshold} off the axis {b:?}"
    );
    // Neither the histogram nor anything else reaches past the window's right edge.
    let frame = *mem.transform().frame();
    assert!(
        frame.right() <= ctx.content_rect().right(),
        "histogram {frame:?} clipped"
    );
}

/// Frame times while the Train tab extracts backbone features (issue 24 item 4: the UI must
/// stay responsive; aim ≤ 50 ms p99 on a 2-core machine with lavapipe). As in the window, the
/// app inspects on the device the window renders on (`training::nn::shared_gpu`). A frame here
/// is the UI's run plus what a window's present waits for: one submission on that device's
/// queue, done (kittest's own render reads the image back, which a window does not, so it is
/// left out). Run with `-- --ignored --nocapture frame_times`; `INSPECTOR_ONE_DEVICE=1` gives
/// the figures with extraction on the window's device, as before it had its own. Prints the
/// figures; asserts only that extraction was measured.
#[test]
#[ignore = "a measurement: prints frame times during feature extraction"]
fn frame_times_during_feature_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    tiny_dataset(&data, 60);
    let (_, shared) = inspector::training::nn::shared_gpu().unwrap();
    let gpu = inspector::ui::Gpu {
        device: shared.device.clone(),
        queue: shared.queue.clone(),
        label: shared.describe(),
    };
    let settings = inspector::records::settings::Settings {
        db_path: Some(dir.path().join("h.sqlite")),
        ..Default::default()
    };
    let mut app = InspectorApp::new(egui::Context::default(), gpu, settings);
    app.train.versions_dir = dir.path().join("versions");
    let mut h = Harness::builder()
        .with_size(egui::vec2(1360.0, 900.0))
        .build_ui_state(|ui, app: &mut InspectorApp| app.show(ui), app);
    // One frame: the UI's run, then a submission on the window's queue waited for.
    let frame = |h: &mut Harness<'static, InspectorApp>| {
        let t = Instant::now();
        h.step();
        let run = t.elapsed().as_secs_f64() * 1e3;
        let enc = shared
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let index = shared.queue.submit([enc.finish()]);
        shared
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .unwrap();
        (run, t.elapsed().as_secs_f64() * 1e3)
    };
    h.state_mut().tab = Tab::Train;
    h.step();
    type_into(&mut h, "Dataset folder", &data.display().to_string());
    h.get_by_label("Anomaly: good parts only").click();
    h.run_steps(3);
    h.state_mut().train.preset = "lite0-tiny".into();
    h.step();
    // The same frames with nothing but the station running, for comparison.
    let mut idle: Vec<f64> = (0..20).map(|_| frame(&mut h).1).collect();
    idle.sort_by(f64::total_cmp);
    println!(
        "idle frame time over 20 frames: p50 {:.1} ms, max {:.1} ms",
        idle[10], idle[19]
    );
    h.get_by_label("Start training").click();
    h.step();
    let (mut frames, mut steps) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while h.state().train.running() && started.elapsed() < Duration::from_secs(600) {
        let (step, dt) = frame(&mut h);
        if h.state()
            .train
            .status
            .starts_with("extracting backbone features")
        {
            frames.push(dt);
            steps.push(step);
        }
        std::thread::sleep(Duration::from_millis(16));
    }
    assert!(!frames.is_empty(), "no frame during extraction");
    for (what, mut v) in [("frame (run + queue)", frames), ("UI run only", steps)] {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "{what} during feature extraction over {} frames: p50 {:.1} ms, p90 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            v.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            v[v.len() - 1]
        );
    }
}
