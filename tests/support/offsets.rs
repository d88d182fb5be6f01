//! Where a consumer group has committed on a run's telemetry topic: how tests see that nothing
//! was acknowledged before it was written, and how far a service has got.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// After a clean shutdown every consumed offset is committed.
pub fn check_committed(brokers: &str, telemetry_topic: &str, group: &str) {
    if let Err(e) = committed_to_the_end(brokers, telemetry_topic, group) {
        panic!("{e}");
    }
}

/// Waits up to `timeout` for every telemetry partition's committed offset to reach its end.
pub async fn wait_committed(brokers: &str, telemetry_topic: &str, group: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match committed_to_the_end(brokers, telemetry_topic, group) {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn committed_to_the_end(brokers: &str, telemetry_topic: &str, group: &str) -> Result<(), String> {
    let (probe, committed) = committed_offsets(brokers, telemetry_topic, group);
    for (p, offset) in committed.into_iter().enumerate() {
        let (_, high) = probe
            .fetch_watermarks(telemetry_topic, p as i32, Duration::from_secs(5))
            .map_err(|e| format!("end of partition {p}: {e}"))?;
        if high > 0 && offset != Offset::Offset(high) {
            return Err(format!(
                "partition {p} committed at {offset:?}, its end is {high}"
            ));
        }
    }
    Ok(())
}

/// The committed offset of each of the 3 telemetry partitions for `group` (`Offset::Invalid`
/// where none was committed), with the client that asked.
pub fn committed_offsets(
    brokers: &str,
    telemetry_topic: &str,
    group: &str,
) -> (BaseConsumer, Vec<Offset>) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(telemetry_topic, p);
    }
    // A coordinator that has just moved or restarted answers with an error for a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let committed = loop {
        match probe.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("committed offsets of {group}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let mut offsets = vec![Offset::Invalid; 3];
    for e in committed.elements() {
        offsets[e.partition() as usize] = e.offset();
    }
    (probe, offsets)
}

/// Rows committed across the telemetry partitions of `group`.
pub fn committed_rows(brokers: &str, telemetry_topic: &str, group: &str) -> i64 {
    committed_offsets(brokers, telemetry_topic, group)
        .1
        .iter()
        .map(|o| match o {
            Offset::Offset(n) => *n,
            _ => 0,
        })
        .sum()
}
