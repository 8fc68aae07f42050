//! The rejection history: every verdict in SQLite (WAL, versioned schema), written by one
//! writer thread in batched transactions, with rejected frames archived as PNG files next to the
//! database under a disk budget.
//!
//! Nothing is dropped: the writer's queue is bounded, and a full queue makes the submitter
//! wait (inspection slows rather than forgets). A failed transaction (disk full) is retried
//! until it succeeds, and the failure is reported through [`WriterStatus`]. Archived images are
//! the only thing ever pruned, oldest first; rows are never deleted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use crate::dataset::DecodedImage;
use crate::pipeline::{Verdict, VerdictSink};

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database {path}: {source}")]
    Sql {
        /// The database.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The folder could not be created.
    #[error("cannot create the history folder {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database was written by a newer version of the app.
    #[error(
        "history database {path} has schema version {found}, newer than this app's {supported}: update the app or use another --db"
    )]
    TooNew {
        /// The database.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: inspections and events.
    "CREATE TABLE inspections (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        station TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_hash TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail')),
        class TEXT NOT NULL,
        confidence REAL NOT NULL,
        score REAL NOT NULL,
        threshold REAL NOT NULL,
        latency_ms REAL NOT NULL,
        image_path TEXT,
        heatmap_path TEXT,
        override_verdict TEXT CHECK (override_verdict IN ('pass', 'fail')),
        override_by TEXT,
        override_at TEXT,
        override_reason TEXT,
        UNIQUE (run_id, seq)
    );
    CREATE INDEX inspections_ts ON inspections (ts_ms);
    CREATE INDEX inspections_verdict_ts ON inspections (verdict, ts_ms);
    CREATE INDEX inspections_class_ts ON inspections (class, ts_ms);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        station TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        run_id TEXT,
        seq INTEGER
    );
    CREATE INDEX events_ts ON events (ts_ms);",
    // 2: per-hour, per-model, per-class totals kept by the writer in the same transactions, so
    // the History tab's charts stay fast on millions of rows.
    "CREATE TABLE hourly (
        hour_ms INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        class TEXT NOT NULL,
        total INTEGER NOT NULL,
        fails INTEGER NOT NULL,
        PRIMARY KEY (hour_ms, model_id, class)
    ) WITHOUT ROWID;
    INSERT INTO hourly (hour_ms, model_id, class, total, fails)
        SELECT (ts_ms / 3600000) * 3600000, model_id, class, COUNT(*),
               SUM(COALESCE(override_verdict, verdict) = 'fail')
        FROM inspections GROUP BY 1, 2, 3;",
    // 3: the region of interest the model saw ("x,y,w,h" in frame pixels), so the archived
    // heatmap can be drawn over the right part of the archived frame.
    "ALTER TABLE inspections ADD COLUMN roi TEXT;",
];

/// The default database: `<platform data dir>/history.sqlite`.
pub fn default_db_path() -> PathBuf {
    directories::ProjectDirs::from("org", "DefectInspector", "defect-inspector")
        .map(|d| d.data_dir().join("history.sqlite"))
        .unwrap_or_else(|| PathBuf::from("defect-inspector-history.sqlite"))
}

/// One inspected frame as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectionRow {
    /// Row id (0 before insertion).
    pub id: i64,
    /// The run (one start of the app or of `inspector inspect`).
    pub run_id: String,
    /// Frame number within the run.
    pub seq: u64,
    /// RFC 3339 UTC, milliseconds.
    pub ts: String,
    /// Unix ms.
    pub ts_ms: i64,
    /// Station name.
    pub station: String,
    /// Source (`folder:…`, `camera:0`).
    pub source: String,
    /// File or frame within the source.
    pub origin: String,
    /// Model name@hash.
    pub model_id: String,
    /// Model file FNV hash.
    pub model_hash: String,
    /// The model's verdict: "pass" or "fail".
    pub verdict: String,
    /// The class reported.
    pub class: String,
    /// Its probability.
    pub confidence: f64,
    /// Fail score.
    pub score: f64,
    /// Threshold used.
    pub threshold: f64,
    /// Capture to verdict, ms.
    pub latency_ms: f64,
    /// Archived frame, relative to the archive folder.
    pub image_path: Option<String>,
    /// Archived heatmap, relative to the archive folder.
    pub heatmap_path: Option<String>,
    /// Region of interest the model saw: x, y, width, height in frame pixels.
    pub roi: Option<[u32; 4]>,
    /// A person's corrected verdict.
    pub override_verdict: Option<String>,
    /// Who corrected it.
    pub override_by: Option<String>,
    /// When.
    pub override_at: Option<String>,
    /// Why.
    pub override_reason: Option<String>,
}

impl InspectionRow {
    /// The verdict that stands: the override when there is one.
    pub fn final_verdict(&self) -> &str {
        self.override_verdict.as_deref().unwrap_or(&self.verdict)
    }
}

/// One event as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRow {
    /// RFC 3339 UTC.
    pub ts: String,
    /// Unix ms.
    pub ts_ms: i64,
    /// Station.
    pub station: String,
    /// "model_activated", "threshold_changed", "camera_lost", "camera_found", "alarm",
    /// "alarm_acknowledged", "override", "source_changed", "archive_error".
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
    /// The inspection it concerns, if any.
    pub run_id: Option<String>,
    /// Frame within that run.
    pub seq: Option<u64>,
}

impl EventRow {
    /// An event now.
    pub fn now(station: &str, kind: &str, detail: impl Into<String>) -> Self {
        let t = chrono::Utc::now();
        Self {
            ts: rfc3339(t),
            ts_ms: t.timestamp_millis(),
            station: station.into(),
            kind: kind.into(),
            detail: detail.into(),
            run_id: None,
            seq: None,
        }
    }
}

fn parse_roi(s: &str) -> Option<[u32; 4]> {
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    <[u32; 4]>::try_from(v).ok()
}

/// RFC 3339 with milliseconds and `Z`.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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
}

impl Filter {
    fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
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
}

/// A connection to the history database (one per thread).
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when missing) and migrates the database; WAL mode.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let sql = |source| HistoryError::Sql {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(HistoryError::TooNew {
                path: path.display().to_string(),
                found: version,
                supported,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(m).map_err(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive folder next to the database.
    pub fn archive_dir(&self) -> PathBuf {
        archive_dir_for(&self.path)
    }

    fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Sql {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Inserts rows and events and applies overrides in one transaction.
    pub fn write_batch(&mut self, ops: &[Op]) -> Result<(), HistoryError> {
        let path = self.path.display().to_string();
        let sql = |source| HistoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO inspections (run_id, seq, ts, ts_ms, station, source, origin,
                     model_id, model_hash, verdict, class, confidence, score, threshold, latency_ms,
                     image_path, heatmap_path, roi)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .map_err(sql)?;
            let mut ev = tx
                .prepare_cached(
                    "INSERT INTO events (ts, ts_ms, station, kind, detail, run_id, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            let mut ovr = tx
                .prepare_cached(
                    "UPDATE inspections SET override_verdict = ?3, override_by = ?4, override_at = ?5,
                     override_reason = ?6 WHERE run_id = ?1 AND seq = ?2",
                )
                .map_err(sql)?;
            let mut old = tx
                .prepare_cached(
                    "SELECT (ts_ms / 3600000) * 3600000, model_id, class,
                     COALESCE(override_verdict, verdict) FROM inspections WHERE run_id = ?1 AND seq = ?2",
                )
                .map_err(sql)?;
            let mut hour = tx
                .prepare_cached(
                    "INSERT INTO hourly (hour_ms, model_id, class, total, fails) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (hour_ms, model_id, class)
                     DO UPDATE SET total = total + excluded.total, fails = fails + excluded.fails",
                )
                .map_err(sql)?;
            for op in ops {
                match op {
                    Op::Inspection(r, _) => {
                        let inserted = ins
                            .execute(params![
                                r.run_id,
                                r.seq as i64,
                                r.ts,
                                r.ts_ms,
                                r.station,
                                r.source,
                                r.origin,
                                r.model_id,
                                r.model_hash,
                                r.verdict,
                                r.class,
                                r.confidence,
                                r.score,
                                r.threshold,
                                r.latency_ms,
                                r.image_path,
                                r.heatmap_path,
                                r.roi.map(|[x, y, w, h]| format!("{x},{y},{w},{h}"))
                            ])
                            .map_err(sql)?;
                        if inserted > 0 {
                            hour.execute(params![
                                (r.ts_ms / 3_600_000) * 3_600_000,
                                r.model_id,
                                r.class,
                                1,
                                (r.verdict == "fail") as i64
                            ])
                            .map_err(sql)?;
                        }
                    }
                    Op::Event(e) => {
                        ev.execute(params![
                            e.ts,
                            e.ts_ms,
                            e.station,
                            e.kind,
                            e.detail,
                            e.run_id,
                            e.seq.map(|s| s as i64)
                        ])
                        .map_err(sql)?;
                    }
                    Op::Override(o) => {
                        let before: Option<(i64, String, String, String)> = old
                            .query_row(params![o.run_id, o.seq as i64], |r| {
                                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                            })
                            .optional()
                            .map_err(sql)?;
                        if let Some((h, model, class, was)) = &before {
                            let delta = (o.verdict == "fail") as i64 - (was == "fail") as i64;
                            if delta != 0 {
                                hour.execute(params![h, model, class, 0, delta])
                                    .map_err(sql)?;
                            }
                        }
                        ovr.execute(params![
                            o.run_id,
                            o.seq as i64,
                            o.verdict,
                            o.by,
                            o.at,
                            o.reason
                        ])
                        .map_err(sql)?;
                        ev.execute(params![
                            o.at,
                            chrono::DateTime::parse_from_rfc3339(&o.at)
                                .map(|t| t.timestamp_millis())
                                .unwrap_or_default(),
                            o.station,
                            "override",
                            format!("{} → {}: {}", o.from, o.verdict, o.reason),
                            o.run_id,
                            o.seq as i64
                        ])
                        .map_err(sql)?;
                    }
                }
            }
        }
        tx.commit().map_err(sql)
    }

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

    fn select(
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
    fn summary_answers(f: &Filter) -> bool {
        f.class.is_none() && f.overridden.is_none() && f.text.as_deref().is_none_or(str::is_empty)
    }

    /// The summary table's WHERE clause for `f` (hours overlapping the range).
    fn summary_sql(f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
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
            let (total, fails) = match f.verdict.as_deref() {
                Some("fail") => ("SUM(fails)", "SUM(fails)"),
                Some(_) => ("SUM(total - fails)", "0"),
                None => ("SUM(total)", "SUM(fails)"),
            };
            let q = format!(
                "SELECT hour_ms, {total}, {fails} FROM hourly{w} GROUP BY hour_ms HAVING {total} > 0 ORDER BY hour_ms"
            );
            let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(HourBucket {
                        hour_ms: r.get(0)?,
                        total: r.get::<_, i64>(1)? as u64,
                        fails: r.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(|e| self.err(e))?;
            return rows.collect::<Result<_, _>>().map_err(|e| self.err(e));
        }
        let (w, args) = f.sql();
        let q = format!(
            "SELECT (ts_ms / 3600000) * 3600000 AS h, COUNT(*),
             SUM(COALESCE(override_verdict, verdict) = 'fail')
             FROM inspections{w} GROUP BY h ORDER BY h"
        );
        let mut st = self.conn.prepare_cached(&q).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(HourBucket {
                    hour_ms: r.get(0)?,
                    total: r.get::<_, i64>(1)? as u64,
                    fails: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Failed frames per class (final verdict fail), most first: the defect Pareto.
    pub fn pareto(&self, f: &Filter) -> Result<Vec<(String, u64)>, HistoryError> {
        if f.verdict.as_deref() == Some("pass") {
            return Ok(Vec::new());
        }
        if Self::summary_answers(f) {
            let (w, args) = Self::summary_sql(f);
            let q = format!(
                "SELECT class, SUM(fails) AS n FROM hourly{w} GROUP BY class HAVING n > 0
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
        f.verdict = Some("fail".into());
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
            .query_map([limit as i64], |r| {
                Ok(EventRow {
                    ts: r.get(0)?,
                    ts_ms: r.get(1)?,
                    station: r.get(2)?,
                    kind: r.get(3)?,
                    detail: r.get(4)?,
                    run_id: r.get(5)?,
                    seq: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// `PRAGMA integrity_check` says "ok".
    pub fn integrity_ok(&self) -> Result<bool, HistoryError> {
        let s: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(s == "ok")
    }
}

/// The archive folder of a database: `<db stem>-archive/` next to it.
pub fn archive_dir_for(db: &Path) -> PathBuf {
    let stem = db
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "history".into());
    db.with_file_name(format!("{stem}-archive"))
}

/// A person's correction of a verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// Run of the inspection.
    pub run_id: String,
    /// Frame in the run.
    pub seq: u64,
    /// The verdict it had.
    pub from: String,
    /// The new verdict.
    pub verdict: String,
    /// Who.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub reason: String,
    /// Station.
    pub station: String,
}

/// Pixels to archive with a row.
#[derive(Clone, Debug)]
pub struct Archive {
    /// The frame.
    pub image: Arc<DecodedImage>,
    /// The heatmap as RGBA, `(width, height, pixels)`.
    pub heatmap_rgba: (u32, u32, Vec<u8>),
}

/// One thing for the writer to store.
#[derive(Clone, Debug)]
pub enum Op {
    /// An inspected frame, with pixels to archive when it is a reject or a sampled pass.
    Inspection(Box<InspectionRow>, Option<Archive>),
    /// An event.
    Event(EventRow),
    /// A correction of a stored verdict (also stored as an event).
    Override(Override),
}

/// What the writer has done, for the status bar.
#[derive(Clone, Debug, Default)]
pub struct WriterStatus {
    /// Ops committed so far.
    pub committed: u64,
    /// Ops submitted so far.
    pub submitted: u64,
    /// The last database error, cleared by the next successful commit.
    pub db_error: Option<String>,
    /// The last archive error (disk full…), cleared by the next archived image.
    pub archive_error: Option<String>,
    /// Bytes of archived images now on disk.
    pub archive_bytes: u64,
}

/// The writer thread's handle. Clone it to submit from several threads.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Op>,
    state: Arc<(Mutex<WriterStatus>, Condvar)>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    db: PathBuf,
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct RecorderOptions {
    /// Largest total size of archived images; the oldest are deleted beyond it.
    pub archive_budget_bytes: u64,
    /// Queue length; a full queue makes submitters wait.
    pub queue: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            archive_budget_bytes: 2 << 30,
            queue: 1024,
        }
    }
}

impl Recorder {
    /// Opens the database (migrating it) and starts the writer thread.
    pub fn start(db: &Path, options: RecorderOptions) -> Result<Self, HistoryError> {
        let store = Store::open(db)?;
        let (tx, rx) = bounded(options.queue.max(1));
        let state = Arc::new((Mutex::new(WriterStatus::default()), Condvar::new()));
        let st = state.clone();
        let archive = Archiver::new(store.archive_dir(), options.archive_budget_bytes);
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer_loop(store, rx, st, archive))
            .map_err(|source| HistoryError::Io {
                path: db.display().to_string(),
                source,
            })?;
        Ok(Self {
            tx,
            state,
            thread: Arc::new(Mutex::new(Some(thread))),
            db: db.to_path_buf(),
        })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Queues `op`, waiting while the queue is full; returns its ticket for
    /// [`Self::wait_committed`].
    pub fn submit(&self, op: Op) -> Result<u64, String> {
        let (m, _) = &*self.state;
        let ticket = {
            let mut s = m.lock().map_err(|_| "history writer state poisoned")?;
            s.submitted += 1;
            s.submitted
        };
        self.tx
            .send(op)
            .map_err(|_| "the history writer has stopped".to_string())?;
        Ok(ticket)
    }

    /// Queues `op` only if there is room at once (the UI thread never waits): gives it back
    /// otherwise, to try again on the next frame.
    #[allow(clippy::result_large_err)] // the op is handed back, not an error to propagate
    pub fn try_submit(&self, op: Op) -> Result<(), Op> {
        let (m, _) = &*self.state;
        let Ok(mut s) = m.lock() else { return Err(op) };
        match self.tx.try_send(op) {
            Ok(()) => {
                s.submitted += 1;
                Ok(())
            }
            Err(TrySendError::Full(op) | TrySendError::Disconnected(op)) => Err(op),
        }
    }

    /// Waits until op `ticket` is committed (or `timeout`); true when it is.
    pub fn wait_committed(&self, ticket: u64, timeout: Duration) -> bool {
        let (m, cv) = &*self.state;
        let Ok(guard) = m.lock() else { return false };
        cv.wait_timeout_while(guard, timeout, |s| s.committed < ticket)
            .map(|(s, _)| s.committed >= ticket)
            .unwrap_or(false)
    }

    /// A snapshot of the writer's state.
    pub fn status(&self) -> WriterStatus {
        self.state.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for everything queued so far to be committed, then stops the writer.
    pub fn finish(self) {
        let Self { tx, thread, .. } = self;
        drop(tx);
        if let Some(t) = thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

fn writer_loop(
    mut store: Store,
    rx: Receiver<Op>,
    state: Arc<(Mutex<WriterStatus>, Condvar)>,
    mut archive: Archiver,
) {
    const BATCH: usize = 512;
    {
        let (m, _) = &*state;
        if let Ok(mut s) = m.lock() {
            s.archive_bytes = archive.total;
        }
    }
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Archive pixels first so the rows can point at the files.
        let mut archive_error = None;
        for op in &mut batch {
            if let Op::Inspection(row, Some(a)) = op {
                match archive.store(row, a) {
                    Ok(()) => {}
                    Err(e) => {
                        row.image_path = None;
                        row.heatmap_path = None;
                        archive_error = Some(format!(
                            "{e} — verdicts are still recorded; free disk space or lower the \
                             archive budget in Settings"
                        ));
                    }
                }
            }
        }
        let mut delay = Duration::from_millis(50);
        loop {
            match store.write_batch(&batch) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!("{e}; retrying");
                    if let Ok(mut s) = state.0.lock() {
                        s.db_error = Some(format!("{e} — verdicts are kept in memory and retried"));
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        let (m, cv) = &*state;
        if let Ok(mut s) = m.lock() {
            s.committed += batch.len() as u64;
            s.db_error = None;
            s.archive_bytes = archive.total;
            if archive_error.is_some() {
                s.archive_error = archive_error;
            } else if batch
                .iter()
                .any(|o| matches!(o, Op::Inspection(r, Some(_)) if r.image_path.is_some()))
            {
                s.archive_error = None;
            }
        }
        cv.notify_all();
    }
}

/// Writes archived images and keeps them under the budget, deleting the oldest files.
struct Archiver {
    dir: PathBuf,
    budget: u64,
    total: u64,
    files: VecDeque<(PathBuf, u64)>,
}

impl Archiver {
    fn new(dir: PathBuf, budget: u64) -> Self {
        let mut files = Vec::new();
        collect_files(&dir, &mut files, 0);
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let total = files.iter().map(|f| f.1).sum();
        Self {
            dir,
            budget,
            total,
            files: files.into(),
        }
    }

    fn store(&mut self, row: &mut InspectionRow, a: &Archive) -> Result<(), String> {
        let day = row.ts.get(..10).unwrap_or("undated").to_string();
        let dir = self.dir.join(&day);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create archive folder {}: {e}", dir.display()))?;
        let stem = format!("{}-{:08}", sanitize(&row.run_id), row.seq);
        let img_rel = format!("{day}/{stem}.png");
        let heat_rel = format!("{day}/{stem}-heat.png");
        let img = &a.image;
        let color = match img.format {
            kernels::PixelFormat::Gray8 => image::ExtendedColorType::L8,
            kernels::PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
            kernels::PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
        };
        let mut written = 0;
        for (rel, data, w, h, c) in [
            (&img_rel, &img.data[..], img.width, img.height, color),
            (
                &heat_rel,
                &a.heatmap_rgba.2[..],
                a.heatmap_rgba.0,
                a.heatmap_rgba.1,
                image::ExtendedColorType::Rgba8,
            ),
        ] {
            let path = self.dir.join(rel);
            image::save_buffer_with_format(&path, data, w, h, c, image::ImageFormat::Png)
                .map_err(|e| format!("cannot archive {}: {e}", path.display()))?;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.files.push_back((path, size));
            self.total += size;
            written += 1;
        }
        debug_assert_eq!(written, 2);
        row.image_path = Some(img_rel);
        row.heatmap_path = Some(heat_rel);
        while self.total > self.budget {
            let Some((p, size)) = self.files.pop_front() else {
                break;
            };
            let _ = std::fs::remove_file(&p);
            self.total = self.total.saturating_sub(size);
        }
        Ok(())
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>, depth: usize) {
    if depth > 3 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out, depth + 1);
        } else if let Ok(m) = e.metadata() {
            out.push((p, m.len()));
        }
    }
}

/// Records verdicts from the pipeline: every verdict a row; rejects (and a sample of passes)
/// archived with their heatmap.
pub struct RecorderSink {
    /// The writer.
    pub recorder: Recorder,
    /// This run.
    pub run_id: String,
    /// Station name.
    pub station: String,
    /// Share of passes archived, 0..=1.
    pub pass_sample: f64,
    /// Tickets of recorded verdicts, by frame (for callers that report only committed verdicts).
    pub last_ticket: Arc<std::sync::atomic::AtomicU64>,
}

/// A new run id: UTC time and process id.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

impl RecorderSink {
    /// A sink writing through `recorder`.
    pub fn new(recorder: Recorder, station: &str, pass_sample: f64) -> Self {
        Self {
            recorder,
            run_id: new_run_id(),
            station: station.into(),
            pass_sample,
            last_ticket: Arc::default(),
        }
    }
}

/// Whether frame `seq` of a run is in the pass sample (deterministic, spread evenly).
pub fn sampled(seq: u64, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    let x = kernels::rng::SplitMix64::new(seq).next_u64();
    (x as f64 / u64::MAX as f64) < share
}

/// The row stored for a verdict.
pub fn row_for(v: &Verdict, run_id: &str, station: &str) -> InspectionRow {
    InspectionRow {
        id: 0,
        run_id: run_id.into(),
        seq: v.seq,
        ts: rfc3339(v.timestamp),
        ts_ms: v.timestamp.timestamp_millis(),
        station: station.into(),
        source: v.source.clone(),
        origin: v.origin.clone(),
        model_id: v.model_id.clone(),
        model_hash: v.model_hash.clone(),
        verdict: v.word().into(),
        class: v.class.clone(),
        confidence: v.confidence as f64,
        score: v.score as f64,
        threshold: v.threshold as f64,
        latency_ms: v.latency_ms,
        image_path: None,
        heatmap_path: None,
        roi: Some([v.roi.x, v.roi.y, v.roi.width, v.roi.height]),
        override_verdict: None,
        override_by: None,
        override_at: None,
        override_reason: None,
    }
}

impl VerdictSink for RecorderSink {
    fn record(&mut self, v: &Verdict) -> Result<(), String> {
        let archive = (v.fail || sampled(v.seq, self.pass_sample)).then(|| Archive {
            image: v.image.clone(),
            heatmap_rgba: crate::display::heatmap_rgba(&v.heatmap, v.fail),
        });
        let row = row_for(v, &self.run_id, &self.station);
        let t = self
            .recorder
            .submit(Op::Inspection(Box::new(row), archive))?;
        self.last_ticket
            .store(t, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Submits `n` FAIL rows (seq 1..=n), each with `img` and `heat` to archive; returns the
    /// last ticket.
    fn submit_archived_fails(
        rec: &Recorder,
        n: u64,
        img: &Arc<DecodedImage>,
        heat: (u32, u32, Vec<u8>),
    ) -> u64 {
        let mut last = 0;
        for seq in 1..=n {
            let a = Archive {
                image: img.clone(),
                heatmap_rgba: heat.clone(),
            };
            last = rec
                .submit(Op::Inspection(
                    Box::new(row(seq, "fail", "Crack", seq as i64)),
                    Some(a),
                ))
                .unwrap();
        }
        last
    }

    fn row(seq: u64, verdict: &str, class: &str, ts_ms: i64) -> InspectionRow {
        InspectionRow {
            id: 0,
            run_id: "r".into(),
            seq,
            ts: rfc3339(chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default()),
            ts_ms,
            station: "s".into(),
            source: "synthetic".into(),
            origin: format!("frame {seq}"),
            model_id: "m@1".into(),
            model_hash: "1".into(),
            verdict: verdict.into(),
            class: class.into(),
            confidence: 0.9,
            score: 0.5,
            threshold: 0.5,
            latency_ms: 3.0,
            image_path: None,
            heatmap_path: None,
            roi: None,
            override_verdict: None,
            override_by: None,
            override_at: None,
            override_reason: None,
        }
    }

    #[test]
    fn store_filters_charts_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite");
        let mut s = Store::open(&db).unwrap();
        let hour = 3_600_000;
        let ops: Vec<Op> = vec![
            Op::Inspection(Box::new(row(1, "pass", "Free", 10 * hour)), None),
            Op::Inspection(Box::new(row(2, "fail", "Crack", 10 * hour + 5)), None),
            Op::Inspection(Box::new(row(3, "fail", "Crack", 11 * hour)), None),
            Op::Inspection(
                Box::new(InspectionRow {
                    roi: Some([5, 6, 70, 80]),
                    ..row(4, "fail", "Break", 11 * hour + 1)
                }),
                None,
            ),
            Op::Event(EventRow::now("s", "threshold_changed", "0.5 → 0.4")),
        ];
        s.write_batch(&ops).unwrap();
        // The same frame twice is stored once.
        s.write_batch(&ops[..1]).unwrap();
        assert_eq!(s.count(&Filter::default()).unwrap(), 4);
        let fails = Filter {
            verdict: Some("fail".into()),
            ..Filter::default()
        };
        assert_eq!(s.count(&fails).unwrap(), 3);
        assert_eq!(
            s.pareto(&Filter::default()).unwrap(),
            vec![("Crack".to_string(), 2), ("Break".to_string(), 1)]
        );
        let h = s.hourly(&Filter::default()).unwrap();
        assert_eq!(
            h,
            vec![
                HourBucket {
                    hour_ms: 10 * hour,
                    total: 2,
                    fails: 1
                },
                HourBucket {
                    hour_ms: 11 * hour,
                    total: 2,
                    fails: 2
                }
            ]
        );
        s.write_batch(&[Op::Override(Override {
            run_id: "r".into(),
            seq: 2,
            from: "fail".into(),
            verdict: "pass".into(),
            by: "ann".into(),
            at: rfc3339(chrono::Utc::now()),
            reason: "dust, not a crack".into(),
            station: "s".into(),
        })])
        .unwrap();
        assert_eq!(s.count(&fails).unwrap(), 2);
        // The per-hour summary follows the override, and agrees with a scan of the rows.
        let summary = s.hourly(&Filter::default()).unwrap();
        assert_eq!(
            summary[0],
            HourBucket {
                hour_ms: 10 * hour,
                total: 2,
                fails: 0
            }
        );
        let scanned = s
            .hourly(&Filter {
                text: Some("frame".into()),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(summary, scanned);
        assert_eq!(
            s.pareto(&Filter::default()).unwrap(),
            s.pareto(&Filter {
                text: Some("frame".into()),
                ..Filter::default()
            })
            .unwrap()
        );
        let o = Filter {
            overridden: Some(true),
            ..Filter::default()
        };
        let rows = s.query(&o, 10, 0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].override_reason.as_deref(),
            Some("dust, not a crack")
        );
        assert_eq!(rows[0].final_verdict(), "pass");
        let ev = s.events(10).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().any(|e| e.kind == "override"));
        // Newest first, paged.
        let page = s.query(&Filter::default(), 2, 1).unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2]);
        let newest = s.query(&Filter::default(), 1, 0).unwrap();
        assert_eq!(newest[0].roi, Some([5, 6, 70, 80]));
        assert_eq!(page[0].roi, None);
        assert!(s.integrity_ok().unwrap());
        let mut csv = Vec::new();
        write_csv(&mut csv, &rows).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with("id,time,station"));
        assert!(text.contains("dust, not a crack"));
        drop(s);
        // Reopening does not migrate again.
        let s = Store::open(&db).unwrap();
        assert_eq!(s.count(&Filter::default()).unwrap(), 4);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite");
        drop(Store::open(&db).unwrap());
        let c = Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Store::open(&db).err().unwrap().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn times_parse() {
        let now = chrono::DateTime::from_timestamp_millis(100 * 86_400_000).unwrap();
        assert_eq!(parse_time("24h", now).unwrap(), 99 * 86_400_000);
        assert_eq!(parse_time("7d", now).unwrap(), 93 * 86_400_000);
        assert_eq!(parse_time("1970-01-02T00:00:00Z", now).unwrap(), 86_400_000);
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5y", now).is_err());
    }

    #[test]
    fn p_chart() {
        let (lo, hi) = p_chart_limits(0.1, 100);
        assert!((hi - 0.19).abs() < 1e-12 && (lo - 0.01).abs() < 1e-12);
        assert_eq!(p_chart_limits(0.5, 0), (0.0, 1.0));
    }

    #[test]
    fn archive_budget_prunes_files_not_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite");
        let rec = Recorder::start(
            &db,
            RecorderOptions {
                archive_budget_bytes: 4000,
                queue: 4,
            },
        )
        .unwrap();
        let img = Arc::new(DecodedImage {
            data: (0..64 * 64).map(|i| (i * 7 % 251) as u8).collect(),
            width: 64,
            height: 64,
            format: kernels::PixelFormat::Gray8,
        });
        let last = submit_archived_fails(&rec, 20, &img, (2, 2, vec![255; 16]));
        assert!(rec.wait_committed(last, Duration::from_secs(20)));
        let st = rec.status();
        assert!(st.archive_bytes <= 4000, "{st:?}");
        rec.finish();
        let s = Store::open(&db).unwrap();
        assert_eq!(s.count(&Filter::default()).unwrap(), 20);
        let rows = s.query(&Filter::default(), 100, 0).unwrap();
        let newest = &rows[0];
        let p = s.archive_dir().join(newest.image_path.as_ref().unwrap());
        assert!(p.is_file(), "newest archived image kept");
        let oldest = rows.last().unwrap();
        let p = s.archive_dir().join(oldest.image_path.as_ref().unwrap());
        assert!(!p.exists(), "oldest archived image pruned");
    }

    #[test]
    fn queries_run_while_the_writer_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite");
        let rec = Recorder::start(&db, RecorderOptions::default()).unwrap();
        let writer = {
            let rec = rec.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for seq in 1..=20_000u64 {
                    let v = if seq % 7 == 0 { "fail" } else { "pass" };
                    last = rec
                        .submit(Op::Inspection(
                            Box::new(row(seq, v, "Crack", seq as i64 * 1000)),
                            None,
                        ))
                        .unwrap();
                }
                last
            })
        };
        // A second connection, as the History tab has, reads throughout.
        std::thread::sleep(Duration::from_millis(50));
        let reader = Store::open(&db).unwrap();
        let mut seen = 0;
        let mut queries = 0;
        while !writer.is_finished() || queries < 3 {
            let n = reader.count(&Filter::default()).unwrap();
            assert!(n >= seen, "count went backwards");
            seen = n;
            let page = reader.query(&Filter::default(), 50, 0).unwrap();
            assert!(page.len() as u64 == n.min(50));
            reader.hourly(&Filter::default()).unwrap();
            reader.pareto(&Filter::default()).unwrap();
            queries += 1;
        }
        let last = writer.join().unwrap();
        assert!(rec.wait_committed(last, Duration::from_secs(60)));
        assert_eq!(reader.count(&Filter::default()).unwrap(), 20_000);
        let h = reader.hourly(&Filter::default()).unwrap();
        assert_eq!(h.iter().map(|b| b.total).sum::<u64>(), 20_000);
        assert_eq!(h.iter().map(|b| b.fails).sum::<u64>(), 20_000 / 7);
        rec.finish();
    }

    #[test]
    fn archive_failure_is_reported_and_rows_are_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.sqlite");
        // A file where the archive folder should be: every archive write fails, as on a full
        // or read-only disk.
        std::fs::write(archive_dir_for(&db), b"in the way").unwrap();
        let rec = Recorder::start(&db, RecorderOptions::default()).unwrap();
        let img = Arc::new(DecodedImage {
            data: vec![7; 16],
            width: 4,
            height: 4,
            format: kernels::PixelFormat::Gray8,
        });
        let last = submit_archived_fails(&rec, 3, &img, (1, 1, vec![255; 4]));
        assert!(rec.wait_committed(last, Duration::from_secs(20)));
        let err = rec
            .status()
            .archive_error
            .expect("the archive failure is reported");
        assert!(err.contains("verdicts are still recorded"), "{err}");
        rec.finish();
        let s = Store::open(&db).unwrap();
        let rows = s.query(&Filter::default(), 10, 0).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.image_path.is_none()));
    }
}
