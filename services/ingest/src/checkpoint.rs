//! Window checkpoints: each machine's window, written to a compacted Kafka topic (key =
//! machine_id) before the offsets it reflects are committed, like a Kafka Streams changelog.
//! Whoever is assigned the partition next, on this host or another, restores the windows and
//! resumes forecasting at once instead of after `window` new rows.
//!
//! The topic needs `cleanup.policy=compact` and the replication the cluster requires; ingest
//! creates it with `--checkpoint-partitions` and `--checkpoint-replication` when missing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;
use crate::offsets::Ledger;
use crate::pipeline::Pipeline;
use crate::window::{Columns, MachineWindow, WindowStore};

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointRecord {
    /// Telemetry partition the machine belongs to.
    #[prost(int32, tag = "1")]
    pub partition: i32,
    /// Next telemetry offset of that partition not reflected in this window.
    #[prost(int64, tag = "2")]
    pub next_offset: i64,
    #[prost(string, repeated, tag = "3")]
    pub features: Vec<String>,
    #[prost(int64, repeated, tag = "4")]
    pub ts: Vec<i64>,
    /// Raw rows as received (NaN where missing); records written before the data path kept
    /// rows raw hold filled rows, which read the same way.
    #[prost(float, repeated, tag = "5")]
    pub values: Vec<f32>,
    /// `MachineWindow::fill_base`.
    #[prost(float, repeated, tag = "6")]
    pub fill_base: Vec<f32>,
    #[prost(int64, optional, tag = "7")]
    pub newest_ts: Option<i64>,
    #[prost(int64, optional, tag = "8")]
    pub reset_ts: Option<i64>,
    #[prost(uint64, tag = "9")]
    pub rows_since_reset: u64,
    #[prost(string, optional, tag = "10")]
    pub machine_type: Option<String>,
    #[prost(string, optional, tag = "11")]
    pub site: Option<String>,
    #[prost(bool, tag = "12")]
    pub alert_due: bool,
    /// `MachineWindow::fill_base_ts`; empty in older records.
    #[prost(int64, repeated, tag = "13")]
    pub fill_base_ts: Vec<i64>,
}

pub fn encode(features: &[String], w: &MachineWindow, next_offset: i64) -> Vec<u8> {
    let (ts, values) = w.parts();
    CheckpointRecord {
        partition: w.partition,
        next_offset,
        features: features.to_vec(),
        ts,
        values,
        fill_base: w.fill_base.clone(),
        fill_base_ts: w.fill_base_ts.clone(),
        newest_ts: w.newest_ts,
        reset_ts: w.reset_ts,
        rows_since_reset: w.rows_since_reset,
        machine_type: w.machine_type.clone(),
        site: w.site.clone(),
        alert_due: w.alert_due,
    }
    .encode_to_vec()
}

/// Rebuilds a window; `None` when it was written for other features (a model with other
/// sensors), which cannot be reused. The same features in another order are reordered.
pub fn decode(store: &WindowStore, bytes: &[u8]) -> Option<(MachineWindow, i64)> {
    let mut r = CheckpointRecord::decode(bytes).ok()?;
    let nf = store.features().len();
    let columns = Columns::between(&r.features, store.features());
    if columns == Columns::Incompatible
        || r.values.len() != r.ts.len() * nf
        || r.fill_base.len() != nf
    {
        return None;
    }
    if let Columns::Reordered(map) = columns {
        r.values = r
            .values
            .chunks_exact(nf)
            .flat_map(|row| map.iter().map(move |&j| row[j]))
            .collect();
        r.fill_base = map.iter().map(|&j| r.fill_base[j]).collect();
        if r.fill_base_ts.len() == nf {
            r.fill_base_ts = map.iter().map(|&j| r.fill_base_ts[j]).collect();
        }
    }
    // Older records hold filled rows, so no gap in them needs the fill state; any later
    // maintenance clears it.
    if r.fill_base_ts.len() != nf {
        r.fill_base_ts = vec![i64::MIN; nf];
    }
    let mut w = store.new_window();
    w.fill_base = r.fill_base;
    w.fill_base_ts = r.fill_base_ts;
    w.load_rows(&r.ts, &r.values);
    w.partition = r.partition;
    w.newest_ts = r.newest_ts;
    w.reset_ts = r.reset_ts;
    w.rows_since_reset = r.rows_since_reset;
    w.machine_type = r.machine_type;
    w.site = r.site;
    w.alert_due = r.alert_due;
    Some((w, r.next_offset))
}

/// Reads the whole checkpoint topic (blocking) and returns the latest record per machine
/// whose telemetry partition is in `partitions`.
pub fn read_latest(
    client: &ClientConfig,
    topic: &str,
    partitions: &HashSet<i32>,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let consumer: BaseConsumer = client.clone().set("enable.auto.commit", "false").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(HashMap::new());
    };
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            remaining.insert(p.id(), high);
        }
    }
    let mut latest = HashMap::new();
    if remaining.is_empty() {
        return Ok(latest);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading checkpoints from {topic} timed out"
        );
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        if let (Some(key), Some(payload)) = (msg.key(), msg.payload())
            && let Ok(r) = CheckpointRecord::decode(payload)
            && partitions.contains(&r.partition)
        {
            latest.insert(String::from_utf8_lossy(key).into_owned(), payload.to_vec());
        }
        if remaining
            .get(&msg.partition())
            .is_some_and(|&high| msg.offset() + 1 >= high)
        {
            remaining.remove(&msg.partition());
        }
    }
    Ok(latest)
}

/// Creates the compacted checkpoint topic if it does not exist, with the configured partitions
/// and replication factor (-1: the cluster's default).
pub async fn ensure_topic(config: &Config) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        maintcast_common::kafka::client_config(&config.brokers).create()?;
    let t = &config.topics.checkpoint;
    let topic = NewTopic::new(
        t,
        config.checkpoint_partitions,
        TopicReplication::Fixed(config.checkpoint_replication),
    )
    .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the checkpoint topic")?;
    for r in results {
        if let Err((t, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!(
                "creating checkpoint topic {t} ({} partitions, replication {}): {code}; set \
                 --checkpoint-replication to what the cluster allows, or create the topic \
                 (cleanup.policy=compact) beforehand",
                config.checkpoint_partitions,
                config.checkpoint_replication
            );
        }
    }
    Ok(())
}

/// The changed windows of owned partitions, encoded as they are now (when an epoch is sealed),
/// keyed by machine; they are written once everything consumed before is delivered.
pub fn snapshot(
    config: &Config,
    pipeline: &mut Pipeline,
    ledger: &Ledger,
) -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    for (id, w) in pipeline.dirty() {
        let tp = (config.topics.telemetry.clone(), w.partition);
        if !ledger.owns(&tp) {
            continue;
        }
        let next = ledger.position(&tp).unwrap_or(0);
        records.push((id.clone(), encode(pipeline.store().features(), w, next)));
    }
    pipeline.checkpointed();
    records
}

/// Writes a snapshot and waits for every delivery, at most `timeout`. False when one was not
/// delivered in time: the caller then postpones the commit (a committed offset must never be
/// ahead of the windows) and marks the machines changed again, so the next snapshot writes them.
/// A record still queued after the timeout may land later; its machine's next record is queued
/// behind it on the same partition, so the topic still ends on the newest window.
pub async fn deliver(
    topic: String,
    producer: FutureProducer,
    records: Vec<(String, Vec<u8>)>,
    timeout: Duration,
) -> bool {
    let mut pending = Vec::with_capacity(records.len());
    for (id, body) in &records {
        let record = FutureRecord::<[u8], [u8]>::to(&topic)
            .key(id.as_bytes())
            .payload(body);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => {
                tracing::warn!(error = %e, "checkpoint not queued; commit postponed");
                return false;
            }
        }
    }
    let Ok(delivered) = tokio::time::timeout(timeout, futures::future::join_all(pending)).await
    else {
        tracing::warn!(
            ?timeout,
            records = records.len(),
            "checkpoints not delivered in time; commit postponed"
        );
        return false;
    };
    if delivered.iter().any(|f| !matches!(f, Ok(Ok(_)))) {
        tracing::warn!("checkpoint not delivered; commit postponed");
        return false;
    }
    true
}

/// Restores the windows of newly assigned telemetry partitions. A failed read is retried with
/// backoff (consumption waits meanwhile) rather than ending the service: without the windows
/// the next `window` rows of each machine would get no forecast.
pub async fn restore(
    config: &Config,
    partitions: &HashSet<i32>,
    pipeline: &mut Pipeline,
    shutdown: &maintcast_common::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let client = maintcast_common::kafka::client_config(&config.brokers)
        .set("group.id", format!("{}-checkpoint-reader", config.group_id))
        .clone();
    let mut backoff =
        maintcast_common::influx::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let started = Instant::now();
    let records = loop {
        let (client, topic, parts) = (
            client.clone(),
            config.topics.checkpoint.clone(),
            partitions.clone(),
        );
        let read = tokio::task::spawn_blocking(move || {
            read_latest(&client, &topic, &parts, Duration::from_secs(60))
        })
        .await?;
        match read {
            Ok(r) => break r,
            Err(e) if shutdown.is_triggered() => return Err(e.context("restoring windows")),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(
                    error = format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot read window checkpoints; consumption waits and retries"
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    let mut restored = 0;
    for (id, bytes) in records {
        if let Some((w, next)) = decode(pipeline.store(), &bytes) {
            pipeline.restore(id, w, next);
            restored += 1;
        }
    }
    tracing::info!(restored, partitions = ?partitions, ms = started.elapsed().as_millis() as u64, "windows restored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let mut store = WindowStore::new(vec!["a".into(), "b".into()], 3, vec![0.0, 0.0]);
        let mut w = store.new_window();
        for t in 1..=5 {
            w.push(t, &[t as f32, f32::NAN]);
        }
        w.reset(1);
        w.partition = 2;
        w.machine_type = Some("press".into());
        w.alert_due = true;
        let bytes = encode(store.features(), &w, 42);
        let (back, next) = decode(&store, &bytes).unwrap();
        assert_eq!(next, 42);
        // Debug, not ==: raw rows keep their NaN gaps, and NaN != NaN.
        assert_eq!(format!("{back:?}"), format!("{w:?}"));
        store.insert("m".into(), back);
        let other = WindowStore::new(vec!["a".into()], 3, vec![0.0]);
        assert!(
            decode(&other, &bytes).is_none(),
            "a different feature layout is refused"
        );
        let renamed = WindowStore::new(vec!["a".into(), "c".into()], 3, vec![0.0, 0.0]);
        assert!(
            decode(&renamed, &bytes).is_none(),
            "other sensors are refused"
        );

        // The same sensors in the other order: every column follows its name.
        let swapped = WindowStore::new(vec!["b".into(), "a".into()], 3, vec![0.0, 0.0]);
        let (back, _) = decode(&swapped, &bytes).unwrap();
        assert_eq!(back.len(), w.len());
        for i in 0..w.len() {
            let ((t0, r0), (t1, r1)) = (w.row(i), back.row(i));
            assert_eq!(t0, t1);
            // Raw rows keep NaN for a missing value: compared by bits, NaN equals itself.
            assert_eq!(
                (r0[0].to_bits(), r0[1].to_bits()),
                (r1[1].to_bits(), r1[0].to_bits())
            );
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&back.fill_base),
            bits(&[w.fill_base[1], w.fill_base[0]])
        );
        assert_eq!(back.fill_base_ts, [w.fill_base_ts[1], w.fill_base_ts[0]]);
    }

    /// The service loop waits for checkpoints before it commits; a broker that does not answer
    /// must cost it the timeout, not librdkafka's message timeout (five minutes by default).
    #[tokio::test]
    async fn an_unanswered_delivery_gives_up_at_the_timeout() {
        // Nothing listens on port 1: the records stay queued.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let records = vec![("m-1".to_string(), vec![1u8, 2, 3])];
        let started = Instant::now();
        let delivered = tokio::time::timeout(
            Duration::from_secs(30),
            deliver(
                "checkpoints".into(),
                producer,
                records,
                Duration::from_millis(500),
            ),
        )
        .await
        .expect("deliver returned within its timeout");
        assert!(!delivered);
        assert!(started.elapsed() >= Duration::from_millis(500));
    }
}
