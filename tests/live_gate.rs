//! The shadow pointer and the trainer's live gate (docs/LIVE_EVALUATION.md): `maintcast models
//! shadow` names and clears a challenger, refusing one that cannot run on the serving windows; the
//! live gate reads `forecast_accuracy` from the real InfluxDB and promotes a shadow that beat the
//! served forecasts on the same events by the margin, retires one that did not, and waits for
//! enough events; the promotion log says which evidence decided.

use std::path::Path;
use std::process::Output;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::DataPoint;
use maintcast_e2e::stream::{
    RandomModel, make_model, publish_model, publish_model_ordered, publish_random_model,
};
use maintcast_e2e::{InfluxEnv, fleet, influx, unique};
use maintcast_models::registry as reg;
use maintcast_models::registry::{self, Action};
use maintcast_trainer::live_gate::{self, Verdict};

fn maintcast(args: &[&str]) -> Output {
    std::process::Command::new(fleet::maintcast_bin())
        .args(args)
        .env_remove("MAINTCAST_INFLUX_URL")
        .output()
        .unwrap()
}

fn shadow_cli(r: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "models",
        "--registry",
        r.to_str().unwrap(),
        "--name",
        "m",
        "shadow",
    ];
    args.extend_from_slice(extra);
    maintcast(&args)
}

#[test]
fn shadow_is_named_and_cleared_by_hand_and_a_misfit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    make_model(r, "m", 1); // v0001 serves
    publish_model_ordered(r, "m", 2, &["pressure", "temp", "vibration"]); // v0002: same features
    publish_random_model(
        r,
        "m",
        RandomModel {
            features: vec!["temp".into(), "vibration".into()],
            window: 10,
            min_rows: 10,
            hidden: vec![4],
            offset: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            seed: 3,
            pooling: Default::default(),
            member_windows: Vec::new(),
        },
    )
    .unwrap(); // v0003: a feature fewer

    let o = shadow_cli(r, &["v0002"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("v0002 now shadows"));
    assert_eq!(
        reg::shadow_version(r, "m").unwrap().as_deref(),
        Some("v0002")
    );

    // A version the serving windows cannot feed, the serving version itself, and an unknown one
    // are refused, and SHADOW stays.
    for bad in ["v0003", "v0001", "v0009"] {
        let o = shadow_cli(r, &[bad]);
        assert!(!o.status.success(), "{bad} accepted");
        assert_eq!(
            reg::shadow_version(r, "m").unwrap().as_deref(),
            Some("v0002")
        );
    }
    let err = String::from_utf8_lossy(&shadow_cli(r, &["v0003"]).stderr).into_owned();
    assert!(err.contains("features"), "{err}");
    // Neither or both of VERSION and --clear is a usage error.
    assert!(!shadow_cli(r, &[]).status.success());
    assert!(!shadow_cli(r, &["v0002", "--clear"]).status.success());

    let o = shadow_cli(r, &["--clear"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("v0002 no longer shadows"));
    assert_eq!(reg::shadow_version(r, "m").unwrap(), None);
    assert!(shadow_cli(r, &["--clear"]).status.success());

    // The log tells the story; shadowing never moved CURRENT, and a rollback ignores it.
    let log = registry::read_log(r, "m").unwrap();
    let actions: Vec<(Action, &str)> = log
        .iter()
        .map(|e| (e.action.clone(), e.version.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Promote, "v0001"),
            (Action::Shadow, "v0002"),
            (Action::Retire, "v0002")
        ]
    );
    assert_eq!(log[1].from.as_deref(), Some("v0001"));
    assert_eq!(
        reg::current_version(r, "m").unwrap().as_deref(),
        Some("v0001")
    );
    assert_eq!(registry::serving_stack(r, "m").unwrap(), ["v0001"]);
}

/// Accuracy points of one event for `model`: the served v0001 and the shadow v0002, one band
/// each, with the given mean absolute errors over `n` forecasts.
fn event_points(
    model: &str,
    machine: &str,
    t_ms: i64,
    champion_mae: f64,
    shadow_mae: f64,
) -> Vec<DataPoint> {
    let n = 20i64;
    [
        ("champion", "v0001", champion_mae),
        ("shadow", "v0002", shadow_mae),
    ]
    .into_iter()
    .map(|(role, version, mae)| {
        DataPoint::builder("forecast_accuracy")
            .tag("machine_id", machine)
            .tag("model", model)
            .tag("model_version", version)
            .tag("role", role)
            .tag("band", "0-7d")
            .tag("kind", "repair")
            .field("n", n)
            .field("error_sum", -mae * n as f64)
            .field("abs_error_sum", mae * n as f64)
            .field("covered", 15i64)
            .field("mae", mae)
            .field("bias", -mae)
            .field("coverage", 0.75)
            .timestamp(t_ms)
            .build()
            .unwrap()
    })
    .collect()
}

async fn write(env: &InfluxEnv, points: Vec<DataPoint>) {
    env.client()
        .write_with_precision(
            &env.bucket,
            futures::stream::iter(points),
            TimestampPrecision::Milliseconds,
        )
        .await
        .expect("write forecast_accuracy");
}

/// A registry where v0001 serves and v0002 shadows.
fn shadowing_registry(r: &Path, name: &str) {
    make_model(r, name, 1);
    publish_model(r, name, 2);
    maintcast_trainer::shadow::set(r, name, "v0002", "test").unwrap();
}

async fn review(env: &InfluxEnv, r: &Path, name: &str) -> live_gate::LiveDecision {
    let client = env.client();
    live_gate::review(&client, &env.bucket, r, name, 3, 0.1, "test-round")
        .await
        .unwrap()
        .expect("a shadow to review")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_better_shadow_is_promoted_after_enough_events_and_a_worse_one_retired() {
    let env = influx();
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;

    // Better by far more than the 10% margin, but only two events so far: keep shadowing.
    let better = unique("live-better");
    let rb = tempfile::tempdir().unwrap();
    shadowing_registry(rb.path(), &better);
    let mut points = event_points(&better, "a", t0, 4.0, 2.0);
    points.extend(event_points(&better, "b", t0 + 1000, 6.0, 3.0));
    // An event the shadow was not scored on (only the champion's point) is not evidence.
    points.push(event_points(&better, "c", t0 + 2000, 1.0, 0.0).remove(0));
    write(&env, points).await;
    let d = review(&env, rb.path(), &better).await;
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert_eq!(d.evidence.events, 2);
    assert!(d.reason.contains("2 of 3 events"), "{}", d.reason);
    assert_eq!(
        reg::shadow_version(rb.path(), &better).unwrap().as_deref(),
        Some("v0002")
    );

    // A third event: (4 + 6 + 5) / 3 = 5 against (2 + 3 + 4) / 3 = 3 over 60 forecasts each.
    write(&env, event_points(&better, "a", t0 + 3000, 5.0, 4.0)).await;
    let d = review(&env, rb.path(), &better).await;
    assert_eq!(d.verdict, Verdict::Promote, "{}", d.reason);
    assert_eq!(d.evidence.events, 3);
    assert!((d.evidence.champion_mae().unwrap() - 5.0).abs() < 1e-9);
    assert!((d.evidence.shadow_mae().unwrap() - 3.0).abs() < 1e-9);
    assert_eq!(
        reg::current_version(rb.path(), &better).unwrap().as_deref(),
        Some("v0002")
    );
    assert_eq!(reg::shadow_version(rb.path(), &better).unwrap(), None);
    let last = registry::read_log(rb.path(), &better)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.action, last.version.as_str()),
        (Action::Promote, "v0002")
    );
    assert!(
        last.reason.contains("live evidence") && last.reason.contains("same 3 maintenance events"),
        "{}",
        last.reason
    );
    // Nothing shadows any more: the next round trains.
    assert!(
        live_gate::review(
            &env.client(),
            &env.bucket,
            rb.path(),
            &better,
            3,
            0.1,
            "next"
        )
        .await
        .unwrap()
        .is_none()
    );

    // Better, but not by the margin: retired after three events, CURRENT unchanged.
    let worse = unique("live-worse");
    let rw = tempfile::tempdir().unwrap();
    shadowing_registry(rw.path(), &worse);
    let mut points = Vec::new();
    for (i, m) in ["a", "b", "c"].iter().enumerate() {
        points.extend(event_points(&worse, m, t0 + i as i64, 4.0, 3.8));
    }
    write(&env, points).await;
    let d = review(&env, rw.path(), &worse).await;
    assert_eq!(d.verdict, Verdict::Retire, "{}", d.reason);
    assert_eq!(
        reg::current_version(rw.path(), &worse).unwrap().as_deref(),
        Some("v0001")
    );
    assert_eq!(reg::shadow_version(rw.path(), &worse).unwrap(), None);
    let last = registry::read_log(rw.path(), &worse)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.action, last.version.as_str()),
        (Action::Retire, "v0002")
    );
    assert!(
        last.reason.contains("live evidence") && last.reason.contains("retired"),
        "{}",
        last.reason
    );
}
