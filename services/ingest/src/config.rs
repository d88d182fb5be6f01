//! The ingest service's settings: every default lives here (the CLI reads them from here too), and
//! `validate` refuses a configuration that would panic or silently misbehave, naming the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use maintcast_common::influx::InfluxConfig;
use maintcast_proto::Limits;

use crate::alerts::AlertRule;
use crate::quality::QualityConfig;

#[derive(Debug, Clone)]
pub struct Topics {
    pub telemetry: String,
    pub events: String,
    pub dlq: String,
    pub alerts: String,
    /// Compacted topic of window checkpoints (created if missing).
    pub checkpoint: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            telemetry: defaults::TELEMETRY_TOPIC.into(),
            events: defaults::EVENTS_TOPIC.into(),
            dlq: defaults::DLQ_TOPIC.into(),
            alerts: defaults::ALERTS_TOPIC.into(),
            checkpoint: defaults::CHECKPOINT_TOPIC.into(),
        }
    }
}

/// The defaults, as constants so `maintcast ingest --help` shows the same values the library uses.
pub mod defaults {
    pub const GROUP_ID: &str = "maintcast-ingest";
    pub const TELEMETRY_TOPIC: &str = "telemetry";
    pub const EVENTS_TOPIC: &str = "maintenance-events";
    pub const DLQ_TOPIC: &str = "telemetry-dlq";
    pub const ALERTS_TOPIC: &str = "maintenance-alerts";
    pub const CHECKPOINT_TOPIC: &str = "ingest-windows-checkpoint";
    pub const MODEL: &str = "maintcast";
    pub const DEVICE: &str = "cpu";
    pub const BATCH_SIZE: usize = 64;
    pub const LINGER: &str = "20ms";
    pub const STRIDE: u64 = 1;
    pub const QUEUE_CAPACITY: usize = 4096;
    pub const WRITE_BATCH: usize = 5000;
    pub const COMMIT_INTERVAL: &str = "5s";
    pub const RELOAD_INTERVAL: &str = "10s";
    pub const DRAIN_TIMEOUT: &str = "60s";
    pub const ALERT_THRESHOLD_DAYS: f64 = 7.0;
    pub const ALERT_HYSTERESIS_DAYS: f64 = 1.0;
    pub const HTTP_ADDR: &str = "127.0.0.1:9464";
    /// Checkpoint topic partitions: a handful spreads restore reads; more buys nothing.
    pub const CHECKPOINT_PARTITIONS: i32 = 6;
    /// -1 = the cluster's `default.replication.factor`, which is what its operators chose as safe.
    pub const CHECKPOINT_REPLICATION: i32 = -1;
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("default durations parse")
}

#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub group_id: String,
    pub topics: Topics,
    pub influx: InfluxConfig,
    pub registry: PathBuf,
    pub model: String,
    pub device: String,
    pub batch_size: usize,
    pub linger: Duration,
    pub stride: u64,
    /// Windows waiting for inference; when full, consumption waits (bounded memory).
    pub queue_capacity: usize,
    /// Points per InfluxDB write.
    pub write_batch: usize,
    pub commit_interval: Duration,
    pub reload_interval: Duration,
    pub alert: AlertRule,
    /// Also write raw rows and events to `telemetry` / `maintenance_event` (the trainer's history).
    pub write_raw: bool,
    pub limits: Limits,
    pub http_addr: SocketAddr,
    /// How long a shutdown may wait for outstanding writes before giving up.
    pub drain_timeout: Duration,
    pub checkpoint_partitions: i32,
    /// Replication factor of the checkpoint topic when ingest creates it; -1 = cluster default.
    pub checkpoint_replication: i32,
    /// Input-quality checks on each forecast's window.
    pub quality: QualityConfig,
}

impl Config {
    pub fn new(brokers: &str, influx: InfluxConfig, registry: PathBuf) -> Self {
        Config {
            brokers: brokers.into(),
            group_id: defaults::GROUP_ID.into(),
            topics: Topics::default(),
            influx,
            registry,
            model: defaults::MODEL.into(),
            device: defaults::DEVICE.into(),
            batch_size: defaults::BATCH_SIZE,
            linger: duration(defaults::LINGER),
            stride: defaults::STRIDE,
            queue_capacity: defaults::QUEUE_CAPACITY,
            write_batch: defaults::WRITE_BATCH,
            commit_interval: duration(defaults::COMMIT_INTERVAL),
            reload_interval: duration(defaults::RELOAD_INTERVAL),
            alert: AlertRule {
                threshold_days: defaults::ALERT_THRESHOLD_DAYS,
                hysteresis_days: defaults::ALERT_HYSTERESIS_DAYS,
            },
            write_raw: false,
            limits: Limits::default(),
            http_addr: defaults::HTTP_ADDR.parse().expect("literal address"),
            drain_timeout: duration(defaults::DRAIN_TIMEOUT),
            checkpoint_partitions: defaults::CHECKPOINT_PARTITIONS,
            checkpoint_replication: defaults::CHECKPOINT_REPLICATION,
            quality: QualityConfig::default(),
        }
    }

    /// Every problem at once, each naming the flag that sets it, so one restart fixes them all.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, flag: &str, rule: &str| {
            if !ok {
                problems.push(format!("--{flag}: {rule}"));
            }
        };
        check(
            !self.brokers.trim().is_empty(),
            "brokers",
            "must not be empty",
        );
        check(
            !self.group_id.trim().is_empty(),
            "group-id",
            "must not be empty",
        );
        check(!self.model.trim().is_empty(), "model", "must not be empty");
        for (flag, topic) in [
            ("telemetry-topic", &self.topics.telemetry),
            ("events-topic", &self.topics.events),
            ("dlq-topic", &self.topics.dlq),
            ("alerts-topic", &self.topics.alerts),
            ("checkpoint-topic", &self.topics.checkpoint),
        ] {
            check(!topic.trim().is_empty(), flag, "must not be empty");
        }
        let t = &self.topics;
        let inputs = [&t.telemetry, &t.events];
        for (flag, out) in [
            ("dlq-topic", &t.dlq),
            ("alerts-topic", &t.alerts),
            ("checkpoint-topic", &t.checkpoint),
        ] {
            check(
                !inputs.contains(&out),
                flag,
                "must differ from the telemetry and events topics (ingest would consume its own output)",
            );
        }
        check(
            t.telemetry != t.events,
            "events-topic",
            "must differ from --telemetry-topic",
        );
        check(self.batch_size >= 1, "batch-size", "must be at least 1");
        check(self.stride >= 1, "stride", "must be at least 1");
        check(
            self.queue_capacity >= 1,
            "queue-capacity",
            "must be at least 1",
        );
        check(self.write_batch >= 1, "write-batch", "must be at least 1");
        for (flag, d) in [
            ("commit-interval", self.commit_interval),
            ("reload-interval", self.reload_interval),
            ("drain-timeout", self.drain_timeout),
        ] {
            check(!d.is_zero(), flag, "must be longer than 0s");
        }
        check(
            self.linger <= Duration::from_secs(60),
            "linger",
            "must be at most 60s (forecasts would wait that long for a batch)",
        );
        let a = &self.alert;
        check(
            a.threshold_days.is_finite() && a.threshold_days >= 0.0,
            "alert-threshold-days",
            "must be a number of days, 0 or more",
        );
        check(
            a.hysteresis_days.is_finite() && a.hysteresis_days >= 0.0,
            "alert-hysteresis-days",
            "must be a number of days, 0 or more",
        );
        check(
            self.limits.max_bytes >= 1,
            "max-message-bytes",
            "must be at least 1",
        );
        check(
            self.limits.max_future_ms.is_none_or(|ms| ms >= 0),
            "max-future",
            "must be 0 or more, or off",
        );
        check(
            self.checkpoint_partitions >= 1,
            "checkpoint-partitions",
            "must be at least 1",
        );
        check(
            self.checkpoint_replication == -1 || self.checkpoint_replication >= 1,
            "checkpoint-replication",
            "must be at least 1, or -1 for the cluster's default",
        );
        check(
            !self.influx.url.trim().is_empty(),
            "MAINTCAST_INFLUX_URL",
            "must not be empty",
        );
        check(
            !self.influx.bucket.trim().is_empty(),
            "MAINTCAST_INFLUX_BUCKET",
            "must not be empty",
        );
        problems.extend(self.quality.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

/// The configuration problems found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid ingest configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_common::config::Secret;

    fn config() -> Config {
        Config::new(
            "127.0.0.1:1",
            InfluxConfig {
                url: "http://127.0.0.1:1".into(),
                org: "o".into(),
                bucket: "b".into(),
                token: Secret::new("t"),
                token_file: None,
            },
            "registry".into(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn every_zero_or_negative_setting_names_its_flag() {
        let mut c = config();
        c.commit_interval = Duration::ZERO;
        c.reload_interval = Duration::ZERO;
        c.drain_timeout = Duration::ZERO;
        c.batch_size = 0;
        c.stride = 0;
        c.queue_capacity = 0;
        c.write_batch = 0;
        c.alert.threshold_days = f64::NAN;
        c.alert.hysteresis_days = -1.0;
        c.limits.max_bytes = 0;
        c.checkpoint_partitions = 0;
        c.checkpoint_replication = 0;
        let err = c.validate().unwrap_err();
        for flag in [
            "--commit-interval",
            "--reload-interval",
            "--drain-timeout",
            "--batch-size",
            "--stride",
            "--queue-capacity",
            "--write-batch",
            "--alert-threshold-days",
            "--alert-hysteresis-days",
            "--max-message-bytes",
            "--checkpoint-partitions",
            "--checkpoint-replication",
        ] {
            assert!(
                err.0.iter().any(|p| p.starts_with(flag)),
                "{flag} not named in {err}"
            );
        }
        assert_eq!(err.0.len(), 12, "{err}");
    }

    #[test]
    fn output_topics_may_not_feed_back_into_the_input() {
        let mut c = config();
        c.topics.dlq = c.topics.telemetry.clone();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--dlq-topic"), "{err}");
    }
}
