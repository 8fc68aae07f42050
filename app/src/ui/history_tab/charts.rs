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
    // x in hours from the first hour's start; each hour's point at its middle, so one hour of
    // data spans its own hour on the axis (from its start to its end).
    let hours = |ms: i64| (ms - t0) as f64 / 3_600_000.0;
    // One point per hour at its middle: `count`'s share of the hour's parts, percent.
    let per_hour = |count: fn(&HourBucket) -> u64| -> Vec<[f64; 2]> {
        res.hourly
            .iter()
            .map(|b| {
                [
                    hours(b.hour_ms) + 0.5,
                    100.0 * count(b) as f64 / b.total.max(1) as f64,
                ]
            })
            .collect()
    };
    let rate = per_hour(|b| b.fails);
    // REVIEW verdicts still waiting for a person, per hour: their own series, never in the
    // reject rate.
    let reviews: u64 = res.hourly.iter().map(|b| b.reviews).sum();
    let review_rate = per_hour(|b| b.reviews);
    let amber = crate::ui::inspect::REVIEW_AMBER;
    // Limits per hour (they depend on that hour's count) as steps one hour wide, so even a
    // single hour shows them; the centre line spans the whole range.
    let steps = |lower: bool| -> Vec<[f64; 2]> {
        res.hourly
            .iter()
            .flat_map(|b| {
                let (l, u) = history::p_chart_limits(pbar, b.total);
                let y = 100.0 * if lower { l } else { u };
                let x = hours(b.hour_ms);
                [[x + 0.05, y], [x + 0.95, y]]
            })
            .collect()
    };
    let (ucl, lcl) = (steps(false), steps(true));
    let span = (
        0.0,
        res.hourly.last().map_or(1.0, |b| hours(b.hour_ms) + 1.0),
    );
    let centre = vec![[span.0, 100.0 * pbar], [span.1, 100.0 * pbar]];
    // Room above the highest point or limit: nothing sits on the top edge.
    let top = rate
        .iter()
        .chain(ucl.iter())
        .chain(review_rate.iter().filter(|_| reviews > 0))
        .map(|p| p[1])
        .fold(100.0 * pbar, f64::max);
    let (y_max, y_step) = y_axis(top);
    let x_step = x_step(span.1 - span.0);
    let multi_day = span.1 - span.0 > 24.0;
    let out_of_control = res
        .hourly
        .iter()
        .filter(|b| {
            (b.fails as f64 / b.total.max(1) as f64) > history::p_chart_limits(pbar, b.total).1
        })
        .count();
    let red = Color32::from_rgb(0xe5, 0x39, 0x35);
    // The legend above the plot, never over the data (the current hour is at the right).
    ui.horizontal_wrapped(|ui| {
        ui.colored_label(red, "reject % of the hour (points)");
        ui.colored_label(Color32::LIGHT_BLUE, "centre line");
        ui.colored_label(Color32::GRAY, "upper limit (3 sigma)");
        ui.colored_label(Color32::DARK_GRAY, "lower limit");
        if reviews > 0 {
            ui.colored_label(amber, "REVIEW % waiting for a decision");
        }
    });
    Plot::new("reject-rate")
        .height(170.0)
        .allow_scroll(false)
        .x_axis_label("time (local)")
        .y_axis_label("reject %")
        .include_x(span.0)
        .include_x(span.1)
        .default_y_bounds(0.0, y_max)
        .y_axis_min_width(36.0)
        .y_grid_spacer(move |input| marks(input.bounds, y_step))
        .x_grid_spacer(move |input| marks(input.bounds, x_step))
        .y_axis_formatter(|mark, _| {
            if mark.value < -1e-9 {
                String::new()
            } else if mark.step_size < 1.0 {
                format!("{:.1} %", mark.value)
            } else {
                format!("{:.0} %", mark.value)
            }
        })
        .x_axis_formatter(move |mark, _| {
            let i = mark.value.round();
            if (mark.value - i).abs() > 1e-6 {
                return String::new();
            }
            let ms = t0 + (i as i64) * 3_600_000;
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| {
                    let t = t.with_timezone(&chrono::Local);
                    if multi_day {
                        t.format("%d %H:%M").to_string()
                    } else {
                        t.format("%H:%M").to_string()
                    }
                })
                .unwrap_or_default()
        })
        .show(ui, |p| {
            p.points(
                Points::new("reject %", PlotPoints::from(rate.clone()))
                    .radius(3.0)
                    .color(red),
            );
            p.line(Line::new("reject %", PlotPoints::from(rate)).color(red));
            if reviews > 0 {
                p.line(Line::new("REVIEW %", PlotPoints::from(review_rate)).color(amber));
            }
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
    if reviews > 0 {
        ui.colored_label(
            amber,
            format!(
                "{reviews} REVIEW verdicts wait for a person's decision ({:.1}% of the parts)",
                100.0 * reviews as f64 / total.max(1) as f64
            ),
        );
    }
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

/// The reject rate per hour, one line per station (plant mode, "split by station"), on the
/// same hours as the p-chart above.
pub(super) fn station_chart(ui: &mut egui::Ui, by_station: &[(String, HourBucket)]) {
    use egui_plot::{Legend, Line, Plot, PlotPoints};
    ui.label(RichText::new("Reject rate per hour by station").strong());
    let t0 = by_station.iter().map(|(_, b)| b.hour_ms).min().unwrap_or(0);
    let hours = |ms: i64| (ms - t0) as f64 / 3_600_000.0;
    let mut series: Vec<(&str, Vec<[f64; 2]>)> = Vec::new();
    for (station, b) in by_station {
        let p = [
            hours(b.hour_ms) + 0.5,
            100.0 * b.fails as f64 / b.total.max(1) as f64,
        ];
        match series.iter_mut().find(|(s, _)| s == station) {
            Some((_, pts)) => pts.push(p),
            None => series.push((station, vec![p])),
        }
    }
    series.sort_by(|a, b| a.0.cmp(b.0));
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p[1]))
        .fold(1.0, f64::max);
    let (y_max, y_step) = y_axis(top);
    Plot::new("reject-rate-by-station")
        .height(170.0)
        .allow_scroll(false)
        .legend(Legend::default())
        .x_axis_label("hours from the first")
        .y_axis_label("reject %")
        .default_y_bounds(0.0, y_max)
        .y_grid_spacer(move |input| marks(input.bounds, y_step))
        .show(ui, |p| {
            for (i, (station, mut pts)) in series.into_iter().enumerate() {
                pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
                // Distinct hues in the stations' order (by name): stable across refreshes.
                let hue = (i as f32 * 0.618_034).fract();
                let colour: Color32 = egui::ecolor::Hsva::new(hue, 0.75, 0.85, 1.0).into();
                p.line(Line::new(station.to_string(), PlotPoints::from(pts)).color(colour));
            }
        });
}

/// Yield (%) per 8-hour shift starting 06:00, 14:00 and 22:00 local time, oldest first: the
/// parts whose final verdict is PASS, as the Inspect tab counts it (a REVIEW part no person
/// has decided yet has not passed).
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
                s.2 += b.fails + b.reviews;
            }
            _ => shifts.push((name, b.total, b.fails + b.reviews)),
        }
    }
    shifts
        .into_iter()
        .map(|(n, t, f)| (n, 100.0 * (t - f) as f64 / t.max(1) as f64))
        .collect()
}

/// The reject-% axis for data reaching `top` %: its upper end (room above the highest point)
/// and the step between its labelled ticks.
pub(super) fn y_axis(top: f64) -> (f64, f64) {
    let y_max = (top * 1.25).clamp(1.0, 100.0).max(top + 0.5);
    (y_max, nice_step(y_max / 4.0))
}

/// Hours between labelled ticks on a time axis `span` hours long (at most about six labels).
pub(super) fn x_step(span: f64) -> f64 {
    [1.0, 2.0, 3.0, 6.0, 12.0, 24.0, 48.0, 168.0]
        .into_iter()
        .find(|s| span / s <= 6.0)
        .unwrap_or(336.0)
}

/// A round step near `raw` (1, 2 or 5 times a power of ten).
pub(super) fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Grid marks every `step` within `bounds` (one thickness: every mark is labelled).
pub(super) fn marks(bounds: (f64, f64), step: f64) -> Vec<egui_plot::GridMark> {
    let first = (bounds.0 / step).ceil() as i64;
    let last = (bounds.1 / step).floor() as i64;
    (first..=last.min(first + 200))
        .map(|i| egui_plot::GridMark {
            value: i as f64 * step,
            step_size: step,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_chart_axes_have_labelled_ticks_and_room_above_the_data() {
        // One hour at 3 % rejects (upper limit 6 %): ticks every 2 %, the top above 6 %.
        let (y_max, step) = y_axis(6.0);
        assert!(y_max > 6.0 * 1.1, "{y_max}");
        let ticks: Vec<f64> = marks((0.0, y_max), step).iter().map(|m| m.value).collect();
        assert!(ticks.len() >= 3, "{ticks:?}");
        assert_eq!(ticks[0], 0.0);
        // Nothing failed: still ticks above 0.
        let (y_max, step) = y_axis(0.0);
        assert!(marks((0.0, y_max), step).len() >= 3);
        // All failed: 100 % is not the top edge.
        assert!(y_axis(100.0).0 > 100.0);
        // One hour of data: ticks at its start and end; a week: at most about six.
        assert_eq!(
            marks((0.0, 1.0), x_step(1.0))
                .iter()
                .map(|m| m.value)
                .collect::<Vec<_>>(),
            [0.0, 1.0]
        );
        assert!(marks((0.0, 168.0), x_step(168.0)).len() <= 8);
    }
}
