//! The ingest service against the real Kafka and InfluxDB: streaming equals batch, bad input goes
//! to the DLQ with a reason, offsets are committed only for what InfluxDB acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use maintcast_common::shutdown::Shutdown;
use maintcast_e2e::ingest::{create_topics, service_config};
use maintcast_e2e::stream::{
    WINDOW, assert_forecasts, check_committed, make_model, new_fleet, offline_forecasts, produce,
    producer, send_fleet,
};
use maintcast_e2e::{kafka_brokers, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

/// Every case of the issue's DLQ list, with the substring its reason must contain.
fn bad_messages(run: &str) -> Vec<(Vec<u8>, Option<&'static str>, &'static str)> {
    let now = chrono::Utc::now().timestamp_millis();
    vec![
        (
            format!(r#"{{"machine_id":"{run}-x","ts":{now},"sensors":{{"temp":NaN}}}}"#)
                .into_bytes(),
            None,
            "NaN",
        ),
        (
            b"{\"machine_id\": \"broken".to_vec(),
            Some("application/json"),
            "invalid JSON",
        ),
        (
            vec![0x0a, 0x40, 0x01],
            Some("application/x-protobuf"),
            "invalid Protobuf",
        ),
        (
            format!(r#"{{"ts":{now},"sensors":{{"temp":1}}}}"#).into_bytes(),
            None,
            "machine_id is missing",
        ),
        (
            format!(r#"{{"machine_id":"","ts":{now},"sensors":{{"temp":1}}}}"#).into_bytes(),
            None,
            "machine_id is empty",
        ),
        (
            br#"{"machine_id":"x","ts":"last tuesday","sensors":{"temp":1}}"#.to_vec(),
            None,
            "RFC 3339",
        ),
        (
            format!(
                r#"{{"machine_id":"x","ts":{},"sensors":{{"temp":1}}}}"#,
                now + 400 * 24 * 3600 * 1000
            )
            .into_bytes(),
            None,
            "future",
        ),
        (
            format!(
                r#"{{"machine_id":"x","ts":{now},"sensors":{{"temp":1}},"pad":"{}"}}"#,
                "p".repeat(70_000)
            )
            .into_bytes(),
            None,
            "limit",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_equals_batch_and_bad_input_goes_to_the_dlq() {
    let brokers = kafka_brokers();
    let run = unique("ingest");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 7);
    let producer = producer(&brokers);
    let telemetry_topic = format!("{run}-telemetry");
    let (machines, rows) = (4, 25);
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &telemetry_topic, &mut fleet, 0..rows).await;
    let bad = bad_messages(&run);
    for (payload, ct, _) in &bad {
        produce(&producer, &telemetry_topic, "bad", payload, *ct).await;
    }

    let shutdown = Shutdown::new();
    let service = tokio::spawn(maintcast_ingest::run(
        service_config(&brokers, reg.path(), &model, &run),
        shutdown.clone(),
    ));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (rows - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&service]).await;
    check_dlq(&brokers, &run, &bad).await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), service)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    check_committed(&brokers, &telemetry_topic, &format!("{run}-group"));
}

/// A crash (the service dropped with no drain) mid-stream, then a new instance: every expected
/// forecast is in InfluxDB with the offline value, and the new instance forecasts the first new
/// rows at once - its windows came from the checkpoint, not from `WINDOW` new rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_then_restart_resumes_from_checkpointed_windows() {
    let brokers = kafka_brokers();
    let run = unique("ingest-restart");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 11);
    let producer = producer(&brokers);
    let telemetry_topic = format!("{run}-telemetry");
    let machines = 4;
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &telemetry_topic, &mut fleet, 0..25).await;

    let first = tokio::spawn(maintcast_ingest::run(
        service_config(&brokers, reg.path(), &model, &run),
        Shutdown::new(),
    ));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &expected, &[&first]).await;
    // Let a barrier (checkpoint + commit) pass after the last write, then crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.abort();
    let _ = first.await;

    send_fleet(&producer, &telemetry_topic, &mut fleet, 25..30).await;
    let shutdown = Shutdown::new();
    let second = tokio::spawn(maintcast_ingest::run(
        service_config(&brokers, reg.path(), &model, &run),
        shutdown.clone(),
    ));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (30 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&second]).await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    check_committed(&brokers, &telemetry_topic, &format!("{run}-group"));
}

/// Every bad message reached the DLQ with its reason, its source offset and its bytes.
async fn check_dlq(
    brokers: &str,
    run: &str,
    bad: &[(Vec<u8>, Option<&'static str>, &'static str)],
) {
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{run}-dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{run}-dlq")]).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < bad.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = dlq.poll(Duration::from_millis(200)) {
            let headers: HashMap<String, String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            dead.push((m.payload().unwrap_or(&[]).to_vec(), headers));
        }
    }
    assert_eq!(dead.len(), bad.len(), "DLQ messages");
    for (payload, _, reason) in bad {
        let (_, headers) = dead.iter().find(|(p, _)| p == payload).unwrap_or_else(|| {
            panic!("no DLQ copy of the message expected to fail with {reason:?}")
        });
        assert!(
            headers["error"].contains(reason),
            "error {:?} lacks {reason:?}",
            headers["error"]
        );
        headers["source-offset"]
            .parse::<i64>()
            .expect("source-offset is an offset");
    }
}
