//! `maintcast train --once | --every DURATION`: the trainer service's flags, and the service run
//! from them (`maintcast_trainer::service`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use maintcast_trainer::service::{self, HistorySource, ServiceConfig};

use super::train::{Args, Format, Loaded};

/// The service-only flags of `maintcast train`; the recipe, registry and data flags are the
/// one-shot command's.
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = service::EXIT_CODES_HELP)]
pub struct ServiceArgs {
    /// Run one trainer round (read history, train, compare, maybe promote) and exit with its
    /// outcome as the exit code.
    #[arg(long, conflicts_with = "every")]
    pub once: bool,
    /// Run as a service: a round every DURATION (e.g. 6h, 30m) until SIGTERM.
    #[arg(long, env = "MAINTCAST_EVERY", value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Relative improvement of the held-out MAE a challenger needs to be promoted (0.02 = 2%).
    #[arg(long, env = "MAINTCAST_MARGIN", default_value_t = 0.02)]
    pub margin: f64,
    /// Skip a round when fewer labelled rows than this arrived since the serving version was trained.
    #[arg(long, env = "MAINTCAST_MIN_NEW_ROWS", default_value_t = 100)]
    pub min_new_rows: usize,
    /// Share of machines held out (by a hash of their id, the same every round) to compare models.
    #[arg(long, env = "MAINTCAST_EVAL_FRACTION", default_value_t = 0.2)]
    pub eval_fraction: f64,
    /// InfluxDB history: only telemetry at or after this time (RFC 3339, or a duration ago: 90d).
    #[arg(long, env = "MAINTCAST_SINCE")]
    pub since: Option<String>,
    /// InfluxDB history: only machines with this `machine_type` tag (one model per type).
    #[arg(long, env = "MAINTCAST_MACHINE_TYPE")]
    pub machine_type: Option<String>,
    /// InfluxDB history is read in pages of this length, so a long history never arrives whole.
    #[arg(long, env = "MAINTCAST_PAGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub page: Duration,
    /// Write TensorBoard event files under DIR/<name>/<run id>/.
    #[arg(long, env = "MAINTCAST_TENSORBOARD")]
    pub tensorboard: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9465); the same flag as ingest's.
    #[arg(long, env = "MAINTCAST_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Let realized accuracy veto: do not promote while the serving version's realized MAE (its
    /// forecasts scored against the maintenance that actually happened) beats the challenger's
    /// held-out MAE.
    #[arg(long, env = "MAINTCAST_REALIZED_GATE")]
    pub realized_gate: bool,
    /// Live gate: a challenger that passes the offline gate shadows the serving model instead of
    /// replacing it, and is promoted (or retired) on its realized accuracy in the stream
    /// (docs/LIVE_EVALUATION.md). Needs InfluxDB and the ingest service's `forecast_accuracy`.
    #[arg(long, env = "MAINTCAST_LIVE_GATE")]
    pub live_gate: bool,
    /// Live gate: maintenance events scored for both the shadow and the served forecasts before
    /// the shadow is promoted (better by --margin) or retired.
    #[arg(long, env = "MAINTCAST_LIVE_MIN_EVENTS", default_value_t = 5)]
    pub live_min_events: usize,
    /// Realized accuracy: forewarning counts from when forecasts fell below this many days.
    #[arg(long, env = "MAINTCAST_WARN_DAYS", default_value_t = 10.0)]
    pub warn_days: f64,
    /// Sanity check of the gate: train the challenger on rows shuffled against their labels. Such
    /// a challenger has learnt nothing and must never be promoted.
    #[arg(long)]
    pub shuffle_labels: bool,
}

impl ServiceArgs {
    /// Whether `maintcast train` runs as the service rather than the one-shot job.
    pub fn enabled(&self) -> bool {
        self.once || self.every.is_some()
    }

    /// The trainer's settings from these flags.
    pub fn settings(&self) -> service::ServiceSettings {
        service::ServiceSettings {
            once: self.once,
            every: self.every,
            margin: self.margin,
            min_new_rows: self.min_new_rows,
            eval_fraction: self.eval_fraction,
            since: self.since.clone(),
            machine_type: self.machine_type.clone(),
            page: self.page,
            tensorboard: self.tensorboard.clone(),
            http_addr: self.http_addr,
            realized_gate: self.realized_gate,
            live_gate: self.live_gate,
            live_min_events: self.live_min_events,
            warn_days: self.warn_days,
            shuffle_labels: self.shuffle_labels,
        }
    }
}

/// `--once` / `--every`: the trainer service, reading history from InfluxDB (`--format influx`) or
/// re-reading the files every round.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let recipe = super::train::recipe(args.config.as_deref(), args.seed)?;
    let from_influx = matches!(args.data.format, Format::Influx);
    let source = if from_influx {
        HistorySource::Influx
    } else {
        let data = args.data;
        HistorySource::Files(Box::new(move || {
            Ok(match data.load()? {
                Loaded::Csv(h) => h,
                Loaded::Cmapss(c) => c.train,
            })
        }))
    };
    let code = service::run_blocking(ServiceConfig {
        registry: args.registry,
        name: args.name,
        recipe,
        device: args.device,
        source,
        influx: service::influx_from_env(from_influx)?,
        args: args.service.settings(),
    })?;
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn flag_defaults_are_the_trainers_defaults() {
        let cli = crate::Cli::try_parse_from([
            "maintcast",
            "train",
            "--format",
            "csv",
            "--data",
            "d",
            "--registry",
            "r",
            "--name",
            "n",
            "--once",
        ])
        .unwrap();
        let crate::Command::Train(args) = cli.command else {
            panic!("not train");
        };
        let want = maintcast_trainer::service::ServiceSettings {
            once: true,
            ..Default::default()
        };
        assert_eq!(args.service.settings(), want);
    }
}
