//! The ingest service against the real Kafka and InfluxDB: streaming equals batch, bad input goes
//! to the DLQ with a reason, offsets are committed only for what InfluxDB acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
use maintcast_e2e::process::{IngestArgs, IngestProcess};
use maintcast_e2e::steady::{SteadyStream, messages_sent};
use maintcast_e2e::stream::{
    WINDOW, assert_forecasts, check_committed, check_forecasts, committed_rows,
    forecasts_in_influx, make_model, new_fleet, offline_forecasts, produce, producer, send_fleet,
    wait_committed,
};
use maintcast_e2e::wait::{wait_for, wait_for_len};
use maintcast_e2e::{influx, kafka_brokers, unique};
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

    let (shutdown, service) = start_service(service_config(&brokers, reg.path(), &model, &run));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (rows - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&service]).await;
    check_dlq(&brokers, &run, &bad).await;

    stop_service(shutdown, service).await;
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

    let (_, first) = start_service(service_config(&brokers, reg.path(), &model, &run));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &expected, &[&first]).await;
    // A barrier (checkpoint, then commit) has passed after the last write: crash now.
    let group = format!("{run}-group");
    wait_committed(&brokers, &telemetry_topic, &group, Duration::from_secs(60)).await;
    first.abort();
    let _ = first.await;

    send_fleet(&producer, &telemetry_topic, &mut fleet, 25..30).await;
    let (shutdown, second) = start_service(service_config(&brokers, reg.path(), &model, &run));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (30 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&second]).await;
    stop_service(shutdown, second).await;
    check_committed(&brokers, &telemetry_topic, &format!("{run}-group"));
}

/// The `maintcast ingest` process killed with SIGKILL while rows are still arriving (40 a
/// second), then started again: every expected forecast is in InfluxDB with the offline value
/// (windows forecast by both processes overwrite one point), and the rows right after the last
/// commit, fewer than a window, are forecast, which only windows restored from the checkpoint
/// allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let brokers = kafka_brokers();
    let run = unique("ingest-kill");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 13);
    let topic = format!("{run}-telemetry");
    let group = format!("{run}-group");
    let committed = || async { committed_rows(&brokers, &topic, &group).max(0) as usize };
    let machines = 4;
    // Rows arrive until the restarted process has run, however slow the machine is.
    let stream = SteadyStream::start(&brokers, &run, machines, Duration::from_millis(100));
    let args = IngestArgs::new(&brokers, influx(), reg.path(), &model, &run);

    let mut first = IngestProcess::spawn(&args);
    // Killed once more than a window of rows per machine is committed, while rows still arrive.
    let what = "rows committed by the first process";
    let want = machines * (WINDOW + 2);
    wait_for(committed, |n| *n, want, what, || first.describe()).await;
    let status = first.kill_9();
    assert!(!status.success(), "killed, not exited: {status:?}");
    let killed_at = committed().await;
    // Rows arrive while no process runs.
    stream.advance(3).await;

    let mut second = IngestProcess::spawn(&args);
    // The new process consumes and commits past the kill while rows still arrive.
    let what = "rows committed by the restarted process";
    let want = killed_at + machines;
    wait_for(committed, |n| *n, want, what, || second.describe()).await;
    let fleet = stream.finish().await;
    let rows = fleet.rows[0].1.len();
    let what = "every message committed";
    let want = messages_sent(&fleet);
    wait_for(committed, |n| *n, want, what, || second.describe()).await;
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (rows - WINDOW + 1));
    let got = wait_for_len(
        || forecasts_in_influx(&model),
        expected.len(),
        "forecasts after the restart",
        || second.describe(),
    )
    .await;
    check_forecasts(&got, &expected);
    second.assert_running("after the forecasts arrived");
    eprintln!(
        "killed with {killed_at} of {} rows committed",
        machines * rows
    );
    // SIGTERM: drain, commit, exit 0.
    second.stop_cleanly().await;
    check_committed(&brokers, &topic, &group);
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
