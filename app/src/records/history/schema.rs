//! The database file: its errors, versioned schema (migrations), the rows as stored, and
//! opening a [`Store`] (one connection per thread). Reading is in [`super::queries`],
//! writing in [`super::writer`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

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
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 4: line I/O — the inspection number the PLC and the plant see, the PLC's part number, the
    // error code of a fail-safe result, and the MQTT outbox state (NULL: not for MQTT, 0: to
    // send, 1: acknowledged by the broker).
    "CREATE TABLE line_results (
        inspection_id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        part_number INTEGER,
        error_code INTEGER NOT NULL,
        mqtt_state INTEGER
    );
    CREATE INDEX line_results_row ON line_results (run_id, seq);
    CREATE INDEX line_results_outbox ON line_results (mqtt_state, inspection_id);",
    // 5: the plant outbox — every person's decision kept as its own row (the inspection row
    // holds only the latest), and how far each plant database has acknowledged each stream.
    "CREATE TABLE override_log (
        id INTEGER PRIMARY KEY,
        inspection_id INTEGER,
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        from_verdict TEXT NOT NULL,
        verdict TEXT NOT NULL,
        by_whom TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT NOT NULL,
        station TEXT NOT NULL
    );
    INSERT INTO override_log (inspection_id, run_id, seq, from_verdict, verdict, by_whom, at,
                              reason, station)
        SELECT id, run_id, seq, verdict, override_verdict, COALESCE(override_by, ''),
               COALESCE(override_at, ''), COALESCE(override_reason, ''), station
        FROM inspections WHERE override_verdict IS NOT NULL ORDER BY id;
    CREATE TABLE plant_sync (
        plant_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (plant_id, stream)
    );",
    // 6: decisions pulled back from the plant database (a lead's override in the plant
    // History) are kept in the override log like the station's own, marked so that they are
    // not sent back.
    "ALTER TABLE override_log ADD COLUMN from_plant INTEGER NOT NULL DEFAULT 0;",
    // 7: the review band — a model's verdict may be 'review' (a person decides; their decision
    // is an override to pass or fail). SQLite cannot change a CHECK in place, so the table is
    // rebuilt with the same ids (the line results and the override log refer to them), and the
    // per-hour totals count the REVIEW verdicts still waiting for a decision.
    "CREATE TABLE inspections_v7 (
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
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'review', 'fail')),
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
        roi TEXT,
        UNIQUE (run_id, seq)
    );
    INSERT INTO inspections_v7 (id, run_id, seq, ts, ts_ms, station, source, origin, model_id,
        model_hash, verdict, class, confidence, score, threshold, latency_ms, image_path,
        heatmap_path, override_verdict, override_by, override_at, override_reason, roi)
        SELECT id, run_id, seq, ts, ts_ms, station, source, origin, model_id, model_hash,
               verdict, class, confidence, score, threshold, latency_ms, image_path,
               heatmap_path, override_verdict, override_by, override_at, override_reason, roi
        FROM inspections ORDER BY id;
    DROP TABLE inspections;
    ALTER TABLE inspections_v7 RENAME TO inspections;
    CREATE INDEX inspections_ts ON inspections (ts_ms);
    CREATE INDEX inspections_verdict_ts ON inspections (verdict, ts_ms);
    CREATE INDEX inspections_class_ts ON inspections (class, ts_ms);
    ALTER TABLE hourly ADD COLUMN reviews INTEGER NOT NULL DEFAULT 0;",
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
    /// The model's verdict: "pass", "review" or "fail".
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
    /// What happened: "run_started", "paused", "resumed", "shift_started", "model_activated",
    /// "model_activation_confirmed", "model_activation_cancelled", "threshold_changed",
    /// "roi_changed", "roi_refused", "source_changed", "camera_lost", "camera_found",
    /// "source_lost", "source_found", "alarm", "alarm_acknowledged", "override",
    /// "line_io_changed", "late_verdict" (a verdict after its trigger's fail-safe). Readers
    /// must accept kinds they do not know.
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

/// "x,y,w,h" as stored → the region.
pub fn parse_roi(s: &str) -> Option<[u32; 4]> {
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

/// The line I/O's part of an inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct LineResultRow {
    /// The number the PLC (low 16 bits) and MQTT consumers see.
    pub inspection_id: u64,
    /// The inspection row's run.
    pub run_id: String,
    /// The inspection row's frame number.
    pub seq: u64,
    /// The PLC's part number.
    pub part_number: Option<u32>,
    /// 0, or the fail-safe's error code.
    pub error_code: u16,
    /// Whether it goes out over MQTT.
    pub mqtt: bool,
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

/// A connection to the history database (one per thread).
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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

    pub(super) fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Sql {
            path: self.path.display().to_string(),
            source,
        }
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
