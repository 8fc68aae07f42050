//! The plant tables and their versioned migrations (like the station's SQLite schema):
//! `plant_meta` holds the schema version and the plant database's identity, which the
//! station's watermarks are keyed by (a new plant database gets everything again).
//!
//! Every row is keyed by (station id, the station's own row id), so a batch sent twice is
//! written once. `final_verdict` (the override when there is one) is a column of its own so
//! the History filters have an index; `hourly` keeps per-hour totals in the same transactions
//! (the reject-rate chart and the Pareto never scan millions of rows).

use tokio_postgres::Client;

use super::{PlantError, PlantUrl};

/// Schema migrations; `plant_meta.schema_version` is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: the records.
    "CREATE TABLE inspections (
        station_id TEXT NOT NULL,
        local_id BIGINT NOT NULL,
        line TEXT NOT NULL,
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        ts TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        station TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_hash TEXT NOT NULL,
        verdict TEXT NOT NULL,
        class TEXT NOT NULL,
        confidence DOUBLE PRECISION NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        image_path TEXT,
        heatmap_path TEXT,
        roi TEXT,
        override_verdict TEXT,
        override_by TEXT,
        override_at TEXT,
        override_reason TEXT,
        final_verdict TEXT NOT NULL,
        thumbnail BYTEA,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        plant_row BIGSERIAL NOT NULL UNIQUE,
        PRIMARY KEY (station_id, local_id)
    );
    CREATE UNIQUE INDEX inspections_run ON inspections (station_id, run_id, seq);
    CREATE TABLE events (
        station_id TEXT NOT NULL,
        local_id BIGINT NOT NULL,
        line TEXT NOT NULL,
        ts TEXT NOT NULL,
        ts_ms BIGINT NOT NULL,
        station TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        run_id TEXT,
        seq BIGINT,
        PRIMARY KEY (station_id, local_id)
    );
    CREATE INDEX events_ts ON events (ts_ms);
    CREATE TABLE overrides (
        override_key TEXT PRIMARY KEY,
        station_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        from_verdict TEXT NOT NULL,
        verdict TEXT NOT NULL,
        by_whom TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT NOT NULL,
        made_at TEXT NOT NULL,
        applied BOOLEAN NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX overrides_row ON overrides (station_id, run_id, seq);",
    // 2: the History filters' indexes and the per-hour totals.
    "CREATE INDEX inspections_ts ON inspections (ts_ms);
    CREATE INDEX inspections_station_ts ON inspections (station_id, ts_ms);
    CREATE INDEX inspections_line_ts ON inspections (line, ts_ms);
    CREATE INDEX inspections_final_ts ON inspections (final_verdict, ts_ms);
    CREATE INDEX inspections_class_ts ON inspections (class, ts_ms);
    CREATE INDEX inspections_model_ts ON inspections (model_id, ts_ms);
    CREATE TABLE hourly (
        hour_ms BIGINT NOT NULL,
        station_id TEXT NOT NULL,
        line TEXT NOT NULL,
        model_id TEXT NOT NULL,
        class TEXT NOT NULL,
        total BIGINT NOT NULL,
        fails BIGINT NOT NULL,
        PRIMARY KEY (hour_ms, station_id, model_id, class)
    );
    INSERT INTO hourly (hour_ms, station_id, line, model_id, class, total, fails)
        SELECT (ts_ms / 3600000) * 3600000, station_id, MIN(line), model_id, class, COUNT(*),
               COUNT(*) FILTER (WHERE final_verdict = 'fail')
        FROM inspections GROUP BY 1, 2, 4, 5;",
    // 3: a plant-wide order of the overrides, so a station pulls the decisions leads made in
    // the plant History back into its own history (from where it last read).
    "ALTER TABLE overrides ADD COLUMN plant_seq BIGSERIAL;
    CREATE INDEX overrides_pull ON overrides (station_id, plant_seq) WHERE made_at = 'plant';",
    // 4: the review band — REVIEW verdicts waiting for a person's decision, per hour.
    "ALTER TABLE hourly ADD COLUMN reviews BIGINT NOT NULL DEFAULT 0;
    UPDATE hourly h SET reviews = r.n FROM (
        SELECT (ts_ms / 3600000) * 3600000 AS hour_ms, station_id, model_id, class, COUNT(*) AS n
        FROM inspections WHERE final_verdict = 'review' GROUP BY 1, 2, 3, 4) r
    WHERE h.hour_ms = r.hour_ms AND h.station_id = r.station_id AND h.model_id = r.model_id
      AND h.class = r.class;",
];

/// The oldest PostgreSQL server accepted (12; older releases are out of support).
pub const MIN_SERVER_VERSION: i32 = 120000;

/// Creates or migrates the plant schema up to `target` (normally all of [`MIGRATIONS`]) under
/// an advisory lock, so stations starting together migrate once. Returns the plant's identity.
pub async fn migrate(
    client: &mut Client,
    url: &PlantUrl,
    target: usize,
) -> Result<String, PlantError> {
    let e = |x: tokio_postgres::Error| url.db_err(x);
    let v: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(e)?
        .get(0);
    let v: i32 = v.parse().unwrap_or(0);
    if v < MIN_SERVER_VERSION {
        return Err(PlantError::Db {
            url: url.redacted(),
            why: format!(
                "the server is PostgreSQL {}.{}; the plant database needs 12 or newer",
                v / 10000,
                v % 10000 / 100
            ),
        });
    }
    let tx = client.transaction().await.map_err(e)?;
    tx.execute("SELECT pg_advisory_xact_lock(7243001)", &[])
        .await
        .map_err(e)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS plant_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO plant_meta (key, value)
             VALUES ('plant_id', md5(random()::text || clock_timestamp()::text)),
                    ('schema_version', '0')
             ON CONFLICT (key) DO NOTHING;",
    )
    .await
    .map_err(e)?;
    let found: i64 = tx
        .query_one(
            "SELECT value FROM plant_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(e)?
        .get::<_, String>(0)
        .parse()
        .unwrap_or(0);
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(PlantError::TooNew {
            url: url.redacted(),
            found,
            supported,
        });
    }
    for (i, m) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(found as usize)
    {
        tx.batch_execute(m).await.map_err(e)?;
        tx.execute(
            "UPDATE plant_meta SET value = $1 WHERE key = 'schema_version'",
            &[&(i + 1).to_string()],
        )
        .await
        .map_err(e)?;
        tracing::info!("plant database {url}: schema migrated to version {}", i + 1);
    }
    let id: String = tx
        .query_one("SELECT value FROM plant_meta WHERE key = 'plant_id'", &[])
        .await
        .map_err(e)?
        .get(0);
    tx.commit().await.map_err(e)?;
    Ok(id)
}

/// Connects and migrates to the current schema: the client and the plant's identity.
pub async fn open(url: &PlantUrl) -> Result<(Client, String), PlantError> {
    let mut client = super::connect(url).await?;
    let id = migrate(&mut client, url, MIGRATIONS.len()).await?;
    Ok((client, id))
}
