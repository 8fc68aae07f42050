//! The plant database against a real PostgreSQL (a throw-away cluster per test, see
//! `common/postgres.rs`): stations forward exactly once through a server restart, a killed
//! forwarder and a cut network; bad URLs, passwords and schema versions are named; the plant
//! History answers like the stations' own histories together.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use inspector::records::history::{
    EventRow, Filter, InspectionRow, Op, Override, Recorder, RecorderOptions, Store, rfc3339,
};
use inspector::records::plant::forward::forward_all;
use inspector::records::plant::read::{Records, RecordsLocation};
use inspector::records::plant::{Forwarder, ForwarderOptions, PlantError, PlantUrl};
use postgres::{Postgres, Proxy};

const CLASSES: [&str; 4] = ["good", "crack", "blowhole", "fray"];

/// Inspection `i` of a station: a reproducible mix of classes and verdicts over 30 hours.
fn row(station: &str, run: &str, i: u64) -> InspectionRow {
    let class = CLASSES[(i * 7 % 11 % 4) as usize];
    let fail = class != "good";
    let ts_ms = 1_780_000_000_000 + (i as i64) * 10_800;
    InspectionRow {
        id: 0,
        run_id: run.into(),
        seq: i,
        ts: rfc3339(chrono::DateTime::from_timestamp_millis(ts_ms).unwrap()),
        ts_ms,
        station: station.into(),
        source: "folder:/parts".into(),
        origin: format!("part-{i:05}.png"),
        model_id: if i % 3 == 0 { "m@1" } else { "m@2" }.into(),
        model_hash: "abc".into(),
        verdict: if fail { "fail" } else { "pass" }.into(),
        class: class.into(),
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

/// Writes inspections `range` of a station (with an event every 1,000 and an override every
/// 997) through the station's own writer thread.
fn write(db: &Path, station: &str, run: &str, range: std::ops::Range<u64>) {
    let rec = Recorder::start(db, RecorderOptions::default()).unwrap();
    for i in range {
        rec.submit(Op::Inspection(Box::new(row(station, run, i)), None))
            .unwrap();
        if i % 1000 == 0 {
            rec.submit(Op::Event(EventRow::now(
                station,
                "shift_started",
                format!("{i}"),
            )))
            .unwrap();
        }
        if i % 997 == 5 {
            let r = row(station, run, i);
            rec.submit(Op::Override(Override {
                run_id: run.into(),
                seq: i,
                from: r.verdict.clone(),
                verdict: if r.verdict == "fail" { "pass" } else { "fail" }.into(),
                by: "inspector-a".into(),
                at: rfc3339(chrono::Utc::now()),
                reason: "checked by hand".into(),
                station: station.into(),
            }))
            .unwrap();
        }
    }
    rec.finish();
}

fn plant_count(pg: &Postgres, db: &str, sql_where: &str) -> u64 {
    pg.psql(db, &format!("SELECT COUNT(*) FROM inspections {sql_where}"))
        .parse()
        .unwrap()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The filters a line lead uses, each answered by the plant and by the local histories.
fn filters() -> Vec<Filter> {
    let t0 = 1_780_000_000_000i64;
    vec![
        Filter::default(),
        Filter {
            verdict: Some("fail".into()),
            ..Default::default()
        },
        Filter {
            class: Some("crack".into()),
            ..Default::default()
        },
        Filter {
            model: Some("m@1".into()),
            since_ms: Some(t0 + 3_600_000 * 5),
            until_ms: Some(t0 + 3_600_000 * 20),
            ..Default::default()
        },
        Filter {
            overridden: Some(true),
            ..Default::default()
        },
        Filter {
            text: Some("part-0012".into()),
            ..Default::default()
        },
    ]
}

#[test]
fn two_stations_forward_exactly_once_through_a_server_restart_and_the_plant_history_agrees() {
    let mut pg = Postgres::start_new();
    pg.psql("postgres", "CREATE DATABASE plant");
    let url = PlantUrl::parse(&pg.url("plant"), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (db_a, db_b) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
    Store::open(&db_a).unwrap();
    Store::open(&db_b).unwrap();
    let fa = Forwarder::start(&db_a, url.clone(), ForwarderOptions::new("st-a", "L1")).unwrap();
    let fb = Forwarder::start(&db_b, url.clone(), ForwarderOptions::new("st-b", "L2")).unwrap();
    // The first half while the plant is up.
    let a = db_a.clone();
    let wa = std::thread::spawn(move || write(&a, "st-a", "run-a", 0..5_000));
    write(&db_b, "st-b", "run-b", 0..5_000);
    wa.join().unwrap();
    wait_for(
        "the first rows in the plant",
        Duration::from_secs(60),
        || plant_count(&pg, "plant", "") > 0,
    );
    // The server goes away mid-run; the stations keep recording.
    pg.stop();
    let (a, b2) = (db_a.clone(), db_b.clone());
    let wa = std::thread::spawn(move || write(&a, "st-a", "run-a", 5_000..10_000));
    write(&b2, "st-b", "run-b", 5_000..10_000);
    wa.join().unwrap();
    wait_for("the forwarder to notice", Duration::from_secs(30), || {
        let s = fa.status();
        !s.connected && s.error.is_some() && s.backlog.inspections > 0
    });
    let status = fa.status();
    assert!(
        !status.error.as_deref().unwrap_or("").contains("secret"),
        "{status:?}"
    );
    pg.start();
    let left_a = fa.finish(Duration::from_secs(120));
    let left_b = fb.finish(Duration::from_secs(120));
    assert_eq!((left_a, left_b), (0, 0), "{}", pg.server_log());
    assert_eq!(plant_count(&pg, "plant", ""), 20_000);
    assert_eq!(
        plant_count(&pg, "plant", "WHERE station_id = 'st-a'"),
        10_000
    );
    assert_eq!(
        pg.psql(
            "plant",
            "SELECT COUNT(DISTINCT (station_id, run_id, seq)) FROM inspections"
        ),
        "20000"
    );
    // Events and overrides too, each once.
    let local_events: u64 = [&db_a, &db_b]
        .iter()
        .map(|d| Store::open(d).unwrap().events(1_000_000).unwrap().len() as u64)
        .sum();
    assert_eq!(
        pg.psql("plant", "SELECT COUNT(*) FROM events"),
        local_events.to_string()
    );
    assert_eq!(
        pg.psql("plant", "SELECT COUNT(*) FROM overrides"),
        pg.psql(
            "plant",
            "SELECT COUNT(*) FROM inspections WHERE override_verdict IS NOT NULL"
        )
    );
    // The plant History answers like the two local histories together, per station too.
    let mut plant = Records::open(&RecordsLocation::Plant(url.clone())).unwrap();
    let (la, lb) = (Store::open(&db_a).unwrap(), Store::open(&db_b).unwrap());
    for f in filters() {
        let local = la.count(&f).unwrap() + lb.count(&f).unwrap();
        assert_eq!(plant.count(&f).unwrap(), local, "{f:?}");
        let mut fs = f.clone();
        fs.station = Some("st-a".into());
        assert_eq!(plant.count(&fs).unwrap(), la.count(&f).unwrap(), "{fs:?}");
        let mut fl = f.clone();
        fl.line = Some("L2".into());
        assert_eq!(plant.count(&fl).unwrap(), lb.count(&f).unwrap(), "{fl:?}");
        let hourly_plant: u64 = plant.hourly(&f).unwrap().iter().map(|h| h.fails).sum();
        let hourly_local: u64 = la
            .hourly(&f)
            .unwrap()
            .iter()
            .chain(lb.hourly(&f).unwrap().iter())
            .map(|h| h.fails)
            .sum();
        assert_eq!(hourly_plant, hourly_local, "hourly fails {f:?}");
        let mut pareto_local = std::collections::BTreeMap::new();
        for (c, n) in la
            .pareto(&f)
            .unwrap()
            .into_iter()
            .chain(lb.pareto(&f).unwrap())
        {
            *pareto_local.entry(c).or_insert(0u64) += n;
        }
        let pareto_plant: std::collections::BTreeMap<_, _> =
            plant.pareto(&f).unwrap().into_iter().collect();
        assert_eq!(pareto_plant, pareto_local, "pareto {f:?}");
    }
    let page = plant
        .query(
            &Filter {
                verdict: Some("fail".into()),
                station: Some("st-b".into()),
                ..Default::default()
            },
            50,
            0,
        )
        .unwrap();
    assert_eq!(page.len(), 50);
    assert!(
        page.iter()
            .all(|r| r.station == "st-b" && r.final_verdict() == "fail")
    );
    assert!(page.windows(2).all(|w| w[0].ts_ms >= w[1].ts_ms));
    let by_station = match &mut plant {
        Records::Plant(p) => p.hourly_by(&Filter::default(), true).unwrap(),
        Records::Local(_) => unreachable!(),
    };
    let stations: std::collections::BTreeSet<_> =
        by_station.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stations.into_iter().collect::<Vec<_>>(), ["st-a", "st-b"]);
}

#[test]
fn a_killed_forwarder_and_a_cut_network_lose_and_duplicate_nothing() {
    let pg = Postgres::start_new();
    pg.psql("postgres", "CREATE DATABASE plant");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.sqlite");
    write(&db, "st-k", "run-k", 0..30_000);
    // kill -9 `inspector forward` mid-run, then run it again to the end.
    let forward = |url: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_inspector"));
        c.args(["forward", "--db"]).arg(&db).args([
            "--plant-db",
            url,
            "--station",
            "st-k",
            "--line",
            "L1",
        ]);
        c
    };
    let mut child = forward(&pg.url("plant"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the forwarder to be part-way",
        Duration::from_secs(120),
        || {
            pg.psql(
                "plant",
                "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'inspections'",
            ) == "1"
                && plant_count(&pg, "plant", "") >= 2_000
        },
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = plant_count(&pg, "plant", "");
    assert!(
        partial < 30_000,
        "the forwarder finished before it was killed"
    );
    let out = forward(&pg.url("plant")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plant_count(&pg, "plant", ""), 30_000);
    assert!(Store::open(&db).unwrap().integrity_ok().unwrap());
    assert_eq!(
        Store::open(&db).unwrap().count(&Filter::default()).unwrap(),
        30_000
    );

    // A network that drops: every connection cut, again and again, while more is recorded.
    let proxy = Proxy::start(pg.port);
    let via = pg
        .url("plant")
        .replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    let fwd = Forwarder::start(
        &db,
        PlantUrl::parse(&via, None).unwrap(),
        ForwarderOptions::new("st-k", "L1"),
    )
    .unwrap();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || write(&db, "st-k", "run-k2", 0..20_000))
    };
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        proxy.cut();
    }
    writer.join().unwrap();
    assert_eq!(fwd.finish(Duration::from_secs(120)), 0);
    assert_eq!(plant_count(&pg, "plant", ""), 50_000);
    assert_eq!(plant_count(&pg, "plant", "WHERE run_id = 'run-k2'"), 20_000);
}

#[test]
fn bad_plant_databases_are_named_and_the_station_keeps_its_records() {
    let pg = Postgres::start_new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.sqlite");
    write(&db, "st-x", "run-x", 0..50);
    let forward = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_inspector"))
            .args(["forward", "--db"])
            .arg(&db)
            .args(["--plant-db", url, "--station", "st-x", "--patience", "1"])
            .output()
            .unwrap()
    };
    let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = forward(&format!(
        "postgres://plant:x@127.0.0.1:{closed}/plant?sslmode=disable"
    ));
    assert!(!o.status.success());
    assert!(said(&o).contains("refused"), "{}", said(&o));
    assert!(
        !said(&o).contains("plant:x@"),
        "password shown: {}",
        said(&o)
    );
    // Not a URL.
    let o = forward("mysql://plant@db/plant");
    assert!(!o.status.success());
    assert!(said(&o).contains("postgres://"), "{}", said(&o));
    // A wrong password.
    let o = forward(&format!(
        "postgres://plant:wrong@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    ));
    assert!(!o.status.success());
    assert!(
        said(&o).contains("password authentication failed"),
        "{}",
        said(&o)
    );
    assert!(!said(&o).contains("wrong"), "password shown: {}", said(&o));
    // A database that does not exist.
    let o = forward(&pg.url("nowhere"));
    assert!(!o.status.success());
    assert!(said(&o).contains("nowhere"), "{}", said(&o));
    // A plant schema newer than this app: refused, nothing written.
    pg.psql("postgres", "CREATE DATABASE newer");
    pg.psql(
        "newer",
        "CREATE TABLE plant_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO plant_meta VALUES ('plant_id', 'x'), ('schema_version', '99');",
    );
    let o = forward(&pg.url("newer"));
    assert!(!o.status.success());
    assert!(said(&o).contains("newer than this app"), "{}", said(&o));
    // An older plant schema (version 1, before the per-hour totals) is migrated, and the
    // records arrive.
    pg.psql("postgres", "CREATE DATABASE older");
    let url = PlantUrl::parse(&pg.url("older"), None).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut c = inspector::records::plant::connect(&url).await.unwrap();
            inspector::records::plant::schema::migrate(&mut c, &url, 1)
                .await
                .unwrap();
        });
    assert_eq!(
        pg.psql(
            "older",
            "SELECT value FROM plant_meta WHERE key = 'schema_version'"
        ),
        "1"
    );
    let o = forward(&pg.url("older"));
    assert!(o.status.success(), "{}", said(&o));
    assert_eq!(
        pg.psql(
            "older",
            "SELECT value FROM plant_meta WHERE key = 'schema_version'"
        ),
        inspector::records::plant::schema::MIGRATIONS
            .len()
            .to_string()
    );
    assert_eq!(pg.psql("older", "SELECT SUM(total) FROM hourly"), "50");
    // Through all of it the station's history kept every record.
    assert_eq!(
        Store::open(&db).unwrap().count(&Filter::default()).unwrap(),
        50
    );
    // The library says the same in its own words.
    let e = forward_all(
        &db,
        &PlantUrl::parse(&pg.url("newer"), None).unwrap(),
        &ForwarderOptions::new("st-x", ""),
        Duration::from_secs(1),
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, PlantError::TooNew { found: 99, .. }), "{e}");
}

/// A small tmpfs the server's `inspections` table is moved onto, so that its disk really
/// fills; unmounted at the end (after the server stopped). Where this machine cannot mount
/// (not root), the server is made to refuse inserts with the same SQLSTATE (`disk_full`) and
/// message instead, which the test says.
struct SmallDisk {
    at: std::path::PathBuf,
    mounted: bool,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("chown")
                .arg("postgres:postgres")
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
        Self {
            at: at.to_path_buf(),
            mounted,
        }
    }

    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .unwrap();
        assert!(st.success(), "remount {}", self.at.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

#[test]
fn a_full_server_disk_is_named_and_every_record_arrives_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // The server (user postgres) reaches its tablespace through this folder.
    let open: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(dir.path(), open).unwrap();
    // Declared before the server: dropped (unmounted) after it stopped.
    let disk = SmallDisk::mount(&dir.path().join("small"), "256k");
    let pg = Postgres::start_new();
    pg.psql("postgres", "CREATE DATABASE plant");
    let db = dir.path().join("station.sqlite");
    write(&db, "st-f", "run-f", 0..100);
    let url = PlantUrl::parse(&pg.url("plant"), None).unwrap();
    let o = ForwarderOptions::new("st-f", "L1");
    let sent = forward_all(&db, &url, &o, Duration::from_secs(30), |_, _| {}).unwrap();
    assert_eq!(sent.inspections, 100);
    if disk.mounted {
        pg.psql(
            "plant",
            &format!("CREATE TABLESPACE small LOCATION '{}'", disk.at.display()),
        );
        pg.psql("plant", "ALTER TABLE inspections SET TABLESPACE small");
    } else {
        eprintln!("cannot mount a small disk here (not root?): the server refuses with disk_full");
        pg.psql(
            "plant",
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                RAISE EXCEPTION USING ERRCODE = 'disk_full',
                    MESSAGE = 'could not extend file \"base/1/2\": No space left on device';
             END $$;
             CREATE TRIGGER disk_full BEFORE INSERT ON inspections
                FOR EACH ROW EXECUTE FUNCTION disk_full();",
        );
    }
    // The station goes on recording while the plant's disk is full.
    write(&db, "st-f", "run-f", 100..5_100);
    let f = Forwarder::start(&db, url.clone(), o).unwrap();
    wait_for("the full disk to be named", Duration::from_secs(60), || {
        let s = f.status();
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("disk is full"))
    });
    let s = f.status();
    assert!(
        s.backlog.inspections > 0,
        "records wait while the disk is full: {s:?}"
    );
    assert!(!s.url.contains("secret"), "{}", s.url);
    assert_eq!(
        Store::open(&db).unwrap().count(&Filter::default()).unwrap(),
        5_100,
        "the station's history is intact"
    );
    // Space again: everything arrives, exactly once.
    if disk.mounted {
        disk.grow("64m");
    } else {
        pg.psql("plant", "DROP TRIGGER disk_full ON inspections");
    }
    wait_for("the backlog to drain", Duration::from_secs(120), || {
        let s = f.status();
        s.connected && s.backlog.total() == 0
    });
    drop(f);
    assert_eq!(
        plant_count(&pg, "plant", "WHERE station_id = 'st-f'"),
        5_100
    );
    drop(pg);
    drop(disk);
}
