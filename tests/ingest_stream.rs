//! The ingest service against the real Kafka and InfluxDB: streaming equals batch, bad input goes
//! to the DLQ with a reason, offsets are committed only for what InfluxDB acknowledged.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use maintcast_e2e::fleet::maintcast_bin;
use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
use maintcast_e2e::stream::{
    WINDOW, assert_forecasts, check_committed, committed_rows, make_model, new_fleet,
    offline_forecasts, produce, producer, send_fleet,
};
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
    // Let a barrier (checkpoint + commit) pass after the last write, then crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
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

/// A `maintcast ingest` process, killed if the test ends first.
struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `maintcast ingest` for run `run`'s topics and group, as a process of its own.
fn spawn_ingest(brokers: &str, registry: &std::path::Path, model: &str, run: &str) -> Ingest {
    let env = influx();
    let child = Command::new(maintcast_bin())
        .args(["ingest", "--brokers", brokers, "--group-id"])
        .arg(format!("{run}-group"))
        .arg("--telemetry-topic")
        .arg(format!("{run}-telemetry"))
        .arg("--events-topic")
        .arg(format!("{run}-events"))
        .arg("--dlq-topic")
        .arg(format!("{run}-dlq"))
        .arg("--alerts-topic")
        .arg(format!("{run}-alerts"))
        .arg("--checkpoint-topic")
        .arg(format!("{run}-checkpoint"))
        .arg("--registry")
        .arg(registry)
        .args([
            "--model",
            model,
            "--batch-size",
            "16",
            "--commit-interval",
            "500ms",
        ])
        .args(["--http-addr", "127.0.0.1:0"])
        .env("MAINTCAST_INFLUX_URL", &env.url)
        .env("MAINTCAST_INFLUX_ORG", &env.org)
        .env("MAINTCAST_INFLUX_BUCKET", &env.bucket)
        .env("MAINTCAST_INFLUX_TOKEN", &env.token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start maintcast ingest");
    Ingest(child)
}

/// The `maintcast ingest` process killed with SIGKILL while rows are still arriving (about 40 a
/// second), then started again: every expected forecast is in InfluxDB with the offline value (windows forecast by both
/// processes overwrite one point), and the rows right after the last commit, fewer than a window,
/// are forecast, which only windows restored from the checkpoint allow.
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
    let machines = 4;
    // Rows arrive until the restarted process has run a while, however slow the machine is.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = tokio::spawn({
        let (brokers, topic, run, stop) =
            (brokers.clone(), topic.clone(), run.clone(), stop.clone());
        async move {
            let producer = producer(&brokers);
            let mut fleet = new_fleet(&run, machines);
            let mut r = 0;
            while !stop.load(Ordering::Relaxed) && r < 2000 {
                send_fleet(&producer, &topic, &mut fleet, r..r + 1).await;
                r += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fleet
        }
    });

    let mut first = spawn_ingest(&brokers, reg.path(), &model, &run);
    // Kill once more than a window of rows per machine is committed, while rows still arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_rows(&brokers, &topic, &group) < (machines * (WINDOW + 2)) as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing committed within 60 s"
        );
        assert!(first.0.try_wait().unwrap().is_none(), "ingest exited early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.0.kill().unwrap(); // SIGKILL
    let status = first.0.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    let killed_at = committed_rows(&brokers, &topic, &group);
    assert!(!streamer.is_finished(), "the stream ended before the kill");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut second = spawn_ingest(&brokers, reg.path(), &model, &run);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let fleet = streamer.await.unwrap();
    let rows = fleet.rows[0].1.len();
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (rows - WINDOW + 1));
    assert_forecasts(&model, &expected, &[]).await;
    assert!(
        second.0.try_wait().unwrap().is_none(),
        "ingest exited early"
    );
    eprintln!(
        "killed with {killed_at} of {} rows committed",
        machines * rows
    );

    // SIGTERM: drain, commit, exit 0.
    let term = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = second.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "exit after SIGTERM: {status:?}");
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
