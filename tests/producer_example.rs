//! examples/python/producer.py, run as a plant engineer would run it (its virtual environment from
//! examples/python/setup.sh, PyPI packages, Protobuf classes generated from the contract), against
//! the real Kafka; its rows are scored by the ingest service serving the shipped model, and the
//! forecasts are found in InfluxDB. The readings are a historian export: `maintcast simulate
//! --out` with one sensor column under a historian tag name, which the producer refuses to send
//! unless it is renamed to the model's sensor name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use maintcast_common::config::Secret;
use maintcast_common::influx::InfluxConfig;
use maintcast_e2e::compose::repo;
use maintcast_e2e::fleet::maintcast_bin;
use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
use maintcast_e2e::{InfluxEnv, influx, kafka_brokers, unique};

const MACHINES: usize = 3;
/// The historian's name for the sensor the model calls `vibration_rms`.
const TAG: &str = "P101_VIB_RMS";

fn venv() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("examples/python/setup.sh"))
        .output()
        .expect("run examples/python/setup.sh");
    assert!(
        out.status.success(),
        "examples/python/setup.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn producer(venv: &Path, args: &[&str]) -> Output {
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("examples/python/producer.py"))
        .args(args)
        .output()
        .expect("run producer.py");
    eprintln!(
        "--- producer.py {args:?}: {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A historian export: `telemetry.csv` of a simulated fleet ending now, `vibration_rms` under
/// the historian's tag; split in two files (all machines but the last, then the last).
fn readings(dir: &Path) -> (PathBuf, PathBuf, BTreeMap<String, usize>) {
    let status = Command::new(maintcast_bin())
        .args(["simulate", "--seed", "11", "--start", "now", "--days", "4"])
        .args(["--machines", &MACHINES.to_string(), "--out"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(dir.join("telemetry.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().replace("vibration_rms", TAG);
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    let body: Vec<&str> = lines.collect();
    for l in &body {
        *rows
            .entry(l.split(',').next().unwrap().to_string())
            .or_default() += 1;
    }
    let last = rows.keys().last().unwrap().clone();
    let (mut first, mut rest) = (vec![header.clone()], vec![header]);
    for l in body {
        if l.starts_with(&format!("{last},")) {
            rest.push(l.to_string());
        } else {
            first.push(l.to_string());
        }
    }
    let (a, b) = (dir.join("historian-a.csv"), dir.join("historian-b.csv"));
    std::fs::write(&a, first.join("\n") + "\n").unwrap();
    std::fs::write(&b, rest.join("\n") + "\n").unwrap();
    (a, b, rows)
}

async fn forecasts_per_machine(env: &InfluxEnv) -> BTreeMap<String, usize> {
    env.query(&format!(
        r#"from(bucket: "{}") |> range(start: -30d, stop: 1d)
           |> filter(fn: (r) => r._measurement == "maintenance_forecast" and r._field == "days_to_maintenance")
           |> group(columns: ["machine_id"]) |> count()"#,
        env.bucket
    ))
    .await
    .into_iter()
    .map(|r| (r["machine_id"].clone(), r["_value"].parse().unwrap()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_producer_rows_become_forecasts() {
    let venv = venv();
    // Its own pure logic (timestamp units, missing readings, sensor-name checks).
    let unit = Command::new(venv.join("bin/python"))
        .args(["-m", "unittest", "-q", "test_producer"])
        .current_dir(repo().join("examples/python"))
        .output()
        .unwrap();
    assert!(
        unit.status.success(),
        "examples/python/test_producer.py:\n{}",
        String::from_utf8_lossy(&unit.stderr)
    );

    let brokers = kafka_brokers();
    let run = unique("producer");
    create_topics(&brokers, &run).await;
    let env = influx().with_new_bucket(&run).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, rows) = readings(dir.path());
    // The shipped model, served as the Docker image serves it.
    let registry = dir.path().join("registry");
    let status = Command::new("cp")
        .arg("-R")
        .arg(repo().join("models/pretrained"))
        .arg(&registry)
        .status()
        .unwrap();
    assert!(status.success());
    let card = registry.join("maintcast/v0001/model.json");

    let mut config = service_config(&brokers, &registry, "maintcast", &run);
    config.influx = InfluxConfig {
        url: env.url.clone(),
        org: env.org.clone(),
        bucket: env.bucket.clone(),
        token: Secret::new(env.token.clone()),
        ..config.influx
    };
    let (shutdown, service) = start_service(config);

    let topic = format!("{run}-telemetry");
    let (a, b, card) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        card.to_str().unwrap(),
    );
    let base = [
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--model-card",
        card,
    ];
    // The historian's tag is not a sensor the model knows: refused before anything is sent.
    let refused = producer(&venv, &[&base[..], &["--csv", a]].concat());
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("vibration_rms"));
    // Renamed: sent, some machines as Protobuf, the others as JSON.
    let rename = format!("{TAG}=vibration_rms");
    for (csv, format) in [(a, "protobuf"), (b, "json")] {
        let args = [
            &base[..],
            &["--csv", csv, "--format", format, "--rename", &rename],
        ]
        .concat();
        assert!(producer(&venv, &args).status.success());
    }

    // Every row from the 60th of each machine is forecast once.
    let want: BTreeMap<String, usize> = rows.iter().map(|(m, n)| (m.clone(), n - 59)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut got = BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        got = forecasts_per_machine(&env).await;
        if got == want {
            break;
        }
        assert!(!service.is_finished(), "ingest stopped");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(got, want, "forecasts per machine in InfluxDB");
    stop_service(shutdown, service).await;
    env.delete_bucket().await;
}
