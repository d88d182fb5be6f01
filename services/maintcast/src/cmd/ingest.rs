//! `maintcast ingest`: flags and environment -> `maintcast_ingest::Config`, then the service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_ingest::alerts::AlertRule;

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
    #[arg(long, env = "MAINTCAST_GROUP_ID", default_value = "maintcast-ingest")]
    group_id: String,
    #[arg(long, env = "MAINTCAST_TELEMETRY_TOPIC", default_value = "telemetry")]
    telemetry_topic: String,
    #[arg(
        long,
        env = "MAINTCAST_EVENTS_TOPIC",
        default_value = "maintenance-events"
    )]
    events_topic: String,
    #[arg(long, env = "MAINTCAST_DLQ_TOPIC", default_value = "telemetry-dlq")]
    dlq_topic: String,
    #[arg(
        long,
        env = "MAINTCAST_ALERTS_TOPIC",
        default_value = "maintenance-alerts"
    )]
    alerts_topic: String,
    /// Compacted topic holding window checkpoints.
    #[arg(
        long,
        env = "MAINTCAST_CHECKPOINT_TOPIC",
        default_value = "ingest-windows-checkpoint"
    )]
    checkpoint_topic: String,
    /// Model registry directory (docs/registry.md).
    #[arg(long, env = "MAINTCAST_REGISTRY", default_value = "models/registry")]
    registry: PathBuf,
    #[arg(long, env = "MAINTCAST_MODEL", default_value = "maintcast")]
    model: String,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = "cpu")]
    device: String,
    /// Windows per inference batch.
    #[arg(long, env = "MAINTCAST_BATCH_SIZE", default_value_t = 64)]
    batch_size: usize,
    /// Longest wait for a batch to fill.
    #[arg(long, env = "MAINTCAST_LINGER", default_value = "20ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Forecast every k-th row of each machine.
    #[arg(long, env = "MAINTCAST_STRIDE", default_value_t = 1)]
    stride: u64,
    #[arg(long, env = "MAINTCAST_QUEUE_CAPACITY", default_value_t = 4096)]
    queue_capacity: usize,
    #[arg(long, env = "MAINTCAST_WRITE_BATCH", default_value_t = 5000)]
    write_batch: usize,
    #[arg(long, env = "MAINTCAST_COMMIT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    commit_interval: Duration,
    #[arg(long, env = "MAINTCAST_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    reload_interval: Duration,
    #[arg(long, env = "MAINTCAST_ALERT_THRESHOLD_DAYS", default_value_t = 7.0)]
    alert_threshold_days: f64,
    #[arg(long, env = "MAINTCAST_ALERT_HYSTERESIS_DAYS", default_value_t = 1.0)]
    alert_hysteresis_days: f64,
    /// Also write raw telemetry and maintenance events to InfluxDB.
    #[arg(long, env = "MAINTCAST_WRITE_RAW")]
    write_raw: bool,
    #[arg(long, env = "MAINTCAST_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    max_message_bytes: usize,
    /// Largest accepted clock skew into the future; "off" disables the check (replays).
    #[arg(long, env = "MAINTCAST_MAX_FUTURE", default_value = "1day")]
    max_future: String,
    #[arg(long, env = "MAINTCAST_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    http_addr: SocketAddr,
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
    config.stride = args.stride.max(1);
    config.queue_capacity = args.queue_capacity.max(1);
    config.write_batch = args.write_batch.max(1);
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
