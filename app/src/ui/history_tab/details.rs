//! The History tab's row details: what the model said, any override, the archived frame
//! with its heatmap over the region the model saw, and the lead's confirm / override.

use egui::{Color32, RichText, vec2};

use crate::records::history::InspectionRow;

/// Shows a row; returns (verdict, reason) when the lead confirms or overrides it.
pub(super) fn details(
    ui: &mut egui::Ui,
    r: &InspectionRow,
    detail: Option<&(
        i64,
        Option<egui::TextureHandle>,
        Option<egui::TextureHandle>,
    )>,
    dims: (u32, u32),
    reason: &mut String,
) -> Option<(String, String)> {
    ui.label(RichText::new(format!("{} — {}", r.origin, local_time(&r.ts))).strong());
    ui.label(format!(
        "model said {} ({} {:.1}%, score {:.3}, threshold {:.3}), model {}, station {}, latency {:.1} ms",
        r.verdict.to_uppercase(),
        r.class,
        100.0 * r.confidence,
        r.score,
        r.threshold,
        r.model_id,
        r.station,
        r.latency_ms
    ));
    if let (Some(v), Some(why)) = (&r.override_verdict, &r.override_reason) {
        let who = r
            .override_by
            .clone()
            .filter(|w| !w.trim().is_empty())
            .unwrap_or_else(|| "an unnamed operator".into());
        let when = r
            .override_at
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(local_time)
            .unwrap_or_else(|| "an unrecorded time".into());
        ui.label(format!(
            "overridden to {} by {who} at {when}: {why}",
            v.to_uppercase()
        ));
    }
    match detail {
        Some((id, img, heat)) if *id == r.id => {
            if img.is_none() {
                ui.label("no archived image (passes are sampled; old images are pruned by the disk budget)");
            }
            if let Some(t) = img {
                let resp = ui.add(egui::Image::new(t).max_size(vec2(380.0, 300.0)));
                if let Some(h) = heat {
                    // The heatmap covers the region of interest the model saw.
                    let rect = match r.roi {
                        Some([x, y, w, hh]) if dims.0 > 0 && dims.1 > 0 => {
                            let (sx, sy) = (
                                resp.rect.width() / dims.0 as f32,
                                resp.rect.height() / dims.1 as f32,
                            );
                            egui::Rect::from_min_size(
                                resp.rect.min + egui::vec2(x as f32 * sx, y as f32 * sy),
                                egui::vec2(w as f32 * sx, hh as f32 * sy),
                            )
                        }
                        _ => resp.rect,
                    };
                    ui.painter().image(
                        h.id(),
                        rect,
                        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                        Color32::from_white_alpha(120),
                    );
                }
            }
        }
        _ => {
            ui.spinner();
        }
    }
    ui.horizontal(|ui| {
        let l = ui.label("Reason");
        ui.add(
            egui::TextEdit::singleline(reason)
                .hint_text("required to confirm or override")
                .id_salt("lead-reason"),
        )
        .labelled_by(l.id);
    });
    let mut out = None;
    ui.horizontal(|ui| {
        let enabled = !reason.trim().is_empty();
        let current = r.final_verdict().to_string();
        if current == "review" {
            // A REVIEW waits for a person: their decision is PASS or FAIL, recorded like an
            // override of the model's verdict.
            for to in ["pass", "fail"] {
                if ui
                    .add_enabled(
                        enabled,
                        egui::Button::new(format!("Decide {}", to.to_uppercase())),
                    )
                    .clicked()
                {
                    out = Some((to.to_string(), reason.trim().to_string()));
                }
            }
            return;
        }
        if ui
            .add_enabled(
                enabled,
                egui::Button::new(format!("Confirm {}", current.to_uppercase())),
            )
            .clicked()
        {
            out = Some((current.clone(), reason.trim().to_string()));
        }
        let other = if current == "fail" { "pass" } else { "fail" };
        if ui
            .add_enabled(
                enabled,
                egui::Button::new(format!("Override to {}", other.to_uppercase())),
            )
            .clicked()
        {
            out = Some((other.to_string(), reason.trim().to_string()));
        }
    });
    out
}

/// An RFC 3339 time stamp in local time, "11-30 14:05:09" (as it is when it does not parse).
pub(in crate::ui) fn local_time(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| ts.to_string())
}
