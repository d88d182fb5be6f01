//! The trainer service against the real InfluxDB: history in `telemetry` / `maintenance_event`
//! -> `maintcast train --once` -> the champion/challenger gate decides; `training_run` points,
//! TensorBoard files and realized accuracy come along.

use std::process::Command;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::DataPoint;
use maintcast_common::points::{self, Point};
use maintcast_e2e::fleet::{self, card, train_once};
use maintcast_e2e::{InfluxEnv, influx, unique};
use maintcast_models::registry as reg;
use maintcast_proto::{Forecast, MaintenanceEvent, MaintenanceKind, Telemetry};

async fn write(env: &InfluxEnv, points: Vec<DataPoint>) {
    for chunk in points.chunks(5000) {
        env.client()
            .write_with_precision(
                &env.bucket,
                futures::stream::iter(chunk.to_vec()),
                TimestampPrecision::Milliseconds,
            )
            .await
            .expect("writing to InfluxDB");
    }
}

/// The fleet as the ingest service stores it.
fn history_points(f: &fleet::Fleet, machine_type: &str) -> Vec<DataPoint> {
    let mut out: Vec<DataPoint> = f
        .rows
        .iter()
        .map(|r| {
            Point::telemetry(&Telemetry {
                machine_id: r.machine.clone(),
                ts_ms: r.ts_ms,
                sensors: vec![("wear".into(), r.wear), ("noise".into(), r.noise)],
                machine_type: Some(machine_type.into()),
                site: None,
            })
            .unwrap()
            .data_point()
        })
        .collect();
    for (m, ts) in &f.events {
        out.push(
            Point::maintenance_event(&MaintenanceEvent {
                machine_id: m.clone(),
                ts_ms: *ts,
                kind: MaintenanceKind::Repair,
                note: String::new(),
            })
            .unwrap()
            .data_point(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rounds_promote_a_better_challenger_skip_without_new_data_and_refuse_a_shuffled_one() {
    let env = influx();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("tiny.toml"), fleet::TINY_RECIPE).unwrap();
    let machine_type = unique("trainer-type");
    let name = unique("trainer-model");
    // 2025-01-01: far from other tests' data, and the pages (7 days) are many.
    // A fixed machine-id prefix keeps the held-out machines (chosen by id hash) the same every run,
    // so the challenger-vs-champion margins are reproducible; the unique machine_type isolates runs.
    let f = fleet::fleet("tm", 10, 3, 1_735_689_600_000, 11);
    write(&env, history_points(&f, &machine_type)).await;

    let r = root.path().join("registry");
    // 1. the first version is promoted whatever it is worth: here a know-nothing model
    let o = train_once(
        &env,
        root.path(),
        &name,
        &machine_type,
        &["--shuffle-labels"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        reg::current_version(&r, &name).unwrap().as_deref(),
        Some("v0001")
    );
    let c1 = card(root.path(), &name, "v0001");
    assert_eq!(c1["data"]["source"], "influxdb");
    assert_eq!(
        c1["data"]["labelled_rows"].as_u64().unwrap() as usize,
        f.rows.len()
    );

    // 2. a properly trained challenger beats it on the held-out machines
    let o = train_once(
        &env,
        root.path(),
        &name,
        &machine_type,
        &["--min-new-rows", "0"],
    );
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(
        reg::current_version(&r, &name).unwrap().as_deref(),
        Some("v0002")
    );
    let c2 = card(root.path(), &name, "v0002");
    assert_eq!(c2["parent_version"], "v0001");
    let (ch, cm) = (
        c2["metrics"]["holdout"]["challenger_mae"].as_f64().unwrap(),
        c2["metrics"]["holdout"]["champion_mae"].as_f64().unwrap(),
    );
    assert!(ch < cm * 0.98, "challenger {ch} vs champion {cm}");
    assert!(
        log.contains("held-out MAE challenger") && log.contains("promoted"),
        "{log}"
    );

    // 3. nothing new since v0002 was trained: skipped, with the reason
    let o = train_once(&env, root.path(), &name, &machine_type, &[]);
    assert_eq!(o.status.code(), Some(20));
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 new labelled rows since v0002"));
    assert_eq!(reg::versions(&r, &name).unwrap().len(), 2);

    // 4. a challenger trained on shuffled labels is published but never promoted
    let o = train_once(
        &env,
        root.path(),
        &name,
        &machine_type,
        &["--shuffle-labels", "--min-new-rows", "0"],
    );
    assert_eq!(o.status.code(), Some(10));
    assert_eq!(
        reg::current_version(&r, &name).unwrap().as_deref(),
        Some("v0002")
    );
    let c3 = card(root.path(), &name, "v0003");
    assert_eq!(c3["metrics"]["gate"]["promoted"], false);

    // training_run points for every training round, TensorBoard files per round
    let rows = env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: 0)
               |> filter(fn: (r) => r._measurement == "training_run" and r.model == "{name}" and r._field == "val_mae")
               |> group(columns: ["run_id"]) |> count()"#,
            env.bucket
        ))
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let tb_runs = std::fs::read_dir(root.path().join("tb").join(&name))
        .unwrap()
        .count();
    assert_eq!(tb_runs, 3);
}

/// `--live-gate`: a challenger that passes the offline gate shadows instead of serving, and while
/// it shadows a round reviews its live evidence instead of training another.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_live_gate_a_passing_challenger_shadows_and_waits_for_evidence() {
    let env = influx();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("tiny.toml"), fleet::TINY_RECIPE).unwrap();
    let machine_type = unique("live-type");
    let name = unique("live-model");
    // The same fleet as the promotion test: a trained challenger beats a know-nothing champion.
    let f = fleet::fleet("tm", 10, 3, 1_735_689_600_000, 11);
    write(&env, history_points(&f, &machine_type)).await;
    let r = root.path().join("registry");
    let gate = [
        "--live-gate",
        "--live-min-events",
        "3",
        "--min-new-rows",
        "0",
    ];

    // The first version serves at once, live gate or not.
    let o = train_once(
        &env,
        root.path(),
        &name,
        &machine_type,
        &["--shuffle-labels", "--live-gate"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        reg::current_version(&r, &name).unwrap().as_deref(),
        Some("v0001")
    );

    // A better challenger is published and shadows; CURRENT stays.
    let o = train_once(&env, root.path(), &name, &machine_type, &gate);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(10), "{log}");
    assert!(log.contains("shadowing: passed the offline gate"), "{log}");
    assert_eq!(
        reg::current_version(&r, &name).unwrap().as_deref(),
        Some("v0001")
    );
    assert_eq!(
        reg::shadow_version(&r, &name).unwrap().as_deref(),
        Some("v0002")
    );
    let c2 = card(root.path(), &name, "v0002");
    assert_eq!(c2["metrics"]["gate"]["shadow"], true);
    assert_eq!(c2["metrics"]["gate"]["promoted"], false);
    let last = reg::read_log(&r, &name).unwrap().pop().unwrap();
    assert_eq!(
        (last.action, last.version.as_str()),
        (reg::Action::Shadow, "v0002")
    );
    assert!(
        last.reason.contains("awaiting live evidence"),
        "{}",
        last.reason
    );

    // No maintenance scored yet: the round waits (skipped) and trains nothing new.
    let o = train_once(&env, root.path(), &name, &machine_type, &gate);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(20), "{log}");
    assert!(log.contains("collecting live evidence"), "{log}");
    assert_eq!(reg::versions(&r, &name).unwrap().len(), 2);
    assert_eq!(
        reg::shadow_version(&r, &name).unwrap().as_deref(),
        Some("v0002")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn realized_accuracy_scores_served_forecasts_against_the_event() {
    let env = influx();
    let machine = unique("rz");
    let model = unique("rz-model");
    let day = fleet::DAY_MS;
    let t0 = 1_738_368_000_000i64; // 2025-02-01
    // forecasts on days 0, 10, 18, 19 for an event on day 20: truths 20, 10, 2, 1
    let mut points: Vec<DataPoint> = [
        (0, 25.0, "v0001"),
        (10, 9.0, "v0001"),
        (18, 3.0, "v0002"),
        (19, 1.0, "v0002"),
    ]
    .iter()
    .map(|&(d, days, v)| {
        let ts_ms = t0 + d * day;
        Point::forecast(&Forecast {
            machine_id: machine.clone(),
            ts_ms,
            model: model.clone(),
            model_version: v.into(),
            days_to_maintenance: days,
            due_at: points::due_at(ts_ms, days),
            days_p10: days - 1.0,
            days_p90: days + 1.0,
            window_rows: 60,
            machine_type: None,
            site: None,
            quality_score: 1.0,
            quality_flags: String::new(),
            low_confidence: false,
        })
        .unwrap()
        .data_point()
    })
    .collect();
    points.push(
        Point::maintenance_event(&MaintenanceEvent {
            machine_id: machine.clone(),
            ts_ms: t0 + 20 * day,
            kind: MaintenanceKind::Failure,
            note: String::new(),
        })
        .unwrap()
        .data_point(),
    );
    write(&env, points).await;
    let machines = [machine.clone()].into_iter().collect();
    let r = maintcast_trainer::realized::score(
        &env.client(),
        &env.bucket,
        &model,
        100.0,
        5.0,
        &machines,
    )
    .await
    .unwrap();
    // errors 5, -1, 1, 0
    assert_eq!((r.events, r.forecasts), (1, 4));
    assert!((r.overall_mae.unwrap() - 7.0 / 4.0).abs() < 1e-9, "{r:?}");
    assert!((r.version_mae("v0001").unwrap() - 3.0).abs() < 1e-9);
    assert!((r.version_mae("v0002").unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(r.by_horizon["0-7d"].n, 2);
    // below 5 days from day 18 on
    assert_eq!(r.scored[0].forewarning_days, 2.0);
}

/// `--every`: the service serves /healthz and /metrics, counts its rounds, and stops cleanly
/// (exit 0) on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn service_mode_serves_metrics_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("tiny.toml"), fleet::TINY_RECIPE).unwrap();
    let data = fleet::fleet("svc", 5, 2, 0, 5).write_csv(&root.path().join("data"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let r = root.path().join("registry");
    let mut child = Command::new(fleet::maintcast_bin())
        .args([
            "train",
            "--every",
            "1h",
            "--format",
            "csv",
            "--data",
            data.to_str().unwrap(),
            "--config",
            root.path().join("tiny.toml").to_str().unwrap(),
            "--registry",
            r.to_str().unwrap(),
            "--name",
            "svc",
            "--http-addr",
            &addr,
        ])
        .env_remove("MAINTCAST_INFLUX_URL")
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let metrics = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no round finished within 120 s"
        );
        if let Ok(resp) = http.get(format!("http://{addr}/metrics")).send().await {
            let body = resp.text().await.unwrap();
            if body.contains(r#"maintcast_trainer_rounds_total{outcome="promoted"} 1"#) {
                break body;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(
        metrics.contains("maintcast_trainer_challenger_mae_days"),
        "{metrics}"
    );
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert_eq!(
        reg::current_version(&r, "svc").unwrap().as_deref(),
        Some("v0001")
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
