//! Realized accuracy in the stream (docs/LIVE_EVALUATION.md): when a maintenance event is applied,
//! a job is queued; this task reads that machine's served and shadow forecasts of the life that
//! just ended back from InfluxDB, scores them (`maintcast_models::accuracy`), writes
//! `forecast_accuracy` and keeps the running MAE and coverage per model version for /metrics.
//!
//! Off the hot path: the service loop hands a job over once the event's epoch settles, when every
//! forecast made before the event is acknowledged by InfluxDB, so the read-back sees all of them; only the
//! commit past the event waits for its score.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result};
use influxdb2::models::{DataPoint, Query};
use maintcast_common::flux::{escape, number, string, time as flux_time, time_ms};
use maintcast_common::influx::{InfluxConfig, WriteError, Writer};
use maintcast_common::shutdown::Shutdown;
use maintcast_models::accuracy::{EventScore, PastForecast, Role, Tally};
use maintcast_proto::MaintenanceKind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::offsets::{Ack, Epoch};

/// Where the served forecasts are.
pub const SERVED_MEASUREMENT: &str = maintcast_common::points::forecast::MEASUREMENT;
/// Where the shadow model's forecasts are: a measurement of their own, so that no query of served
/// forecasts can take them in by mistake.
pub const SHADOW_MEASUREMENT: &str = maintcast_common::points::forecast::SHADOW_MEASUREMENT;
pub const ACCURACY_MEASUREMENT: &str = maintcast_common::points::forecast_accuracy::MEASUREMENT;

/// A maintenance event to score.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreJob {
    pub machine_id: String,
    /// The machine's previous event: forecasts at or before it belong to its earlier life.
    pub since_ms: Option<i64>,
    pub event_ms: i64,
    pub kind: MaintenanceKind,
    /// The ledger epoch its acknowledgement settles, set when the loop releases it.
    pub epoch: Epoch,
}

/// How far back the first event of a machine (no previous event known) looks for forecasts.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(365 * 86_400);
/// One read-back query covers at most this much time, so a long life never arrives whole.
pub const PAGE: Duration = Duration::from_secs(7 * 86_400);

#[derive(Clone, Default)]
pub struct AccuracyMetrics {
    /// Running realized MAE since the service started, by `model_version` and `role`.
    pub mae: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    /// Running share of forecasts whose p10-p90 interval held the truth.
    pub coverage: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    pub forecasts: Family<Vec<(String, String)>, Counter>,
    pub events: Counter,
    pub failures: Counter,
}

impl AccuracyMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "realized_mae_days",
            "Realized MAE of forecasts scored at maintenance events since start, by model_version and role",
            self.mae.clone(),
        );
        r.register(
            "realized_coverage",
            "Share of scored forecasts whose p10-p90 interval held the truth, by model_version and role",
            self.coverage.clone(),
        );
        r.register(
            "forecasts_scored",
            "Forecasts scored against maintenance events, by model_version and role",
            self.forecasts.clone(),
        );
        r.register(
            "events_scored",
            "Maintenance events scored",
            self.events.clone(),
        );
        r.register(
            "scoring_failures",
            "Maintenance events that could not be scored (InfluxDB unreachable at shutdown, bad points)",
            self.failures.clone(),
        );
    }
}

pub struct Scorer {
    client: influxdb2::Client,
    writer: Writer,
    bucket: String,
    registry: PathBuf,
    model: String,
    lookback_ms: i64,
    caps: HashMap<String, Option<f64>>,
    running: HashMap<(String, Role), Tally>,
    metrics: AccuracyMetrics,
}

impl Scorer {
    pub fn new(
        influx: &InfluxConfig,
        registry: PathBuf,
        model: String,
        metrics: AccuracyMetrics,
    ) -> Result<Self> {
        Ok(Scorer {
            client: influx.client()?,
            writer: Writer::new(influx)?,
            bucket: influx.bucket.clone(),
            registry,
            model,
            lookback_ms: DEFAULT_LOOKBACK.as_millis() as i64,
            caps: HashMap::new(),
            running: HashMap::new(),
            metrics,
        })
    }

    /// The cap a version was trained with, from its card; `None` (its forecasts are skipped)
    /// when the card is gone or unreadable.
    fn cap(&mut self, version: &str) -> Option<f64> {
        if let Some(c) = self.caps.get(version) {
            return *c;
        }
        let dir = self.registry.join(&self.model).join(version);
        let cap = match maintcast_models::artifact::read_card(&dir) {
            Ok(card) => Some(card.target.cap as f64),
            Err(e) => {
                tracing::warn!(version, error = %e, "no cap for this version: its forecasts are not scored");
                None
            }
        };
        self.caps.insert(version.to_string(), cap);
        cap
    }

    /// Reads, scores and writes one event. Returns the tallies written.
    pub async fn score(&mut self, job: &ScoreJob, shutdown: &Shutdown) -> Result<EventScore> {
        let mut score = EventScore::new(job.since_ms, job.event_ms);
        let start = job
            .since_ms
            .map_or(job.event_ms - self.lookback_ms, |s| s + 1);
        let page = PAGE.as_millis() as i64;
        let mut from = start;
        while from <= job.event_ms {
            let to = (from + page).min(job.event_ms + 1);
            for f in self.read_page(&job.machine_id, from, to).await? {
                if let Some(cap) = self.cap(&f.version) {
                    score.add(&f, cap);
                }
            }
            from = to;
        }
        let points = points(&self.model, job, &score)?;
        if !points.is_empty() {
            // A handful of points per event: never too large to write in one request.
            self.writer
                .write(&points, shutdown, 3, |_, _| {})
                .await
                .map_err(|e: WriteError| anyhow::anyhow!(e))?;
        }
        self.metrics.events.inc();
        let mut seen: Vec<(String, Role)> = Vec::new();
        for (k, t) in &score.tallies {
            let id = (k.version.clone(), k.role);
            self.running.entry(id.clone()).or_default().merge(t);
            self.metrics
                .forecasts
                .get_or_create(&labels(&id))
                .inc_by(t.n);
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        for id in seen {
            let t = self.running[&id];
            let l = labels(&id);
            self.metrics
                .mae
                .get_or_create(&l)
                .set(t.mae().unwrap_or(0.0));
            self.metrics
                .coverage
                .get_or_create(&l)
                .set(t.coverage().unwrap_or(0.0));
        }
        Ok(score)
    }

    async fn read_page(&self, machine: &str, from: i64, to: i64) -> Result<Vec<PastForecast>> {
        let flux = format!(
            r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => (r._measurement == "{served}" or r._measurement == "{shadow}") and r.machine_id == "{m}" and r.model == "{model}")
  |> filter(fn: (r) => r._field == "days_to_maintenance" or r._field == "days_p10" or r._field == "days_p90")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> keep(columns: ["_time", "_measurement", "model_version", "days_to_maintenance", "days_p10", "days_p90"])"#,
            b = escape(&self.bucket),
            s = flux_time(from),
            e = flux_time(to),
            served = SERVED_MEASUREMENT,
            shadow = SHADOW_MEASUREMENT,
            m = escape(machine),
            model = escape(&self.model),
        );
        let records = tokio::time::timeout(
            Duration::from_secs(60),
            self.client.query_raw(Some(Query::new(flux))),
        )
        .await
        .map_err(|_| anyhow::anyhow!("InfluxDB query timed out"))?
        .map_err(|e| anyhow::anyhow!("reading forecasts back failed: {e}"))?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let v = &r.values;
                let role = match string(v.get("_measurement"))?.as_str() {
                    SHADOW_MEASUREMENT => Role::Shadow,
                    _ => Role::Champion,
                };
                Some(PastForecast {
                    ts_ms: time_ms(v.get("_time"))?,
                    model: self.model.clone(),
                    version: string(v.get("model_version"))?,
                    role,
                    days: number(v.get("days_to_maintenance"))?,
                    p10: number(v.get("days_p10"))?,
                    p90: number(v.get("days_p90"))?,
                })
            })
            .collect())
    }
}

fn labels((version, role): &(String, Role)) -> Vec<(String, String)> {
    vec![
        ("model_version".into(), version.clone()),
        ("role".into(), role.as_str().into()),
    ]
}

/// The `forecast_accuracy` points of one scored event.
pub fn points(model: &str, job: &ScoreJob, score: &EventScore) -> Result<Vec<DataPoint>> {
    let mut out = Vec::with_capacity(score.tallies.len());
    for (k, t) in &score.tallies {
        let n = t.n.max(1) as f64;
        out.push(
            DataPoint::builder(ACCURACY_MEASUREMENT)
                .tag("machine_id", &job.machine_id)
                .tag("model", model)
                .tag("model_version", &k.version)
                .tag("role", k.role.as_str())
                .tag("band", k.band.as_str())
                .tag("kind", job.kind.as_str())
                .field("n", t.n as i64)
                .field("error_sum", t.error_sum)
                .field("abs_error_sum", t.abs_error_sum)
                .field("covered", t.covered as i64)
                .field("mae", t.abs_error_sum / n)
                .field("bias", t.error_sum / n)
                .field("coverage", t.covered as f64 / n)
                .timestamp(job.event_ms)
                .build()
                .context("building a forecast_accuracy point")?,
        );
    }
    Ok(out)
}

/// Scores the jobs `rx` hands over, one at a time, until the channel closes, acknowledging each
/// scored one. A job that fails (InfluxDB unreachable) is retried with a growing pause; one still
/// failing at shutdown stays unacknowledged, so its event is not committed and is scored again
/// after the restart.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<ScoreJob>,
    mut scorer: Scorer,
    acks: mpsc::UnboundedSender<Ack>,
    shutdown: Shutdown,
) {
    while let Some(job) = rx.recv().await {
        let mut backoff = maintcast_common::influx::Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(10),
        );
        loop {
            match scorer.score(&job, &shutdown).await {
                Ok(s) => {
                    tracing::info!(
                        machine_id = job.machine_id,
                        event_ms = job.event_ms,
                        kind = job.kind.as_str(),
                        points = s.tallies.len(),
                        "maintenance event scored"
                    );
                    let _ = acks.send(Ack::Scored(job.epoch));
                    break;
                }
                Err(e) if shutdown.is_triggered() => {
                    tracing::warn!(
                        machine_id = job.machine_id,
                        error = format!("{e:#}"),
                        "event not scored before shutdown"
                    );
                    scorer.metrics.failures.inc();
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        machine_id = job.machine_id,
                        error = format!("{e:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "scoring failed"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
