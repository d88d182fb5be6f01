//! The ingest service against the real Kafka and InfluxDB: streaming equals batch, bad input goes
//! to the DLQ with a reason, offsets are committed only for what InfluxDB acknowledged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use maintcast_common::config::Secret;
use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_e2e::ingest::{create_topics, service_config};
use maintcast_e2e::{influx, kafka_brokers, unique};
use maintcast_models::metrics::IntervalSpec;
use maintcast_models::network::{ArchConfig, Network};
use maintcast_models::scaler::{Scaler, ScalerKind};
use maintcast_models::{Forecaster, ModelCard, TargetSpec, artifact, registry};
use maintcast_proto::Telemetry;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const FEATURES: [&str; 3] = ["temp", "vibration", "pressure"];
const WINDOW: usize = 10;

/// A small randomly initialised model, published and promoted in `registry`.
fn make_model(registry_dir: &Path, name: &str, seed: u64) -> String {
    let arch = ArchConfig {
        n_features: FEATURES.len(),
        hidden: vec![8],
        dropout: 0.0,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Network::new(vb, &arch).expect("network");
    maintcast_models::train::init_weights(&varmap, seed).expect("init");
    let card = ModelCard {
        name: name.into(),
        version: String::new(),
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        window: WINDOW,
        min_rows: WINDOW,
        target: TargetSpec {
            name: "days_to_maintenance".into(),
            cap: 100.0,
        },
        scaler: Scaler {
            kind: ScalerKind::MinMax,
            offset: vec![50.0, 0.0, 1.0],
            scale: vec![50.0, 2.0, 4.0],
        },
        arch,
        interval: IntervalSpec {
            lower_quantile: 0.1,
            upper_quantile: 0.9,
            lower_offset: -2.0,
            upper_offset: 3.0,
            n_calibration: 10,
        },
        members: 1,
        training: serde_json::json!({}),
        data: serde_json::json!({}),
        metrics: serde_json::json!({}),
        weights_sha256: String::new(),
        parent_version: None,
        created_at: "2026-11-29T00:00:00Z".into(),
    };
    let staged = tempfile::tempdir().expect("tempdir");
    artifact::save(staged.path(), card, &[&varmap]).expect("save model");
    let version = registry::publish(registry_dir, name, staged.path()).expect("publish");
    registry::promote(registry_dir, name, &version).expect("promote");
    version
}

fn sensor_row(machine: usize, i: usize) -> Vec<f64> {
    let t = i as f64;
    vec![
        50.0 + 3.0 * machine as f64 + t * 0.7,
        0.5 + 0.05 * t + 0.01 * machine as f64,
        2.0 + (t * 0.3).sin(),
    ]
}

struct Fleet {
    /// Per machine: (ts, raw values as the service should see them after filling).
    rows: Vec<(String, Vec<(i64, Vec<f32>)>)>,
    base_ms: i64,
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    ct: Option<&str>,
) {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(ct) = ct {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(ct),
        }));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produce");
}

/// Sends a fleet of `machines` x `rows` telemetry, mixing JSON and Protobuf, with one NaN value
/// (filled from the last good one) and one duplicate row (ignored).
async fn send_fleet(
    producer: &FutureProducer,
    topic: &str,
    fleet: &mut Fleet,
    rows: std::ops::Range<usize>,
) {
    let base = fleet.base_ms;
    for i in rows {
        for (m, (id, expected)) in fleet.rows.iter_mut().enumerate() {
            let mut values = sensor_row(m, i);
            let ts = base + (i as i64) * 60_000;
            if m == 0 && i == 15 {
                values[1] = f64::NAN;
            }
            let t = Telemetry {
                machine_id: id.clone(),
                ts_ms: ts,
                sensors: FEATURES
                    .iter()
                    .map(|s| s.to_string())
                    .zip(values.iter().copied())
                    .collect(),
                machine_type: Some("press".into()),
                site: Some(format!("site{}", m % 2)),
            };
            if m % 2 == 1 {
                produce(
                    producer,
                    topic,
                    id,
                    &t.to_protobuf(),
                    Some("application/x-protobuf"),
                )
                .await;
            } else {
                produce(producer, topic, id, &t.to_json(), None).await;
            }
            if m == 2 && i == 5 {
                produce(producer, topic, id, &t.to_json(), Some("application/json")).await;
            }
            let mut filled: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            if let Some((_, prev)) = expected.last() {
                for (f, p) in filled.iter_mut().zip(prev) {
                    if !f.is_finite() {
                        *f = *p;
                    }
                }
            }
            expected.push((ts, filled));
        }
    }
}

fn new_fleet(run: &str, machines: usize) -> Fleet {
    Fleet {
        rows: (0..machines)
            .map(|m| (format!("{run}-m{m}"), Vec::new()))
            .collect(),
        base_ms: chrono::Utc::now().timestamp_millis() - 2 * 24 * 3600 * 1000,
    }
}

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

fn offline_forecasts(
    registry_dir: &Path,
    name: &str,
    fleet: &Fleet,
) -> HashMap<(String, i64), f32> {
    let dir = registry::current_version_dir(registry_dir, name).unwrap();
    let f = Forecaster::load(&dir, &Device::Cpu).unwrap();
    let nf = FEATURES.len();
    let mut out = HashMap::new();
    for (id, rows) in &fleet.rows {
        for end in WINDOW..=rows.len() {
            let mut scaled = vec![0.0f32; WINDOW * nf];
            for (r, (_, raw)) in rows[end - WINDOW..end].iter().enumerate() {
                f.scale_row(raw, &mut scaled[r * nf..(r + 1) * nf]);
            }
            let p = f.predict(&scaled, 1).unwrap();
            out.insert((id.clone(), rows[end - 1].0), p[0].days);
        }
    }
    out
}

async fn forecasts_in_influx(model: &str) -> Vec<HashMap<String, String>> {
    let env = influx();
    let flux = format!(
        r#"from(bucket: "{}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "maintenance_forecast" and r.model == "{model}")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")"#,
        env.bucket
    );
    env.query(&flux).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_equals_batch_and_bad_input_goes_to_the_dlq() {
    let brokers = kafka_brokers();
    let run = unique("ingest");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    let version = make_model(reg.path(), &model, 7);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
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
    assert_forecasts(&model, &version, &expected, &service).await;
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
    let version = make_model(reg.path(), &model, 11);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let telemetry_topic = format!("{run}-telemetry");
    let machines = 4;
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &telemetry_topic, &mut fleet, 0..25).await;

    let first = tokio::spawn(maintcast_ingest::run(
        service_config(&brokers, reg.path(), &model, &run),
        Shutdown::new(),
    ));
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &version, &expected, &first).await;
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
    assert_forecasts(&model, &version, &expected, &second).await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    check_committed(&brokers, &telemetry_topic, &format!("{run}-group"));
}

/// Waits until InfluxDB holds as many forecasts of `model` as expected, then compares each with
/// the offline value, its tags, timestamp and derived fields.
async fn assert_forecasts(
    model: &str,
    version: &str,
    expected: &HashMap<(String, i64), f32>,
    service: &tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        got = forecasts_in_influx(model).await;
        if got.len() >= expected.len() {
            break;
        }
        assert!(!service.is_finished(), "service stopped early");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(got.len(), expected.len(), "forecast count in InfluxDB");
    for row in &got {
        let id = &row["machine_id"];
        let ts = chrono::DateTime::parse_from_rfc3339(&row["_time"])
            .unwrap()
            .timestamp_millis();
        let want = expected
            .get(&(id.clone(), ts))
            .unwrap_or_else(|| panic!("unexpected forecast {id} at {ts}"));
        let days: f64 = row["days_to_maintenance"].parse().unwrap();
        assert!(
            (days - *want as f64).abs() < 1e-4,
            "{id}@{ts}: streamed {days}, offline {want}"
        );
        assert_eq!(row["model_version"], version);
        assert_eq!(row["machine_type"], "press");
        assert!(row["site"].starts_with("site"));
        assert_eq!(row["window_rows"], WINDOW.to_string());
        let due: i64 = row["due_at"].parse().unwrap();
        assert_eq!(due, ts / 1000 + (days * 86_400.0).round() as i64);
        let (p10, p90): (f64, f64) = (
            row["days_p10"].parse().unwrap(),
            row["days_p90"].parse().unwrap(),
        );
        assert!(
            p10 <= days && days <= p90,
            "interval [{p10}, {p90}] misses {days}"
        );
    }
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

/// After a clean shutdown every consumed offset is committed.
fn check_committed(brokers: &str, telemetry_topic: &str, group: &str) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(telemetry_topic, p);
    }
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    for e in committed.elements() {
        let (_, high) = probe
            .fetch_watermarks(telemetry_topic, e.partition(), Duration::from_secs(5))
            .unwrap();
        if high > 0 {
            assert_eq!(
                e.offset(),
                Offset::Offset(high),
                "partition {} committed",
                e.partition()
            );
        }
    }
}
