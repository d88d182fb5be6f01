//! `maintcast ingest`: flags and environment -> `maintcast_ingest::Config`, then the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_ingest::alerts::AlertRule;
use maintcast_ingest::config::defaults;
use maintcast_ingest::quality::QualityConfig;

/// Every flag is also `MAINTCAST_<NAME>`; the InfluxDB token only comes from the environment
/// (`MAINTCAST_INFLUX_TOKEN` or `MAINTCAST_INFLUX_TOKEN_FILE`); Kafka client properties pass
/// through as `MAINTCAST_KAFKA_<PROP>`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(
        long,
        env = "MAINTCAST_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    #[arg(long, env = "MAINTCAST_GROUP_ID", default_value = defaults::GROUP_ID)]
    group_id: String,
    #[arg(long, env = "MAINTCAST_TELEMETRY_TOPIC", default_value = defaults::TELEMETRY_TOPIC)]
    telemetry_topic: String,
    #[arg(
        long,
        env = "MAINTCAST_EVENTS_TOPIC",
        default_value = defaults::EVENTS_TOPIC
    )]
    events_topic: String,
    #[arg(long, env = "MAINTCAST_DLQ_TOPIC", default_value = defaults::DLQ_TOPIC)]
    dlq_topic: String,
    #[arg(
        long,
        env = "MAINTCAST_ALERTS_TOPIC",
        default_value = defaults::ALERTS_TOPIC
    )]
    alerts_topic: String,
    /// Compacted topic holding window checkpoints.
    #[arg(
        long,
        env = "MAINTCAST_CHECKPOINT_TOPIC",
        default_value = defaults::CHECKPOINT_TOPIC
    )]
    checkpoint_topic: String,
    /// Model registry directory (docs/registry.md).
    #[arg(long, env = "MAINTCAST_REGISTRY", default_value = "models/registry")]
    registry: PathBuf,
    #[arg(long, env = "MAINTCAST_MODEL", default_value = defaults::MODEL)]
    model: String,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = defaults::DEVICE)]
    device: String,
    /// Windows per inference batch.
    #[arg(long, env = "MAINTCAST_BATCH_SIZE", default_value_t = defaults::BATCH_SIZE)]
    batch_size: usize,
    /// Longest wait for a batch to fill.
    #[arg(long, env = "MAINTCAST_LINGER", default_value = defaults::LINGER, value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Forecast every k-th row of each machine.
    #[arg(long, env = "MAINTCAST_STRIDE", default_value_t = defaults::STRIDE)]
    stride: u64,
    #[arg(long, env = "MAINTCAST_QUEUE_CAPACITY", default_value_t = defaults::QUEUE_CAPACITY)]
    queue_capacity: usize,
    #[arg(long, env = "MAINTCAST_WRITE_BATCH", default_value_t = defaults::WRITE_BATCH)]
    write_batch: usize,
    #[arg(long, env = "MAINTCAST_COMMIT_INTERVAL", default_value = defaults::COMMIT_INTERVAL, value_parser = humantime::parse_duration)]
    commit_interval: Duration,
    #[arg(long, env = "MAINTCAST_RELOAD_INTERVAL", default_value = defaults::RELOAD_INTERVAL, value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    #[arg(long, env = "MAINTCAST_ALERT_THRESHOLD_DAYS", default_value_t = defaults::ALERT_THRESHOLD_DAYS, allow_negative_numbers = true)]
    alert_threshold_days: f64,
    #[arg(long, env = "MAINTCAST_ALERT_HYSTERESIS_DAYS", default_value_t = defaults::ALERT_HYSTERESIS_DAYS, allow_negative_numbers = true)]
    alert_hysteresis_days: f64,
    /// Also write raw telemetry and maintenance events to InfluxDB.
    #[arg(long, env = "MAINTCAST_WRITE_RAW")]
    write_raw: bool,
    #[arg(long, env = "MAINTCAST_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    max_message_bytes: usize,
    /// Largest accepted clock skew into the future; "off" disables the check (replays).
    #[arg(long, env = "MAINTCAST_MAX_FUTURE", default_value = "1day")]
    max_future: String,
    #[arg(long, env = "MAINTCAST_HTTP_ADDR", default_value = defaults::HTTP_ADDR)]
    http_addr: SocketAddr,
    /// How long shutdown (and a revoke) waits for outstanding writes before giving up; a commit
    /// waits a third of it for its window checkpoints, then is postponed.
    #[arg(long, env = "MAINTCAST_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Partitions of the checkpoint topic, when ingest creates it.
    #[arg(long, env = "MAINTCAST_CHECKPOINT_PARTITIONS", default_value_t = defaults::CHECKPOINT_PARTITIONS)]
    checkpoint_partitions: i32,
    /// Replication factor of the checkpoint topic, when ingest creates it; -1 = the cluster's
    /// default.replication.factor.
    #[arg(long, env = "MAINTCAST_CHECKPOINT_REPLICATION", default_value_t = defaults::CHECKPOINT_REPLICATION, allow_negative_numbers = true)]
    checkpoint_replication: i32,
    /// Oldest accepted timestamp (RFC 3339 or "off"): catches epoch seconds sent as milliseconds,
    /// which would land in January 1970.
    #[arg(
        long,
        env = "MAINTCAST_MIN_TIMESTAMP",
        default_value = "2000-01-01T00:00:00Z"
    )]
    min_timestamp: String,
    #[command(flatten)]
    quality: QualityArgs,
}

/// Input-quality checks on each forecast's window (docs/influxdb.md, `quality_*` fields).
#[derive(clap::Args, Debug)]
struct QualityArgs {
    /// Fewest identical consecutive values that make a sensor stuck (a sensor that repeats
    /// itself often in training needs a longer run, see --quality-stuck-chance).
    #[arg(long, env = "MAINTCAST_QUALITY_STUCK_ROWS", default_value_t = QualityConfig::default().stuck_rows)]
    quality_stuck_rows: u16,
    /// Chance of a healthy sensor repeating itself as long as a run called stuck, judged from
    /// how often it repeated in the training data.
    #[arg(long, env = "MAINTCAST_QUALITY_STUCK_CHANCE", default_value_t = QualityConfig::default().stuck_chance)]
    quality_stuck_chance: f32,
    /// Out of range: beyond the training min..max by this share of that span.
    #[arg(long, env = "MAINTCAST_QUALITY_RANGE_MARGIN", default_value_t = QualityConfig::default().range_margin)]
    quality_range_margin: f32,
    /// Missing: more than this share of a sensor's values in the window were filled in.
    #[arg(long, env = "MAINTCAST_QUALITY_MISSING_SHARE", default_value_t = QualityConfig::default().missing_share)]
    quality_missing_share: f32,
    /// Drift: the window mean is more than this many training standard deviations from the
    /// training mean.
    #[arg(long, env = "MAINTCAST_QUALITY_DRIFT_Z", default_value_t = QualityConfig::default().drift_z)]
    quality_drift_z: f32,
    /// Forecasts whose share of clean sensors is below this are low-confidence: interval
    /// widened by 1/max(score, 0.25) on each side, alerts marked low_confidence.
    #[arg(long, env = "MAINTCAST_QUALITY_MIN_SCORE", default_value_t = QualityConfig::default().min_score)]
    quality_min_score: f32,
}

impl From<QualityArgs> for QualityConfig {
    fn from(a: QualityArgs) -> Self {
        QualityConfig {
            stuck_rows: a.quality_stuck_rows,
            stuck_chance: a.quality_stuck_chance,
            range_margin: a.quality_range_margin,
            missing_share: a.quality_missing_share,
            drift_z: a.quality_drift_z,
            min_score: a.quality_min_score,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let max_future_ms = match args.max_future.as_str() {
        "off" | "none" => None,
        s => Some(
            humantime::parse_duration(s)
                .map_err(|e| anyhow::anyhow!("--max-future {s:?}: {e}"))?
                .as_millis() as i64,
        ),
    };
    let mut config =
        maintcast_ingest::Config::new(&args.brokers, InfluxConfig::from_env()?, args.registry);
    config.group_id = args.group_id;
    config.topics = maintcast_ingest::Topics {
        telemetry: args.telemetry_topic,
        events: args.events_topic,
        dlq: args.dlq_topic,
        alerts: args.alerts_topic,
        checkpoint: args.checkpoint_topic,
    };
    config.model = args.model;
    config.device = args.device;
    config.batch_size = args.batch_size;
    config.linger = args.linger;
    config.stride = args.stride;
    config.queue_capacity = args.queue_capacity;
    config.write_batch = args.write_batch;
    config.commit_interval = args.commit_interval;
    config.reload_interval = args.reload_interval;
    config.alert = AlertRule {
        threshold_days: args.alert_threshold_days,
        hysteresis_days: args.alert_hysteresis_days,
    };
    config.write_raw = args.write_raw;
    config.limits.max_bytes = args.max_message_bytes;
    config.limits.max_future_ms = max_future_ms;
    config.http_addr = args.http_addr;
    config.drain_timeout = args.drain_timeout;
    config.checkpoint_partitions = args.checkpoint_partitions;
    config.checkpoint_replication = args.checkpoint_replication;
    config.quality = args.quality.into();
    config.limits.min_ts_ms = match args.min_timestamp.as_str() {
        "off" | "none" => None,
        s => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| anyhow::anyhow!("--min-timestamp {s:?}: {e}"))?
                .timestamp_millis(),
        ),
    };
    // Refused before anything connects, with the flag named.
    config.validate()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        let signals = shutdown.clone();
        tokio::spawn(async move { signals.trigger_on_signals().await });
        maintcast_ingest::run(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
