//! The whole loop of issue 6 against the real Kafka and InfluxDB: a fleet's history goes through
//! the ingest service (raw telemetry and maintenance events on) into InfluxDB while it serves v1;
//! `maintcast train --once` reads that history, promotes v2, and the same ingest instance serves
//! v2 for the next telemetry without a restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use maintcast_e2e::diag::service_state;
use maintcast_e2e::fleet::{self, Fleet, card, train_once};
use maintcast_e2e::ingest::{
    create_topics, free_port, service_config, start_service, stop_service,
};
use maintcast_e2e::stream::producer;
use maintcast_e2e::wait::wait_for;
use maintcast_e2e::{InfluxEnv, influx, kafka_brokers, unique};
use maintcast_models::registry as reg;
use maintcast_proto::{MaintenanceEvent, MaintenanceKind, Telemetry};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Rows each machine reports after the retrained model is promoted.
const NEW_ROWS: usize = 20;

fn telemetry(machine: &str, ts_ms: i64, wear: f64, noise: f64, machine_type: &str) -> Telemetry {
    Telemetry {
        machine_id: machine.to_string(),
        ts_ms,
        sensors: vec![("wear".into(), wear), ("noise".into(), noise)],
        machine_type: Some(machine_type.to_string()),
        site: None,
    }
}

/// Sends every message and waits for all deliveries; keyed by machine so that a machine's rows
/// stay in order on one partition.
async fn produce_all(producer: &FutureProducer, topic: &str, messages: &[(String, Vec<u8>)]) {
    for chunk in messages.chunks(2000) {
        let sends = chunk.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.expect("produce");
        }
    }
}

async fn count(env: &InfluxEnv, filter: &str) -> usize {
    let rows = env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: 0)
               |> filter(fn: (r) => {filter})
               |> group() |> count()"#,
            env.bucket
        ))
        .await;
    rows.first()
        .map(|r| r["_value"].parse().expect("count is a number"))
        .unwrap_or(0)
}

/// Polls `filter`'s point count until it reaches `want`; fails after a minute and a half with no
/// new point (or ten minutes in all), or at once if the service stopped, saying what the service
/// (its `/metrics` at `addr`) was doing.
async fn wait_for_count(
    env: &InfluxEnv,
    what: &str,
    filter: &str,
    want: usize,
    (service, addr): (&tokio::task::JoinHandle<anyhow::Result<()>>, SocketAddr),
) {
    let got = wait_for(
        || {
            assert!(!service.is_finished(), "ingest stopped early");
            count(env, filter)
        },
        |n| *n,
        want,
        what,
        || service_state(addr),
    )
    .await;
    assert_eq!(got, want, "{what} in InfluxDB");
}

/// v1: a know-nothing model (shuffled labels) trained from the same fleet's CSV, so that it has the
/// feature order and window that a model trained from InfluxDB will have.
fn train_v1(root: &Path, f: &Fleet, name: &str) {
    let data = f.write_csv(&root.join("csv"));
    let o = Command::new(fleet::maintcast_bin())
        .args([
            "train",
            "--once",
            "--format",
            "csv",
            "--data",
            data.to_str().unwrap(),
            "--config",
            root.join("tiny.toml").to_str().unwrap(),
            "--registry",
            root.join("registry").to_str().unwrap(),
            "--name",
            name,
            "--shuffle-labels",
        ])
        // v1 is a fixture: its round must not add to the `training_run` points under test.
        .env_remove("MAINTCAST_INFLUX_URL")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "training v1: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_through_ingest_retrains_and_the_running_ingest_serves_the_new_version() {
    let env = influx();
    let brokers = kafka_brokers();
    let run = unique("through");
    create_topics(&brokers, &run).await;
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("tiny.toml"), fleet::TINY_RECIPE).unwrap();
    let registry = root.path().join("registry");
    let name = run.replace('-', "_");
    let machine_type = unique("through-type");
    // 2025-03-01: clear of the other trainer tests' history.
    let f = fleet::fleet(&unique("tt"), 10, 3, 1_740_787_200_000, 23);

    train_v1(root.path(), &f, &name);
    assert_eq!(
        reg::current_version(&registry, &name).unwrap().as_deref(),
        Some("v0001")
    );

    let mut config = service_config(&brokers, &registry, &name, &run);
    config.write_raw = true;
    // Short, so the test does not wait on it; reloads happen only between batches anyway.
    config.reload_interval = Duration::from_millis(200);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);

    // The fleet's history through Kafka.
    let producer = producer(&brokers);
    let rows: Vec<(String, Vec<u8>)> = f
        .rows
        .iter()
        .map(|r| {
            let t = telemetry(&r.machine, r.ts_ms, r.wear, r.noise, &machine_type);
            (r.machine.clone(), t.to_json())
        })
        .collect();
    let events: Vec<(String, Vec<u8>)> = f
        .events
        .iter()
        .map(|(m, ts)| {
            let e = MaintenanceEvent {
                machine_id: m.clone(),
                ts_ms: *ts,
                kind: MaintenanceKind::Repair,
                note: String::new(),
            };
            (m.clone(), e.to_json())
        })
        .collect();
    // Events only once the telemetry is in: the two topics have no order between them, and an
    // event read first would make every earlier row of its machine late (the arrival rule).
    produce_all(&producer, &format!("{run}-telemetry"), &rows).await;

    let telemetry_filter = format!(
        r#"r._measurement == "telemetry" and r.machine_type == "{machine_type}" and r._field == "wear""#
    );
    wait_for_count(
        &env,
        "raw telemetry rows",
        &telemetry_filter,
        f.rows.len(),
        (&service, addr),
    )
    .await;
    produce_all(&producer, &format!("{run}-events"), &events).await;
    let machines: Vec<&str> = {
        let mut m: Vec<&str> = f.events.iter().map(|(m, _)| m.as_str()).collect();
        m.dedup();
        m
    };
    let events_filter = format!(
        r#"r._measurement == "maintenance_event" and contains(value: r.machine_id, set: [{}])"#,
        machines
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    wait_for_count(
        &env,
        "maintenance events",
        &events_filter,
        f.events.len(),
        (&service, addr),
    )
    .await;
    let forecast_filter =
        format!(r#"r._measurement == "maintenance_forecast" and r.model == "{name}""#);
    // Raw rows are written as they arrive and forecasts after their inference batch, so the last
    // raw row can land before any forecast does: wait for one rather than count once.
    let v1_filter = format!(r#"{forecast_filter} and r.model_version == "v0001""#);
    wait_for(
        || {
            assert!(!service.is_finished(), "ingest stopped early");
            count(&env, &v1_filter)
        },
        |n| *n,
        1,
        "v0001 forecasts",
        || service_state(addr),
    )
    .await;

    // Retrain from what ingest wrote. v1's card covers the same rows, so the new-data rule would
    // skip the round; this test is about the loop, the skip rule has its own test. The recipe's
    // label policy names an event kind, so the round fails unless the kinds ingest wrote come
    // back from InfluxDB with the events.
    std::fs::write(
        root.path().join("tiny.toml"),
        fleet::TINY_RECIPE.replace("[data]\n", "[data]\nends_on = [\"repair\"]\n"),
    )
    .unwrap();
    let o = train_once(
        &env,
        root.path(),
        &name,
        &machine_type,
        &["--min-new-rows", "0"],
    );
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "trained and promoted: {log}");
    assert_eq!(
        reg::current_version(&registry, &name).unwrap().as_deref(),
        Some("v0002")
    );
    let c2 = card(root.path(), &name, "v0002");
    assert_eq!(c2["parent_version"], "v0001");
    assert_eq!(c2["data"]["source"], "influxdb");
    assert_eq!(c2["target"]["ends_on"], serde_json::json!(["repair"]));
    assert_eq!(c2["target"]["name"], "days_to_repair");
    assert_eq!(
        c2["data"]["labelled_rows"].as_u64().unwrap() as usize,
        f.rows.len()
    );
    assert_eq!(c2["metrics"]["gate"]["promoted"], true);
    let runs = env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: 0)
               |> filter(fn: (r) => r._measurement == "training_run" and r.model == "{name}" and r._field == "val_mae")
               |> group(columns: ["run_id"]) |> count()"#,
            env.bucket
        ))
        .await;
    assert_eq!(runs.len(), 1, "training_run points: {runs:?}");

    // More telemetry after each machine's last maintenance: the same ingest instance must
    // forecast it with v0002.
    let mut last_event: HashMap<&str, i64> = HashMap::new();
    for (m, ts) in &f.events {
        last_event.insert(m.as_str(), *ts);
    }
    let mt = machine_type.as_str();
    let more: Vec<(String, Vec<u8>)> = last_event
        .iter()
        .flat_map(|(m, t0)| {
            (1..=NEW_ROWS as i64).map(move |k| {
                let t = telemetry(m, t0 + k * 6 * fleet::HOUR_MS, 10.0 + k as f64, 0.5, mt);
                (m.to_string(), t.to_json())
            })
        })
        .collect();
    produce_all(&producer, &format!("{run}-telemetry"), &more).await;
    let min_rows = c2["min_rows"].as_u64().unwrap() as usize;
    assert!(min_rows <= NEW_ROWS, "min_rows {min_rows}");
    let want = last_event.len() * (NEW_ROWS - min_rows + 1);
    wait_for_count(
        &env,
        "v0002 forecasts",
        &format!(r#"{forecast_filter} and r.model_version == "v0002" and r._field == "days_to_maintenance""#),
        want,
        (&service, addr),
    )
    .await;
    // Every forecast after the last maintenance is v0002's; none of the history's is.
    let served = env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: 0)
               |> filter(fn: (r) => {forecast_filter} and r._field == "days_to_maintenance")
               |> keep(columns: ["_time", "machine_id", "model_version"])"#,
            env.bucket
        ))
        .await;
    let mut by_version: HashMap<&str, usize> = HashMap::new();
    for row in &served {
        let ts = chrono::DateTime::parse_from_rfc3339(&row["_time"])
            .unwrap()
            .timestamp_millis();
        let after = ts > last_event[row["machine_id"].as_str()];
        let v = row["model_version"].as_str();
        assert_eq!(
            v,
            if after { "v0002" } else { "v0001" },
            "{} at {ts}",
            row["machine_id"]
        );
        *by_version.entry(v).or_default() += 1;
    }
    assert_eq!(by_version["v0002"], want);
    assert!(!service.is_finished(), "ingest restarted or stopped");

    stop_service(shutdown, service).await;
}
