//! Input quality end to end: a simulated fleet whose sensors get stuck (the simulator's own
//! faults, with their truth), plus a sensor silenced for two days and one spiking out of range,
//! streams through the real Kafka into the ingest service serving the shipped model, and every
//! forecast InfluxDB holds carries the quality score and flags that the pure data path computes
//! offline from the same rows, as does every alert sent on them. The flags are then scored against
//! the truth (precision, recall), and `/metrics` counts the same flags per sensor.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use maintcast_e2e::bucket::{create_bucket, delete_bucket};
use maintcast_e2e::ingest::{
    create_topics, metrics_text, service_config, start_service, stop_service,
};
use maintcast_e2e::stream::{produce, producer, read_forecasts};
use maintcast_e2e::topic::read_topic;
use maintcast_e2e::{influx, kafka_brokers, unique};
use maintcast_ingest::forecast::window_stats;
use maintcast_ingest::model::Model;
use maintcast_ingest::pipeline::Pipeline;
use maintcast_ingest::quality::{Confusion, QualityConfig};
use maintcast_ingest::serving::ServingModel;
use maintcast_ingest::window::WindowStore;
use maintcast_proto::Telemetry;
use maintcast_simulator::{Fleet, FleetConfig, SENSORS, SensorFaultConfig, output};

const DAYS: f64 = 12.0;
/// Machine 0's `oil_temp_c` reports nothing for these rows (a cut cable).
const SILENT: (usize, std::ops::Range<usize>) = (0, 100..148);
const OIL_TEMP: usize = 5;
/// Machine 1's `vibration_rms` saturates at its logger's full scale for these rows (a loose
/// sensor), far beyond anything in training.
const SPIKE: (usize, std::ops::Range<usize>) = (1, 150..154);

/// One row as sent, with what only the simulation knows about it.
struct Sent {
    t: Telemetry,
    /// Bit per sensor: frozen in this row.
    stuck: u8,
    machine: usize,
    /// Index among the machine's rows.
    row: usize,
}

fn rows() -> Vec<Sent> {
    let cfg = FleetConfig {
        seed: 11,
        machines: 6,
        sensor_faults: SensorFaultConfig {
            drop_value_prob: 0.01,
            drop_row_prob: 0.0,
            stuck_per_day: 0.3,
            drift_per_day: 0.0,
        },
        ..FleetConfig::default()
    };
    let steps = cfg.steps_for_days(DAYS);
    let h = Fleet::new(cfg).unwrap().run(steps);
    let mut seen = vec![0usize; h.machines.len()];
    h.readings
        .iter()
        .map(|r| {
            let m = r.machine as usize;
            let i = seen[m];
            seen[m] += 1;
            let mut t = output::telemetry(&h.machines[m], r);
            if m == SILENT.0 && SILENT.1.contains(&i) {
                t.sensors[OIL_TEMP].1 = f64::NAN;
            }
            if m == SPIKE.0 && SPIKE.1.contains(&i) {
                t.sensors[0].1 = 999.9;
            }
            Sent {
                t,
                stuck: r.truth.sensor_faults.stuck,
                machine: m,
                row: i,
            }
        })
        .collect()
}

/// The shipped model in a registry of the test's own.
fn registry(dir: &Path) -> ServingModel {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/pretrained/maintcast");
    let to = dir.join("maintcast");
    std::fs::create_dir_all(to.join("v0001")).unwrap();
    std::fs::copy(from.join("CURRENT"), to.join("CURRENT")).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(from.join("v0001").join(f), to.join("v0001").join(f)).unwrap();
    }
    let m = ServingModel::load(&to.join("v0001"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        m.feature_stats().len(),
        SENSORS.len(),
        "the shipped card carries input statistics (maintcast models stats)"
    );
    m
}

/// (machine, ts) -> (score, flags) as the pure data path computes them from the same rows.
fn offline(model: &ServingModel, rows: &[Sent]) -> HashMap<(String, i64), (f64, String, bool)> {
    let features = model.features().to_vec();
    let store = WindowStore::new(features.clone(), model.window(), model.neutral_raw());
    let mut p = Pipeline::new(store, model.min_rows(), 1);
    let stats = window_stats(&features, model);
    let cfg = QualityConfig::default();
    let mut out = HashMap::new();
    for (offset, s) in rows.iter().enumerate() {
        if let Some(r) = p.on_telemetry(&s.t, 0, offset as i64).forecast {
            let q = r.evidence.assess(&r.raw, &stats, &cfg);
            let v = (
                f64::from(q.score),
                q.describe(&features),
                q.low_confidence(&cfg),
            );
            out.insert((r.machine_id, r.ts_ms), v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quality_flags_reach_influxdb_as_the_data_path_computes_them() {
    let reg = tempfile::tempdir().unwrap();
    let model = registry(reg.path());
    let sent = rows();
    let want = offline(&model, &sent);
    let flagged = want.values().filter(|v| !v.1.is_empty()).count();
    assert!(
        flagged > 50,
        "the fleet should have flagged forecasts: {flagged}"
    );

    let env = influx();
    let brokers = kafka_brokers();
    let run = unique("quality");
    create_topics(&brokers, &run).await;
    let bucket = unique("quality");
    create_bucket(&env, &bucket).await;
    let producer = producer(&brokers);
    for s in &sent {
        produce(
            &producer,
            &format!("{run}-telemetry"),
            &s.t.machine_id,
            &s.t.to_json(),
            None,
        )
        .await;
    }
    let mut config = service_config(&brokers, reg.path(), "maintcast", &run);
    config.influx.bucket = bucket.clone();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);

    let flux = format!(
        r#"from(bucket: "{bucket}") |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "maintenance_forecast")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")"#
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        got = read_forecasts(&env, &flux).await;
        if got.len() >= want.len() || service.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = metrics_text(addr).await;
    stop_service(shutdown, service).await;
    delete_bucket(&env, &bucket).await;
    assert_eq!(got.len(), want.len(), "forecasts in InfluxDB");

    let mut counted: HashMap<(String, String), u32> = HashMap::new();
    let (mut stuck, mut missing, mut spike) = (
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
    );
    let by_key: HashMap<(&str, i64), &Sent> = sent
        .iter()
        .map(|s| ((s.t.machine_id.as_str(), s.t.ts_ms), s))
        .collect();
    let mut by_machine: Vec<Vec<&Sent>> = Vec::new();
    for s in &sent {
        by_machine.resize_with(by_machine.len().max(s.machine + 1), Vec::new);
        by_machine[s.machine].push(s);
    }
    for f in &got {
        let key = (f.machine_id.clone(), f.ts_ms);
        let (score, flags, low) = want
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected {key:?}"));
        assert!((f.quality_score - score).abs() < 1e-6, "{key:?}: score");
        assert_eq!(&f.quality_flags, flags, "{key:?}: flags");
        assert_eq!(f.low_confidence, *low, "{key:?}: low confidence");
        assert!(f.days_p10 <= f.days_to_maintenance && f.days_to_maintenance <= f.days_p90);
        for pair in f.quality_flags.split(',').filter(|p| !p.is_empty()) {
            let (sensor, flag) = pair.split_once(':').unwrap();
            *counted.entry((sensor.into(), flag.into())).or_default() += 1;
        }
        // Truth about the forecast's window, from the rows as sent and the simulator.
        let newest = by_key[&(f.machine_id.as_str(), f.ts_ms)];
        let window = &by_machine[newest.machine][(newest.row + 1).saturating_sub(60)..=newest.row];
        let has = |s: &str, what: &str| f.quality_flags.contains(&format!("{s}:{what}"));
        for (k, s) in SENSORS.iter().enumerate() {
            stuck.add(has(s, "stuck"), (newest.stuck >> k) & 1 == 1);
            let absent = window.iter().filter(|r| r.t.sensors[k].1.is_nan()).count();
            missing.add(has(s, "missing"), absent * 5 > window.len());
        }
        if newest.machine == SPIKE.0 {
            spike.add(
                has(SENSORS[0], "out_of_range"),
                SPIKE.1.contains(&newest.row),
            );
        }
    }
    println!(
        "stuck (simulator truth): {stuck:?} precision {:.3} recall {:.3}",
        stuck.precision(),
        stuck.recall()
    );
    println!("missing (over 20% of the window absent): {missing:?}");
    println!("out of range (spiking sensor): {spike:?}");
    assert!(
        stuck.tp > 0 && stuck.precision() >= 0.95 && stuck.recall() >= 0.7,
        "{stuck:?}"
    );
    assert!(
        missing.tp > 0 && missing.fp == 0 && missing.fn_ == 0,
        "{missing:?}"
    );
    assert!(
        spike.tp == 4 && spike.fp == 0 && spike.fn_ == 0,
        "{spike:?}"
    );

    for ((sensor, flag), n) in &counted {
        let line = format!(
            "maintcast_ingest_input_flags_total{{sensor=\"{sensor}\",flag=\"{flag}\"}} {n}"
        );
        assert!(text.contains(&line), "/metrics lacks {line}:\n{text}");
    }
    // Every due or recovered alert says how good the inputs of its forecast were. The service has
    // stopped, so every alert it sent is delivered.
    let alerts = read_topic(&brokers, &format!("{run}-alerts"), usize::MAX, 8);
    assert!(
        !alerts.is_empty(),
        "the fleet's forecasts cross the threshold"
    );
    for (payload, _) in &alerts {
        let a: maintcast_proto::Alert = serde_json::from_slice(payload).unwrap();
        let (score, flags, low) = &want[&(a.machine_id.clone(), a.ts_ms)];
        assert!((a.quality_score - score).abs() < 1e-6, "{a:?}");
        assert_eq!((&a.quality_flags, a.low_confidence), (flags, *low), "{a:?}");
    }
    let doubtful = alerts
        .iter()
        .filter(|(p, _)| String::from_utf8_lossy(p).contains("\"low_confidence\":true"))
        .count();
    println!(
        "alerts: {}, of them low-confidence: {doubtful}",
        alerts.len()
    );
    assert!(doubtful > 0, "this fleet's stuck sensors reach some alerts");

    let low = want.values().filter(|v| v.2).count();
    assert!(
        text.contains(&format!(
            "maintcast_ingest_forecasts_low_confidence_total {low}"
        )),
        "{low} low-confidence forecasts expected in /metrics"
    );
}
