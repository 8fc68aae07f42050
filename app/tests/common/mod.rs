//! Helpers shared by the egui_kittest tests.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses its own subset

use std::path::Path;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use inspector::records::settings::Settings;
use inspector::ui::{Gpu, InspectorApp, Tab};

/// The app on a headless device (lavapipe in CI), drawn by a kittest harness.
pub fn harness(
    settings: Settings,
    setup: impl FnOnce(&mut InspectorApp),
) -> Harness<'static, InspectorApp> {
    let ctx = kernels::GpuContext::headless().expect("a GPU adapter (lavapipe in CI)");
    let gpu = Gpu {
        device: ctx.device.clone(),
        queue: ctx.queue.clone(),
        label: ctx.describe(),
    };
    let mut app = InspectorApp::new(egui::Context::default(), gpu, settings);
    setup(&mut app);
    Harness::builder()
        .with_size(egui::vec2(1360.0, 900.0))
        .build_ui_state(|ui, app: &mut InspectorApp| app.show(ui), app)
}

/// Steps the UI until `done` or the timeout; true when `done` held.
pub fn step_until(
    h: &mut Harness<'static, InspectorApp>,
    timeout: Duration,
    done: impl Fn(&InspectorApp) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        h.step();
        if done(h.state()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// After Pause: steps the UI until the frames already taken from the source (in the bounded
/// queue or being judged at the moment of the pause) have been judged, as the pipeline's
/// in-flight count says. False if they are not within `timeout`.
pub fn wait_until_drained(h: &mut Harness<'static, InspectorApp>, timeout: Duration) -> bool {
    // Frames taken before the pause still land; the pipeline counts them until they do.
    step_until(h, timeout, |a| a.is_paused() && a.counters.in_flight == 0)
}

/// Drags the pointer from `a` to `b` in a few steps, as a hand does (press, move, release).
pub fn drag(h: &mut Harness<'static, InspectorApp>, a: egui::Pos2, b: egui::Pos2) {
    h.hover_at(a);
    h.step();
    h.drag_at(a);
    h.step();
    for k in 1..=4 {
        h.hover_at(a + (b - a) * (k as f32 / 4.0));
        h.step();
    }
    h.drop_at(b);
    h.step();
}

/// The app with its history database and model versions inside `dir` (a test's temp folder).
pub fn harness_in(dir: &Path) -> Harness<'static, InspectorApp> {
    let settings = Settings {
        db_path: Some(dir.join("h.sqlite")),
        ..Settings::default()
    };
    let versions = dir.join("versions");
    harness(settings, |app| app.train.versions_dir = versions)
}

/// Replaces the text of the text field labelled `label` with `text`.
pub fn type_into(h: &mut Harness<'static, InspectorApp>, label: &str, text: &str) {
    h.get_by_role_and_label(Role::TextInput, label).focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_role_and_label(Role::TextInput, label)
        .type_text(text);
    h.step();
}

/// Two classes of 64×64 gray parts: plain ("good") and with a dark blob ("bad").
pub fn tiny_dataset(root: &Path, per_class: usize) {
    let mut manifest = String::from("path,label,split\n");
    for i in 0..per_class {
        for (label, spot) in [("good", false), ("bad", true)] {
            let img = image::GrayImage::from_fn(64, 64, |x, y| {
                let base = 150 + ((x * 7 + y * 3 + i as u32 * 11) % 30) as u8;
                let (cx, cy) = (16 + (i as u32 * 13) % 32, 20 + (i as u32 * 7) % 24);
                let d = (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2);
                image::Luma([if spot && d < 64 { 30 } else { base }])
            });
            let rel = format!("{label}/{i}.png");
            std::fs::create_dir_all(root.join(label)).unwrap();
            img.save(root.join(&rel)).unwrap();
            let split = if i % 4 == 3 { "val" } else { "train" };
            manifest.push_str(&format!("{rel},{label},{split}\n"));
        }
    }
    std::fs::write(root.join("manifest.csv"), manifest).unwrap();
}

/// The app in `dir` (see [`harness_in`]) open on `tab`, drawn once.
pub fn harness_on(dir: &Path, tab: Tab) -> Harness<'static, InspectorApp> {
    let mut h = harness_in(dir);
    h.state_mut().tab = tab;
    h.step();
    h
}
