//! Store and forward: one batch ([`send_batch`]), `inspector forward` ([`forward_all`]) and the
//! station's [`Forwarder`] thread.
//!
//! A batch reads what lies beyond the local watermarks (inspections, then events, then the
//! overrides whose inspection is in the batch or before it), writes it to the plant database
//! in one transaction with idempotent inserts, commits, and only then moves the local
//! watermarks. A crash between the plant's commit and the local update sends the batch again,
//! and the plant writes nothing twice: exactly once in the plant database.
//!
//! The other way ([`pull_overrides`]): decisions a lead made in the plant History on this
//! station's verdicts are read back (from a plant-side sequence, a mark kept locally) into the
//! station's override log, where the latest decision by time stands, as it does in the plant.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Transaction};

use super::{PlantError, PlantUrl, schema};
use crate::records::history::{
    InspectionRow, Override, OverrideLogRow, PlantBacklog, Store, Watermarks, archive_dir_for,
};

/// Who forwards: the key of every row in the plant database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderOptions {
    /// The station's id in the plant (unique per station).
    pub station_id: String,
    /// The line it stands on.
    pub line: String,
    /// Rows per stream per batch.
    pub batch: usize,
    /// Raise the backlog alarm beyond this many records waiting.
    pub backlog_alarm: u64,
}

impl ForwarderOptions {
    /// Station `station_id` on `line`, batches of 500, alarm beyond 10,000 waiting.
    pub fn new(station_id: &str, line: &str) -> Self {
        Self {
            station_id: station_id.to_string(),
            line: if line.trim().is_empty() {
                "default".into()
            } else {
                line.trim().to_string()
            },
            batch: 500,
            backlog_alarm: 10_000,
        }
    }
}

/// What one batch (or a whole `forward`) sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardReport {
    /// Inspections acknowledged.
    pub inspections: u64,
    /// Events acknowledged.
    pub events: u64,
    /// Overrides acknowledged.
    pub overrides: u64,
}

impl ForwardReport {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.inspections + self.events + self.overrides
    }

    fn add(&mut self, o: &ForwardReport) {
        self.inspections += o.inspections;
        self.events += o.events;
        self.overrides += o.overrides;
    }
}

/// The forwarder's state, for the Inspect status line.
#[derive(Clone, Debug, Default)]
pub struct ForwarderStatus {
    /// The plant database, without its password.
    pub url: String,
    /// Connected now.
    pub connected: bool,
    /// Why not (the last error), in words.
    pub error: Option<String>,
    /// Records acknowledged since start.
    pub forwarded: ForwardReport,
    /// Capture time of the newest inspection the plant has.
    pub forwarded_upto: Option<String>,
    /// Records waiting for the plant.
    pub backlog: PlantBacklog,
    /// More than [`ForwarderOptions::backlog_alarm`] waiting.
    pub backlog_alarm: bool,
    /// The last acknowledgement.
    pub last_ack: Option<Instant>,
    /// Decisions made in the plant database taken into this station's history since start.
    pub pulled: u64,
}

/// How often the station asks the plant for decisions leads made there.
const PULL_EVERY: Duration = Duration::from_secs(2);

/// A small JPEG of an archived frame for the plant (longest side 192 px, at most 20 KB), so a
/// lead sees the part; the full-size frame stays on the station.
pub fn thumbnail(archive: &Path, image_path: &str) -> Option<Vec<u8>> {
    let img = image::open(archive.join(image_path)).ok()?;
    let small = img.thumbnail(192, 192);
    let small = if small.color().has_color() {
        image::DynamicImage::ImageRgb8(small.to_rgb8())
    } else {
        image::DynamicImage::ImageLuma8(small.to_luma8())
    };
    for quality in [80u8, 60, 40, 25] {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        if small.write_with_encoder(enc).is_ok() && out.len() <= 20 * 1024 {
            return Some(out);
        }
    }
    None
}

/// One batch. Returns what was acknowledged (all zeros: nothing waited).
pub async fn send_batch(
    store: &mut Store,
    client: &mut Client,
    url: &PlantUrl,
    plant_id: &str,
    o: &ForwarderOptions,
) -> Result<ForwardReport, PlantError> {
    let w = store.plant_watermarks(plant_id)?;
    let rows = store.inspections_after(w.inspections, o.batch)?;
    let events = store.events_after(w.events, o.batch)?;
    let upto = rows.last().map(|r| r.id).unwrap_or(w.inspections);
    let overrides = store.overrides_after(w.overrides, upto, o.batch)?;
    if rows.is_empty() && events.is_empty() && overrides.is_empty() {
        return Ok(ForwardReport::default());
    }
    let archive = archive_dir_for(store.path());
    let e = |x: tokio_postgres::Error| url.db_err(x);
    let tx = client.transaction().await.map_err(e)?;
    insert_inspections(&tx, &rows, &archive, o)
        .await
        .map_err(e)?;
    insert_events(&tx, &events, o).await.map_err(e)?;
    for ov in &overrides {
        insert_override(&tx, ov, o).await.map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    let next = Watermarks {
        inspections: upto,
        events: events.last().map(|(id, _)| *id).unwrap_or(w.events),
        overrides: overrides.last().map(|v| v.id).unwrap_or(w.overrides),
    };
    store.set_plant_watermarks(plant_id, &next)?;
    Ok(ForwardReport {
        inspections: rows.len() as u64,
        events: events.len() as u64,
        overrides: overrides.len() as u64,
    })
}

/// Pulls the decisions leads made in the plant History on this station's verdicts, newer than
/// the last pull, into the local history (kept in its override log; the latest by time
/// stands). Returns how many were taken in.
pub async fn pull_overrides(
    store: &mut Store,
    client: &mut Client,
    url: &PlantUrl,
    plant_id: &str,
    o: &ForwarderOptions,
) -> Result<u64, PlantError> {
    let mark = store.plant_pull_mark(plant_id)?;
    let rows = client
        .query(
            "SELECT plant_seq, run_id, seq, from_verdict, verdict, by_whom, at, reason
             FROM overrides WHERE station_id = $1 AND made_at = 'plant' AND plant_seq > $2
             ORDER BY plant_seq LIMIT $3",
            &[&o.station_id, &mark, &(o.batch as i64)],
        )
        .await
        .map_err(|x| url.db_err(x))?;
    let Some(upto) = rows.last().map(|r| r.get::<_, i64>(0)) else {
        return Ok(0);
    };
    let decisions: Vec<Override> = rows
        .iter()
        .map(|r| Override {
            run_id: r.get(1),
            seq: r.get::<_, i64>(2) as u64,
            from: r.get(3),
            verdict: r.get(4),
            by: r.get(5),
            at: r.get(6),
            reason: r.get(7),
            // Who decided: a lead in the plant History (the log's "station" column).
            station: "plant".into(),
        })
        .collect();
    store.apply_plant_overrides(plant_id, &decisions, upto)?;
    Ok(decisions.len() as u64)
}

async fn insert_inspections(
    tx: &Transaction<'_>,
    rows: &[InspectionRow],
    archive: &Path,
    o: &ForwarderOptions,
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: &dyn Fn(&InspectionRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let opt = |f: &dyn Fn(&InspectionRow) -> Option<String>| {
        rows.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let num = |f: &dyn Fn(&InspectionRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq as i64).collect();
    let ts_ms: Vec<i64> = rows.iter().map(|r| r.ts_ms).collect();
    let thumbs: Vec<Option<Vec<u8>>> = rows
        .iter()
        .map(|r| {
            (r.final_verdict() != "pass")
                .then(|| r.image_path.as_deref().and_then(|p| thumbnail(archive, p)))
                .flatten()
        })
        .collect();
    let (run_id, ts, station, source, origin) = (
        col(&|r| r.run_id.clone()),
        col(&|r| r.ts.clone()),
        col(&|r| r.station.clone()),
        col(&|r| r.source.clone()),
        col(&|r| r.origin.clone()),
    );
    let (model_id, model_hash, verdict, class, final_verdict) = (
        col(&|r| r.model_id.clone()),
        col(&|r| r.model_hash.clone()),
        col(&|r| r.verdict.clone()),
        col(&|r| r.class.clone()),
        col(&|r| r.final_verdict().to_string()),
    );
    let (confidence, score, threshold, latency) = (
        num(&|r| r.confidence),
        num(&|r| r.score),
        num(&|r| r.threshold),
        num(&|r| r.latency_ms),
    );
    let (image_path, heatmap_path, roi) = (
        opt(&|r| r.image_path.clone()),
        opt(&|r| r.heatmap_path.clone()),
        opt(&|r| r.roi.map(|[x, y, w, h]| format!("{x},{y},{w},{h}"))),
    );
    let (ov, ov_by, ov_at, ov_reason) = (
        opt(&|r| r.override_verdict.clone()),
        opt(&|r| r.override_by.clone()),
        opt(&|r| r.override_at.clone()),
        opt(&|r| r.override_reason.clone()),
    );
    tx.execute(
        "WITH ins AS (
            INSERT INTO inspections (station_id, line, local_id, run_id, seq, ts, ts_ms, station,
                source, origin, model_id, model_hash, verdict, class, confidence, score, threshold,
                latency_ms, image_path, heatmap_path, roi, override_verdict, override_by,
                override_at, override_reason, final_verdict, thumbnail)
            SELECT $26::text, $27::text, u.* FROM UNNEST($1::bigint[], $2::text[], $3::bigint[],
                $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
                $10::text[], $11::text[], $12::text[], $13::float8[], $14::float8[],
                $15::float8[], $16::float8[], $17::text[], $18::text[], $19::text[], $20::text[],
                $21::text[], $22::text[], $23::text[], $24::text[], $25::bytea[]) AS u
            ON CONFLICT DO NOTHING
            RETURNING ts_ms, model_id, class, final_verdict)
         INSERT INTO hourly (hour_ms, station_id, line, model_id, class, total, fails, reviews)
            SELECT (ts_ms / 3600000) * 3600000, $26::text, $27::text, model_id, class, COUNT(*),
                   COUNT(*) FILTER (WHERE final_verdict = 'fail'),
                   COUNT(*) FILTER (WHERE final_verdict = 'review')
            FROM ins GROUP BY 1, 4, 5
         ON CONFLICT (hour_ms, station_id, model_id, class) DO UPDATE
            SET total = hourly.total + excluded.total, fails = hourly.fails + excluded.fails,
                reviews = hourly.reviews + excluded.reviews",
        &[
            &ids,
            &run_id,
            &seqs,
            &ts,
            &ts_ms,
            &station,
            &source,
            &origin,
            &model_id,
            &model_hash,
            &verdict,
            &class,
            &confidence,
            &score,
            &threshold,
            &latency,
            &image_path,
            &heatmap_path,
            &roi,
            &ov,
            &ov_by,
            &ov_at,
            &ov_reason,
            &final_verdict,
            &thumbs,
            &o.station_id,
            &o.line,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_events(
    tx: &Transaction<'_>,
    events: &[(i64, crate::records::history::EventRow)],
    o: &ForwarderOptions,
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    let ts: Vec<&str> = events.iter().map(|(_, e)| e.ts.as_str()).collect();
    let ts_ms: Vec<i64> = events.iter().map(|(_, e)| e.ts_ms).collect();
    let station: Vec<&str> = events.iter().map(|(_, e)| e.station.as_str()).collect();
    let kind: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
    let detail: Vec<&str> = events.iter().map(|(_, e)| e.detail.as_str()).collect();
    let run_id: Vec<Option<&str>> = events.iter().map(|(_, e)| e.run_id.as_deref()).collect();
    let seq: Vec<Option<i64>> = events
        .iter()
        .map(|(_, e)| e.seq.map(|s| s as i64))
        .collect();
    tx.execute(
        "INSERT INTO events (station_id, line, local_id, ts, ts_ms, station, kind, detail, run_id, seq)
         SELECT $9::text, $10::text, u.* FROM UNNEST($1::bigint[], $2::text[], $3::bigint[],
             $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) AS u
         ON CONFLICT DO NOTHING",
        &[
            &ids,
            &ts,
            &ts_ms,
            &station,
            &kind,
            &detail,
            &run_id,
            &seq,
            &o.station_id,
            &o.line,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_override(
    tx: &Transaction<'_>,
    ov: &OverrideLogRow,
    o: &ForwarderOptions,
) -> Result<(), tokio_postgres::Error> {
    let key = format!("{}:{}", o.station_id, ov.id);
    let new = tx
        .execute(
            "INSERT INTO overrides (override_key, station_id, run_id, seq, from_verdict, verdict,
             by_whom, at, reason, made_at, applied)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'station', false)
             ON CONFLICT DO NOTHING",
            &[
                &key,
                &o.station_id,
                &ov.run_id,
                &(ov.seq as i64),
                &ov.from,
                &ov.verdict,
                &ov.by,
                &ov.at,
                &ov.reason,
            ],
        )
        .await?;
    if new == 1 {
        apply_override(
            tx,
            &key,
            &o.station_id,
            &ov.run_id,
            ov.seq as i64,
            &ov.verdict,
            &ov.by,
            &ov.at,
            &ov.reason,
        )
        .await?;
    }
    Ok(())
}

/// Applies a recorded decision to its inspection when it is the latest by time (an older one
/// stays in `overrides` only), keeping the per-hour totals right. Returns whether it applied.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_override(
    tx: &Transaction<'_>,
    key: &str,
    station_id: &str,
    run_id: &str,
    seq: i64,
    verdict: &str,
    by: &str,
    at: &str,
    reason: &str,
) -> Result<bool, tokio_postgres::Error> {
    let Some(row) = tx
        .query_opt(
            "SELECT final_verdict, (ts_ms / 3600000) * 3600000, model_id, class, override_at
             FROM inspections WHERE station_id = $1 AND run_id = $2 AND seq = $3 FOR UPDATE",
            &[&station_id, &run_id, &seq],
        )
        .await?
    else {
        return Ok(false);
    };
    let was: String = row.get(0);
    let newer = row
        .get::<_, Option<String>>(4)
        .is_none_or(|prev| prev.as_str() <= at);
    if !newer {
        return Ok(false);
    }
    tx.execute(
        "UPDATE inspections SET override_verdict = $4, override_by = $5, override_at = $6,
         override_reason = $7, final_verdict = $4
         WHERE station_id = $1 AND run_id = $2 AND seq = $3",
        &[&station_id, &run_id, &seq, &verdict, &by, &at, &reason],
    )
    .await?;
    let fails = (verdict == "fail") as i64 - (was == "fail") as i64;
    let reviews = (verdict == "review") as i64 - (was == "review") as i64;
    if fails != 0 || reviews != 0 {
        let (hour, model, class): (i64, String, String) = (row.get(1), row.get(2), row.get(3));
        tx.execute(
            "UPDATE hourly SET fails = fails + $5, reviews = reviews + $6
             WHERE hour_ms = $1 AND station_id = $2 AND model_id = $3 AND class = $4",
            &[&hour, &station_id, &model, &class, &fails, &reviews],
        )
        .await?;
    }
    tx.execute(
        "UPDATE overrides SET applied = true WHERE override_key = $1",
        &[&key],
    )
    .await?;
    Ok(true)
}

/// `inspector forward`: sends everything the plant database has not acknowledged from the
/// history at `db`, retrying a lost connection until `patience` has passed without progress.
/// Ok once the plant holds all of it (what was sent now, and what was already there).
pub fn forward_all(
    db: &Path,
    url: &PlantUrl,
    o: &ForwarderOptions,
    patience: Duration,
    mut progress: impl FnMut(&ForwardReport, &PlantBacklog),
) -> Result<ForwardReport, PlantError> {
    let mut store = Store::open(db)?;
    let rt = super::runtime()?;
    let mut total = ForwardReport::default();
    let mut last_progress = Instant::now();
    let mut backoff = Duration::from_millis(200);
    rt.block_on(async {
        loop {
            let attempt: Result<bool, PlantError> = async {
                let (mut client, plant_id) = schema::open(url).await?;
                loop {
                    let sent = send_batch(&mut store, &mut client, url, &plant_id, o).await?;
                    total.add(&sent);
                    let w = store.plant_watermarks(&plant_id)?;
                    let left = store.plant_backlog(&w)?;
                    progress(&total, &left);
                    if sent.total() == 0 && left.total() == 0 {
                        // What leads decided in the plant meanwhile comes back too.
                        while pull_overrides(&mut store, &mut client, url, &plant_id, o).await? > 0
                        {
                        }
                        return Ok(true);
                    }
                    last_progress = Instant::now();
                }
            }
            .await;
            match attempt {
                Ok(_) => return Ok(total),
                Err(e @ (PlantError::TooNew { .. } | PlantError::Url { .. })) => return Err(e),
                Err(PlantError::Local(e)) => return Err(PlantError::Local(e)),
                Err(e) => {
                    if last_progress.elapsed() >= patience {
                        return Err(e);
                    }
                    tracing::warn!("{e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// The station's forwarder thread: forwards while the station runs, reconnects with a backoff
/// when the plant database goes away, and keeps what waits in the history meanwhile.
pub struct Forwarder {
    stop: Arc<Mutex<Option<Instant>>>,
    status: Arc<Mutex<ForwarderStatus>>,
    thread: Option<JoinHandle<()>>,
    db: PathBuf,
    stopped: Arc<AtomicBool>,
}

impl Forwarder {
    /// Starts forwarding the history at `db`. Fails only when the history cannot be opened;
    /// the plant database is retried for ever (its state is in [`Self::status`]).
    pub fn start(db: &Path, url: PlantUrl, o: ForwarderOptions) -> Result<Self, PlantError> {
        let store = Store::open(db)?;
        let status = Arc::new(Mutex::new(ForwarderStatus {
            url: url.redacted(),
            ..Default::default()
        }));
        let stop = Arc::new(Mutex::new(None));
        let stopped = Arc::new(AtomicBool::new(false));
        let (st, sp, done) = (status.clone(), stop.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name("plant-forwarder".into())
            .spawn(move || {
                match super::runtime() {
                    Ok(rt) => rt.block_on(run(store, url, o, st, sp)),
                    Err(e) => tracing::error!("{e}"),
                }
                done.store(true, Ordering::Release);
            })
            .map_err(|e| PlantError::Db {
                url: String::new(),
                why: format!("cannot start the forwarder: {e}"),
            })?;
        Ok(Self {
            stop,
            status,
            thread: Some(thread),
            db: db.to_path_buf(),
            stopped,
        })
    }

    /// A snapshot of its state.
    pub fn status(&self) -> ForwarderStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Forwards what waits for up to `wait`, then stops; returns what is left for the next
    /// start (it stays in the history).
    pub fn finish(mut self, wait: Duration) -> u64 {
        self.stop_after(wait);
        self.status().backlog.total()
    }

    fn stop_after(&mut self, wait: Duration) {
        if let Ok(mut s) = self.stop.lock() {
            s.get_or_insert(Instant::now() + wait);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = &self.db;
        debug_assert!(self.stopped.load(Ordering::Acquire));
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop_after(Duration::ZERO);
    }
}

async fn run(
    mut store: Store,
    url: PlantUrl,
    o: ForwarderOptions,
    status: Arc<Mutex<ForwarderStatus>>,
    stop: Arc<Mutex<Option<Instant>>>,
) {
    let set = |f: &dyn Fn(&mut ForwarderStatus)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    let deadline = || stop.lock().ok().and_then(|s| *s);
    let mut backoff = Duration::from_millis(200);
    // Before the first connection, what waits is measured against the last plant we knew.
    let mut plant_id = store.last_plant_id().ok().flatten();
    let refresh = |store: &Store, plant_id: &Option<String>| -> Option<PlantBacklog> {
        let w = match plant_id {
            Some(p) => store.plant_watermarks(p).ok()?,
            None => Watermarks::default(),
        };
        store.plant_backlog(&w).ok()
    };
    if let Some(b) = refresh(&store, &plant_id) {
        set(&|s| {
            s.backlog = b;
            s.backlog_alarm = b.total() > o.backlog_alarm;
        });
    }
    loop {
        let session: Result<(), PlantError> = async {
            let (mut client, id) = schema::open(&url).await?;
            plant_id = Some(id.clone());
            backoff = Duration::from_millis(200);
            set(&|s| {
                s.connected = true;
                s.error = None;
            });
            tracing::info!(
                "plant database {url}: connected, forwarding as {}",
                o.station_id
            );
            let mut last_pull: Option<Instant> = None;
            loop {
                let sent = send_batch(&mut store, &mut client, &url, &id, &o).await?;
                if last_pull.is_none_or(|t| t.elapsed() >= PULL_EVERY) {
                    last_pull = Some(Instant::now());
                    let pulled = pull_overrides(&mut store, &mut client, &url, &id, &o).await?;
                    if pulled > 0 {
                        tracing::info!("{pulled} decisions made in the plant database taken in");
                        set(&|s| s.pulled += pulled);
                    }
                }
                let left = refresh(&store, &plant_id).unwrap_or_default();
                let upto = store
                    .plant_watermarks(&id)
                    .ok()
                    .and_then(|w| store.inspection_ts(w.inspections).ok().flatten());
                set(&|s| {
                    s.forwarded.add(&sent);
                    if sent.total() > 0 {
                        s.last_ack = Some(Instant::now());
                    }
                    if upto.is_some() {
                        s.forwarded_upto = upto.clone();
                    }
                    s.backlog = left;
                    s.backlog_alarm = left.total() > o.backlog_alarm;
                });
                let stopping = deadline();
                if stopping.is_some_and(|d| Instant::now() >= d || left.total() == 0) {
                    return Ok(());
                }
                if sent.total() == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        .await;
        match session {
            Ok(()) => return,
            Err(e) => {
                let words = e.to_string();
                let left = refresh(&store, &plant_id);
                set(&|s| {
                    if s.connected {
                        tracing::warn!("{words}; records wait in the history");
                    }
                    s.connected = false;
                    s.error = Some(words.clone());
                    if let Some(b) = left {
                        s.backlog = b;
                        s.backlog_alarm = b.total() > o.backlog_alarm;
                    }
                });
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if deadline().is_some_and(|d| Instant::now() >= d) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
