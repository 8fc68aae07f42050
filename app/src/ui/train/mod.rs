//! The Train tab: choose data and settings, start and cancel training (in a worker; the same
//! `training::train` as the command line), live loss and accuracy curves with ETA, then the val
//! confusion matrix, per-class metrics, mispredicted images, threshold tuning on the val score
//! histograms, and model versions (save, list, compare, activate).
//!
//! - [`view`]: the tab's state; `form`: the settings form; `run`: the worker, progress and
//!   curves; `results`: the val evaluation, threshold tuning and model versions; `tab`: the
//!   tab drawn from those parts.
//!
//! Lowest first: `view` ← `form` ← `run`, `view` ← `results`, and `tab` on top; this file
//! declares them and re-exports the tab's public items.

mod form;
mod results;
mod run;
mod tab;
pub mod view;

pub use results::threshold_plot_id;
pub use run::finished_line;
pub use run::{accuracy_plot_id, loss_plot_id};
pub(in crate::ui) use tab::show;
pub use view::*;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::form::*;
    use super::run::*;
    use super::view::*;
    use crate::training::{self, BackendKind, EpochRecord, TrainConfig};
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn step(epoch: usize, step: usize, steps: usize) -> training::Progress {
        training::Progress::Step {
            epoch,
            step,
            steps,
            loss: 0.5,
        }
    }

    fn started(first_epoch: usize) -> training::Progress {
        training::Progress::Started {
            train: 10,
            val: 4,
            skipped: Vec::new(),
            backend: "cpu".into(),
            first_epoch,
        }
    }

    /// The ETA moves with the steps of an epoch, not only when an epoch ends.
    #[test]
    fn the_eta_updates_within_an_epoch() {
        let mut t = TrainView::default();
        t.run = Some(TrainConfig::new("d".into(), "m".into()));
        t.run.as_mut().unwrap().epochs = 2;
        let t0 = Instant::now();
        t.on_progress(started(1), t0);
        t.on_progress(step(1, 1, 10), t0);
        assert_eq!(t.eta_s, None, "no rate from one step");
        // 0.05 of the run in 1 s: 0.9 left takes 18 s.
        t.on_progress(step(1, 2, 10), t0 + Duration::from_secs(1));
        let first = t.eta_s.unwrap();
        assert!((first - 18.0).abs() < 1e-6, "{first}");
        assert!(t.status.contains("ETA 18 s"), "{}", t.status);
        // Later in the same epoch, slower: 0.25 in 5 s, 0.7 left = 14 s.
        t.on_progress(step(1, 6, 10), t0 + Duration::from_secs(5));
        let later = t.eta_s.unwrap();
        assert!((later - 14.0).abs() < 1e-6, "{later}");
        assert!(t.status.contains("ETA 14 s"), "{}", t.status);
        // Feature extraction (epoch 0 of a backbone preset) has its own ETA.
        let mut t = TrainView::default();
        t.on_progress(step(0, 10, 100), t0);
        t.on_progress(step(0, 30, 100), t0 + Duration::from_secs(2));
        assert!((t.eta_s.unwrap() - 7.0).abs() < 1e-6);
        assert!(
            t.status
                .starts_with("extracting backbone features: 30/100 images, ETA 7 s"),
            "{}",
            t.status
        );
        // The first epoch step starts a new measurement.
        t.on_progress(step(1, 1, 5), t0 + Duration::from_secs(3));
        assert_eq!(t.eta_s, None);
    }

    /// The time left includes the final evaluation through the engine: never "0 s" while it
    /// runs, estimated from the feature extraction's rate, then from its own progress.
    #[test]
    fn the_eta_includes_the_final_evaluation() {
        let mut t = TrainView::default();
        t.run = Some(TrainConfig::new("d".into(), "m".into()));
        t.run.as_mut().unwrap().epochs = 1;
        let t0 = Instant::now();
        t.on_progress(started(1), t0); // 4 val images
        // Extraction: 20 images in 2 s = 0.1 s per image.
        t.on_progress(step(0, 10, 100), t0);
        t.on_progress(step(0, 30, 100), t0 + Duration::from_secs(2));
        // Epoch 1: half of it in 1 s → 0.8 s of training left + 4 × 0.1 s of evaluation.
        t.on_progress(step(1, 1, 10), t0 + Duration::from_secs(3));
        t.on_progress(step(1, 6, 10), t0 + Duration::from_secs(4));
        assert!((t.eta_s.unwrap() - 1.2).abs() < 1e-6, "{:?}", t.eta_s);
        // The last epoch ends: the evaluation is what is left, not 0 s.
        let rec = EpochRecord {
            epoch: 1,
            train_loss: 0.1,
            train_accuracy: 0.9,
            val_accuracy: 0.8,
            val_macro_f1: 0.8,
            val_auroc: None,
            lr: 0.01,
            elapsed_s: 1.0,
            eta_s: 0.0,
        };
        t.on_progress(training::Progress::Epoch(rec), t0 + Duration::from_secs(5));
        assert!((t.eta_s.unwrap() - 0.4).abs() < 1e-6, "{:?}", t.eta_s);
        // Its own progress: 1 of 4 in 10 s (slower than estimated) → 30 s left.
        t.on_evaluating(0, 4, t0 + Duration::from_secs(5));
        t.on_evaluating(1, 4, t0 + Duration::from_secs(15));
        assert!((t.eta_s.unwrap() - 30.0).abs() < 1e-6, "{:?}", t.eta_s);
        assert!(
            t.status.starts_with(
                "evaluating on val through the inspection engine: 1/4 images, ETA 30 s"
            ),
            "{}",
            t.status
        );
    }

    #[test]
    fn a_cancelled_run_with_a_finished_epoch_offers_resume_and_a_resumed_run_keeps_its_curves() {
        let mut t = TrainView::default();
        let mut cfg = TrainConfig::new("data".into(), "runs/r.safetensors".into());
        cfg.epochs = 6;
        t.run = Some(cfg);
        t.on_failure(Failure::Cancelled {
            kept_epoch: Some(2),
        });
        let p = t.resume_from.as_ref().unwrap();
        assert_eq!(
            (p.epoch, p.cfg.out.as_path()),
            (2, Path::new("runs/r.safetensors"))
        );
        assert!(
            t.status.contains("epoch 2 is kept") && t.status.contains("Resume"),
            "{}",
            t.status
        );
        assert!(!t.status.contains("--resume"), "{}", t.status);
        // Nothing finished: nothing to resume.
        let mut u = TrainView::default();
        u.on_failure(Failure::Cancelled { kept_epoch: None });
        assert!(u.resume_from.is_none());
        assert!(u.status.contains("nothing to resume"), "{}", u.status);
        // Resumed at epoch 3: epochs 1–2 and their steps stay, later ones go.
        let rec = |epoch| EpochRecord {
            epoch,
            train_loss: 0.1,
            train_accuracy: 0.9,
            val_accuracy: 0.8,
            val_macro_f1: 0.8,
            val_auroc: None,
            lr: 0.01,
            elapsed_s: 1.0,
            eta_s: 1.0,
        };
        t.history = vec![rec(1), rec(2), rec(3)];
        t.steps = vec![[0.5, 1.0], [1.5, 0.8], [2.0, 0.7], [2.5, 0.6]];
        t.on_progress(started(3), Instant::now());
        assert_eq!(
            t.history.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(t.steps.len(), 3);
        assert!(t.status.contains("resuming at epoch 3"), "{}", t.status);
    }

    #[test]
    fn short_axes_get_about_four_readable_labels() {
        let input = |lo: f64, hi: f64| egui_plot::GridInput {
            bounds: (lo, hi),
            base_step_size: 0.001,
        };
        let close = |got: [f64; 3], want: [f64; 3]| {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12),
                "{got:?} != {want:?}"
            )
        };
        close(about_four_labels(input(-0.05, 1.05)), [0.025, 0.125, 0.25]);
        close(about_four_labels(input(0.0, 2.6)), [0.1, 0.5, 1.0]);
        close(about_four_labels(input(0.0, 0.7)), [0.02, 0.1, 0.2]);
        assert_eq!(
            [0.25, 0.5, 1.0, 0.0, -0.0, 2.5].map(tick_label),
            ["0.25", "0.5", "1", "0", "0", "2.5"]
        );
    }

    #[test]
    fn the_form_feeds_the_same_options_as_the_command_line() {
        let mut t = TrainView {
            data: " /data/tiles ".into(),
            pass: "good, ok ,,".into(),
            batch_size: 32,
            backend: BackendKind::Cpu,
            preset: "tiny".into(),
            epochs: 7,
            ..TrainView::default()
        };
        t.augment = false;
        let cfg = t.config("out.safetensors".into());
        assert_eq!(cfg.data, Path::new("/data/tiles"));
        assert_eq!(cfg.pass, ["good", "ok"]);
        assert_eq!(cfg.batch_size, 32);
        assert_eq!(cfg.backend, BackendKind::Cpu);
        assert_eq!((cfg.preset.as_str(), cfg.epochs), ("tiny", 7));
        assert!(!cfg.resume);
        assert_eq!(
            for_the_form("--pass \"okay\" is not a class; classes are [\"bad\", \"good\"]"),
            "PASS class \"okay\" is not a class; classes are [\"bad\", \"good\"]"
        );
        assert!(
            !for_the_form("no class looks defect-free (tried [..]); name the PASS classes with --pass CLASS; classes are [..]")
                .contains("--")
        );
    }
}
