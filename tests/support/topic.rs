//! Reading what the ingest service published (DLQ, alerts) back from its topic.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use crate::unique;

/// Up to `n` records of `topic` from its start, waiting at most `secs`: (payload, headers).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    n: usize,
    secs: u64,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            let v = String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned();
                            (h.key.to_string(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.payload().unwrap_or(&[]).to_vec(), headers));
        }
    }
    out
}
