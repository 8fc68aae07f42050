//! The `inspector` command line. Each subcommand is a thin shell over a library module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Defect Inspector: visual defect inspection for production lines.
#[derive(Debug, Parser)]
#[command(name = "inspector", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Time the GPU engine against burn-wgpu and the CPU reference on the "ref-cnn" model.
    Bench(crate::bench::BenchArgs),
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
        None => {
            use clap::CommandFactory as _;
            Cli::command().print_help()?;
            Ok(())
        }
    }
}
