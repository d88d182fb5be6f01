//! Running the ingest service in a test: topics and configuration private to one run, so tests
//! never consume each other's messages.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use maintcast_common::config::Secret;
use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use tokio::task::JoinHandle;

use crate::{InfluxEnv, create_topic, influx};

/// The topics of run `run`: `{run}-telemetry`, `{run}-events`, `{run}-dlq`, `{run}-alerts`.
pub async fn create_topics(brokers: &str, run: &str) {
    for (suffix, partitions) in [("telemetry", 3), ("events", 3), ("dlq", 1), ("alerts", 1)] {
        create_topic(brokers, &format!("{run}-{suffix}"), partitions).await;
    }
}

/// A service reading run `run`'s topics in its own consumer group, serving `model` from
/// `registry_dir`, with small batches and frequent commits so tests see results quickly.
pub fn service_config(
    brokers: &str,
    registry_dir: &Path,
    model: &str,
    run: &str,
) -> maintcast_ingest::Config {
    service_config_in(brokers, influx(), registry_dir, model, run)
}

/// As [`service_config`], writing to the InfluxDB `env` (a private instance, say).
pub fn service_config_in(
    brokers: &str,
    env: InfluxEnv,
    registry_dir: &Path,
    model: &str,
    run: &str,
) -> maintcast_ingest::Config {
    let influx = InfluxConfig {
        url: env.url,
        org: env.org,
        bucket: env.bucket,
        token: Secret::new(env.token),
        token_file: None,
    };
    let mut c = maintcast_ingest::Config::new(brokers, influx, registry_dir.to_path_buf());
    c.group_id = format!("{run}-group");
    c.topics = maintcast_ingest::Topics {
        telemetry: format!("{run}-telemetry"),
        events: format!("{run}-events"),
        dlq: format!("{run}-dlq"),
        alerts: format!("{run}-alerts"),
        checkpoint: format!("{run}-checkpoint"),
    };
    c.model = model.into();
    c.batch_size = 16;
    c.commit_interval = Duration::from_millis(500);
    c.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    c
}

/// An ingest service running in this process.
pub type Service = JoinHandle<anyhow::Result<()>>;

/// Starts `maintcast_ingest::run(config)` on the test's runtime.
pub fn start_service(config: maintcast_ingest::Config) -> (Shutdown, Service) {
    let shutdown = Shutdown::new();
    let service = tokio::spawn(maintcast_ingest::run(config, shutdown.clone()));
    (shutdown, service)
}

/// What SIGTERM does: the service must drain, commit and return Ok within 60 s.
pub async fn stop_service(shutdown: Shutdown, service: Service) {
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), service)
        .await
        .expect("service stops within 60 s")
        .expect("service task")
        .expect("service exits cleanly");
}

/// A loopback port nothing listens on now (the kernel's pick, released at once), for a service
/// whose `/metrics` a test must find.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// The text of a service's `/metrics` at `addr`.
pub async fn metrics_text(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
