//! The Inspect tab: live frame with region of interest and heatmap, a verdict banner readable
//! from two metres, counters, the last rejects, pause and override.

use egui::{Color32, RichText, Sense, Stroke, StrokeKind, pos2, vec2};

use std::sync::Arc;

use super::{InspectorApp, Level};
use crate::station::pipeline::Verdict;
use kernels::Decision;

const PASS_GREEN: Color32 = Color32::from_rgb(0x1b, 0x8a, 0x3a);
const FAIL_RED: Color32 = Color32::from_rgb(0xc6, 0x28, 0x28);
/// REVIEW: amber with black writing (white on amber cannot be read from two metres).
pub(super) const REVIEW_AMBER: Color32 = Color32::from_rgb(0xf2, 0xb7, 0x05);

/// The colour of a decision on screen.
fn decision_color(d: Decision) -> Color32 {
    match d {
        Decision::Pass => PASS_GREEN,
        Decision::Review => REVIEW_AMBER,
        Decision::Fail => FAIL_RED,
    }
}

/// Writing that can be read on `fill`.
fn ink(fill: Color32) -> Color32 {
    if fill == REVIEW_AMBER {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// Height kept for the alarm strip whether or not an alarm shows, so acknowledging one does not
/// move the other controls under the operator's pointer.
const ALARM_STRIP: f32 = 52.0;

pub(super) fn show(app: &mut InspectorApp, ui: &mut egui::Ui) {
    reject_window(app, ui);
    let strip_top = ui.cursor().top();
    if let Some(alarm) = app.alarm.clone() {
        egui::Frame::new()
            .fill(FAIL_RED)
            .inner_margin(10.0)
            .corner_radius(6.0)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(
                        RichText::new(format!(
                            "ALARM {}: {}",
                            alarm.at.format("%H:%M:%S"),
                            alarm.text
                        ))
                        .size(22.0)
                        .color(Color32::WHITE)
                        .strong(),
                    );
                    if ui.button(RichText::new("Acknowledge").size(18.0)).clicked() {
                        app.acknowledge_alarm();
                    }
                });
            });
    }
    let used = ui.cursor().top() - strip_top;
    ui.add_space((ALARM_STRIP - used).max(0.0) + 6.0);
    if app.is_demo() {
        // Name the model that judges: it changes when another one is activated.
        let model = app
            .model
            .as_ref()
            .map(|m| {
                let default = crate::data::assets::bundled(crate::data::assets::DEFAULT_MODEL);
                if m.path == default {
                    format!("the default model ({})", m.id)
                } else {
                    format!("model {}", m.id)
                }
            })
            .unwrap_or_else(|| "the model (loading…)".into());
        ui.label(
            RichText::new(format!(
                "Demo mode: replaying the bundled demo images through {model}. \
                 No camera is selected — pick one in Settings > Source."
            ))
            .color(ui.visuals().warn_fg_color),
        );
    }
    egui::Panel::right("verdict")
        .resizable(false)
        .exact_size(360.0)
        .show(ui, |ui| side_panel(app, ui));
    egui::Panel::bottom("rejects")
        .resizable(false)
        .exact_size(150.0)
        .show(ui, |ui| reject_strip(app, ui));
    egui::CentralPanel::default().show(ui, |ui| live_view(app, ui));
}

fn side_panel(app: &mut InspectorApp, ui: &mut egui::Ui) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        banner(app, ui);
        super::line_panel::status(app, ui);
        super::plant_panel::status(app, ui);
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            let paused = app.is_paused();
            let label = if paused { "Resume" } else { "Pause" };
            if ui
                .add_enabled(
                    app.is_running(),
                    egui::Button::new(RichText::new(label).size(20.0)),
                )
                .clicked()
            {
                app.set_paused(!paused);
            }
            if ui
                .add_enabled(
                    app.last.is_some(),
                    egui::Button::new(RichText::new("Override…").size(20.0)),
                )
                .clicked()
            {
                if app.override_target.is_some() {
                    app.cancel_override();
                } else {
                    app.open_override();
                }
            }
        });
        if app.override_target.is_some() {
            override_form(app, ui);
        }
        ui.separator();
        counters(app, ui);
        ui.separator();
        ui.checkbox(&mut app.settings.heatmap, "Show heatmap");
        ui.add_enabled(
            app.settings.heatmap,
            egui::Slider::new(&mut app.settings.heatmap_opacity, 0.0..=1.0).text("opacity"),
        );
        ui.horizontal(|ui| {
            let label = if app.roi_edit {
                "Drawing ROI: drag on the held frame"
            } else {
                "Draw ROI"
            };
            if ui.selectable_label(app.roi_edit, label).clicked() {
                app.set_roi_edit(!app.roi_edit);
            }
            if app.settings.roi.is_some() && ui.button("Clear ROI").clicked() {
                app.set_roi(None);
            }
        });
        ui.separator();
        if let Some(m) = &app.model {
            ui.label(format!("Model {} ({})", m.id, m.input));
            ui.label(format!("Classes: {}", m.classes.join(", ")));
            ui.label(format!("Threshold: {}", app.threshold_words()));
        }
        // The platform's file dialog; the chosen file goes to the activation dialog. Without a
        // file dialog, Settings › Model file says so and takes a typed path.
        if ui
            .add_enabled(
                app.dialogs.open().is_none(),
                egui::Button::new("Load model…"),
            )
            .clicked()
        {
            let req = super::file_dialog::DialogRequest::new(
                super::file_dialog::DialogKind::OpenFile,
                "Model file to activate",
                &app.model_path_input,
            )
            .filter("Model (.safetensors)", &["safetensors"]);
            let ctx = ui.ctx().clone();
            app.dialogs
                .request(super::file_dialog::Target::InspectModel, req, &ctx);
        }
        app.dialogs
            .note_ui(ui, super::file_dialog::Target::InspectModel);
    });
}

/// What the station is doing when it is not judging parts: shown instead of the last verdict,
/// so an old PASS/FAIL never looks live.
pub fn station_state(app: &InspectorApp) -> Option<(&'static str, String)> {
    match &app.source_status {
        Some(crate::station::pipeline::SourceStatus::Failed(e)) => {
            Some(("STOPPED", format!("the source failed: {e}")))
        }
        Some(crate::station::pipeline::SourceStatus::Lost(e)) => {
            Some(("NO SIGNAL", format!("{e} — retrying")))
        }
        Some(crate::station::pipeline::SourceStatus::Ended(d)) => {
            Some(("STOPPED", format!("{d}: replay finished")))
        }
        _ if app.is_paused() => Some((
            "PAUSED",
            match app.counters.in_flight {
                0 => "inspection paused — press Resume".into(),
                n => {
                    format!("pausing — {n} frame(s) taken before the pause are still being judged")
                }
            },
        )),
        _ => None,
    }
}

/// The big coloured banner: a word readable from two metres, a detail line, then `more`.
fn banner_frame(
    ui: &mut egui::Ui,
    fill: Color32,
    (word, word_size): (&str, f32),
    (detail, detail_size): (String, f32),
    more: impl FnOnce(&mut egui::Ui, Color32),
) {
    let ink = ink(fill);
    egui::Frame::new()
        .fill(fill)
        .inner_margin(12.0)
        .corner_radius(8.0)
        .show(ui, |ui| {
            ui.set_min_width(ui.available_width());
            ui.vertical_centered(|ui| {
                ui.label(RichText::new(word).size(word_size).strong().color(ink));
                ui.label(RichText::new(detail).size(detail_size).color(ink));
                more(ui, ink);
            });
        });
}

fn banner(app: &InspectorApp, ui: &mut egui::Ui) {
    if let Some((word, detail)) = station_state(app) {
        let fill = match word {
            "PAUSED" => Color32::from_rgb(40, 70, 120),
            "NO SIGNAL" => Color32::from_rgb(170, 110, 0),
            _ => Color32::from_rgb(70, 70, 70),
        };
        banner_frame(ui, fill, (word, 64.0), (detail, 18.0), |ui, _| {
            if let Some(v) = &app.last {
                ui.label(
                    RichText::new(format!(
                        "last verdict: {} {} ({})",
                        v.decision.word(),
                        v.class,
                        v.origin
                    ))
                    .size(13.0)
                    .color(Color32::from_gray(230)),
                );
            }
        });
        return;
    }
    let (fill, word, detail) = match &app.last {
        Some(v) => {
            let decision = app
                .overridden
                .get(&v.seq)
                .and_then(|o| Decision::parse(o))
                .unwrap_or(v.decision);
            let word = decision.word();
            let detail = if app.overridden.contains_key(&v.seq) {
                format!(
                    "{} by operator (model said {})",
                    if v.decision == Decision::Review {
                        "decided"
                    } else {
                        "overridden"
                    },
                    v.decision.word()
                )
            } else if decision == Decision::Review {
                format!(
                    "set aside for a manual check · suspected {} {:.0}%",
                    v.class,
                    100.0 * v.confidence
                )
            } else {
                format!("{} {:.0}%", v.class, 100.0 * v.confidence)
            };
            (decision_color(decision), word, detail)
        }
        None => (
            Color32::DARK_GRAY,
            "WAITING",
            "no frame inspected yet".into(),
        ),
    };
    banner_frame(ui, fill, (word, 72.0), (detail, 26.0), |ui, ink| {
        if let Some(v) = &app.last {
            // The threshold this verdict used, and where the one in force came from.
            let origin = match app.threshold_in_use() {
                Some(t) if (t - v.threshold).abs() > 5e-4 => {
                    format!("now {t:.3}: {}", app.threshold_origin())
                }
                _ => app.threshold_origin(),
            };
            let rule = match v.pass_threshold {
                Some(p) => format!("PASS below {p:.3} · FAIL from {:.3}", v.threshold),
                None => format!("threshold {:.3}", v.threshold),
            };
            ui.label(
                RichText::new(format!("score {:.3} · {rule} ({origin})", v.score))
                    .size(16.0)
                    .color(ink),
            );
            ui.label(RichText::new(v.origin.to_string()).size(13.0).color(ink));
        }
    });
}

fn override_form(app: &mut InspectorApp, ui: &mut egui::Ui) {
    // The form acts on the frame captured when it was opened, never on the live one.
    let Some((v, thumb)) = app
        .override_target
        .as_ref()
        .map(|t| (t.verdict.clone(), t.thumb.clone()))
    else {
        return;
    };
    let current = app
        .overridden
        .get(&v.seq)
        .cloned()
        .unwrap_or_else(|| v.word().to_string());
    let review = current == "review";
    let what = if review {
        "Decide this REVIEW part: PASS (good) or FAIL (defective)"
    } else if current == "fail" {
        "Mark as FALSE REJECT (the part is good: PASS)"
    } else {
        "Mark as MISSED DEFECT (the part is bad: FAIL)"
    };
    ui.group(|ui| {
        ui.label(RichText::new(what).strong());
        ui.horizontal(|ui| {
            if let Some(t) = &thumb {
                ui.add(egui::Image::new(t).max_size(vec2(96.0, 96.0)));
            }
            ui.vertical(|ui| {
                ui.label(format!("Frame: {}", v.origin));
                ui.label(format!(
                    "frame {} at {} — model said {} ({} {:.0}%)",
                    v.seq,
                    v.timestamp.with_timezone(&chrono::Local).format("%H:%M:%S"),
                    v.decision.word(),
                    v.class,
                    100.0 * v.confidence
                ));
                if app.last.as_ref().is_some_and(|l| l.seq != v.seq) {
                    ui.label(
                        RichText::new(
                            "the live view has moved on; this override is for the frame shown here",
                        )
                        .color(ui.visuals().warn_fg_color),
                    );
                }
            });
        });
        ui.horizontal(|ui| {
            let label = ui.label("Reason");
            ui.add(
                egui::TextEdit::singleline(&mut app.override_reason)
                    .hint_text("required: what the part really is, and why")
                    .id_salt("override-reason"),
            )
            .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let reason = app.override_reason.clone();
            let saved = if review {
                if ui.button("Decide PASS").clicked() {
                    Some(app.save_decision(Decision::Pass, &reason))
                } else if ui.button("Decide FAIL").clicked() {
                    Some(app.save_decision(Decision::Fail, &reason))
                } else {
                    None
                }
            } else if ui.button("Save override").clicked() {
                Some(app.save_override(&reason))
            } else {
                None
            };
            if let Some(Err(e)) = saved {
                app.notify(Level::Warning, e);
            }
            if ui.button("Cancel").clicked() {
                app.cancel_override();
            }
        });
    });
}

fn counters(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let c = app.counters.clone();
    egui::Grid::new("counters").num_columns(2).show(ui, |ui| {
        let big = |s: String| RichText::new(s).size(22.0).strong();
        ui.label("Inspected");
        ui.label(big(c.inspected.to_string()));
        ui.end_row();
        ui.label("Pass");
        ui.label(big(c.pass.to_string()).color(PASS_GREEN));
        ui.end_row();
        ui.label("Fail");
        ui.label(big(c.fail.to_string()).color(FAIL_RED));
        ui.end_row();
        ui.label("Review");
        ui.label(big(c.review.to_string()).color(REVIEW_AMBER));
        ui.end_row();
        ui.label("Yield");
        ui.label(big(c
            .yield_percent()
            .map(|y| format!("{y:.1} %"))
            .unwrap_or_else(|| "—".into())));
        ui.end_row();
        ui.label("Unreadable / dropped");
        ui.label(format!("{} / {}", c.unreadable, c.dropped));
        ui.end_row();
        ui.label("Frame rate");
        // No frames arrive while paused, lost or stopped: no rate to show.
        if station_state(app).is_some() {
            ui.label("—");
        } else {
            ui.label(format!("{:.1} /s", c.fps()));
        }
        ui.end_row();
        ui.label("Capture to verdict");
        ui.label(
            c.latency_p50()
                .map(|l| format!("{l:.1} ms (median)"))
                .unwrap_or_else(|| "—".into()),
        );
        ui.end_row();
    });
    ui.horizontal(|ui| {
        if let Some(s) = c.since {
            ui.label(format!(
                "since {}",
                s.with_timezone(&chrono::Local).format("%H:%M:%S")
            ));
        }
        if ui.button("New shift").clicked() {
            app.new_shift();
        }
    });
}

/// The "Last rejects" strip as held on screen: while the pointer is over the strip (or a press
/// that began on it is still down) the strip does not change, so what is under the pointer
/// stays there; newer rejects wait behind "N new — show". Thumbnails are held with it.
#[derive(Clone, Default)]
struct HeldRejects {
    items: Vec<(Arc<Verdict>, Option<egui::TextureHandle>)>,
    /// The reject under the pointer when it was pressed: what a click opens.
    pressed: Option<u64>,
}

fn reject_strip(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let id = ui.scope_id().with("held-rejects");
    let area = ui.max_rect();
    let (hover, any_down, press) = ui.input(|i| {
        (
            i.pointer.hover_pos(),
            i.pointer.any_down(),
            i.pointer.press_origin(),
        )
    });
    let live = || -> Vec<(Arc<Verdict>, Option<egui::TextureHandle>)> {
        app.counters
            .last_rejects
            .iter()
            .rev()
            .map(|v| (v.clone(), app.thumbs.get(&v.seq).cloned()))
            .collect()
    };
    let mut held: Option<HeldRejects> = ui.data(|d| d.get_temp(id));
    let pressed_here = any_down && press.is_some_and(|p| area.contains(p));
    let over = hover.is_some_and(|p| area.contains(p)) || pressed_here;
    if !over {
        held = None;
    }
    let mut strip = held.unwrap_or_else(|| HeldRejects {
        items: live(),
        pressed: None,
    });
    if !any_down {
        strip.pressed = None;
    }
    let newest_shown = strip.items.first().map(|(v, _)| v.seq).unwrap_or(0);
    let waiting = app
        .counters
        .last_rejects
        .iter()
        .filter(|v| v.seq > newest_shown)
        .count();
    ui.horizontal(|ui| {
        ui.label(RichText::new("Last rejects").strong());
        if over && waiting > 0 && ui.button(format!("{waiting} new — show")).clicked() {
            strip.items = live();
        }
    });
    let mut open = None;
    egui::ScrollArea::horizontal().show(ui, |ui| {
        ui.horizontal(|ui| {
            if strip.items.is_empty() {
                ui.label("none yet");
            }
            for (v, thumb) in &strip.items {
                // One id per reject: a click is never given to another reject that took its place.
                let r = ui.push_id(v.seq, |ui| {
                    ui.vertical(|ui| {
                        let mut clicked = false;
                        if let Some(t) = thumb {
                            clicked |= ui
                                .add(
                                    egui::Image::new(t)
                                        .max_size(vec2(96.0, 96.0))
                                        .sense(Sense::click()),
                                )
                                .on_hover_text(format!("open {}", v.origin))
                                .clicked();
                        }
                        // Not selectable text: a click opens the reject.
                        clicked |= ui
                            .add(
                                egui::Label::new(
                                    RichText::new(format!(
                                        "{}{} {:.0}%\n{}",
                                        if v.decision == Decision::Review {
                                            "REVIEW · "
                                        } else {
                                            ""
                                        },
                                        v.class,
                                        100.0 * v.confidence,
                                        v.timestamp
                                            .with_timezone(&chrono::Local)
                                            .format("%H:%M:%S")
                                    ))
                                    .size(11.0),
                                )
                                .selectable(false)
                                .sense(Sense::click()),
                            )
                            .clicked();
                        clicked
                    })
                    .inner
                });
                let (clicked, rect) = (r.inner, r.response.rect);
                if any_down && strip.pressed.is_none() && press.is_some_and(|p| rect.contains(p)) {
                    strip.pressed = Some(v.seq);
                }
                if clicked {
                    // What was under the pointer when it went down, whatever is there now.
                    let target = strip.pressed.unwrap_or(v.seq);
                    open = strip
                        .items
                        .iter()
                        .find(|(w, _)| w.seq == target)
                        .map(|(w, _)| w.clone());
                }
            }
        });
    });
    if let Some(v) = open {
        app.open_reject(v);
    }
    if over {
        ui.data_mut(|d| d.insert_temp(id, strip));
    } else {
        ui.data_mut(|d| d.remove::<HeldRejects>(id));
    }
}

fn live_view(app: &mut InspectorApp, ui: &mut egui::Ui) {
    // While an ROI is drawn, the frame it is drawn on holds still (inspection goes on).
    if app.roi_edit && app.roi_hold.is_none() && app.last.is_some() {
        app.set_roi_edit(true);
    }
    let held = app.roi_hold.clone().filter(|_| app.roi_edit);
    let shown = match held {
        Some((v, tex)) => Some((v, tex)),
        None => app.last.clone().zip(app.frame_tex.clone()),
    };
    let Some((v, tex)) = shown else {
        ui.centered_and_justified(|ui| {
            ui.label(RichText::new("Waiting for the first frame…").size(20.0));
        });
        return;
    };
    let avail = ui.available_size();
    let (iw, ih) = (v.image.width as f32, v.image.height as f32);
    let scale = (avail.x / iw).min(avail.y / ih);
    let size = vec2(iw * scale, ih * scale);
    // The whole area senses drags, so one starting beside the frame is clamped to its edge
    // rather than lost.
    let (area, _) = ui.allocate_exact_size(avail.max(size), Sense::hover());
    let rect = egui::Rect::from_min_size(area.min, size);
    let resp = ui.interact(
        area,
        ui.scope_id().with("live-view"),
        Sense::click_and_drag(),
    );
    app.live_rect = Some(rect);
    app.live_area = Some(area);
    let painter = ui.painter_at(rect);
    let uv = egui::Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
    painter.image(tex.id(), rect, uv, Color32::WHITE);
    let to_screen = |x: f32, y: f32| pos2(rect.min.x + x * scale, rect.min.y + y * scale);
    let roi = v.roi;
    let roi_rect = egui::Rect::from_min_max(
        to_screen(roi.x as f32, roi.y as f32),
        to_screen((roi.x + roi.width) as f32, (roi.y + roi.height) as f32),
    );
    if app.settings.heatmap
        && !app.roi_edit
        && let Some(h) = &app.heat_tex
    {
        let a = (app.settings.heatmap_opacity.clamp(0.0, 1.0) * 255.0) as u8;
        painter.image(h.id(), roi_rect, uv, Color32::from_white_alpha(a));
    }
    if app.settings.roi.is_some() {
        painter.rect_stroke(
            roi_rect,
            0.0,
            Stroke::new(2.0, Color32::from_rgb(0, 200, 255)),
            StrokeKind::Outside,
        );
    }
    if app.roi_edit {
        painter.text(
            rect.left_top() + vec2(6.0, 6.0),
            egui::Align2::LEFT_TOP,
            "frame held while you draw — inspection goes on",
            egui::FontId::proportional(14.0),
            Color32::YELLOW,
        );
        let to_frame = |p: egui::Pos2| {
            (
                ((p.x - rect.min.x) / scale).clamp(0.0, iw),
                ((p.y - rect.min.y) / scale).clamp(0.0, ih),
            )
        };
        if resp.drag_started() {
            app.roi_drag = ui
                .input(|i| i.pointer.press_origin())
                .or(resp.interact_pointer_pos());
        }
        if resp.dragged()
            && let Some(p) = resp.interact_pointer_pos()
        {
            app.roi_drag_end = Some(p);
        }
        if let (Some(a), Some(b)) = (app.roi_drag, app.roi_drag_end) {
            painter.rect_stroke(
                egui::Rect::from_two_pos(a, b),
                0.0,
                Stroke::new(2.0, Color32::YELLOW),
                StrokeKind::Outside,
            );
        }
        // The release frame may have no pointer position: use the last one seen while dragging.
        if resp.drag_stopped()
            && let (Some(a), Some(b)) = (app.roi_drag.take(), app.roi_drag_end.take())
        {
            let (x0, y0) = to_frame(a);
            let (x1, y1) = to_frame(b);
            let (x, y) = (x0.min(x1) as u32, y0.min(y1) as u32);
            let (w, h) = ((x0 - x1).abs() as u32, (y0 - y1).abs() as u32);
            if w >= 8 && h >= 8 {
                app.set_roi(Some([x, y, w, h]));
                app.set_roi_edit(false);
            } else {
                app.notify(Level::Warning, "ROI too small: drag a larger rectangle");
            }
        }
    }
}

/// The reject opened from the "Last rejects" strip: frame with its heatmap, the verdict, and
/// an override that acts on this reject (inspection goes on meanwhile).
fn reject_window(app: &mut InspectorApp, ui: &mut egui::Ui) {
    let Some(r) = &app.opened_reject else { return };
    let v = r.verdict.clone();
    let (frame, heat) = (r.frame.clone(), r.heat.clone());
    let mut open = true;
    let mut override_it = false;
    let what = if v.decision == Decision::Review {
        "Review"
    } else {
        "Reject"
    };
    egui::Window::new(format!("{what} {}", v.origin))
        .open(&mut open)
        .collapsible(false)
        .default_width(520.0)
        .show(ui.ctx(), |ui| {
            ui.label(
                RichText::new(format!(
                    "{} {} {:.0}% · score {:.3} · threshold {:.3} · {}",
                    v.decision.word(),
                    v.class,
                    100.0 * v.confidence,
                    v.score,
                    v.threshold,
                    v.timestamp.with_timezone(&chrono::Local).format("%H:%M:%S")
                ))
                .strong(),
            );
            if let Some(f) = &frame {
                let (iw, ih) = (v.image.width as f32, v.image.height as f32);
                let scale = (500.0 / iw).min(360.0 / ih);
                let (rect, _) =
                    ui.allocate_exact_size(vec2(iw * scale, ih * scale), Sense::hover());
                let uv = egui::Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
                let painter = ui.painter_at(rect);
                painter.image(f.id(), rect, uv, Color32::WHITE);
                if let Some(h) = &heat {
                    let roi = v.roi;
                    let at = |x: u32, y: u32| {
                        pos2(rect.min.x + x as f32 * scale, rect.min.y + y as f32 * scale)
                    };
                    let roi_rect = egui::Rect::from_min_max(
                        at(roi.x, roi.y),
                        at(roi.x + roi.width, roi.y + roi.height),
                    );
                    let a = (app.settings.heatmap_opacity.clamp(0.0, 1.0) * 255.0) as u8;
                    painter.image(h.id(), roi_rect, uv, Color32::from_white_alpha(a));
                }
            } else {
                ui.label("(no image kept for this frame)");
            }
            if ui.button("Override this verdict…").clicked() {
                override_it = true;
            }
        });
    if override_it {
        app.open_override_for(v);
        open = false;
    }
    if !open {
        app.opened_reject = None;
    }
}
