//! End-to-end ingest figures for BENCHMARKS.md against the real Kafka and InfluxDB
//! (`deploy/infra.sh start`):
//!
//! - `throughput STRIDE MACHINES ROWS`: pre-produces MACHINES x ROWS telemetry rows, then runs the
//!   service and times it from start until every forecast is acknowledged by InfluxDB.
//! - `latency RATE SECONDS MACHINES`: machines with full windows, then a stream paced at RATE rows/s;
//!   the k-th forecast written is matched with the k-th row produced (counters polled every 5 ms),
//!   which is the produce-to-write latency when forecasts leave in arrival order.
//! - `memory MACHINES`: allocated bytes (RSS) of a WindowStore holding MACHINES full windows.
//!
//! The model is the default shape (2 x LSTM(64), window 60, 14 features), random weights. With
//! `MAINTCAST_BENCH_SHADOW=1` a second model of the same shape shadows it (docs/LIVE_EVALUATION.md),
//! so the same command measures what a shadow costs. `MAINTCAST_BENCH_FORMAT=protobuf` produces
//! Protobuf telemetry instead of JSON. `MAINTCAST_BENCH_COMMIT_MS` sets the service's commit
//! interval (default: the shipped 5 s), to see what commits cost.
//!
//! `throughput` also reports the CPU time the service, InfluxDB and the broker spent while the
//! service ran (per 1,000 forecasts), read from /proc: the servers' pids come from the pid files
//! `deploy/infra.sh` keeps beside the InfluxDB token file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use maintcast_e2e::stream::{RandomModel, producer, publish_random_model};
use maintcast_e2e::{ingest, kafka_brokers};
use maintcast_models::registry;
use maintcast_proto::Telemetry;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The allocator the `maintcast` binary uses (see its `main.rs`), so the service measured here
/// allocates as the shipped one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N_FEATURES: usize = 14;
const WINDOW: usize = 60;
const METRICS_PORT: u16 = 19464;

fn features() -> Vec<String> {
    (0..N_FEATURES).map(|i| format!("s{i}")).collect()
}

fn make_default_model(registry_dir: &Path, name: &str) -> anyhow::Result<()> {
    let spec = RandomModel {
        features: features(),
        window: WINDOW,
        min_rows: WINDOW,
        hidden: vec![64, 64],
        offset: vec![0.0; N_FEATURES],
        scale: vec![10.0; N_FEATURES],
        seed: 7,
        pooling: Default::default(),
        member_windows: Vec::new(),
    };
    let shadow = RandomModel {
        seed: 8,
        pooling: Default::default(),
        member_windows: Vec::new(),
        features: spec.features.clone(),
        offset: spec.offset.clone(),
        scale: spec.scale.clone(),
        hidden: spec.hidden.clone(),
        ..spec
    };
    let version = publish_random_model(registry_dir, name, spec)?;
    registry::promote(registry_dir, name, &version, "benchmark model")?;
    if std::env::var_os("MAINTCAST_BENCH_SHADOW").is_some_and(|v| v == "1") {
        let shadow = publish_random_model(registry_dir, name, shadow)?;
        maintcast_trainer::shadow::set(registry_dir, name, &shadow, "benchmark shadow")?;
        eprintln!("{shadow} shadows {version}");
    }
    Ok(())
}

fn row(machine: &str, m: usize, i: usize, ts_ms: i64) -> Telemetry {
    Telemetry {
        machine_id: machine.into(),
        ts_ms,
        sensors: features()
            .into_iter()
            .enumerate()
            .map(|(f, name)| (name, ((m + f * 7 + i) % 100) as f64 / 10.0))
            .collect(),
        machine_type: Some("press".into()),
        site: Some("site0".into()),
    }
}

/// Sends rows concurrently (many in flight, as a fleet gateway would) and waits for all acks.
async fn send_rows(p: &FutureProducer, topic: &str, rows: Vec<Telemetry>) {
    for chunk in rows.chunks(5000) {
        let payloads: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|t| (t.machine_id.clone(), encode(t)))
            .collect();
        let sends = payloads.iter().map(|(k, v)| {
            p.send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
    }
}

fn protobuf() -> bool {
    std::env::var("MAINTCAST_BENCH_FORMAT").is_ok_and(|v| v == "protobuf")
}

fn encode(t: &Telemetry) -> Vec<u8> {
    if protobuf() {
        t.to_protobuf()
    } else {
        t.to_json()
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields that follow start after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc reports clock ticks of USER_HZ, which the kernel ABI fixes at 100 per second.
    Some(ticks / 100.0)
}

/// The pid of a server `deploy/infra.sh` started, from the pid file in its run directory.
fn server_pid(name: &str) -> Option<String> {
    let token = std::env::var_os("MAINTCAST_INFLUX_TOKEN_FILE")?;
    let run = Path::new(&token).parent()?;
    let pid = std::fs::read_to_string(run.join(format!("{name}.pid"))).ok()?;
    Some(pid.trim().to_string())
}

/// CPU seconds of this process (the service runs in it), InfluxDB and the broker.
#[derive(Clone, Copy)]
struct Cpu([Option<f64>; 3]);

impl Cpu {
    fn now() -> Cpu {
        let server = |n: &str| server_pid(n).and_then(|p| cpu_seconds(&p));
        Cpu([cpu_seconds("self"), server("influxd"), server("kafka")])
    }

    /// `service X s, InfluxDB Y s, broker Z s per 1,000 forecasts` since `before`.
    fn per_thousand(&self, before: &Cpu, forecasts: f64) -> String {
        let names = ["service", "InfluxDB", "broker"];
        let parts: Vec<String> = names
            .iter()
            .zip(self.0.iter().zip(&before.0))
            .map(|(name, pair)| match pair {
                (Some(a), Some(b)) => format!(
                    "{name} {:.1} s ({:.3} s per 1,000 forecasts)",
                    a - b,
                    (a - b) * 1000.0 / forecasts
                ),
                _ => format!("{name} n/a"),
            })
            .collect();
        format!("CPU: {}", parts.join(", "))
    }
}

async fn scrape(client: &reqwest::Client, name: &str) -> f64 {
    let Ok(resp) = client
        .get(format!("http://127.0.0.1:{METRICS_PORT}/metrics"))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(&format!("maintcast_ingest_{name}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Run {
    _registry: tempfile::TempDir,
    config: maintcast_ingest::Config,
    topic: String,
}

async fn setup(stride: u64) -> anyhow::Result<Run> {
    let brokers = kafka_brokers();
    let run = format!("bench{}", chrono::Utc::now().timestamp_millis());
    ingest::create_topics(&brokers, &run).await;
    let registry = tempfile::tempdir()?;
    make_default_model(registry.path(), &run)?;
    let mut config = ingest::service_config(&brokers, registry.path(), &run, &run);
    // Shipped defaults for the hot path; the test helper's small batches would understate it.
    let defaults = maintcast_ingest::Config::new(&brokers, config.influx.clone(), "".into());
    config.batch_size = defaults.batch_size;
    config.commit_interval = defaults.commit_interval;
    if let Some(ms) = std::env::var("MAINTCAST_BENCH_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.commit_interval = std::time::Duration::from_millis(ms);
    }
    config.stride = stride;
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let topic = config.topics.telemetry.clone();
    Ok(Run {
        _registry: registry,
        config,
        topic,
    })
}

fn expected_forecasts(rows: usize, stride: usize) -> usize {
    if rows < WINDOW {
        0
    } else {
        (rows - WINDOW) / stride + 1
    }
}

async fn throughput(stride: u64, machines: usize, rows: usize) -> anyhow::Result<()> {
    let r = setup(stride).await?;
    let p = producer(&kafka_brokers());
    let base = chrono::Utc::now().timestamp_millis() - 7 * 24 * 3600 * 1000;
    let mut all = Vec::with_capacity(machines * rows);
    for i in 0..rows {
        for m in 0..machines {
            all.push(row(&format!("m{m}"), m, i, base + i as i64 * 1000));
        }
    }
    let total = all.len();
    let t = Instant::now();
    send_rows(&p, &r.topic, all).await;
    eprintln!(
        "pre-produced {total} rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let want = (machines * expected_forecasts(rows, stride as usize)) as f64;

    let cpu_before = Cpu::now();
    let start = Instant::now();
    let (shutdown, svc) = ingest::start_service(r.config.clone());
    let client = reqwest::Client::new();
    let (mut first, mut written) = (None, 0.0);
    while written < want {
        tokio::time::sleep(Duration::from_millis(50)).await;
        written = scrape(&client, "forecasts_written").await;
        if first.is_none() && scrape(&client, "messages_consumed").await > 0.0 {
            first = Some(start.elapsed());
        }
        anyhow::ensure!(!svc.is_finished(), "service stopped");
        anyhow::ensure!(start.elapsed() < Duration::from_secs(900), "timed out");
    }
    let all_done = start.elapsed();
    let cpu = Cpu::now().per_thousand(&cpu_before, want);
    let from_first = all_done - first.unwrap_or_default();
    let infer = scrape(&client, "inference_seconds_sum").await;
    let shadow_infer = scrape(&client, "shadow_inference_seconds_sum").await;
    let write = scrape(&client, "influx_write_seconds_sum").await;
    shutdown.trigger();
    svc.await??;
    let format = if protobuf() { "Protobuf" } else { "JSON" };
    println!(
        "stride {stride}, {format}: {total} rows ({machines} machines x {rows}), {want} forecasts; \
         {:.1} s from start, {:.1} s from first consumed -> {:.0} rows/s, {:.0} forecasts/s; \
         inference {infer:.1} s, shadow inference {shadow_infer:.1} s, InfluxDB writes {write:.1} s \
         (summed); {cpu}",
        all_done.as_secs_f64(),
        from_first.as_secs_f64(),
        total as f64 / from_first.as_secs_f64(),
        want / from_first.as_secs_f64(),
    );
    Ok(())
}

async fn latency(rate: f64, seconds: f64, machines: usize) -> anyhow::Result<()> {
    let r = setup(1).await?;
    let p = producer(&kafka_brokers());
    // WINDOW - 1 rows per machine, so every paced row completes a window and gets a forecast.
    let base = chrono::Utc::now().timestamp_millis() - 7 * 24 * 3600 * 1000;
    let mut warm = Vec::new();
    for i in 0..WINDOW - 1 {
        for m in 0..machines {
            warm.push(row(&format!("m{m}"), m, i, base + i as i64 * 1000));
        }
    }
    send_rows(&p, &r.topic, warm).await;
    let (shutdown, svc) = ingest::start_service(r.config.clone());
    let client = reqwest::Client::new();
    let warm_rows = (machines * (WINDOW - 1)) as f64;
    while scrape(&client, "rows_decoded").await < warm_rows {
        anyhow::ensure!(!svc.is_finished(), "service stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let n = (rate * seconds) as usize;
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let producer_task = {
        let sent_at = sent_at.clone();
        let topic = r.topic.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut pending = Vec::new();
            for k in 0..n {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let (m, i) = (k % machines, WINDOW - 1 + k / machines);
                let t = row(&format!("m{m}"), m, i, base + i as i64 * 1000);
                let p = p.clone();
                let topic = topic.clone();
                sent_at.lock().unwrap().push(Instant::now());
                pending.push(tokio::spawn(async move {
                    p.send(
                        FutureRecord::to(&topic)
                            .key(&t.machine_id)
                            .payload(&encode(&t)),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("produce");
                }));
            }
            for h in pending {
                h.await.expect("send task");
            }
        })
    };
    let mut written_at = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 120.0);
    while written_at.len() < n && Instant::now() < deadline {
        let w = scrape(&client, "forecasts_written").await as usize;
        let now = Instant::now();
        while written_at.len() < w.min(n) {
            written_at.push(now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    producer_task.await?;
    shutdown.trigger();
    svc.await??;
    anyhow::ensure!(
        written_at.len() == n,
        "only {} of {n} forecasts",
        written_at.len()
    );
    let sent = sent_at.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .zip(&written_at)
        .map(|(s, w)| w.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "paced {rate} rows/s for {seconds} s over {machines} machines ({n} forecasts): \
         produce->InfluxDB ack p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        q(0.5),
        q(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn memory(machines: usize) {
    let feats = features();
    let mut store =
        maintcast_ingest::window::WindowStore::new(feats.clone(), WINDOW, vec![0.0; N_FEATURES]);
    let before = rss_bytes();
    for i in 0..WINDOW {
        for m in 0..machines {
            let t = row(
                &format!("machine-{m:06}"),
                m,
                i,
                1_700_000_000_000 + i as i64 * 1000,
            );
            store.apply(&t);
        }
    }
    let after = rss_bytes();
    assert_eq!(store.len(), machines);
    let full = store.machines().filter(|(_, w)| w.len() == WINDOW).count();
    assert_eq!(full, machines, "every window full");
    let per = (after - before) as f64 / machines as f64;
    println!(
        "{machines} machines, full windows of {WINDOW} x {N_FEATURES} f32: RSS +{:.1} MiB, {per:.0} bytes per machine \
         (raw rows alone: {} bytes)",
        (after - before) as f64 / (1024.0 * 1024.0),
        WINDOW * N_FEATURES * 4 + WINDOW * 8
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("throughput") => {
            throughput(
                num(1, 1.0) as u64,
                num(2, 1000.0) as usize,
                num(3, 120.0) as usize,
            )
            .await
        }
        Some("latency") => latency(num(1, 200.0), num(2, 30.0), num(3, 1000.0) as usize).await,
        Some("memory") => {
            memory(num(1, 10_000.0) as usize);
            Ok(())
        }
        _ => anyhow::bail!(
            "usage: ingest_bench throughput STRIDE MACHINES ROWS | latency RATE SECONDS MACHINES | memory MACHINES"
        ),
    }
}
