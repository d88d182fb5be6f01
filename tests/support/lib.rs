//! Helpers for maintcast's end-to-end tests: they find the real Kafka and InfluxDB that
//! `deploy/infra.sh start` runs (through the variables `deploy/infra.sh env` prints) and fail at
//! once with a message saying how to start them, rather than hanging on a dead port.

pub mod bucket;
pub mod compose;
pub mod diag;
pub mod fleet;
pub mod infra;
pub mod ingest;
pub mod model;
pub mod offline;
pub mod offsets;
pub mod process;
pub mod prometheus;
pub mod steady;
pub mod stream;
pub mod topic;
pub mod wait;

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Where the test InfluxDB is and how to talk to it.
#[derive(Clone)]
pub struct InfluxEnv {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: String,
}

impl std::fmt::Debug for InfluxEnv {
    // The token never reaches test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxEnv")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

const HOW_TO_START: &str =
    "start them with `deploy/infra.sh start` (or run the whole suite with `.ci/run`)";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn assert_reachable(what: &str, host_port: &str) {
    let addr = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{what}: cannot resolve {host_port}"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("{what} is not running at {host_port}: {HOW_TO_START}");
    }
}

/// Kafka bootstrap servers, checked to accept connections.
pub fn kafka_brokers() -> String {
    let brokers = env_or("MAINTCAST_KAFKA_BROKERS", "127.0.0.1:19092");
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    assert_reachable("Kafka", &first);
    brokers
}

/// The test InfluxDB, checked to accept connections.
pub fn influx() -> InfluxEnv {
    let url = env_or("MAINTCAST_INFLUX_URL", "http://127.0.0.1:18086");
    let host_port = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert_reachable("InfluxDB", host_port);
    let token = match std::env::var("MAINTCAST_INFLUX_TOKEN") {
        Ok(t) => t,
        Err(_) => {
            let file = std::env::var("MAINTCAST_INFLUX_TOKEN_FILE").unwrap_or_else(|_| {
                format!(
                    "{}/.cache/maintcast/run/influx-token",
                    std::env::var("HOME").unwrap_or_default()
                )
            });
            std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("InfluxDB token file {file}: {e}; {HOW_TO_START}"))
                .trim()
                .to_string()
        }
    };
    InfluxEnv {
        url,
        org: env_or("MAINTCAST_INFLUX_ORG", "maintcast"),
        bucket: env_or("MAINTCAST_INFLUX_BUCKET", "maintcast"),
        token,
    }
}

impl InfluxEnv {
    pub fn client(&self) -> influxdb2::Client {
        influxdb2::Client::new(&self.url, &self.org, &self.token)
    }

    /// Runs a Flux query through the HTTP API and returns its rows as column -> value maps
    /// (annotated CSV, parsed here because the influxdb2 crate's typed query wants a struct per shape).
    pub async fn query(&self, flux: &str) -> Vec<HashMap<String, String>> {
        self.try_query(flux).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`InfluxEnv::query`], with an unreachable or failing InfluxDB an Err rather than a
    /// panic: for whoever polls through an outage.
    pub async fn try_query(&self, flux: &str) -> Result<Vec<HashMap<String, String>>, String> {
        let client = reqwest::Client::new();
        let resp = client
            .post(format!(
                "{}/api/v2/query?org={}",
                self.url.trim_end_matches('/'),
                self.org
            ))
            .header("Authorization", format!("Token {}", self.token))
            .header("Accept", "application/csv")
            .json(
                &serde_json::json!({"query": flux, "type": "flux", "dialect": {"annotations": []}}),
            )
            .send()
            .await
            .map_err(|e| format!("InfluxDB query request: {e}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("InfluxDB query body: {e}"))?;
        if !status.is_success() {
            return Err(format!("InfluxDB query failed ({status}): {body}"));
        }
        Ok(parse_flux_csv(&body))
    }
}

impl InfluxEnv {
    /// The same server and token with its own bucket `name`, created now (infinite retention).
    pub async fn with_new_bucket(&self, name: &str) -> InfluxEnv {
        bucket::create_bucket(self, name).await;
        InfluxEnv {
            bucket: name.to_string(),
            ..self.clone()
        }
    }

    /// Deletes this env's bucket (best effort: a test's cleanup).
    pub async fn delete_bucket(&self) {
        bucket::delete_bucket(self, &self.bucket).await;
    }
}

/// Flux's CSV: one header line per table (its second cell is `result`), blank lines between
/// tables; string values with commas or quotes come quoted.
pub fn parse_flux_csv(body: &str) -> Vec<HashMap<String, String>> {
    let mut rows = Vec::new();
    let mut header: Option<Vec<String>> = None;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    for record in reader.records() {
        let cells: Vec<String> = record
            .expect("InfluxDB returned malformed CSV")
            .iter()
            .map(str::to_string)
            .collect();
        if cells.get(1).map(String::as_str) == Some("result") {
            header = Some(cells);
        } else if let Some(h) = &header {
            rows.push(h.iter().cloned().zip(cells).collect());
        }
    }
    rows
}

/// A name no earlier test run used, so tests never see each other's data.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a topic (idempotently) with the given partition count.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("kafka admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    // A busy broker may refuse for a few seconds while its controller settles: retried for a
    // minute, then the last refusal is the failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let error = match admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
        {
            Err(e) => format!("create_topics request: {e}"),
            Ok(results) => match results.into_iter().find_map(|r| r.err()) {
                None => return,
                Some((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => return,
                Some((t, code)) => format!("creating topic {t}: {code}"),
            },
        };
        assert!(std::time::Instant::now() < deadline, "{error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_flux_csv;

    /// Splitting on commas would shift every column after the quoted one.
    #[test]
    fn flux_csv_keeps_quoted_commas_and_starts_a_table_at_each_header() {
        let body = concat!(
            ",result,table,_time,note,days\r\n",
            ",_result,0,2026-11-29T06:00:00Z,\"worn, replace \"\"soon\"\"\",4.5\r\n",
            ",_result,0,2026-11-29T07:00:00Z,,3\r\n",
            "\r\n",
            ",result,table,_value\r\n",
            ",_result,1,12\r\n",
        );
        let rows = parse_flux_csv(body);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0]["note"], "worn, replace \"soon\"");
        assert_eq!(rows[0]["days"], "4.5");
        assert_eq!(rows[1]["note"], "");
        assert_eq!(rows[1]["days"], "3");
        assert_eq!(rows[2]["_value"], "12");
        assert_eq!(rows[2]["table"], "1");
        assert!(!rows[2].contains_key("days"));
    }

    #[test]
    fn flux_csv_of_an_empty_result_is_no_rows() {
        assert!(parse_flux_csv("").is_empty());
        assert!(parse_flux_csv("\r\n").is_empty());
    }
}
