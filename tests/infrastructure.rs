//! The ground every other test stands on: the real Kafka and InfluxDB that `deploy/infra.sh`
//! starts accept what maintcast will send them and give it back unchanged.

use std::time::Duration;

use futures::StreamExt;
use influxdb2::models::DataPoint;
use maintcast_e2e::{create_topic, influx, kafka_brokers, unique};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn kafka_round_trip_in_a_consumer_group() {
    let brokers = kafka_brokers();
    let topic = unique("infra-telemetry");
    create_topic(&brokers, &topic, 3).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let n = 30;
    for i in 0..n {
        let key = format!("press-{:03}", i % 5);
        let payload = format!(
            r#"{{"machine_id":"{key}","ts":{},"sensors":{{"vibration_rms":{i}}}}}"#,
            1_700_000_000_000i64 + i
        );
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivery");
    }

    let group = unique("infra-group");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");

    let mut seen = Vec::new();
    let mut stream = consumer.stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < n as usize {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timed out waiting for messages")
            .expect("stream ended")
            .expect("kafka error");
        let v: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        // Keying by machine keeps a machine's rows on one partition, in order.
        assert_eq!(
            msg.key(),
            Some(v["machine_id"].as_str().unwrap().as_bytes())
        );
        seen.push(v["sensors"]["vibration_rms"].as_i64().unwrap());
        consumer
            .commit_message(&msg, CommitMode::Sync)
            .expect("commit");
    }
    seen.sort();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[tokio::test]
async fn influxdb_write_then_flux_query() {
    let env = influx();
    let machine = unique("infra-machine");
    let t0 = 1_764_000_000_000_000_000i64; // ns
    let points: Vec<DataPoint> = (0..5)
        .map(|i| {
            DataPoint::builder("maintenance_forecast")
                .tag("machine_id", machine.as_str())
                .tag("model", "infra-test")
                .field("days_to_maintenance", 10.0 - i as f64 * 0.5)
                .field("window_rows", 60i64)
                .timestamp(t0 + i * 3_600_000_000_000)
                .build()
                .unwrap()
        })
        .collect();
    env.client()
        .write(&env.bucket, futures::stream::iter(points))
        .await
        .expect("influxdb write");

    let flux = format!(
        r#"from(bucket: "{}") |> range(start: 2025-11-01T00:00:00Z, stop: 2025-12-01T00:00:00Z)
           |> filter(fn: (r) => r._measurement == "maintenance_forecast" and r.machine_id == "{machine}")
           |> filter(fn: (r) => r._field == "days_to_maintenance")
           |> sort(columns: ["_time"])"#,
        env.bucket
    );
    let rows = env.query(&flux).await;
    let values: Vec<f64> = rows.iter().map(|r| r["_value"].parse().unwrap()).collect();
    assert_eq!(values, vec![10.0, 9.5, 9.0, 8.5, 8.0]);
    assert!(rows.iter().all(|r| r["model"] == "infra-test"));
}
