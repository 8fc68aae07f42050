//! `inspector inspect`, `inspector cameras` and `inspector history`: the station without a window.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kernels::Decision;
use serde_json::json;

use crate::data::assets::{DEFAULT_MODEL, bundled};
use crate::records::history::{self, Filter, Recorder, RecorderOptions, RecorderSink};
use crate::records::plant::read::{Records, RecordsLocation};
use crate::records::plant::{Forwarder, ForwarderOptions, PlantUrl};
use crate::station::pipeline::{self, Event, Pipeline, PipelineOptions, SourceStatus};
use crate::station::source::SourceSpec;

/// Options of `inspector inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// folder:<DIR>, camera:<N> or synthetic.
    #[arg(long)]
    pub source: String,
    /// Frames per second for folder and synthetic sources (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub fps: f64,
    /// Stop after this many frames.
    #[arg(long)]
    pub limit: Option<u64>,
    /// One JSON line per frame and a final summary line.
    #[arg(long)]
    pub json: bool,
    /// Record every verdict into this history database.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Station name stored with each verdict.
    #[arg(long, default_value = "station-1")]
    pub station: String,
    /// Region of interest in frame pixels: x,y,width,height.
    #[arg(long)]
    pub roi: Option<String>,
    /// Threshold instead of the model's (FAIL at or above).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Decide two-way (PASS / FAIL at the threshold) even when the model has a review band.
    #[arg(long)]
    pub no_review: bool,
    /// Share of PASS frames archived as images (rejects always are).
    #[arg(long, default_value_t = 0.01)]
    pub pass_sample: f64,
    /// Take triggers from a PLC: modbus:ADDRESS:PORT serves the README's register map over
    /// Modbus TCP and judges one frame per trigger (a folder: the next image; after the last
    /// one the registers are served until the station is stopped).
    #[arg(long, value_name = "modbus:ADDRESS:PORT")]
    pub trigger: Option<String>,
    /// Serve the register map over Modbus TCP at ADDRESS:PORT without taking triggers: every
    /// frame is judged (free-run) and the registers show each result for the PLC to read.
    #[arg(long, value_name = "ADDRESS:PORT", conflicts_with = "trigger")]
    pub modbus: Option<String>,
    /// Modbus unit id the PLC addresses.
    #[arg(long, default_value_t = 1)]
    pub unit_id: u8,
    /// A trigger with no verdict within this many ms gets a fail-safe FAIL.
    #[arg(long, default_value_t = 200)]
    pub response_window_ms: u64,
    /// Publish every result to mqtt://HOST:PORT/PREFIX (mqtts:// for TLS) on
    /// PREFIX/STATION/result; needs --db (the history is the outbox). Credentials from
    /// DI_MQTT_USER and DI_MQTT_PASSWORD.
    #[arg(long, value_name = "mqtt://HOST:PORT/PREFIX")]
    pub mqtt: Option<String>,
    /// Forward the history to the plant's PostgreSQL database while inspecting (needs --db;
    /// a password not in the URL comes from DI_PLANT_PASSWORD).
    #[arg(
        long,
        value_name = "postgres://USER@HOST:PORT/DATABASE",
        requires = "db"
    )]
    pub plant_db: Option<String>,
    /// The line this station stands on (kept with its records in the plant database).
    #[arg(long, default_value = "default")]
    pub line: String,
}

impl InspectArgs {
    /// The line I/O these options ask for (None: none).
    pub fn line_options(&self) -> anyhow::Result<Option<crate::line_station::LineOptions>> {
        // The flags in the form Settings › Line I/O has; one conversion serves both.
        let listen = match (&self.trigger, &self.modbus) {
            (Some(t), _) => Some(
                crate::station::line_io::parse_trigger(t)
                    .map_err(anyhow::Error::msg)?
                    .to_string(),
            ),
            (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        };
        let line = crate::records::settings::LineSettings {
            modbus: listen.is_some(),
            triggered: self.trigger.is_some(),
            listen: listen.unwrap_or_default(),
            unit_id: self.unit_id,
            window_ms: self.response_window_ms,
            mqtt_url: self.mqtt.clone().unwrap_or_default(),
            ..Default::default()
        };
        crate::line_station::LineOptions::from_settings(&line, &self.station)
            .map_err(anyhow::Error::msg)
    }
}

/// Parses `x,y,w,h`.
pub fn parse_roi(s: &str) -> anyhow::Result<kernels::Roi> {
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--roi {s:?}: expected x,y,width,height in pixels"))?;
    anyhow::ensure!(
        v.len() == 4 && v[2] > 0 && v[3] > 0,
        "--roi {s:?}: expected x,y,width,height with width and height > 0"
    );
    Ok(kernels::Roi {
        x: v[0],
        y: v[1],
        width: v[2],
        height: v[3],
    })
}

/// Runs `inspector inspect`. Exit code 0 unless the model or the source cannot be opened.
pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let model_path = args.model.clone().unwrap_or_else(|| bundled(DEFAULT_MODEL));
    let model = pipeline::load_model(&model_path).map_err(anyhow::Error::msg)?;
    let source = SourceSpec::parse(&args.source).map_err(anyhow::Error::msg)?;
    let roi = args.roi.as_deref().map(parse_roi).transpose()?;
    if let Some(t) = args.threshold {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--threshold {t}: must be between 0 and 1"
        );
    }
    let line_options = args.line_options()?;
    let plant_url = args
        .plant_db
        .as_deref()
        .map(|u| PlantUrl::parse(u, std::env::var("DI_PLANT_PASSWORD").ok().as_deref()))
        .transpose()?;
    let gpu = kernels::GpuContext::headless()?;
    let recorder = match &args.db {
        Some(db) => Some(Recorder::start(db, RecorderOptions::default())?),
        None => None,
    };
    // The forwarder reads what the writer committed; the plant being down never stops the
    // station (its state is logged, the records wait in the history).
    let forwarder = match (&plant_url, &args.db) {
        (Some(url), Some(db)) => {
            eprintln!("forwarding to the plant database {url} as {}", args.station);
            Some(Forwarder::start(
                db,
                url.clone(),
                ForwarderOptions::new(&args.station, &args.line),
            )?)
        }
        _ => None,
    };
    let sink = recorder
        .as_ref()
        .map(|r| RecorderSink::new(r.clone(), &args.station, args.pass_sample));
    let ticket = sink.as_ref().map(|s| s.last_ticket.clone());
    if let (Some(r), Some(s)) = (&recorder, &sink) {
        r.submit(history::Op::Event(history::EventRow::now(
            &args.station,
            "run_started",
            format!("{} with {} (run {})", source.uri(), model.1.id, s.run_id),
        )))
        .map_err(anyhow::Error::msg)?;
    }
    let label = gpu.describe();
    let (line, sink) = match &line_options {
        Some(o) => {
            let (l, s) = crate::line_station::LineStation::start(o, sink, &model.1, &source.uri())
                .map_err(anyhow::Error::msg)?;
            if let Some(s) = &l.server {
                eprintln!(
                    "Modbus server on {} (unit {}), {} mode",
                    s.local_addr(),
                    args.unit_id,
                    if l.triggered { "triggered" } else { "free-run" }
                );
            }
            (Some(l), Some(s))
        }
        None => (
            None,
            sink.map(|s| Box::new(s) as Box<dyn pipeline::VerdictSink>),
        ),
    };
    let stop = crate::line_station::stop_requested();
    let pipe = Pipeline::start_triggered(
        gpu.device.clone(),
        gpu.queue.clone(),
        label.clone(),
        model,
        source.clone(),
        PipelineOptions {
            fps: args.fps,
            limit: args.limit,
            lossless_events: true,
            roi,
            threshold: args.threshold,
            review_band: !args.no_review,
            display: false,
            stop_on_roi_refused: true,
        },
        sink,
        Arc::new(|| {}),
        line.as_ref().and_then(|l| l.trigger()),
    )
    .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let (mut pass, mut review, mut fail, mut unreadable) = (0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    let stdout = std::io::stdout();
    let source_name = source.uri();
    let serving = line.as_ref().is_some_and(|l| l.triggered);
    let mut ended = false;
    let mut last_event = Instant::now();
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("stopping");
            break;
        }
        let asked = Instant::now();
        let Some(ev) = pipe.next_event(Duration::from_millis(200)) else {
            // Nothing within the poll (or the pipeline is gone: then at once).
            if asked.elapsed() < Duration::from_millis(150) || (ended && !serving) {
                break;
            }
            if !serving && last_event.elapsed() > Duration::from_secs(3600) {
                break;
            }
            continue;
        };
        last_event = Instant::now();
        let mut out = stdout.lock();
        match ev {
            Event::Verdict(v) => {
                if let (Some(r), Some(t)) = (&recorder, &ticket) {
                    let t = t.load(std::sync::atomic::Ordering::SeqCst);
                    while !r.wait_committed(t, Duration::from_secs(5)) {
                        if let Some(e) = r.status().db_error {
                            eprintln!("waiting for the history database: {e}");
                        }
                    }
                }
                match v.decision {
                    Decision::Fail => fail += 1,
                    Decision::Review => review += 1,
                    Decision::Pass => pass += 1,
                }
                latencies.push(v.latency_ms);
                if args.json {
                    let mut line = json!({
                        "ts": history::rfc3339(v.timestamp),
                        "source": v.source,
                        "frame": v.origin,
                        "seq": v.seq,
                        "verdict": v.word(),
                        "class": v.class,
                        "confidence": v.confidence,
                        "score": v.score,
                        "threshold": v.threshold,
                        "latency_ms": v.latency_ms,
                    });
                    if let Some(t) = v.pass_threshold {
                        line["pass_threshold"] = json!(t);
                    }
                    if recorder.is_some() {
                        line["recorded"] = json!(true);
                    }
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{:<6} {:<12} {:>6.1}%  score {:.3} ({})  {:>7.1} ms  {}",
                        v.decision.word(),
                        v.class,
                        100.0 * v.confidence,
                        v.score,
                        match v.pass_threshold {
                            Some(p) => format!("PASS below {p:.3}, FAIL from {:.3}", v.threshold),
                            None => format!("threshold {:.3}", v.threshold),
                        },
                        v.latency_ms,
                        v.origin
                    )?;
                }
            }
            Event::Unreadable { origin, error } => {
                unreadable += 1;
                if args.json {
                    let line = json!({
                        "ts": history::rfc3339(chrono::Utc::now()),
                        "source": source_name,
                        "frame": origin,
                        "verdict": null,
                        "error": error,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    eprintln!("unreadable {origin}: {error}");
                }
            }
            Event::Source(SourceStatus::Failed(e)) => {
                anyhow::bail!("{e}");
            }
            Event::Source(SourceStatus::Ended(_)) => {
                if !serving {
                    break;
                }
                if !ended {
                    eprintln!(
                        "the replay has ended; serving the Modbus registers until stopped \
                         (Ctrl-C)"
                    );
                }
                ended = true;
            }
            Event::Source(SourceStatus::Lost(e)) => {
                eprintln!("{e}");
                // The plant sees it too: the retained status and one alarm.
                if let Some(m) = line.as_ref().and_then(|l| l.mqtt.as_ref()) {
                    m.set_state("no signal");
                    m.alarm(&format!("source lost: {e}"));
                }
            }
            Event::Source(SourceStatus::Running(s)) => {
                if let Some(m) = line.as_ref().and_then(|l| l.mqtt.as_ref()) {
                    m.set_state("online");
                }
                tracing::info!("inspecting {s} on {label}")
            }
            Event::ModelLoaded(info) => tracing::info!("model {} ({})", info.id, info.input),
            Event::ModelRejected(e) | Event::SinkError(e) | Event::Warning(e) => {
                eprintln!("warning: {e}")
            }
            Event::RoiRefused {
                roi,
                origin,
                width,
                height,
                ..
            } => {
                drop(out);
                drop(pipe);
                if let Some(l) = &line {
                    l.io.stop();
                    l.io.close_store();
                }
                if let Some(r) = recorder {
                    r.finish();
                }
                anyhow::bail!(
                    "--roi {}: {}; nothing was inspected with it. Give a region inside the frame",
                    args.roi.as_deref().unwrap_or_default(),
                    Event::roi_refused_text(roi, &origin, width, height)
                );
            }
        }
        out.flush()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let frames = pass + review + fail;
    let p50 = pipeline::percentile(latencies.clone(), 0.5);
    let p90 = pipeline::percentile(latencies, 0.9);
    let dropped = pipe.counters().dropped;
    drop(pipe);
    // The history first (every result committed), then the broker's acknowledgements.
    let finish_recorder = move || {
        if let Some(r) = recorder {
            r.finish();
        }
    };
    match line {
        Some(l) => {
            if let Some(msg) = l.finish(Duration::from_secs(5), finish_recorder) {
                eprintln!("{msg}");
            }
        }
        None => finish_recorder(),
    }
    if let Some(f) = forwarder {
        let status = f.status();
        let left = f.finish(Duration::from_secs(10));
        if left > 0 {
            eprintln!(
                "{left} records wait for the plant database{}; they stay in the history and \
                 `inspector forward` (or the next run with --plant-db) sends them",
                status.error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"summary": {
                "frames": frames, "pass": pass, "review": review, "fail": fail,
                "unreadable": unreadable,
                "dropped": dropped, "elapsed_s": elapsed,
                "fps": if elapsed > 0.0 { frames as f64 / elapsed } else { 0.0 },
                "latency_ms_p50": p50, "latency_ms_p90": p90,
            }})
        );
    } else {
        println!(
            "{frames} frames: {pass} pass, {review} review, {fail} fail, {unreadable} unreadable, \
             {dropped} dropped; \
             {:.1} frames/s; capture-to-verdict p50 {:.1} ms, p90 {:.1} ms",
            if elapsed > 0.0 {
                frames as f64 / elapsed
            } else {
                0.0
            },
            p50.unwrap_or(f64::NAN),
            p90.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Options of `inspector cameras`.
#[derive(Debug, clap::Args)]
pub struct CamerasArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Runs `inspector cameras`.
pub fn cameras(args: CamerasArgs) -> anyhow::Result<()> {
    let cams = crate::station::source::list_cameras().map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&cams)?);
    } else if cams.is_empty() {
        println!(
            "no cameras found. Plug in a USB (UVC) camera, check that your user may open \
             /dev/video* (group `video`), then run this again; meanwhile inspect images with \
             --source folder:<DIR>"
        );
    } else {
        for c in cams {
            println!("camera:{}  {}  ({})", c.index, c.name, c.description);
        }
    }
    Ok(())
}

/// Options of `inspector history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// History database: a station's file (default: the platform data directory) or the
    /// plant database (postgres://USER@HOST:PORT/DATABASE; password from DI_PLANT_PASSWORD).
    #[arg(long)]
    pub db: Option<String>,
    /// Station (the plant database: station id).
    #[arg(long)]
    pub station: Option<String>,
    /// Line (the plant database only).
    #[arg(long)]
    pub line: Option<String>,
    /// From: RFC 3339 time or a duration back from now (30m, 24h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Until: RFC 3339 time or a duration back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// Final verdict.
    #[arg(long, value_parser = ["pass", "review", "fail"])]
    pub verdict: Option<String>,
    /// Class.
    #[arg(long)]
    pub class: Option<String>,
    /// Model id (name@hash).
    #[arg(long)]
    pub model: Option<String>,
    /// csv, or json (one object per line).
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    pub format: String,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: u64,
}

/// Runs `inspector history`.
pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let at = match &args.db {
        Some(s) => RecordsLocation::parse(s)?,
        None => RecordsLocation::File(history::default_db_path()),
    };
    if let RecordsLocation::File(db) = &at {
        anyhow::ensure!(
            db.is_file(),
            "history database {} does not exist: record into it with `inspector inspect … --db {}`",
            db.display(),
            db.display()
        );
    }
    let mut store = Records::open(&at)?;
    let now = chrono::Utc::now();
    let f = Filter {
        since_ms: args
            .since
            .as_deref()
            .map(|s| history::parse_time(s, now))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        until_ms: args
            .until
            .as_deref()
            .map(|s| history::parse_time(s, now))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        verdict: args.verdict,
        class: args.class,
        model: args.model,
        station: args.station,
        line: args.line,
        ..Filter::default()
    };
    anyhow::ensure!(
        f.line.is_none() || store.is_plant(),
        "--line filters the plant database: give --db postgres://…"
    );
    let rows = store.query(&f, args.limit, 0)?;
    let stdout = std::io::stdout();
    if args.format == "json" {
        let mut out = stdout.lock();
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else {
        history::write_csv(stdout.lock(), &rows).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Options of `inspector forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The station's history database.
    #[arg(long)]
    pub db: PathBuf,
    /// The plant database (a password not in the URL comes from DI_PLANT_PASSWORD).
    #[arg(long, value_name = "postgres://USER@HOST:PORT/DATABASE")]
    pub plant_db: String,
    /// The station's id in the plant (as the station forwards under).
    #[arg(long, default_value = "station-1")]
    pub station: String,
    /// The line it stands on.
    #[arg(long, default_value = "default")]
    pub line: String,
    /// Give up after this many seconds without progress (the server down or unreachable).
    #[arg(long, default_value_t = 30.0)]
    pub patience: f64,
}

/// Runs `inspector forward`: exit 0 once the plant database has acknowledged everything in
/// the history; otherwise the reason, and a non-zero exit (nothing is lost: run it again).
pub fn forward(args: ForwardArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.db.is_file(),
        "history database {} does not exist",
        args.db.display()
    );
    let url = PlantUrl::parse(
        &args.plant_db,
        std::env::var("DI_PLANT_PASSWORD").ok().as_deref(),
    )?;
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    let sent = crate::records::plant::forward::forward_all(
        &args.db,
        &url,
        &ForwarderOptions::new(&args.station, &args.line),
        Duration::from_secs_f64(args.patience.max(0.0)),
        |sent, left| {
            bar.set_message(format!("{} sent, {} waiting", sent.total(), left.total()));
            bar.tick();
        },
    );
    bar.finish_and_clear();
    let sent = sent.map_err(|e| {
        anyhow::anyhow!(
            "{e}\nnothing was lost: the records stay in {}",
            args.db.display()
        )
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "the plant database {url} has everything from {}: sent {} inspections, {} events, {} \
         overrides in {secs:.1} s ({:.0} records/s)",
        args.db.display(),
        sent.inspections,
        sent.events,
        sent.overrides,
        sent.total() as f64 / secs.max(1e-9)
    );
    Ok(())
}
