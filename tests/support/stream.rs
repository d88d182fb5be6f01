//! A small model and a fleet streamed to the ingest service: a model published in a registry, a
//! fleet of machines sent to Kafka (JSON and Protobuf mixed), the forecasts the model computes
//! offline for that fleet, and the checks of what reached InfluxDB.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use maintcast_common::points;
use maintcast_models::metrics::IntervalSpec;
use maintcast_models::network::{ArchConfig, Network};
use maintcast_models::prep::Arrival;
use maintcast_models::scaler::{Scaler, ScalerKind};
use maintcast_models::{Forecaster, ModelCard, TargetSpec, artifact, registry};
use maintcast_proto::{Forecast, Telemetry};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::influx;
use crate::offline::{OfflineMachine, forecast};

pub const FEATURES: [&str; 3] = ["temp", "vibration", "pressure"];
pub const WINDOW: usize = 10;

/// Publishes a small randomly initialised model as the next version of `name` in `registry_dir`
/// and returns that version; CURRENT is left alone.
pub fn publish_model(registry_dir: &Path, name: &str, seed: u64) -> String {
    publish_model_ordered(registry_dir, name, seed, &FEATURES)
}

/// As [`publish_model`], with the features listed in `order` (a permutation of [`FEATURES`]), as
/// a model trained from another history source may list them.
pub fn publish_model_ordered(
    registry_dir: &Path,
    name: &str,
    seed: u64,
    order: &[&str; 3],
) -> String {
    let (offset, scale): (Vec<f32>, Vec<f32>) = order
        .iter()
        .map(|f| match *f {
            "temp" => (50.0, 50.0),
            "vibration" => (0.0, 2.0),
            "pressure" => (1.0, 4.0),
            other => panic!("unknown feature {other}"),
        })
        .unzip();
    let spec = RandomModel {
        features: order.iter().map(|s| s.to_string()).collect(),
        window: WINDOW,
        min_rows: WINDOW,
        hidden: vec![8],
        offset,
        scale,
        seed,
    };
    publish_random_model(registry_dir, name, spec).expect("publish")
}

/// A model with random weights: what a test or benchmark needs to drive the serving path.
pub struct RandomModel {
    pub features: Vec<String>,
    pub window: usize,
    /// Rows a machine needs since its last maintenance before its first forecast; fewer than
    /// `window` means short histories are left-padded.
    pub min_rows: usize,
    pub hidden: Vec<usize>,
    /// Min-max scaler: `(raw - offset) / scale` per feature.
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
    pub seed: u64,
}

/// Publishes `spec` as the next version of `name` in `registry_dir` (CURRENT is left alone) and
/// returns that version.
pub fn publish_random_model(
    registry_dir: &Path,
    name: &str,
    spec: RandomModel,
) -> anyhow::Result<String> {
    let arch = ArchConfig {
        n_features: spec.features.len(),
        hidden: spec.hidden,
        dropout: 0.0,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Network::new(vb, &arch)?;
    maintcast_models::train::init_weights(&varmap, spec.seed)?;
    let card = ModelCard {
        name: name.into(),
        version: String::new(),
        features: spec.features,
        window: spec.window,
        min_rows: spec.min_rows,
        target: TargetSpec {
            name: "days_to_maintenance".into(),
            cap: 100.0,
        },
        scaler: Scaler {
            kind: ScalerKind::MinMax,
            offset: spec.offset,
            scale: spec.scale,
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
        inference_precision: Default::default(),
        training: serde_json::json!({}),
        data: serde_json::json!({}),
        metrics: serde_json::json!({}),
        weights_sha256: String::new(),
        parent_version: None,
        created_at: "2026-11-29T00:00:00Z".into(),
        // No training ranges: the stream's input-quality checks stay silent for random models.
        feature_stats: Vec::new(),
    };
    let staged = tempfile::tempdir()?;
    artifact::save(staged.path(), card, &[&varmap])?;
    Ok(registry::publish(registry_dir, name, staged.path())?)
}

/// A small randomly initialised model, published and promoted in `registry_dir`.
pub fn make_model(registry_dir: &Path, name: &str, seed: u64) -> String {
    let version = publish_model(registry_dir, name, seed);
    registry::promote(registry_dir, name, &version, "test model").expect("promote");
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

/// One row as sent: (ts, values in [`FEATURES`] order, NaN where missing).
pub type Row = (i64, Vec<f32>);

pub struct Fleet {
    /// Per machine: its id and rows.
    pub rows: Vec<(String, Vec<Row>)>,
    pub base_ms: i64,
    /// When set, machine `m` is sent to partition `m % partitions` rather than by key hash, so a
    /// test knows every partition holds machines.
    pub partitions: Option<i32>,
}

pub fn new_fleet(run: &str, machines: usize) -> Fleet {
    Fleet {
        rows: (0..machines)
            .map(|m| (format!("{run}-m{m}"), Vec::new()))
            .collect(),
        base_ms: chrono::Utc::now().timestamp_millis() - 2 * 24 * 3600 * 1000,
        partitions: None,
    }
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("Kafka producer")
}

pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    ct: Option<&str>,
) {
    produce_to(producer, topic, None, key, payload, ct).await
}

/// As [`produce`], to `partition` when given.
pub async fn produce_to(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    payload: &[u8],
    ct: Option<&str>,
) {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(p) = partition {
        record = record.partition(p);
    }
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

/// Sends rows `rows` of every machine, mixing JSON and Protobuf, with one NaN value (filled by the
/// data path) and one duplicate row (ignored).
pub async fn send_fleet(
    producer: &FutureProducer,
    topic: &str,
    fleet: &mut Fleet,
    rows: std::ops::Range<usize>,
) {
    let base = fleet.base_ms;
    let pinned = fleet.partitions;
    for i in rows {
        for (m, (id, expected)) in fleet.rows.iter_mut().enumerate() {
            let partition = pinned.map(|n| m as i32 % n);
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
                let ct = Some("application/x-protobuf");
                produce_to(producer, topic, partition, id, &t.to_protobuf(), ct).await;
            } else {
                produce_to(producer, topic, partition, id, &t.to_json(), None).await;
            }
            if m == 2 && i == 5 {
                let ct = Some("application/json");
                produce_to(producer, topic, partition, id, &t.to_json(), ct).await;
            }
            expected.push((ts, values.iter().map(|&v| v as f32).collect()));
        }
    }
}

/// What one forecast must be: the offline value and the model version that made it.
#[derive(Debug, Clone)]
pub struct Expected {
    pub days: f32,
    pub version: String,
}

/// The forecast of every window due whose last row index is in `rows`, for every machine,
/// computed offline by `version` of `name` through the models data path.
pub fn offline_forecasts_by(
    registry_dir: &Path,
    name: &str,
    version: &str,
    fleet: &Fleet,
    rows: std::ops::Range<usize>,
) -> HashMap<(String, i64), Expected> {
    let f = Forecaster::load(&registry_dir.join(name).join(version), &Device::Cpu).unwrap();
    let card = f.card();
    let mut out = HashMap::new();
    for (id, machine_rows) in &fleet.rows {
        let mut m = OfflineMachine::new(id, &card.features);
        for (i, (ts, values)) in machine_rows.iter().enumerate() {
            let t = Telemetry {
                machine_id: id.clone(),
                ts_ms: *ts,
                sensors: FEATURES
                    .iter()
                    .map(|s| s.to_string())
                    .zip(values.iter().map(|&v| v as f64))
                    .collect(),
                machine_type: None,
                site: None,
            };
            if m.row(&t) != Arrival::Accept || !rows.contains(&i) || !m.due(card.min_rows, 1) {
                continue;
            }
            let (window, _) = m.window(card).expect("due windows have min_rows rows");
            let expected = Expected {
                days: forecast(&f, &window),
                version: version.to_string(),
            };
            out.insert((id.clone(), *ts), expected);
        }
    }
    out
}

/// Every forecast of the fleet sent so far, by the CURRENT model.
pub fn offline_forecasts(
    registry_dir: &Path,
    name: &str,
    fleet: &Fleet,
) -> HashMap<(String, i64), Expected> {
    let version = registry::current_version(registry_dir, name)
        .unwrap()
        .expect("a CURRENT version");
    offline_forecasts_by(registry_dir, name, &version, fleet, 0..usize::MAX)
}

/// Every `maintenance_forecast` point of `model`, read back through the schema that wrote it.
pub async fn forecasts_in_influx(model: &str) -> Vec<Forecast> {
    let env = influx();
    let flux = points::forecasts_flux(&env.bucket, model, "start: -10d, stop: 1d");
    env.query(&flux)
        .await
        .iter()
        .map(|row| points::forecast_from_row(row).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Waits until InfluxDB holds as many forecasts of `model` as expected (failing at once if one
/// of `services` stops), then compares each with the offline value and version, its tags,
/// timestamp and derived fields. A window forecast twice under two versions is two series, so
/// the count catches that too.
pub async fn assert_forecasts(
    model: &str,
    expected: &HashMap<(String, i64), Expected>,
    services: &[&tokio::task::JoinHandle<anyhow::Result<()>>],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        got = forecasts_in_influx(model).await;
        if got.len() >= expected.len() {
            break;
        }
        for s in services {
            assert!(!s.is_finished(), "service stopped early");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(got.len(), expected.len(), "forecast count in InfluxDB");
    for f in &got {
        let (id, ts) = (&f.machine_id, f.ts_ms);
        let want = expected
            .get(&(id.clone(), ts))
            .unwrap_or_else(|| panic!("unexpected forecast {id} at {ts}"));
        let days = f.days_to_maintenance;
        assert!(
            (days - want.days as f64).abs() < 1e-4,
            "{id}@{ts}: streamed {days}, offline {}",
            want.days
        );
        assert_eq!(f.model_version, want.version, "{id}@{ts}");
        assert_eq!(f.machine_type.as_deref(), Some("press"));
        assert!(f.site.as_deref().is_some_and(|s| s.starts_with("site")));
        assert_eq!(f.window_rows as usize, WINDOW);
        assert_eq!(f.due_at, points::due_at(ts, days));
        assert!(
            f.days_p10 <= days && days <= f.days_p90,
            "interval [{}, {}] misses {days}",
            f.days_p10,
            f.days_p90
        );
    }
}

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
            .unwrap();
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
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
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
