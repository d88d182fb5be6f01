//! `maintcast sweep`: an experiment grid -> one training run per combination (TensorBoard logs
//! each), a leaderboard and a chart in `--out`, and optionally the winner as a new model version.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use maintcast_models::History;
use maintcast_models::history;
use maintcast_trainer::leaderboard;
use maintcast_trainer::sweep::{self, Grid, SweepOptions};
use maintcast_trainer::training_run::TrainingRunSink;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Cmapss,
    Csv,
}

#[derive(clap::Args)]
pub struct Args {
    /// The grid (TOML): a base training config and the axes to vary; see models/configs/sweep-*.toml.
    #[arg(long, env = "MAINTCAST_SWEEP_GRID")]
    grid: PathBuf,
    /// Format of `--data`.
    #[arg(long, value_enum, default_value = "csv", env = "MAINTCAST_FORMAT")]
    format: Format,
    /// History to train on: a C-MAPSS directory, or a telemetry CSV (or a directory with
    /// telemetry.csv and events.csv).
    #[arg(long, env = "MAINTCAST_DATA")]
    data: PathBuf,
    /// C-MAPSS subset.
    #[arg(long, default_value = "FD001", env = "MAINTCAST_SUBSET")]
    subset: String,
    /// Maintenance events CSV, when not beside the telemetry.
    #[arg(long, env = "MAINTCAST_EVENTS")]
    events: Option<PathBuf>,
    /// Sweep directory: runs/<run-id>/ per run, leaderboard.md, leaderboard.csv, chart.png.
    #[arg(long, env = "MAINTCAST_SWEEP_OUT")]
    out: PathBuf,
    /// Train only N combinations drawn at random (seeded by the grid's `seed`, or `--seed`).
    #[arg(long, env = "MAINTCAST_SWEEP_SAMPLE")]
    sample: Option<usize>,
    /// Compare runs that differ only on this axis (a table in the leaderboard); with --sample,
    /// draw N settings of the other axes and train each with every value of this one
    /// (`schedule`: matched runs with and without learning-rate decay).
    /// One of schedule, optimizer, batch-size, lr, loss, dropout.
    #[arg(long, env = "MAINTCAST_SWEEP_PAIRED")]
    paired: Option<sweep::PairAxis>,
    /// Overrides the grid's sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Runs trained at the same time (each uses several cores already).
    #[arg(long, default_value_t = 1, env = "MAINTCAST_SWEEP_JOBS")]
    jobs: usize,
    /// cpu, cuda:N or auto.
    #[arg(long, default_value = "cpu", env = "MAINTCAST_DEVICE")]
    device: String,
    /// List the runs the grid (and sample) gives, and which are finished, without training.
    #[arg(long)]
    dry_run: bool,
    /// Train nothing; write the leaderboard and chart of the runs that already finished.
    #[arg(long, conflicts_with = "dry_run")]
    report_only: bool,
    /// Publish the best run as a new version of this model (needs --registry).
    #[arg(long, requires = "registry")]
    promote: Option<String>,
    /// Model registry directory.
    #[arg(long, env = "MAINTCAST_REGISTRY")]
    registry: Option<PathBuf>,
}

/// The history and an id of its contents (not its path), so run ids, and so skipping finished
/// runs, survive moving the data or naming it by another path.
fn load_history(a: &Args) -> anyhow::Result<(History, String)> {
    let digest = sweep::data_digest;
    match a.format {
        Format::Cmapss => {
            let c = history::read_cmapss(&a.data, &a.subset)?;
            let train = a.data.join(format!("train_{}.txt", a.subset));
            Ok((
                c.train,
                format!("cmapss:{}:{}", a.subset, digest(&[&train])?),
            ))
        }
        Format::Csv => {
            let (telemetry, events) = history::csv_paths(&a.data, a.events.as_deref());
            let h = history::read_csv(&telemetry, events.as_deref())?;
            let mut files = vec![telemetry.as_path()];
            files.extend(events.as_deref());
            Ok((h, format!("csv:{}", digest(&files)?)))
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let grid = Grid::load(&args.grid)?;
    let (history, data_id) = load_history(&args).context("loading the history")?;
    let mut runs = grid.expand(&data_id)?;
    let combinations = runs.len();
    if let Some(n) = args.sample {
        if n == 0 {
            bail!("--sample must be at least 1");
        }
        let seed = args.seed.unwrap_or(grid.seed);
        runs = match args.paired {
            Some(axis) => sweep::sample_paired(runs, n, seed, axis),
            None => sweep::sample(runs, n, seed),
        };
    }
    tracing::info!(
        "grid {:?}: {combinations} combinations, {} to run, data {data_id}",
        grid.name,
        runs.len()
    );
    if args.dry_run {
        for r in &runs {
            let done = sweep::read_result(&sweep::run_dir(&args.out, &r.id)).is_some();
            println!(
                "{} {} {}",
                r.id,
                if done { "done   " } else { "pending" },
                r.label
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let device = maintcast_models::device::parse_device(&args.device)?;
    let opts = SweepOptions {
        out: args.out.clone(),
        jobs: args.jobs,
        device: device.clone(),
        data_id,
        model_name: args.promote.clone().unwrap_or_else(|| grid.name.clone()),
        influx: if args.report_only {
            None
        } else {
            TrainingRunSink::from_env()?
        },
        report_only: args.report_only,
        paired: args.paired,
    };
    let outcome = sweep::run(&grid, &runs, &history, &opts)?;
    if let Some(sink) = &opts.influx {
        sink.finish();
    }
    println!(
        "sweep {} ({}): {} trained, {} already finished, {} failed, {} not run\n",
        outcome.sweep_id,
        grid.name,
        outcome.trained,
        outcome.skipped,
        outcome.failed.len(),
        runs.len() - outcome.trained - outcome.skipped - outcome.failed.len()
    );
    print!("{}", leaderboard::markdown(&outcome.results));
    if let Some(axis) = args.paired {
        print!("\n{}", leaderboard::paired(&outcome.results, axis));
    }
    println!(
        "\n{} {} {}",
        args.out.join(leaderboard::MARKDOWN_FILE).display(),
        args.out.join(leaderboard::CSV_FILE).display(),
        args.out.join("chart.png").display()
    );
    for (id, e) in &outcome.failed {
        eprintln!("run {id} failed: {e}");
    }
    if let (Some(name), Some(registry)) = (&args.promote, &args.registry) {
        let p = sweep::promote_best(&args.out, &outcome, &history, registry, name, &device)?;
        println!(
            "run {} published as {name} {}: {} ({})",
            p.run_id,
            p.version,
            if p.promoted {
                "now CURRENT"
            } else {
                "not promoted"
            },
            p.reason
        );
    }
    Ok(if outcome.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
