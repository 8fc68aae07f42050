//! The capture → inference pipeline on the real engine: a folder replays to its end with one
//! verdict per readable image; a damaged model is refused mid-stream without stopping it; a
//! region of interest outside the frame is reported and the frame is still inspected; a pause
//! lets the frames already taken land (each once), then nothing more until resumed; a model
//! with a review band decides PASS / REVIEW / FAIL, and the station can switch the band off.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inspector::station::pipeline::{self, Event, Pipeline, PipelineOptions, SourceStatus};
use inspector::station::source::SourceSpec;

fn default_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/default.safetensors")
}

/// The pipeline over `source` with the default model on a headless device, no sink.
fn start(source: SourceSpec, options: PipelineOptions) -> Pipeline {
    start_with(&default_model(), source, options)
}

/// The pipeline over `source` with the model file `model`.
fn start_with(model: &Path, source: SourceSpec, options: PipelineOptions) -> Pipeline {
    let gpu = kernels::GpuContext::headless().unwrap();
    let model = pipeline::load_model(model).unwrap();
    let label = gpu.describe();
    Pipeline::start(
        gpu.device,
        gpu.queue,
        label,
        model,
        source,
        options,
        None,
        Arc::new(|| {}),
    )
    .unwrap()
}

fn roi(x: u32, y: u32, width: u32, height: u32) -> kernels::Roi {
    kernels::Roi {
        x,
        y,
        width,
        height,
    }
}

fn run_to_end(p: &Pipeline) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(e) = p.next_event(Duration::from_secs(120)) {
        let end = matches!(
            e,
            Event::Source(SourceStatus::Ended(_) | SourceStatus::Failed(_))
        );
        events.push(e);
        if end {
            break;
        }
    }
    events
}

#[test]
fn folder_replay_gives_one_verdict_per_readable_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut readable = Vec::new();
    for (i, (w, h)) in [(40u32, 30u32), (333, 201), (128, 128), (17, 260), (64, 64)]
        .iter()
        .enumerate()
    {
        let name = format!("img{i}.png");
        image::GrayImage::from_fn(*w, *h, |x, y| image::Luma([((x ^ y) & 0xff) as u8]))
            .save(dir.path().join(&name))
            .unwrap();
        readable.push(name);
    }
    std::fs::write(
        dir.path().join("zz-corrupt.png"),
        b"\x89PNG\r\n\x1a\nbroken",
    )
    .unwrap();
    let p = start(
        SourceSpec::Folder {
            dir: dir.path().to_path_buf(),
            looping: false,
        },
        PipelineOptions {
            roi: Some(roi(10, 5, 50, 50)),
            ..PipelineOptions::default()
        },
    );
    let events = run_to_end(&p);
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect();
    let origins: Vec<_> = verdicts.iter().map(|v| v.origin.clone()).collect();
    assert_eq!(origins, readable);
    for v in &verdicts {
        let sum: f32 = v.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4);
        assert_eq!(v.fail(), v.score >= v.threshold);
        assert!(v.latency_ms >= v.engine_ms);
        assert!(v.roi.x + v.roi.width <= v.image.width && v.roi.y + v.roi.height <= v.image.height);
    }
    // The 17×260 frame cannot hold an ROI starting at x = 10 with width 50: clipped to 7 wide.
    assert_eq!(verdicts[3].roi.width, 7);
    let unreadable: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Unreadable { origin, .. } => Some(origin.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(unreadable, ["zz-corrupt.png"]);
    let c = p.counters();
    assert_eq!((c.inspected, c.unreadable), (5, 1));
    assert_eq!(c.pass + c.review + c.fail, 5);
}

#[test]
fn damaged_model_is_refused_mid_stream_and_inspection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let id = pipeline::load_model(&default_model()).unwrap().1.id;
    let p = start(
        SourceSpec::Synthetic {
            size: (96, 80),
            seed: 3,
        },
        PipelineOptions {
            limit: Some(12),
            roi: Some(roi(500, 500, 10, 10)),
            ..PipelineOptions::default()
        },
    );
    p.load_model(bad.clone());
    let events = run_to_end(&p);
    let rejected = events
        .iter()
        .any(|e| matches!(e, Event::ModelRejected(m) if m.contains("bad.safetensors")));
    assert!(rejected, "{events:?}");
    // The ROI outside the frame is refused, said once, and the previous one (none: the
    // whole frame) comes back.
    let refused: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::RoiRefused { roi, width: 96, height: 80, kept: None, .. } if roi.x == 500))
        .collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 12);
    assert!(verdicts.iter().all(|v| v.model_id == id));
    // Nothing was inspected with the out-of-frame ROI: the whole frame, as before it.
    assert!(
        verdicts
            .iter()
            .all(|v| v.roi.width == 96 && v.roi.height == 80)
    );
}

/// The station hot-swaps between the two kinds of model: a classifier, then an anomaly model
/// (memory bank), then the classifier again, without stopping; the anomaly model's verdicts name
/// its classes and carry its score map.
#[test]
fn classifier_and_anomaly_models_hot_swap_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let anomaly = dir.path().join("anomaly.safetensors");
    inspector::bench::anomaly_model(300)
        .unwrap()
        .save(&anomaly)
        .unwrap();
    let classifier = pipeline::load_model(&default_model()).unwrap().1;
    let (classifier_id, classifier_classes) = (classifier.id, classifier.classes);
    let anomaly_id = pipeline::load_model(&anomaly).unwrap().1.id;
    let p = start(
        SourceSpec::Synthetic {
            size: (120, 90),
            seed: 5,
        },
        PipelineOptions {
            limit: Some(9),
            ..PipelineOptions::default()
        },
    );
    let mut events = Vec::new();
    let mut swapped = 0;
    while let Some(e) = p.next_event(Duration::from_secs(120)) {
        let end = matches!(
            e,
            Event::Source(SourceStatus::Ended(_) | SourceStatus::Failed(_))
        );
        if let Event::Verdict(v) = &e {
            // After the 3rd and the 6th verdict, swap.
            if v.seq == 3 && swapped == 0 {
                p.load_model(anomaly.clone());
                swapped = 1;
            } else if v.model_id == anomaly_id && swapped == 1 {
                p.load_model(default_model());
                swapped = 2;
            }
        }
        events.push(e);
        if end {
            break;
        }
    }
    let loaded: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ModelLoaded(m) => Some(m.id.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        loaded.contains(&anomaly_id.as_str()) && loaded.last() == Some(&classifier_id.as_str()),
        "{loaded:?}"
    );
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 9);
    let by_anomaly: Vec<_> = verdicts
        .iter()
        .filter(|v| v.model_id == anomaly_id)
        .collect();
    assert!(
        !by_anomaly.is_empty(),
        "no frame went through the anomaly model"
    );
    for v in &by_anomaly {
        assert!(v.class == "good" || v.class == "anomaly", "{}", v.class);
        assert_eq!(v.fail(), v.class == "anomaly");
        assert_eq!(v.probabilities.len(), 2);
        assert!(!v.heatmap.values.is_empty() && v.heatmap.values.iter().all(|x| x.is_finite()));
    }
    for v in verdicts.iter().filter(|v| v.model_id == classifier_id) {
        assert!(classifier_classes.contains(&v.class), "{}", v.class);
    }
}

#[test]
fn pause_lets_the_frames_in_flight_land_then_nothing_more() {
    // Unpaced synthetic frames keep the queue full, so a pause always finds frames in flight.
    let p = start(
        SourceSpec::Synthetic {
            size: (96, 80),
            seed: 3,
        },
        PipelineOptions {
            fps: 0.0,
            lossless_events: true,
            ..PipelineOptions::default()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while p.counters().inspected < 3 {
        assert!(std::time::Instant::now() < deadline, "no verdicts");
        while p.next_event(Duration::from_millis(50)).is_some() {}
    }
    p.set_paused(true);
    let at_pause = p.counters();
    assert!(
        at_pause.in_flight >= 1,
        "an unpaced source has frames queued: {at_pause:?}"
    );
    // The frames taken before the pause are judged, each once.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let drained = loop {
        let c = p.counters();
        if c.in_flight == 0 {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "frames stay in flight: {c:?}"
        );
        while p.next_event(Duration::from_millis(50)).is_some() {}
    };
    assert!(drained.inspected > at_pause.inspected);
    assert!(drained.inspected <= at_pause.inspected + at_pause.in_flight);
    // Then nothing more while paused.
    std::thread::sleep(Duration::from_millis(800));
    let later = p.counters();
    assert_eq!(
        later.inspected, drained.inspected,
        "inspection went on while paused"
    );
    assert_eq!(later.in_flight, 0);
    // Resume: inspection goes on.
    p.set_paused(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while p.counters().inspected <= later.inspected {
        assert!(
            std::time::Instant::now() < deadline,
            "resume did not restart inspection"
        );
        while p.next_event(Duration::from_millis(50)).is_some() {}
    }
}

/// The demo images (no masks) copied into one folder.
fn demo_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/magnetic-tile-demo");
    for class in std::fs::read_dir(&root).unwrap().flatten() {
        let imgs = class.path().join("Imgs");
        let Ok(files) = std::fs::read_dir(&imgs) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".jpg") {
                std::fs::copy(f.path(), dir.path().join(&name)).unwrap();
            }
        }
    }
    dir
}

fn verdicts_of(p: &Pipeline) -> Vec<Box<pipeline::Verdict>> {
    run_to_end(p)
        .into_iter()
        .filter_map(|e| match e {
            Event::Verdict(v) => Some(v),
            _ => None,
        })
        .collect()
}

#[test]
fn a_review_band_decides_three_ways_and_can_be_switched_off() {
    let images = demo_folder();
    let folder = || SourceSpec::Folder {
        dir: images.path().to_path_buf(),
        looping: false,
    };
    // The default model has no band: two-way.
    let two_way = verdicts_of(&start(folder(), PipelineOptions::default()));
    assert!(two_way.len() >= 20, "{} demo verdicts", two_way.len());
    assert!(
        two_way
            .iter()
            .all(|v| v.pass_threshold.is_none() && v.decision != kernels::Decision::Review)
    );
    // The same model with a band between the scores' lower and upper thirds.
    let mut scores: Vec<f32> = two_way.iter().map(|v| v.score).collect();
    scores.sort_by(f32::total_cmp);
    let (lo, hi) = (scores[scores.len() / 3], scores[2 * scores.len() / 3]);
    assert!(lo < hi, "the demo scores do not spread: {scores:?}");
    let mut model = kernels::Model::load(&default_model()).unwrap();
    model.spec.pass_threshold = Some(lo);
    model.spec.threshold = hi;
    let model_dir = tempfile::tempdir().unwrap();
    let banded = model_dir.path().join("banded.safetensors");
    model.save(&banded).unwrap();
    let p = start_with(&banded, folder(), PipelineOptions::default());
    let three_way = verdicts_of(&p);
    assert_eq!(three_way.len(), two_way.len());
    let mut seen = std::collections::HashMap::new();
    for v in &three_way {
        let want = if v.score >= hi {
            kernels::Decision::Fail
        } else if v.score >= lo {
            kernels::Decision::Review
        } else {
            kernels::Decision::Pass
        };
        assert_eq!(v.decision, want, "{} scored {}", v.origin, v.score);
        assert_eq!((v.pass_threshold, v.threshold), (Some(lo), hi));
        *seen.entry(v.decision).or_insert(0u64) += 1;
    }
    let c = p.counters();
    assert_eq!(
        (c.pass, c.review, c.fail),
        (
            seen.get(&kernels::Decision::Pass).copied().unwrap_or(0),
            seen.get(&kernels::Decision::Review).copied().unwrap_or(0),
            seen.get(&kernels::Decision::Fail).copied().unwrap_or(0),
        )
    );
    assert!(c.review > 0 && c.pass > 0 && c.fail > 0, "{c:?}");
    // REVIEW parts sit with the rejects (a person must find them), with their word.
    assert!(c.last_rejects.iter().any(|v| v.word() == "review"));
    // The band switched off at the station: two-way at the FAIL threshold, same model.
    let off = verdicts_of(&start_with(
        &banded,
        folder(),
        PipelineOptions {
            review_band: false,
            ..PipelineOptions::default()
        },
    ));
    for v in &off {
        assert_eq!(v.pass_threshold, None);
        assert_eq!(v.fail(), v.score >= hi);
        assert_ne!(v.decision, kernels::Decision::Review);
    }
}
