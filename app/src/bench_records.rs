//! `inspector bench-history` and `inspector bench-forward`: the records' measured limits. The
//! history writer's throughput and the History tab's queries on a large station history or
//! plant database (filled by the server itself), and the plant forwarder's lag and throughput
//! while a station records at a given rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::records::history::{self, Filter, Recorder, RecorderOptions, Store};
use crate::records::plant::read::Records;
use crate::records::plant::{Forwarder, ForwarderOptions, PlantUrl};
use crate::station::pipeline;

/// Options of `inspector bench-history`.
#[derive(Debug, clap::Args)]
pub struct BenchHistoryArgs {
    /// Rows to generate (spread over 30 days, 5 % rejects).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Database to fill (default: a temporary file, deleted afterwards).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Repetitions per query (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Time the plant database instead (postgres://…): it is filled up to --rows generated
    /// rows of 20 stations on 4 lines by the server itself, then queried.
    #[arg(long, value_name = "postgres://USER@HOST:PORT/DATABASE")]
    pub plant_db: Option<String>,
}

/// Runs `inspector bench-history`: writer throughput, then the History tab's queries (a
/// filtered page, the count, the hourly p-chart data and the Pareto) on a large database.
pub fn bench_history(args: BenchHistoryArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.plant_db {
        let url = PlantUrl::parse(url, std::env::var("DI_PLANT_PASSWORD").ok().as_deref())?;
        let mut plant = crate::records::plant::PlantStore::open(&url)?;
        let t = Instant::now();
        let added = plant.fill_for_bench(args.rows)?;
        if added > 0 {
            println!(
                "generated {added} rows in {:.1} s (by the server; indexes and per-hour totals \
                 included)",
                t.elapsed().as_secs_f64()
            );
        }
        return bench_queries(Records::Plant(Box::new(plant)), args.iters);
    }
    let tmp = tempfile::tempdir()?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| tmp.path().join("bench.sqlite"));
    let now = chrono::Utc::now().timestamp_millis();
    let span = 30 * 86_400_000i64;
    let row = |i: u64| {
        let ts_ms = now - span + (i as i64 * span / args.rows.max(1) as i64);
        bench_row(i, ts_ms, 0)
    };
    // Writer throughput through the real writer thread (batched transactions).
    let recorder = Recorder::start(&db, RecorderOptions::default())?;
    let t = Instant::now();
    let mut last = 0;
    for i in 1..=args.rows {
        last = recorder
            .submit(history::Op::Inspection(Box::new(row(i)), None))
            .map_err(anyhow::Error::msg)?;
    }
    recorder.wait_committed(last, Duration::from_secs(3600));
    let write_s = t.elapsed().as_secs_f64();
    recorder.finish();
    println!(
        "writer: {} rows in {write_s:.1} s = {:.0} rows/s (one thread, batched transactions, WAL)",
        args.rows,
        args.rows as f64 / write_s
    );
    bench_queries(Records::Local(Store::open(&db)?), args.iters)
}

/// The History tab's queries, timed (median of `iters`), over the last 30 days of `store`.
fn bench_queries(mut store: Records, iters: usize) -> anyhow::Result<()> {
    let now = store
        .query(&Filter::default(), 1, 0)?
        .first()
        .map(|r| r.ts_ms + 1)
        .unwrap_or_default();
    let day = 86_400_000;
    let mut filters = vec![
        (
            "24 h, all verdicts",
            Filter {
                since_ms: Some(now - day),
                ..Filter::default()
            },
        ),
        (
            "7 days, fail",
            Filter {
                since_ms: Some(now - 7 * day),
                verdict: Some("fail".into()),
                ..Filter::default()
            },
        ),
        (
            "7 days, class Crack",
            Filter {
                since_ms: Some(now - 7 * day),
                class: Some("Crack".into()),
                ..Filter::default()
            },
        ),
        ("all 30 days", Filter::default()),
    ];
    if store.is_plant() {
        filters.push((
            "7 days, one station",
            Filter {
                since_ms: Some(now - 7 * day),
                station: Some("st-3".into()),
                ..Filter::default()
            },
        ));
        filters.push((
            "24 h, line L1, fail",
            Filter {
                since_ms: Some(now - day),
                line: Some("L1".into()),
                verdict: Some("fail".into()),
                ..Filter::default()
            },
        ));
    }
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "filter", "page ms", "count ms", "hourly ms", "pareto ms", "total ms"
    );
    for (name, f) in filters {
        let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            store.query(&f, 50, 0)?;
            times[0].push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.count(&f)?;
            times[1].push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.hourly(&f)?;
            times[2].push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.pareto(&f)?;
            times[3].push(t.elapsed().as_secs_f64() * 1e3);
        }
        let med: Vec<f64> = times
            .into_iter()
            .map(|v| pipeline::percentile(v, 0.5).unwrap_or(f64::NAN))
            .collect();
        println!(
            "{name:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            med[0],
            med[1],
            med[2],
            med[3],
            med.iter().sum::<f64>()
        );
    }
    Ok(())
}

/// Generated verdict `i` at `ts_ms` (5 % rejects over five classes, drawn from `seed`).
fn bench_row(i: u64, ts_ms: i64, seed: u64) -> history::InspectionRow {
    const CLASSES: [&str; 5] = ["Blowhole", "Break", "Crack", "Fray", "Uneven"];
    let mut rng = kernels::rng::SplitMix64::new(seed.wrapping_add(i));
    let fail = rng.next_u64() % 100 < 5;
    let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    history::InspectionRow {
        id: 0,
        run_id: "bench".into(),
        seq: i,
        ts: history::rfc3339(t),
        ts_ms,
        station: "station-1".into(),
        source: "synthetic".into(),
        origin: format!("frame {i}"),
        model_id: "ref-cnn@bench".into(),
        model_hash: "0".into(),
        verdict: if fail { "fail" } else { "pass" }.into(),
        class: if fail {
            CLASSES[(rng.next_u64() % 5) as usize].into()
        } else {
            "Free".into()
        },
        confidence: 0.9,
        score: if fail { 0.8 } else { 0.1 },
        threshold: 0.5,
        latency_ms: 12.0,
        image_path: None,
        heatmap_path: None,
        roi: None,
        override_verdict: None,
        override_by: None,
        override_at: None,
        override_reason: None,
    }
}

/// Options of `inspector bench-forward`.
#[derive(Debug, clap::Args)]
pub struct BenchForwardArgs {
    /// The plant database (a password not in the URL comes from DI_PLANT_PASSWORD).
    #[arg(long, value_name = "postgres://USER@HOST:PORT/DATABASE")]
    pub plant_db: String,
    /// Verdicts recorded per second (the station's frame rate), one or more: `--rate 20,200,2000`.
    #[arg(long, value_delimiter = ',', default_values_t = [20.0, 200.0, 2000.0])]
    pub rate: Vec<f64>,
    /// Seconds of recording per rate.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
}

/// Runs `inspector bench-forward`: for each rate, a station's writer records verdicts at that
/// rate into a fresh history while the forwarder sends them to the plant; the lag (how old the
/// newest acknowledged verdict is, sampled every 50 ms) and the rate the plant acknowledged.
pub fn bench_forward(args: BenchForwardArgs) -> anyhow::Result<()> {
    let url = PlantUrl::parse(
        &args.plant_db,
        std::env::var("DI_PLANT_PASSWORD").ok().as_deref(),
    )?;
    println!(
        "{:>9} {:>9} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "rate/s", "rows", "lag p50 ms", "lag p99 ms", "lag max ms", "drain ms", "acked/s"
    );
    for &rate in &args.rate {
        let tmp = tempfile::tempdir()?;
        let db = tmp.path().join("station.sqlite");
        let recorder = Recorder::start(&db, RecorderOptions::default())?;
        // A fresh station id each run: the plant keys rows by (station, local row id).
        let station = format!("bench-{}", chrono::Utc::now().timestamp_millis());
        let forwarder =
            Forwarder::start(&db, url.clone(), ForwarderOptions::new(&station, "bench"))?;
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(args.seconds.max(0.1));
        let mut lags = Vec::new();
        let mut written = 0u64;
        let mut last = 0;
        let mut next_sample = started;
        while Instant::now() < end {
            // Paced: as many rows as the rate asks for by now.
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while written < due {
                written += 1;
                let mut row = bench_row(written, chrono::Utc::now().timestamp_millis(), 0);
                row.station = station.clone();
                row.run_id = station.clone();
                last = recorder
                    .submit(history::Op::Inspection(Box::new(row), None))
                    .map_err(anyhow::Error::msg)?;
            }
            if Instant::now() >= next_sample {
                next_sample += Duration::from_millis(50);
                if let Some(upto) = forwarder.status().forwarded_upto
                    && let Ok(t) = chrono::DateTime::parse_from_rfc3339(&upto)
                {
                    let lag = chrono::Utc::now().timestamp_millis() - t.timestamp_millis();
                    lags.push(lag.max(0) as f64);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let stop_writing = Instant::now();
        recorder.wait_committed(last, Duration::from_secs(600));
        recorder.finish();
        // Drained: the plant acknowledged every row.
        let drain_end = Instant::now() + Duration::from_secs(600);
        while forwarder.status().forwarded.inspections < written && Instant::now() < drain_end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let drain_ms = stop_writing.elapsed().as_secs_f64() * 1e3;
        let s = forwarder.status();
        let total_s = started.elapsed().as_secs_f64();
        drop(forwarder);
        let pct = |q| pipeline::percentile(lags.clone(), q).unwrap_or(f64::NAN);
        println!(
            "{rate:>9.0} {written:>9} {:>10.0} {:>10.0} {:>10.0} {drain_ms:>12.0} {:>10.0}",
            pct(0.5),
            pct(0.99),
            lags.iter().copied().fold(f64::NAN, f64::max),
            s.forwarded.inspections as f64 / total_s
        );
        if s.forwarded.inspections < written {
            anyhow::bail!(
                "the plant acknowledged {} of {written} rows ({})",
                s.forwarded.inspections,
                s.error.unwrap_or_default()
            );
        }
    }
    Ok(())
}
