//! Helpers shared by the egui_kittest tests.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses its own subset

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use inspector::settings::Settings;
use inspector::ui::{Gpu, InspectorApp};

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

/// After Pause: steps the UI until the frames already captured have been judged (the count of
/// inspected parts stays the same for one second; frames in the bounded queue at the moment of
/// the pause are still inspected, which takes longer with a heavier model). False if it never
/// settles within `timeout`.
pub fn wait_until_drained(h: &mut Harness<'static, InspectorApp>, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut last = h.state().counters.inspected;
    let mut since = Instant::now();
    while Instant::now() < end {
        h.step();
        let now = h.state().counters.inspected;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
