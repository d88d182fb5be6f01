//! The trainer's Prometheus metrics (`/metrics` with `--http-addr`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::report::RoundReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The service's Prometheus metrics (docs/metrics.md).
#[derive(Default)]
pub struct Metrics {
    rounds: Family<OutcomeLabel, Counter>,
    last_round_ts: Gauge,
    round_seconds: Gauge<f64, AtomicU64>,
    challenger_mae: Gauge<f64, AtomicU64>,
    champion_mae: Gauge<f64, AtomicU64>,
    realized_mae: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
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

    pub(crate) fn observe(&self, outcome: &str, report: Option<&RoundReport>, seconds: f64) {
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
