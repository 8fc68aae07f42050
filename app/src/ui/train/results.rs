//! The Train tab's results: the val confusion matrix, per-class metrics, mispredicted images,
//! threshold tuning on the score histograms, and the model versions (save, list, compare,
//! activate).

use std::path::PathBuf;

use egui::{Color32, RichText, vec2};

use super::view::*;
use crate::records::versions::{self, VersionInfo};
use crate::ui::state::{InspectorApp, Level};

/// The false-reject rate above which a model is not fit for a line at its miss target.
pub const USEFUL_FALSE_REJECT: f64 = 0.40;

/// The val score histogram's id (its `egui_plot::PlotMemory` holds the bounds it shows).
pub fn threshold_plot_id() -> egui::Id {
    egui::Id::unique("train-threshold")
}

pub(in crate::ui) fn results(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    let mut reveal: Option<String> = None;
    let t = &mut app.train;
    let Some(res) = &t.result else { return };
    let r = &res.detailed.report;
    ui.separator();
    // What the panel shows: the confusion grid beside the per-class table may widen the layout
    // beyond it, so the strip and the histogram are held to this width.
    let visible = (ui.clip_rect().right() - ui.cursor().left() - 8.0).max(200.0);
    ui.heading("Validation (through the inspection engine)");
    ui.label(format!(
        "{} images · accuracy {:.3} · macro F1 {:.3} · PASS/FAIL AUROC {}",
        r.images,
        r.accuracy,
        r.macro_f1,
        r.auroc
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "n/a".into())
    ));
    ui.horizontal_top(|ui| {
        ui.vertical(|ui| {
            ui.label(RichText::new("Confusion (rows = true, columns = predicted)").strong());
            egui::Grid::new("confusion").striped(true).show(ui, |ui| {
                ui.label("");
                for c in &r.confusion.labels {
                    ui.label(c);
                }
                ui.end_row();
                for (name, row) in r.confusion.labels.iter().zip(&r.confusion.matrix) {
                    ui.label(name);
                    for n in row {
                        ui.label(n.to_string());
                    }
                    ui.end_row();
                }
            });
        });
        ui.vertical(|ui| {
            ui.label(RichText::new("Per class").strong());
            egui::Grid::new("per-class").striped(true).show(ui, |ui| {
                for h in [
                    "class",
                    "precision",
                    "recall",
                    "F1",
                    "support",
                    "AUROC vs PASS",
                ] {
                    ui.label(h);
                }
                ui.end_row();
                // The weakest defect class is what an engineer fixes first: mark it.
                let weakest = r
                    .per_class
                    .iter()
                    .filter_map(|(n, m)| m.auroc.map(|a| (n, a)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(n, _)| n.clone());
                for (name, m) in &r.per_class {
                    ui.label(name);
                    ui.label(format!("{:.3}", m.precision));
                    ui.label(format!("{:.3}", m.recall));
                    ui.label(format!("{:.3}", m.f1));
                    ui.label(m.support.to_string());
                    match m.auroc {
                        Some(a) if weakest.as_ref() == Some(name) => {
                            ui.label(RichText::new(format!("{a:.3} (weakest)")).strong())
                        }
                        Some(a) => ui.label(format!("{a:.3}")),
                        None => ui.label("—"),
                    };
                    ui.end_row();
                }
            });
            let p = &r.parts;
            ui.label(format!(
                "Per physical part ({} parts, {} defective): AUROC {} · miss {:.1} % · \
                 false reject {:.1} %",
                p.parts,
                p.defective,
                p.auroc.map_or("n/a".into(), |a| format!("{a:.3}")),
                p.miss_rate * 100.0,
                p.false_reject_rate * 100.0
            ));
            // Likely label errors: for a person to check in the Label tab, never changed here.
            for s in &r.suspect_parts {
                let first = s.contradicting.first().map_or("", String::as_str);
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("Check the label of {}, e.g. {first}", s.summary()),
                    );
                    if !first.is_empty()
                        && ui
                            .small_button("Show in Label")
                            .on_hover_text("Open this image and its part in the Label tab")
                            .clicked()
                    {
                        reveal = Some(first.to_owned());
                    }
                });
            }
        });
    });
    ui.label(
        RichText::new(format!(
            "Mispredicted val images ({} shown)",
            t.gallery.len()
        ))
        .strong(),
    );
    ui.allocate_ui(vec2(visible, 0.0), |ui| {
        ui.set_max_width(visible);
        ui.horizontal_wrapped(|ui| {
            for (tex, label) in &t.gallery {
                ui.vertical(|ui| {
                    ui.set_max_width(110.0);
                    ui.add(egui::Image::new(tex).max_size(vec2(96.0, 96.0)));
                    ui.add(egui::Label::new(RichText::new(label).size(10.0)).wrap());
                });
            }
        });
    });
    // Threshold tuning: the FAIL threshold and the review band's PASS threshold.
    ui.separator();
    ui.heading("Thresholds");
    let scores: Vec<f32> = res.detailed.images.iter().map(|i| i.score).collect();
    let pass_classes = res.summary.pass_classes.clone();
    let defective: Vec<bool> = res
        .detailed
        .images
        .iter()
        .map(|i| !pass_classes.contains(&res.classes[i.label]))
        .collect();
    let bins = 20;
    let mut hist = [vec![0u32; bins], vec![0u32; bins]];
    for (s, d) in scores.iter().zip(&defective) {
        let b = ((s * bins as f32) as usize).min(bins - 1);
        hist[*d as usize][b] += 1;
    }
    let bar = |h: &Vec<u32>, offset: f64| -> Vec<egui_plot::Bar> {
        h.iter()
            .enumerate()
            .map(|(i, n)| {
                egui_plot::Bar::new((i as f64 + 0.5) / bins as f64 + offset, *n as f64).width(0.02)
            })
            .collect()
    };
    let mut threshold = t.threshold;
    let mut pass_threshold = t.pass_threshold;
    let resp = egui_plot::Plot::new("threshold")
        .id(threshold_plot_id())
        .width(visible)
        .height(180.0)
        // The threshold line lies on the axis wherever the scores are (an anomaly model's
        // scores may all sit below its threshold).
        .include_x(0.0)
        .include_x((threshold as f64 + 0.05).max(0.5))
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            p.bar_chart(
                egui_plot::BarChart::new("PASS images", bar(&hist[0], -0.011))
                    .color(Color32::from_rgb(60, 170, 80)),
            );
            p.bar_chart(
                egui_plot::BarChart::new("FAIL images", bar(&hist[1], 0.011))
                    .color(Color32::from_rgb(220, 60, 60)),
            );
            p.vline(
                egui_plot::VLine::new("FAIL from", threshold as f64)
                    .color(Color32::WHITE)
                    .width(2.0),
            );
            if let Some(pt) = pass_threshold {
                p.vline(
                    egui_plot::VLine::new("PASS below", pt as f64)
                        .color(crate::ui::inspect::REVIEW_AMBER)
                        .width(2.0),
                );
            }
            // A drag moves the nearer line.
            if (p.response().dragged() || p.response().clicked())
                && let Some(c) = p.pointer_coordinate()
            {
                let x = (c.x as f32).clamp(0.0, 1.0);
                match pass_threshold {
                    Some(pt) if (x - pt).abs() < (x - threshold).abs() => {
                        pass_threshold = Some(x.min(threshold));
                    }
                    _ => threshold = x,
                }
            }
        });
    let _ = resp;
    ui.add(
        egui::Slider::new(&mut threshold, 0.0..=1.0)
            .text("FAIL from (drag the white line or this slider)"),
    );
    let mut band = pass_threshold.is_some();
    if ui
        .checkbox(
            &mut band,
            "Review band: parts scored between the two thresholds go to a person",
        )
        .changed()
    {
        pass_threshold = band.then(|| {
            res.summary
                .pass_threshold
                .unwrap_or(threshold)
                .min(threshold)
        });
    }
    if let Some(pt) = pass_threshold.as_mut() {
        ui.add(
            egui::Slider::new(pt, 0.0..=1.0)
                .text("PASS below (drag the amber line or this slider)"),
        );
    }
    // The band's edge never lies above the FAIL threshold, whichever was moved.
    let pass_threshold = pass_threshold.map(|p| p.min(threshold));
    t.threshold = threshold;
    t.pass_threshold = pass_threshold;
    let rates =
        crate::evaluation::metrics::review_rates(&scores, &defective, pass_threshold, threshold);
    let at = match pass_threshold {
        Some(p) => format!("PASS below {p:.3}, FAIL from {threshold:.3}"),
        None => format!("at {threshold:.3}"),
    };
    ui.label(
        RichText::new(format!(
            "{at}: auto-pass miss rate {:.2} % (defective parts passed), auto-fail false-reject \
             rate {:.2} % (good parts failed), REVIEW {:.1} % of the parts",
            100.0 * rates.auto_pass_miss_rate,
            100.0 * rates.auto_fail_false_reject_rate,
            100.0 * rates.review_share
        ))
        .strong(),
    );
    ui.label(format!(
        "chosen by training ({}): {}",
        res.summary.threshold_rule,
        match res.summary.pass_threshold {
            Some(p) => format!("PASS below {p:.3}, FAIL from {:.3}", res.summary.threshold),
            None => format!("{:.3}", res.summary.threshold),
        }
    ));
    if let Some(h) = &res.summary.head {
        ui.label(format!(
            "Head kept: {} ({}). Candidates, part-disjoint 2-fold cross-validation on the \
             training split:",
            h.kept().head,
            h.why
        ));
        ui.label(RichText::new(h.table()).monospace());
    }
    if let Some(m) = res.summary.bank_entries {
        ui.label(format!(
            "anomaly model: a memory bank of {m} good-part features from {} good images; {} \
             defect images of the training split were ignored",
            res.summary.train_images, res.summary.ignored_defects
        ));
    }
    if res.summary.val_false_reject_rate > USEFUL_FALSE_REJECT {
        // Which defective images hold the threshold down: the lowest-scored ones.
        let mut forcing: Vec<&crate::evaluation::eval::ImageResult> = res
            .detailed
            .images
            .iter()
            .zip(&defective)
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
            .collect();
        forcing.sort_by(|a, b| a.score.total_cmp(&b.score));
        let names: Vec<String> = forcing
            .iter()
            .take(3)
            .map(|i| format!("{} ({:.3})", i.rel_path, i.score))
            .collect();
        // Wrap within what the panel shows (the gallery may widen the layout beyond it).
        let width = (ui.clip_rect().right() - ui.cursor().left() - 8.0).max(200.0);
        ui.allocate_ui(vec2(width, 0.0), |ui| {
        ui.set_max_width(width);
        ui.add(egui::Label::new(
            RichText::new(format!(
                "Warning: this model cannot reach a useful false-reject rate at the miss target: {:.0} % of \
                 good val parts would be rejected (useful: ≤ {:.0} %). The threshold is held down \
                 by the least defect-like defective images: {}. Check their labels and masks, add \
                 similar examples, or accept more misses.",
                100.0 * res.summary.val_false_reject_rate,
                100.0 * USEFUL_FALSE_REJECT,
                names.join(", ")
            ))
            .color(Color32::from_rgb(230, 160, 40)),
        ).wrap());
        });
    }
    // Save as a version.
    let (model, fp, report) = (
        res.summary.model.clone(),
        res.fingerprint.clone(),
        r.clone(),
    );
    let mut save = false;
    ui.horizontal(|ui| {
        let l = ui.label("Version name");
        ui.add(
            egui::TextEdit::singleline(&mut t.version_name)
                .desired_width(180.0)
                .id_salt("version-name"),
        )
        .labelled_by(l.id);
        let l = ui.label("Notes");
        ui.add(
            egui::TextEdit::singleline(&mut t.notes)
                .desired_width(260.0)
                .id_salt("version-notes"),
        )
        .labelled_by(l.id);
        save = ui.button("Save version").clicked();
    });
    if save {
        let dir = t.versions_dir.clone();
        let (name, notes) = (t.version_name.clone(), t.notes.clone());
        let data = PathBuf::from(t.data.trim());
        let rates = (rates.auto_pass_miss_rate, rates.auto_fail_false_reject_rate);
        t.side_job(ctx, move || {
            Msg::Saved(versions::save(
                &dir,
                &model,
                &name,
                &notes,
                threshold,
                pass_threshold,
                &data,
                &fp,
                &report,
                rates,
            ))
        });
    }
    if let Some(path) = reveal {
        let root = PathBuf::from(app.train.data.trim());
        app.label.reveal(&root, &path);
        app.tab = crate::ui::Tab::Label;
    }
}

pub(in crate::ui) fn versions_ui(app: &mut InspectorApp, ui: &mut egui::Ui, ctx: &egui::Context) {
    ui.heading("Model versions");
    let list = app.train.versions.clone().unwrap_or_default();
    ui.label(format!(
        "{} in {}",
        list.len(),
        app.train.versions_dir.display()
    ));
    let mut activate = None;
    egui::Grid::new("versions").striped(true).show(ui, |ui| {
        for h in [
            "name",
            "saved",
            "threshold",
            "val acc",
            "AUROC",
            "miss",
            "false reject",
            "notes",
            "",
        ] {
            ui.label(RichText::new(h).strong());
        }
        ui.end_row();
        for v in &list {
            let active = app.model.as_ref().is_some_and(|m| m.path == v.path);
            ui.label(if active {
                format!("{} (active)", v.name)
            } else {
                v.name.clone()
            });
            ui.label(v.created.get(..16).unwrap_or(&v.created));
            ui.label(format!("{:.3}", v.threshold));
            ui.label(format!("{:.3}", v.accuracy));
            ui.label(
                v.auroc
                    .map(|a| format!("{a:.3}"))
                    .unwrap_or_else(|| "n/a".into()),
            );
            ui.label(format!("{:.1} %", 100.0 * v.miss_rate));
            ui.label(format!("{:.1} %", 100.0 * v.false_reject_rate));
            ui.label(&v.notes);
            if ui
                .add_enabled(!active, egui::Button::new("Activate"))
                .clicked()
            {
                activate = Some(v.clone());
            }
            ui.end_row();
        }
    });
    if let Some(v) = activate {
        // The confirmation dialog records what the person decides (confirmed or cancelled).
        app.load_model(v.path.clone());
        app.notify(
            Level::Info,
            format!("version {}: confirm the activation", v.name),
        );
    }
    if list.len() >= 2 {
        let t = &mut app.train;
        ui.horizontal(|ui| {
            ui.label("Compare");
            for (k, id) in [(0, "cmp-a"), (1, "cmp-b")] {
                egui::ComboBox::from_id_salt(id)
                    .selected_text(
                        list.get(t.compare[k])
                            .map(|v| v.name.clone())
                            .unwrap_or_default(),
                    )
                    .show_ui(ui, |ui| {
                        for (i, v) in list.iter().enumerate() {
                            ui.selectable_value(&mut t.compare[k], i, &v.name);
                        }
                    });
            }
            ui.label(format!("on the val rows of {}", t.data));
            if ui.button("Compare").clicked() {
                let pair: Vec<VersionInfo> = t
                    .compare
                    .iter()
                    .filter_map(|&i| list.get(i).cloned())
                    .collect();
                let (data, st, sv) = (
                    PathBuf::from(t.data.trim()),
                    t.split_train.clone(),
                    t.split_val.clone(),
                );
                let gpu = app.gpu.clone();
                t.comparison = None;
                t.side_job(ctx, move || {
                    let rows = crate::data::dataset::Dataset::open(&data)
                        .map_err(|e| e.to_string())
                        .and_then(|d| d.train_val(&st, &sv, 0.15, 42).map_err(|e| e.to_string()))
                        .map(|(_, val)| val);
                    Msg::Compared(
                        pair.into_iter()
                            .map(|v| {
                                let r = rows.clone().and_then(|rows| {
                                    let m =
                                        kernels::Model::load(&v.path).map_err(|e| e.to_string())?;
                                    crate::evaluation::eval::evaluate_samples(
                                        &m,
                                        &rows,
                                        &gpu.device,
                                        &gpu.queue,
                                        &gpu.label,
                                    )
                                    .map(|d| d.report)
                                    .map_err(|e| format!("{e:#}"))
                                });
                                (v.name, r)
                            })
                            .collect(),
                    )
                });
            }
        });
        if let Some(c) = &app.train.comparison {
            egui::Grid::new("comparison").striped(true).show(ui, |ui| {
                for h in [
                    "version",
                    "images",
                    "accuracy",
                    "macro F1",
                    "AUROC",
                    "threshold",
                    "miss",
                    "false reject",
                ] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for (name, r) in c {
                    ui.label(name);
                    match r {
                        Ok(r) => {
                            ui.label(r.images.to_string());
                            ui.label(format!("{:.3}", r.accuracy));
                            ui.label(format!("{:.3}", r.macro_f1));
                            ui.label(
                                r.auroc
                                    .map(|a| format!("{a:.3}"))
                                    .unwrap_or_else(|| "n/a".into()),
                            );
                            ui.label(format!("{:.3}", r.threshold));
                            ui.label(format!("{:.1} %", 100.0 * r.miss_rate));
                            ui.label(format!("{:.1} %", 100.0 * r.false_reject_rate));
                        }
                        Err(e) => {
                            ui.colored_label(ui.visuals().error_fg_color, e);
                        }
                    }
                    ui.end_row();
                }
            });
        }
    }
}
