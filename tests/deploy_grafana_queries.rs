//! Every Flux query Grafana will run - each dashboard panel, template variable and annotation in
//! `deploy/grafana/dashboards/`, each alert rule in `deploy/grafana/provisioning/alerting/` - runs
//! against the real InfluxDB after a fleet's data went in, and must return the rows its panel
//! shows. A measurement, field or tag renamed on either side breaks this test.
//!
//! The fleet is written point by point in exactly docs/influxdb.md's schema
//! into a bucket of its own, so the expected counts are exact whatever else the server holds.
//! A second test runs the same queries on what the services themselves write - a fleet streamed
//! through the real ingest service, training runs through the trainer's writer - so a name that
//! drifts between a service and docs/influxdb.md breaks it too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use influxdb2::models::DataPoint;
use maintcast_e2e::bucket::{create_bucket, delete_bucket};
use maintcast_e2e::{InfluxEnv, influx, unique};
use serde_json::Value;

type Row = HashMap<String, String>;

const INFLUX_DS: &str = "maintcast-influxdb";
const PROM_DS: &str = "maintcast-prometheus";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// One Flux query as Grafana would send it, before variable substitution.
#[derive(Debug)]
struct FluxQuery {
    /// `<dashboard uid>/<panel title>/<refId>`, `<uid>/var/<name>`, `<uid>/annotation/<name>`
    /// or `alert/<rule uid>/<refId>`: what the expectations below are keyed by.
    key: String,
    text: String,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the four maintcast dashboards in {}",
        dir.display()
    );
    files
}

fn ds_uid(v: &Value) -> Option<&str> {
    v.get("datasource")
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
}

fn collect_panels<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for p in panels {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            collect_panels(inner, out);
        }
    }
}

/// Every Flux query of every dashboard; panics on a panel without a query or with an unknown
/// data source, so nothing on a dashboard escapes the test.
fn dashboard_queries() -> Vec<FluxQuery> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        let d = read_json(&file);
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no uid", file.display()));
        let mut panels = Vec::new();
        collect_panels(
            d["panels"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &mut panels,
        );
        for p in panels {
            let kind = p["type"].as_str().unwrap_or_default();
            if kind == "row" || kind == "text" {
                continue;
            }
            let title = p["title"]
                .as_str()
                .unwrap_or_else(|| panic!("{uid}: a panel has no title"));
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{uid}/{title}: panel has no queries"));
            for t in targets {
                let ds = ds_uid(t)
                    .or(ds_uid(p))
                    .unwrap_or_else(|| panic!("{uid}/{title}: no data source"));
                let ref_id = t["refId"].as_str().unwrap_or("A");
                match ds {
                    INFLUX_DS => out.push(FluxQuery {
                        key: format!("{uid}/{title}/{ref_id}"),
                        text: t["query"]
                            .as_str()
                            .unwrap_or_else(|| panic!("{uid}/{title}: no Flux query"))
                            .into(),
                    }),
                    PROM_DS => assert!(
                        t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                        "{uid}/{title}/{ref_id}: Prometheus target without expr"
                    ),
                    other => panic!("{uid}/{title}: unknown data source uid {other:?}"),
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap_or_default();
            assert_eq!(
                ds_uid(v),
                Some(INFLUX_DS),
                "{uid}: variable {name} must query InfluxDB"
            );
            // Grafana stores a variable's query as a string or as {query: ...} depending on version.
            let text = v["query"].as_str().or(v["query"]["query"].as_str());
            let text = text.unwrap_or_else(|| panic!("{uid}: variable {name} has no query"));
            out.push(FluxQuery {
                key: format!("{uid}/var/{name}"),
                text: text.into(),
            });
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if a.get("builtIn").is_some() {
                continue;
            }
            let name = a["name"].as_str().unwrap_or_default();
            assert_eq!(
                ds_uid(a),
                Some(INFLUX_DS),
                "{uid}: annotation {name} must query InfluxDB"
            );
            let text = a["target"]["query"].as_str().or(a["query"].as_str());
            let text = text.unwrap_or_else(|| panic!("{uid}: annotation {name} has no query"));
            out.push(FluxQuery {
                key: format!("{uid}/annotation/{name}"),
                text: text.into(),
            });
        }
    }
    out
}

fn alert_rules() -> Vec<serde_norway::Value> {
    let path = repo().join("deploy/grafana/provisioning/alerting/maintcast.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    let groups = doc["groups"]
        .as_sequence()
        .expect("alerting file has groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("group has rules").clone())
        .collect()
}

fn alert_queries() -> Vec<FluxQuery> {
    let mut out = Vec::new();
    for rule in alert_rules() {
        let uid = rule["uid"].as_str().expect("alert rule uid");
        for q in rule["data"].as_sequence().expect("alert rule data") {
            let ref_id = q["refId"].as_str().expect("refId");
            match q["datasourceUid"].as_str() {
                Some(INFLUX_DS) => out.push(FluxQuery {
                    key: format!("alert/{uid}/{ref_id}"),
                    text: q["model"]["query"]
                        .as_str()
                        .expect("Flux query in the alert model")
                        .into(),
                }),
                Some("__expr__") => {}
                other => panic!("alert {uid}/{ref_id}: unknown data source {other:?}"),
            }
        }
    }
    out
}

/// What Grafana puts in place of its variables. Anything left over is a variable the test does
/// not know, which would reach InfluxDB verbatim: that fails rather than passing by accident.
struct Vars {
    bucket: String,
    machine: String,
    start: DateTime<Utc>,
    stop: DateTime<Utc>,
}

fn substitute(q: &FluxQuery, vars: &Vars) -> String {
    let text = q
        .text
        .replace("${bucket}", &vars.bucket)
        // Grafana interpolates the container's environment into provisioning files (alert rules).
        .replace("${MAINTCAST_INFLUX_BUCKET}", &vars.bucket)
        .replace("${machine_id}", &vars.machine)
        .replace(
            "v.timeRangeStart",
            &vars
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .replace(
            "v.timeRangeStop",
            &vars.stop.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
        .replace("v.windowPeriod", "1h");
    assert!(
        !text.contains('$'),
        "{}: unknown Grafana variable left in\n{text}",
        q.key
    );
    assert!(
        !text.contains("v."),
        "{}: unknown Flux dashboard variable left in\n{text}",
        q.key
    );
    text
}

/// Every dashboard and alert query, substituted with `vars` and run: (key, rows) in file order.
async fn run_every_query(env: &InfluxEnv, vars: &Vars) -> Vec<(String, Vec<Row>)> {
    let mut out = Vec::new();
    for q in dashboard_queries().into_iter().chain(alert_queries()) {
        let rows = env.query(&substitute(&q, vars)).await;
        out.push((q.key, rows));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The fleet

struct Machine {
    id: String,
    site: &'static str,
    kind: &'static str,
    /// days_to_maintenance of its newest forecast
    days_left: f64,
}

struct Fleet {
    machines: Vec<Machine>,
    /// time of the newest telemetry row and forecast of every machine
    last: DateTime<Utc>,
    runs: [String; 2],
}

const ROWS: i64 = 72;
/// The machine whose newest forecasts carry an input-quality flag.
const DOUBTFUL_MACHINE: usize = 4;
const FIRST_FORECAST_ROW: i64 = 12;
/// Machine 0 moves from model version v1 to v2 at this row, the others stay on v1.
const VERSION_SWITCH_ROW: i64 = 50;
const SENSORS: [&str; 3] = ["vibration_rms", "bearing_temp_c", "motor_current_a"];
const EPOCHS: [i64; 2] = [10, 8];

fn row_time(fleet: &Fleet, i: i64) -> DateTime<Utc> {
    fleet.last - Duration::hours(ROWS - 1 - i)
}

fn forecast_days(m: &Machine, i: i64) -> f64 {
    // Hourly rows: the forecast falls by 1/24 day per row and ends at `days_left`.
    m.days_left + (ROWS - 1 - i) as f64 / 24.0
}

fn due_at(fleet: &Fleet, m: &Machine, i: i64) -> i64 {
    row_time(fleet, i).timestamp() + (forecast_days(m, i) * 86_400.0).round() as i64
}

fn make_fleet(prefix: &str) -> Fleet {
    let specs = [
        ("aarhus", "press", 2.5),
        ("aarhus", "press", 5.0),
        ("aarhus", "press", 9.0),
        ("lyon", "mill", 16.0),
        ("lyon", "mill", 31.0),
        ("lyon", "mill", 45.0),
    ];
    let machines = specs
        .iter()
        .enumerate()
        .map(|(i, &(site, kind, days_left))| Machine {
            id: format!("{prefix}-{kind}-{i:03}"),
            site,
            kind,
            days_left,
        })
        .collect();
    Fleet {
        machines,
        last: Utc::now().trunc_subsecs(0) - Duration::minutes(30),
        runs: [format!("{prefix}-run-a"), format!("{prefix}-run-b")],
    }
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().expect("time in range")
}

/// The points the ingest service, the trainer and the event topic would produce, in docs/influxdb.md's schema.
fn fleet_points(fleet: &Fleet) -> Vec<DataPoint> {
    let mut points = Vec::new();
    for (mi, m) in fleet.machines.iter().enumerate() {
        for i in 0..ROWS {
            let t = ns(row_time(fleet, i));
            let mut p = DataPoint::builder("telemetry")
                .tag("machine_id", m.id.as_str())
                .tag("machine_type", m.kind)
                .tag("site", m.site);
            for (si, s) in SENSORS.iter().enumerate() {
                p = p.field(
                    *s,
                    10.0 * (si + 1) as f64 + (i as f64 * 0.1 + mi as f64).sin(),
                );
            }
            points.push(p.timestamp(t).build().unwrap());
            if i < FIRST_FORECAST_ROW {
                continue;
            }
            let version = if mi == 0 && i >= VERSION_SWITCH_ROW {
                "v2"
            } else {
                "v1"
            };
            let days = forecast_days(m, i);
            // One machine's newest forecasts were made from a stuck sensor.
            let doubtful = mi == DOUBTFUL_MACHINE && i >= ROWS - 3;
            let mut forecast = DataPoint::builder("maintenance_forecast");
            if doubtful {
                forecast = forecast.field("quality_flags", "vibration_rms:stuck");
            }
            points.push(
                forecast
                    .tag("machine_id", m.id.as_str())
                    .tag("model", "lstm")
                    .tag("model_version", version)
                    .tag("machine_type", m.kind)
                    .tag("site", m.site)
                    .field("days_to_maintenance", days)
                    .field("due_at", due_at(fleet, m, i))
                    .field("days_p10", days * 0.8)
                    .field("days_p90", days * 1.25)
                    .field("window_rows", (i + 1).min(60))
                    .field("quality_score", if doubtful { 0.5 } else { 1.0 })
                    .field("low_confidence", doubtful)
                    .timestamp(t)
                    .build()
                    .unwrap(),
            );
        }
    }
    points.extend(shadow_points(fleet));
    for (machine, row, kind) in [(0, 5, "repair"), (0, 8, "scheduled"), (3, 3, "failure")] {
        let m = &fleet.machines[machine];
        points.push(
            DataPoint::builder("maintenance_event")
                .tag("machine_id", m.id.as_str())
                .tag("kind", kind)
                .field("note", format!("{kind} of {}", m.id))
                .timestamp(ns(row_time(fleet, row)) + 1)
                .build()
                .unwrap(),
        );
    }
    // Two plans: only the newer one (statuses and days below) is the plan in force.
    for (made, choices) in [
        (
            fleet.last - Duration::hours(2),
            vec![
                (0, "scheduled", 3),
                (1, "scheduled", 4),
                (4, "scheduled", 5),
            ],
        ),
        (fleet.last - Duration::minutes(20), plan_choices()),
    ] {
        for (machine, status, day) in choices {
            points.push(plan_point(fleet, machine, made, status, day));
        }
    }
    for (run, epochs) in fleet.runs.iter().zip(EPOCHS) {
        let start = fleet.last - Duration::hours(24) + Duration::minutes(epochs);
        for e in 0..epochs {
            points.push(
                DataPoint::builder("training_run")
                    .tag("model", "lstm")
                    .tag("run_id", run.as_str())
                    .field("train_loss", 1.0 / (e + 1) as f64)
                    .field("val_mae", val_mae(epochs, e))
                    .field("val_rmse", val_mae(epochs, e) * 1.3)
                    .field("elapsed_s", (e + 1) as f64 * 12.0)
                    .timestamp(ns(start + Duration::minutes(e)))
                    .build()
                    .unwrap(),
            );
        }
    }
    points
}

/// The newest plan: (machine, status, day), day -1 for a machine left without a slot.
fn plan_choices() -> Vec<(usize, &'static str, i64)> {
    vec![
        (1, "scheduled", 2),
        (0, "late", 0),
        (3, "no_capacity", -1),
        (2, "scheduled", 1),
    ]
}

/// One `maintenance_plan` point as `maintcast plan --write` writes it (docs/maintenance-plan.md).
fn plan_point(
    fleet: &Fleet,
    machine: usize,
    made: DateTime<Utc>,
    status: &str,
    day: i64,
) -> DataPoint {
    let m = &fleet.machines[machine];
    let slot_at = if day < 0 {
        0
    } else {
        (made + Duration::days(day)).timestamp()
    };
    DataPoint::builder("maintenance_plan")
        .tag("machine_id", m.id.as_str())
        .tag("machine_type", m.kind)
        .tag("site", m.site)
        .field("status", status)
        .field("day", day)
        .field("slot_at", slot_at)
        .field("risk", 0.05 * (machine + 1) as f64)
        .field("deadline_day", day.max(0))
        .field("days_to_maintenance", m.days_left)
        .field("days_p10", m.days_left * 0.8)
        .field("days_p90", m.days_left * 1.25)
        .field("forecast_at", fleet.last.timestamp())
        .field("reason", format!("why {}", m.id))
        .timestamp(ns(made))
        .build()
        .unwrap()
}

/// The shadow challenger's version: its forecasts say every machine is due within half a day, so
/// any served-forecast query that took them in would count, sort or alert differently.
const SHADOW_VERSION: &str = "v3";

/// (machine, days before `last`, kind, role, version, band, n, error_sum, abs_error_sum, covered)
type AccuracyFixture = (
    usize,
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i64,
    f64,
    f64,
    i64,
);

/// Two maintenance events scored for the served v1 and the shadow v3 (docs/LIVE_EVALUATION.md).
const ACCURACY: [AccuracyFixture; 6] = [
    (0, 3, "repair", "champion", "v1", "0-7d", 10, -10.0, 20.0, 8),
    (
        0, 3, "repair", "champion", "v1", "7-30d", 20, 40.0, 80.0, 10,
    ),
    (
        0,
        3,
        "repair",
        "shadow",
        SHADOW_VERSION,
        "0-7d",
        10,
        2.0,
        10.0,
        9,
    ),
    (
        0,
        3,
        "repair",
        "shadow",
        SHADOW_VERSION,
        "7-30d",
        20,
        -4.0,
        40.0,
        16,
    ),
    (3, 1, "failure", "champion", "v1", "0-7d", 5, 5.0, 15.0, 3),
    (
        3,
        1,
        "failure",
        "shadow",
        SHADOW_VERSION,
        "0-7d",
        5,
        -1.0,
        5.0,
        5,
    ),
];

/// What the ingest service writes for a shadow model: `shadow_forecast` (same tags and fields as
/// `maintenance_forecast`) and `forecast_accuracy` when maintenance happens.
fn shadow_points(fleet: &Fleet) -> Vec<DataPoint> {
    let mut points = Vec::new();
    for m in &fleet.machines {
        for i in FIRST_FORECAST_ROW..ROWS {
            points.push(
                DataPoint::builder("shadow_forecast")
                    .tag("machine_id", m.id.as_str())
                    .tag("model", "lstm")
                    .tag("model_version", SHADOW_VERSION)
                    .tag("machine_type", m.kind)
                    .tag("site", m.site)
                    .field("days_to_maintenance", 0.5)
                    .field("due_at", row_time(fleet, i).timestamp() + 43_200)
                    .field("days_p10", 0.25)
                    .field("days_p90", 0.75)
                    .field("window_rows", (i + 1).min(60))
                    .timestamp(ns(row_time(fleet, i)))
                    .build()
                    .unwrap(),
            );
        }
    }
    for (machine, days_ago, kind, role, version, band, n, err, abs, covered) in ACCURACY {
        let (n, covered) = (n as f64, covered as f64);
        points.push(
            DataPoint::builder("forecast_accuracy")
                .tag("machine_id", fleet.machines[machine].id.as_str())
                .tag("model", "lstm")
                .tag("model_version", version)
                .tag("role", role)
                .tag("band", band)
                .tag("kind", kind)
                .field("n", n as i64)
                .field("error_sum", err)
                .field("abs_error_sum", abs)
                .field("covered", covered as i64)
                .field("mae", abs / n)
                .field("bias", err / n)
                .field("coverage", covered / n)
                .timestamp(ns(fleet.last - Duration::days(days_ago)))
                .build()
                .unwrap(),
        );
    }
    points
}

/// Sums of the accuracy fixture's rows that `keep` picks: (events, n, error_sum, abs_error_sum,
/// covered).
fn accuracy_sums(keep: impl Fn(&AccuracyFixture) -> bool) -> (f64, f64, f64, f64, f64) {
    let rows: Vec<&AccuracyFixture> = ACCURACY.iter().filter(|r| keep(r)).collect();
    let events: BTreeSet<(usize, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    rows.iter()
        .fold((events.len() as f64, 0.0, 0.0, 0.0, 0.0), |a, r| {
            (
                a.0,
                a.1 + r.6 as f64,
                a.2 + r.7,
                a.3 + r.8,
                a.4 + r.9 as f64,
            )
        })
}

/// The model-quality panels' expectations: the summary tables are exact sums of the fixture, the
/// running series end at the same sums.
fn check_quality(key: &str, rows: &[Row]) -> Result<(), String> {
    let fail = |msg: String| Err(format!("{key}: {msg}\nrows: {rows:#?}"));
    let sides = [("champion", "v1"), ("shadow", SHADOW_VERSION)];
    match key {
        "maintcast-quality/Champion and shadow over the time range/A" => {
            if rows.len() != 2 {
                return fail("expected one row per (role, version)".into());
            }
            for (r, (role, version)) in rows.iter().zip(sides) {
                let (events, n, err, abs, cov) = accuracy_sums(|x| x.3 == role);
                let want = [events, n, abs / n, err / n, cov / n];
                let got = ["events", "forecasts", "mae", "bias", "coverage"].map(|c| num(r, c));
                if text(r, "role") != role
                    || text(r, "model_version") != version
                    || got.iter().zip(want).any(|(g, w)| !close(*g, w, 1e-9))
                {
                    return fail(format!("{role} {version}: got {got:?}, expected {want:?}"));
                }
            }
        }
        "maintcast-quality/Realized MAE by horizon band/A" => {
            let mut want = Vec::new();
            for (role, version) in sides {
                for band in ["0-7d", "7-30d"] {
                    let (_, n, _, abs, cov) = accuracy_sums(|x| x.3 == role && x.5 == band);
                    want.push((role, version, band, n, abs / n, cov / n));
                }
            }
            let same = rows.len() == want.len()
                && rows.iter().zip(&want).all(|(r, w)| {
                    text(r, "role") == w.0
                        && text(r, "model_version") == w.1
                        && text(r, "band") == w.2
                        && close(num(r, "forecasts"), w.3, 1e-9)
                        && close(num(r, "mae"), w.4, 1e-9)
                        && close(num(r, "coverage"), w.5, 1e-9)
                });
            if !same {
                return fail(format!(
                    "expected (role, version, band, n, mae, coverage) {want:?}"
                ));
            }
        }
        "maintcast-quality/Realized MAE per model version, running (days)/A"
        | "maintcast-quality/p10-p90 coverage per model version, running/A" => {
            let mae = key.contains("MAE");
            for (role, version) in sides {
                let mut series: Vec<(&str, f64)> = rows
                    .iter()
                    .filter(|r| text(r, "role") == role && text(r, "model_version") == version)
                    .map(|r| (text(r, "_time"), num(r, "_value")))
                    .collect();
                series.sort_by(|a, b| a.0.cmp(b.0));
                // One point per event, the second pooling both.
                let want: Vec<f64> = [3, 1]
                    .iter()
                    .map(|&until| {
                        let (_, n, _, abs, cov) = accuracy_sums(|x| x.3 == role && x.1 >= until);
                        if mae { abs / n } else { cov / n }
                    })
                    .collect();
                let got: Vec<f64> = series.iter().map(|s| s.1).collect();
                if got.len() != 2 || got.iter().zip(&want).any(|(g, w)| !close(*g, *w, 1e-9)) {
                    return fail(format!("{role} {version}: {got:?}, expected {want:?}"));
                }
            }
            if distinct(rows, "table").len() != 2 {
                return fail("expected two series: the champion and the shadow".into());
            }
        }
        _ => {
            return Err(format!(
                "{key}: no expectation in tests/deploy_grafana_queries.rs; add one for the new query"
            ));
        }
    }
    Ok(())
}

fn val_mae(epochs: i64, e: i64) -> f64 {
    // run a (10 epochs) ends at 5.5, run b (8 epochs) at 5.9: a is the better run.
    if epochs == 10 {
        10.0 - e as f64 * 0.5
    } else {
        8.0 - e as f64 * 0.3
    }
}

// ---------------------------------------------------------------------------------------------
// What each query must return

fn num(row: &Row, col: &str) -> f64 {
    let v = row
        .get(col)
        .unwrap_or_else(|| panic!("column {col} missing from {row:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("column {col} = {v:?} is not a number"))
}

fn text<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("column {col} missing from {row:?}"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn single_value(key: &str, rows: &[Row]) -> f64 {
    assert_eq!(rows.len(), 1, "{key}: expected one row, got {rows:#?}");
    num(&rows[0], "_value")
}

fn distinct<'a>(rows: &'a [Row], col: &str) -> BTreeSet<&'a str> {
    rows.iter().map(|r| text(r, col)).collect()
}

fn per_field_counts(rows: &[Row]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(text(r, "_field")).or_insert(0) += 1;
    }
    m
}

/// Checks one query's rows; returns an error message (collected, so one run shows every failure).
fn check(key: &str, rows: &[Row], fleet: &Fleet) -> Result<(), String> {
    if key.starts_with("maintcast-quality/") {
        return check_quality(key, rows);
    }
    // Shadow forecasts are never served: no other panel or alert may show them.
    if let Some(r) = rows.iter().find(|r| {
        r.values()
            .any(|v| v.split_whitespace().any(|w| w == SHADOW_VERSION))
    }) {
        return Err(format!("{key}: shows the shadow model's forecasts: {r:?}"));
    }
    let ids: BTreeSet<&str> = fleet.machines.iter().map(|m| m.id.as_str()).collect();
    let m0 = &fleet.machines[0];
    let below = |limit: f64| {
        fleet
            .machines
            .iter()
            .filter(|m| m.days_left < limit)
            .count() as f64
    };
    let fail = |msg: String| Err(format!("{key}: {msg}\nrows: {rows:#?}"));
    match key {
        "maintcast-fleet/Machines with a forecast/A" => {
            let v = single_value(key, rows);
            if v != fleet.machines.len() as f64 {
                return fail(format!("{v} machines, expected {}", fleet.machines.len()));
            }
        }
        "maintcast-fleet/Due within 7 days/A" | "maintcast-fleet/Due within 14 days/A" => {
            let limit = if key.contains(" 7 ") { 7.0 } else { 14.0 };
            let v = single_value(key, rows);
            if v != below(limit) {
                return fail(format!("{v} machines, expected {}", below(limit)));
            }
        }
        "maintcast-fleet/Soonest maintenance (days)/A" => {
            let v = single_value(key, rows);
            if !close(v, m0.days_left, 1e-9) {
                return fail(format!("{v}, expected {}", m0.days_left));
            }
        }
        "maintcast-fleet/Machines by urgency/A" => {
            if rows.len() != fleet.machines.len() {
                return fail(format!("{} rows, expected one per machine", rows.len()));
            }
            // Sorted by urgency: the fleet is listed most urgent first.
            let order: Vec<&str> = rows.iter().map(|r| text(r, "machine_id")).collect();
            let expected: Vec<&str> = fleet.machines.iter().map(|m| m.id.as_str()).collect();
            if order != expected {
                return fail(format!("order {order:?}, expected {expected:?}"));
            }
            for (r, m) in rows.iter().zip(&fleet.machines) {
                let version = if m.id == m0.id { "v2" } else { "v1" };
                let due = DateTime::parse_from_rfc3339(text(r, "due"))
                    .map_err(|e| format!("due: {e}"))?;
                let days = num(r, "days_to_maintenance");
                if !close(days, m.days_left, 1e-9)
                    || text(r, "model_version") != version
                    || text(r, "model") != "lstm"
                    || text(r, "site") != m.site
                    || text(r, "machine_type") != m.kind
                    || due.timestamp() != due_at(fleet, m, ROWS - 1)
                    || !(num(r, "days_p10") < days && days < num(r, "days_p90"))
                {
                    return fail(format!(
                        "row for {} does not show its newest forecast",
                        m.id
                    ));
                }
            }
        }
        "maintcast-machine/var/machine_id" => {
            if distinct(rows, "_value") != ids {
                return fail("machine_id values are not the fleet's machines".into());
            }
        }
        "maintcast-machine/Days to maintenance/A" => {
            let v = single_value(key, rows);
            if !close(v, m0.days_left, 1e-9) {
                return fail(format!("{v}, expected {}", m0.days_left));
            }
        }
        "maintcast-machine/Predicted due date/A" => {
            let v = single_value(key, rows);
            if v != (due_at(fleet, m0, ROWS - 1) * 1000) as f64 {
                return fail("not the newest due_at in milliseconds".into());
            }
        }
        "maintcast-machine/Model serving this machine/A" => {
            if rows.len() != 1
                || text(&rows[0], "model") != "lstm v2"
                || num(&rows[0], "window_rows") != 60.0
            {
                return fail("expected one row: model 'lstm v2', window_rows 60".into());
            }
        }
        "maintcast-machine/Forecast history: days to maintenance with p10-p90/A" => {
            let counts = per_field_counts(rows);
            let fields: BTreeSet<&str> = counts.keys().copied().collect();
            let want = BTreeSet::from(["days_to_maintenance", "days_p10", "days_p90"]);
            // Hourly points in hourly windows: one row per forecast (60), give or take window edges.
            if fields != want || counts.values().any(|&n| n < 55) {
                return fail(format!(
                    "fields/counts {counts:?}, expected {want:?} with ~60 rows each"
                ));
            }
        }
        "maintcast-machine/Telemetry/A" => {
            let counts = per_field_counts(rows);
            let fields: BTreeSet<&str> = counts.keys().copied().collect();
            if fields != BTreeSet::from(SENSORS) || counts.values().any(|&n| n < 70) {
                return fail(format!(
                    "fields/counts {counts:?}, expected every sensor with ~72 rows"
                ));
            }
        }
        "maintcast-machine/annotation/Maintenance events" => {
            let texts = distinct(rows, "text");
            let want = BTreeSet::from([
                format!("repair: repair of {}", m0.id),
                format!("scheduled: scheduled of {}", m0.id),
            ]);
            if rows.len() != 2
                || texts != want.iter().map(String::as_str).collect()
                || distinct(rows, "tags").len() != 2
            {
                return fail(format!("expected machine 0's two events as {want:?}"));
            }
        }
        "maintcast-training/Validation MAE per epoch/A"
        | "maintcast-training/Training loss per epoch/A" => {
            let runs: BTreeSet<&str> = fleet.runs.iter().map(String::as_str).collect();
            if rows.len() as i64 != EPOCHS.iter().sum::<i64>() || distinct(rows, "run_id") != runs {
                return fail("expected one row per epoch of both runs".into());
            }
        }
        "maintcast-training/Runs: best validation error and training time/A" => {
            let got: Vec<(String, f64, f64, f64)> = rows
                .iter()
                .map(|r| {
                    (
                        text(r, "run_id").to_string(),
                        num(r, "val_mae"),
                        num(r, "elapsed_s"),
                        num(r, "epochs"),
                    )
                })
                .collect();
            let want = vec![
                (fleet.runs[0].clone(), 5.5, 120.0, 10.0),
                (fleet.runs[1].clone(), 5.9, 96.0, 8.0),
            ];
            let same = got.len() == want.len()
                && got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.0 == w.0 && close(g.1, w.1, 1e-9) && g.2 == w.2 && g.3 == w.3);
            if !same || rows.iter().any(|r| num(r, "val_rmse") <= num(r, "val_mae")) {
                return fail(format!(
                    "expected (run, best val_mae, elapsed_s, epochs) {want:?}"
                ));
            }
        }
        "maintcast-fleet/Maintenance plan/A" => {
            // The newest plan only, no-slot machines first, then by day.
            let mut want = plan_choices();
            want.sort_by_key(|c| (c.2, fleet.machines[c.0].id.clone()));
            let got: Vec<(String, String, f64)> = rows
                .iter()
                .map(|r| {
                    (
                        text(r, "machine_id").to_string(),
                        text(r, "status").to_string(),
                        num(r, "day"),
                    )
                })
                .collect();
            let expected: Vec<(String, String, f64)> = want
                .iter()
                .map(|&(m, st, d)| (fleet.machines[m].id.clone(), st.to_string(), d as f64))
                .collect();
            if got != expected {
                return fail(format!(
                    "(machine, status, day) {got:?}, expected {expected:?}"
                ));
            }
            for r in rows {
                let m = fleet
                    .machines
                    .iter()
                    .find(|m| m.id == text(r, "machine_id"))
                    .unwrap();
                let day = num(r, "day");
                let slot = DateTime::parse_from_rfc3339(text(r, "slot")).map(|t| t.timestamp());
                let made = (fleet.last - Duration::minutes(20)).timestamp();
                let slot_ok = if day < 0.0 {
                    slot == Ok(0)
                } else {
                    slot == Ok(made + day as i64 * 86_400)
                };
                if !slot_ok
                    || text(r, "reason") != format!("why {}", m.id)
                    || !close(num(r, "days_to_maintenance"), m.days_left, 1e-9)
                    || text(r, "site") != m.site
                    || !(0.0..=1.0).contains(&num(r, "risk"))
                {
                    return fail(format!("{}: slot, reason, days, site or risk wrong", m.id));
                }
            }
        }
        "maintcast-pipeline/Minutes since the newest forecast/A" => {
            let v = single_value(key, rows);
            // The newest forecast is 30 minutes old when written; the test takes seconds.
            if !(29.0..40.0).contains(&v) {
                return fail(format!("{v} minutes, expected about 30"));
            }
        }
        "maintcast-fleet/Input quality (worst first)/A" => {
            if rows.len() != fleet.machines.len() || distinct(rows, "machine_id") != ids {
                return fail("expected one row per machine".into());
            }
            let worst = &fleet.machines[DOUBTFUL_MACHINE];
            let first = &rows[0];
            if text(first, "machine_id") != worst.id
                || num(first, "quality_score") != 0.5
                || text(first, "low_confidence") != "true"
                || text(first, "quality_flags") != "vibration_rms:stuck"
            {
                return fail(format!(
                    "expected {} first, stuck and low-confidence",
                    worst.id
                ));
            }
            if rows[1..].iter().any(|r| {
                num(r, "quality_score") != 1.0
                    || text(r, "low_confidence") != "false"
                    || !text(r, "quality_flags").is_empty()
            }) {
                return fail("expected every other machine clean".into());
            }
        }
        "alert/maintcast-days-left-low/D" => {
            if rows.len() != fleet.machines.len() || distinct(rows, "machine_id") != ids {
                return fail("expected one series per machine, labelled machine_id".into());
            }
            for r in rows {
                let doubtful = text(r, "machine_id") == fleet.machines[DOUBTFUL_MACHINE].id;
                let want = if doubtful { 0.5 } else { 1.0 };
                if num(r, "_value") != want {
                    return fail(format!(
                        "{}: quality {want} expected",
                        text(r, "machine_id")
                    ));
                }
            }
        }
        "alert/maintcast-days-left-low/A" | "alert/maintcast-due-date-near/A" => {
            // One table per machine: Grafana makes each a separate alert instance labelled machine_id.
            if rows.len() != fleet.machines.len()
                || distinct(rows, "machine_id") != ids
                || distinct(rows, "table").len() != fleet.machines.len()
            {
                return fail("expected one series per machine, labelled machine_id".into());
            }
            let extra: Vec<&String> = rows[0]
                .keys()
                .filter(|k| {
                    !["", "result", "table", "_time", "_value", "machine_id"].contains(&k.as_str())
                })
                .collect();
            if !extra.is_empty() {
                return fail(format!(
                    "columns {extra:?} would become extra alert labels or values"
                ));
            }
            let due_rule = key.contains("due-date");
            for r in rows {
                let m = fleet
                    .machines
                    .iter()
                    .find(|m| m.id == text(r, "machine_id"))
                    .unwrap();
                // due_at is 30 min (1/48 day) after the forecast's own time plus days_left.
                let want = if due_rule {
                    m.days_left - 1.0 / 48.0
                } else {
                    m.days_left
                };
                if !close(num(r, "_value"), want, 0.01) {
                    return fail(format!(
                        "{}: {} days, expected {want}",
                        m.id,
                        num(r, "_value")
                    ));
                }
            }
        }
        _ => {
            return Err(format!(
                "{key}: no expectation in tests/deploy_grafana_queries.rs; add one for the new query"
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_dashboard_and_alert_query_returns_what_its_panel_shows() {
    let env = influx();
    let bucket = unique("deploy-grafana");
    create_bucket(&env, &bucket).await;
    let fleet = make_fleet(&unique("dash"));
    let points = fleet_points(&fleet);
    env.client()
        .write(&bucket, futures::stream::iter(points))
        .await
        .expect("write the fleet's points");

    let vars = Vars {
        bucket: bucket.clone(),
        machine: fleet.machines[0].id.clone(),
        start: fleet.last - Duration::days(7),
        stop: fleet.last + Duration::hours(1),
    };
    let results = run_every_query(&env, &vars).await;
    let mut failures = Vec::new();
    for (key, rows) in &results {
        if rows.is_empty() {
            failures.push(format!("{key}: no rows"));
        } else if let Err(e) = check(key, rows, &fleet) {
            failures.push(e);
        }
    }
    delete_bucket(&env, &bucket).await;
    assert!(
        failures.is_empty(),
        "{} of {} queries wrong:\n\n{}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
    // Two alert rules and every Flux panel, variable and annotation of the dashboards ran.
    assert!(
        results.len() >= 15,
        "only {} Flux queries found",
        results.len()
    );
}

/// Without a server: the provisioning files agree with one another.
#[test]
fn dashboards_and_alerts_use_the_provisioned_data_sources() {
    let path = repo().join("deploy/grafana/provisioning/datasources/maintcast.yaml");
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let uids: BTreeSet<&str> = doc["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, BTreeSet::from([INFLUX_DS, PROM_DS]));
    let flux = doc["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|d| d["uid"] == INFLUX_DS)
        .unwrap();
    assert_eq!(
        flux["jsonData"]["version"].as_str(),
        Some("Flux"),
        "dashboards are written in Flux"
    );

    let mut seen = BTreeSet::new();
    for file in dashboard_files() {
        let d = read_json(&file);
        let uid = d["uid"].as_str().unwrap().to_string();
        assert!(seen.insert(uid.clone()), "dashboard uid {uid} used twice");
        let bucket_var = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "bucket");
        assert_eq!(
            bucket_var.and_then(|v| v["query"].as_str()),
            Some("maintcast"),
            "{uid}: the bucket variable defaults to docker-compose's bucket"
        );
    }
    // Every rule alerts per machine through the provisioned contact point.
    let rules = alert_rules();
    assert_eq!(rules.len(), 2);
    for r in &rules {
        assert_eq!(r["condition"].as_str(), Some("C"));
        assert!(
            r["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("$$labels.machine_id"),
            "escaped for Grafana"
        );
    }
    // Machine detail links resolve to a real dashboard uid.
    assert!(seen.contains("maintcast-machine"));
    assert_eq!(
        dashboard_queries()
            .iter()
            .filter(|q| q.key.starts_with("maintcast-fleet/"))
            .count(),
        7
    );
}

// ---------------------------------------------------------------------------------------------
// The same queries on what the services themselves write

/// The columns each panel reads from its query (its field overrides, value mappings and links):
/// what must survive a fleet going through the real ingest service rather than hand-written points.
fn columns_used(key: &str) -> &'static [&'static str] {
    match key {
        "maintcast-fleet/Machines by urgency/A" => &[
            "machine_id",
            "days_to_maintenance",
            "due",
            "days_p10",
            "days_p90",
            "model",
            "model_version",
            "site",
            "machine_type",
        ],
        "maintcast-fleet/Maintenance plan/A" => &[
            "day",
            "slot",
            "machine_id",
            "machine_type",
            "site",
            "status",
            "risk",
            "days_to_maintenance",
            "days_p10",
            "days_p90",
            "reason",
        ],
        "maintcast-machine/Model serving this machine/A" => &["model", "window_rows"],
        "maintcast-machine/Forecast history: days to maintenance with p10-p90/A"
        | "maintcast-machine/Telemetry/A" => &["_time", "_field", "_value"],
        "maintcast-machine/annotation/Maintenance events" => &["_time", "text", "tags"],
        "maintcast-training/Validation MAE per epoch/A"
        | "maintcast-training/Training loss per epoch/A" => &["_time", "run_id", "_value"],
        "maintcast-training/Runs: best validation error and training time/A" => {
            &["run_id", "val_mae", "val_rmse", "elapsed_s", "epochs"]
        }
        "alert/maintcast-days-left-low/A"
        | "alert/maintcast-due-date-near/A"
        | "alert/maintcast-days-left-low/D" => &["_time", "_value", "machine_id"],
        "maintcast-fleet/Input quality (worst first)/A" => &[
            "machine_id",
            "quality_score",
            "low_confidence",
            "quality_flags",
            "site",
            "machine_type",
        ],
        "maintcast-quality/Champion and shadow over the time range/A" => &[
            "role",
            "model_version",
            "events",
            "forecasts",
            "mae",
            "bias",
            "coverage",
        ],
        "maintcast-quality/Realized MAE by horizon band/A" => &[
            "role",
            "model_version",
            "band",
            "forecasts",
            "mae",
            "coverage",
        ],
        "maintcast-quality/Realized MAE per model version, running (days)/A"
        | "maintcast-quality/p10-p90 coverage per model version, running/A" => {
            &["_time", "_value", "role", "model_version"]
        }
        _ => &["_value"],
    }
}

async fn wait_for<T>(
    env: &InfluxEnv,
    flux: &str,
    want: usize,
    what: &str,
    service: &tokio::task::JoinHandle<T>,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let n = env.query(flux).await.len();
        if n >= want {
            return;
        }
        assert!(!service.is_finished(), "{what}: the ingest service stopped");
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {n} of {want} rows in InfluxDB after 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The services' output is not hand-picked, so this test checks shape rather than values: every
/// query returns rows, and each row has the columns its panel reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_query_returns_rows_from_a_fleet_through_the_ingest_service() {
    use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
    use maintcast_e2e::kafka_brokers;
    use maintcast_e2e::stream::{make_model, new_fleet, produce, producer, send_fleet};
    use maintcast_proto::{MaintenanceEvent, MaintenanceKind};

    let env = influx();
    let brokers = kafka_brokers();
    let run = unique("grafana-ingest");
    create_topics(&brokers, &run).await;
    let bucket = unique("grafana-ingest");
    create_bucket(&env, &bucket).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 5);

    // One row a minute ending now: dashboards and alerts look back over hours, not days.
    let (machines, rows) = (3, 20);
    let mut fleet = new_fleet(&run, machines);
    fleet.base_ms = Utc::now().timestamp_millis() - rows as i64 * 60_000;
    let producer = producer(&brokers);
    send_fleet(&producer, &format!("{run}-telemetry"), &mut fleet, 0..rows).await;
    let machine = fleet.rows[0].0.clone();
    for (i, kind) in [
        (3, MaintenanceKind::Repair),
        (7, MaintenanceKind::Scheduled),
    ] {
        let e = MaintenanceEvent {
            machine_id: machine.clone(),
            ts_ms: fleet.base_ms + i * 60_000 + 1,
            kind,
            note: format!("{} of {machine}", kind.as_str()),
        };
        produce(
            &producer,
            &format!("{run}-events"),
            &machine,
            &e.to_json(),
            None,
        )
        .await;
    }

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.influx.bucket = bucket.clone();
    config.write_raw = true;
    let influx_config = config.influx.clone();
    let (shutdown, service) = start_service(config);

    // Two runs through the trainer's own writer, epoch by epoch as a sweep records them.
    let sink = maintcast_trainer::training_run::TrainingRunSink::new(&influx_config)
        .expect("training_run writer");
    for (r, epochs) in [(0usize, 6usize), (1, 4)] {
        for e in 1..=epochs {
            let report = maintcast_models::train::EpochReport {
                epoch: e,
                train_loss: 1.0 / e as f64,
                val_loss: 2.0 / e as f64,
                val_mae: 9.0 - e as f64 * (r + 1) as f64 * 0.5,
                val_rmse: 12.0 - e as f64 * 0.5,
                lr: 0.01,
                elapsed_s: e as f64 * 3.0,
                best: true,
            };
            sink.epoch(&model, &format!("{run}-run{r}"), &report);
            // Epochs a millisecond apart would share a timestamp and overwrite one another.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    sink.finish();

    // One row per point: a forecast counted by its days, an event by its note.
    let rows_of = |measurement: &str, field: &str| {
        format!(
            r#"from(bucket: "{bucket}") |> range(start: -1d, stop: 1h)
  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")"#
        )
    };
    // Every machine forecast, not every window: exact counts are ingest_stream's business, and
    // this test only needs each panel to have something to show.
    let days = rows_of("maintenance_forecast", "days_to_maintenance")
        + r#" |> group(columns: ["machine_id"]) |> last()"#;
    wait_for(&env, &days, machines, "machines with a forecast", &service).await;
    let events = rows_of("maintenance_event", "note");
    wait_for(&env, &events, 2, "events", &service).await;
    stop_service(shutdown, service).await;

    // A plan from those forecasts, through the planner's own reader and writer. A horizon of
    // years and an even-odds risk make every machine due, whatever the random model forecast.
    let request = maintcast_planner::influx::Request {
        plan: maintcast_planner::PlanConfig {
            first_slot_ms: Utc::now().timestamp_millis(),
            horizon_days: 3650,
            max_risk: 0.5,
            capacity: maintcast_planner::Capacity::fleet(1),
        },
        forecast_lookback: std::time::Duration::from_secs(86_400),
        history_lookback: std::time::Duration::from_secs(86_400),
        interval_risk: 0.1,
    };
    let client = influx_config.client().unwrap();
    let (plan, _) = maintcast_planner::influx::plan_from_influx(&client, &bucket, &request)
        .await
        .expect("plan from the ingest service's forecasts");
    assert_eq!(plan.choices.len(), machines, "{plan:#?}");
    let written = maintcast_planner::influx::write_plan(
        &influx_config,
        &plan,
        Utc::now().timestamp_millis(),
        &maintcast_common::shutdown::Shutdown::new(),
    )
    .await
    .expect("write the plan");
    assert_eq!(written, machines);

    let vars = Vars {
        bucket: bucket.clone(),
        machine,
        start: Utc::now() - Duration::days(7),
        stop: Utc::now() + Duration::hours(1),
    };
    let results = run_every_query(&env, &vars).await;
    delete_bucket(&env, &bucket).await;
    let mut failures = Vec::new();
    for (key, rows) in &results {
        // The ingest service does not score maintenance events yet (docs/LIVE_EVALUATION.md,
        // "Status"): until it does, the model-quality panels have nothing to show here.
        if rows.is_empty() && key.starts_with("maintcast-quality/") {
            continue;
        }
        if rows.is_empty() {
            failures.push(format!("{key}: no rows"));
            continue;
        }
        let missing: Vec<&str> = columns_used(key)
            .iter()
            .copied()
            .filter(|c| rows.iter().any(|r| !r.contains_key(*c)))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{key}: columns {missing:?} missing from {:#?}",
                rows[0]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries wrong on the ingest service's data:\n\n{}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
    assert!(
        results.len() >= 15,
        "only {} Flux queries found",
        results.len()
    );
}
