//! What the ingest service promises at its seams, each against the real Kafka and InfluxDB: nothing
//! is acknowledged that was not delivered, and no single message, outage of credentials or
//! misconfiguration stops the stream or passes for healthy.

use std::net::SocketAddr;
use std::time::Duration;

use maintcast_e2e::ingest::{create_topics, service_config, start_service, stop_service};
use maintcast_e2e::stream::{
    FEATURES, RandomModel, WINDOW, assert_forecasts, check_committed, committed_offsets,
    committed_rows, make_model, new_fleet, offline_forecasts, offline_forecasts_by, produce,
    produce_to, producer, publish_random_model, send_fleet,
};
use maintcast_e2e::topic::read_topic;
use maintcast_e2e::{InfluxEnv, create_topic, influx, kafka_brokers, unique};
use maintcast_models::registry;
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The sum of a metric's samples whose line starts with `prefix` (name and some labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to `secs` for `cond` on the service's /metrics text; on timeout the panic shows the
/// metrics, so a failure says what the service was doing.
async fn wait_metrics(addr: SocketAddr, secs: u64, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, text) = get(addr, "/metrics").await;
        if cond(&text) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let shown: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("maintcast_ingest") && !l.contains("_bucket"))
                .collect();
            panic!(
                "timed out waiting for {what}; service metrics:\n{}",
                shown.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Records of `topic` with their headers, read from the start until `n` arrived or `secs` passed.
/// Hole 1: a row whose sensors are all null passes decoding but cannot be a history point. It
/// must reach the DLQ with the reason while the stream goes on (it used to end `run`, and the
/// restart read it again: a crash loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_with_no_finite_value_goes_to_the_dlq_and_the_stream_goes_on() {
    let brokers = kafka_brokers();
    let run = unique("poison");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 3);
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let mut fleet = new_fleet(&run, 2);
    send_fleet(&producer, &topic, &mut fleet, 0..8).await;
    let now = chrono::Utc::now().timestamp_millis();
    let poison = format!(
        r#"{{"machine_id":"{run}-empty","ts":{now},"sensors":{{"temp":null,"vibration":null,"pressure":null}}}}"#
    );
    produce(
        &producer,
        &topic,
        &format!("{run}-empty"),
        poison.as_bytes(),
        None,
    )
    .await;
    send_fleet(&producer, &topic, &mut fleet, 8..14).await;

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.write_raw = true;
    let (shutdown, service) = start_service(config);
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(expected.len(), 2 * (14 - WINDOW + 1));
    assert_forecasts(&model, &expected, &[&service]).await;
    let dead = read_topic(&brokers, &format!("{run}-dlq"), 1, 30);
    assert_eq!(dead.len(), 1, "the all-null row in the DLQ");
    assert_eq!(dead[0].0, poison.as_bytes());
    assert!(
        dead[0].1["error"].contains("no field to write"),
        "reason: {:?}",
        dead[0].1["error"]
    );
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &format!("{run}-group"));
}

/// InfluxDB's admin API, for minting and revoking tokens.
struct InfluxAdmin {
    env: InfluxEnv,
    http: reqwest::Client,
}

impl InfluxAdmin {
    fn new() -> Self {
        InfluxAdmin {
            env: influx(),
            http: reqwest::Client::new(),
        }
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut req = self
            .http
            .request(
                method,
                format!("{}{path}", self.env.url.trim_end_matches('/')),
            )
            .header("Authorization", format!("Token {}", self.env.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("InfluxDB API");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "InfluxDB {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// A token that may write and read the test bucket; returns (authorization id, token).
    async fn mint(&self) -> (String, String) {
        let org = self
            .api(
                reqwest::Method::GET,
                &format!("/api/v2/orgs?org={}", self.env.org),
                None,
            )
            .await;
        let org_id = org["orgs"][0]["id"].as_str().unwrap().to_string();
        let bucket = self
            .api(
                reqwest::Method::GET,
                &format!("/api/v2/buckets?name={}", self.env.bucket),
                None,
            )
            .await;
        let bucket_id = bucket["buckets"][0]["id"].as_str().unwrap().to_string();
        let resource = serde_json::json!({"type": "buckets", "id": bucket_id, "orgID": org_id});
        let auth = self
            .api(
                reqwest::Method::POST,
                "/api/v2/authorizations",
                Some(serde_json::json!({
                    "orgID": org_id,
                    "description": "maintcast test token",
                    "permissions": [
                        {"action": "write", "resource": resource},
                        {"action": "read", "resource": resource}
                    ]
                })),
            )
            .await;
        (
            auth["id"].as_str().unwrap().to_string(),
            auth["token"].as_str().unwrap().to_string(),
        )
    }

    async fn revoke(&self, id: &str) {
        self.api(
            reqwest::Method::DELETE,
            &format!("/api/v2/authorizations/{id}"),
            None,
        )
        .await;
    }
}

/// Hole 2 and 7, and the token rotation: a token revoked mid-stream pauses consumption (nothing
/// counted as written, nothing committed, `/readyz` false, the failure in a metric); writing a new
/// token to the token file resumes the stream without a restart, and no forecast is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_pauses_the_stream_until_a_new_one_is_in_its_file() {
    let brokers = kafka_brokers();
    let run = unique("token");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 5);
    let admin = InfluxAdmin::new();
    let (first_id, first) = admin.mint().await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("influx-token");
    std::fs::write(&token_file, &first).unwrap();

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.influx.token = maintcast_common::config::Secret::new(first);
    config.influx.token_file = Some(token_file.clone());
    let addr = free_addr();
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let group = format!("{run}-group");
    let machines = 3;
    let mut fleet = new_fleet(&run, machines);
    send_fleet(&producer, &topic, &mut fleet, 0..12).await;
    let version = registry::current_version(reg.path(), &model)
        .unwrap()
        .unwrap();
    let before = offline_forecasts_by(reg.path(), &model, &version, &fleet, 0..12);
    assert_forecasts(&model, &before, &[&service]).await;
    wait_metrics(addr, 30, "readiness", |m| {
        metric(m, "maintcast_ingest_ready") == 1.0
    })
    .await;
    // Everything so far is delivered, so the barrier commits it all; that is the mark the commit
    // may not pass while InfluxDB refuses the token.
    maintcast_e2e::stream::wait_committed(&brokers, &topic, &group, Duration::from_secs(30)).await;
    let committed_before = committed_rows(&brokers, &topic, &group);

    admin.revoke(&first_id).await;
    send_fleet(&producer, &topic, &mut fleet, 12..20).await;
    wait_metrics(addr, 60, "an unauthorized write", |m| {
        metric(
            m,
            "maintcast_ingest_influx_write_errors_total{kind=\"unauthorized\"",
        ) >= 1.0
    })
    .await;
    wait_metrics(addr, 30, "readiness to drop", |m| {
        metric(m, "maintcast_ingest_ready") == 0.0
    })
    .await;
    let (status, _) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "/readyz while InfluxDB refuses the token");
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(
        metric(&text, "maintcast_ingest_forecasts_written_total"),
        before.len() as f64,
        "forecasts refused by InfluxDB were counted as written"
    );
    let committed = committed_rows(&brokers, &topic, &group);
    assert_eq!(
        committed, committed_before,
        "rows committed while their forecasts were refused"
    );

    let (second_id, second) = admin.mint().await;
    std::fs::write(&token_file, &second).unwrap();
    let all = offline_forecasts(reg.path(), &model, &fleet);
    assert_eq!(all.len(), machines * (20 - WINDOW + 1));
    assert_forecasts(&model, &all, &[&service]).await;
    wait_metrics(addr, 30, "readiness to return", |m| {
        metric(m, "maintcast_ingest_ready") == 1.0
    })
    .await;
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &group);
    admin.revoke(&second_id).await;
}

/// Hole 2, a point InfluxDB refuses: a raw row whose field has another type than InfluxDB already
/// holds is refused with a 4xx. That row goes to the DLQ with InfluxDB's reason; the rest of its
/// batch is written (it used to be dropped whole, counted as written, and committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_point_influxdb_refuses_goes_to_the_dlq_and_the_rest_is_written() {
    let brokers = kafka_brokers();
    let run = unique("refused");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 9);
    let env = influx();
    let mut fleet = new_fleet(&run, 2);
    let field = format!("conflict_{}", model);
    // The field exists as a string in this shard, so a float for it is refused.
    let seed = influxdb2::models::DataPoint::builder("telemetry")
        .tag("machine_id", format!("{run}-seed"))
        .field(field.clone(), "text")
        .timestamp(fleet.base_ms)
        .build()
        .unwrap();
    env.client()
        .write_with_precision(
            &env.bucket,
            futures::stream::iter([seed]),
            influxdb2::api::write::TimestampPrecision::Milliseconds,
        )
        .await
        .unwrap();
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    send_fleet(&producer, &topic, &mut fleet, 0..6).await;
    let bad_id = format!("{run}-typed");
    let bad = format!(
        r#"{{"machine_id":"{bad_id}","ts":{},"sensors":{{"temp":50.0,"{field}":1.5}}}}"#,
        fleet.base_ms + 1
    );
    produce(&producer, &topic, &bad_id, bad.as_bytes(), None).await;
    send_fleet(&producer, &topic, &mut fleet, 6..12).await;

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.write_raw = true;
    let (shutdown, service) = start_service(config);
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &expected, &[&service]).await;
    let dead = read_topic(&brokers, &format!("{run}-dlq"), 1, 60);
    assert_eq!(dead.len(), 1, "the refused point in the DLQ");
    let (payload, headers) = &dead[0];
    let line = String::from_utf8_lossy(payload);
    assert!(
        line.contains(&bad_id) && line.contains(&field),
        "DLQ payload {line}"
    );
    assert!(
        headers["error"].contains("type"),
        "reason: {}",
        headers["error"]
    );
    assert_eq!(headers["source-topic"], topic);
    headers["source-offset"].parse::<i64>().unwrap();
    // Every other raw row is in the history.
    let flux = format!(
        r#"from(bucket: "{}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "telemetry" and r._field == "temp" and r.machine_id =~ /^{run}-m/)
  |> group() |> count()"#,
        env.bucket
    );
    let rows = env.query(&flux).await;
    assert_eq!(rows[0]["_value"], "24", "raw rows of the fleet in InfluxDB");
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &format!("{run}-group"));
}

/// Hole 3: a dead letter the broker refuses (here: larger than the DLQ topic allows) is retried,
/// and the commit waits for it; once the topic accepts it, it is delivered and the commit moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undelivered_dead_letter_holds_the_commit_until_it_is_delivered() {
    let brokers = kafka_brokers();
    let run = unique("undelivered");
    for (suffix, partitions) in [("telemetry", 3), ("events", 3), ("alerts", 1)] {
        create_topic(&brokers, &format!("{run}-{suffix}"), partitions).await;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let dlq = format!("{run}-dlq");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin
        .create_topics(
            [
                &NewTopic::new(&dlq, 1, TopicReplication::Fixed(1))
                    .set("max.message.bytes", "2000"),
            ],
            &opts,
        )
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 4);
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let mut fleet = new_fleet(&run, 2);
    fleet.partitions = Some(3); // machine 0 on partition 0
    send_fleet(&producer, &topic, &mut fleet, 0..10).await;
    let bad = format!("{{\"machine_id\": \"broken{}", "x".repeat(5000));
    produce_to(
        &producer,
        &topic,
        Some(0),
        "bad",
        bad.as_bytes(),
        Some("application/json"),
    )
    .await;
    let bad_offset = 10; // after machine 0's ten rows
    send_fleet(&producer, &topic, &mut fleet, 10..14).await;

    let mut config = service_config(&brokers, reg.path(), &model, &run);
    let addr = free_addr();
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    assert_forecasts(&model, &expected, &[&service]).await;
    wait_metrics(addr, 60, "failed DLQ deliveries", |m| {
        metric(m, "maintcast_ingest_delivery_retries_total{role=\"dlq\"") >= 2.0
    })
    .await;
    let group = format!("{run}-group");
    if let Offset::Offset(n) = committed_offsets(&brokers, &topic, &group).1[0] {
        assert!(
            n <= bad_offset,
            "committed {n}, past the undelivered dead letter at {bad_offset}"
        );
    }
    assert!(read_topic(&brokers, &dlq, 1, 2).is_empty());

    let mut raise = AlterConfig::new(ResourceSpecifier::Topic(&dlq));
    raise = raise.set("max.message.bytes", "1000000");
    for r in admin.alter_configs([&raise], &opts).await.unwrap() {
        r.unwrap();
    }
    let dead = read_topic(&brokers, &dlq, 1, 60);
    assert_eq!(dead.len(), 1, "the dead letter, once the topic takes it");
    assert_eq!(dead[0].0, bad.as_bytes());
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &group);
}

/// A model whose weights are all NaN, as a corrupt or diverged training would leave them: the
/// card and the file are valid, the arithmetic is not.
fn publish_nan_model(registry_dir: &std::path::Path, name: &str) -> String {
    let staged = tempfile::tempdir().unwrap();
    let good = publish_random_model(
        staged.path(),
        "staging",
        RandomModel {
            features: FEATURES.iter().map(|s| s.to_string()).collect(),
            window: WINDOW,
            min_rows: WINDOW,
            hidden: vec![8],
            offset: vec![50.0, 0.0, 1.0],
            scale: vec![50.0, 2.0, 4.0],
            seed: 1,
            pooling: Default::default(),
            member_windows: Vec::new(),
        },
    )
    .unwrap();
    let dir = staged.path().join("staging").join(&good);
    let f = maintcast_models::Forecaster::load(&dir, &candle_core::Device::Cpu).unwrap();
    let mut card = f.card().clone();
    card.name = name.to_string();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    maintcast_models::network::Network::new(vb, &card.arch).unwrap();
    for var in varmap.all_vars() {
        let nan =
            candle_core::Tensor::full(f32::NAN, var.shape(), &candle_core::Device::Cpu).unwrap();
        var.set(&nan).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    maintcast_models::artifact::save(out.path(), card, &[&varmap]).unwrap();
    registry::publish(registry_dir, name, out.path()).unwrap()
}

/// Hole 4: a model whose output is NaN must not write "0 days" (a false "due now"): nothing is
/// written, the forecasts are counted as non-finite, no alert is sent, and the stream commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_returning_nan_writes_no_forecast_and_sends_no_alert() {
    let brokers = kafka_brokers();
    let run = unique("nan");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    let version = publish_nan_model(reg.path(), &model);
    // `promote` refuses a model whose forecast is NaN; CURRENT written by hand, as a registry
    // from before that check (or an operator's edit) would have it, is what ingest must survive.
    assert!(registry::promote(reg.path(), &model, &version, "test").is_err());
    registry::write_pointer(reg.path(), &model, "CURRENT", &version).unwrap();
    let producer = producer(&brokers);
    let topic = format!("{run}-telemetry");
    let mut fleet = new_fleet(&run, 2);
    send_fleet(&producer, &topic, &mut fleet, 0..14).await;
    let f = maintcast_models::Forecaster::load(
        &reg.path().join(&model).join(&version),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut scaled = vec![0.0f32; WINDOW * FEATURES.len()];
    for (r, (_, raw)) in fleet.rows[0].1[..WINDOW].iter().enumerate() {
        f.scale_row(raw, &mut scaled[r * 3..(r + 1) * 3]);
    }
    let p = f.predict(&scaled, 1).unwrap();
    assert!(
        p[0].days.is_nan(),
        "the test model must return NaN, got {:?}",
        p[0].days
    );
    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.alert.threshold_days = 1e9; // any number would be "due"
    let addr = free_addr();
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);
    let n = 2 * (14 - WINDOW + 1);
    wait_metrics(addr, 90, "non-finite forecasts counted", |m| {
        metric(m, "maintcast_ingest_forecasts_nonfinite_total") >= n as f64
    })
    .await;
    stop_service(shutdown, service).await;
    check_committed(&brokers, &topic, &format!("{run}-group"));
    let written = maintcast_e2e::stream::forecasts_in_influx(&model).await;
    assert!(
        written.is_empty(),
        "{} forecasts written from NaN",
        written.len()
    );
    assert!(
        read_topic(&brokers, &format!("{run}-alerts"), 1, 3).is_empty(),
        "an alert from NaN"
    );
}

/// Hole 6: rows older than the last maintenance are not used for the window but are history: with
/// `--write-raw` every row and every event reaches InfluxDB, whatever order they came in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_that_arrive_after_a_maintenance_event_still_reach_the_history() {
    let brokers = kafka_brokers();
    let run = unique("backfill");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 2);
    let producer = producer(&brokers);
    let id = format!("{run}-m0");
    let base = chrono::Utc::now().timestamp_millis() - 24 * 3600 * 1000;
    let row = |i: i64| {
        format!(
            r#"{{"machine_id":"{id}","ts":{},"sensors":{{"temp":{},"vibration":0.5,"pressure":2.0}}}}"#,
            base + i * 60_000,
            50 + i
        )
    };
    let event = format!(
        r#"{{"machine_id":"{id}","ts":{},"kind":"repair"}}"#,
        base + 10 * 60_000
    );
    produce(
        &producer,
        &format!("{run}-events"),
        &id,
        event.as_bytes(),
        None,
    )
    .await;
    // Rows 0..20 arrive after the event at row 10: 0..=10 are late for the window.
    for i in 0..20 {
        produce(
            &producer,
            &format!("{run}-telemetry"),
            &id,
            row(i).as_bytes(),
            None,
        )
        .await;
    }
    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.write_raw = true;
    let addr = free_addr();
    config.http_addr = addr;
    let (shutdown, service) = start_service(config);
    // The event is on another topic, which the consumer may fetch after the telemetry: a stop
    // before it is read leaves it for the next run (uncommitted), not in this run's history.
    let events_consumed =
        format!(r#"maintcast_ingest_messages_consumed_total{{topic="{run}-events"}}"#);
    wait_metrics(addr, 90, "every row and the event consumed", |m| {
        metric(m, "maintcast_ingest_rows_decoded_total") >= 20.0
            && metric(m, &events_consumed) >= 1.0
    })
    .await;
    stop_service(shutdown, service).await;
    let env = influx();
    let flux = format!(
        r#"from(bucket: "{}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "telemetry" and r._field == "temp" and r.machine_id == "{id}")
  |> count()"#,
        env.bucket
    );
    let rows = env.query(&flux).await;
    assert_eq!(
        rows[0]["_value"], "20",
        "every raw row, also those before the event"
    );
    let flux = format!(
        r#"from(bucket: "{}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "maintenance_event" and r.machine_id == "{id}") |> count()"#,
        env.bucket
    );
    assert_eq!(env.query(&flux).await[0]["_value"], "1");
}

/// Holes 8 and 9: the checkpoint topic is created as configured, and topics whose partition
/// counts differ (events would never reset their machine's window) are refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_counts_are_checked_and_the_checkpoint_topic_is_configurable() {
    let brokers = kafka_brokers();
    let run = unique("parts");
    create_topic(&brokers, &format!("{run}-telemetry"), 3).await;
    create_topic(&brokers, &format!("{run}-events"), 2).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 2);
    let mut config = service_config(&brokers, reg.path(), &model, &run);
    config.checkpoint_partitions = 2;
    let (_shutdown, service) = start_service(config);
    let err = tokio::time::timeout(Duration::from_secs(60), service)
        .await
        .expect("refused at start")
        .unwrap()
        .expect_err("mismatched partition counts must be refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("3 partitions") && text.contains("has 2"),
        "{text}"
    );

    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let md = probe
        .fetch_metadata(Some(&format!("{run}-checkpoint")), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        md.topics()[0].partitions().len(),
        2,
        "--checkpoint-partitions"
    );
}

/// Hole 10: a timestamp in epoch seconds read as milliseconds lands in January 1970; it is refused
/// with a reason that says so, not accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn epoch_seconds_are_dead_lettered_with_a_hint() {
    let brokers = kafka_brokers();
    let run = unique("seconds");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 2);
    let producer = producer(&brokers);
    let seconds = chrono::Utc::now().timestamp();
    let body = format!(
        r#"{{"machine_id":"{run}-m","ts":{seconds},"sensors":{{"temp":1,"vibration":1,"pressure":1}}}}"#
    );
    produce(
        &producer,
        &format!("{run}-telemetry"),
        "m",
        body.as_bytes(),
        None,
    )
    .await;
    let (shutdown, service) = start_service(service_config(&brokers, reg.path(), &model, &run));
    let dead = read_topic(&brokers, &format!("{run}-dlq"), 1, 60);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1["error"].contains("epoch seconds"),
        "{:?}",
        dead[0].1["error"]
    );
    stop_service(shutdown, service).await;
}
