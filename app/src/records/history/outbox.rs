//! The line I/O's results in the history: each result's inspection number, the PLC's part
//! number and error code beside its inspection row ([`HistoryResults`], the line I/O's
//! [`ResultStore`]), and the MQTT outbox read back from them — the database is the outbox, so a
//! broker outage delays messages and never loses them, and memory does not grow with it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rusqlite::params;
use serde::Serialize;

use super::schema::{
    EventRow, HistoryError, InspectionRow, LineResultRow, Store, archive_dir_for, rfc3339,
};
use super::writer::{Op, RecorderSink};
use crate::station::line_io::{Failure, PlcResult, ResultStore};
use crate::station::pipeline::{ModelInfo, Verdict, VerdictSink};

/// One result message, exactly as sent (and re-sent) on `<prefix>/<station>/result`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultMessage {
    /// Station-wide inspection number (a consumer drops duplicates by it).
    pub inspection_id: i64,
    /// Station.
    pub station: String,
    /// Capture time, RFC 3339 UTC.
    pub time: String,
    /// "pass" or "fail" (the model's; a fail-safe result is "fail").
    pub verdict: String,
    /// The class reported (the error for a fail-safe result).
    pub class: String,
    /// Fail score.
    pub score: f64,
    /// Threshold used.
    pub threshold: f64,
    /// Model name@hash.
    pub model: String,
    /// The PLC's part number.
    pub part_number: Option<i64>,
    /// 0, or the error code (1 no verdict in time, 2 source lost, 3 model error, 4 unreadable).
    pub error_code: i64,
    /// The archived frame, when archived.
    pub archive: Option<String>,
}

impl Store {
    /// The inspection number after the last one recorded (numbers continue across restarts,
    /// so a consumer's duplicate filter never drops a new result).
    pub fn next_inspection_id(&self) -> Result<u64, HistoryError> {
        let max: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(inspection_id), 0) FROM line_results",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(max as u64 + 1)
    }

    /// Up to `limit` results not yet acknowledged by the broker, after `after`, oldest first.
    pub fn outbox_pending(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ResultMessage>, HistoryError> {
        let archive = archive_dir_for(&self.path);
        let mut q = self
            .conn
            .prepare_cached(
                "SELECT l.inspection_id, i.station, i.ts, i.verdict, i.class, i.score, i.threshold,
                 i.model_id, l.part_number, l.error_code, i.image_path
                 FROM line_results l JOIN inspections i ON i.run_id = l.run_id AND i.seq = l.seq
                 WHERE l.mqtt_state = 0 AND l.inspection_id > ?1
                 ORDER BY l.inspection_id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![after, limit as i64], |r| {
                let image: Option<String> = r.get(10)?;
                Ok(ResultMessage {
                    inspection_id: r.get(0)?,
                    station: r.get(1)?,
                    time: r.get(2)?,
                    verdict: r.get(3)?,
                    class: r.get(4)?,
                    score: r.get(5)?,
                    threshold: r.get(6)?,
                    model: r.get(7)?,
                    part_number: r.get(8)?,
                    error_code: r.get(9)?,
                    archive: image.map(|p| archive.join(p).display().to_string()),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Marks results as acknowledged by the broker.
    pub fn outbox_acknowledged(&mut self, ids: &[i64]) -> Result<(), HistoryError> {
        let path = self.path.display().to_string();
        let sql = |source| HistoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut u = tx
                .prepare_cached("UPDATE line_results SET mqtt_state = 1 WHERE inspection_id = ?1")
                .map_err(sql)?;
            for id in ids {
                u.execute([id]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Results still waiting for the broker.
    pub fn outbox_left(&self) -> Result<u64, HistoryError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM line_results WHERE mqtt_state = 0",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    /// The line I/O rows in number order (tests, `inspector history`).
    pub fn line_results(&self) -> Result<Vec<LineResultRow>, HistoryError> {
        let mut q = self
            .conn
            .prepare(
                "SELECT inspection_id, run_id, seq, part_number, error_code, mqtt_state
                 FROM line_results ORDER BY inspection_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map([], |r| {
                Ok(LineResultRow {
                    inspection_id: r.get::<_, i64>(0)? as u64,
                    run_id: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    part_number: r.get::<_, Option<i64>>(3)?.map(|p| p as u32),
                    error_code: r.get::<_, i64>(4)? as u16,
                    mqtt: r.get::<_, Option<i64>>(5)?.is_some(),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// The next inspection number of the database at `db` (a missing database starts at 1).
pub fn next_inspection_id(db: &Path) -> Result<u64, HistoryError> {
    Store::open(db)?.next_inspection_id()
}

/// The line I/O's [`ResultStore`]: verdicts through the usual [`RecorderSink`] (rows, archive),
/// fail-safe results as rows of their own (run `<run>/line`, frame number = inspection number),
/// each followed by its [`LineResultRow`].
pub struct HistoryResults {
    sink: RecorderSink,
    mqtt: bool,
    model: Arc<Mutex<(String, String, f32)>>,
    source: String,
}

impl HistoryResults {
    /// Records through `sink`; `mqtt`: results go to the MQTT outbox; `model`: the model in use
    /// (named on fail-safe rows until the first verdict names its own); `source`: its URI.
    pub fn new(sink: RecorderSink, mqtt: bool, model: &ModelInfo, source: &str) -> Self {
        Self {
            sink,
            mqtt,
            model: Arc::new(Mutex::new((
                model.id.clone(),
                model.hash.clone(),
                model.threshold,
            ))),
            source: source.into(),
        }
    }

    fn line(&mut self, run_id: String, seq: u64, r: &PlcResult) -> Result<(), String> {
        let t = self.sink.recorder.submit(Op::LineResult(LineResultRow {
            inspection_id: r.id,
            run_id,
            seq,
            part_number: r.part,
            error_code: r.error as u16,
            mqtt: self.mqtt,
        }))?;
        self.sink.last_ticket.store(t, Ordering::SeqCst);
        Ok(())
    }
}

impl ResultStore for HistoryResults {
    fn verdict(&mut self, v: &Verdict, r: &PlcResult) -> Result<(), String> {
        if let Ok(mut m) = self.model.lock() {
            *m = (v.model_id.clone(), v.model_hash.clone(), v.threshold);
        }
        self.sink.record(v)?;
        self.line(self.sink.run_id.clone(), v.seq, r)
    }

    fn failure(&mut self, f: &Failure, r: &PlcResult) -> Result<(), String> {
        let (model_id, model_hash, threshold) =
            self.model.lock().map(|m| m.clone()).unwrap_or_default();
        let run_id = format!("{}/line", self.sink.run_id);
        let row = InspectionRow {
            id: 0,
            run_id: run_id.clone(),
            seq: r.id,
            ts: rfc3339(f.timestamp),
            ts_ms: f.timestamp.timestamp_millis(),
            station: self.sink.station.clone(),
            source: self.source.clone(),
            origin: format!("trigger for inspection {}: {}", r.id, f.detail),
            model_id,
            model_hash,
            verdict: "fail".into(),
            class: f.code.text().into(),
            confidence: 1.0,
            score: 1.0,
            threshold: threshold as f64,
            latency_ms: 0.0,
            image_path: None,
            heatmap_path: None,
            roi: None,
            override_verdict: None,
            override_by: None,
            override_at: None,
            override_reason: None,
        };
        self.sink
            .recorder
            .submit(Op::Inspection(Box::new(row), None))?;
        self.line(run_id, r.id, r)
    }

    fn late(&mut self, v: &Verdict) -> Result<(), String> {
        let mut e = EventRow::now(
            &self.sink.station,
            "late_verdict",
            format!(
                "{} {} came after its trigger's fail-safe FAIL: not counted again",
                v.word().to_uppercase(),
                v.origin
            ),
        );
        e.run_id = Some(self.sink.run_id.clone());
        e.seq = Some(v.seq);
        self.sink.recorder.submit(Op::Event(e)).map(|_| ())
    }
}
