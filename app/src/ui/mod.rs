//! The eframe app: a tab bar (Inspect, Label, Train, History, Settings), a status bar, and the
//! state shared by the tabs. The UI thread only reads channels and shared counters and uploads
//! textures: the pipeline, the history writer and the history queries run in their own threads.
//!
//! - [`state`]: [`InspectorApp`] and the types it holds; `session`: what the operator does to the
//!   running station; `shell`: the per-frame poll and the tab bar and status bar;
//! - the tabs: `inspect`, [`label_tab`], [`train`], [`history_tab`], `settings_tab` (with its
//!   form's state in `source_draft`); [`file_dialog`]: the scripted-or-native file dialogs they
//!   share; `gpu`: the device everything draws and inspects on ([`Gpu`]).
//!
//! The tabs draw parts of [`InspectorApp`] and take it by `&mut`; the app holds each tab's
//! state, whose type lives low in the tab's own module and never names the app, so there is no
//! import cycle. This file only declares the modules, re-exports the app's public surface and
//! starts the window ([`run`]).

pub mod file_dialog;
mod gpu;
pub mod history_tab;
mod inspect;
pub mod label_tab;
mod line_panel;
mod plant_panel;
mod session;
mod settings_tab;
mod shell;
mod source_draft;
pub mod state;
pub mod train;

pub use gpu::Gpu;
pub use state::*;

use std::path::PathBuf;
use std::time::Duration;

use crate::records::settings::{STORAGE_KEY, Settings};
use crate::station::source::SourceSpec;

/// Options of `inspector app` (and of `inspector` with no arguments).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AppArgs {
    /// History database (default: the platform data directory, or the one chosen in Settings).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Start with this source instead of the saved one (folder:<DIR>, camera:<N>, synthetic).
    #[arg(long)]
    pub source: Option<String>,
    /// Start with this model instead of the saved one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Replay rate of folder and synthetic sources, frames per second.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Open this dataset in the Label tab and choose it in the Train tab.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Open on this tab: inspect, label, train, history or settings.
    #[arg(long)]
    pub tab: Option<String>,
    /// Ignore saved settings (a fresh start).
    #[arg(long)]
    pub reset_settings: bool,
    /// Quit after this many seconds (for measurements and screenshots).
    #[arg(long)]
    pub quit_after: Option<f64>,
}

/// Opens the window. Burn creates the device (it needs device features the others don't ask
/// for); the inspection engine and egui's renderer share it.
pub fn run(args: AppArgs) -> anyhow::Result<()> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set). Run it \
             in a desktop session, or under `xvfb-run`; without a window, `inspector inspect \
             --source folder:datasets/magnetic-tile-demo` inspects from the command line"
        );
    }
    let (_burn_device, ctx) = crate::training::nn::shared_gpu()?;
    let gpu = Gpu {
        device: ctx.device.clone(),
        queue: ctx.queue.clone(),
        label: ctx.describe(),
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Defect Inspector")
            .with_inner_size([1360.0, 860.0])
            .with_min_inner_size([900.0, 600.0]),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: eframe::egui_wgpu::WgpuConfiguration {
            wgpu_setup: eframe::egui_wgpu::WgpuSetup::Existing(
                eframe::egui_wgpu::WgpuSetupExisting {
                    instance: ctx.instance.clone(),
                    adapter: ctx.adapter.clone(),
                    device: ctx.device.clone(),
                    queue: ctx.queue.clone(),
                },
            ),
            ..Default::default()
        },
        persist_window: true,
        ..Default::default()
    };
    eframe::run_native(
        "defect-inspector",
        options,
        Box::new(move |cc| {
            // `settings.json` is written at once on every change that alters what the station
            // does, and with eframe's storage: the newest copy, even after a SIGTERM.
            let settings_file = crate::records::settings::default_settings_file();
            let mut settings: Settings = if args.reset_settings {
                Settings::default()
            } else {
                settings_file
                    .as_deref()
                    .and_then(crate::records::settings::load_file)
                    .or_else(|| cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)))
                    .unwrap_or_default()
            };
            if let Some(s) = &args.source {
                settings.source = Some(SourceSpec::parse(s).map_err(anyhow::Error::msg)?);
            }
            if let Some(m) = &args.model {
                settings.model_path = Some(m.clone());
            }
            if let Some(db) = &args.db {
                settings.db_path = Some(db.clone());
            }
            if let Some(fps) = args.fps {
                settings.replay_fps = fps;
            }
            let mut app = InspectorApp::new(cc.egui_ctx.clone(), gpu, settings);
            if let Some(f) = settings_file {
                app.set_settings_file(f);
            }
            app.quit_after = args.quit_after.map(Duration::from_secs_f64);
            if let Some(d) = &args.dataset {
                app.label.folder = d.display().to_string();
                app.label.open(false);
                app.train.data = d.display().to_string();
            }
            match args.tab.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("inspect") => {}
                Some("history") => app.tab = Tab::History,
                Some("label") => app.tab = Tab::Label,
                Some("train") => app.tab = Tab::Train,
                Some("settings") => app.tab = Tab::Settings,
                Some(other) => {
                    return Err(format!(
                        "--tab {other}: use inspect, label, train, history or settings"
                    )
                    .into());
                }
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
