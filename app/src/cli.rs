//! The `inspector` command line. Each subcommand is a thin shell over a library module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Defect Inspector: visual defect inspection for production lines. With no subcommand it
/// opens the inspection window.
#[derive(Debug, Parser)]
#[command(
    name = "inspector",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The window's options without a subcommand (`inspector --db X` is `inspector app --db X`).
    #[command(flatten)]
    pub app: crate::ui::AppArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Time the GPU engine against burn-wgpu and the CPU reference on the "ref-cnn" model.
    Bench(crate::bench::BenchArgs),
    /// Train a defect classifier on a labelled dataset and write a model file.
    Train(TrainArgs),
    /// Evaluate a model on a dataset split through the GPU engine.
    Eval(EvalArgs),
    /// Choose a model's operating point again on a dataset split (the review band's two
    /// thresholds from the miss and false-reject targets) and write the model with it.
    Thresholds(ThresholdsArgs),
    /// Inspect frames from a folder, camera or synthetic source without the window.
    Inspect(crate::headless::InspectArgs),
    /// List the cameras this machine has.
    Cameras(crate::headless::CamerasArgs),
    /// Print recorded verdicts from the history database as CSV or JSON lines.
    History(crate::headless::HistoryArgs),
    /// Send what the plant database has not acknowledged from a station's history, then exit
    /// (0 once the plant has all of it).
    Forward(crate::headless::ForwardArgs),
    /// Time the history database: writer throughput and the History tab's queries on N rows
    /// (`--plant-db`: the same queries on the plant database).
    BenchHistory(crate::bench_records::BenchHistoryArgs),
    /// Time forwarding to the plant database: lag and rows/s while a station records at the
    /// given rates.
    BenchForward(crate::bench_records::BenchForwardArgs),
    /// Time the line I/O on loopback: trigger → Results Valid over Modbus (p50/p99, overhead
    /// beyond the model's own time) and MQTT messages/s, sustained and after an outage.
    BenchIo(crate::bench_io::BenchIoArgs),
    /// Open the inspection window (the same as running with no arguments).
    App(crate::ui::AppArgs),
    /// Check an EfficientNet-Lite0 weight file: run the whole ImageNet classifier through the
    /// GPU engine on images and print the top-5 classes (see assets/backbones/README.md).
    BackboneCheck(crate::bench::BackboneCheckArgs),
}

/// Options of `inspector train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Dataset folder (manifest.csv, or one folder per class).
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// Model file to write (.safetensors).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Training split name.
    #[arg(long, default_value = "train")]
    pub split_train: String,
    /// Validation split name (carved from train when it has no rows).
    #[arg(long, default_value = "val")]
    pub split_val: String,
    /// Model preset.
    #[arg(long, default_value = crate::training::DEFAULT_PRESET)]
    pub preset: String,
    /// Epochs.
    #[arg(long, default_value_t = crate::training::DEFAULT_EPOCHS)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = crate::training::DEFAULT_OPTIMIZER)]
    pub optimizer: crate::training::OptimizerKind,
    /// Peak learning rate.
    #[arg(long, default_value_t = crate::training::DEFAULT_LR)]
    pub lr: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// PASS class (repeatable); default: recognise good/ok/pass/normal/free.
    #[arg(long = "pass")]
    pub pass: Vec<String>,
    /// Backend: wgpu, cpu, or auto (CPU backend when the only GPU is a CPU rasteriser).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: crate::training::BackendKind,
    /// Stop after this many epochs without val improvement (0 = never).
    #[arg(long, default_value_t = 10)]
    pub patience: usize,
    /// The operating point's targets.
    #[command(flatten)]
    pub band: BandArgs,
    /// Pretrained-backbone classifier head: auto (the best by part-disjoint cross-validation
    /// on the training split), position (each position scored, the worst judges: small local
    /// defects, masks) or image (features averaged over the image: spread defects, no masks).
    #[arg(long, value_enum, default_value = "auto")]
    pub head: crate::training::head_select::HeadKind,
    /// Pretrained-backbone position head: heads trained from different seeds and averaged into
    /// the one the model carries (1: a single head).
    #[arg(long, default_value_t = crate::training::types::DEFAULT_MEMBERS)]
    pub members: usize,
    /// Turn augmentation off.
    #[arg(long)]
    pub no_augment: bool,
    /// Continue from the checkpoint next to --out.
    #[arg(long)]
    pub resume: bool,
    /// What to train: a defect classifier (labelled good and defective images), or an anomaly
    /// model from the good (PASS) training images only, for a product with no labelled defects.
    #[arg(long, value_enum, default_value = "classifier")]
    pub mode: crate::training::TrainMode,
    /// Anomaly mode: memory-bank entries (default: 10 % of the good images' positions, at most
    /// 4,096; the budget is 64 MiB, 72,315 entries of the lite0 features).
    #[arg(long)]
    pub bank: Option<usize>,
    /// Anomaly mode with good val images only: the largest false-reject rate on them for the
    /// chosen threshold.
    #[arg(long, default_value_t = 0.01)]
    pub max_false_reject: f64,
    /// Anomaly mode: how the bank is chosen (greedy k-center coreset, or a random sample).
    #[arg(long, value_enum, default_value = "greedy")]
    pub coreset: crate::training::CoresetKind,
    /// Anomaly mode: support size of the score reweighting, 1..=16 (1: the nearest distance).
    #[arg(long, default_value_t = crate::training::types::NEIGHBORS)]
    pub neighbors: u32,
    /// Print a one-line JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

/// Options of `inspector eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model file.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Dataset folder.
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// Split to evaluate (default: `test`, else `val`, else every row; the one used is named on
    /// stderr and in the report).
    #[arg(long)]
    pub split: Option<String>,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write one CSV row per image (path, label, predicted class, FAIL score, decision).
    #[arg(long, value_name = "CSV")]
    pub scores: Option<std::path::PathBuf>,
}

/// The review band's targets, shared by `train` and `thresholds`.
#[derive(Debug, clap::Args)]
pub struct BandArgs {
    /// Largest val miss rate of the parts passed without a person (below the review band;
    /// two-way: below the threshold).
    #[arg(long, default_value_t = 0.01)]
    pub max_miss_rate: f64,
    /// Largest val false-reject rate of the parts failed without a person (at or above the
    /// FAIL threshold); the parts between the two thresholds go to REVIEW.
    #[arg(long, default_value_t = 0.02)]
    pub max_fail_false_reject: f64,
    /// One threshold (PASS / FAIL), no review band.
    #[arg(long)]
    pub no_review_band: bool,
}

/// `inspector thresholds`.
#[derive(Debug, clap::Args)]
pub struct ThresholdsArgs {
    /// Model file.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Dataset folder.
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// Split the thresholds are chosen on (never the one you report figures on).
    #[arg(long, default_value = "val")]
    pub split: String,
    /// The operating point's targets.
    #[command(flatten)]
    pub band: BandArgs,
    /// Model file to write (may be --model itself).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Print the chosen band as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses arguments, runs, prints any error once with its causes, returns the exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,inspector=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Bench(args)) => crate::bench::run(&args),
        Some(Command::BackboneCheck(args)) => crate::bench::backbone_check(&args),
        Some(Command::Train(args)) => train(args),
        Some(Command::Eval(args)) => {
            use crate::evaluation::eval;
            let detailed = eval::evaluate_detailed(&args.model, &args.data, args.split.as_deref())?;
            if let Some(out) = &args.scores {
                eval::write_scores(&detailed, out)?;
            }
            let report = detailed.report;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                eval::print(&report);
            }
            Ok(())
        }
        Some(Command::Thresholds(a)) => {
            let band = crate::evaluation::eval::rechoose_thresholds(
                &a.model,
                &a.data,
                &a.split,
                (
                    a.band.max_miss_rate,
                    a.band.max_fail_false_reject,
                    !a.band.no_review_band,
                ),
                &a.out,
            )?;
            if a.json {
                println!("{}", serde_json::to_string(&band)?);
            } else {
                eprintln!(
                    "wrote {}: {} ({})",
                    a.out.display(),
                    match band.pass_threshold {
                        Some(p) => format!("PASS below {p:.4}, FAIL from {:.4}", band.threshold),
                        None => format!("threshold {:.4}", band.threshold),
                    },
                    band.rule
                );
            }
            Ok(())
        }
        Some(Command::Inspect(args)) => crate::headless::inspect(args),
        Some(Command::Cameras(args)) => crate::headless::cameras(args),
        Some(Command::History(args)) => crate::headless::history(args),
        Some(Command::Forward(args)) => crate::headless::forward(args),
        Some(Command::App(args)) => crate::ui::run(args),
        Some(Command::BenchHistory(args)) => crate::bench_records::bench_history(args),
        Some(Command::BenchForward(args)) => crate::bench_records::bench_forward(args),
        Some(Command::BenchIo(args)) => crate::bench_io::run(args),
        None => crate::ui::run(cli.app),
    }
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    use crate::training::{Progress, TrainConfig};
    let mut cfg = TrainConfig::new(args.data, args.out);
    cfg.split_train = args.split_train;
    cfg.split_val = args.split_val;
    cfg.preset = args.preset;
    cfg.epochs = args.epochs;
    cfg.batch_size = args.batch_size;
    cfg.optimizer = args.optimizer;
    cfg.lr = args.lr;
    cfg.seed = args.seed;
    cfg.pass = args.pass;
    cfg.backend = args.backend;
    cfg.patience = args.patience;
    cfg.max_miss_rate = args.band.max_miss_rate;
    cfg.max_fail_false_reject = args.band.max_fail_false_reject;
    cfg.review_band = !args.band.no_review_band;
    cfg.head = args.head;
    cfg.members = args.members;
    cfg.resume = args.resume;
    cfg.mode = args.mode;
    cfg.bank = args.bank;
    cfg.max_false_reject = args.max_false_reject;
    cfg.coreset = args.coreset;
    cfg.neighbors = args.neighbors;
    if cfg.mode == crate::training::TrainMode::Anomaly {
        cfg.epochs = 1; // one pass: features, coreset, threshold
    }
    if args.no_augment {
        cfg.augment = crate::training::augment::AugmentConfig::off();
    }
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut last_epoch_line = String::new();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let epochs = cfg.epochs;
    let mode = cfg.mode;
    let summary = crate::training::train(
        &cfg,
        &mut |p| match p {
            Progress::Started {
                train,
                val,
                skipped,
                backend,
                first_epoch,
            } => {
                eprintln!(
                    "training on {train} images, validating on {val}; backend {backend}; starting at epoch {first_epoch}"
                );
                if !skipped.is_empty() {
                    eprintln!("skipped {} unreadable images:", skipped.len());
                    for (p, why) in skipped.iter().take(10) {
                        eprintln!("  {p}: {why}");
                    }
                }
            }
            Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                let phase = phase_name(mode, epoch, epochs);
                if bar.as_ref().is_some_and(|b| b.prefix() != phase) {
                    if let Some(b) = bar.take() {
                        b.finish_and_clear();
                    }
                }
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(steps as u64).with_style(style.clone());
                    b.set_prefix(phase);
                    b
                });
                b.set_position(step as u64);
                if loss.is_finite() {
                    b.set_message(format!("loss {loss:.4} {last_epoch_line}"));
                }
            }
            Progress::Epoch(r) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                last_epoch_line = format!("(last val acc {:.3})", r.val_accuracy);
                eprintln!(
                    "epoch {}/{epochs}: loss {:.4}  train acc {:.4}  val acc {:.4}  macro F1 {:.4}  AUROC {}  lr {:.2e}  {:.0}s, ETA {:.0}s",
                    r.epoch,
                    r.train_loss,
                    r.train_accuracy,
                    r.val_accuracy,
                    r.val_macro_f1,
                    r.val_auroc.map_or("n/a".into(), |a| format!("{a:.4}")),
                    r.lr,
                    r.elapsed_s,
                    r.eta_s
                );
            }
        },
        &cancel,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "wrote {} (best epoch {}): val accuracy {:.4}, macro F1 {:.4}, AUROC {}, {} → auto-pass miss {:.4}, auto-fail false reject {:.4}, review {:.1} %; {:.0}s",
            summary.model.display(),
            summary.best_epoch,
            summary.val_accuracy,
            summary.val_macro_f1,
            summary
                .val_auroc
                .map_or("n/a".into(), |a| format!("{a:.4}")),
            match summary.pass_threshold {
                Some(p) => format!("PASS below {p:.4}, FAIL from {:.4}", summary.threshold),
                None => format!("threshold {:.4}", summary.threshold),
            },
            summary.val_miss_rate,
            summary.val_false_reject_rate,
            100.0 * summary.val_review_share,
            summary.train_seconds
        );
        eprintln!("threshold rule: {}", summary.threshold_rule);
        if let Some(h) = &summary.head {
            eprintln!(
                "head: {} kept ({}); candidates, part-disjoint 2-fold cross-validation on the \
                 training split:\n{}",
                h.kept().head,
                h.why,
                h.table()
            );
        }
        if let Some(m) = summary.bank_entries {
            eprintln!(
                "anomaly model: memory bank of {m} good-part features; {} defect images of the \
                 training split ignored",
                summary.ignored_defects
            );
        }
    }
    Ok(())
}

/// The progress bar's label: the epoch, or for anomaly training its phase.
fn phase_name(mode: crate::training::TrainMode, epoch: usize, epochs: usize) -> String {
    match (mode, epoch) {
        (_, 0) => "features".into(),
        (crate::training::TrainMode::Anomaly, 1) => "memory bank".into(),
        (crate::training::TrainMode::Anomaly, _) => "scoring val".into(),
        _ => format!("epoch {epoch}/{epochs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_forms_of_the_window_parse() {
        let cli = Cli::try_parse_from(["inspector", "--db", "x.sqlite", "--tab", "history"])
            .expect("inspector --db X");
        assert!(cli.command.is_none());
        assert_eq!(
            cli.app.db.as_deref(),
            Some(std::path::Path::new("x.sqlite"))
        );
        assert_eq!(cli.app.tab.as_deref(), Some("history"));
        let cli = Cli::try_parse_from(["inspector", "app", "--db", "y.sqlite"]).expect("app");
        match cli.command {
            Some(Command::App(a)) => {
                assert_eq!(a.db.as_deref(), Some(std::path::Path::new("y.sqlite")))
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["inspector"]).expect("no arguments");
        assert!(cli.command.is_none() && cli.app.db.is_none());
        // Subcommands keep their own options.
        let cli =
            Cli::try_parse_from(["inspector", "history", "--db", "z.sqlite"]).expect("history");
        assert!(matches!(cli.command, Some(Command::History(_))));
    }
}
