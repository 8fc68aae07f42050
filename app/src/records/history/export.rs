//! Exports of the history: rows as CSV, control-chart limits.

use super::schema::*;

/// Writes rows as CSV (header included).
pub fn write_csv<W: std::io::Write>(w: W, rows: &[InspectionRow]) -> Result<(), String> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "id",
        "time",
        "station",
        "source",
        "origin",
        "model",
        "verdict",
        "final_verdict",
        "class",
        "confidence",
        "score",
        "threshold",
        "latency_ms",
        "image",
        "heatmap",
        "override_by",
        "override_at",
        "override_reason",
    ])
    .map_err(|e| e.to_string())?;
    for r in rows {
        out.write_record([
            r.id.to_string(),
            r.ts.clone(),
            r.station.clone(),
            r.source.clone(),
            r.origin.clone(),
            r.model_id.clone(),
            r.verdict.clone(),
            r.final_verdict().to_string(),
            r.class.clone(),
            format!("{:.6}", r.confidence),
            format!("{:.6}", r.score),
            format!("{:.6}", r.threshold),
            format!("{:.3}", r.latency_ms),
            r.image_path.clone().unwrap_or_default(),
            r.heatmap_path.clone().unwrap_or_default(),
            r.override_by.clone().unwrap_or_default(),
            r.override_at.clone().unwrap_or_default(),
            r.override_reason.clone().unwrap_or_default(),
        ])
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// p-chart control limits for a subgroup of `n` with overall fail share `p`: (lower, upper).
pub fn p_chart_limits(p: f64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    ((p - 3.0 * sigma).max(0.0), (p + 3.0 * sigma).min(1.0))
}
