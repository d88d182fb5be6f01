//! The ingest service under the faults a deployment sees, against the real Kafka and InfluxDB:
//! a model promoted mid-stream, InfluxDB down for half a minute, an instance of a consumer group
//! stopping. In each, every expected forecast ends up in InfluxDB with the offline value.
//!
//! The InfluxDB outage is a private InfluxDB's (`maintcast_e2e::infra`), so it runs beside
//! anything. The others share the servers and run one at a time among themselves: the handover
//! test times a handover, which services competing for the same cores would slow.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use maintcast_e2e::infra::{Private, Servers};
use maintcast_e2e::ingest::{
    create_topics, service_config, service_config_in, start_service, stop_service,
};
use maintcast_e2e::stream::{
    WINDOW, assert_forecasts, assert_forecasts_in, check_committed, committed_rows, make_model,
    new_fleet, offline_forecasts, offline_forecasts_by, producer, publish_model_ordered,
    send_fleet, wait_committed,
};
use maintcast_e2e::{kafka_brokers, unique};
use maintcast_models::registry;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Version A serves the first rows; B, listing the same sensors in another order (as a model
/// retrained from InfluxDB history lists them by name), is published and promoted; the rest of
/// the stream is forecast by B. Every window is forecast exactly once (the count would show a
/// window written under both versions) and with the value of the version that claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_promoted_mid_stream_serves_the_rest_with_no_forecast_lost() {
    let _serial = SERIAL.lock().await;
    let brokers = kafka_brokers();
    let run = unique("faults-promote");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    let a = make_model(reg.path(), &model, 21);
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let machines = 4;
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &topic, &mut fleet, 0..20).await;

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.reload_interval = Duration::from_millis(200);
    let (shutdown, service) = start_service(config);
    let mut expected = offline_forecasts_by(reg.path(), &model, &a, &fleet, 0..20);
    assert_eq!(expected.len(), machines * (20 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&service]).await;

    let b = publish_model_ordered(reg.path(), &model, 22, &["pressure", "temp", "vibration"]);
    assert_ne!(a, b);
    registry::promote(reg.path(), &model, &b, "test").unwrap();
    // Past the reload interval, so the next batch is the first B serves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_fleet(&producer, &topic, &mut fleet, 20..30).await;
    let by_b = offline_forecasts_by(reg.path(), &model, &b, &fleet, 20..30);
    let by_a = offline_forecasts_by(reg.path(), &model, &a, &fleet, 20..30);
    // Otherwise a forecast by A would pass for one by B.
    assert!(
        by_b.iter()
            .all(|(k, e)| (e.days - by_a[k].days).abs() > 1e-3),
        "versions A and B must forecast differently for the check to mean anything"
    );
    expected.extend(by_b);
    assert_eq!(expected.len(), machines * (30 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&service]).await;
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &format!("{run}-group"));
}

/// InfluxDB is down for 30 s while rows keep coming: the writes are retried until it is back,
/// and then every forecast is there, none differing from the offline computation. The InfluxDB
/// is the test's own, so the tests beside it never see the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn influxdb_down_for_30_s_loses_no_forecast() {
    let private = Private::start(Servers::InfluxDb).await;
    let env = private.influx();
    let brokers = kafka_brokers();
    let run = unique("faults-influx");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 31);
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let machines = 4;
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &topic, &mut fleet, 0..15).await;
    let config = service_config_in(&brokers, env.clone(), reg.path(), &model, &run);
    let (shutdown, service) = start_service(config);
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts_in(&env, &model, &expected, &[&service]).await;

    private.stop_influxdb().await;
    let down = Instant::now();
    send_fleet(&producer, &topic, &mut fleet, 15..30).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    assert!(
        !service.is_finished(),
        "the service must ride out the outage"
    );
    private.start_influxdb().await;
    eprintln!(
        "InfluxDB was down for {:.1} s",
        down.elapsed().as_secs_f64()
    );

    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (30 - WINDOW + 1));
    assert_forecasts_in(&env, &model, &expected, &[&service]).await;
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &format!("{run}-group"));
}

/// The telemetry partitions each member of `group` holds, from the group's description (the
/// classic consumer protocol's assignment: version, [topic, [partition]], user data).
fn telemetry_assignments(brokers: &str, group: &str, topic: &str) -> Vec<Vec<i32>> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let groups = probe
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("describing the consumer group");
    let Some(g) = groups.groups().iter().find(|g| g.name() == group) else {
        return Vec::new();
    };
    if g.state() != "Stable" {
        return Vec::new();
    }
    g.members()
        .iter()
        .map(|m| parse_assignment(m.assignment().unwrap_or(&[]), topic))
        .collect()
}

fn parse_assignment(bytes: &[u8], topic: &str) -> Vec<i32> {
    let mut rest = bytes.get(2..).unwrap_or(&[]);
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n.min(rest.len()));
        assert_eq!(head.len(), n, "truncated assignment {bytes:?}");
        rest = tail;
        head
    };
    let int = |b: &[u8]| i32::from_be_bytes(b.try_into().unwrap());
    let mut partitions = Vec::new();
    if bytes.len() < 6 {
        return partitions;
    }
    for _ in 0..int(take(4)) {
        let len = i16::from_be_bytes(take(2).try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(take(len)).into_owned();
        for _ in 0..int(take(4)) {
            let p = int(take(4));
            if name == topic {
                partitions.push(p);
            }
        }
    }
    partitions.sort_unstable();
    partitions
}

/// A run for the consumer-group tests: its topics, a model, six machines pinned over the three
/// telemetry partitions.
struct GroupRun {
    brokers: String,
    run: String,
    reg: tempfile::TempDir,
    model: String,
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    group: String,
    machines: usize,
    fleet: maintcast_e2e::stream::Fleet,
}

impl GroupRun {
    async fn new(prefix: &str, seed: u64) -> Self {
        let brokers = kafka_brokers();
        let run = unique(prefix);
        create_topics(&brokers, &run).await;
        let reg = tempfile::tempdir().unwrap();
        let model = run.replace('-', "_");
        make_model(reg.path(), &model, seed);
        let machines = 6;
        let mut fleet = new_fleet(&run, machines);
        fleet.partitions = Some(3);
        GroupRun {
            producer: producer(&brokers),
            topic: format!("{run}-telemetry"),
            group: format!("{run}-group"),
            brokers,
            run,
            reg,
            model,
            machines,
            fleet,
        }
    }
}

/// Waits up to 60 s for both members of `group` to hold telemetry partitions; returns the split.
async fn two_way_split(brokers: &str, group: &str, topic: &str) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let split = telemetry_assignments(brokers, group, topic);
        if split.len() == 2 && split.iter().all(|p| !p.is_empty()) {
            return split;
        }
        assert!(Instant::now() < deadline, "no two-way split: {split:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two instances in one group split the partitions; the one stopped (gracefully) hands its
/// machines to the other with their windows: five new rows per machine, fewer than a window,
/// are each forecast, which only a restored window allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_instance_hands_its_machines_and_windows_to_the_other() {
    let _serial = SERIAL.lock().await;
    let GroupRun {
        brokers,
        run,
        reg,
        model,
        producer,
        topic,
        group,
        machines,
        mut fleet,
    } = GroupRun::new("faults-group", 41).await;

    let start = || start_service(service_config(&brokers, reg.path(), &model, &run));
    let (stop_a, a) = start();
    let (stop_b, b) = start();
    let split = two_way_split(&brokers, &group, &topic).await;
    assert_eq!(
        split.concat().len(),
        3,
        "every partition assigned once: {split:?}"
    );

    send_fleet(&producer, &topic, &mut fleet, 0..20).await;
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &expected, &[&a, &b]).await;
    // Both instances commit what they own, so the handover restarts from the end.
    wait_committed(&brokers, &topic, &group, Duration::from_secs(10)).await;

    stop_service(stop_a, a).await;
    let stopped = Instant::now();
    send_fleet(&producer, &topic, &mut fleet, 20..25).await;
    let expected: HashMap<_, _> = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (25 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&b]).await;
    let handover = stopped.elapsed();
    eprintln!(
        "forecasts of the handed-over machines {:.1} s after the first instance stopped",
        handover.as_secs_f64()
    );
    // Well under the 45 s session timeout: the stopped instance left the group rather than
    // being timed out of it.
    assert!(
        handover < Duration::from_secs(20),
        "handover took {handover:?}"
    );
    let after = telemetry_assignments(&brokers, &group, &topic);
    assert_eq!(
        after,
        vec![vec![0, 1, 2]],
        "the survivor holds every partition"
    );
    stop_service(stop_b, b).await;
    check_committed(&brokers, &topic, &group);
}

/// Commit on revoke: with barrier commits an hour apart, nothing is committed while one instance
/// runs alone; a second instance joining takes partitions from it, and the first commits what it
/// consumed (after checkpointing the windows) before they move. The new owner then starts where
/// the first stopped, with its windows: five new rows per machine are each forecast.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_partitions_are_committed_with_their_windows_before_they_move() {
    let _serial = SERIAL.lock().await;
    let GroupRun {
        brokers,
        run,
        reg,
        model,
        producer,
        topic,
        group,
        machines,
        mut fleet,
    } = GroupRun::new("faults-revoke", 43).await;
    let start = || {
        let mut config = service_config(&brokers, reg.path(), &model, &run);
        config.commit_interval = Duration::from_secs(3600);
        start_service(config)
    };

    let (stop_a, a) = start();
    send_fleet(&producer, &topic, &mut fleet, 0..20).await;
    assert_forecasts(
        &model,
        &offline_forecasts(reg.path(), &model, &fleet),
        &[&a],
    )
    .await;
    assert_eq!(
        committed_rows(&brokers, &topic, &group),
        0,
        "no barrier has committed yet"
    );

    let (stop_b, b) = start();
    two_way_split(&brokers, &group, &topic).await;
    // Only the revoke can have committed these.
    wait_committed(&brokers, &topic, &group, Duration::from_secs(10)).await;

    send_fleet(&producer, &topic, &mut fleet, 20..25).await;
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), machines * (25 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&a, &b]).await;
    stop_service(stop_a, a).await;
    stop_service(stop_b, b).await;
    check_committed(&brokers, &topic, &group);
}
