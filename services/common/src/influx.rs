//! InfluxDB v2 writer: batches of points, gzip, retries with exponential backoff and jitter.

use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::DataPoint;
use rand::Rng;

use crate::config::{Secret, secret_from_env, secret_from_file};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: Secret,
}

impl InfluxConfig {
    /// From `MAINTCAST_INFLUX_URL/ORG/BUCKET` and the token from `MAINTCAST_INFLUX_TOKEN` or
    /// `MAINTCAST_INFLUX_TOKEN_FILE`; defaults are `deploy/infra.sh`'s loopback instance.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.into())
        };
        let token = match secret_from_env("MAINTCAST_INFLUX_TOKEN")? {
            Some(t) => t,
            None => {
                let home = std::env::var("HOME").unwrap_or_default();
                let default =
                    std::path::PathBuf::from(home).join(".cache/maintcast/run/influx-token");
                secret_from_file(&default).map_err(|e| {
                    anyhow::anyhow!("no InfluxDB token: set MAINTCAST_INFLUX_TOKEN or MAINTCAST_INFLUX_TOKEN_FILE ({e})")
                })?
            }
        };
        Ok(InfluxConfig {
            url: var("MAINTCAST_INFLUX_URL", "http://127.0.0.1:18086"),
            org: var("MAINTCAST_INFLUX_ORG", "maintcast"),
            bucket: var("MAINTCAST_INFLUX_BUCKET", "maintcast"),
            token,
        })
    }

    pub fn client(&self) -> anyhow::Result<influxdb2::Client> {
        Ok(
            influxdb2::ClientBuilder::new(&self.url, &self.org, self.token.expose())
                .gzip(true)
                .build()?,
        )
    }
}

/// Backoff between write attempts: exponential from `initial` to `max`, with full jitter so
/// that many instances recovering together do not hammer InfluxDB in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The ceiling for the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lo = ceiling / 2;
        lo + ceiling
            .saturating_sub(lo)
            .mul_f64(rand::rng().random::<f64>())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub struct Writer {
    client: influxdb2::Client,
    bucket: String,
    backoff: Backoff,
}

/// Why a write gave up.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("InfluxDB rejected the points (not retryable): {0}")]
    Rejected(String),
    #[error("shutdown while InfluxDB was unreachable: {0}")]
    Shutdown(String),
}

impl Writer {
    pub fn new(config: &InfluxConfig) -> anyhow::Result<Self> {
        Ok(Writer {
            client: config.client()?,
            bucket: config.bucket.clone(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        })
    }

    /// Writes `points` (millisecond timestamps), retrying transient failures until they
    /// succeed. Gives up only on a 4xx other than 429 (the points themselves are bad) or once
    /// `shutdown` has fired and `give_up_after_shutdown` more attempts failed.
    pub async fn write(
        &mut self,
        points: &[DataPoint],
        shutdown: &Shutdown,
        give_up_after_shutdown: u32,
        mut on_retry: impl FnMut(&str),
    ) -> Result<(), WriteError> {
        let mut failures_after_shutdown = 0;
        loop {
            let body = futures::stream::iter(points.to_vec());
            let write = self.client.write_with_precision(
                &self.bucket,
                body,
                TimestampPrecision::Milliseconds,
            );
            // A timeout of our own, so a hung (not refusing) server still ends in a retry.
            let result = match tokio::time::timeout(Duration::from_secs(15), write).await {
                Ok(r) => r.map_err(|e| (e.to_string(), e.status())),
                Err(_) => Err(("write timed out after 15 s".to_string(), None)),
            };
            match result {
                Ok(()) => {
                    self.backoff.reset();
                    return Ok(());
                }
                Err((text, status)) => {
                    if let Some(status) = status
                        && (400..500).contains(&status)
                        && status != 429
                        && status != 408
                    {
                        return Err(WriteError::Rejected(text));
                    }
                    on_retry(&text);
                    if shutdown.is_triggered() {
                        failures_after_shutdown += 1;
                        if failures_after_shutdown > give_up_after_shutdown {
                            return Err(WriteError::Shutdown(text));
                        }
                    }
                    let delay = self.backoff.next_delay();
                    tracing::warn!(error = %text, retry_in_ms = delay.as_millis() as u64, "InfluxDB write failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

trait StatusOf {
    fn status(&self) -> Option<u16>;
}

impl StatusOf for influxdb2::RequestError {
    fn status(&self) -> Option<u16> {
        match self {
            influxdb2::RequestError::Http { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
