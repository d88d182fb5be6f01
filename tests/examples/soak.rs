//! Soak run of the real `maintcast ingest` binary (`scripts/soak.sh` builds and runs this): a
//! private Kafka and InfluxDB, a steady fleet stream, and faults on a schedule, in rotation:
//! SIGKILL of the binary (restarted at once), InfluxDB stopped 30 s, the broker stopped 20 s and
//! started again, a burst of bad messages. Every 10 s it prints the forecasts in InfluxDB and the
//! binary's RSS; at the end, the forecasts lost, unexpected, wrong or duplicated (one window
//! under two series), the bad messages lost or copied twice in the DLQ, and RSS over time.
//!
//! `soak [MINUTES] [MACHINES] [FAULT_EVERY_S]` (30, 20, 60 by default; one row per machine a
//! second). Exits 1 if a forecast or a bad message was lost, or a forecast is wrong.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use maintcast_common::points::forecast;
use maintcast_e2e::diag::{metric_value, scrape};
use maintcast_e2e::infra::{Private, Servers};
use maintcast_e2e::ingest::create_topics;
use maintcast_e2e::process::{IngestArgs, IngestProcess};
use maintcast_e2e::steady::SteadyStream;
use maintcast_e2e::stream::{forecasts_in, make_model, offline_forecasts, produce, producer};
use maintcast_e2e::wait::wait_for_len;
use maintcast_e2e::{InfluxEnv, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill9,
    InfluxDown,
    BrokerRestart,
    BadBurst,
}

const FAULTS: [Fault; 4] = [
    Fault::Kill9,
    Fault::InfluxDown,
    Fault::BrokerRestart,
    Fault::BadBurst,
];
const BAD_PER_BURST: usize = 200;

struct Soak {
    started: Instant,
    infra: Private,
    env: InfluxEnv,
    args: IngestArgs,
    ingest: IngestProcess,
    stream: SteadyStream,
    /// (seconds since the start, RSS KiB) every 10 s.
    rss: Vec<(u64, u64)>,
    bad_sent: usize,
    faults: Vec<(u64, Fault)>,
    restarts_unasked: usize,
}

/// Forecasts of `model` in `env`, or None while InfluxDB does not answer.
async fn forecast_count(env: &InfluxEnv, model: &str) -> Option<usize> {
    let flux = format!(
        r#"from(bucket: "{}") |> range(start: -10d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "{}" and r.{} == "{model}" and r._field == "{}")
  |> group() |> count()"#,
        env.bucket,
        forecast::MEASUREMENT,
        forecast::tag::MODEL,
        forecast::field::DAYS,
    );
    let rows = env.try_query(&flux).await.ok()?;
    Some(
        rows.first()
            .and_then(|r| r.get("_value")?.parse().ok())
            .unwrap_or(0),
    )
}

impl Soak {
    fn secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    async fn report(&mut self) {
        let rss = self.ingest.rss_kib();
        self.rss.push((self.secs(), rss));
        let in_db = match forecast_count(&self.env, &self.args.model).await {
            Some(n) => n.to_string(),
            None => "(down)".into(),
        };
        let body = scrape(self.ingest.metrics).await.unwrap_or_default();
        println!(
            "[{:>5} s] rows/machine {:>5}  forecasts in InfluxDB {:>7}  RSS {:>6.1} MiB (pid {})  \
             lag {:>5}  write retries {:>4}  faults {}",
            self.secs(),
            self.stream.rows(),
            in_db,
            rss as f64 / 1024.0,
            self.ingest.pid(),
            metric_value(&body, "maintcast_ingest_consumer_lag"),
            metric_value(&body, "maintcast_ingest_influx_write_retries_total"),
            self.faults.len(),
        );
    }

    /// Lets `d` pass, reporting every 10 s; a binary that exited by itself is restarted and
    /// counted, since that is a failure the summary must show.
    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let step = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10));
            tokio::time::sleep(step).await;
            if let Some(status) = self.ingest.exited() {
                println!(
                    "ingest exited by itself ({status:?}): restarting\n{}",
                    self.ingest.log_tail(20)
                );
                self.restarts_unasked += 1;
                self.ingest = IngestProcess::spawn(&self.args);
            }
            self.report().await;
        }
    }

    async fn inject(&mut self, fault: Fault) {
        println!("[{:>5} s] fault: {fault:?}", self.secs());
        self.faults.push((self.secs(), fault));
        match fault {
            Fault::Kill9 => {
                self.ingest.kill_9();
                self.ingest = IngestProcess::spawn(&self.args);
            }
            Fault::InfluxDown => {
                self.infra.stop_influxdb().await;
                self.run_for(Duration::from_secs(30)).await;
                self.infra.start_influxdb().await;
            }
            Fault::BrokerRestart => {
                self.infra.stop_kafka().await;
                self.run_for(Duration::from_secs(20)).await;
                self.infra.start_kafka().await;
            }
            Fault::BadBurst => {
                let p = producer(&self.args.brokers);
                let topic = format!("{}-telemetry", self.args.run);
                for i in 0..BAD_PER_BURST {
                    let payload = match i % 4 {
                        0 => format!("{{\"machine_id\": \"bad-{i}").into_bytes(),
                        1 => vec![0x0a, 0x40, (i % 256) as u8],
                        2 => format!(
                            r#"{{"machine_id":"bad","ts":1,"sensors":{{"a":NaN}},"n":{i}}}"#
                        )
                        .into_bytes(),
                        _ => format!(r#"{{"ts":1,"sensors":{{"a":1}},"n":{i}}}"#).into_bytes(),
                    };
                    produce(&p, &topic, "bad", &payload, None).await;
                }
                self.bad_sent += BAD_PER_BURST;
            }
        }
    }
}

/// DLQ copies by source message: (distinct source messages, copies beyond the first).
fn dlq_counts(brokers: &str, run: &str) -> (usize, usize) {
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{run}-soak-dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("DLQ reader");
    dlq.subscribe(&[&format!("{run}-dlq")]).expect("subscribe");
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(15) {
        if let Some(Ok(m)) = dlq.poll(Duration::from_millis(200)) {
            idle = Instant::now();
            let source: Vec<String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .filter(|h| h.key.starts_with("source-"))
                        .map(|h| String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            *copies.entry(source.join("/")).or_default() += 1;
        }
    }
    let extra = copies.values().map(|n| n - 1).sum();
    (copies.len(), extra)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (minutes, machines, fault_every) = (arg(1, 30), arg(2, 20) as usize, arg(3, 60));
    println!(
        "soak: {minutes} min, {machines} machines at 1 row/s each, a fault every {fault_every} s"
    );

    let infra = Private::start(Servers::Both).await;
    let brokers = infra.brokers();
    let env = infra.influx();
    let run = unique("soak");
    create_topics(&brokers, &run).await;
    let reg = tempfile::tempdir().unwrap();
    let model = run.replace('-', "_");
    make_model(reg.path(), &model, 61);
    let mut args = IngestArgs::new(&brokers, env.clone(), reg.path(), &model, &run);
    args.token_file = Some(infra.token_file());
    // A killed member leaves the group after 6 s rather than librdkafka's 45.
    args.env = vec![("MAINTCAST_KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into())];
    let ingest = IngestProcess::spawn(&args);
    let stream = SteadyStream::start(&brokers, &run, machines, Duration::from_secs(1));
    let mut soak = Soak {
        started: Instant::now(),
        infra,
        env: env.clone(),
        args,
        ingest,
        stream,
        rss: Vec::new(),
        bad_sent: 0,
        faults: Vec::new(),
        restarts_unasked: 0,
    };
    let end = Duration::from_secs(minutes * 60);
    let mut next = 0;
    while soak.started.elapsed() + Duration::from_secs(fault_every) < end {
        soak.run_for(Duration::from_secs(fault_every)).await;
        soak.inject(FAULTS[next % FAULTS.len()]).await;
        next += 1;
    }
    let left = end.saturating_sub(soak.started.elapsed());
    soak.run_for(left).await;

    println!(
        "[{:>5} s] stream stopped; waiting for the last forecasts",
        soak.secs()
    );
    let Soak {
        stream,
        ingest,
        rss,
        bad_sent,
        faults,
        started,
        restarts_unasked,
        infra,
        ..
    } = soak;
    let fleet = stream.finish().await;
    let expected = offline_forecasts(reg.path(), &model, &fleet);
    let got = wait_for_len(
        || forecasts_in(&env, &model),
        expected.len(),
        "forecasts at the end of the soak",
        || ingest.describe(),
    )
    .await;

    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    let (mut unexpected, mut wrong) = (0, 0);
    for f in &got {
        let key = (f.machine_id.clone(), f.ts_ms);
        *seen.entry(key.clone()).or_default() += 1;
        match expected.get(&key) {
            None => unexpected += 1,
            Some(e) => {
                if (f.days_to_maintenance - e.days as f64).abs() >= 1e-4
                    || f.model_version != e.version
                {
                    wrong += 1;
                }
            }
        }
    }
    let lost = expected.keys().filter(|k| !seen.contains_key(*k)).count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    let (dlq_distinct, dlq_extra) = dlq_counts(&brokers, &run);
    let mib = |k: u64| k as f64 / 1024.0;
    let live: Vec<u64> = rss.iter().map(|&(_, k)| k).filter(|&k| k > 0).collect();
    let rows = fleet.rows[0].1.len();
    println!(
        "\n=== soak summary ({:.1} min) ===",
        started.elapsed().as_secs_f64() / 60.0
    );
    println!(
        "rows sent: {} ({machines} machines x {rows})",
        machines * rows
    );
    let count = |f: fn(&Fault) -> bool| faults.iter().filter(|(_, x)| f(x)).count();
    println!(
        "faults: {} (kill -9 {}, InfluxDB down 30 s {}, broker down 20 s {}, bad bursts {}); \
         exits not asked for: {restarts_unasked}",
        faults.len(),
        count(|f| matches!(f, Fault::Kill9)),
        count(|f| matches!(f, Fault::InfluxDown)),
        count(|f| matches!(f, Fault::BrokerRestart)),
        count(|f| matches!(f, Fault::BadBurst)),
    );
    println!(
        "forecasts: expected {}, in InfluxDB {}, lost {lost}, unexpected {unexpected}, \
         wrong value/version {wrong}, duplicated (one window, several series) {duplicated}",
        expected.len(),
        got.len()
    );
    println!(
        "bad messages: sent {bad_sent}, in the DLQ {dlq_distinct} distinct, lost {}, \
         duplicate copies {dlq_extra} (at-least-once: re-sent after a kill)",
        bad_sent.saturating_sub(dlq_distinct)
    );
    println!(
        "RSS MiB: min {:.1}, max {:.1}, last {:.1}; over time (s:MiB):",
        mib(live.iter().copied().min().unwrap_or(0)),
        mib(live.iter().copied().max().unwrap_or(0)),
        mib(live.last().copied().unwrap_or(0)),
    );
    for chunk in rss.chunks(8) {
        let line: Vec<String> = chunk
            .iter()
            .map(|&(s, k)| format!("{s}:{:.1}", mib(k)))
            .collect();
        println!("  {}", line.join("  "));
    }
    drop(ingest);
    drop(infra);
    if lost > 0 || wrong > 0 || unexpected > 0 || bad_sent > dlq_distinct {
        std::process::exit(1);
    }
}
