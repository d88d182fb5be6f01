//! Live model evaluation through the real Kafka and InfluxDB (docs/LIVE_EVALUATION.md): a
//! champion and a shadow serve one fleet; the shadow's forecasts land in `shadow_forecast` and
//! never raise alerts; each maintenance event is scored into `forecast_accuracy` with exactly the
//! numbers an offline computation over the same stored forecasts gives; the live gate promotes the
//! better shadow and retires the worse; a broken shadow never touches the served forecasts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use maintcast_common::points;
use maintcast_e2e::ingest::{
    create_topics, free_port, metrics_text, service_config, start_service, stop_service,
};
use maintcast_e2e::stream::{
    Fleet, RandomModel, assert_forecasts, fleet_messages, make_model, new_fleet, offline_forecasts,
    produce, produce_to, producer, publish_model, publish_random_model, stored_forecasts,
};
use maintcast_e2e::topic::read_topic;
use maintcast_e2e::{InfluxEnv, influx, kafka_brokers, unique};
use maintcast_models::accuracy::{Band, EventScore, PastForecast, Role, Tally};
use maintcast_models::registry as reg;
use maintcast_proto::{Forecast, MaintenanceEvent, MaintenanceKind};
use maintcast_trainer::live_gate::{self, Verdict};

/// Waits until `model` has at least `n` forecasts in `measurement`.
async fn wait_stored(env: &InfluxEnv, measurement: &str, model: &str, n: usize) -> Vec<Forecast> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = stored_forecasts(env, measurement, model).await;
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `forecast_accuracy` of `model`: (machine, event ms, version, role, band) -> the stored sums.
async fn accuracy_points(
    env: &InfluxEnv,
    model: &str,
) -> BTreeMap<(String, i64, String, String, String), Tally> {
    let flux = format!(
        r#"from(bucket: "{b}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "forecast_accuracy" and r.model == "{model}")
  |> filter(fn: (r) => r._field == "n" or r._field == "error_sum" or r._field == "abs_error_sum" or r._field == "covered")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")"#,
        b = env.bucket
    );
    let num = |row: &HashMap<String, String>, c: &str| -> f64 {
        row.get(c)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{c} missing in {row:?}"))
    };
    env.query(&flux)
        .await
        .iter()
        .map(|row| {
            let t = chrono::DateTime::parse_from_rfc3339(&row["_time"])
                .unwrap()
                .timestamp_millis();
            let key = (
                row["machine_id"].clone(),
                t,
                row["model_version"].clone(),
                row["role"].clone(),
                row["band"].clone(),
            );
            let tally = Tally {
                n: num(row, "n") as u64,
                error_sum: num(row, "error_sum"),
                abs_error_sum: num(row, "abs_error_sum"),
                covered: num(row, "covered") as u64,
            };
            (key, tally)
        })
        .collect()
}

/// What the scorer must have written, computed here from the stored forecasts: per machine and
/// event, every forecast of the life the event ended (after the previous event, up to it).
fn offline_accuracy(
    model: &str,
    served: &[Forecast],
    shadow: &[Forecast],
    events: &BTreeMap<String, Vec<i64>>,
    cap: f64,
) -> BTreeMap<(String, i64, String, String, String), Tally> {
    let mut out = BTreeMap::new();
    for (machine, times) in events {
        let mut since = None;
        for &event in times {
            let mut score = EventScore::new(since, event);
            for (forecasts, role) in [(served, Role::Champion), (shadow, Role::Shadow)] {
                for f in forecasts.iter().filter(|f| &f.machine_id == machine) {
                    score.add(
                        &PastForecast {
                            ts_ms: f.ts_ms,
                            model: model.to_string(),
                            version: f.model_version.clone(),
                            role,
                            days: f.days_to_maintenance,
                            p10: f.days_p10,
                            p90: f.days_p90,
                        },
                        cap,
                    );
                }
            }
            for (k, t) in score.tallies {
                let key = (
                    machine.clone(),
                    event,
                    k.version,
                    k.role.as_str().to_string(),
                    k.band.as_str().to_string(),
                );
                out.insert(key, t);
            }
            since = Some(event);
        }
    }
    out
}

fn pooled_mae(tallies: &BTreeMap<(String, i64, String, String, String), Tally>, role: &str) -> f64 {
    let mut t = Tally::default();
    for (_, x) in tallies.iter().filter(|(k, _)| k.3 == role) {
        t.merge(x);
    }
    t.mae().expect("scored forecasts")
}

const MACHINES: usize = 4;
/// Each machine is maintained after these rows (its event is half a minute after the row).
const EVENT_AFTER: [usize; 2] = [44, 79];
const ROWS: usize = 95;

/// One instance of the stream: `champion_seed` serves, `shadow_seed` shadows.
struct Lane {
    run: String,
    name: String,
    registry: tempfile::TempDir,
    fleet: Fleet,
    events: BTreeMap<String, Vec<i64>>,
}

impl Lane {
    async fn new(brokers: &str, tag: &str, champion_seed: u64, shadow_seed: u64) -> Lane {
        let run = unique(tag);
        create_topics(brokers, &run).await;
        let registry = tempfile::tempdir().unwrap();
        let name = unique(&format!("{tag}-model"));
        make_model(registry.path(), &name, champion_seed);
        let shadow = publish_model(registry.path(), &name, shadow_seed);
        maintcast_trainer::shadow::set(registry.path(), &name, &shadow, "test").unwrap();
        Lane {
            fleet: new_fleet(&run, MACHINES),
            run,
            name,
            registry,
            events: BTreeMap::new(),
        }
    }

    fn config(&self, brokers: &str) -> maintcast_ingest::Config {
        let mut c = service_config(brokers, self.registry.path(), &self.name, &self.run);
        // Every served forecast is "due": alerts flow, and must all be the champion's.
        c.alert.threshold_days = 1e6;
        c.reload_interval = Duration::from_millis(200);
        c
    }

    async fn send_rows(
        &mut self,
        producer: &rdkafka::producer::FutureProducer,
        rows: std::ops::Range<usize>,
    ) {
        let topic = format!("{}-telemetry", self.run);
        for m in fleet_messages(&mut self.fleet, rows) {
            produce_to(producer, &topic, m.partition, &m.key, &m.payload, m.ct).await;
        }
    }

    async fn send_events(
        &mut self,
        producer: &rdkafka::producer::FutureProducer,
        after_row: usize,
    ) {
        let topic = format!("{}-events", self.run);
        for (id, rows) in &self.fleet.rows {
            let ts = rows[after_row].0 + 30_000;
            let ev = MaintenanceEvent {
                machine_id: id.clone(),
                ts_ms: ts,
                kind: MaintenanceKind::Repair,
                note: String::new(),
            };
            produce(producer, &topic, id, &ev.to_json(), None).await;
            self.events.entry(id.clone()).or_default().push(ts);
        }
    }
}

/// Forecasts due for rows up to `last_row` (inclusive), over the fleet: one per row from the
/// `min_rows`-th row since the machine's last event (the test models' `min_rows` is the window).
fn due_until(last_row: usize) -> usize {
    let (mut n, mut since) = (0, 0);
    for i in 0..=last_row {
        since += 1;
        if since >= maintcast_e2e::stream::WINDOW {
            n += 1;
        }
        if EVENT_AFTER.contains(&i) {
            since = 0;
        }
    }
    n * MACHINES
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn champion_and_shadow_are_scored_at_maintenance_and_the_better_shadow_is_promoted() {
    let brokers = kafka_brokers();
    let env = influx();
    let producer = producer(&brokers);
    // The same two models in both lanes, roles swapped: one lane's shadow is the better model.
    let mut lanes = [
        Lane::new(&brokers, "live-a", 1, 2).await,
        Lane::new(&brokers, "live-b", 2, 1).await,
    ];
    let services: Vec<_> = lanes
        .iter()
        .map(|l| start_service(l.config(&brokers)))
        .collect();

    // Rows, then each machine's maintenance once its forecasts are stored (the event must not
    // overtake the rows it ends: it would make them late), twice, then rows after the last event.
    let mut from = 0;
    for after in EVENT_AFTER.iter().copied().chain([ROWS - 1]) {
        for lane in lanes.iter_mut() {
            lane.send_rows(&producer, from..after + 1).await;
        }
        for lane in lanes.iter_mut() {
            let want = due_until(after);
            let got = wait_stored(&env, points::forecast::MEASUREMENT, &lane.name, want).await;
            assert_eq!(
                got.len(),
                want,
                "{}: served forecasts up to row {after}",
                lane.name
            );
            if after < ROWS - 1 {
                lane.send_events(&producer, after).await;
            }
        }
        from = after + 1;
    }

    let mut verdicts = Vec::new();
    for lane in &lanes {
        let name = &lane.name;
        let champion = reg::current_version(lane.registry.path(), name)
            .unwrap()
            .unwrap();
        let shadow_version = reg::shadow_version(lane.registry.path(), name)
            .unwrap()
            .unwrap();
        let served = stored_forecasts(&env, points::forecast::MEASUREMENT, name).await;
        let shadow = wait_stored(
            &env,
            points::forecast::SHADOW_MEASUREMENT,
            name,
            served.len(),
        )
        .await;

        // The shadow forecast every window the champion did, and only under its own version.
        let keys = |fs: &[Forecast]| {
            let mut k: Vec<(String, i64)> =
                fs.iter().map(|f| (f.machine_id.clone(), f.ts_ms)).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&served), keys(&shadow), "{name}: the same windows");
        assert!(served.iter().all(|f| f.model_version == champion));
        assert!(shadow.iter().all(|f| f.model_version == shadow_version));
        assert!(
            served
                .iter()
                .zip(&shadow)
                .any(|(a, b)| (a.days_to_maintenance - b.days_to_maintenance).abs() > 1e-3),
            "{name}: the shadow is another model"
        );

        // Scored at every event, exactly as offline over the same stored forecasts.
        let want = offline_accuracy(name, &served, &shadow, &lane.events, 100.0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut got = accuracy_points(&env, name).await;
        while got.len() < want.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            got = accuracy_points(&env, name).await;
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: one point per machine, event, version, role and band"
        );
        // Champion and shadow, one band each (the events come within minutes).
        assert_eq!(want.len(), 2 * MACHINES * EVENT_AFTER.len());
        for (k, w) in &want {
            let g = &got[k];
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
            assert!(
                g.n == w.n
                    && g.covered == w.covered
                    && close(g.error_sum, w.error_sum)
                    && close(g.abs_error_sum, w.abs_error_sum),
                "{name} {k:?}: stored {g:?}, offline {w:?}"
            );
            assert_eq!(
                k.4,
                Band::of(0.0).as_str(),
                "the events come within minutes"
            );
        }

        // Alerts come from served forecasts only.
        let alerts = read_topic(&brokers, &format!("{}-alerts", lane.run), usize::MAX, 8);
        assert!(alerts.len() >= MACHINES, "{name}: a due alert per machine");
        for (payload, _) in &alerts {
            let a: maintcast_proto::Alert = serde_json::from_slice(payload).unwrap();
            assert_eq!(a.model_version, champion, "{name}: {a:?}");
        }

        // The live gate on that evidence: promote exactly when the shadow's realized MAE is lower.
        let (champion_mae, shadow_mae) =
            (pooled_mae(&want, "champion"), pooled_mae(&want, "shadow"));
        let d = live_gate::review(
            &env.client(),
            &env.bucket,
            lane.registry.path(),
            name,
            MACHINES * EVENT_AFTER.len(),
            0.0,
            "test-round",
        )
        .await
        .unwrap()
        .expect("a shadow to review");
        assert!((d.evidence.champion_mae().unwrap() - champion_mae).abs() < 1e-9);
        assert!((d.evidence.shadow_mae().unwrap() - shadow_mae).abs() < 1e-9);
        let now_serving = reg::current_version(lane.registry.path(), name)
            .unwrap()
            .unwrap();
        if shadow_mae < champion_mae {
            assert_eq!(d.verdict, Verdict::Promote, "{}", d.reason);
            assert_eq!(now_serving, shadow_version);
        } else {
            assert_eq!(d.verdict, Verdict::Retire, "{}", d.reason);
            assert_eq!(now_serving, champion);
        }
        assert_eq!(
            reg::shadow_version(lane.registry.path(), name).unwrap(),
            None
        );
        verdicts.push(d.verdict);
    }
    verdicts.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(
        verdicts,
        [Verdict::Promote, Verdict::Retire],
        "the better model wins in both lanes"
    );
    for (shutdown, service) in services {
        stop_service(shutdown, service).await;
    }
}

fn refused(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("maintcast_ingest_shadow_loads_total{result=\"refused\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_refused(addr: SocketAddr, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(addr).await;
        if refused(&text) >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shadow was never refused:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn corrupt(dir: &Path) {
    let weights = dir.join(maintcast_models::artifact::WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_shadow_never_touches_the_served_forecasts() {
    let brokers = kafka_brokers();
    let env = influx();
    let run = unique("live-broken");
    create_topics(&brokers, &run).await;
    let dir = tempfile::tempdir().unwrap();
    let name = unique("live-broken-model");
    make_model(dir.path(), &name, 1);
    // SHADOW written by hand, past `maintcast models shadow`'s checks, as an operator could: a
    // model over other sensors, later one whose weights are torn.
    let misfit = publish_random_model(
        dir.path(),
        &name,
        RandomModel {
            features: vec!["temp".into(), "vibration".into()],
            window: maintcast_e2e::stream::WINDOW,
            min_rows: maintcast_e2e::stream::WINDOW,
            hidden: vec![4],
            offset: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            seed: 5,
            pooling: Default::default(),
            member_windows: Vec::new(),
        },
    )
    .unwrap();
    let torn = publish_model(dir.path(), &name, 6);
    corrupt(&dir.path().join(&name).join(&torn));
    reg::set_shadow(dir.path(), &name, &misfit).unwrap();

    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = service_config(&brokers, dir.path(), &name, &run);
    config.http_addr = addr;
    config.reload_interval = Duration::from_millis(200);
    let (shutdown, service) = start_service(config);
    let producer = producer(&brokers);
    let mut fleet = new_fleet(&run, 3);
    let topic = format!("{run}-telemetry");
    for m in fleet_messages(&mut fleet, 0..30) {
        produce_to(&producer, &topic, m.partition, &m.key, &m.payload, m.ct).await;
    }
    wait_refused(addr, 1.0).await;
    reg::set_shadow(dir.path(), &name, &torn).unwrap();
    // SHADOW is looked at between batches: rows keep coming until the torn one is refused too.
    let mut row = 30;
    while refused(&metrics_text(addr).await) < 2.0 {
        assert!(row < 200, "the torn shadow was never refused");
        for m in fleet_messages(&mut fleet, row..row + 1) {
            produce_to(&producer, &topic, m.partition, &m.key, &m.payload, m.ct).await;
        }
        row += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = offline_forecasts(dir.path(), &name, &fleet);
    assert_forecasts(&name, &expected, &[&service]).await;
    assert!(
        stored_forecasts(&env, points::forecast::SHADOW_MEASUREMENT, &name)
            .await
            .is_empty(),
        "no shadow forecast from a refused shadow"
    );
    let text = metrics_text(addr).await;
    assert!(
        !text.contains("maintcast_ingest_shadow_loads_total{result=\"ok\"}"),
        "{text}"
    );
    stop_service(shutdown, service).await;
}
