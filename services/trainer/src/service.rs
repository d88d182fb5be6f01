//! The trainer service: rounds of "read history, train a challenger, compare it with the serving
//! champion on held-out machines, promote only if it is better by a margin".
//!
//! Evaluation machines are chosen by a hash of their id, so the same machines stay held out round
//! after round and no challenger ever trains on them. Both models are scored on the most recent
//! run-to-maintenance stretch of those machines (their last labelled segment): the data that looks
//! most like what the model will see next, and that no earlier stretch leaks into.
//!
//! Every challenger is published (an immutable version with its card and the gate's verdict), so a
//! rejected one stays inspectable and can still be promoted by hand; only the gate moves CURRENT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_models::config::Config;
use maintcast_models::dataset;
use maintcast_models::{Forecaster, History, MachineHistory, artifact, pipeline, train};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::Serialize;

use crate::influx_history::{self, HistoryQuery};
use crate::realized::{self, RealizedReport};
use crate::registry;
use crate::tensorboard::EventWriter;
use crate::training_run::TrainingRunSink;

/// Exit codes a scheduler can act on.
pub const EXIT_PROMOTED: u8 = 0;
pub const EXIT_NOT_PROMOTED: u8 = 10;
pub const EXIT_SKIPPED: u8 = 20;
pub const EXIT_FAILED: u8 = 1;

pub const EXIT_CODES_HELP: &str = "\
Exit codes of --once (for schedulers):
  0   a challenger was trained and promoted (CURRENT changed)
  10  a challenger was trained and published but not promoted (not better by the margin)
  20  the round was skipped (too little new labelled data; the reason is logged)
  1   the round failed (bad input, unreachable InfluxDB, ...)";

/// The service-only flags of `maintcast train`; the recipe, registry and data flags are the
/// one-shot command's.
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = EXIT_CODES_HELP)]
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
    pub args: ServiceArgs,
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
}

/// What one round did; logged as one line and kept in the challenger's card.
#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    pub run_id: String,
    pub outcome: Outcome,
    pub reason: String,
    pub champion: Option<String>,
    pub challenger: Option<String>,
    pub challenger_mae: Option<f64>,
    pub champion_mae: Option<f64>,
    pub eval_windows: usize,
    pub machines: usize,
    pub rows: usize,
    pub labelled_rows: usize,
    pub new_labelled_rows: usize,
    pub train_s: f64,
    pub realized: Option<RealizedReport>,
}

impl RoundReport {
    /// The one line a person reads per round.
    pub fn line(&self) -> String {
        let mae = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.2}"));
        let mut s = match self.outcome {
            Outcome::Skipped => format!("round {}: skipped: {}", self.run_id, self.reason),
            _ => format!(
                "round {}: trained {} on {} machines, {} rows ({} labelled, {} new) in {:.1}s; \
                 held-out MAE challenger {} vs champion {} ({} windows): {}",
                self.run_id,
                self.challenger.as_deref().unwrap_or("-"),
                self.machines,
                self.rows,
                self.labelled_rows,
                self.new_labelled_rows,
                self.train_s,
                mae(self.challenger_mae),
                mae(self.champion_mae),
                self.eval_windows,
                self.reason
            ),
        };
        if let Some(r) = &self.realized {
            s.push_str(&format!("; {}", r.summary()));
        }
        s
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The service's Prometheus metrics.
#[derive(Default)]
struct Metrics {
    rounds: Family<OutcomeLabel, Counter>,
    last_round_ts: Gauge,
    round_seconds: Gauge<f64, AtomicU64>,
    challenger_mae: Gauge<f64, AtomicU64>,
    champion_mae: Gauge<f64, AtomicU64>,
    realized_mae: Gauge<f64, AtomicU64>,
}

impl Metrics {
    fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "maintcast_trainer_rounds",
            "Trainer rounds by outcome (promoted, not_promoted, skipped, failed)",
            self.rounds.clone(),
        );
        r.register(
            "maintcast_trainer_last_round_timestamp_seconds",
            "When the last round ended",
            self.last_round_ts.clone(),
        );
        r.register(
            "maintcast_trainer_round_duration_seconds",
            "Wall time of the last round",
            self.round_seconds.clone(),
        );
        r.register(
            "maintcast_trainer_challenger_mae_days",
            "Held-out MAE of the last challenger",
            self.challenger_mae.clone(),
        );
        r.register(
            "maintcast_trainer_champion_mae_days",
            "Held-out MAE of the serving version in the last round",
            self.champion_mae.clone(),
        );
        r.register(
            "maintcast_trainer_realized_mae_days",
            "MAE of forecasts scored against maintenance that happened",
            self.realized_mae.clone(),
        );
    }

    fn observe(&self, outcome: &str, report: Option<&RoundReport>, seconds: f64) {
        self.rounds
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.last_round_ts.set(chrono::Utc::now().timestamp());
        self.round_seconds.set(seconds);
        if let Some(r) = report {
            if let Some(m) = r.challenger_mae {
                self.challenger_mae.set(m);
            }
            if let Some(m) = r.champion_mae {
                self.champion_mae.set(m);
            }
            if let Some(m) = r.realized.as_ref().and_then(|r| r.overall_mae) {
                self.realized_mae.set(m);
            }
        }
    }
}

/// Runs the service until `shutdown` (with `--every`) or for one round (`--once`, the round's
/// outcome is returned).
pub async fn run(cfg: ServiceConfig, shutdown: Shutdown) -> Result<Outcome> {
    validate(&cfg)?;
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let _server = match cfg.args.http_addr {
        Some(addr) => {
            let mut reg = prometheus_client::registry::Registry::default();
            metrics.register(&mut reg);
            let (bound, handle) =
                maintcast_common::http::serve(addr, Arc::new(reg), ready.clone(), shutdown.clone())
                    .await?;
            tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}");
            Some(handle)
        }
        None => None,
    };
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let Some(every) = cfg.args.every else {
        let started = Instant::now();
        let result = round(cfg.clone()).await;
        let secs = started.elapsed().as_secs_f64();
        return match result {
            Ok(r) => {
                metrics.observe(outcome_name(r.outcome), Some(&r), secs);
                tracing::info!("{}", r.line());
                Ok(r.outcome)
            }
            Err(e) => {
                metrics.observe("failed", None, secs);
                Err(e)
            }
        };
    };
    let mut last = Outcome::Skipped;
    loop {
        let started = Instant::now();
        // A failed round is logged and retried at the next tick: a service that dies because
        // InfluxDB blinked would need a babysitter.
        tokio::select! {
            result = round(cfg.clone()) => {
                let secs = started.elapsed().as_secs_f64();
                match result {
                    Ok(r) => {
                        metrics.observe(outcome_name(r.outcome), Some(&r), secs);
                        tracing::info!("{}", r.line());
                        last = r.outcome;
                    }
                    Err(e) => {
                        metrics.observe("failed", None, secs);
                        tracing::error!("round failed: {e:#}");
                    }
                }
            }
            _ = shutdown.wait() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(started.elapsed())) => {}
            _ = shutdown.wait() => break,
        }
    }
    tracing::info!("trainer stopped");
    Ok(last)
}

/// For `maintcast train`: runs the service on its own runtime, stopping on SIGTERM or Ctrl-C, and
/// returns the exit code (the round's outcome with `--once`, 0 after a clean stop with `--every`).
pub fn run_blocking(cfg: ServiceConfig) -> Result<u8> {
    let once = cfg.args.every.is_none();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async {
        let shutdown = Shutdown::new();
        let signals = shutdown.clone();
        tokio::spawn(async move { signals.trigger_on_signals().await });
        run(cfg, shutdown).await
    })?;
    Ok(if once {
        outcome.exit_code()
    } else {
        EXIT_PROMOTED
    })
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

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Promoted => "promoted",
        Outcome::NotPromoted => "not_promoted",
        Outcome::Skipped => "skipped",
    }
}

fn validate(cfg: &ServiceConfig) -> Result<()> {
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

async fn round(cfg: Arc<ServiceConfig>) -> Result<RoundReport> {
    let run_id = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let history = match &cfg.source {
        HistorySource::Influx => {
            let influx = cfg.influx.as_ref().expect("validated");
            let mut q = HistoryQuery::new(influx.bucket.clone());
            q.page = cfg.args.page;
            q.machine_type = cfg.args.machine_type.clone();
            if let Some(s) = &cfg.args.since {
                q.since_ms = Some(parse_since(s, chrono::Utc::now().timestamp_millis())?);
            }
            influx_history::read_history(&influx.client()?, &q)
                .await
                .context("reading history from InfluxDB")?
        }
        HistorySource::Files(_) => {
            let c = cfg.clone();
            tokio::task::spawn_blocking(move || match &c.source {
                HistorySource::Files(load) => load(),
                HistorySource::Influx => unreachable!("matched above"),
            })
            .await??
        }
    };
    let realized = match &cfg.influx {
        Some(influx) => match realized::score(
            &influx.client()?,
            &influx.bucket,
            &cfg.name,
            cfg.recipe.data.cap as f64,
            cfg.args.warn_days,
            &history
                .machines
                .iter()
                .map(|m| m.machine_id.clone())
                .collect(),
        )
        .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("realized accuracy unavailable: {e:#}");
                None
            }
        },
        None => None,
    };
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || train_and_gate(&c, history, run_id, realized)).await?
}

/// Rows that have a label (an event at or after them), over all machines.
pub fn labelled_rows(h: &History) -> usize {
    h.machines
        .iter()
        .map(|m| {
            m.events
                .last()
                .map_or(0, |&e| m.ts.partition_point(|&t| t <= e))
        })
        .sum()
}

fn labelled_rows_until(h: &History, until_ms: i64) -> usize {
    h.machines
        .iter()
        .map(|m| {
            m.events
                .last()
                .map_or(0, |&e| m.ts.partition_point(|&t| t <= e.min(until_ms)))
        })
        .sum()
}

/// 64-bit FNV-1a with splitmix64's finaliser: stable across builds and platforms, unlike
/// `DefaultHasher`; the finaliser spreads ids that differ only in their last digit over the whole
/// range, which plain FNV does not.
fn stable_hash(s: &str) -> u64 {
    let mut z = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Indices of the machines held out for the champion/challenger comparison: those with labels
/// whose id hashes below the fraction, at least one and never all of them.
pub fn eval_machines(h: &History, fraction: f64) -> Vec<usize> {
    let labelled: Vec<usize> = (0..h.machines.len())
        .filter(|&i| !dataset::labelled_segments(&h.machines[i]).is_empty())
        .collect();
    if labelled.len() < 2 {
        return Vec::new();
    }
    let unit = |i: usize| stable_hash(&h.machines[i].machine_id) as f64 / u64::MAX as f64;
    let mut chosen: Vec<usize> = labelled
        .iter()
        .copied()
        .filter(|&i| unit(i) < fraction)
        .collect();
    if chosen.is_empty() {
        chosen.push(
            *labelled
                .iter()
                .min_by(|&&a, &&b| unit(a).total_cmp(&unit(b)))
                .expect("at least two"),
        );
    }
    if chosen.len() == labelled.len() {
        let worst = *chosen
            .iter()
            .max_by(|&&a, &&b| unit(a).total_cmp(&unit(b)))
            .expect("non-empty");
        chosen.retain(|&i| i != worst);
    }
    chosen
}

/// The last labelled segment of each machine: rows after its previous event up to its last one.
pub fn recent_stretch(machines: &[&MachineHistory]) -> History {
    let mut out = Vec::new();
    for m in machines {
        let Some(&(a, b)) = dataset::labelled_segments(m).last() else {
            continue;
        };
        let n = m.sensors.len();
        out.push(MachineHistory {
            machine_id: m.machine_id.clone(),
            machine_type: m.machine_type.clone(),
            site: m.site.clone(),
            ts: m.ts[a..b].to_vec(),
            sensors: m.sensors.clone(),
            values: m.values[a * n..b * n].to_vec(),
            events: vec![m.events[m.events.partition_point(|&e| e < m.ts[b - 1])]],
        });
    }
    History { machines: out }
}

/// Permutes each machine's rows among themselves, keeping times and events: the labels no longer
/// belong to the sensor values.
fn shuffle_rows(h: &mut History, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for m in &mut h.machines {
        let n = m.sensors.len();
        let mut order: Vec<usize> = (0..m.n_rows()).collect();
        order.shuffle(&mut rng);
        m.values = order
            .iter()
            .flat_map(|&r| m.values[r * n..(r + 1) * n].to_vec())
            .collect();
    }
}

fn train_and_gate(
    cfg: &ServiceConfig,
    history: History,
    run_id: String,
    realized: Option<RealizedReport>,
) -> Result<RoundReport> {
    let (reg, name) = (&cfg.registry, cfg.name.as_str());
    registry::remove_stale_staging(reg, name, Duration::from_secs(3600));
    let champion = maintcast_models::registry::current_version(reg, name)?;
    let champion_card = match &champion {
        Some(v) => artifact::read_card(&reg.join(name).join(v)).ok(),
        None => None,
    };
    let rows = history.n_rows();
    let labelled = labelled_rows(&history);
    let before = match &champion_card {
        Some(c) => c
            .data
            .get("labelled_rows")
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
            .or_else(|| {
                c.data
                    .get("last_ts_ms")
                    .and_then(|v| v.as_i64())
                    .map(|t| labelled_rows_until(&history, t))
            })
            .unwrap_or(0),
        None => 0,
    };
    let new_rows = labelled.saturating_sub(before);
    let mut report = RoundReport {
        run_id: run_id.clone(),
        outcome: Outcome::Skipped,
        reason: String::new(),
        champion: champion.clone(),
        challenger: None,
        challenger_mae: None,
        champion_mae: None,
        eval_windows: 0,
        machines: history.machines.len(),
        rows,
        labelled_rows: labelled,
        new_labelled_rows: new_rows,
        train_s: 0.0,
        realized: realized.clone(),
    };
    if labelled == 0 {
        report.reason = format!(
            "no labelled data yet ({} machines, {rows} rows, no maintenance event after any row)",
            history.machines.len()
        );
        return Ok(report);
    }
    if let Some(v) = &champion
        && new_rows < cfg.args.min_new_rows
    {
        report.reason = format!(
            "{new_rows} new labelled rows since {v} was trained ({labelled} in all); \
             --min-new-rows is {}",
            cfg.args.min_new_rows
        );
        return Ok(report);
    }

    let eval_idx = eval_machines(&history, cfg.args.eval_fraction);
    let eval_refs: Vec<&MachineHistory> = eval_idx.iter().map(|&i| &history.machines[i]).collect();
    let eval = recent_stretch(&eval_refs);
    let eval_ids: Vec<String> = eval.machines.iter().map(|m| m.machine_id.clone()).collect();
    let mut train_h = History {
        machines: history
            .machines
            .iter()
            .enumerate()
            .filter(|(i, _)| !eval_idx.contains(i))
            .map(|(_, m)| m.clone())
            .collect(),
    };
    if cfg.args.shuffle_labels {
        shuffle_rows(&mut train_h, cfg.recipe.train.seed ^ 0x5b0f_f1e5);
    }

    let device = train::parse_device(&cfg.device)?;
    let mut tb = match &cfg.args.tensorboard {
        Some(dir) => Some(EventWriter::create(&dir.join(name).join(&run_id))?),
        None => None,
    };
    let sink = match &cfg.influx {
        Some(i) => Some(TrainingRunSink::new(i)?),
        None => None,
    };
    let members = cfg.recipe.train.ensemble;
    let started = Instant::now();
    let trained = pipeline::train_model(&train_h, &cfg.recipe, &device, &mut |k, r| {
        let run = if members > 1 {
            format!("{run_id}-m{k}")
        } else {
            run_id.clone()
        };
        if let Some(sink) = &sink {
            sink.epoch(name, &run, r);
        }
        if let Some(tb) = tb.as_mut() {
            let step = (k * 100_000 + r.epoch) as i64;
            let _ = tb.add_scalars(
                step,
                &[
                    ("train_loss", r.train_loss as f32),
                    ("val_mae", r.val_mae as f32),
                    ("val_rmse", r.val_rmse as f32),
                    ("lr", r.lr as f32),
                ],
            );
        }
        tracing::debug!(
            "epoch {} train_loss {:.3} val_mae {:.3}",
            r.epoch,
            r.train_loss,
            r.val_mae
        );
    })?;
    report.train_s = started.elapsed().as_secs_f64();
    if let Some(sink) = &sink {
        sink.finish();
    }

    let staged = tempfile::tempdir().context("creating a staging directory")?;
    let mut card = trained.save(staged.path())?;
    let challenger = Forecaster::load(staged.path(), &device)?;
    let (challenger_mae, eval_windows) = match pipeline::evaluate_history(&challenger, &eval) {
        Ok(r) => (Some(r.mae), r.n),
        Err(e) => {
            tracing::warn!("the challenger cannot be scored on the held-out machines: {e}");
            (None, 0)
        }
    };
    let champion_mae = match &champion {
        Some(v) => {
            let dir = reg.join(name).join(v);
            match Forecaster::load(&dir, &device)
                .and_then(|f| pipeline::evaluate_history(&f, &eval))
            {
                Ok(r) => Some(r.mae),
                Err(e) => {
                    tracing::warn!(
                        "the serving version {v} cannot be scored on the held-out machines: {e}"
                    );
                    None
                }
            }
        }
        None => None,
    };
    let realized_mae = realized
        .as_ref()
        .and_then(|r| r.version_mae(champion.as_deref().unwrap_or_default()));
    let (promote, reason) = gate(
        champion.as_deref(),
        challenger_mae,
        champion_mae,
        cfg.args.margin,
        cfg.args.realized_gate.then_some(realized_mae).flatten(),
    );

    card.parent_version = champion.clone();
    card.data["labelled_rows"] = serde_json::json!(labelled);
    card.data["eval_machines"] = serde_json::json!(eval_ids);
    card.data["source"] = serde_json::json!(match cfg.source {
        HistorySource::Influx => "influxdb",
        HistorySource::Files(_) => "files",
    });
    card.training["run_id"] = serde_json::json!(run_id);
    card.training["wall_s"] = serde_json::json!(report.train_s);
    card.training["shuffled_labels"] = serde_json::json!(cfg.args.shuffle_labels);
    card.metrics["holdout"] = serde_json::json!({
        "challenger_mae": challenger_mae, "champion_mae": champion_mae,
        "champion_version": champion, "windows": eval_windows, "machines": eval_ids,
    });
    card.metrics["gate"] =
        serde_json::json!({ "promoted": promote, "reason": reason, "margin": cfg.args.margin });
    if let Some(r) = &realized {
        card.metrics["realized_at_training"] = serde_json::to_value(r)?;
    }
    // The weights are already written and hashed; only the card gains the round's facts.
    std::fs::write(
        staged.path().join(artifact::CARD_FILE),
        serde_json::to_string_pretty(&card)?,
    )?;
    let version = maintcast_models::registry::publish(reg, name, staged.path())?;
    if promote {
        registry::promote(
            reg,
            name,
            &version,
            &format!("trainer round {run_id}: {reason}"),
        )?;
    }
    if let Some(tb) = tb.as_mut() {
        let _ = tb.add_text("round", &format!("{version}: {reason}"), 0);
        let _ = tb.flush();
    }
    report.outcome = if promote {
        Outcome::Promoted
    } else {
        Outcome::NotPromoted
    };
    report.reason = reason;
    report.challenger = Some(version);
    report.challenger_mae = challenger_mae;
    report.champion_mae = champion_mae;
    report.eval_windows = eval_windows;
    Ok(report)
}

/// The promotion rule. `realized` is the serving version's realized MAE when the realized gate is
/// on and there is one.
pub fn gate(
    champion: Option<&str>,
    challenger_mae: Option<f64>,
    champion_mae: Option<f64>,
    margin: f64,
    realized: Option<f64>,
) -> (bool, String) {
    let Some(champion) = champion else {
        return (true, "promoted: first version of this model".into());
    };
    let Some(ch) = challenger_mae.filter(|m| m.is_finite()) else {
        return (
            false,
            "not promoted: the challenger could not be scored on held-out machines".into(),
        );
    };
    let Some(cm) = champion_mae.filter(|m| m.is_finite()) else {
        return (
            true,
            format!("promoted: the serving {champion} cannot be scored on the current data"),
        );
    };
    let need = cm * (1.0 - margin);
    if ch > need {
        return (
            false,
            format!(
                "not promoted: {ch:.2} is not {:.0}% better than {champion}'s {cm:.2} (needs <= {need:.2})",
                margin * 100.0
            ),
        );
    }
    if let Some(r) = realized
        && r < ch
    {
        return (
            false,
            format!(
                "not promoted: {champion}'s realized MAE {r:.2} is better than the challenger's {ch:.2}"
            ),
        );
    }
    (
        true,
        format!(
            "promoted: {ch:.2} beats {champion}'s {cm:.2} by more than {:.0}%",
            margin * 100.0
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_models::history::DAY_MS;

    fn machine(id: &str, rows: usize, events_at: &[usize]) -> MachineHistory {
        MachineHistory {
            machine_id: id.into(),
            ts: (0..rows as i64).map(|d| d * DAY_MS).collect(),
            sensors: vec!["a".into()],
            values: (0..rows).map(|r| r as f32).collect(),
            events: events_at.iter().map(|&r| r as i64 * DAY_MS).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn gate_needs_the_margin_and_respects_realized_accuracy() {
        assert!(gate(None, None, None, 0.1, None).0);
        assert!(gate(Some("v1"), Some(8.9), Some(10.0), 0.1, None).0);
        let (p, why) = gate(Some("v1"), Some(9.5), Some(10.0), 0.1, None);
        assert!(!p && why.contains("not 10% better"), "{why}");
        assert!(!gate(Some("v1"), None, Some(10.0), 0.1, None).0);
        assert!(!gate(Some("v1"), Some(f64::NAN), Some(10.0), 0.1, None).0);
        assert!(gate(Some("v1"), Some(5.0), None, 0.1, None).0);
        let (p, why) = gate(Some("v1"), Some(5.0), Some(10.0), 0.1, Some(4.0));
        assert!(!p && why.contains("realized"), "{why}");
        assert!(gate(Some("v1"), Some(5.0), Some(10.0), 0.1, Some(6.0)).0);
    }

    #[test]
    fn labelled_rows_stop_at_each_machines_last_event() {
        let h = History {
            machines: vec![
                machine("a", 10, &[3, 6]),
                machine("b", 5, &[]),
                machine("c", 4, &[3]),
            ],
        };
        // a: rows 0..=6, b: no event, c: rows 0..=3
        assert_eq!(labelled_rows(&h), 11);
        assert_eq!(labelled_rows_until(&h, 2 * DAY_MS), 3 + 3);
    }

    #[test]
    fn eval_machines_are_stable_partial_and_labelled() {
        let machines: Vec<MachineHistory> = (0..50)
            .map(|i| machine(&format!("m{i:02}"), 5, if i == 7 { &[] } else { &[4] }))
            .collect();
        let h = History { machines };
        let e = eval_machines(&h, 0.2);
        assert!((3..=20).contains(&e.len()), "{}", e.len());
        assert!(!e.contains(&7));
        // the same machines whatever their order
        let mut rev = h.clone();
        rev.machines.reverse();
        let mut a: Vec<&str> = e
            .iter()
            .map(|&i| h.machines[i].machine_id.as_str())
            .collect();
        let mut b: Vec<&str> = eval_machines(&rev, 0.2)
            .iter()
            .map(|&i| rev.machines[i].machine_id.as_str())
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // two labelled machines: one held out, one left to train on
        let two = History {
            machines: vec![machine("x", 5, &[4]), machine("y", 5, &[4])],
        };
        assert_eq!(eval_machines(&two, 0.99).len(), 1);
        assert_eq!(eval_machines(&two, 0.000_001).len(), 1);
    }

    #[test]
    fn recent_stretch_is_the_last_run_to_maintenance() {
        let m = machine("a", 12, &[3, 8]);
        let h = recent_stretch(&[&m]);
        let s = &h.machines[0];
        assert_eq!(s.ts.first(), Some(&(4 * DAY_MS)));
        assert_eq!(s.ts.last(), Some(&(8 * DAY_MS)));
        assert_eq!(s.values, [4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(s.events, [8 * DAY_MS]);
        assert!(recent_stretch(&[&machine("b", 3, &[])]).machines.is_empty());
    }

    #[test]
    fn shuffled_rows_keep_times_and_the_multiset_of_values() {
        let mut h = History {
            machines: vec![machine("a", 50, &[49])],
        };
        shuffle_rows(&mut h, 1);
        let m = &h.machines[0];
        assert_ne!(m.values, (0..50).map(|r| r as f32).collect::<Vec<_>>());
        let mut v = m.values.clone();
        v.sort_by(f32::total_cmp);
        assert_eq!(v, (0..50).map(|r| r as f32).collect::<Vec<_>>());
        assert_eq!(m.ts[49], 49 * DAY_MS);
    }

    #[test]
    fn since_accepts_times_and_durations() {
        assert_eq!(parse_since("1000", 0).unwrap(), 1000);
        assert_eq!(parse_since("1d", 2 * DAY_MS).unwrap(), DAY_MS);
        assert!(parse_since("yesterday-ish", 0).is_err());
    }
}
