//! Writing the history: the [`Recorder`] and its one writer thread (bounded queue, batched
//! transactions retried until they succeed), the [`RecorderSink`] the pipeline feeds, and the
//! batch write itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rusqlite::{OptionalExtension as _, params};

use crate::station::pipeline::{Verdict, VerdictSink};

use super::archive::*;
use super::schema::*;

/// One thing for the writer to store.
#[derive(Clone, Debug)]
pub enum Op {
    /// An inspected frame, with pixels to archive when it is a reject or a sampled pass.
    Inspection(Box<InspectionRow>, Option<Archive>),
    /// An event.
    Event(EventRow),
    /// A correction of a stored verdict (also stored as an event).
    Override(Override),
    /// The line I/O's number for an inspection (after the inspection's own op).
    LineResult(super::schema::LineResultRow),
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
    pub(super) tx: Sender<Op>,
    pub(super) state: Arc<(Mutex<WriterStatus>, Condvar)>,
    pub(super) thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    pub(super) db: PathBuf,
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

pub(super) fn writer_loop(
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
        // Rejects and REVIEW parts are always archived: a person decides from the picture.
        let archive = (v.flagged() || sampled(v.seq, self.pass_sample)).then(|| Archive {
            image: v.image.clone(),
            heatmap_rgba: crate::station::display::heatmap_rgba(&v.heatmap, v.flagged()),
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

/// A person's decision on a stored verdict, inside `tx`: kept in the override log
/// (`from_plant`: taken in from the plant database, so never sent back there), and standing on
/// the inspection unless a later decision already does (latest by time, as in the plant); the
/// hour's FAIL count follows the final verdict. Returns whether it stands.
pub(super) fn apply_override(
    tx: &rusqlite::Transaction<'_>,
    o: &Override,
    from_plant: bool,
) -> rusqlite::Result<bool> {
    let found: Option<(i64, i64, String, String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT id, (ts_ms / 3600000) * 3600000, model_id, class,
             COALESCE(override_verdict, verdict), override_at
             FROM inspections WHERE run_id = ?1 AND seq = ?2",
        )?
        .query_row(params![o.run_id, o.seq as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    tx.prepare_cached(
        "INSERT INTO override_log (inspection_id, run_id, seq, from_verdict, verdict, by_whom, at,
         reason, station, from_plant) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        found.as_ref().map(|f| f.0),
        o.run_id,
        o.seq as i64,
        o.from,
        o.verdict,
        o.by,
        o.at,
        o.reason,
        o.station,
        from_plant
    ])?;
    let Some((id, hour, model, class, was, prev_at)) = found else {
        return Ok(false);
    };
    if prev_at.is_some_and(|p| p.as_str() > o.at.as_str()) {
        return Ok(false);
    }
    tx.prepare_cached(
        "UPDATE inspections SET override_verdict = ?2, override_by = ?3, override_at = ?4,
         override_reason = ?5 WHERE id = ?1",
    )?
    .execute(params![id, o.verdict, o.by, o.at, o.reason])?;
    let fails = (o.verdict == "fail") as i64 - (was == "fail") as i64;
    let reviews = (o.verdict == "review") as i64 - (was == "review") as i64;
    if fails != 0 || reviews != 0 {
        tx.prepare_cached(
            "INSERT INTO hourly (hour_ms, model_id, class, total, fails, reviews)
             VALUES (?1, ?2, ?3, 0, ?4, ?5)
             ON CONFLICT (hour_ms, model_id, class)
             DO UPDATE SET fails = fails + excluded.fails, reviews = reviews + excluded.reviews",
        )?
        .execute(params![hour, model, class, fails, reviews])?;
    }
    Ok(true)
}

impl Store {
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
            let mut hour = tx
                .prepare_cached(
                    "INSERT INTO hourly (hour_ms, model_id, class, total, fails, reviews)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (hour_ms, model_id, class)
                     DO UPDATE SET total = total + excluded.total, fails = fails + excluded.fails,
                     reviews = reviews + excluded.reviews",
                )
                .map_err(sql)?;
            let mut line = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO line_results (inspection_id, run_id, seq, part_number,
                     error_code, mqtt_state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for op in ops {
                match op {
                    Op::LineResult(l) => {
                        line.execute(params![
                            l.inspection_id as i64,
                            l.run_id,
                            l.seq as i64,
                            l.part_number.map(i64::from),
                            l.error_code as i64,
                            l.mqtt.then_some(0i64)
                        ])
                        .map_err(sql)?;
                    }
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
                                (r.verdict == "fail") as i64,
                                (r.verdict == "review") as i64
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
                        apply_override(&tx, o, false).map_err(sql)?;
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
}
