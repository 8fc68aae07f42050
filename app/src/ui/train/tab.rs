//! The Train tab drawn: the workers' messages taken in, then the settings form beside the
//! curves, the val results and the model versions.

use std::time::Instant;

use super::form::{SETTINGS_WIDTH, settings};
use super::results::{results, versions_ui};
use super::run::curves;
use super::view::Msg;
use crate::ui::state::InspectorApp;

pub(in crate::ui) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let ctx = ui.ctx().clone();
    if app.train.data.is_empty() {
        app.train.data = app
            .settings
            .train_data
            .as_ref()
            .map(|d| d.display().to_string())
            .or_else(|| app.label.set.as_ref().map(|s| s.root.display().to_string()))
            .unwrap_or_else(|| {
                crate::data::assets::bundled(crate::data::assets::DEMO_DATASET)
                    .display()
                    .to_string()
            });
    }
    if app.train.versions.is_none() {
        app.train.refresh_versions(&ctx);
    }
    // Messages.
    let mut msgs: Vec<Msg> = app
        .train
        .rx
        .as_ref()
        .map(|r| r.try_iter().collect())
        .unwrap_or_default();
    msgs.extend(app.train.side_rx.try_iter());
    for m in msgs {
        let t = &mut app.train;
        match m {
            Msg::Progress(p) => t.on_progress(p, Instant::now()),
            Msg::Evaluating { done, total } => t.on_evaluating(done, total, Instant::now()),
            Msg::Done(r) => {
                t.cancel = None;
                t.rx = None;
                match r {
                    Ok(res) => {
                        t.status = super::run::finished_line(&res);
                        t.threshold = res.summary.threshold;
                        t.pass_threshold = res.summary.pass_threshold;
                        t.gallery = res
                            .gallery
                            .iter()
                            .enumerate()
                            .map(|(i, (img, label))| {
                                (
                                    ctx.load_texture(
                                        format!("gallery-{i}"),
                                        img.clone(),
                                        egui::TextureOptions::LINEAR,
                                    ),
                                    label.clone(),
                                )
                            })
                            .collect();
                        if t.version_name.is_empty() {
                            t.version_name =
                                format!("model-{}", chrono::Local::now().format("%Y%m%d-%H%M"));
                        }
                        t.result = Some(*res);
                    }
                    Err(f) => t.on_failure(f),
                }
            }
            Msg::Saved(r) => match r {
                Ok(v) => {
                    t.status = format!("saved version {} ({})", v.name, v.path.display());
                    t.refresh_versions(&ctx);
                }
                Err(e) => t.status = format!("ERROR: {e}"),
            },
            Msg::Versions(v) => t.versions = Some(v),
            Msg::Compared(c) => t.comparison = Some(c),
        }
    }
    egui::Panel::left("train-settings")
        .resizable(false)
        .exact_size(SETTINGS_WIDTH)
        .show(ui, |ui| settings(app, ui, &ctx));
    // The dataset field is remembered with the other settings.
    let data = app.train.data.trim();
    if !data.is_empty() && app.settings.train_data.as_deref() != Some(std::path::Path::new(data)) {
        app.settings.train_data = Some(data.into());
        app.settings_changed(); // the saver writes the last of a burst of keystrokes
    }
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical()
            .id_salt("train-main")
            .show(ui, |ui| {
                curves(&app.train, ui);
                if app.train.result.is_some() {
                    results(app, ui, &ctx);
                }
                ui.separator();
                versions_ui(app, ui, &ctx);
            });
    });
}
