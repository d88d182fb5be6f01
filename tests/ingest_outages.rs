//! The real `maintcast ingest` binary through outages of what it depends on: the Kafka broker
//! stopped 20 s mid-stream, InfluxDB down a minute under steady load (its memory measured), and
//! the binary killed with SIGKILL ten times at random moments under load. In each, every expected
//! forecast ends up in InfluxDB with the offline forecaster's value, none missing.
//!
//! A test that stops a server stops its own (`maintcast_e2e::infra::Private`: other ports, other
//! data, wiped at the end), so these run beside any other test on the shared servers.

use std::time::{Duration, Instant};

use maintcast_e2e::diag::{metric_value, scrape};
use maintcast_e2e::infra::{Private, Servers};
use maintcast_e2e::ingest::create_topics;
use maintcast_e2e::process::{IngestArgs, IngestProcess};
use maintcast_e2e::steady::{SteadyStream, messages_sent};
use maintcast_e2e::stream::{
    WINDOW, check_committed, check_forecasts, committed_rows, forecasts_in, make_model,
    offline_forecasts,
};
use maintcast_e2e::wait::{wait_for, wait_for_len};
use maintcast_e2e::{InfluxEnv, influx, kafka_brokers, unique};

/// A run's topics on `brokers` and its model in a fresh registry.
struct Run {
    brokers: String,
    run: String,
    model: String,
    reg: tempfile::TempDir,
    topic: String,
    group: String,
}

impl Run {
    async fn new(brokers: &str, prefix: &str, seed: u64) -> Run {
        let run = unique(prefix);
        create_topics(brokers, &run).await;
        let reg = tempfile::tempdir().unwrap();
        let model = run.replace('-', "_");
        make_model(reg.path(), &model, seed);
        Run {
            brokers: brokers.to_string(),
            topic: format!("{run}-telemetry"),
            group: format!("{run}-group"),
            run,
            model,
            reg,
        }
    }

    fn args(&self, influx: InfluxEnv) -> IngestArgs {
        IngestArgs::new(
            &self.brokers,
            influx,
            self.reg.path(),
            &self.model,
            &self.run,
        )
    }

    fn committed(&self) -> usize {
        committed_rows(&self.brokers, &self.topic, &self.group).max(0) as usize
    }

    /// Waits until the group has committed `rows` telemetry messages; fails after 90 s without
    /// progress, saying what `ingest` was doing.
    async fn wait_committed(&self, rows: usize, what: &str, ingest: &IngestProcess) {
        wait_for(
            || async { self.committed() },
            |n| *n,
            rows,
            what,
            || ingest.describe(),
        )
        .await;
    }

    /// Stops `stream`, waits until every message it sent is committed and every forecast is in
    /// `env`, and checks each against the offline forecaster.
    async fn finish(&self, stream: SteadyStream, env: &InfluxEnv, ingest: &IngestProcess) {
        let fleet = stream.finish().await;
        let rows = fleet.rows[0].1.len();
        self.wait_committed(messages_sent(&fleet), "every message committed", ingest)
            .await;
        let expected = offline_forecasts(self.reg.path(), &self.model, &fleet);
        assert_eq!(expected.len(), fleet.rows.len() * (rows - WINDOW + 1));
        let got = wait_for_len(
            || forecasts_in(env, &self.model),
            expected.len(),
            "forecasts in InfluxDB",
            || ingest.describe(),
        )
        .await;
        check_forecasts(&got, &expected);
        eprintln!(
            "{} rows per machine, {} forecasts, each equal to the offline one",
            rows,
            got.len()
        );
    }
}

/// The broker stops for 20 s while the stream goes on (the producer holds its rows meanwhile),
/// then starts again on its data: the binary rides it out, resumes by itself, and every forecast
/// is there, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_broker_down_20_s_mid_stream_then_back_loses_nothing() {
    let kafka = Private::start(Servers::Kafka).await;
    let env = influx();
    let r = Run::new(&kafka.brokers(), "outage-kafka", 51).await;
    let machines = 4;
    let stream = SteadyStream::start(&r.brokers, &r.run, machines, Duration::from_millis(100));
    let mut ingest = IngestProcess::spawn(&r.args(env.clone()));
    r.wait_committed(
        machines * (WINDOW + 5),
        "rows committed before the outage",
        &ingest,
    )
    .await;

    let stopping = Instant::now();
    kafka.stop_kafka().await;
    let stop_took = stopping.elapsed();
    let down = Instant::now();
    let rows_at_stop = stream.rows();
    while down.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ingest.assert_running("while the broker was down");
    }
    kafka.start_kafka().await;
    eprintln!(
        "broker down {:.1} s (stopping it took {:.1} s); the stream was at row {rows_at_stop} \
         when it stopped",
        down.elapsed().as_secs_f64(),
        stop_took.as_secs_f64()
    );
    // Rows sent after the restart must be consumed too: the service resumed by itself.
    let rows_at_restart = stream.rows();
    if tokio::time::timeout(Duration::from_secs(180), stream.advance(30))
        .await
        .is_err()
    {
        panic!(
            "the stream delivered {} rows per machine in 3 min after the restart (at {} when it \
             stopped, {rows_at_restart} at the restart)\n{}\n{}",
            stream.rows() - rows_at_restart,
            rows_at_stop,
            kafka.describe(),
            ingest.describe().await
        );
    }
    r.finish(stream, &env, &ingest).await;
    ingest.stop_cleanly().await;
    check_committed(&r.brokers, &r.topic, &r.group);
}

/// Flags for the memory test: small queues, so that the bound they imply is tight, and a cap on
/// the Kafka consumer's prefetch, which is librdkafka's buffer rather than the service's.
const QUEUE_CAPACITY: usize = 64;
const WRITE_BATCH: usize = 100;
const PREFETCH_KIB: usize = 1024;
/// Messages the Kafka poll thread holds for the service loop (`source.rs`): 64 batches of 256 in
/// its channel and the one it is gathering.
const POLL_CHANNEL: usize = 65 * 256;
/// Windows per inference batch (`IngestProcess` passes `--batch-size 16`).
const INFERENCE_BATCH: usize = 16;

/// InfluxDB is down for 60 s while 20 machines each send a row every 100 ms (12,000 rows during
/// the outage, far more than the queues hold): the service stops consuming once its queues are
/// full, its resident memory stays within what they imply, and once InfluxDB is back every
/// forecast is written, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn influxdb_down_60_s_under_load_loses_nothing_and_memory_stays_bounded() {
    let db = Private::start(Servers::InfluxDb).await;
    let env = db.influx();
    let r = Run::new(&kafka_brokers(), "outage-influx", 53).await;
    let machines = 20;
    let mut args = r.args(env.clone());
    args.token_file = Some(db.token_file());
    args.extra = vec![
        "--queue-capacity".into(),
        QUEUE_CAPACITY.to_string(),
        "--write-batch".into(),
        WRITE_BATCH.to_string(),
    ];
    args.env = vec![
        (
            "MAINTCAST_KAFKA_QUEUED_MAX_MESSAGES_KBYTES".into(),
            PREFETCH_KIB.to_string(),
        ),
        ("MAINTCAST_KAFKA_QUEUED_MIN_MESSAGES".into(), "1000".into()),
    ];
    let mut ingest = IngestProcess::spawn(&args);
    let stream = SteadyStream::start(&r.brokers, &r.run, machines, Duration::from_millis(100));
    // Windows full and forecasts flowing a while, so that the baseline is the steady state.
    r.wait_committed(
        machines * (WINDOW + 60),
        "rows committed before the outage",
        &ingest,
    )
    .await;
    let mut before = 0;
    for _ in 0..5 {
        ingest.assert_running("before the outage");
        before = before.max(ingest.rss_kib());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let metrics = ingest.metrics;
    let consumed = || async move {
        let body = scrape(metrics).await.unwrap_or_default();
        metric_value(&body, "maintcast_ingest_messages_consumed_total") as usize
    };

    db.stop_influxdb().await;
    let down = Instant::now();
    let consumed_at_stop = consumed().await;
    let sent_at_stop = stream.rows() * machines;
    let mut during = Vec::new();
    while down.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ingest.assert_running("while InfluxDB was down");
        during.push(ingest.rss_kib());
    }
    let consumed_in_outage = consumed().await - consumed_at_stop;
    let sent_in_outage = stream.rows() * machines - sent_at_stop;
    db.start_influxdb().await;
    r.finish(stream, &env, &ingest).await;
    let after = ingest.rss_kib();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let peak = *during.iter().max().expect("samples");
    let first_half_peak = *during[..during.len() / 2].iter().max().expect("samples");
    eprintln!(
        "RSS MiB: before {:.1}, during (every 5 s) {:?}, peak {:.1}, after {:.1}; \
         {consumed_in_outage} messages consumed of {sent_in_outage} sent during the outage \
         ({consumed_at_stop} of {sent_at_stop} before it)",
        mib(before),
        during
            .iter()
            .step_by(5)
            .map(|&k| (mib(k) * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        mib(peak),
        mib(after),
    );
    // Back-pressure: once the queues were full the service took no more from Kafka. It can
    // hold a request queue, a write queue, an inference batch and a write batch being retried;
    // twice that leaves room for how the stages hand over, and is far below what was sent.
    let holds = 2 * QUEUE_CAPACITY + WRITE_BATCH + INFERENCE_BATCH;
    assert!(
        consumed_at_stop > 0,
        "no consumption counted: is the metric's name right?"
    );
    assert!(
        sent_in_outage > 8 * holds,
        "the load ({sent_in_outage} messages in the outage) must exceed what the queues hold"
    );
    assert!(
        consumed_in_outage <= 2 * holds,
        "{consumed_in_outage} messages consumed while InfluxDB was down ({sent_in_outage} sent); \
         the bounded queues hold about {holds}\n{}",
        ingest.describe().await
    );
    // What is held while consumption waits: the queues and batches above, each item under 4 KiB
    // (a Kafka message with its window and point), the poll thread's channel of raw Kafka
    // messages, each under 1 KiB, and librdkafka's prefetch; 8 MiB on top covers allocator arenas, HTTP buffers and retry state
    // (growth seen: about 1.5 MiB). The consumed count above is the sharp check of the bound;
    // the second-half check catches a buffer of the rows sent meanwhile (6,000 in that half, at
    // half a KiB or more each) that the total alone might not.
    let implied_kib = (holds * 4 + POLL_CHANNEL + PREFETCH_KIB) as u64;
    let bound = implied_kib + 8 * 1024;
    assert!(
        peak.saturating_sub(before) <= bound,
        "RSS grew {:.1} MiB in the outage, over the {:.1} MiB the queues imply",
        mib(peak.saturating_sub(before)),
        mib(bound)
    );
    assert!(
        peak.saturating_sub(first_half_peak) <= 2 * 1024,
        "RSS still growing in the outage's second half: {:.1} -> {:.1} MiB",
        mib(first_half_peak),
        mib(peak)
    );
    assert!(
        after.saturating_sub(before) <= bound,
        "RSS after catching up {:.1} MiB, before the outage {:.1} MiB",
        mib(after),
        mib(before)
    );
    ingest.stop_cleanly().await;
    check_committed(&r.brokers, &r.topic, &r.group);
}

/// A small seeded generator for the kill moments; the seed is printed, so a failing run can be
/// repeated with `MAINTCAST_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64: good enough to spread ten moments, and needs no crate.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The binary is killed with SIGKILL ten times at seeded random moments while rows keep
/// arriving: every other kill a moment after the start (model loading, the group join, the
/// window restore), the others a moment after it began consuming (mid-batch, mid-write,
/// mid-commit). A last process runs to the end: every expected forecast is in InfluxDB with the
/// offline forecaster's value, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_ten_times_at_random_moments_loses_no_forecast() {
    let env = influx();
    let r = Run::new(&kafka_brokers(), "outage-kill", 57).await;
    let machines = 6;
    let seed = std::env::var("MAINTCAST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill moments from MAINTCAST_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let mut args = r.args(env.clone());
    // A killed member leaves the group only when its session times out: the broker's minimum,
    // rather than librdkafka's 45 s, lets the next process in within seconds.
    args.env = vec![("MAINTCAST_KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into())];
    let stream = SteadyStream::start(&r.brokers, &r.run, machines, Duration::from_millis(100));
    let mut kills = Vec::new();
    for k in 1..=10 {
        let mut ingest = IngestProcess::spawn(&args);
        let started = Instant::now();
        if k % 2 == 0 {
            let metrics = ingest.metrics;
            wait_for(
                || async move {
                    let body = scrape(metrics).await.unwrap_or_default();
                    metric_value(&body, "maintcast_ingest_messages_consumed_total") as usize
                },
                |n| *n,
                1,
                &format!("process {k} consuming"),
                || ingest.describe(),
            )
            .await;
        }
        tokio::time::sleep(rng.millis(200, 3000)).await;
        ingest.assert_running(&format!("before kill {k}"));
        let at = started.elapsed();
        assert!(!ingest.kill_9().success());
        kills.push((at.as_millis(), r.committed()));
    }
    eprintln!("kills (ms after the start, messages committed then): {kills:?}");

    let mut last = IngestProcess::spawn(&args);
    r.finish(stream, &env, &last).await;
    last.assert_running("at the end");
    last.stop_cleanly().await;
    check_committed(&r.brokers, &r.topic, &r.group);
}
