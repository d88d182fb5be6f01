//! A small model and a fleet streamed to the ingest service: a model published in a registry, a
//! fleet of machines sent to Kafka (JSON and Protobuf mixed), the forecasts the model computes
//! offline for that fleet, and the checks of what reached InfluxDB.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use maintcast_common::points;
use maintcast_models::prep::Arrival;
use maintcast_models::{Forecaster, registry};
use maintcast_proto::{Forecast, Telemetry};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::offline::{OfflineMachine, forecast};
pub use crate::offsets::{check_committed, committed_offsets, committed_rows, wait_committed};
use crate::{InfluxEnv, influx};

pub use crate::model::{
    FEATURES, RandomModel, WINDOW, make_model, publish_model, publish_model_ordered,
    publish_random_model,
};

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
pub async fn produce_to<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
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
    for m in fleet_messages(fleet, rows) {
        produce_to(producer, topic, m.partition, &m.key, &m.payload, m.ct).await;
    }
}

/// One Kafka message of a fleet, ready to send.
pub struct FleetMessage {
    pub partition: Option<i32>,
    pub key: String,
    pub payload: Vec<u8>,
    pub ct: Option<&'static str>,
}

/// The messages of rows `rows` of every machine, in send order, recording each row in `fleet` as
/// the offline forecaster must see it.
pub fn fleet_messages(fleet: &mut Fleet, rows: std::ops::Range<usize>) -> Vec<FleetMessage> {
    let base = fleet.base_ms;
    let pinned = fleet.partitions;
    let mut out = Vec::new();
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
            let message = |payload, ct| FleetMessage {
                partition,
                key: id.clone(),
                payload,
                ct,
            };
            if m % 2 == 1 {
                out.push(message(t.to_protobuf(), Some("application/x-protobuf")));
            } else {
                out.push(message(t.to_json(), None));
            }
            if m == 2 && i == 5 {
                out.push(message(t.to_json(), Some("application/json")));
            }
            expected.push((ts, values.iter().map(|&v| v as f32).collect()));
        }
    }
    out
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
    forecasts_in(&influx(), model).await
}

/// As [`forecasts_in_influx`], from the InfluxDB `env` (a private instance, say).
pub async fn forecasts_in(env: &InfluxEnv, model: &str) -> Vec<Forecast> {
    stored_forecasts(env, points::forecast::MEASUREMENT, model).await
}

/// Every forecast of `model` in `measurement` (`shadow_forecast`, say) of `env`.
///
/// InfluxDB makes a point's fields visible one by one, so a query beside a write in progress can
/// read a forecast with some fields missing. A row that does not parse is read again until the
/// write has landed; one still incomplete after 10 s is a broken point, and fails the test.
pub async fn stored_forecasts(env: &InfluxEnv, measurement: &str, model: &str) -> Vec<Forecast> {
    let flux = points::forecasts_flux_in(&env.bucket, measurement, model, "start: -10d, stop: 1d");
    read_forecasts(env, &flux).await
}

/// The forecasts a Flux query of pivoted forecast rows returns, read as [`stored_forecasts`] says.
pub async fn read_forecasts(env: &InfluxEnv, flux: &str) -> Vec<Forecast> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = env.query(flux).await;
        match rows.iter().map(points::forecast_from_row).collect() {
            Ok(forecasts) => return forecasts,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{e}"),
            Err(e) => {
                eprintln!("incomplete forecast row ({e}); reading again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until InfluxDB holds as many forecasts of `model` as expected (failing at once if one
/// of `services` stops), then checks them with [`check_forecasts`].
pub async fn assert_forecasts(
    model: &str,
    expected: &HashMap<(String, i64), Expected>,
    services: &[&tokio::task::JoinHandle<anyhow::Result<()>>],
) {
    assert_forecasts_in(&influx(), model, expected, services).await
}

/// As [`assert_forecasts`], in the InfluxDB `env`.
pub async fn assert_forecasts_in(
    env: &InfluxEnv,
    model: &str,
    expected: &HashMap<(String, i64), Expected>,
    services: &[&tokio::task::JoinHandle<anyhow::Result<()>>],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        got = forecasts_in(env, model).await;
        if got.len() >= expected.len() {
            break;
        }
        for s in services {
            assert!(!s.is_finished(), "service stopped early");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check_forecasts(&got, expected);
}

/// Each of `got` is one of `expected`, with the offline value and version, its tags, timestamp
/// and derived fields, and the counts match. A window forecast twice under two versions is two
/// series, so the count catches that too.
pub fn check_forecasts(got: &[Forecast], expected: &HashMap<(String, i64), Expected>) {
    if got.len() != expected.len() {
        let seen: std::collections::HashSet<(String, i64)> = got
            .iter()
            .map(|f| (f.machine_id.clone(), f.ts_ms))
            .collect();
        let mut missing: Vec<_> = expected.keys().filter(|k| !seen.contains(*k)).collect();
        missing.sort();
        panic!(
            "{} forecasts in InfluxDB, {} expected; {} missing, the first: {:?}",
            got.len(),
            expected.len(),
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    for f in got {
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
