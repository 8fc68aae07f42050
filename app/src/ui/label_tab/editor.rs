//! The Label tab's editor: the selected image large, what the active model says about it, its
//! part's other images, and the defect mask painted with brush and eraser.

use egui::{Color32, RichText, Sense, vec2};

use super::view::{LabelView, Undo};
use super::worker::Load;

pub(super) fn big_view(v: &mut LabelView, ui: &mut egui::Ui) {
    v.canvas = None;
    let Some(set) = &v.set else { return };
    if set.rows.is_empty() {
        ui.label("This dataset has no images yet: copy images into its folder and open it again, or send rejects from the History tab.");
        return;
    }
    let Some(row) = v.selected.filter(|&r| r < set.rows.len()) else {
        ui.label("No image in the editor: the grid shows none. Change the filter, or pick an image in the grid.");
        return;
    };
    let r = set.rows[row].clone();
    ui.label(
        RichText::new(format!(
            "{} — {}{}",
            r.path,
            r.label.clone().unwrap_or_else(|| "unlabelled".into()),
            r.split
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ))
        .strong(),
    );
    if let Some(p) = v.predictions.as_ref().and_then(|p| p.get(&r.path)) {
        let against = r
            .label
            .as_deref()
            .map(|l| {
                format!(
                    " (disagrees with the label by {:.0} %)",
                    100.0 * p.disagreement(l)
                )
            })
            .unwrap_or_default();
        ui.label(format!("active model says: {}{against}", p.class));
        let checked = set.checked.contains(&r.path);
        if checked {
            ui.label("✔ checked: the label stands (left out of the mispredicted list)");
        }
        let text = if checked {
            "Uncheck"
        } else {
            "Mark checked (the label is right)"
        };
        if ui.button(text).clicked() {
            v.toggle_checked = Some(row);
        }
    }
    // The same physical part under its other lightings: a label the model disputes is easier
    // to judge beside them (view only; the editor keeps to the filtered grid).
    let part = v.same_part(row);
    if !part.is_empty() {
        let group = r.group.clone().unwrap_or_default();
        ui.label(format!("Same part ({group}): {} other images", part.len()));
        let mut wanted = Vec::new();
        ui.horizontal_wrapped(|ui| {
            for &j in part.iter().take(8) {
                let o = &set.rows[j];
                ui.vertical(|ui| {
                    match v.thumbs.get(&o.path) {
                        Some(t) => {
                            ui.add(egui::Image::new(t).max_size(vec2(64.0, 64.0)));
                        }
                        None => {
                            ui.allocate_space(vec2(64.0, 64.0));
                            if !v.pending.contains(&o.path) {
                                wanted.push((o.path.clone(), set.root.join(&o.path)));
                            }
                        }
                    }
                    let said = v
                        .predictions
                        .as_ref()
                        .and_then(|p| p.get(&o.path))
                        .map(|p| format!("{PREDICTED_AS}{}", p.class))
                        .unwrap_or_default();
                    ui.label(
                        RichText::new(format!(
                            "{}{said}",
                            o.label.as_deref().unwrap_or("unlabelled")
                        ))
                        .size(10.0),
                    );
                });
            }
        });
        if let Some((tx, _)) = &v.loader {
            for (key, p) in wanted {
                if tx.try_send(Load::Thumb(key.clone(), p)).is_ok() {
                    v.pending.insert(key);
                }
            }
        }
    }
    // Ask for the full image when the selection changed.
    if v.full_requested != Some(row)
        && let Some((tx, _)) = &v.loader
    {
        let mask = r.mask.as_ref().map(|m| set.root.join(m));
        let image = set.root.join(&r.path);
        if tx.try_send(Load::Full { row, image, mask }).is_ok() {
            v.full_requested = Some(row);
        }
    }
    ui.horizontal(|ui| {
        ui.selectable_value(&mut v.paint, true, "Brush");
        ui.selectable_value(&mut v.paint, false, "Eraser");
        ui.add(egui::Slider::new(&mut v.brush, 1.0..=60.0).text("size (px)"));
        if ui.button("Undo").clicked() {
            v.undo();
        }
        if ui.button("Clear mask").clicked()
            && let Some(m) = &mut v.mask
        {
            v.undo
                .push(Undo::Mask(m.row, m.data.clone(), r.mask.clone()));
            m.data.iter_mut().for_each(|p| *p = 0);
            m.tex = None;
            m.changed = true;
            v.flush_mask();
        }
    });
    let Some((brow, tex, w, h)) = v.big.as_ref().map(|b| (b.0, b.1.clone(), b.2, b.3)) else {
        ui.spinner();
        return;
    };
    if brow != row || v.mask.as_ref().is_none_or(|m| m.row != row) {
        ui.spinner();
        return;
    }
    let avail = ui.available_size();
    let scale = (avail.x / w as f32).min(avail.y / h as f32).max(0.01);
    let (rect, resp) = ui.allocate_exact_size(
        vec2(w as f32 * scale, h as f32 * scale),
        Sense::click_and_drag(),
    );
    let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
    v.canvas = Some(rect);
    let Some(m) = &mut v.mask else { return };
    if resp.drag_started() || (resp.clicked() && !resp.dragged()) {
        v.undo
            .push(Undo::Mask(m.row, m.data.clone(), r.mask.clone()));
        // egui reports a drag once the pointer has moved a few points from where the button
        // went down: the stroke starts there, not where the drag was recognised.
        v.last_brush = ui
            .input(|i| i.pointer.press_origin())
            .filter(|o| resp.drag_started() && rect.contains(*o))
            .map(|o| ((o.x - rect.min.x) / scale, (o.y - rect.min.y) / scale));
    }
    if (resp.dragged() || resp.clicked())
        && let Some(p) = resp.interact_pointer_pos()
    {
        let (cx, cy) = ((p.x - rect.min.x) / scale, (p.y - rect.min.y) / scale);
        let rad = v.brush;
        let value = if v.paint { 255 } else { 0 };
        // A continuous stroke: stamp the brush along the segment from the last position, at
        // most half a radius apart (pointer events arrive far apart on a fast drag).
        let from = v.last_brush.unwrap_or((cx, cy));
        stroke(&mut m.data, (w, h), from, (cx, cy), rad, value);
        v.last_brush = Some((cx, cy));
        m.tex = None;
        m.changed = true;
    }
    if resp.drag_stopped() {
        v.last_brush = None;
    }
    if m.tex.is_none() {
        let px: Vec<Color32> = m
            .data
            .iter()
            .map(|&p| {
                if p > 0 {
                    Color32::from_rgba_unmultiplied(255, 40, 40, 110)
                } else {
                    Color32::TRANSPARENT
                }
            })
            .collect();
        let img = egui::ColorImage::new([w as usize, h as usize], px);
        m.tex = Some(
            ui.ctx()
                .load_texture("label-mask", img, egui::TextureOptions::NEAREST),
        );
    }
    if let Some(t) = &m.tex {
        ui.painter().image(t.id(), rect, uv, Color32::WHITE);
    }
    if resp.drag_stopped() || (resp.clicked() && !resp.dragged()) {
        v.flush_mask();
    }
}

/// Paints the brush along the segment `from` → `to` (image pixels) of a `w`×`h` mask, in
/// stamps at most half a radius apart.
fn stroke(
    data: &mut [u8],
    (w, h): (u32, u32),
    from: (f32, f32),
    to: (f32, f32),
    rad: f32,
    value: u8,
) {
    let dist = ((to.0 - from.0).powi(2) + (to.1 - from.1).powi(2)).sqrt();
    let stamps = (dist / (rad * 0.5).max(0.5)).ceil().max(1.0) as usize;
    for s in 1..=stamps {
        let t = s as f32 / stamps as f32;
        let (x, y) = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
        stamp(data, w, h, x, y, rad, value);
    }
}

/// Paints a disc of radius `rad` at (`cx`, `cy`) (image pixels) into a `w`×`h` mask.
fn stamp(data: &mut [u8], w: u32, h: u32, cx: f32, cy: f32, rad: f32, value: u8) {
    let (x0, x1) = (
        (cx - rad).floor().max(0.0) as u32,
        ((cx + rad).ceil().max(0.0) as u32).min(w),
    );
    let (y0, y1) = (
        (cy - rad).floor().max(0.0) as u32,
        ((cy + rad).ceil().max(0.0) as u32).min(h),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= rad * rad {
                data[(y * w + x) as usize] = value;
            }
        }
    }
}

/// Between a caption's label and the model's prediction: egui's default fonts have no "→"
/// (it drew as a missing-glyph box), so plain ASCII.
pub const PREDICTED_AS: &str = " -> ";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every glyph of the caption separator is in the default font (no missing-glyph box).
    #[test]
    fn the_caption_separator_is_in_the_default_font() {
        let ctx = egui::Context::default();
        let mut out = ctx.run_ui(Default::default(), |_| {});
        out.textures_delta.clear();
        let font = egui::FontId::proportional(10.0);
        assert!(ctx.fonts_mut(|f| f.has_glyphs(&font, PREDICTED_AS)));
        assert!(
            !ctx.fonts_mut(|f| f.has_glyph(&font, '→')),
            "the default font has → now: it could come back"
        );
    }

    /// A stroke from one side to the other paints a continuous line, not separate dots.
    #[test]
    fn a_stroke_is_continuous() {
        let (w, h) = (100u32, 20u32);
        let mut data = vec![0u8; (w * h) as usize];
        // Two pointer positions 90 px apart, as a fast drag delivers them.
        stroke(&mut data, (w, h), (5.0, 10.0), (5.0, 10.0), 3.0, 255);
        stroke(&mut data, (w, h), (5.0, 10.0), (95.0, 10.0), 3.0, 255);
        for x in 5..95 {
            assert_eq!(data[(10 * w + x) as usize], 255, "gap at x = {x}");
        }
        // Erasing the same stroke (first event, then the jump) clears it.
        stroke(&mut data, (w, h), (5.0, 10.0), (5.0, 10.0), 3.0, 0);
        stroke(&mut data, (w, h), (5.0, 10.0), (95.0, 10.0), 3.0, 0);
        assert!(data.iter().all(|&p| p == 0));
    }
}
