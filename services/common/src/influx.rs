//! InfluxDB v2 writer: batches of points, gzip, retries with exponential backoff and jitter.
//!
//! Writes are a plain HTTP POST of line protocol (`/api/v2/write`), not influxdb2's
//! `write_with_precision`: that one gzips at the slowest level (hard-coded), which cost the
//! ingest service about a twentieth of its CPU at stride 1, and re-serialised every point on each
//! retry. Here a batch is serialised and compressed once, at gzip's fastest level. Queries still
//! go through influxdb2's client (`InfluxConfig::client`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use influxdb2::models::{DataPoint, WriteDataPoint};
use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};

use crate::config::{Secret, secret_from_env, secret_from_file};
use crate::shutdown::Shutdown;

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: Secret,
    /// Where the token came from, when a file: re-read when InfluxDB answers 401/403, so a
    /// rotated secret takes effect without a restart.
    pub token_file: Option<PathBuf>,
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
        let from_var = std::env::var("MAINTCAST_INFLUX_TOKEN")
            .ok()
            .filter(|v| !v.is_empty());
        let (token, token_file) = match from_var {
            Some(_) => (
                secret_from_env("MAINTCAST_INFLUX_TOKEN")?.expect("set"),
                None,
            ),
            None => {
                let file = std::env::var("MAINTCAST_INFLUX_TOKEN_FILE")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var("HOME").unwrap_or_default())
                            .join(".cache/maintcast/run/influx-token")
                    });
                let token = secret_from_file(&file).map_err(|e| {
                    anyhow::anyhow!("no InfluxDB token: set MAINTCAST_INFLUX_TOKEN or MAINTCAST_INFLUX_TOKEN_FILE ({e})")
                })?;
                (token, Some(file))
            }
        };
        Ok(InfluxConfig {
            url: var("MAINTCAST_INFLUX_URL", "http://127.0.0.1:18086"),
            org: var("MAINTCAST_INFLUX_ORG", "maintcast"),
            bucket: var("MAINTCAST_INFLUX_BUCKET", "maintcast"),
            token,
            token_file,
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
    config: InfluxConfig,
    http: reqwest::Client,
    backoff: Backoff,
}

/// Why a write gave up. Failures that a person or time can fix (server down, 5xx, 408/429, a
/// revoked token, a missing bucket) are retried instead, so the stream waits rather than loses.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("InfluxDB refused the points ({status}): {text}")]
    Rejected { status: u16, text: String },
    #[error("InfluxDB refused the request as too large: {0}")]
    TooLarge(String),
    #[error("shutdown while InfluxDB was unreachable: {0}")]
    Shutdown(String),
}

/// A failed attempt that will be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 401/403: the token is wrong or was revoked.
    Unauthorized,
    /// 404: the bucket or org does not exist.
    BucketMissing,
    /// Connection refused, timeout, 5xx, 408, 429.
    Unavailable,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unauthorized => "unauthorized",
            Failure::BucketMissing => "bucket_missing",
            Failure::Unavailable => "unavailable",
        }
    }
}

/// How a status code is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry(Failure),
    TooLarge,
    Rejected,
}

pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        Some(401 | 403) => Verdict::Retry(Failure::Unauthorized),
        Some(404) => Verdict::Retry(Failure::BucketMissing),
        Some(413) => Verdict::TooLarge,
        Some(408 | 429) | None => Verdict::Retry(Failure::Unavailable),
        Some(s) if (400..500).contains(&s) => Verdict::Rejected,
        Some(_) => Verdict::Retry(Failure::Unavailable),
    }
}

impl Writer {
    pub fn new(config: &InfluxConfig) -> anyhow::Result<Self> {
        Ok(Writer {
            http: reqwest::Client::builder().build()?,
            config: config.clone(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        })
    }

    /// Writes `points` (millisecond timestamps), retrying until they succeed, InfluxDB refuses
    /// the points themselves (`Rejected`, `TooLarge`: the caller splits the batch), or `shutdown`
    /// has fired and `give_up_after_shutdown` more attempts failed. `on_failure` sees every
    /// failed attempt before its retry.
    pub async fn write(
        &mut self,
        points: &[DataPoint],
        shutdown: &Shutdown,
        give_up_after_shutdown: u32,
        mut on_failure: impl FnMut(Failure, &str),
    ) -> Result<(), WriteError> {
        let body = gzip_line_protocol(points).map_err(|e| WriteError::Rejected {
            status: 0,
            text: format!("cannot encode the points as line protocol: {e}"),
        })?;
        let url = format!("{}/api/v2/write", self.config.url.trim_end_matches('/'));
        let mut failures_after_shutdown = 0;
        loop {
            // A timeout of our own, so a hung (not refusing) server still ends in a retry.
            let attempt = tokio::time::timeout(Duration::from_secs(15), self.post(&url, &body));
            let (text, status) = match attempt.await {
                Ok(Ok(())) => {
                    self.backoff.reset();
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => ("write timed out after 15 s".to_string(), None),
            };
            let failure = match classify(status) {
                Verdict::Rejected => {
                    return Err(WriteError::Rejected {
                        status: status.unwrap_or_default(),
                        text,
                    });
                }
                Verdict::TooLarge => return Err(WriteError::TooLarge(text)),
                Verdict::Retry(f) => f,
            };
            on_failure(failure, &text);
            if failure == Failure::Unauthorized {
                self.reload_token();
            }
            if shutdown.is_triggered() {
                failures_after_shutdown += 1;
                if failures_after_shutdown > give_up_after_shutdown {
                    return Err(WriteError::Shutdown(text));
                }
            }
            let delay = self.backoff.next_delay();
            let kind = failure.as_str();
            if failure == Failure::Unavailable {
                tracing::warn!(error = %text, kind, retry_in_ms = delay.as_millis() as u64, "InfluxDB write failed");
            } else {
                // Needs a person: loud, and the stream waits until it is fixed.
                tracing::error!(error = %text, kind, bucket = %self.config.bucket, retry_in_ms = delay.as_millis() as u64,
                    "InfluxDB refused the write; consumption waits until the token or bucket is fixed");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: `Err((what InfluxDB or the connection said, the HTTP status if any))`.
    async fn post(&self, url: &str, body: &[u8]) -> Result<(), (String, Option<u16>)> {
        let mut token = HeaderValue::try_from(format!("Token {}", self.config.token.expose()))
            .map_err(|_| {
                (
                    "the InfluxDB token is not a valid header value".to_string(),
                    Some(401),
                )
            })?;
        // Kept out of any debug output of the request.
        token.set_sensitive(true);
        let response = self
            .http
            .post(url)
            .query(&[
                ("org", self.config.org.as_str()),
                ("bucket", self.config.bucket.as_str()),
                ("precision", "ms"),
            ])
            .header(AUTHORIZATION, token)
            .header(CONTENT_ENCODING, "gzip")
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (e.without_url().to_string(), None))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err((
            format!("HTTP status {status}: {text}"),
            Some(status.as_u16()),
        ))
    }

    /// Re-reads the token file, if the token came from one.
    fn reload_token(&mut self) {
        let Some(file) = self.config.token_file.clone() else {
            return;
        };
        match secret_from_file(&file) {
            Ok(token) if token != self.config.token => {
                self.config.token = token;
                tracing::info!(file = %file.display(), "InfluxDB token re-read from its file");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot re-read the InfluxDB token file"),
        }
    }
}

/// The points as line protocol, gzipped at the fastest level. The text is built first and handed
/// to the compressor in one write: a point is written as many small pieces, and each write into
/// flate2's encoder clears its 32 KiB output buffer (that memset was a fifth of the service's CPU).
fn gzip_line_protocol(points: &[DataPoint]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(points.len() * 96);
    for p in points {
        p.write_data_point_to(&mut text)?;
    }
    let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::fast());
    gz.write_all(&text)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_gzipped_line_protocol_one_point_a_line() {
        let point = |machine: &str, v: f64| {
            DataPoint::builder("forecast")
                .tag("machine_id", machine)
                .field("days", v)
                .timestamp(1_700_000_000_000)
                .build()
                .unwrap()
        };
        let body = gzip_line_protocol(&[point("m 1", 3.5), point("m2", 40.0)]).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap();
        assert_eq!(
            text,
            "forecast,machine_id=m\\ 1 days=3.5 1700000000000\nforecast,machine_id=m2 days=40 1700000000000\n"
        );
    }

    #[test]
    fn statuses_split_into_retry_split_and_refuse() {
        assert_eq!(classify(Some(401)), Verdict::Retry(Failure::Unauthorized));
        assert_eq!(classify(Some(403)), Verdict::Retry(Failure::Unauthorized));
        assert_eq!(classify(Some(404)), Verdict::Retry(Failure::BucketMissing));
        assert_eq!(classify(Some(413)), Verdict::TooLarge);
        assert_eq!(classify(Some(400)), Verdict::Rejected);
        assert_eq!(classify(Some(422)), Verdict::Rejected);
        for s in [Some(408), Some(429), Some(500), Some(503), None] {
            assert_eq!(classify(s), Verdict::Retry(Failure::Unavailable), "{s:?}");
        }
    }

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
