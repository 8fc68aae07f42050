//! Reading the plant database: the same questions the History tab and `inspector history` ask
//! of a station's SQLite history ([`crate::records::history::Store`]), on the plant tables,
//! with the station and line filters and the reject rate per station. [`Records`] opens either
//! from what the user typed (a file or a `postgres://` URL).
//!
//! Blocking calls on a one-thread runtime: call them from a worker thread, never the UI's. A
//! lost connection is opened again on the next call.

use std::path::PathBuf;

use tokio_postgres::types::ToSql;

use super::{PlantError, PlantUrl, schema};
use crate::records::history::{EventRow, Filter, HourBucket, InspectionRow, Store, parse_roi};

/// A connection to the plant database for reading.
pub struct PlantStore {
    rt: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    url: PlantUrl,
}

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// A WHERE clause being built: each `?` becomes the next `$n`.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Args,
}

impl Where {
    fn arg(&mut self, clause: &str, arg: Box<dyn ToSql + Sync + Send>) {
        self.args.push(arg);
        let n = self.args.len();
        self.clauses.push(clause.replace('?', &format!("${n}")));
    }

    /// The model, station and line filters both tables have.
    fn common(&mut self, f: &Filter) {
        for (column, value) in [
            ("model_id", &f.model),
            ("station_id", &f.station),
            ("line", &f.line),
        ] {
            if let Some(v) = value {
                self.arg(&format!("{column} = ?"), Box::new(v.clone()));
            }
        }
    }

    fn done(self) -> (String, Args) {
        let w = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        (w, self.args)
    }
}

/// The WHERE clause of `f` on the plant's inspections, with its arguments ($1…).
fn where_rows(f: &Filter) -> (String, Args) {
    let mut w = Where::default();
    if let Some(s) = f.since_ms {
        w.arg("ts_ms >= ?", Box::new(s));
    }
    if let Some(u) = f.until_ms {
        w.arg("ts_ms < ?", Box::new(u));
    }
    if let Some(v) = &f.verdict {
        w.arg("final_verdict = ?", Box::new(v.clone()));
    }
    if let Some(c) = &f.class {
        w.arg("class = ?", Box::new(c.clone()));
    }
    w.common(f);
    if let Some(t) = f.text.as_ref().filter(|t| !t.is_empty()) {
        w.arg("strpos(origin, ?) > 0", Box::new(t.clone()));
    }
    match f.overridden {
        Some(true) => w.clauses.push("override_verdict IS NOT NULL".into()),
        Some(false) => w.clauses.push("override_verdict IS NULL".into()),
        None => {}
    }
    w.done()
}

/// The WHERE clause of `f` on the per-hour totals (time, model, station and line only).
fn where_hourly(f: &Filter) -> (String, Args) {
    let mut w = Where::default();
    if let Some(s) = f.since_ms {
        w.arg("hour_ms >= ?", Box::new((s / 3_600_000) * 3_600_000));
    }
    if let Some(u) = f.until_ms {
        w.arg("hour_ms < ?", Box::new(u));
    }
    w.common(f);
    w.done()
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

const ROW_COLUMNS: &str = "plant_row, run_id, seq, ts, ts_ms, station_id, source, origin, model_id,
    model_hash, verdict, class, confidence, score, threshold, latency_ms, image_path, heatmap_path,
    override_verdict, override_by, override_at, override_reason, roi";

fn row_of(r: &tokio_postgres::Row) -> InspectionRow {
    InspectionRow {
        id: r.get(0),
        run_id: r.get(1),
        seq: r.get::<_, i64>(2) as u64,
        ts: r.get(3),
        ts_ms: r.get(4),
        station: r.get(5),
        source: r.get(6),
        origin: r.get(7),
        model_id: r.get(8),
        model_hash: r.get(9),
        verdict: r.get(10),
        class: r.get(11),
        confidence: r.get(12),
        score: r.get(13),
        threshold: r.get(14),
        latency_ms: r.get(15),
        image_path: r.get(16),
        heatmap_path: r.get(17),
        override_verdict: r.get(18),
        override_by: r.get(19),
        override_at: r.get(20),
        override_reason: r.get(21),
        roi: r.get::<_, Option<String>>(22).and_then(|s| parse_roi(&s)),
    }
}

impl PlantStore {
    /// Connects (and creates or migrates the schema, like a station would).
    pub fn open(url: &PlantUrl) -> Result<Self, PlantError> {
        let rt = super::runtime()?;
        let (client, _) = rt.block_on(schema::open(url))?;
        Ok(Self {
            rt,
            client: Some(client),
            url: url.clone(),
        })
    }

    /// The database, without its password.
    pub fn url(&self) -> String {
        self.url.redacted()
    }

    fn rows(&mut self, q: &str, args: &Args) -> Result<Vec<tokio_postgres::Row>, PlantError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (c, _) = self.rt.block_on(schema::open(&self.url))?;
            self.client = Some(c);
        }
        let client = self.client.as_ref().expect("connected above");
        let out = self.rt.block_on(client.query(q, &refs(args)));
        let closed = client.is_closed();
        out.map_err(|e| {
            if closed {
                self.client = None;
            }
            self.url.db_err(e)
        })
    }

    /// Rows matching `f`, newest first (`id` is the plant's row number, `station` the station
    /// id).
    pub fn query(
        &mut self,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<InspectionRow>, PlantError> {
        let (w, mut args) = where_rows(f);
        let n = args.len();
        args.push(Box::new(limit.min(i64::MAX as u64) as i64));
        args.push(Box::new(offset.min(i64::MAX as u64) as i64));
        let q = format!(
            "SELECT {ROW_COLUMNS} FROM inspections{w} ORDER BY ts_ms DESC, plant_row DESC
             LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        Ok(self.rows(&q, &args)?.iter().map(row_of).collect())
    }

    /// A row's reject thumbnail (JPEG) and its line, by plant row number.
    pub fn thumbnail(&mut self, id: i64) -> Result<Option<Vec<u8>>, PlantError> {
        let args: Args = vec![Box::new(id)];
        let rows = self.rows(
            "SELECT thumbnail FROM inspections WHERE plant_row = $1",
            &args,
        )?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    /// Thumbnails of the given rows.
    pub fn thumbnails(&mut self, ids: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, PlantError> {
        let args: Args = vec![Box::new(ids.to_vec())];
        let rows = self.rows(
            "SELECT plant_row, thumbnail FROM inspections
             WHERE plant_row = ANY($1) AND thumbnail IS NOT NULL",
            &args,
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// How many rows match `f`.
    pub fn count(&mut self, f: &Filter) -> Result<u64, PlantError> {
        let (w, args) = where_rows(f);
        let rows = self.rows(&format!("SELECT COUNT(*) FROM inspections{w}"), &args)?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    fn summary_answers(f: &Filter) -> bool {
        f.class.is_none() && f.overridden.is_none() && f.text.as_deref().is_none_or(str::is_empty)
    }

    /// Inspected and failed per hour (final verdicts), oldest first; with `by_station`, one
    /// series per station id.
    pub fn hourly_by(
        &mut self,
        f: &Filter,
        by_station: bool,
    ) -> Result<Vec<(String, HourBucket)>, PlantError> {
        let key = if by_station { "station_id" } else { "''" };
        let (q, args) = if Self::summary_answers(f) {
            let (w, args) = where_hourly(f);
            let (total, fails, reviews) =
                crate::records::history::summary_columns(f.verdict.as_deref());
            (
                format!(
                    "SELECT {key}::text, hour_ms, {total}::bigint, {fails}::bigint,
                     {reviews}::bigint FROM hourly{w}
                     GROUP BY 1, 2 HAVING {total} > 0 ORDER BY 1, 2"
                ),
                args,
            )
        } else {
            let (w, args) = where_rows(f);
            (
                format!(
                    "SELECT {key}::text, (ts_ms / 3600000) * 3600000 AS h, COUNT(*),
                     COUNT(*) FILTER (WHERE final_verdict = 'fail'),
                     COUNT(*) FILTER (WHERE final_verdict = 'review')
                     FROM inspections{w} GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                args,
            )
        };
        Ok(self
            .rows(&q, &args)?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    HourBucket {
                        hour_ms: r.get(1),
                        total: r.get::<_, i64>(2) as u64,
                        fails: r.get::<_, i64>(3) as u64,
                        reviews: r.get::<_, i64>(4) as u64,
                    },
                )
            })
            .collect())
    }

    /// Inspected and failed per hour over all stations matching `f`.
    pub fn hourly(&mut self, f: &Filter) -> Result<Vec<HourBucket>, PlantError> {
        Ok(self
            .hourly_by(f, false)?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// Failed inspections per class, most first.
    pub fn pareto(&mut self, f: &Filter) -> Result<Vec<(String, u64)>, PlantError> {
        if f.verdict.as_deref() == Some("pass") {
            return Ok(Vec::new());
        }
        let review = f.verdict.as_deref() == Some("review");
        let (q, args) = if Self::summary_answers(f) {
            let (w, args) = where_hourly(f);
            let col = if review { "reviews" } else { "fails" };
            (
                format!(
                    "SELECT class, SUM({col})::bigint AS n FROM hourly{w} GROUP BY class
                     HAVING SUM({col}) > 0 ORDER BY n DESC, class"
                ),
                args,
            )
        } else {
            let mut f = f.clone();
            f.verdict = Some(if review { "review" } else { "fail" }.into());
            let (w, args) = where_rows(&f);
            (
                format!(
                    "SELECT class, COUNT(*) AS n FROM inspections{w} GROUP BY class
                     ORDER BY n DESC, class"
                ),
                args,
            )
        };
        Ok(self
            .rows(&q, &args)?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Distinct values of `column` ("class", "model_id", "station_id", "line") for the filter
    /// menus, read from the per-hour totals.
    pub fn distinct(&mut self, column: &str) -> Result<Vec<String>, PlantError> {
        let column = match column {
            "class" => "class",
            "model_id" => "model_id",
            "station_id" | "station" => "station_id",
            "line" => "line",
            _ => return Ok(Vec::new()),
        };
        let q = format!("SELECT DISTINCT {column} FROM hourly ORDER BY 1 LIMIT 200");
        Ok(self
            .rows(&q, &Vec::new())?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// The newest events of every station.
    pub fn events(&mut self, limit: u64) -> Result<Vec<EventRow>, PlantError> {
        let args: Args = vec![Box::new(limit.min(i64::MAX as u64) as i64)];
        let rows = self.rows(
            "SELECT ts, ts_ms, station_id, kind, detail, run_id, seq FROM events
             ORDER BY ts_ms DESC LIMIT $1",
            &args,
        )?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                ts: r.get(0),
                ts_ms: r.get(1),
                station: r.get(2),
                kind: r.get(3),
                detail: r.get(4),
                run_id: r.get(5),
                seq: r.get::<_, Option<i64>>(6).map(|s| s as u64),
            })
            .collect())
    }

    /// For `inspector bench-history --plant-db`: adds generated rows (20 stations on 4 lines,
    /// 30 days, 5 % rejects over five classes) until the plant holds `rows`, written by the
    /// server itself with the per-hour totals. Returns how many were added.
    pub fn fill_for_bench(&mut self, rows: u64) -> Result<u64, PlantError> {
        let have = self.count(&Filter::default())?;
        let add = rows.saturating_sub(have) as i64;
        if add == 0 {
            return Ok(0);
        }
        let start = chrono::Utc::now().timestamp_millis() - 30 * 86_400_000;
        let step = (30 * 86_400_000 / add).max(1);
        let sql = format!(
            "SET synchronous_commit = off;
            INSERT INTO inspections (station_id, local_id, line, run_id, seq, ts, ts_ms, station,
                source, origin, model_id, model_hash, verdict, class, confidence, score, threshold,
                latency_ms, final_verdict)
            SELECT 'st-' || (i % 20), {have} + i, 'L' || (i % 20 / 5), 'bench', {have} + i,
                to_char(to_timestamp(({start} + i * {step}) / 1000.0) AT TIME ZONE 'UTC',
                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                {start} + i * {step}, 'st-' || (i % 20), 'camera:0', 'frame ' || i,
                'm@' || (i % 3), 'bench', v, c, 0.9, 0.5, 0.5, 10.0, v
            FROM (SELECT i, CASE WHEN abs(hashint8(i)) % 100 < 5 THEN 'fail' ELSE 'pass' END AS v,
                         CASE WHEN abs(hashint8(i)) % 100 < 5
                              THEN (ARRAY['Blowhole','Break','Crack','Fray','Uneven'])[1 + abs(hashint8(i + 7)) % 5]
                              ELSE 'Free' END AS c
                  FROM generate_series(1::bigint, {add}::bigint) AS i) AS g;
            INSERT INTO hourly (hour_ms, station_id, line, model_id, class, total, fails)
                SELECT (ts_ms / 3600000) * 3600000, station_id, MIN(line), model_id, class,
                       COUNT(*), COUNT(*) FILTER (WHERE final_verdict = 'fail')
                FROM inspections WHERE run_id = 'bench' AND local_id > {have} GROUP BY 1, 2, 4, 5
            ON CONFLICT (hour_ms, station_id, model_id, class) DO UPDATE
                SET total = hourly.total + excluded.total, fails = hourly.fails + excluded.fails;
            ANALYZE inspections;
            ANALYZE hourly;"
        );
        let client = self.client.as_ref().expect("opened with a client");
        self.rt
            .block_on(client.batch_execute(&sql))
            .map_err(|e| self.url.db_err(e))?;
        Ok(add as u64)
    }

    /// A line lead's decision on a row in the plant database (kept in the audit trail; it
    /// stands when it is the latest by time).
    pub fn override_row(
        &mut self,
        row: &InspectionRow,
        verdict: &str,
        by: &str,
        reason: &str,
    ) -> Result<bool, PlantError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (c, _) = self.rt.block_on(schema::open(&self.url))?;
            self.client = Some(c);
        }
        let url = self.url.clone();
        let client = self.client.as_mut().expect("connected above");
        let at = crate::records::history::rfc3339(chrono::Utc::now());
        let key = format!("plant:{}:{}:{}", row.station, row.id, at);
        self.rt.block_on(async {
            let e = |x: tokio_postgres::Error| url.db_err(x);
            let tx = client.transaction().await.map_err(e)?;
            tx.execute(
                "INSERT INTO overrides (override_key, station_id, run_id, seq, from_verdict,
                 verdict, by_whom, at, reason, made_at, applied)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'plant', false)",
                &[
                    &key,
                    &row.station,
                    &row.run_id,
                    &(row.seq as i64),
                    &row.final_verdict(),
                    &verdict,
                    &by,
                    &at,
                    &reason,
                ],
            )
            .await
            .map_err(e)?;
            let applied = super::forward::apply_override(
                &tx,
                &key,
                &row.station,
                &row.run_id,
                row.seq as i64,
                verdict,
                by,
                &at,
                reason,
            )
            .await
            .map_err(e)?;
            tx.commit().await.map_err(e)?;
            Ok(applied)
        })
    }
}

/// Either history: a station's SQLite file or the plant database.
pub enum Records {
    /// A station's history file.
    Local(Store),
    /// The plant database.
    Plant(Box<PlantStore>),
}

/// What the user typed: a file or a `postgres://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordsLocation {
    /// A history file.
    File(PathBuf),
    /// A plant database.
    Plant(PlantUrl),
}

impl RecordsLocation {
    /// A `postgres://` URL (password from `DI_PLANT_PASSWORD` when the URL has none) or a path.
    pub fn parse(s: &str) -> Result<Self, PlantError> {
        if super::is_plant_url(s) {
            let pw = std::env::var("DI_PLANT_PASSWORD").ok();
            Ok(Self::Plant(PlantUrl::parse(s, pw.as_deref())?))
        } else {
            Ok(Self::File(PathBuf::from(s)))
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Plant(u) => u.redacted(),
        }
    }
}

impl Records {
    /// Opens `at`.
    pub fn open(at: &RecordsLocation) -> Result<Self, PlantError> {
        Ok(match at {
            RecordsLocation::File(p) => Self::Local(Store::open(p)?),
            RecordsLocation::Plant(u) => Self::Plant(Box::new(PlantStore::open(u)?)),
        })
    }

    /// Whether this is the plant database.
    pub fn is_plant(&self) -> bool {
        matches!(self, Self::Plant(_))
    }

    /// Rows matching `f`, newest first.
    pub fn query(
        &mut self,
        f: &Filter,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<InspectionRow>, PlantError> {
        match self {
            Self::Local(s) => Ok(s.query(f, limit, offset)?),
            Self::Plant(p) => p.query(f, limit, offset),
        }
    }

    /// How many rows match `f`.
    pub fn count(&mut self, f: &Filter) -> Result<u64, PlantError> {
        match self {
            Self::Local(s) => Ok(s.count(f)?),
            Self::Plant(p) => p.count(f),
        }
    }

    /// Per hour, oldest first.
    pub fn hourly(&mut self, f: &Filter) -> Result<Vec<HourBucket>, PlantError> {
        match self {
            Self::Local(s) => Ok(s.hourly(f)?),
            Self::Plant(p) => p.hourly(f),
        }
    }

    /// Per hour and station (one series for a station's own history).
    pub fn hourly_by_station(
        &mut self,
        f: &Filter,
    ) -> Result<Vec<(String, HourBucket)>, PlantError> {
        match self {
            Self::Local(s) => Ok(s
                .hourly(f)?
                .into_iter()
                .map(|b| (String::new(), b))
                .collect()),
            Self::Plant(p) => p.hourly_by(f, true),
        }
    }

    /// Fails per class.
    pub fn pareto(&mut self, f: &Filter) -> Result<Vec<(String, u64)>, PlantError> {
        match self {
            Self::Local(s) => Ok(s.pareto(f)?),
            Self::Plant(p) => p.pareto(f),
        }
    }

    /// Distinct values for a filter menu.
    pub fn distinct(&mut self, column: &str) -> Result<Vec<String>, PlantError> {
        match self {
            Self::Local(s) => Ok(s.distinct(column)?),
            Self::Plant(p) => p.distinct(column),
        }
    }

    /// The newest events.
    pub fn events(&mut self, limit: u64) -> Result<Vec<EventRow>, PlantError> {
        match self {
            Self::Local(s) => Ok(s.events(limit)?),
            Self::Plant(p) => p.events(limit),
        }
    }
}
