//! `maintcast`: one binary whose subcommands are the services and tools (docs/configuration.md
//! lists every flag). Each subcommand lives in `cmd/<name>.rs`; this file only parses flags and
//! dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The service loop allocates and frees small blocks for every message (decoded rows, Kafka
/// records) across threads; mimalloc's per-thread free lists make that a fraction of the system
/// allocator's cost (BENCHMARKS.md, "Ingest throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
#[cfg(test)]
mod config_doc;

/// Streaming predictive maintenance: forecasts, for every machine, the days until it needs maintenance.
#[derive(Parser)]
#[command(name = "maintcast", version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of human-readable text (env MAINTCAST_LOG_JSON).
    #[arg(long, global = true, env = "MAINTCAST_LOG_JSON")]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole idea with no servers: simulate a fleet, train or load a model, stream, show.
    Demo(cmd::demo::Args),
    /// The ingest service: Kafka telemetry -> per-machine windows -> LSTM inference -> InfluxDB.
    Ingest(cmd::ingest::Args),
    /// Train a model from history once, or run as the periodic trainer service.
    Train(cmd::train::Args),
    /// Run an experiment grid and print a leaderboard (TensorBoard logs per run).
    Sweep(cmd::sweep::Args),
    /// Score a model on a data set: one JSON line on stdout (rmse, mae, PHM08 score, n, p10-p90
    /// coverage and mean width overall and per third of the truth, the label policy), a summary on
    /// stderr.
    Eval(cmd::eval::Args),
    /// Cross-validate a training recipe over folds of whole machines: each fold held out once and
    /// scored with the test protocol replayed; per-fold figures and their spread.
    Cv(cmd::cv::Args),
    /// Simulate a fleet (or replay a history) to Kafka or to files.
    Simulate(cmd::simulate::Args),
    /// Inspect and manage the model registry: list | show | promote | rollback.
    Models(cmd::models::Args),
    /// A maintenance schedule from the newest forecasts, within the crew's slots, with reasons.
    Plan(cmd::plan::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    maintcast_common::logging::init(cli.log_json);
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Ingest(a) => cmd::ingest::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Cv(a) => cmd::cv::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Models(a) => cmd::models::run(a),
        Command::Plan(a) => cmd::plan::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
