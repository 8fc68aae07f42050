//! The plant outbox: what the plant database has not yet acknowledged, read back from the
//! history. Inspections and events are append-only (their row ids only grow, and one writer
//! thread assigns them in commit order), so a watermark per stream says what was sent; the
//! override log gets one too. Watermarks are keyed by the plant database's identity, so a new
//! plant database receives everything again, and they move only after the plant committed.

use rusqlite::params;

use super::schema::{EventRow, HistoryError, InspectionRow, Override, Store};

/// How far the plant database has acknowledged each stream (local row ids).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// Inspections up to this id.
    pub inspections: i64,
    /// Events up to this id.
    pub events: i64,
    /// Override log entries up to this id.
    pub overrides: i64,
}

/// One entry of the override log (a person's decision on a stored verdict).
#[derive(Clone, Debug, PartialEq)]
pub struct OverrideLogRow {
    /// Local id.
    pub id: i64,
    /// The inspection's run.
    pub run_id: String,
    /// Its frame number.
    pub seq: u64,
    /// The verdict it had.
    pub from: String,
    /// The decision.
    pub verdict: String,
    /// Who.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub reason: String,
}

/// What waits for the plant database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantBacklog {
    /// Inspections not yet acknowledged.
    pub inspections: u64,
    /// Events not yet acknowledged.
    pub events: u64,
    /// Overrides not yet acknowledged.
    pub overrides: u64,
}

impl PlantBacklog {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.inspections + self.events + self.overrides
    }
}

impl Store {
    /// The watermarks for the plant database `plant_id` (zeros the first time).
    pub fn plant_watermarks(&self, plant_id: &str) -> Result<Watermarks, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT stream, last_id FROM plant_sync WHERE plant_id = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([plant_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut w = Watermarks::default();
        for row in rows {
            let (stream, id) = row.map_err(|e| self.err(e))?;
            match stream.as_str() {
                "inspections" => w.inspections = id,
                "events" => w.events = id,
                "overrides" => w.overrides = id,
                _ => {}
            }
        }
        Ok(w)
    }

    /// Moves the watermarks (after the plant database committed what they cover).
    pub fn set_plant_watermarks(
        &mut self,
        plant_id: &str,
        w: &Watermarks,
    ) -> Result<(), HistoryError> {
        let path = self.path.display().to_string();
        let sql = |source| HistoryError::Sql {
            path: path.clone(),
            source,
        };
        let now = chrono::Utc::now().timestamp_millis();
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO plant_sync (plant_id, stream, last_id, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (plant_id, stream) DO UPDATE
                     SET last_id = MAX(last_id, excluded.last_id), updated_ms = excluded.updated_ms",
                )
                .map_err(sql)?;
            for (stream, id) in [
                ("inspections", w.inspections),
                ("events", w.events),
                ("overrides", w.overrides),
            ] {
                st.execute(params![plant_id, stream, id, now])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Inspections after `after`, oldest first.
    pub fn inspections_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InspectionRow>, HistoryError> {
        self.select(
            " WHERE id > ? ORDER BY id LIMIT ?",
            vec![
                rusqlite::types::Value::Integer(after),
                rusqlite::types::Value::Integer(limit as i64),
            ],
        )
    }

    /// Events after `after` with their ids, oldest first.
    pub fn events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, EventRow)>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, ts, ts_ms, station, kind, detail, run_id, seq FROM events
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, super::queries::event_from(r, 1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Override log entries after `after` whose inspection is at or below `inspections_upto`
    /// (so a decision never reaches the plant before its inspection), oldest first.
    pub fn overrides_after(
        &self,
        after: i64,
        inspections_upto: i64,
        limit: usize,
    ) -> Result<Vec<OverrideLogRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, run_id, seq, from_verdict, verdict, by_whom, at, reason FROM override_log
                 WHERE id > ?1 AND COALESCE(inspection_id, 0) <= ?2 AND from_plant = 0
                 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after, inspections_upto, limit as i64], |r| {
                Ok(OverrideLogRow {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    from: r.get(3)?,
                    verdict: r.get(4)?,
                    by: r.get(5)?,
                    at: r.get(6)?,
                    reason: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// How much waits beyond `w`.
    pub fn plant_backlog(&self, w: &Watermarks) -> Result<PlantBacklog, HistoryError> {
        let count = |q: &str, after: i64| -> Result<u64, HistoryError> {
            self.conn
                .query_row(q, [after], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| self.err(e))
        };
        Ok(PlantBacklog {
            inspections: count(
                "SELECT COUNT(*) FROM inspections WHERE id > ?1",
                w.inspections,
            )?,
            events: count("SELECT COUNT(*) FROM events WHERE id > ?1", w.events)?,
            overrides: count(
                "SELECT COUNT(*) FROM override_log WHERE id > ?1 AND from_plant = 0",
                w.overrides,
            )?,
        })
    }

    /// How far the decisions made in plant database `plant_id` have been pulled back (the
    /// plant's own override order; 0 the first time).
    pub fn plant_pull_mark(&self, plant_id: &str) -> Result<i64, HistoryError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row(
                "SELECT last_id FROM plant_sync WHERE plant_id = ?1 AND stream = 'plant_overrides'",
                [plant_id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// Takes in decisions made in the plant database on this station's verdicts, in one
    /// transaction: each is kept in the override log (marked as from the plant, never sent
    /// back), the latest decision by time stands on the inspection (and its hour's count
    /// follows), and the pull mark moves to `upto`. Returns how many stand.
    pub fn apply_plant_overrides(
        &mut self,
        plant_id: &str,
        decisions: &[Override],
        upto: i64,
    ) -> Result<usize, HistoryError> {
        let path = self.path.display().to_string();
        let sql = |source| HistoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut applied = 0;
        for d in decisions {
            applied += super::writer::apply_override(&tx, d, true).map_err(sql)? as usize;
        }
        tx.execute(
            "INSERT INTO plant_sync (plant_id, stream, last_id, updated_ms)
             VALUES (?1, 'plant_overrides', ?2, ?3)
             ON CONFLICT (plant_id, stream) DO UPDATE
             SET last_id = MAX(last_id, excluded.last_id), updated_ms = excluded.updated_ms",
            params![plant_id, upto, chrono::Utc::now().timestamp_millis()],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(applied)
    }

    /// The plant database this history last forwarded to (for the backlog before connecting).
    pub fn last_plant_id(&self) -> Result<Option<String>, HistoryError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row(
                "SELECT plant_id FROM plant_sync ORDER BY updated_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The capture time of inspection `id` (for "forwarded up to …").
    pub fn inspection_ts(&self, id: i64) -> Result<Option<String>, HistoryError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row("SELECT ts FROM inspections WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }
}
