//! The History tab's charts: reject rate per hour with p-chart limits, the defect Pareto and
//! the yield per shift.

use egui::{Color32, RichText};

use super::query::PageResult;
use crate::records::history::{self, HourBucket};

pub(super) fn charts(ui: &mut egui::Ui, res: &PageResult) {
    use egui_plot::{Bar, BarChart, Line, Plot, PlotPoints, Points};
    ui.label(RichText::new("Reject rate per hour (p-chart, 3-sigma limits)").strong());
    let total: u64 = res.hourly.iter().map(|b| b.total).sum();
    let fails: u64 = res.hourly.iter().map(|b| b.fails).sum();
    let pbar = if total > 0 {
        fails as f64 / total as f64
    } else {
        0.0
    };
    let t0 = res.hourly.first().map(|b| b.hour_ms).unwrap_or(0);
    let hours = |ms: i64| (ms - t0) as f64 / 3_600_000.0;
    let rate: Vec<[f64; 2]> = res
        .hourly
        .iter()
        .map(|b| {
            [
                hours(b.hour_ms),
                100.0 * b.fails as f64 / b.total.max(1) as f64,
            ]
        })
        .collect();
    // Limits per hour (they depend on that hour's count) as steps one hour wide, so even a
    // single hour shows them; the centre line spans the whole range.
    let steps = |lower: bool| -> Vec<[f64; 2]> {
        res.hourly
            .iter()
            .flat_map(|b| {
                let (l, u) = history::p_chart_limits(pbar, b.total);
                let y = 100.0 * if lower { l } else { u };
                let x = hours(b.hour_ms);
                [[x - 0.45, y], [x + 0.45, y]]
            })
            .collect()
    };
    let (ucl, lcl) = (steps(false), steps(true));
    let span = (
        rate.first().map_or(0.0, |p| p[0]) - 0.5,
        rate.last().map_or(0.0, |p| p[0]) + 0.5,
    );
    let centre = vec![[span.0, 100.0 * pbar], [span.1, 100.0 * pbar]];
    let out_of_control = res
        .hourly
        .iter()
        .filter(|b| {
            (b.fails as f64 / b.total.max(1) as f64) > history::p_chart_limits(pbar, b.total).1
        })
        .count();
    Plot::new("reject-rate")
        .height(160.0)
        .allow_scroll(false)
        .legend(egui_plot::Legend::default())
        .x_axis_label("hour (local time)")
        .y_axis_label("reject %")
        .include_x(span.0)
        .include_x(span.1)
        .include_y(0.0)
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() > 1e-6 {
                return String::new();
            }
            let ms = t0 + (i as i64) * 3_600_000;
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%d %H:00")
                        .to_string()
                })
                .unwrap_or_default()
        })
        .show(ui, |p| {
            let red = Color32::from_rgb(0xe5, 0x39, 0x35);
            p.points(
                Points::new("reject %", PlotPoints::from(rate.clone()))
                    .radius(3.0)
                    .color(red),
            );
            p.line(Line::new("reject %", PlotPoints::from(rate)).color(red));
            p.line(Line::new("centre line", PlotPoints::from(centre)).color(Color32::LIGHT_BLUE));
            for (name, pts, colour) in [
                ("UCL (3σ)", ucl, Color32::GRAY),
                ("LCL (3σ)", lcl, Color32::DARK_GRAY),
            ] {
                for seg in pts.chunks(2) {
                    p.line(Line::new(name, PlotPoints::from(seg.to_vec())).color(colour));
                }
            }
        });
    ui.label(format!(
        "centre line {:.1}% over {} hours; {} hours above the upper limit",
        100.0 * pbar,
        res.hourly.len(),
        out_of_control
    ));
    ui.label(
        RichText::new("Defect Pareto (FAILs by class, most first; line: cumulative %)").strong(),
    );
    // Bars in falling order with the class names under them, and the cumulative share drawn
    // on the same axis (100 % at the tallest bar's height).
    let mut pareto = res.pareto.clone();
    pareto.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = pareto.iter().map(|(_, n)| n).sum();
    let top = pareto.first().map_or(1, |(_, n)| (*n).max(1)) as f64;
    let bars: Vec<Bar> = pareto
        .iter()
        .enumerate()
        .map(|(i, (c, n))| Bar::new(i as f64, *n as f64).name(c))
        .collect();
    let mut cum = 0u64;
    let cumulative: Vec<[f64; 2]> = pareto
        .iter()
        .enumerate()
        .map(|(i, (_, n))| {
            cum += n;
            [i as f64, top * cum as f64 / total.max(1) as f64]
        })
        .collect();
    let names: Vec<String> = pareto.iter().map(|(c, _)| c.clone()).collect();
    Plot::new("pareto")
        .height(160.0)
        .allow_scroll(false)
        .x_axis_label("defect class")
        .y_axis_label("FAILs")
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |p| {
            p.bar_chart(BarChart::new("fails", bars));
            p.line(
                Line::new("cumulative %", PlotPoints::from(cumulative))
                    .color(Color32::from_rgb(230, 160, 40)),
            );
        });
    let mut cum = 0u64;
    ui.label(
        pareto
            .iter()
            .map(|(c, n)| {
                cum += n;
                format!(
                    "{c} {n} ({:.0} % cumulative)",
                    100.0 * cum as f64 / total.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join(" · "),
    );
    ui.label(RichText::new("Yield per shift (06–14, 14–22, 22–06 local)").strong());
    let shifts = yield_per_shift(&res.hourly);
    let bars: Vec<Bar> = shifts
        .iter()
        .enumerate()
        .map(|(i, (name, y))| {
            Bar::new(i as f64, *y)
                .name(name)
                .fill(Color32::from_rgb(0x43, 0xa0, 0x47))
        })
        .collect();
    let shift_names: Vec<String> = shifts.iter().map(|(n, _)| n.clone()).collect();
    Plot::new("yield")
        .height(120.0)
        .allow_scroll(false)
        .y_axis_label("yield %")
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                shift_names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .show(ui, |p| p.bar_chart(BarChart::new("yield %", bars)));
    if let Some((name, y)) = shifts.last() {
        ui.label(format!("latest shift {name}: yield {y:.1}%"));
    }
}

/// Yield (%) per 8-hour shift starting 06:00, 14:00 and 22:00 local time, oldest first.
pub fn yield_per_shift(hourly: &[HourBucket]) -> Vec<(String, f64)> {
    use chrono::{Local, TimeZone as _, Timelike as _};
    let mut shifts: Vec<(String, u64, u64)> = Vec::new();
    for b in hourly {
        let Some(t) = Local.timestamp_millis_opt(b.hour_ms).single() else {
            continue;
        };
        let h = t.hour();
        let (start_day, label) = match h {
            6..=13 => (t.date_naive(), "early"),
            14..=21 => (t.date_naive(), "late"),
            22..=23 => (t.date_naive(), "night"),
            _ => (t.date_naive().pred_opt().unwrap_or(t.date_naive()), "night"),
        };
        let name = format!("{} {label}", start_day.format("%m-%d"));
        match shifts.last_mut() {
            Some(s) if s.0 == name => {
                s.1 += b.total;
                s.2 += b.fails;
            }
            _ => shifts.push((name, b.total, b.fails)),
        }
    }
    shifts
        .into_iter()
        .map(|(n, t, f)| (n, 100.0 * (t - f) as f64 / t.max(1) as f64))
        .collect()
}
