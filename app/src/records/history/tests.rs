//! Tests of the history store, writer and archive.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::data::dataset::DecodedImage;

/// Submits `n` FAIL rows (seq 1..=n), each with `img` and `heat` to archive; returns the
/// last ticket.
fn submit_archived_fails(
    rec: &Recorder,
    n: u64,
    img: &Arc<DecodedImage>,
    heat: (u32, u32, Vec<u8>),
) -> u64 {
    let mut last = 0;
    for seq in 1..=n {
        let a = Archive {
            image: img.clone(),
            heatmap_rgba: heat.clone(),
        };
        last = rec
            .submit(Op::Inspection(
                Box::new(row(seq, "fail", "Crack", seq as i64)),
                Some(a),
            ))
            .unwrap();
    }
    last
}

fn row(seq: u64, verdict: &str, class: &str, ts_ms: i64) -> InspectionRow {
    InspectionRow {
        id: 0,
        run_id: "r".into(),
        seq,
        ts: rfc3339(chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default()),
        ts_ms,
        station: "s".into(),
        source: "synthetic".into(),
        origin: format!("frame {seq}"),
        model_id: "m@1".into(),
        model_hash: "1".into(),
        verdict: verdict.into(),
        class: class.into(),
        confidence: 0.9,
        score: 0.5,
        threshold: 0.5,
        latency_ms: 3.0,
        image_path: None,
        heatmap_path: None,
        roi: None,
        override_verdict: None,
        override_by: None,
        override_at: None,
        override_reason: None,
    }
}

#[test]
fn store_filters_charts_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let mut s = Store::open(&db).unwrap();
    let hour = 3_600_000;
    let ops: Vec<Op> = vec![
        Op::Inspection(Box::new(row(1, "pass", "Free", 10 * hour)), None),
        Op::Inspection(Box::new(row(2, "fail", "Crack", 10 * hour + 5)), None),
        Op::Inspection(Box::new(row(3, "fail", "Crack", 11 * hour)), None),
        Op::Inspection(
            Box::new(InspectionRow {
                roi: Some([5, 6, 70, 80]),
                ..row(4, "fail", "Break", 11 * hour + 1)
            }),
            None,
        ),
        Op::Event(EventRow::now("s", "threshold_changed", "0.5 → 0.4")),
    ];
    s.write_batch(&ops).unwrap();
    // The same frame twice is stored once.
    s.write_batch(&ops[..1]).unwrap();
    assert_eq!(s.count(&Filter::default()).unwrap(), 4);
    let fails = Filter {
        verdict: Some("fail".into()),
        ..Filter::default()
    };
    assert_eq!(s.count(&fails).unwrap(), 3);
    assert_eq!(
        s.pareto(&Filter::default()).unwrap(),
        vec![("Crack".to_string(), 2), ("Break".to_string(), 1)]
    );
    let h = s.hourly(&Filter::default()).unwrap();
    assert_eq!(
        h,
        vec![
            HourBucket {
                hour_ms: 10 * hour,
                total: 2,
                fails: 1,
                reviews: 0,
            },
            HourBucket {
                hour_ms: 11 * hour,
                total: 2,
                fails: 2,
                reviews: 0,
            }
        ]
    );
    s.write_batch(&[Op::Override(Override {
        run_id: "r".into(),
        seq: 2,
        from: "fail".into(),
        verdict: "pass".into(),
        by: "ann".into(),
        at: rfc3339(chrono::Utc::now()),
        reason: "dust, not a crack".into(),
        station: "s".into(),
    })])
    .unwrap();
    assert_eq!(s.count(&fails).unwrap(), 2);
    // The per-hour summary follows the override, and agrees with a scan of the rows.
    let summary = s.hourly(&Filter::default()).unwrap();
    assert_eq!(
        summary[0],
        HourBucket {
            hour_ms: 10 * hour,
            total: 2,
            fails: 0,
            reviews: 0,
        }
    );
    let scanned = s
        .hourly(&Filter {
            text: Some("frame".into()),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(summary, scanned);
    assert_eq!(
        s.pareto(&Filter::default()).unwrap(),
        s.pareto(&Filter {
            text: Some("frame".into()),
            ..Filter::default()
        })
        .unwrap()
    );
    let o = Filter {
        overridden: Some(true),
        ..Filter::default()
    };
    let rows = s.query(&o, 10, 0).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].override_reason.as_deref(),
        Some("dust, not a crack")
    );
    assert_eq!(rows[0].final_verdict(), "pass");
    let ev = s.events(10).unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().any(|e| e.kind == "override"));
    // Newest first, paged.
    let page = s.query(&Filter::default(), 2, 1).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 2]);
    let newest = s.query(&Filter::default(), 1, 0).unwrap();
    assert_eq!(newest[0].roi, Some([5, 6, 70, 80]));
    assert_eq!(page[0].roi, None);
    assert!(s.integrity_ok().unwrap());
    let mut csv = Vec::new();
    write_csv(&mut csv, &rows).unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert!(text.starts_with("id,time,station"));
    assert!(text.contains("dust, not a crack"));
    drop(s);
    // Reopening does not migrate again.
    let s = Store::open(&db).unwrap();
    assert_eq!(s.count(&Filter::default()).unwrap(), 4);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    drop(Store::open(&db).unwrap());
    let c = Connection::open(&db).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = Store::open(&db).err().unwrap().to_string();
    assert!(e.contains("newer"), "{e}");
}

#[test]
fn times_parse() {
    let now = chrono::DateTime::from_timestamp_millis(100 * 86_400_000).unwrap();
    assert_eq!(parse_time("24h", now).unwrap(), 99 * 86_400_000);
    assert_eq!(parse_time("7d", now).unwrap(), 93 * 86_400_000);
    assert_eq!(parse_time("1970-01-02T00:00:00Z", now).unwrap(), 86_400_000);
    assert!(parse_time("yesterday", now).is_err());
    assert!(parse_time("5y", now).is_err());
}

#[test]
fn p_chart() {
    let (lo, hi) = p_chart_limits(0.1, 100);
    assert!((hi - 0.19).abs() < 1e-12 && (lo - 0.01).abs() < 1e-12);
    assert_eq!(p_chart_limits(0.5, 0), (0.0, 1.0));
}

#[test]
fn archive_budget_prunes_files_not_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let rec = Recorder::start(
        &db,
        RecorderOptions {
            archive_budget_bytes: 4000,
            queue: 4,
        },
    )
    .unwrap();
    let img = Arc::new(DecodedImage {
        data: (0..64 * 64).map(|i| (i * 7 % 251) as u8).collect(),
        width: 64,
        height: 64,
        format: kernels::PixelFormat::Gray8,
    });
    let last = submit_archived_fails(&rec, 20, &img, (2, 2, vec![255; 16]));
    assert!(rec.wait_committed(last, Duration::from_secs(20)));
    let st = rec.status();
    assert!(st.archive_bytes <= 4000, "{st:?}");
    rec.finish();
    let s = Store::open(&db).unwrap();
    assert_eq!(s.count(&Filter::default()).unwrap(), 20);
    let rows = s.query(&Filter::default(), 100, 0).unwrap();
    let newest = &rows[0];
    let p = s.archive_dir().join(newest.image_path.as_ref().unwrap());
    assert!(p.is_file(), "newest archived image kept");
    let oldest = rows.last().unwrap();
    let p = s.archive_dir().join(oldest.image_path.as_ref().unwrap());
    assert!(!p.exists(), "oldest archived image pruned");
}

#[test]
fn queries_run_while_the_writer_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let rec = Recorder::start(&db, RecorderOptions::default()).unwrap();
    let writer = {
        let rec = rec.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            for seq in 1..=20_000u64 {
                let v = if seq % 7 == 0 { "fail" } else { "pass" };
                last = rec
                    .submit(Op::Inspection(
                        Box::new(row(seq, v, "Crack", seq as i64 * 1000)),
                        None,
                    ))
                    .unwrap();
            }
            last
        })
    };
    // A second connection, as the History tab has, reads throughout.
    std::thread::sleep(Duration::from_millis(50));
    let reader = Store::open(&db).unwrap();
    let mut seen = 0;
    let mut queries = 0;
    while !writer.is_finished() || queries < 3 {
        let n = reader.count(&Filter::default()).unwrap();
        assert!(n >= seen, "count went backwards");
        seen = n;
        let page = reader.query(&Filter::default(), 50, 0).unwrap();
        assert!(page.len() as u64 == n.min(50));
        reader.hourly(&Filter::default()).unwrap();
        reader.pareto(&Filter::default()).unwrap();
        queries += 1;
    }
    let last = writer.join().unwrap();
    assert!(rec.wait_committed(last, Duration::from_secs(60)));
    assert_eq!(reader.count(&Filter::default()).unwrap(), 20_000);
    let h = reader.hourly(&Filter::default()).unwrap();
    assert_eq!(h.iter().map(|b| b.total).sum::<u64>(), 20_000);
    assert_eq!(h.iter().map(|b| b.fails).sum::<u64>(), 20_000 / 7);
    rec.finish();
}

#[test]
fn archive_failure_is_reported_and_rows_are_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    // A file where the archive folder should be: every archive write fails, as on a full
    // or read-only disk.
    std::fs::write(archive_dir_for(&db), b"in the way").unwrap();
    let rec = Recorder::start(&db, RecorderOptions::default()).unwrap();
    let img = Arc::new(DecodedImage {
        data: vec![7; 16],
        width: 4,
        height: 4,
        format: kernels::PixelFormat::Gray8,
    });
    let last = submit_archived_fails(&rec, 3, &img, (1, 1, vec![255; 4]));
    assert!(rec.wait_committed(last, Duration::from_secs(20)));
    let err = rec
        .status()
        .archive_error
        .expect("the archive failure is reported");
    assert!(err.contains("verdicts are still recorded"), "{err}");
    rec.finish();
    let s = Store::open(&db).unwrap();
    let rows = s.query(&Filter::default(), 10, 0).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.image_path.is_none()));
}

#[test]
fn review_verdicts_are_their_own_rows_and_a_decision_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let hour = 3_600_000;
    // A database made before the review band (schema 6) with rows, an override and a line
    // result: migration 7 rebuilds the table and keeps every id.
    {
        let mut conn = Connection::open(&db).unwrap();
        let tx = conn.transaction().unwrap();
        for m in &MIGRATIONS[..6] {
            tx.execute_batch(m).unwrap();
        }
        tx.pragma_update(None, "user_version", 6i64).unwrap();
        tx.commit().unwrap();
        conn.execute_batch(
            "INSERT INTO inspections (id, run_id, seq, ts, ts_ms, station, source, origin,
                model_id, model_hash, verdict, class, confidence, score, threshold, latency_ms,
                override_verdict, roi)
             VALUES (41, 'old', 1, 't', 0, 's', 'x', 'a', 'm@1', '1', 'fail', 'Crack', 0.9, 0.9,
                0.5, 1.0, 'pass', '1,2,3,4');
             INSERT INTO hourly (hour_ms, model_id, class, total, fails) VALUES (0, 'm@1', 'Crack', 1, 0);
             INSERT INTO line_results (inspection_id, run_id, seq, error_code) VALUES (41, 'old', 1, 0);",
        )
        .unwrap();
        assert!(
            conn.execute_batch(
                "INSERT INTO inspections (run_id, seq, ts, ts_ms, station, source, origin, model_id,
                 model_hash, verdict, class, confidence, score, threshold, latency_ms)
                 VALUES ('old', 2, 't', 0, 's', 'x', 'a', 'm', '1', 'review', 'C', 1, 1, 1, 1)"
            )
            .is_err(),
            "schema 6 refuses a REVIEW verdict"
        );
    }
    let mut s = Store::open(&db).unwrap();
    let old = s.query(&Filter::default(), 10, 0).unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!((old[0].id, old[0].final_verdict()), (41, "pass"));
    assert_eq!(old[0].roi, Some([1, 2, 3, 4]));
    s.write_batch(&[
        Op::Inspection(Box::new(row(1, "pass", "Free", 10 * hour)), None),
        Op::Inspection(Box::new(row(2, "review", "Crack", 10 * hour + 1)), None),
        Op::Inspection(Box::new(row(3, "review", "Break", 10 * hour + 2)), None),
        Op::Inspection(Box::new(row(4, "fail", "Crack", 10 * hour + 3)), None),
    ])
    .unwrap();
    let only = |v: &str| Filter {
        verdict: Some(v.into()),
        since_ms: Some(hour),
        ..Filter::default()
    };
    assert_eq!(s.count(&only("review")).unwrap(), 2);
    assert_eq!(s.count(&only("fail")).unwrap(), 1);
    assert_eq!(s.count(&only("pass")).unwrap(), 1);
    let bucket = |fails, reviews| HourBucket {
        hour_ms: 10 * hour,
        total: 4,
        fails,
        reviews,
    };
    assert_eq!(s.hourly(&only_hours(hour)).unwrap(), vec![bucket(1, 2)]);
    // The REVIEW filter's chart and Pareto count the parts waiting for a decision.
    assert_eq!(
        s.hourly(&only("review")).unwrap(),
        vec![HourBucket {
            hour_ms: 10 * hour,
            total: 2,
            fails: 0,
            reviews: 2,
        }]
    );
    assert_eq!(
        s.pareto(&only("review")).unwrap(),
        vec![("Break".to_string(), 1), ("Crack".to_string(), 1)]
    );
    assert_eq!(
        s.pareto(&only_hours(hour)).unwrap(),
        vec![("Crack".to_string(), 1)]
    );
    // A person decides one REVIEW part is defective: it leaves the REVIEW count for the FAILs.
    s.write_batch(&[Op::Override(Override {
        run_id: "r".into(),
        seq: 2,
        from: "review".into(),
        verdict: "fail".into(),
        by: "ann".into(),
        at: rfc3339(chrono::Utc::now()),
        reason: "a crack at the edge".into(),
        station: "s".into(),
    })])
    .unwrap();
    assert_eq!(s.hourly(&only_hours(hour)).unwrap(), vec![bucket(2, 1)]);
    // The summary agrees with a scan of the rows.
    let scanned = Filter {
        text: Some("frame".into()),
        ..only_hours(hour)
    };
    assert_eq!(s.hourly(&scanned).unwrap(), vec![bucket(2, 1)]);
    assert_eq!(s.count(&only("review")).unwrap(), 1);
}

/// Rows from `since_ms` on.
fn only_hours(since_ms: i64) -> Filter {
    Filter {
        since_ms: Some(since_ms),
        ..Filter::default()
    }
}
