//! The `inspector` binary end to end: headless inspection with its JSON contract, recording into
//! the history database, `inspector history`, `inspector cameras`, refusals, and a SIGKILL crash
//! test. These run the real engine on the real GPU path (lavapipe in CI).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inspector::records::history::{Filter, Store};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_inspector"));
    c.env("RUST_LOG", "warn");
    c
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn default_model() -> PathBuf {
    root().join("assets/models/default.safetensors")
}

/// Three readable images of different sizes and formats, a truncated PNG, an empty file and a
/// text file with an image extension.
fn image_folder(dir: &Path) -> usize {
    let gray =
        image::GrayImage::from_fn(150, 97, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]));
    gray.save(dir.join("a.png")).unwrap();
    let rgb = image::RgbImage::from_fn(64, 200, |x, y| image::Rgb([x as u8, y as u8, 90]));
    rgb.save(dir.join("b.jpg")).unwrap();
    let small = image::GrayImage::from_fn(9, 7, |x, _| image::Luma([x as u8 * 20]));
    small.save(dir.join("c.bmp")).unwrap();
    let png = std::fs::read(dir.join("a.png")).unwrap();
    std::fs::write(dir.join("d-truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.join("e-empty.png"), b"").unwrap();
    std::fs::write(dir.join("f-not-an-image.jpg"), b"hello").unwrap();
    3
}

/// Runs `cmd` to its end and fails the test, with its stderr, unless it succeeded.
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn inspect_folder_json_records_every_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let readable = image_folder(&images);
    let db = dir.path().join("h.sqlite");
    let out = succeeds(
        bin()
            .args(["inspect", "--json", "--model"])
            .arg(default_model())
            .arg("--source")
            .arg(format!("folder:{}", images.display()))
            .arg("--db")
            .arg(&db),
    );
    let lines = json_lines(&out.stdout);
    let verdicts: Vec<_> = lines.iter().filter(|l| l["verdict"].is_string()).collect();
    let errors: Vec<_> = lines.iter().filter(|l| l["error"].is_string()).collect();
    assert_eq!(verdicts.len(), readable, "{lines:#?}");
    assert_eq!(errors.len(), 3, "{lines:#?}");
    for v in &verdicts {
        for key in [
            "ts",
            "source",
            "frame",
            "verdict",
            "class",
            "confidence",
            "score",
            "latency_ms",
        ] {
            assert!(!v[key].is_null(), "missing {key} in {v}");
        }
        assert!(matches!(v["verdict"].as_str(), Some("pass" | "fail")));
        assert_eq!(v["recorded"], true);
        let s = v["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s));
    }
    let frames: Vec<_> = verdicts
        .iter()
        .map(|v| v["frame"].as_str().unwrap())
        .collect();
    assert_eq!(frames, ["a.png", "b.jpg", "c.bmp"]);
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"]["frames"], readable as u64);
    assert_eq!(summary["summary"]["unreadable"], 3);

    // Every verdict is in the database, with its images archived for the rejects.
    let store = Store::open(&db).unwrap();
    assert_eq!(store.count(&Filter::default()).unwrap(), readable as u64);
    for r in store.query(&Filter::default(), 100, 0).unwrap() {
        if r.verdict == "fail" {
            let img = store
                .archive_dir()
                .join(r.image_path.as_ref().expect("rejects are archived"));
            assert!(img.is_file());
        }
    }
    let fails = verdicts.iter().filter(|v| v["verdict"] == "fail").count();

    // `inspector history` prints them.
    let out = succeeds(bin().args(["history", "--format", "json", "--db"]).arg(&db));
    assert_eq!(json_lines(&out.stdout).len(), readable);
    let out = bin()
        .args(["history", "--verdict", "fail", "--since", "1h", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("id,time,station"));
    assert_eq!(csv.lines().count(), 1 + fails);
}

#[test]
fn bad_model_or_source_exits_nonzero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.safetensors");
    let mut bytes = std::fs::read(default_model()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, bytes).unwrap();
    let out = bin()
        .args([
            "inspect",
            "--source",
            "synthetic",
            "--limit",
            "1",
            "--model",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.safetensors"), "{err}");

    let out = bin()
        .args(["inspect", "--source", "folder:/no/such/folder", "--model"])
        .arg(default_model())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/folder"));

    let out = bin()
        .args(["inspect", "--source", "webcam"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn synthetic_limit_and_cameras() {
    let out = succeeds(bin().args(["inspect", "--source", "synthetic", "--limit", "5", "--json"]));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["summary"]["frames"], 5);
    let out = bin().arg("cameras").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("camera:") || text.contains("no cameras found"),
        "{text}"
    );
}

/// A child inspects and records; it is killed with SIGKILL mid-run. The database must pass
/// `PRAGMA integrity_check` and hold every verdict the child reported as recorded.
#[test]
fn sigkill_mid_run_loses_no_reported_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.sqlite");
    let mut child = bin()
        .args([
            "inspect",
            "--source",
            "synthetic",
            "--json",
            "--pass-sample",
            "0.2",
            "--db",
        ])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = String::new();
    while reported.len() < 40 && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["recorded"] == true {
            reported.push(v["seq"].as_u64().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        reported.len() >= 40,
        "child reported only {} verdicts",
        reported.len()
    );
    let store = Store::open(&db).unwrap();
    assert!(store.integrity_ok().unwrap());
    let rows = store.query(&Filter::default(), 1_000_000, 0).unwrap();
    let stored: std::collections::HashSet<u64> = rows.iter().map(|r| r.seq).collect();
    for s in &reported {
        assert!(
            stored.contains(s),
            "verdict {s} was reported as recorded but is missing"
        );
    }
}

/// Files cut short, in every supported format (a real JPEG cut to 3000 bytes among them), are
/// "unreadable": counted as such, reported as errors, never given a verdict.
#[test]
fn truncated_images_are_unreadable_never_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let real = root().join("datasets/magnetic-tile-demo/MT_Crack/Imgs/exp1_num_32128.jpg");
    let bytes = std::fs::read(&real).unwrap();
    assert!(bytes.len() > 6000);
    std::fs::write(images.join("a-real-cut.jpg"), &bytes[..3000]).unwrap();
    std::fs::copy(&real, images.join("b-whole.jpg")).unwrap();
    let img = image::GrayImage::from_fn(120, 90, |x, y| {
        image::Luma([((x * 7 + y * 13) % 256) as u8])
    });
    for ext in ["png", "bmp", "tiff", "jpg"] {
        let whole = dir.path().join(format!("whole.{ext}"));
        img.save(&whole).unwrap();
        let b = std::fs::read(&whole).unwrap();
        std::fs::write(images.join(format!("c-cut.{ext}")), &b[..b.len() * 2 / 3]).unwrap();
    }
    let out = succeeds(
        bin()
            .args(["inspect", "--json", "--source"])
            .arg(format!("folder:{}", images.display())),
    );
    let lines = json_lines(&out.stdout);
    let verdicts: Vec<&str> = lines
        .iter()
        .filter(|l| l["verdict"].is_string())
        .map(|l| l["frame"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["b-whole.jpg"],
        "only the whole file gets a verdict"
    );
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l["error"].is_string())
        .map(|l| l["frame"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{lines:?}");
    assert!(lines.iter().filter(|l| l["error"].is_string()).all(|l| {
        let e = l["error"].as_str().unwrap();
        e.contains("truncated") || e.contains("cannot decode")
    }));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["unreadable"], 5);
    assert_eq!(summary["frames"], 1);
}

/// An ROI outside the frames is refused with a clear error and a non-zero exit; nothing is
/// inspected or recorded with it (it used to warn and inspect the whole frame).
#[test]
fn roi_outside_the_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite");
    let out = bin()
        .args([
            "inspect",
            "--json",
            "--roi",
            "5000,5000,100,100",
            "--source",
        ])
        .arg(format!(
            "folder:{}",
            root().join("datasets/magnetic-tile-demo").display()
        ))
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr {err}");
    assert!(
        err.contains("--roi 5000,5000,100,100")
            && err.contains("outside")
            && err.contains("refused"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("\"verdict\":\""),
        "a verdict was given"
    );
    let rows = Store::open(&db)
        .unwrap()
        .query(&Filter::default(), 1000, 0)
        .unwrap();
    assert!(rows.is_empty(), "{} rows recorded", rows.len());
    // Inside the frame it is taken.
    succeeds(
        bin()
            .args([
                "inspect",
                "--json",
                "--limit",
                "2",
                "--roi",
                "10,10,100,100",
                "--source",
            ])
            .arg(format!(
                "folder:{}",
                root().join("datasets/magnetic-tile-demo").display()
            )),
    );
}

/// An ROI reaching past the frame's edge is clipped to the frame, and stderr says so once,
/// naming the given and the clipped region (it used to be accepted without a word).
#[test]
fn roi_reaching_past_the_frame_is_clipped_and_said_once() {
    let out = succeeds(
        bin()
            .args([
                "inspect",
                "--json",
                "--limit",
                "3",
                "--roi",
                "0,0,5000,100",
                "--source",
            ])
            .arg(format!(
                "folder:{}",
                root().join("datasets/magnetic-tile-demo").display()
            )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = err.lines().filter(|l| l.contains("clipped")).collect();
    assert_eq!(said.len(), 1, "said {} times: {err}", said.len());
    assert!(
        said[0].contains("x 0, y 0, 5000 × 100") && said[0].contains("clipped to x 0, y 0, "),
        "{err}"
    );
    let clipped_width: u32 = said[0]
        .rsplit("clipped to x 0, y 0, ")
        .next()
        .and_then(|r| r.split(' ').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no clipped width in {err}"));
    assert!(clipped_width < 5000, "{err}");
    let verdicts = json_lines(&out.stdout)
        .iter()
        .filter(|l| l["verdict"].is_string())
        .count();
    assert_eq!(verdicts, 3, "{err}");
}

/// `inspector eval` without `--split` on the demo set (whose only split is "demo") evaluates
/// every row and says so on stderr and in the JSON (it used to fail: no rows in split "test");
/// `--scores` writes one CSV row per image whose scores and decisions agree with the report.
#[test]
fn eval_without_a_split_uses_the_split_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("scores.csv");
    let out = succeeds(
        bin()
            // Nor does it complain about a missing XDG_RUNTIME_DIR (libwayland did, 2–6 times).
            .env_remove("XDG_RUNTIME_DIR")
            .args(["eval", "--json", "--model"])
            .arg(default_model())
            .arg("--data")
            .arg(root().join("datasets/magnetic-tile-demo"))
            .arg("--scores")
            .arg(&csv_path),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("evaluating split \"all\""), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
    let report = &json_lines(&out.stdout)[0];
    assert_eq!(report["split"], "all");
    let images = report["images"].as_u64().unwrap() as usize;
    assert!(images > 0, "{report}");
    assert!(report["suspect_parts"].is_array(), "{report}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,label,predicted,score,decision"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), images);
    let threshold = report["threshold"].as_f64().unwrap();
    let mut failed_good = 0;
    let mut good = 0;
    for r in &rows {
        let score: f64 = r[3].parse().unwrap();
        let want = if score >= threshold { "fail" } else { "pass" };
        assert_eq!(r[4], want, "{r:?} at threshold {threshold}");
        if r[1] == "Free" {
            good += 1;
            failed_good += (r[4] == "fail") as usize;
        }
    }
    let fr = report["false_reject_rate"].as_f64().unwrap();
    assert!(
        (fr - failed_good as f64 / good as f64).abs() < 1e-9,
        "{fr} {failed_good}/{good}"
    );
}

/// `inspector --db X` (the README's form, no subcommand) opens the window: without a display
/// that fails on the display, not on the arguments.
#[test]
fn db_without_a_subcommand_is_the_window() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--db", "h.sqlite"],
        vec!["--db", "h.sqlite", "--tab", "history", "--fps", "4"],
        vec!["app", "--db", "h.sqlite"],
    ] {
        let out = bin()
            .args(&args)
            .current_dir(dir.path())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
        assert!(err.contains("no display"), "{args:?}: {err}");
    }
}

/// The review band end to end: `inspector thresholds` on a split too small for two thresholds
/// falls back to one and says so; with a band, `inspect` prints REVIEW and counts it apart,
/// records it as its own verdict, and `--no-review` decides two-way with the same model.
#[test]
fn thresholds_and_the_review_band_in_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let demo = root().join("datasets/magnetic-tile-demo");
    // 20 defective and 4 good demo images: too few good ones for a band.
    let one = dir.path().join("one.safetensors");
    let out = succeeds(
        bin()
            .args(["thresholds", "--model"])
            .arg(default_model())
            .args(["--data"])
            .arg(&demo)
            .args(["--split", "demo", "--json", "--out"])
            .arg(&one),
    );
    let band: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(band["pass_threshold"].is_null(), "{band}");
    assert!(band["rule"].as_str().unwrap().contains("too few"), "{band}");
    let m = kernels::Model::load(&one).unwrap();
    assert_eq!(m.spec.pass_threshold, None);
    assert_eq!(m.spec.threshold, band["threshold"].as_f64().unwrap() as f32);
    // A band over the middle of the demo scores.
    let scores: Vec<f64> = json_lines(
        &succeeds(
            bin()
                .args(["inspect", "--json", "--model"])
                .arg(default_model())
                .arg("--source")
                .arg(format!("folder:{}", demo.display())),
        )
        .stdout,
    )
    .iter()
    .filter_map(|l| l["score"].as_f64())
    .collect();
    let mut sorted = scores.clone();
    sorted.sort_by(f64::total_cmp);
    let (lo, hi) = (sorted[6] as f32, sorted[18] as f32);
    let mut m = kernels::Model::load(&default_model()).unwrap();
    m.spec.pass_threshold = Some(lo);
    m.spec.threshold = hi;
    let banded = dir.path().join("banded.safetensors");
    m.save(&banded).unwrap();
    let db = dir.path().join("h.sqlite");
    let run = |extra: &[&str]| {
        json_lines(
            &succeeds(
                bin()
                    .args(["inspect", "--json", "--model"])
                    .arg(&banded)
                    .arg("--source")
                    .arg(format!("folder:{}", demo.display()))
                    .arg("--db")
                    .arg(&db)
                    .args(extra),
            )
            .stdout,
        )
    };
    let lines = run(&[]);
    let summary = &lines.last().unwrap()["summary"];
    let verdicts = &lines[..lines.len() - 1];
    let count = |w: &str| verdicts.iter().filter(|l| l["verdict"] == w).count() as u64;
    assert!(count("review") > 0, "{summary}");
    for l in verdicts {
        let s = l["score"].as_f64().unwrap() as f32;
        let want = if s >= hi {
            "fail"
        } else if s >= lo {
            "review"
        } else {
            "pass"
        };
        assert_eq!(l["verdict"], want, "{l}");
        assert_eq!(l["pass_threshold"].as_f64().unwrap() as f32, lo);
    }
    assert_eq!(summary["review"], count("review"));
    assert_eq!(summary["frames"], verdicts.len() as u64);
    let reviews = Filter {
        verdict: Some("review".into()),
        ..Filter::default()
    };
    assert_eq!(
        Store::open(&db).unwrap().count(&reviews).unwrap(),
        count("review")
    );
    // Two-way at the station: no REVIEW, FAIL from the same threshold.
    let lines = run(&["--no-review"]);
    for l in &lines[..lines.len() - 1] {
        assert_ne!(l["verdict"], "review", "{l}");
        assert_eq!(
            l["verdict"] == "fail",
            l["score"].as_f64().unwrap() as f32 >= hi
        );
    }
    assert_eq!(lines.last().unwrap()["summary"]["review"], 0);
}
