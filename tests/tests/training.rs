//! Training on generated data: learns, is deterministic, resumes, cancels, exports a model the
//! GPU engine runs with the same probabilities as burn, and evaluates.

use std::sync::atomic::AtomicBool;

use inspector::training::{self, BackendKind, Progress, TrainConfig};
use integration_tests::synthetic_dir;
use kernels::{Engine, GpuContext, Model};

/// burn's devices share global state (its RNG, the flex thread pool): run one training at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One training at a time (see [`SERIAL`]); a test that panicked does not stop the others.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `lite0-tiny` preset (pretrained backbone, small head) on `root`, writing `out`; the rest
/// at its defaults.
fn lite0_config(root: &std::path::Path, out: &std::path::Path) -> TrainConfig {
    let mut cfg = TrainConfig::new(root.to_owned(), out.to_owned());
    cfg.preset = "lite0-tiny".into();
    cfg
}

fn config(root: &std::path::Path, out: &std::path::Path, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(root.to_owned(), out.to_owned());
    cfg.preset = "tiny".into();
    cfg.epochs = epochs;
    cfg.batch_size = 8;
    cfg.lr = 0.05;
    cfg.optimizer = training::OptimizerKind::Momentum;
    cfg.backend = BackendKind::Cpu;
    cfg.patience = 0;
    cfg
}

/// Trains `cfg` to the end, logging each epoch and the time taken; returns the summary and how
/// many epochs were reported.
fn train_logged(cfg: &TrainConfig) -> (training::TrainSummary, usize) {
    let t = std::time::Instant::now();
    let mut epochs = 0;
    let summary = training::train(
        cfg,
        &mut |p| {
            if let Progress::Epoch(r) = p {
                epochs += 1;
                eprintln!(
                    "epoch {} loss {:.3} val acc {:.3} auroc {:?}",
                    r.epoch, r.train_loss, r.val_accuracy, r.val_auroc
                );
            }
        },
        &AtomicBool::new(false),
    )
    .expect("train");
    eprintln!("trained in {:?}: {summary:?}", t.elapsed());
    (summary, epochs)
}

#[test]
fn tiny_dataset_trains_well_above_chance_and_engine_agrees_with_burn() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 6, 11, false);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("m.safetensors");
    let (summary, epochs_seen) = train_logged(&config(data.path(), &out, 8));
    assert_eq!(epochs_seen, 8);
    assert!(
        summary.val_accuracy >= 0.8,
        "val accuracy {} (chance is 0.33)",
        summary.val_accuracy
    );
    assert!(summary.val_auroc.expect("both kinds") >= 0.9);
    assert_eq!(
        summary.val_miss_rate, 0.0,
        "threshold is chosen for at most 1% misses"
    );

    // The exported model (batch-norm folded) on the GPU engine vs the burn model with its
    // batch-norm, on the val images: same probabilities within 1e-4.
    let model = Model::load(&out).expect("load exported model");
    assert_eq!(model.spec.threshold, summary.threshold);
    assert_eq!(
        model.spec.training["summary"]["best_epoch"],
        summary.best_epoch
    );
    let max_diff = engine_vs_burn(&model, &out, data.path(), |_, _| {});
    eprintln!("max |engine − burn| = {max_diff:e}");
    assert!(max_diff <= 1e-4, "engine and burn disagree by {max_diff}");

    // eval through the engine gives the documented JSON keys and agrees with training's val.
    let report =
        inspector::evaluation::eval::evaluate(&out, data.path(), Some("val")).expect("eval");
    let json = serde_json::to_value(&report).expect("json");
    for key in [
        "images",
        "skipped",
        "accuracy",
        "macro_f1",
        "auroc",
        "threshold",
        "miss_rate",
        "false_reject_rate",
        "per_class",
        "confusion",
        "latency_ms_p50",
    ] {
        assert!(json.get(key).is_some(), "eval JSON lacks {key}: {json}");
    }
    assert_eq!(json["per_class"]["scratch"]["support"], 6);
    assert_eq!(
        json["confusion"]["labels"],
        serde_json::json!(["good", "scratch", "spot"])
    );
    assert!(
        (report.accuracy - summary.val_accuracy).abs() < 1e-9,
        "eval {} vs training val {}",
        report.accuracy,
        summary.val_accuracy
    );
}

#[test]
fn same_seed_same_model_and_resume_and_cancel() {
    let _serial = serial();
    let (data, _) = synthetic_dir(6, 2, 5, false);
    let dir = tempfile::tempdir().expect("tmp");
    let run = |name: &str, epochs: usize, resume: bool| {
        let out = dir.path().join(name);
        let mut cfg = config(data.path(), &out, epochs);
        cfg.resume = resume;
        let mut first = 0;
        let s = training::train(
            &cfg,
            &mut |p| {
                if let Progress::Started { first_epoch, .. } = p {
                    first = first_epoch;
                }
            },
            &AtomicBool::new(false),
        )
        .expect("train");
        (Model::load(&out).expect("load"), s, first)
    };
    let (a, _, _) = run("a.safetensors", 2, false);
    let (b, _, _) = run("b.safetensors", 2, false);
    assert_eq!(
        a.weights, b.weights,
        "the same seed must give the same model"
    );

    // Resume: 2 epochs done, ask for 3: starts at epoch 3 and keeps the history.
    std::fs::copy(
        dir.path().join("a.safetensors"),
        dir.path().join("c.safetensors"),
    )
    .expect("copy");
    let ckpt_a = training::checkpoint_dir(&dir.path().join("a.safetensors"));
    let ckpt_c = training::checkpoint_dir(&dir.path().join("c.safetensors"));
    std::fs::create_dir_all(&ckpt_c).expect("mkdir");
    for f in ["state.json", "last.safetensors", "best.safetensors"] {
        std::fs::copy(ckpt_a.join(f), ckpt_c.join(f)).expect("copy ckpt");
    }
    let (_, s, first) = run("c.safetensors", 3, true);
    assert_eq!(first, 3);
    assert_eq!(s.epochs_run, 3);

    // Cancel: stops before the first step and says how to resume.
    let cfg = config(data.path(), &dir.path().join("d.safetensors"), 2);
    let e = training::train(&cfg, &mut |_| {}, &AtomicBool::new(true)).expect_err("cancelled");
    assert!(e.downcast_ref::<training::Cancelled>().is_some(), "{e}");
    assert!(e.to_string().contains("--resume"));
}

/// The mask-trained max-score head (the default model's kind) on generated images with masks:
/// it learns, the GPU engine (global max pool) agrees with burn, and the heatmap points at the
/// defect: on most defective val images its hottest cell lies on or next to the mask.
#[test]
fn mask_supervised_head_learns_and_its_heatmap_finds_the_defect() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 6, 23, true);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("seg.safetensors");
    let mut cfg = config(data.path(), &out, 8);
    cfg.preset = "tiny-seg".into();
    cfg.optimizer = training::OptimizerKind::Adam;
    cfg.lr = 0.01;
    let summary = training::train(&cfg, &mut |_| {}, &AtomicBool::new(false)).expect("train");
    eprintln!("{summary:?}");
    assert!(
        summary.val_accuracy >= 0.8,
        "val accuracy {} (chance is 0.33)",
        summary.val_accuracy
    );
    assert!(summary.val_auroc.expect("both kinds") >= 0.9);

    let model = Model::load(&out).expect("load exported model");
    assert!(
        model
            .spec
            .layers
            .iter()
            .any(|l| matches!(l, kernels::Layer::GlobalMaxPool)),
        "tiny-seg ends in a global max pool"
    );
    let (mut on_defect, mut defective) = (0, 0);
    let max_diff = engine_vs_burn(&model, &out, data.path(), |s, inf| {
        if s.label == "good" {
            return;
        }
        defective += 1;
        let mask =
            inspector::data::dataset::decode_image(s.mask.as_deref().expect("mask")).expect("mask");
        let near = inspector::evaluation::eval::heatmap_hits_mask(&inf.heatmap, &mask)
            .expect("non-empty mask");
        on_defect += near as usize;
    });
    eprintln!("max |engine − burn| = {max_diff:e}; heatmap on the defect {on_defect}/{defective}");
    assert!(max_diff <= 1e-4, "engine and burn disagree by {max_diff}");
    assert!(
        on_defect * 10 >= defective * 8,
        "the heatmap's hottest cell is on the defect for only {on_defect} of {defective} images"
    );
}

/// Runs every val image of `data` through the GPU engine (the exported model, batch-norm folded)
/// and the burn model of the best checkpoint (with its batch-norm), calls `each` with the
/// engine's result, and returns the largest probability difference.
fn engine_vs_burn(
    model: &Model,
    out: &std::path::Path,
    data: &std::path::Path,
    mut each: impl FnMut(&inspector::data::dataset::Sample, &kernels::Inference),
) -> f32 {
    let device = burn::tensor::Device::flex();
    let burn_model = training::load_best(&model.spec, out, &device).expect("best checkpoint");
    let gpu = GpuContext::headless().expect("gpu");
    let mut engine =
        Engine::new(&gpu.device, &gpu.queue, model, 4, gpu.describe()).expect("engine");
    let ds = inspector::data::dataset::Dataset::open(data).expect("dataset");
    let mut max_diff = 0f32;
    for s in ds.split("val") {
        let img = inspector::data::dataset::decode_image(&s.path).expect("decode");
        let inf = engine.infer(&[img.frame()]).expect("infer").remove(0);
        let x: Vec<f32> = kernels::reference::preprocess(model, &img.frame())
            .expect("pre")
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let burn_p = training::predict(&burn_model, &device, &[x], &model.spec.input, 1)
            .expect("burn")
            .remove(0);
        for (a, b) in inf.probabilities.iter().zip(&burn_p) {
            max_diff = max_diff.max((a - b).abs());
        }
        each(&s, &inf);
    }
    max_diff
}

/// The default kind of model: the pretrained backbone (frozen) with a per-position head trained
/// on features the engine extracted once. It learns the synthetic defects, its heatmap finds
/// them, and the exported model gives the same probabilities in the engine and in burn.
#[test]
fn backbone_head_learns_from_masks_and_engine_agrees_with_burn() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 6, 31, true);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("lite0.safetensors");
    let cfg = lite0_config(data.path(), &out);
    let (summary, epochs) = train_logged(&cfg);
    assert_eq!(epochs, cfg.epochs);
    assert!(summary.val_auroc.expect("both kinds") >= 0.9, "{summary:?}");
    assert!(summary.val_accuracy >= 0.8, "{summary:?}");
    let model = Model::load(&out).expect("load exported model");
    assert!(
        model
            .spec
            .layers
            .iter()
            .any(|l| matches!(l, kernels::Layer::DefectMaxPool)),
        "a backbone model ends in the defect max pool"
    );
    assert_eq!(model.spec.input.resize, kernels::Resize::Fit);

    // Engine vs burn (from the exported file) on every val image, letterbox padding included.
    let device = burn::tensor::Device::flex();
    let burn_model =
        inspector::training::nn::BurnModel::from_model(&model, &device).expect("burn model");
    let gpu = GpuContext::headless().expect("gpu");
    let mut engine =
        Engine::new(&gpu.device, &gpu.queue, &model, 4, gpu.describe()).expect("engine");
    let ds = inspector::data::dataset::Dataset::open(data.path()).expect("dataset");
    let (mut max_diff, mut on_defect, mut defective) = (0f32, 0, 0);
    let inp = &model.spec.input;
    for s in ds.split("val") {
        let img = inspector::data::dataset::decode_image(&s.path).expect("decode");
        let inf = engine.infer(&[img.frame()]).expect("infer").remove(0);
        let x: Vec<f32> = kernels::reference::preprocess(&model, &img.frame())
            .expect("pre")
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let xt = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(x, [1, 3, inp.height as usize, inp.width as usize]),
            &device,
        );
        let content = [inp.content_size(img.width, img.height)];
        let logits = burn_model.forward_in(xt, Some(&content)).0;
        let p: Vec<f32> = burn::tensor::activation::softmax(logits, 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("probs");
        for (a, b) in inf.probabilities.iter().zip(&p) {
            max_diff = max_diff.max((a - b).abs());
        }
        if s.label != "good" {
            defective += 1;
            let mask = inspector::data::dataset::decode_image(s.mask.as_deref().expect("mask"))
                .expect("mask");
            on_defect += inspector::evaluation::eval::heatmap_hits_mask(&inf.heatmap, &mask)
                .expect("non-empty mask") as usize;
        }
    }
    eprintln!("max |engine − burn| = {max_diff:e}; heatmap on the defect {on_defect}/{defective}");
    assert!(max_diff <= 1e-4, "engine and burn disagree by {max_diff}");
    assert!(
        on_defect * 10 >= defective * 8,
        "the heatmap's hottest cell is on the defect for only {on_defect} of {defective} images"
    );

    // eval through the engine: per-class AUROC, per-part figures and the disagreements.
    let report =
        inspector::evaluation::eval::evaluate(&out, data.path(), Some("val")).expect("eval");
    let json = serde_json::to_value(&report).expect("json");
    assert!(
        json["per_class"]["scratch"]["auroc"].as_f64().is_some(),
        "{json}"
    );
    assert!(json["per_class"]["good"].get("auroc").is_none(), "{json}");
    assert_eq!(json["disagreements"].as_array().map(Vec::len), Some(10));
    assert!(json["parts"]["auroc"].as_f64().is_some());
    assert!((report.accuracy - summary.val_accuracy).abs() < 0.05);
}

/// The exported model evaluated on val through the engine: its AUROC within 1e-3 and its
/// accuracy within 0.03 of training's val figures. Returns the report and that AUROC.
fn engine_eval_agrees_with_training(
    out: &std::path::Path,
    data: &std::path::Path,
    summary: &training::TrainSummary,
) -> (inspector::evaluation::eval::EvalReport, f64) {
    let report = inspector::evaluation::eval::evaluate(out, data, Some("val")).expect("eval");
    let (a, b) = (
        report.auroc.expect("auroc"),
        summary.val_auroc.expect("auroc"),
    );
    assert!((a - b).abs() < 1e-3, "engine AUROC {a} vs training {b}");
    assert!((report.accuracy - summary.val_accuracy).abs() < 0.03);
    (report, a)
}

/// Issue 21: the image-level head forced on images without masks: the summary lists every
/// candidate and keeps an image head, the exported model ends in a global pool + linear (no
/// defect max pool), and the engine's eval of it agrees with training's val figures, review
/// band included.
#[test]
fn image_head_exports_a_pooled_model_and_the_engine_agrees_with_training() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 12, 41, false);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("image.safetensors");
    let mut cfg = lite0_config(data.path(), &out);
    cfg.head = inspector::training::head_select::HeadKind::Image;
    let (summary, _) = train_logged(&cfg);
    let choice = summary
        .head
        .as_ref()
        .expect("a backbone run says how its head was chosen");
    assert_eq!(choice.kept().head, "image", "{}", choice.table());
    assert!(choice.candidates.iter().any(|c| c.head == "position"));
    assert!(choice.kept().pool.expect("pooled").exportable());
    let model = Model::load(&out).expect("load exported model");
    let tail: Vec<&str> = model
        .spec
        .layers
        .iter()
        .rev()
        .take(2)
        .map(|l| l.kind())
        .collect();
    assert!(
        tail == ["linear", "global_avg_pool"] || tail == ["linear", "global_max_pool"],
        "{tail:?}"
    );
    assert!(
        !model
            .spec
            .layers
            .iter()
            .any(|l| matches!(l, kernels::Layer::DefectMaxPool))
    );
    // 24 defective and 12 good val images: enough for a band.
    assert!(
        summary.pass_threshold.is_some(),
        "{}",
        summary.threshold_rule
    );
    assert_eq!(model.spec.pass_threshold, summary.pass_threshold);
    let (report, a) = engine_eval_agrees_with_training(&out, data.path(), &summary);
    assert!((report.review_share - summary.val_review_share).abs() < 0.03);
    assert!((report.auto_pass_miss_rate - summary.val_miss_rate).abs() < 0.05);
    assert!(a >= 0.8, "the image head learned nothing: AUROC {a}");
}

/// Issue 15: a backbone preset cancelled after epoch 2 keeps that epoch, and a resumed run goes
/// on from its head's weights with the data in the same order: its first step (epoch 3) sees
/// exactly the loss an uninterrupted run sees there, and the history runs 1..=epochs.
#[test]
fn backbone_head_resumes_from_the_last_finished_epoch_after_cancel() {
    let _serial = serial();
    let (data, _) = synthetic_dir(8, 4, 17, true);
    let dir = tempfile::tempdir().expect("tmp");
    let cfg_for = |name: &str| {
        let mut cfg = TrainConfig::new(data.path().to_owned(), dir.path().join(name));
        cfg.preset = "lite0-tiny".into();
        cfg.epochs = 4;
        cfg
    };
    // (epoch, step, loss) of every step, the first epoch reported, the summary or error.
    type Steps = Vec<(usize, usize, f64)>;
    let run = |cfg: &TrainConfig, cancel_after: Option<usize>| {
        let cancel = AtomicBool::new(false);
        let mut steps: Steps = Vec::new();
        let mut first = 0;
        let r = training::train(
            cfg,
            &mut |p| match p {
                Progress::Started { first_epoch, .. } => first = first_epoch,
                Progress::Step {
                    epoch, step, loss, ..
                } if epoch > 0 => steps.push((epoch, step, loss)),
                Progress::Epoch(r) if Some(r.epoch) == cancel_after => {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst)
                }
                _ => {}
            },
            &cancel,
        );
        (r, steps, first)
    };
    let whole = cfg_for("whole.safetensors");
    let (r, whole_steps, _) = run(&whole, None);
    r.expect("uninterrupted run");

    let cut = cfg_for("cut.safetensors");
    let (r, _, _) = run(&cut, Some(2));
    let e = r.expect_err("cancelled");
    assert!(e.downcast_ref::<training::Cancelled>().is_some(), "{e:#}");
    assert_eq!(training::checkpoint_epoch(&cut.out), Some(2));

    let mut resumed = cut.clone();
    resumed.resume = true;
    let (r, steps, first) = run(&resumed, None);
    let summary = r.expect("resumed run");
    assert_eq!(first, 3);
    assert_eq!(steps.first().map(|s| (s.0, s.1)), Some((3, 1)), "{steps:?}");
    let want = whole_steps
        .iter()
        .find(|s| (s.0, s.1) == (3, 1))
        .expect("epoch 3 of the whole run")
        .2;
    let got = steps[0].2;
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "the resumed epoch 3 starts from other weights: loss {got} vs {want} uninterrupted \
         (epoch 1 started at {})",
        whole_steps[0].2
    );
    assert_eq!(summary.epochs_run, 4);
    Model::load(&resumed.out).expect("the resumed run exports its model");

    // A checkpoint of another preset is refused, not silently used.
    let mut other = resumed.clone();
    other.preset = "lite0-stretch".into();
    let e = training::train(&other, &mut |_| {}, &AtomicBool::new(false)).expect_err("refused");
    assert!(e.to_string().contains("another dataset or preset"), "{e:#}");
}

/// Colour images, images smaller than the backbone's stride and a dataset without any mask
/// all train (defective images then train through their most defect-like position).
#[test]
fn backbone_head_trains_on_colour_tiny_and_maskless_images() {
    let _serial = serial();
    let (data, rows) = synthetic_dir(12, 4, 47, false);
    for (i, row) in rows.iter().skip(1).enumerate() {
        let rel = row.split(',').next().expect("path");
        let path = data.path().join(rel);
        let img = image::open(&path).expect("open");
        let img = if i % 3 == 0 {
            // Smaller than one backbone cell (stride 16).
            img.resize_exact(12, 10, image::imageops::FilterType::Triangle)
        } else {
            img
        };
        let rgb = image::DynamicImage::ImageRgb8(img.to_rgb8());
        rgb.save(&path).expect("save rgb");
    }
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("lite0.safetensors");
    let cfg = lite0_config(data.path(), &out);
    let summary = training::train(&cfg, &mut |_| {}, &AtomicBool::new(false)).expect("train");
    eprintln!("{summary:?}");
    assert!(
        summary.val_auroc.expect("both kinds") >= 0.75,
        "{summary:?}"
    );
    let model = Model::load(&out).expect("model");
    assert_eq!(model.spec.input.channels, 3);
}

/// Features are cached per image and network: a second run extracts nothing, a changed image
/// is extracted again, and another preset (input geometry) or backbone file misses the cache.
#[test]
fn feature_cache_is_reused_and_invalidated_by_image_preset_and_backbone() {
    let _serial = serial();
    let cache = tempfile::tempdir().expect("tmp");
    unsafe_env_set("DEFECT_INSPECTOR_CACHE", cache.path());
    let (data, rows) = synthetic_dir(6, 3, 53, false);
    let images = rows.len() - 1;
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("m.safetensors");
    let run = |preset: &str| {
        let mut cfg = TrainConfig::new(data.path().to_owned(), out.clone());
        cfg.preset = preset.into();
        cfg.epochs = 1;
        training::train(&cfg, &mut |_| {}, &AtomicBool::new(false)).expect("train");
        let m = Model::load(&out).expect("model");
        (
            m.spec.training["features_extracted"]
                .as_u64()
                .expect("extracted"),
            m.spec.training["features_cached"].as_u64().expect("cached"),
        )
    };
    assert_eq!(run("lite0-tiny"), (images as u64, 0));
    assert_eq!(run("lite0-tiny"), (0, images as u64));
    // Rewrite one image (new content and modification time).
    let first = rows[1].split(',').next().expect("path");
    std::thread::sleep(std::time::Duration::from_millis(20));
    integration_tests::write_synthetic(&data.path().join(first), "good", 44, 40, 999);
    assert_eq!(run("lite0-tiny"), (1, images as u64 - 1));
    // Another input geometry.
    assert_eq!(run("lite0-stretch").0, images as u64);
    // Another backbone file (the same weights with other metadata bytes).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bytes =
        std::fs::read(root.join("../assets/backbones/efficientnet-lite0-s16.safetensors"))
            .expect("asset");
    let header = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    // Flip the case of a metadata letter ("Apache-2.0"): still valid JSON, other bytes.
    let h = &mut bytes[8..8 + header];
    if let Some(i) = h.iter().position(|&b| b == b'A') {
        h[i] = b'a';
    }
    let other = cache.path().join("other-backbone.safetensors");
    std::fs::write(&other, &bytes).expect("write");
    unsafe_env_set("DEFECT_INSPECTOR_BACKBONE", &other);
    let changed = run("lite0-tiny");
    unsafe_env_remove("DEFECT_INSPECTOR_BACKBONE");
    unsafe_env_remove("DEFECT_INSPECTOR_CACHE");
    assert_eq!(
        changed.0, images as u64,
        "another backbone file must miss the cache"
    );
}

#[allow(unsafe_code)]
fn unsafe_env_set(key: &str, value: &std::path::Path) {
    // SAFETY: the tests that read these variables (training) hold SERIAL while they run.
    unsafe { std::env::set_var(key, value) }
}

#[allow(unsafe_code)]
fn unsafe_env_remove(key: &str) {
    // SAFETY: as above.
    unsafe { std::env::remove_var(key) }
}

/// Anomaly mode on generated data: trained from the good images only (the defect images of the
/// training split are ignored), it ranks the painted-in defects above the good images, the
/// engine's heatmap peaks on them, `eval` runs it unchanged, and bad inputs stop with a clear
/// message.
#[test]
fn anomaly_model_from_good_images_ranks_painted_defects_above_good_ones() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 6, 71, true);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("anomaly.safetensors");
    let mut cfg = lite0_config(data.path(), &out);
    cfg.mode = training::TrainMode::Anomaly;
    let mut phases = std::collections::BTreeSet::new();
    let summary = training::train(
        &cfg,
        &mut |p| {
            if let Progress::Step { epoch, .. } = p {
                phases.insert(epoch);
            }
        },
        &AtomicBool::new(false),
    )
    .expect("anomaly training");
    eprintln!("{summary:?}");
    assert_eq!(phases.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(summary.train_images, 16, "only the good training images");
    assert_eq!(summary.ignored_defects, 32);
    assert!(summary.threshold_rule.contains("miss rate"), "{summary:?}");
    assert!(
        summary.val_auroc.expect("good and defective val") >= 0.9,
        "{summary:?}"
    );
    let m = summary.bank_entries.expect("bank");
    assert!(m >= 1 && m < 16 * 16, "a coreset, not every position: {m}");

    let model = Model::load(&out).expect("load");
    assert!(model.spec.is_anomaly());
    assert_eq!(model.spec.classes, ["good", "anomaly"]);
    // `eval` runs it unchanged: defect labels count as the anomaly class.
    let report =
        inspector::evaluation::eval::evaluate(&out, data.path(), Some("val")).expect("eval");
    assert_eq!(report.images, 18);
    assert!(report.auroc.expect("auroc") >= 0.9, "{report:?}");
    // Training scores val on the CPU from cached features; the engine reproduces its figures.
    assert!((report.auroc.expect("auroc") - summary.val_auroc.expect("auroc")).abs() < 1e-9);
    assert_eq!(report.miss_rate, summary.val_miss_rate);
    assert_eq!(report.false_reject_rate, summary.val_false_reject_rate);
    assert!(
        report.heatmap_on_defect.expect("masks") >= 0.6,
        "the score map peaks on the painted defect: {report:?}"
    );

    // Good val images only: the threshold comes from their false-reject target.
    let good_only = tempfile::tempdir().expect("tmp");
    let rows: Vec<String> = std::fs::read_to_string(data.path().join("manifest.csv"))
        .expect("manifest")
        .lines()
        .filter(|l| l.starts_with("path") || l.contains(",good,"))
        .map(str::to_owned)
        .collect();
    for r in &rows[1..] {
        let rel = r.split(',').next().expect("path");
        std::fs::create_dir_all(good_only.path().join("good")).expect("dir");
        std::fs::copy(data.path().join(rel), good_only.path().join(rel)).expect("copy");
    }
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut f: Vec<&str> = r.split(',').collect();
            if f.len() > 3 && f[0] != "path" {
                f[3] = "";
            }
            f.join(",")
        })
        .collect();
    std::fs::write(
        good_only.path().join("manifest.csv"),
        rows.join("\n") + "\n",
    )
    .expect("w");
    let mut g = cfg.clone();
    g.data = good_only.path().to_owned();
    g.out = out_dir.path().join("good-only.safetensors");
    let s = training::train(&g, &mut |_| {}, &AtomicBool::new(false)).expect("good only");
    assert!(
        s.threshold_rule.contains("false-reject rate ≤ 1.0 %"),
        "{s:?}"
    );
    assert!(s.val_auroc.is_none());
    assert_eq!(
        s.val_false_reject_rate, 0.0,
        "6 good val images at a 1 % target: none rejected"
    );

    // Bad input: too few good images, a bank over the budget, a classifier preset.
    let few = tempfile::tempdir().expect("tmp");
    integration_tests::synthetic_manifest(few.path(), 5, 2, 3);
    let mut f = cfg.clone();
    f.data = few.path().to_owned();
    let e = training::train(&f, &mut |_| {}, &AtomicBool::new(false))
        .expect_err("5 good images")
        .to_string();
    assert!(
        e.contains("at least 10 readable good training images"),
        "{e}"
    );
    let mut big = cfg.clone();
    big.bank = Some(100_000);
    let e = format!(
        "{:#}",
        training::train(&big, &mut |_| {}, &AtomicBool::new(false)).expect_err("budget")
    );
    assert!(
        e.contains("over the 64 MiB budget") && e.contains("--bank 72315"),
        "{e}"
    );
    let mut classic = cfg.clone();
    classic.preset = "tiny".into();
    let e = format!(
        "{:#}",
        training::train(&classic, &mut |_| {}, &AtomicBool::new(false)).expect_err("preset")
    );
    assert!(e.contains("pretrained-backbone preset"), "{e}");
}

/// `--members 2`: two position heads averaged into one exported head twice as wide (232 → 256
/// → classes); the engine runs it and its eval agrees with training's val figures.
#[test]
fn averaged_position_heads_export_one_wider_head_the_engine_agrees_with() {
    let _serial = serial();
    let (data, _) = synthetic_dir(16, 12, 43, true);
    let out_dir = tempfile::tempdir().expect("tmp");
    let out = out_dir.path().join("members.safetensors");
    let mut cfg = lite0_config(data.path(), &out);
    cfg.head = inspector::training::head_select::HeadKind::Position;
    cfg.members = 2;
    let (summary, _) = train_logged(&cfg);
    let model = Model::load(&out).expect("load exported model");
    // The head: the convolutions after the local features.
    let lf = model
        .spec
        .layers
        .iter()
        .position(|l| matches!(l, kernels::Layer::LocalFeatures { .. }))
        .expect("local features");
    let widths: Vec<(u32, u32)> = model.spec.layers[lf..]
        .iter()
        .filter_map(|l| match l {
            kernels::Layer::Conv2d {
                in_channels,
                out_channels,
                ..
            } => Some((*in_channels, *out_channels)),
            _ => None,
        })
        .collect();
    let (hidden, k) = (
        2 * inspector::training::nn::HIDDEN,
        model.spec.classes.len() as u32,
    );
    assert_eq!(widths, [(232, hidden), (hidden, k)]);
    let (_, a) = engine_eval_agrees_with_training(&out, data.path(), &summary);
    assert!(a >= 0.8, "the averaged head learned nothing: AUROC {a}");
}
