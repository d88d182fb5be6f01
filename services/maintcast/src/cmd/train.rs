//! `maintcast train`: one training job from history files into a new registry version.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use maintcast_models::config::Config;
use maintcast_models::history::{self, Cmapss, History};
use maintcast_models::{Forecaster, artifact, pipeline, registry, train};

use super::train_service::{self, ServiceArgs};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// `machine_id,ts,<sensor>...` telemetry plus a `machine_id,ts,kind,note` events file.
    Csv,
    /// NASA C-MAPSS `train_/test_/RUL_<subset>.txt`.
    Cmapss,
    /// The `telemetry` and `maintenance_event` measurements in InfluxDB (trainer service:
    /// `--once` / `--every`).
    Influx,
}

/// Where history comes from; shared with `eval`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Format of the history files.
    #[arg(long, env = "MAINTCAST_FORMAT", value_enum)]
    pub format: Format,
    /// CSV: telemetry file or a directory with telemetry.csv (+ events.csv); C-MAPSS: its directory.
    #[arg(long, env = "MAINTCAST_DATA", required_if_eq_any([("format", "csv"), ("format", "cmapss")]))]
    pub data: Option<PathBuf>,
    /// C-MAPSS subset.
    #[arg(long, env = "MAINTCAST_SUBSET", default_value = "FD001")]
    pub subset: String,
    /// CSV maintenance events file (machine_id,ts,kind,note).
    #[arg(long, env = "MAINTCAST_EVENTS")]
    pub events: Option<PathBuf>,
}

pub enum Loaded {
    Csv(History),
    Cmapss(Cmapss),
}

impl DataArgs {
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let data = self
            .data
            .as_deref()
            .context("--data is required with --format csv|cmapss")?;
        Ok(match self.format {
            Format::Csv => {
                let (tel, ev) = history::csv_paths(data, self.events.as_deref());
                Loaded::Csv(history::read_csv(&tel, ev.as_deref())?)
            }
            Format::Cmapss => Loaded::Cmapss(history::read_cmapss(data, &self.subset)?),
            Format::Influx => anyhow::bail!(
                "--format influx is read by the trainer service: add --once or --every DURATION"
            ),
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Training configuration (TOML); defaults apply to everything it leaves out.
    #[arg(long, env = "MAINTCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model registry directory; the model goes to <registry>/<name>/<version>/.
    #[arg(long, env = "MAINTCAST_REGISTRY")]
    pub registry: PathBuf,
    /// Model name in the registry.
    #[arg(long, env = "MAINTCAST_NAME")]
    pub name: String,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Overrides train.seed of the config.
    #[arg(long, env = "MAINTCAST_SEED")]
    pub seed: Option<u64>,
    /// Make the new version CURRENT without the champion/challenger gate: no comparison with the
    /// serving version (the trainer service's `--once` applies the gate). The serving check
    /// still runs. The first version of a model always becomes CURRENT.
    #[arg(long, env = "MAINTCAST_PROMOTE")]
    pub promote: bool,
    /// The trainer service (maintcast_trainer::service): rounds with a champion/challenger gate.
    #[command(flatten, next_help_heading = "Trainer service")]
    pub service: ServiceArgs,
}

/// The training recipe of `--config` (defaults where it is silent, or without one), with
/// `--seed` in place of its seed.
pub fn recipe(config: Option<&Path>, seed: Option<u64>) -> anyhow::Result<Config> {
    let mut cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(seed) = seed {
        cfg.train.seed = seed;
    }
    Ok(cfg)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.service.enabled() {
        return train_service::run(args);
    }
    let cfg = recipe(args.config.as_deref(), args.seed)?;
    let device = maintcast_models::device::parse_device(&args.device)?;
    let loaded = args.data.load()?;
    let history = match &loaded {
        Loaded::Csv(h) => h,
        Loaded::Cmapss(c) => &c.train,
    };
    let started = Instant::now();
    let members = cfg.train.ensemble;
    let trained = pipeline::train_model(history, &cfg, &device, &mut |k, r| {
        if members > 1 {
            tracing::info!("member {}/{members}", k + 1);
        }
        train::log_epoch(r);
    })?;
    let train_s = started.elapsed().as_secs_f64();

    let staged = tempfile::tempdir().context("creating a staging directory")?;
    let mut card = trained.save(staged.path())?;
    card.parent_version = registry::current_version(&args.registry, &args.name)?;
    card.training["wall_s"] = serde_json::json!(train_s);
    if let Loaded::Cmapss(c) = &loaded {
        let f = Forecaster::load(staged.path(), &device)?;
        let test = pipeline::evaluate_cmapss(&f, c)?;
        tracing::info!(
            "test ({} units): rmse {:.2}  mae {:.2}  score {:.0}  p10-p90 coverage {:.2}  \
             width {:.1}",
            test.n,
            test.rmse,
            test.mae,
            test.score,
            test.coverage_p10_p90,
            test.interval_width
        );
        card.metrics["test"] = serde_json::to_value(&test)?;
    }
    std::fs::write(
        staged.path().join(artifact::CARD_FILE),
        serde_json::to_string_pretty(&card)?,
    )?;
    let first = registry::current_version(&args.registry, &args.name)?.is_none();
    let version = registry::publish(&args.registry, &args.name, staged.path())?;
    let reason = if first {
        Some("first version of the model".to_string())
    } else if args.promote {
        Some(format!(
            "maintcast train --promote: champion/challenger gate bypassed, not compared with {}",
            card.parent_version
                .as_deref()
                .unwrap_or("the serving version")
        ))
    } else {
        None
    };
    if let Some(reason) = &reason {
        registry::promote(&args.registry, &args.name, &version, reason)?;
        if !first {
            tracing::warn!(
                "{version} promoted without the champion/challenger gate (--promote); \
                 `maintcast train --once` compares it with the serving version first"
            );
        }
    }
    let dir = args.registry.join(&args.name).join(&version);
    tracing::info!(
        "trained in {train_s:.1}s; version {version}{}",
        if reason.is_some() { " (CURRENT)" } else { "" }
    );
    println!("{}", dir.display());
    Ok(ExitCode::SUCCESS)
}
