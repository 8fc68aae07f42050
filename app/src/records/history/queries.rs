//! Reading the history: filters, the filtered rows, counts, hourly buckets, the Pareto of
//! reject classes, distinct values and the event log.

use serde::Serialize;

use super::schema::*;

/// A query over the inspections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// From (unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Until (unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Final verdict ("pass"/"fail").
    pub verdict: Option<String>,
    /// Class.
    pub class: Option<String>,
    /// Model id.
    pub model: Option<String>,
    /// Only overridden (true) or only not overridden (false).
    pub overridden: Option<bool>,
    /// Origin contains this text.
    pub text: Option<String>,
    /// Station (the plant's station id; a station's own history: its station name).
    pub station: Option<String>,
    /// Line (the plant database only; a station's own history has one line).
    pub line: Option<String>,
}

impl Filter {
    pub(super) fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(s) = self.since_ms {
            clauses.push("ts_ms >= ?");
            args.push(Value::Integer(s));
        }
        if let Some(u) = self.until_ms {
            clauses.push("ts_ms < ?");
            args.push(Value::Integer(u));
        }
        if let Some(v) = &self.verdict {
            clauses.push("COALESCE(override_verdict, verdict) = ?");
            args.push(Value::Text(v.clone()));
        }
        if let Some(c) = &self.class {
            clauses.push("class = ?");
            args.push(Value::Text(c.clone()));
        }
        if let Some(m) = &self.model {
            clauses.push("model_id = ?");
            args.push(Value::Text(m.clone()));
        }
        if let Some(s) = &self.station {
            clauses.push("station = ?");
            args.push(Value::Text(s.clone()));
        }
        match self.overridden {
            Some(true) => clauses.push("override_verdict IS NOT NULL"),
            Some(false) => clauses.push("override_verdict IS NULL"),
            None => {}
        }
        if let Some(t) = self.text.as_ref().filter(|t| !t.is_empty()) {
            clauses.push("instr(origin, ?) > 0");
            args.push(Value::Text(t.clone()));
        }
        let w = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        (w, args)
    }
}

/// Parses `--since`/`--until`: RFC 3339, or a duration back from now (`24h`, `7d`, `30m`).
pub fn parse_time(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        format!("{s:?} is neither RFC 3339 (2026-11-26T08:00:00Z) nor a duration like 24h or 7d")
    })?;
    let ms = match unit {
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("{s:?}: a duration ends in m, h or d (24h, 7d)")),
    };
    Ok(now.timestamp_millis() - ms)
}

/// One hour's counts (for the p-chart).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourBucket {
    /// Start of the hour, unix ms.
    pub hour_ms: i64,
    /// Inspected.
    pub total: u64,
    /// Failed (final verdict).
    pub fails: u64,
    /// REVIEW verdicts no person has decided yet (final verdict "review").
    pub reviews: u64,
}

/// The per-hour summary's columns `(total, fails, reviews)` for a final-verdict filter: the
/// same answer as counting the rows (SQLite and PostgreSQL spell these alike).
pub fn summary_columns(verdict: Option<&str>) -> (&'static str, &'static str, &'static str) {
    match verdict {
        Some("fail") => ("SUM(fails)", "SUM(fails)", "0"),
        Some("review") => ("SUM(reviews)", "0", "SUM(reviews)"),
        Some(_) => ("SUM(total - fails - reviews)", "0", "0"),
        None => ("SUM(total)", "SUM(fails)", "SUM(reviews)"),
    }
}

impl Store {
    /// Rows matching `f`, newest first.
    pub fn query(
        &self,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<InspectionRow>, HistoryError> {
        let (w, mut args) = f.sql();
        args.push(rusqlite::types::Value::Integer(
            limit.min(i64::MAX as u64) as i64
        ));
        args.push(rusqlite::types::Value::Integer(
            offset.min(i64::MAX as u64) as i64
        ));
        self.select(
            &format!("{w} ORDER BY ts_ms DESC, id DESC LIMIT ? OFFSET ?"),
            args,
        )
    }

    pub(super) fn select(
        &self,
        tail: &str,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<InspectionRow>, HistoryError> {
        let q = format!(
            "SELECT id, run_id, seq, ts, ts_ms, station, source, origin, model_id, model_hash, verdict,
             class, confidence, score, threshold, latency_ms, image_path, heatmap_path,
             override_verdict, override_by, override_at, override_reason, roi
             FROM inspections{tail}"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(InspectionRow {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    ts: r.get(3)?,
                    ts_ms: r.get(4)?,
                    station: r.get(5)?,
                    source: r.get(6)?,
                    origin: r.get(7)?,
                    model_id: r.get(8)?,
                    model_hash: r.get(9)?,
                    verdict: r.get(10)?,
                    class: r.get(11)?,
                    confidence: r.get(12)?,
                    score: r.get(13)?,
                    threshold: r.get(14)?,
                    latency_ms: r.get(15)?,
                    image_path: r.get(16)?,
                    heatmap_path: r.get(17)?,
                    override_verdict: r.get(18)?,
                    override_by: r.get(19)?,
                    override_at: r.get(20)?,
                    override_reason: r.get(21)?,
                    roi: r.get::<_, Option<String>>(22)?.and_then(|s| parse_roi(&s)),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// How many rows match `f`.
    pub fn count(&self, f: &Filter) -> Result<u64, HistoryError> {
        let (w, args) = f.sql();
        let q = format!("SELECT COUNT(*) FROM inspections{w}");
        self.conn
            .query_row(&q, rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Whether the per-hour summary answers `f` (time and model filters only).
    pub(super) fn summary_answers(f: &Filter) -> bool {
        f.class.is_none()
            && f.overridden.is_none()
            && f.station.is_none()
            && f.text.as_deref().is_none_or(str::is_empty)
    }

    /// The summary table's WHERE clause for `f` (hours overlapping the range).
    pub(super) fn summary_sql(f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut args = Vec::new();
        if let Some(s) = f.since_ms {
            clauses.push("hour_ms >= ?");
            args.push(Value::Integer((s / 3_600_000) * 3_600_000));
        }
        if let Some(u) = f.until_ms {
            clauses.push("hour_ms < ?");
            args.push(Value::Integer(u));
        }
        if let Some(m) = &f.model {
            clauses.push("model_id = ?");
            args.push(Value::Text(m.clone()));
        }
        let w = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        (w, args)
    }

    /// Inspected and failed per hour (final verdicts), oldest first. Time and model filters
    /// are answered from the per-hour summary (whole hours); other filters scan the rows.
    pub fn hourly(&self, f: &Filter) -> Result<Vec<HourBucket>, HistoryError> {
        if Self::summary_answers(f) {
            let (w, args) = Self::summary_sql(f);
            let (total, fails, reviews) = summary_columns(f.verdict.as_deref());
            let q = format!(
                "SELECT hour_ms, {total}, {fails}, {reviews} FROM hourly{w} GROUP BY hour_ms
                 HAVING {total} > 0 ORDER BY hour_ms"
            );
            let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(HourBucket {
                        hour_ms: r.get(0)?,
                        total: r.get::<_, i64>(1)? as u64,
                        fails: r.get::<_, i64>(2)? as u64,
                        reviews: r.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(|e| self.err(e))?;
            return rows.collect::<Result<_, _>>().map_err(|e| self.err(e));
        }
        let (w, args) = f.sql();
        let q = format!(
            "SELECT (ts_ms / 3600000) * 3600000 AS h, COUNT(*),
             SUM(COALESCE(override_verdict, verdict) = 'fail'),
             SUM(COALESCE(override_verdict, verdict) = 'review')
             FROM inspections{w} GROUP BY h ORDER BY h"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(HourBucket {
                    hour_ms: r.get(0)?,
                    total: r.get::<_, i64>(1)? as u64,
                    fails: r.get::<_, i64>(2)? as u64,
                    reviews: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Failed frames per class (final verdict fail), most first: the defect Pareto. With the
    /// REVIEW filter: the REVIEW frames waiting for a decision per suspected defect.
    pub fn pareto(&self, f: &Filter) -> Result<Vec<(String, u64)>, HistoryError> {
        if f.verdict.as_deref() == Some("pass") {
            return Ok(Vec::new());
        }
        let review = f.verdict.as_deref() == Some("review");
        if Self::summary_answers(f) {
            let (w, args) = Self::summary_sql(f);
            let col = if review { "reviews" } else { "fails" };
            let q = format!(
                "SELECT class, SUM({col}) AS n FROM hourly{w} GROUP BY class HAVING n > 0
                 ORDER BY n DESC, class"
            );
            let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(|e| self.err(e))?;
            return rows.collect::<Result<_, _>>().map_err(|e| self.err(e));
        }
        let mut f = f.clone();
        f.verdict = Some(if review { "review" } else { "fail" }.into());
        let (w, args) = f.sql();
        let q = format!(
            "SELECT class, COUNT(*) AS n FROM inspections{w} GROUP BY class ORDER BY n DESC, class"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Distinct classes and models seen (for filter menus).
    pub fn distinct(&self, column: &str) -> Result<Vec<String>, HistoryError> {
        let column = match column {
            "class" => "class",
            "model_id" => "model_id",
            _ => return Ok(Vec::new()),
        };
        let q = format!("SELECT DISTINCT {column} FROM inspections ORDER BY 1 LIMIT 200");
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The newest events.
    pub fn events(&self, limit: u64) -> Result<Vec<EventRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT ts, ts_ms, station, kind, detail, run_id, seq FROM events
                 ORDER BY ts_ms DESC, id DESC LIMIT ?",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([limit as i64], |r| event_from(r, 0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// An event read from `ts, ts_ms, station, kind, detail, run_id, seq` starting at column `at`.
pub(super) fn event_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        ts: r.get(at)?,
        ts_ms: r.get(at + 1)?,
        station: r.get(at + 2)?,
        kind: r.get(at + 3)?,
        detail: r.get(at + 4)?,
        run_id: r.get(at + 5)?,
        seq: r.get::<_, Option<i64>>(at + 6)?.map(|s| s as u64),
    })
}
