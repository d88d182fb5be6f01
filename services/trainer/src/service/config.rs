//! What a trainer service is told: the settings of its rounds, where history comes from, and the
//! exit codes a scheduler reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use maintcast_common::influx::InfluxConfig;
use maintcast_models::History;
use maintcast_models::config::Config;
use serde::Serialize;

/// Exit codes a scheduler can act on.
pub const EXIT_PROMOTED: u8 = 0;
pub const EXIT_NOT_PROMOTED: u8 = 10;
pub const EXIT_SKIPPED: u8 = 20;
pub const EXIT_FAILED: u8 = 1;

pub const EXIT_CODES_HELP: &str = "\
Exit codes of --once (for schedulers):
  0   a challenger was trained and promoted (CURRENT changed)
  10  a challenger was trained and published but not promoted (not better by the margin; with
      --live-gate, also one that passed and now shadows the serving version)
  20  the round was skipped (too little new labelled data, or, with --live-gate, a shadow still
      waiting for live evidence; the reason is logged)
  1   the round failed (bad input, unreachable InfluxDB, ...)";

/// How rounds run. `maintcast train` fills it from its flags (`--once`, `--every`, `--margin`,
/// ...; the defaults below are theirs); docs/configuration.md lists them.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSettings {
    /// Run one trainer round (read history, train, compare, maybe promote) and exit with its
    /// outcome as the exit code.
    pub once: bool,
    /// Run as a service: a round every DURATION (e.g. 6h, 30m) until SIGTERM.
    pub every: Option<Duration>,
    /// Relative improvement of the held-out MAE a challenger needs to be promoted (0.02 = 2%).
    pub margin: f64,
    /// Skip a round when fewer labelled rows than this arrived since the serving version was trained.
    pub min_new_rows: usize,
    /// Share of machines held out (by a hash of their id, the same every round) to compare models.
    pub eval_fraction: f64,
    /// InfluxDB history: only telemetry at or after this time (RFC 3339, or a duration ago: 90d).
    pub since: Option<String>,
    /// InfluxDB history: only machines with this `machine_type` tag (one model per type).
    pub machine_type: Option<String>,
    /// InfluxDB history is read in pages of this length, so a long history never arrives whole.
    pub page: Duration,
    /// Write TensorBoard event files under DIR/<name>/<run id>/.
    pub tensorboard: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9465); the same flag as ingest's.
    pub http_addr: Option<SocketAddr>,
    /// Let realized accuracy veto: do not promote while the serving version's realized MAE (its
    /// forecasts scored against the maintenance that actually happened) beats the challenger's
    /// held-out MAE.
    pub realized_gate: bool,
    /// Live gate: a challenger that passes the offline gate shadows the serving model instead of
    /// replacing it, and is promoted (or retired) on its realized accuracy in the stream
    /// (docs/LIVE_EVALUATION.md). Needs InfluxDB and the ingest service's `forecast_accuracy`.
    pub live_gate: bool,
    /// Live gate: maintenance events scored for both the shadow and the served forecasts before
    /// the shadow is promoted (better by --margin) or retired.
    pub live_min_events: usize,
    /// Realized accuracy: forewarning counts from when forecasts fell below this many days.
    pub warn_days: f64,
    /// Sanity check of the gate: train the challenger on rows shuffled against their labels. Such
    /// a challenger has learnt nothing and must never be promoted.
    pub shuffle_labels: bool,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            once: false,
            every: None,
            margin: 0.02,
            min_new_rows: 100,
            eval_fraction: 0.2,
            since: None,
            machine_type: None,
            page: Duration::from_secs(7 * 86_400),
            tensorboard: None,
            http_addr: None,
            realized_gate: false,
            live_gate: false,
            live_min_events: 5,
            warn_days: 10.0,
            shuffle_labels: false,
        }
    }
}

/// Where a round's history comes from.
pub enum HistorySource {
    Influx,
    /// Files, read again every round (the caller's loader: CSV, C-MAPSS, ...).
    Files(Box<dyn Fn() -> Result<History> + Send + Sync>),
}

pub struct ServiceConfig {
    pub registry: PathBuf,
    pub name: String,
    pub recipe: Config,
    /// `cpu`, `cuda:N` or `auto`.
    pub device: String,
    pub source: HistorySource,
    /// Needed for InfluxDB history, `training_run` points and realized accuracy; without it the
    /// round uses files and writes TensorBoard files only.
    pub influx: Option<InfluxConfig>,
    pub args: ServiceSettings,
}

/// How a round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    NotPromoted,
    Skipped,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Promoted => EXIT_PROMOTED,
            Outcome::NotPromoted => EXIT_NOT_PROMOTED,
            Outcome::Skipped => EXIT_SKIPPED,
        }
    }

    /// The `outcome` label of `maintcast_trainer_rounds`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::NotPromoted => "not_promoted",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The InfluxDB connection when one is configured (`MAINTCAST_INFLUX_URL`) or `required`.
pub fn influx_from_env(required: bool) -> Result<Option<InfluxConfig>> {
    let configured = std::env::var("MAINTCAST_INFLUX_URL").is_ok_and(|v| !v.is_empty());
    if configured || required {
        Ok(Some(InfluxConfig::from_env()?))
    } else {
        Ok(None)
    }
}

/// Checks the settings before the first round, so a typo fails at start.
pub fn validate(cfg: &ServiceConfig) -> Result<()> {
    let a = &cfg.args;
    anyhow::ensure!(
        a.margin.is_finite() && (0.0..1.0).contains(&a.margin),
        "--margin must be in [0, 1), got {}",
        a.margin
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&a.eval_fraction) && a.eval_fraction > 0.0,
        "--eval-fraction must be in (0, 1), got {}",
        a.eval_fraction
    );
    if let Some(every) = a.every {
        anyhow::ensure!(!every.is_zero(), "--every must be positive");
    }
    anyhow::ensure!(
        !a.live_gate || cfg.influx.is_some(),
        "--live-gate reads forecast_accuracy from InfluxDB: set MAINTCAST_INFLUX_URL and a token"
    );
    anyhow::ensure!(
        a.live_min_events > 0,
        "--live-min-events must be at least 1"
    );
    if matches!(cfg.source, HistorySource::Influx) {
        anyhow::ensure!(
            cfg.influx.is_some(),
            "InfluxDB history needs MAINTCAST_INFLUX_URL and a token"
        );
    }
    cfg.recipe.validate()?;
    Ok(())
}

/// `--since`: RFC 3339, epoch ms, or a duration before now.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64> {
    if let Ok(ms) = maintcast_models::history::parse_ts(s) {
        return Ok(ms);
    }
    let d = humantime::parse_duration(s).with_context(|| {
        format!("--since {s:?}: want RFC 3339, epoch ms or a duration like 90d")
    })?;
    Ok(now_ms - d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_models::history::DAY_MS;

    #[test]
    fn since_accepts_times_and_durations() {
        assert_eq!(parse_since("1000", 0).unwrap(), 1000);
        assert_eq!(parse_since("1d", 2 * DAY_MS).unwrap(), DAY_MS);
        assert!(parse_since("yesterday-ish", 0).is_err());
    }
}
