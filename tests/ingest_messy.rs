//! A messy fleet through the real Kafka, ingest service and InfluxDB, with padding enabled
//! (`min_rows` < window): gaps (absent sensors, JSON nulls, Protobuf infinities), unknown sensors,
//! duplicate and out-of-order rows, maintenance events on time, late and stale, and a machine with
//! fewer rows than the window. Every forecast written must equal the offline forecaster's, which
//! prepares windows with the models crate's data path as training does. The model pools its top
//! layer with attention, so the serving path of that architecture is held to the same check
//! (ingest_stream serves the last-state one).
//!
//! Telemetry and events are separate topics, so the order in which the service sees a row and an
//! event is only fixed when one was processed before the other was sent: the test sends in
//! phases and waits, between them, until the service has committed everything sent so far.

use std::collections::HashMap;
use std::time::Duration;

use candle_core::Device;
use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
use maintcast_e2e::offline::{OfflineMachine, forecast};
use maintcast_e2e::stream::{
    FEATURES, RandomModel, forecasts_in_influx, produce, producer, publish_random_model,
    wait_committed,
};
use maintcast_e2e::{kafka_brokers, unique};
use maintcast_models::network::Pooling;
use maintcast_models::prep::Arrival;
use maintcast_models::{Forecaster, registry};
use maintcast_proto::{MaintenanceEvent, MaintenanceKind, Telemetry};

const WINDOW: usize = 10;
const MIN_ROWS: usize = 4;
const MINUTE: i64 = 60_000;

/// What one forecast must be.
#[derive(Debug)]
struct Want {
    days: f32,
    window_rows: usize,
}

/// Deterministic noise for the fleet (xorshift), so a failure reproduces.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Msg {
    Row(Telemetry),
    Event(MaintenanceEvent),
}

/// Machine `m`'s row at minute `i`, with gaps of every kind.
fn row(run: &str, m: usize, i: i64, base: i64, noise: &mut Noise) -> Telemetry {
    let t = i as f64;
    let clean = [
        50.0 + 3.0 * m as f64 + t * 0.7,
        0.5 + 0.05 * t + 0.01 * m as f64,
        2.0 + (t * 0.3).sin(),
    ];
    let mut sensors = Vec::new();
    for (k, v) in clean.into_iter().enumerate() {
        let r = noise.next();
        let v = if r < 0.08 {
            continue; // the sensor is absent from the message
        } else if r < 0.16 {
            f64::NAN // JSON null
        } else if r < 0.20 && m % 2 == 1 {
            f64::INFINITY // only Protobuf carries it; JSON sends null
        } else {
            v + noise.next() * 0.1
        };
        sensors.push((FEATURES[k].to_string(), v));
    }
    if noise.next() < 0.2 {
        sensors.push(("oil_level".into(), 7.0));
    }
    Telemetry {
        machine_id: format!("{run}-m{m}"),
        ts_ms: base + i * MINUTE,
        sensors,
        machine_type: Some("press".into()),
        site: Some("site0".into()),
    }
}

fn event(run: &str, m: usize, ts_ms: i64) -> MaintenanceEvent {
    MaintenanceEvent {
        machine_id: format!("{run}-m{m}"),
        ts_ms,
        kind: MaintenanceKind::Repair,
        note: String::new(),
    }
}

/// The fleet in phases: rows, events, rows, events, rows. Within a phase each machine's
/// messages keep their order (one key, one partition).
fn phases(run: &str, base: i64) -> Vec<Vec<(usize, Msg)>> {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut rows = |m: usize, minutes: &[i64]| -> Vec<(usize, Msg)> {
        minutes
            .iter()
            .map(|&i| (m, Msg::Row(row(run, m, i, base, &mut noise))))
            .collect()
    };
    let ev = |m: usize, minute: i64| (m, Msg::Event(event(run, m, base + minute * MINUTE + 1)));

    let mut p1 = Vec::new();
    // m0: 14 rows, one out of order (minute 5 after 8), one duplicate of minute 9.
    let order: Vec<i64> = vec![0, 1, 2, 3, 4, 6, 7, 8, 5, 9, 9, 10, 11, 12, 13, 14];
    p1.extend(rows(0, &order));
    // m1: 12 rows with a hole in time.
    p1.extend(rows(1, &[0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14]));
    // m2: 8 rows (padded windows from the 4th on).
    p1.extend(rows(2, &[0, 1, 2, 3, 4, 5, 6, 7]));
    // m3: a few rows a phase, so its windows are padded or not due yet.
    p1.extend(rows(3, &[0, 1, 2]));

    // m0: a late event (rows 11-14 are after it and stay, refilled as the new machine);
    // m1: on time; m2: a stale event after a newer one.
    let e1 = vec![ev(0, 10), ev(1, 14), ev(2, 7), ev(2, 3)];

    let mut p2 = Vec::new();
    // m0: a row from before its event (late), then new rows.
    p2.extend(rows(0, &[9, 15, 16, 17, 18, 19, 20, 21, 22, 23]));
    // m1: a short history after maintenance.
    p2.extend(rows(1, &[15, 16, 17, 18, 19, 20]));
    p2.extend(rows(2, &[8, 9, 10, 11, 12]));
    p2.extend(rows(3, &[3, 4, 5]));

    // m0 again, late by more than the window: rows 13-23 are after it, 13 already left the
    // window, yet its values still fill the gaps after it. m3 maintained after all its rows.
    let e2 = vec![ev(0, 12), ev(3, 5)];

    let mut p3 = Vec::new();
    p3.extend(rows(0, &[24, 25, 26]));
    p3.extend(rows(1, &[21, 22, 23, 24, 25, 26, 27, 28, 29]));
    p3.extend(rows(2, &[13, 14]));
    p3.extend(rows(3, &[6, 7, 8, 9, 10]));
    vec![p1, e1, p2, e2, p3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_forecast_of_a_messy_fleet_equals_the_offline_one() {
    let brokers = kafka_brokers();
    let run = unique("ingest-messy");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    let spec = RandomModel {
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        window: WINDOW,
        min_rows: MIN_ROWS,
        hidden: vec![8],
        offset: vec![50.0, 0.0, 1.0],
        scale: vec![50.0, 2.0, 4.0],
        seed: 17,
        pooling: Pooling::Attention,
        // Two members, the second reading the newest half of the window: the diverse ensemble.
        member_windows: vec![WINDOW, WINDOW / 2],
    };
    let version = publish_random_model(reg.path(), &model, spec).unwrap();
    registry::promote(reg.path(), &model, &version, "messy-fleet test").unwrap();
    let f = Forecaster::load(&reg.path().join(&model).join(&version), &Device::Cpu).unwrap();
    let card = f.card().clone();

    let (shutdown, service) = start_service(service_config(&brokers, reg.path(), &model, &run));
    let producer = producer(&brokers);
    let group = format!("{run}-group");
    let base = chrono::Utc::now().timestamp_millis() - 2 * 24 * 3600 * 1000;
    let mut offline: HashMap<usize, OfflineMachine> = HashMap::new();
    let mut expected: HashMap<(String, i64), Want> = HashMap::new();
    for (k, phase) in phases(&run, base).into_iter().enumerate() {
        let mut topic = format!("{run}-telemetry");
        for (m, msg) in phase {
            let id = format!("{run}-m{m}");
            let machine = offline
                .entry(m)
                .or_insert_with(|| OfflineMachine::new(&id, &card.features));
            match msg {
                Msg::Row(t) => {
                    if m % 2 == 1 {
                        let ct = Some("application/x-protobuf");
                        produce(&producer, &topic, &id, &t.to_protobuf(), ct).await;
                    } else {
                        produce(&producer, &topic, &id, &t.to_json(), None).await;
                    }
                    if machine.row(&t) == Arrival::Accept && machine.due(card.min_rows, 1) {
                        let (window, window_rows) = machine.window(&card).unwrap();
                        let want = Want {
                            days: forecast(&f, &window),
                            window_rows,
                        };
                        expected.insert((id, t.ts_ms), want);
                    }
                }
                Msg::Event(e) => {
                    topic = format!("{run}-events");
                    produce(&producer, &topic, &id, &e.to_json(), None).await;
                    machine.event(e.ts_ms);
                }
            }
        }
        // Everything sent so far is processed before the next phase is sent.
        wait_committed(&brokers, &topic, &group, Duration::from_secs(90)).await;
        assert!(!service.is_finished(), "service stopped in phase {k}");
    }
    let padded = expected.values().filter(|w| w.window_rows < WINDOW).count();
    assert!(padded >= 8, "only {padded} padded forecasts expected");

    let got = forecasts_in_influx(&model).await;
    let mut seen = 0;
    for row in &got {
        let id = &row.machine_id;
        let ts = row.ts_ms;
        let want = expected
            .get(&(id.clone(), ts))
            .unwrap_or_else(|| panic!("unexpected forecast {id} at {ts}"));
        assert!(
            (row.days_to_maintenance - want.days as f64).abs() < 1e-4,
            "{id}@{ts}: streamed {}, offline {}",
            row.days_to_maintenance,
            want.days
        );
        assert_eq!(row.window_rows as usize, want.window_rows, "{id}@{ts}");
        assert_eq!(row.model_version, version);
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "forecasts in InfluxDB");
    stop_service(shutdown, service).await;
}
