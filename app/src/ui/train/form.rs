//! The Train tab's form: data, preset, optimizer, schedule, augmentation and anomaly
//! settings, with the CLI's option names.

use egui::{RichText, vec2};

use crate::training::{self, BackendKind, OptimizerKind};
use crate::ui::file_dialog::{DialogKind, DialogRequest, Target};
use crate::ui::state::InspectorApp;

/// Width of the settings column (the form's labels and controls fit in it whole).
pub const SETTINGS_WIDTH: f32 = 360.0;

pub(in crate::ui) fn settings(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    let running = app.train.running();
    let backbone = training::PRESETS
        .iter()
        .find(|p| p.name == app.train.preset)
        .is_some_and(|p| p.backbone.is_some());
    ui.add_enabled_ui(!running, |ui| {
        let l = ui.label("Dataset folder");
        ui.horizontal(|ui| {
            let t = &mut app.train;
            ui.add(
                egui::TextEdit::singleline(&mut t.data)
                    .desired_width(ui.available_width() - 96.0)
                    .id_salt("train-data"),
            )
            .labelled_by(l.id);
            let near = t.data.clone();
            app.dialogs.button_ui(ui, Target::TrainDataset, || {
                DialogRequest::new(DialogKind::PickFolder, "Dataset folder to train on", &near)
            });
        });
        app.dialogs.note_ui(ui, Target::TrainDataset);
        if let Some(set) = &app.label.set
            && ui.button("Use the Label tab's dataset").clicked()
        {
            app.train.data = set.root.display().to_string();
        }
        let t = &mut app.train;
        // Labels in their own column, controls in the next: every label is read whole.
        egui::Grid::new("train-grid")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let field =
                    |ui: &mut egui::Ui, label: &str, text: &mut String, id: &str, hint: &str| {
                        let l = ui.label(label);
                        ui.add(
                            egui::TextEdit::singleline(text)
                                .desired_width(170.0)
                                .hint_text(hint)
                                .id_salt(id),
                        )
                        .labelled_by(l.id);
                        ui.end_row();
                    };
                field(
                    ui,
                    "Training split",
                    &mut t.split_train,
                    "split-train",
                    "train",
                );
                field(ui, "Val split", &mut t.split_val, "split-val", "val");
                field(
                    ui,
                    "PASS classes",
                    &mut t.pass,
                    "pass-classes",
                    "auto (good, ok, …)",
                );
                ui.label("Model kind");
                ui.radio_value(&mut t.anomaly, false, "Classifier (labelled defects)");
                ui.end_row();
                ui.label("");
                ui.radio_value(&mut t.anomaly, true, "Anomaly: good parts only");
                ui.end_row();
                if t.anomaly && !backbone {
                    // An anomaly model needs the pretrained backbone's features.
                    t.preset = training::DEFAULT_PRESET.into();
                }
                let l = ui.label("Preset");
                egui::ComboBox::from_id_salt("preset")
                    .selected_text(t.preset.clone())
                    .show_ui(ui, |ui| {
                        for p in training::PRESETS
                            .iter()
                            .filter(|p| !t.anomaly || p.backbone.is_some())
                        {
                            ui.selectable_value(&mut t.preset, p.name.to_string(), p.name)
                                .on_hover_text(p.about);
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                if t.anomaly {
                    let l = ui.label("Memory bank");
                    ui.add(
                        egui::DragValue::new(&mut t.bank)
                            .range(
                                0..=crate::training::anomaly::BANK_BUDGET_BYTES as usize
                                    / (232 * 4),
                            )
                            .custom_formatter(|v, _| {
                                if v == 0.0 {
                                    "auto".into()
                                } else {
                                    format!("{v:.0} entries")
                                }
                            }),
                    )
                    .labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label("False-reject target");
                    ui.add(
                        egui::DragValue::new(&mut t.false_reject_pct)
                            .range(0.0..=50.0)
                            .speed(0.1)
                            .suffix(" %"),
                    )
                    .labelled_by(l.id);
                    ui.end_row();
                }
                let l = ui.label("Optimizer");
                let names = [
                    (OptimizerKind::Sgd, "SGD"),
                    (OptimizerKind::Momentum, "SGD + momentum"),
                    (OptimizerKind::Adam, "Adam"),
                    (OptimizerKind::Adamw, "AdamW"),
                ];
                let shown = names
                    .iter()
                    .find(|(o, _)| *o == t.optimizer)
                    .map_or("", |(_, n)| n);
                let classic = !t.anomaly;
                ui.add_enabled_ui(classic, |ui| {
                    egui::ComboBox::from_id_salt("optimizer")
                        .selected_text(shown)
                        .show_ui(ui, |ui| {
                            for (o, n) in names {
                                ui.selectable_value(&mut t.optimizer, o, n);
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                ui.end_row();
                let l = ui.label("Epochs");
                ui.add_enabled(classic, egui::DragValue::new(&mut t.epochs).range(1..=500))
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Learning rate");
                ui.add_enabled(
                    classic,
                    egui::DragValue::new(&mut t.lr)
                        .range(1e-5..=1.0)
                        .speed(0.001)
                        .max_decimals(5),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Batch size");
                ui.add_enabled(
                    !backbone,
                    egui::DragValue::new(&mut t.batch_size)
                        .range(1..=1024)
                        .suffix(" images"),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Backend");
                ui.add_enabled_ui(!backbone, |ui| {
                    egui::ComboBox::from_id_salt("backend")
                        .selected_text(backend_name(t.backend))
                        .show_ui(ui, |ui| {
                            for b in [BackendKind::Auto, BackendKind::Cpu, BackendKind::Wgpu] {
                                ui.selectable_value(&mut t.backend, b, backend_name(b));
                            }
                        })
                        .response
                        .labelled_by(l.id);
                });
                ui.end_row();
                let l = ui.label("Augmentation");
                ui.add_enabled(classic, egui::Checkbox::new(&mut t.augment, "on"))
                    .labelled_by(l.id);
                ui.end_row();
            });
        let note = |ui: &mut egui::Ui, text: &str| {
            // Wrap within what the column shows (its clip rect), whatever widened the layout.
            let width = (ui.clip_rect().right() - ui.cursor().left() - 8.0).max(120.0);
            ui.allocate_ui(vec2(width, 0.0), |ui| {
                ui.set_max_width(width);
                ui.add(egui::Label::new(RichText::new(text).size(11.5).weak()).wrap());
            });
        };
        note(
            ui,
            "PASS classes: the defect-free classes, separated by commas; empty: the classes named \
             good, ok, pass, normal or free.",
        );
        if app.train.anomaly {
            note(
                ui,
                "Anomaly model: learns from the good (PASS) images of the training split only — \
                 for a new product without labelled defects; defect images there are ignored. \
                 With defective val images, a review band like a classifier's (auto-pass miss \
                 ≤ 1 %, auto-fail false reject ≤ 2 %, REVIEW between); with good val images only, \
                 one threshold keeping their false-reject rate within the target. Optimizer, \
                 epochs, learning rate and augmentation do not apply.",
            );
        } else if backbone {
            note(
                ui,
                "This preset trains its head on the CPU on cached backbone features, 2048 feature \
                 rows per step: batch size and backend apply to the whole-image presets; the head \
                 is picked by cross-validation, val sets the review band.",
            );
        } else {
            note(
                ui,
                "Backend auto: the GPU, or the CPU when the only GPU is a software rasteriser.",
            );
        }
        note(
            ui,
            "Augmentation: flips, rotation, brightness/contrast and crops of the training images.",
        );
        note(
            ui,
            "Unlabelled images are skipped; without a val split, 15 % of each class is held out \
             (whole groups).",
        );
    });
    ui.horizontal_wrapped(|ui| {
        if ui
            .add_enabled(
                !running,
                egui::Button::new(RichText::new("Start training").strong()),
            )
            .clicked()
        {
            let gpu = app.gpu.clone();
            app.train.start(&gpu, ctx);
        }
        if ui
            .add_enabled(running, egui::Button::new("Cancel training"))
            .clicked()
        {
            app.train.cancel();
        }
        if let Some(p) = app.train.resume_from.as_ref().filter(|_| !running) {
            let hover = format!(
                "continue the cancelled run from epoch {} ({} of {} epochs done; dataset {}, preset {})",
                p.epoch + 1,
                p.epoch,
                p.cfg.epochs,
                p.cfg.data.display(),
                p.cfg.preset
            );
            if ui
                .button(RichText::new("Resume training").strong())
                .on_hover_text(hover)
                .clicked()
            {
                let gpu = app.gpu.clone();
                app.train.resume(&gpu, ctx);
            }
        }
        if running {
            ui.spinner();
        }
    });
    let t = &app.train;
    if let Some(s) = t.started.filter(|_| t.running()) {
        let left = t
            .eta_s
            .map(|e| format!(" · about {} left", seconds(e)))
            .unwrap_or_default();
        ui.label(format!(
            "running for {}{left}",
            seconds(s.elapsed().as_secs_f64())
        ));
    }
    let color = if t.status.starts_with("ERROR") {
        ui.visuals().error_fg_color
    } else {
        ui.visuals().text_color()
    };
    ui.add(egui::Label::new(RichText::new(&t.status).color(color)).wrap());
}

pub(in crate::ui) fn backend_name(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Auto => "auto",
        BackendKind::Cpu => "CPU (burn flex)",
        BackendKind::Wgpu => "GPU (burn wgpu)",
    }
}

/// Grid steps for a short y axis: four to six labelled lines (1, 2, 2.5 or 5 × 10ⁿ apart) over
/// what is shown; egui_plot's default (powers of ten) leaves only 0 and 1 labelled on 125 px.
pub(in crate::ui) fn about_four_labels(input: egui_plot::GridInput) -> [f64; 3] {
    let span = (input.bounds.1 - input.bounds.0).abs().max(1e-9);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let large = power
        * match raw / power {
            m if m <= 1.0 => 1.0,
            m if m <= 2.0 => 2.0,
            m if m <= 2.5 => 2.5,
            m if m <= 5.0 => 5.0,
            _ => 10.0,
        };
    [large / 10.0, large / 2.0, large]
}

/// "good, ok" → ["good", "ok"]: the PASS classes typed in the form.
pub fn pass_list(typed: &str) -> Vec<String> {
    typed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A training error in the form's words: the library names command-line options.
pub fn for_the_form(e: &str) -> String {
    e.replace(
        "name the PASS classes with --pass CLASS",
        "type the PASS classes in the form",
    )
    .replace("--pass ", "PASS class ")
    .replace("(pass: ", "(PASS classes typed: ")
    .replace("lower --lr", "lower the learning rate")
}

/// "42 s", "3 min 5 s".
pub(in crate::ui) fn seconds(s: f64) -> String {
    let s = s.round() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}
