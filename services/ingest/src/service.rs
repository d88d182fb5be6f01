//! The running service: decode -> window -> batch -> infer -> write -> commit, in that order.
//!
//! Offsets are committed at barriers: every `commit_interval` consumption stops until every
//! forecast, raw point, DLQ record and alert derived from what was consumed is acknowledged, then
//! the consumed positions are committed. So a committed offset never runs ahead of InfluxDB.
//!
//! The Kafka consumer is polled on a thread of its own, which hands messages and rebalances to the
//! service loop in order. When the group takes partitions away, the poll thread holds the
//! rebalance until the loop has drained, checkpointed the windows and named the offsets to commit,
//! and commits them before the partitions go: the next owner starts exactly where this one stopped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use influxdb2::models::DataPoint;
use maintcast_common::influx::{InfluxConfig, WriteError, Writer};
use maintcast_common::shutdown::Shutdown;
use maintcast_proto::{Alert, Decoder, Forecast, Limits};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::alerts::AlertRule;
use crate::batch::Batcher;
use crate::checkpoint;
use crate::model::Model;
use crate::serving::{ServingModel, parse_device};
use crate::window::{Columns, RowOutcome, WindowStore};

#[derive(Debug, Clone)]
pub struct Topics {
    pub telemetry: String,
    pub events: String,
    pub dlq: String,
    pub alerts: String,
    /// Compacted topic of window checkpoints (created if missing).
    pub checkpoint: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            telemetry: "telemetry".into(),
            events: "maintenance-events".into(),
            dlq: "telemetry-dlq".into(),
            alerts: "maintenance-alerts".into(),
            checkpoint: "ingest-windows-checkpoint".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub group_id: String,
    pub topics: Topics,
    pub influx: InfluxConfig,
    pub registry: PathBuf,
    pub model: String,
    pub device: String,
    pub batch_size: usize,
    pub linger: Duration,
    pub stride: u64,
    /// Windows waiting for inference; when full, consumption waits (bounded memory).
    pub queue_capacity: usize,
    /// Points per InfluxDB write.
    pub write_batch: usize,
    pub commit_interval: Duration,
    pub reload_interval: Duration,
    pub alert: AlertRule,
    /// Also write raw rows and events to `telemetry` / `maintenance_event` (the trainer's history).
    pub write_raw: bool,
    pub limits: Limits,
    pub http_addr: SocketAddr,
    /// How long a shutdown may wait for outstanding writes before giving up.
    pub drain_timeout: Duration,
}

impl Config {
    pub fn new(brokers: &str, influx: InfluxConfig, registry: PathBuf) -> Self {
        Config {
            brokers: brokers.into(),
            group_id: "maintcast-ingest".into(),
            topics: Topics::default(),
            influx,
            registry,
            model: "maintcast".into(),
            device: "cpu".into(),
            batch_size: 64,
            linger: Duration::from_millis(20),
            stride: 1,
            queue_capacity: 4096,
            write_batch: 5000,
            commit_interval: Duration::from_secs(5),
            reload_interval: Duration::from_secs(10),
            alert: AlertRule {
                threshold_days: 7.0,
                hysteresis_days: 1.0,
            },
            write_raw: false,
            limits: Limits::default(),
            http_addr: "127.0.0.1:9464".parse().expect("literal address"),
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters and histograms served on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub consumed: Family<Vec<(String, String)>, Counter>,
    pub rejected: Family<Vec<(String, String)>, Counter>,
    pub decoded: Counter,
    pub filled_values: Counter,
    pub duplicates: Counter,
    pub late: Counter,
    pub forecasts_written: Counter,
    pub write_retries: Counter,
    pub alerts_sent: Counter,
    pub model_reloads: Family<Vec<(String, String)>, Counter>,
    pub machines: Gauge,
    pub consumer_lag: Gauge,
    pub batch_size: Arc<Histogram>,
    pub inference_seconds: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            batch_size: Arc::new(Histogram::new(exponential_buckets(1.0, 2.0, 12))),
            inference_seconds: Arc::new(Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            write_seconds: Arc::new(Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            consumed: Default::default(),
            rejected: Default::default(),
            decoded: Default::default(),
            filled_values: Default::default(),
            duplicates: Default::default(),
            late: Default::default(),
            forecasts_written: Default::default(),
            write_retries: Default::default(),
            alerts_sent: Default::default(),
            model_reloads: Default::default(),
            machines: Default::default(),
            consumer_lag: Default::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("maintcast_ingest");
        r.register(
            "messages_consumed",
            "Kafka messages consumed, by topic",
            self.consumed.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages sent to the DLQ, by reason",
            self.rejected.clone(),
        );
        r.register(
            "rows_decoded",
            "Telemetry rows decoded",
            self.decoded.clone(),
        );
        r.register(
            "values_filled",
            "Missing or non-finite sensor values filled",
            self.filled_values.clone(),
        );
        r.register(
            "rows_duplicate",
            "Duplicate rows ignored",
            self.duplicates.clone(),
        );
        r.register(
            "rows_late",
            "Rows older than the window's newest, dropped",
            self.late.clone(),
        );
        r.register(
            "forecasts_written",
            "Forecasts acknowledged by InfluxDB",
            self.forecasts_written.clone(),
        );
        r.register(
            "influx_write_retries",
            "Failed InfluxDB writes retried",
            self.write_retries.clone(),
        );
        r.register(
            "alerts_sent",
            "Alerts delivered to Kafka",
            self.alerts_sent.clone(),
        );
        r.register(
            "model_reloads",
            "Model reload attempts, by result",
            self.model_reloads.clone(),
        );
        r.register(
            "machines_tracked",
            "Machines with a window",
            self.machines.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages behind the high watermark (assigned partitions)",
            self.consumer_lag.clone(),
        );
        r.register(
            "batch_size",
            "Windows per inference batch",
            HistogramRef(self.batch_size.clone()),
        );
        r.register(
            "inference_seconds",
            "Inference time per batch",
            HistogramRef(self.inference_seconds.clone()),
        );
        r.register(
            "influx_write_seconds",
            "InfluxDB write latency",
            HistogramRef(self.write_seconds.clone()),
        );
    }
}

/// Lets a shared histogram be registered (the registry wants an owned metric).
#[derive(Debug)]
struct HistogramRef(Arc<Histogram>);

impl prometheus_client::encoding::EncodeMetric for HistogramRef {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        self.0.metric_type()
    }
}

/// A window due for a forecast, handed from the consumer loop to inference.
struct ForecastRequest {
    machine_id: String,
    ts_ms: i64,
    window_rows: usize,
    /// Raw rows in feature order, `[window, features]`, left-padded.
    raw: Vec<f32>,
    machine_type: Option<String>,
    site: Option<String>,
}

enum WriteItem {
    Forecast(Forecast),
    Raw(DataPoint),
}

/// Acknowledgements flowing back to the consumer loop.
enum Done {
    Written {
        items: usize,
        forecasts: Vec<Forecast>,
    },
    Delivered,
}

type Partition = (String, i32);

/// What the poll thread hands the service loop, in the order the consumer produced it.
enum Polled {
    Message(OwnedMessage),
    Error(KafkaError),
    /// The group takes these partitions away. The loop drains, checkpoints and answers with the
    /// offsets to commit; the poll thread commits them before the rebalance goes on.
    Revoke {
        partitions: Vec<Partition>,
        reply: std::sync::mpsc::SyncSender<TopicPartitionList>,
    },
    Assign(Vec<Partition>),
}

struct IngestContext {
    tx: mpsc::Sender<Polled>,
    /// How long a revoke waits for the loop's drain before the rebalance goes on without it (the
    /// last barrier's commit then stands, and the next owner re-forecasts from there).
    revoke_timeout: Duration,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl IngestContext {
    /// Hands `item` to the loop; false when the loop is gone. Dropping the consumer on an async
    /// runtime thread must not block it, so there the item is only offered.
    fn hand_over(&self, item: Polled) -> bool {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tx.try_send(item).is_ok()
        } else {
            self.tx.blocking_send(item).is_ok()
        }
    }
}

impl ClientContext for IngestContext {}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = partitions(tpl);
        if partitions.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if !self.hand_over(Polled::Revoke { partitions, reply }) {
            return;
        }
        match answer.recv_timeout(self.revoke_timeout) {
            Ok(offsets) if offsets.count() == 0 => {}
            Ok(offsets) => match consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(partitions = offsets.count(), "offsets committed on revoke")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit on revoke failed; the last barrier's offsets stand")
                }
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                timeout = ?self.revoke_timeout,
                "revoked partitions not drained in time; the last barrier's offsets stand"
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.hand_over(Polled::Assign(partitions(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Polls the consumer until `stop` is set or the loop is gone. Blocking on a full channel is the
/// back-pressure: the loop takes no messages while it drains.
fn poll_consumer(
    consumer: Arc<BaseConsumer<IngestContext>>,
    tx: mpsc::Sender<Polled>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let item = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => Polled::Message(m.detach()),
            Some(Err(e)) => Polled::Error(e),
        };
        if tx.blocking_send(item).is_err() {
            break;
        }
    }
}

/// Stops the poll thread when the service loop ends, on any path.
struct PollThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PollThread {
    async fn join(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

impl Drop for PollThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the service until `shutdown` fires, then drains, commits and returns.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let device = parse_device(&config.device)?;
    let model: Arc<dyn Model> = {
        let (registry, name, device) = (
            config.registry.clone(),
            config.model.clone(),
            device.clone(),
        );
        Arc::new(
            tokio::task::spawn_blocking(move || {
                ServingModel::load_current(&registry, &name, &device)
            })
            .await??,
        )
    };
    tracing::info!(
        model = model.name(),
        version = model.version(),
        features = model.features().len(),
        "model loaded"
    );

    let metrics = Metrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let (addr, http) = maintcast_common::http::serve(
        config.http_addr,
        Arc::new(registry),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");

    let producer: FutureProducer = maintcast_common::kafka::client_config(&config.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("creating the Kafka producer")?;
    ensure_checkpoint_topic(&config).await?;
    let (polled_tx, mut polled_rx) = mpsc::channel::<Polled>(1024);
    let consumer: BaseConsumer<IngestContext> =
        maintcast_common::kafka::client_config(&config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range keeps partition p of `telemetry` and of `maintenance-events` on one instance, so a
            // machine's rows and its events meet in one window.
            .set("partition.assignment.strategy", "range")
            .create_with_context(IngestContext {
                tx: polled_tx.clone(),
                revoke_timeout: config.drain_timeout,
            })
            .context("creating the Kafka consumer")?;
    consumer
        .subscribe(&[&config.topics.telemetry, &config.topics.events])
        .context("subscribing to the telemetry topics")?;
    let consumer = Arc::new(consumer);
    let stop = Arc::new(AtomicBool::new(false));
    let poll_thread = PollThread {
        stop: stop.clone(),
        handle: Some(
            std::thread::Builder::new()
                .name("kafka-poll".into())
                .spawn({
                    let consumer = consumer.clone();
                    move || poll_consumer(consumer, polled_tx, stop)
                })
                .context("starting the Kafka poll thread")?,
        ),
    };

    let (req_tx, req_rx) = mpsc::channel::<ForecastRequest>(config.queue_capacity);
    let (write_tx, write_rx) = mpsc::channel::<WriteItem>(config.queue_capacity);
    // Unbounded: acknowledgements must never block the writer, or a full request queue could
    // deadlock the loop that drains this channel. Its size is bounded by what is in flight.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();

    let inference = tokio::spawn(inference_task(
        model.clone(),
        config.clone(),
        device,
        req_rx,
        write_tx.clone(),
        metrics.clone(),
    ));
    let writer = tokio::spawn(writer_task(
        Writer::new(&config.influx)?,
        write_rx,
        done_tx.clone(),
        metrics.clone(),
        config.write_batch,
        shutdown.clone(),
    ));

    let decoder = Decoder::new(config.limits.clone());
    let mut store = WindowStore::new(
        model.features().to_vec(),
        model.window(),
        model.neutral_raw(),
    );
    let (min_rows, window) = (model.min_rows(), model.window());
    let n_features = model.features().len();
    let mut assigned: HashSet<(String, i32)> = HashSet::new();
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    let mut committed: HashMap<(String, i32), i64> = HashMap::new();
    let mut in_flight: usize = 0;
    // Machines changed since their last checkpoint.
    let mut dirty: HashSet<String> = HashSet::new();
    // After a restore: telemetry offsets below this are already in the machine's window.
    let mut skip_below: HashMap<String, i64> = HashMap::new();
    let mut draining = false;
    // A revoke waiting for the drain: its partitions and where to send the offsets to commit.
    let mut revoking: Option<(
        Vec<Partition>,
        std::sync::mpsc::SyncSender<TopicPartitionList>,
    )> = None;
    let mut stopping = false;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut commit_tick = tokio::time::interval(config.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    ready.store(true, Ordering::Relaxed);

    loop {
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                match done {
                    Done::Written { items, forecasts } => {
                        in_flight -= items;
                        for f in forecasts {
                            in_flight += send_alert(&config, &producer, &mut store, &f, &done_tx, &metrics);
                        }
                    }
                    Done::Delivered => in_flight -= 1,
                }
            }
            _ = shutdown.wait(), if !stopping => {
                tracing::info!(in_flight, "draining before exit");
                stopping = true;
                draining = true;
                stop_deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
            }
            _ = commit_tick.tick(), if !draining => draining = true,
            _ = lag_tick.tick() => {
                metrics.machines.set(store.len() as i64);
                metrics.consumer_lag.set(consumer_lag(&consumer, &positions, &assigned));
            }
            polled = polled_rx.recv(), if !draining => {
                let msg = match polled {
                    None => anyhow::bail!("the Kafka poll thread stopped"),
                    Some(Polled::Message(m)) => m,
                    Some(Polled::Error(e)) => {
                        tracing::warn!(error = %e, "Kafka consume error");
                        continue;
                    }
                    Some(Polled::Revoke { partitions, reply }) => {
                        tracing::info!(?partitions, in_flight, "partitions revoked: draining before the handover");
                        revoking = Some((partitions, reply));
                        draining = true;
                        continue;
                    }
                    Some(Polled::Assign(newly)) => {
                        assign(
                            &config,
                            newly,
                            &mut assigned,
                            &mut store,
                            &mut skip_below,
                            &mut dirty,
                        )
                        .await?;
                        continue;
                    }
                };
                let key = (msg.topic().to_string(), msg.partition());
                if !assigned.contains(&key) {
                    continue;
                }
                metrics.consumed.get_or_create(&vec![("topic".into(), key.0.clone())]).inc();
                let payload = msg.payload().unwrap_or(&[]);
                let content_type = header(&msg, maintcast_proto::CONTENT_TYPE_HEADER);
                if key.0 == config.topics.telemetry {
                    match decoder.decode_telemetry(payload, content_type.as_deref()) {
                        Ok(t) if skip_below.get(&t.machine_id).is_some_and(|&n| msg.offset() < n) => {
                            metrics.decoded.inc();
                        }
                        Ok(t) => {
                            metrics.decoded.inc();
                            match store.apply(&t) {
                                RowOutcome::Applied { filled } => {
                                    metrics.filled_values.inc_by(filled as u64);
                                    let w = store.get_mut(&t.machine_id).expect("window just applied");
                                    w.partition = key.1;
                                    dirty.insert(t.machine_id.clone());
                                    if config.write_raw {
                                        write_tx.send(WriteItem::Raw(raw_point(&t)?)).await?;
                                        in_flight += 1;
                                    }
                                    if w.forecast_due(min_rows, config.stride) {
                                        let mut raw = vec![0.0; window * n_features];
                                        let window_rows = w.snapshot(window, &mut raw);
                                        let req = ForecastRequest {
                                            machine_id: t.machine_id.clone(),
                                            ts_ms: t.ts_ms,
                                            window_rows,
                                            raw,
                                            machine_type: w.machine_type.clone(),
                                            site: w.site.clone(),
                                        };
                                        in_flight += 1;
                                        // Blocks when inference is behind: consumption pauses.
                                        req_tx.send(req).await.map_err(|_| anyhow::anyhow!("inference stopped"))?;
                                    };
                                }
                                RowOutcome::Duplicate => {
                                    metrics.duplicates.inc();
                                }
                                RowOutcome::Late => {
                                    metrics.late.inc();
                                }
                            }
                        }
                        Err(e) => {
                            in_flight += send_dlq(&config, &producer, &msg, &e.to_string(), &done_tx);
                            metrics.rejected.get_or_create(&vec![("reason".into(), e.reason().into())]).inc();
                        }
                    }
                } else {
                    match decoder.decode_maintenance_event(payload, content_type.as_deref()) {
                        Ok(ev) => {
                            let applied = store.apply_event(&ev);
                            if applied {
                                if let Some(w) = store.get_mut(&ev.machine_id) {
                                    w.partition = key.1;
                                }
                                dirty.insert(ev.machine_id.clone());
                            }
                            if applied && config.write_raw {
                                let p = DataPoint::builder("maintenance_event")
                                    .tag("machine_id", &ev.machine_id)
                                    .tag("kind", ev.kind.as_str())
                                    .field("note", ev.note.clone())
                                    .timestamp(ev.ts_ms)
                                    .build()?;
                                write_tx.send(WriteItem::Raw(p)).await?;
                                in_flight += 1;
                            }
                        }
                        Err(e) => {
                            in_flight += send_dlq(&config, &producer, &msg, &e.to_string(), &done_tx);
                            metrics.rejected.get_or_create(&vec![("reason".into(), e.reason().into())]).inc();
                        }
                    }
                }
                positions.insert(key, msg.offset() + 1);
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if draining => {}
        }

        if draining && in_flight == 0 {
            // Checkpoints first: a committed offset must never be ahead of the windows.
            let checkpointed = write_checkpoints(
                &config, &producer, &store, &mut dirty, &positions, &assigned,
            )
            .await;
            if let Some((partitions, reply)) = revoking.take() {
                let offsets = if checkpointed {
                    uncommitted(&positions, &committed, |tp| partitions.contains(tp))
                } else {
                    TopicPartitionList::new()
                };
                // The poll thread commits these before the partitions go.
                let _ = reply.send(offsets);
                revoke(
                    &config,
                    partitions,
                    &mut assigned,
                    &mut positions,
                    &mut committed,
                    &mut store,
                    &mut skip_below,
                    &mut dirty,
                );
            } else if checkpointed {
                commit(&consumer, &positions, &assigned, &mut committed);
            }
            draining = false;
            if stopping {
                break;
            }
        }
        if let Some(deadline) = stop_deadline
            && tokio::time::Instant::now() > deadline
        {
            anyhow::bail!(
                "{in_flight} writes still unacknowledged after the drain timeout; offsets not committed past them"
            );
        }
    }
    // The loop is gone: a revoke during the consumer's close finds no one to drain and returns.
    drop(polled_rx);
    drop(consumer);
    poll_thread.join().await;
    drop(req_tx);
    drop(write_tx);
    inference.await??;
    writer.await??;
    shutdown.trigger();
    let _ = http.await;
    tracing::info!("ingest stopped");
    Ok(())
}

fn header(msg: &impl Message, name: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Forgets revoked partitions: their windows belong to their next owner, which restores them from
/// the checkpoints just written.
#[allow(clippy::too_many_arguments)]
fn revoke(
    config: &Config,
    revoked: Vec<Partition>,
    assigned: &mut HashSet<Partition>,
    positions: &mut HashMap<Partition, i64>,
    committed: &mut HashMap<Partition, i64>,
    store: &mut WindowStore,
    skip_below: &mut HashMap<String, i64>,
    dirty: &mut HashSet<String>,
) {
    let mut gone: HashSet<i32> = HashSet::new();
    for tp in revoked {
        tracing::info!(topic = tp.0, partition = tp.1, "partition revoked");
        if tp.0 == config.topics.telemetry {
            gone.insert(tp.1);
        }
        assigned.remove(&tp);
        positions.remove(&tp);
        committed.remove(&tp);
    }
    drop_windows(&gone, store, skip_below, dirty);
}

fn drop_windows(
    partitions: &HashSet<i32>,
    store: &mut WindowStore,
    skip_below: &mut HashMap<String, i64>,
    dirty: &mut HashSet<String>,
) {
    if partitions.is_empty() {
        return;
    }
    let mut dropped = Vec::new();
    store.remove_where(|id, w| {
        let d = partitions.contains(&w.partition);
        if d {
            dropped.push(id.to_string());
        }
        d
    });
    for id in dropped {
        skip_below.remove(&id);
        dirty.remove(&id);
    }
}

/// Takes on newly assigned partitions with their windows from the checkpoint topic, which match
/// the committed offset consumption starts from.
async fn assign(
    config: &Config,
    newly: Vec<Partition>,
    assigned: &mut HashSet<Partition>,
    store: &mut WindowStore,
    skip_below: &mut HashMap<String, i64>,
    dirty: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let mut fresh: HashSet<i32> = HashSet::new();
    for tp in newly {
        tracing::info!(topic = tp.0, partition = tp.1, "partition assigned");
        if tp.0 == config.topics.telemetry {
            fresh.insert(tp.1);
        }
        assigned.insert(tp);
    }
    // Windows still held for these partitions (a revoke that timed out) may be ahead of the
    // committed offset; the checkpoint is not.
    drop_windows(&fresh, store, skip_below, dirty);
    if fresh.is_empty() {
        return Ok(());
    }
    let client = maintcast_common::kafka::client_config(&config.brokers)
        .set("group.id", format!("{}-checkpoint-reader", config.group_id))
        .clone();
    let topic = config.topics.checkpoint.clone();
    let parts = fresh.clone();
    let started = Instant::now();
    let records = tokio::task::spawn_blocking(move || {
        checkpoint::read_latest(&client, &topic, &parts, Duration::from_secs(60))
    })
    .await??;
    let mut restored = 0;
    for (id, bytes) in records {
        if let Some((w, next)) = checkpoint::decode(store, &bytes) {
            store.insert(id.clone(), w);
            skip_below.insert(id, next);
            restored += 1;
        }
    }
    tracing::info!(restored, partitions = ?fresh, ms = started.elapsed().as_millis() as u64, "windows restored");
    Ok(())
}

async fn write_checkpoints(
    config: &Config,
    producer: &FutureProducer,
    store: &WindowStore,
    dirty: &mut HashSet<String>,
    positions: &HashMap<(String, i32), i64>,
    assigned: &HashSet<(String, i32)>,
) -> bool {
    if dirty.is_empty() {
        return true;
    }
    let mut pending = Vec::with_capacity(dirty.len());
    for id in dirty.iter() {
        let Some(w) = store.get(id) else { continue };
        let tp = (config.topics.telemetry.clone(), w.partition);
        if !assigned.contains(&tp) {
            continue;
        }
        let next = positions.get(&tp).copied().unwrap_or(0);
        let body = checkpoint::encode(store.features(), w, next);
        let record = FutureRecord::<[u8], [u8]>::to(&config.topics.checkpoint)
            .key(id.as_bytes())
            .payload(&body);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => {
                tracing::warn!(error = %e, "checkpoint not queued; commit postponed");
                return false;
            }
        }
    }
    for f in futures::future::join_all(pending).await {
        if !matches!(f, Ok(Ok(_))) {
            tracing::warn!("checkpoint not delivered; commit postponed");
            return false;
        }
    }
    dirty.clear();
    true
}

async fn ensure_checkpoint_topic(config: &Config) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        maintcast_common::kafka::client_config(&config.brokers).create()?;
    let topic = NewTopic::new(&config.topics.checkpoint, 6, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the checkpoint topic")?;
    for r in results {
        if let Err((t, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("creating checkpoint topic {t}: {code}");
        }
    }
    Ok(())
}

fn commit(
    consumer: &BaseConsumer<IngestContext>,
    positions: &HashMap<(String, i32), i64>,
    assigned: &HashSet<(String, i32)>,
    committed: &mut HashMap<(String, i32), i64>,
) {
    let tpl = uncommitted(positions, committed, |tp| assigned.contains(tp));
    if tpl.count() == 0 {
        return;
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
            tracing::debug!(partitions = tpl.count(), "offsets committed");
        }
        Err(e) => tracing::warn!(error = %e, "offset commit failed; retrying at the next barrier"),
    }
}

/// The consumed positions of the partitions `include` picks that are not committed yet.
fn uncommitted(
    positions: &HashMap<Partition, i64>,
    committed: &HashMap<Partition, i64>,
    include: impl Fn(&Partition) -> bool,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, &offset) in positions {
        if include(tp) && committed.get(tp) != Some(&offset) {
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
        }
    }
    tpl
}

fn consumer_lag(
    consumer: &BaseConsumer<IngestContext>,
    positions: &HashMap<(String, i32), i64>,
    assigned: &HashSet<(String, i32)>,
) -> i64 {
    assigned
        .iter()
        .filter_map(|tp| {
            let (_, high) = consumer
                .fetch_watermarks(&tp.0, tp.1, Duration::from_millis(200))
                .ok()?;
            Some((high - positions.get(tp).copied().unwrap_or(0)).max(0))
        })
        .sum()
}

/// Sends the original bytes to the DLQ with `error` and `source-offset` headers. Returns the
/// number of acknowledgements to wait for.
fn send_dlq(
    config: &Config,
    producer: &FutureProducer,
    msg: &OwnedMessage,
    error: &str,
    done: &mpsc::UnboundedSender<Done>,
) -> usize {
    let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
    tracing::debug!(%source, %error, "rejected message");
    let offset = msg.offset().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: "error",
            value: Some(error),
        })
        .insert(Header {
            key: "source-offset",
            value: Some(&offset),
        })
        .insert(Header {
            key: "source-topic",
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: "source-partition",
            value: Some(&msg.partition().to_string()),
        });
    if let Some(ct) = header(msg, maintcast_proto::CONTENT_TYPE_HEADER) {
        headers = headers.insert(Header {
            key: maintcast_proto::CONTENT_TYPE_HEADER,
            value: Some(&ct),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(&config.topics.dlq).headers(headers);
    if let Some(p) = msg.payload() {
        record = record.payload(p);
    }
    if let Some(k) = msg.key() {
        record = record.key(k);
    }
    deliver(producer, record, done)
}

fn deliver(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
    done: &mpsc::UnboundedSender<Done>,
) -> usize {
    let done = done.clone();
    match producer.send_result(record) {
        Ok(fut) => {
            tokio::spawn(async move {
                match fut.await {
                    Ok(Err((e, _))) => tracing::error!(error = %e, "Kafka delivery failed"),
                    Err(_) => tracing::error!("Kafka producer dropped a delivery"),
                    Ok(Ok(_)) => {}
                }
                let _ = done.send(Done::Delivered);
            });
        }
        Err((e, _)) => {
            tracing::error!(error = %e, "Kafka producer queue refused a record");
            let _ = done.send(Done::Delivered);
        }
    }
    1
}

fn send_alert(
    config: &Config,
    producer: &FutureProducer,
    store: &mut WindowStore,
    f: &Forecast,
    done: &mpsc::UnboundedSender<Done>,
    metrics: &Metrics,
) -> usize {
    let Some(w) = store.get_mut(&f.machine_id) else {
        return 0;
    };
    let Some(state) = config.alert.evaluate(w.alert_due, f.days_to_maintenance) else {
        return 0;
    };
    w.alert_due = state == maintcast_proto::AlertState::Due;
    let alert = Alert {
        machine_id: f.machine_id.clone(),
        ts_ms: f.ts_ms,
        state,
        days_to_maintenance: f.days_to_maintenance,
        threshold_days: config.alert.threshold_days,
        due_at: f.due_at,
        model: f.model.clone(),
        model_version: f.model_version.clone(),
        machine_type: f.machine_type.clone(),
        site: f.site.clone(),
    };
    let body = serde_json::to_vec(&alert).expect("alert serialises");
    metrics.alerts_sent.inc();
    let headers = OwnedHeaders::new().insert(Header {
        key: maintcast_proto::CONTENT_TYPE_HEADER,
        value: Some(maintcast_proto::CONTENT_TYPE_JSON),
    });
    let record = FutureRecord::<[u8], [u8]>::to(&config.topics.alerts)
        .key(f.machine_id.as_bytes())
        .payload(&body)
        .headers(headers);
    deliver(producer, record, done)
}

fn raw_point(t: &maintcast_proto::Telemetry) -> anyhow::Result<DataPoint> {
    let mut b = DataPoint::builder("telemetry").tag("machine_id", &t.machine_id);
    if let Some(mt) = &t.machine_type {
        b = b.tag("machine_type", mt);
    }
    if let Some(site) = &t.site {
        b = b.tag("site", site);
    }
    for (name, v) in &t.sensors {
        if v.is_finite() {
            b = b.field(name.clone(), *v);
        }
    }
    Ok(b.timestamp(t.ts_ms).build()?)
}

fn forecast_point(f: &Forecast) -> anyhow::Result<DataPoint> {
    let mut b = DataPoint::builder("maintenance_forecast")
        .tag("machine_id", &f.machine_id)
        .tag("model", &f.model)
        .tag("model_version", &f.model_version);
    if let Some(mt) = &f.machine_type {
        b = b.tag("machine_type", mt);
    }
    if let Some(site) = &f.site {
        b = b.tag("site", site);
    }
    Ok(b.field("days_to_maintenance", f.days_to_maintenance)
        .field("due_at", f.due_at)
        .field("days_p10", f.days_p10)
        .field("days_p90", f.days_p90)
        .field("window_rows", f.window_rows as i64)
        .timestamp(f.ts_ms)
        .build()?)
}

async fn inference_task(
    mut model: Arc<dyn Model>,
    config: Config,
    device: candle_core::Device,
    mut rx: mpsc::Receiver<ForecastRequest>,
    tx: mpsc::Sender<WriteItem>,
    metrics: Metrics,
) -> anyhow::Result<()> {
    // Windows hold rows in the feature order of the model the service started with; a model
    // reloaded since may list the same features in another order.
    let window_features = model.features().to_vec();
    // Where the serving model's features sit in a window row; None while they are in order.
    let mut columns: Option<Arc<[usize]>> = None;
    let mut batcher = Batcher::new(config.batch_size, config.linger);
    let mut last_check = Instant::now();
    let mut refused: Option<PathBuf> = None;
    let mut serving_dir =
        maintcast_models::registry::current_version_dir(&config.registry, &config.model).ok();
    loop {
        let batch = match batcher.deadline() {
            None => match rx.recv().await {
                Some(r) => batcher.push(r, Instant::now()),
                None => break,
            },
            Some(deadline) => {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => batcher.push(r, Instant::now()),
                        None => Some(batcher.take()),
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => batcher.poll(Instant::now()),
                }
            }
        };
        let Some(batch) = batch else { continue };
        if batch.is_empty() {
            break;
        }
        // Between batches: the only place the model may change, so a batch is all one version.
        if last_check.elapsed() >= config.reload_interval {
            last_check = Instant::now();
            if let Some(m) = reload(
                &config,
                &device,
                &model,
                &mut serving_dir,
                &mut refused,
                &metrics,
            )
            .await
            {
                columns = match Columns::between(&window_features, m.features()) {
                    Columns::Reordered(map) => Some(map.into()),
                    Columns::Same | Columns::Incompatible => None,
                };
                model = m;
            }
        }
        let n = batch.len();
        let m = model.clone();
        metrics.batch_size.observe(n as f64);
        let started = Instant::now();
        let columns = columns.clone();
        let (batch, predictions) = tokio::task::spawn_blocking(move || {
            let (w, nf) = (m.window(), m.features().len());
            let mut scaled = vec![0.0f32; n * w * nf];
            let mut reordered = vec![0.0f32; nf];
            for (i, r) in batch.iter().enumerate() {
                for row in 0..w {
                    let at = (i * w + row) * nf;
                    let mut raw = &r.raw[row * nf..(row + 1) * nf];
                    if let Some(map) = &columns {
                        for (dst, &j) in reordered.iter_mut().zip(map.iter()) {
                            *dst = raw[j];
                        }
                        raw = &reordered;
                    }
                    m.scale_row(raw, &mut scaled[at..at + nf]);
                }
            }
            let p = m.predict(&scaled, n);
            (batch, p)
        })
        .await?;
        metrics
            .inference_seconds
            .observe(started.elapsed().as_secs_f64());
        let predictions = predictions.context("inference failed")?;
        for (r, p) in batch.into_iter().zip(predictions) {
            let days = p.days as f64;
            let f = Forecast {
                machine_id: r.machine_id,
                ts_ms: r.ts_ms,
                model: model.name().to_string(),
                model_version: model.version().to_string(),
                days_to_maintenance: days,
                due_at: r.ts_ms.div_euclid(1000) + (days * 86_400.0).round() as i64,
                days_p10: p.p10 as f64,
                days_p90: p.p90 as f64,
                window_rows: r.window_rows as u32,
                machine_type: r.machine_type,
                site: r.site,
            };
            tx.send(WriteItem::Forecast(f))
                .await
                .map_err(|_| anyhow::anyhow!("writer stopped"))?;
        }
    }
    Ok(())
}

/// Loads CURRENT if it moved. A model that fails to load, or whose features (in any order) or
/// window differ from the serving one (the windows are shaped for it), is refused once and the
/// old one stays.
async fn reload(
    config: &Config,
    device: &candle_core::Device,
    current: &Arc<dyn Model>,
    serving_dir: &mut Option<PathBuf>,
    refused: &mut Option<PathBuf>,
    metrics: &Metrics,
) -> Option<Arc<dyn Model>> {
    let dir =
        maintcast_models::registry::current_version_dir(&config.registry, &config.model).ok()?;
    if Some(&dir) == serving_dir.as_ref() || Some(&dir) == refused.as_ref() {
        return None;
    }
    let (d, dev) = (dir.clone(), device.clone());
    let loaded = tokio::task::spawn_blocking(move || ServingModel::load(&d, &dev))
        .await
        .ok()?;
    let result = loaded.and_then(|m| {
        anyhow::ensure!(
            Columns::between(current.features(), m.features()) != Columns::Incompatible
                && m.window() == current.window(),
            "its features {:?} or window {} differ from the serving model's ({:?}, {}); \
             restart ingest to adopt it",
            m.features(),
            m.window(),
            current.features(),
            current.window()
        );
        Ok(m)
    });
    match result {
        Ok(m) => {
            tracing::info!(from = current.version(), to = m.version(), "model reloaded");
            metrics
                .model_reloads
                .get_or_create(&vec![("result".into(), "ok".into())])
                .inc();
            *serving_dir = Some(dir);
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = format!("{e:#}"), "refusing new model; the old one keeps serving");
            metrics
                .model_reloads
                .get_or_create(&vec![("result".into(), "refused".into())])
                .inc();
            *refused = Some(dir);
            None
        }
    }
}

async fn writer_task(
    mut writer: Writer,
    mut rx: mpsc::Receiver<WriteItem>,
    done: mpsc::UnboundedSender<Done>,
    metrics: Metrics,
    max: usize,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut items = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        items.push(first);
        // Whatever queued up while the last write ran goes in this one: natural batching,
        // with no timer adding latency when the stream is slow.
        while items.len() < max {
            match rx.try_recv() {
                Ok(i) => items.push(i),
                Err(_) => break,
            }
        }
        let mut points = Vec::with_capacity(items.len());
        let mut forecasts = Vec::new();
        for item in items.drain(..) {
            match item {
                WriteItem::Forecast(f) => {
                    points.push(forecast_point(&f)?);
                    forecasts.push(f);
                }
                WriteItem::Raw(p) => points.push(p),
            }
        }
        let started = Instant::now();
        let retries = metrics.write_retries.clone();
        match writer
            .write(&points, &shutdown, 20, |_| {
                retries.inc();
            })
            .await
        {
            Ok(()) => {}
            Err(WriteError::Rejected(e)) => {
                // The points themselves are bad; retrying cannot help and must not stall the stream.
                tracing::error!(error = %e, points = points.len(), "InfluxDB rejected a batch");
            }
            Err(e @ WriteError::Shutdown(_)) => return Err(e.into()),
        }
        metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.forecasts_written.inc_by(forecasts.len() as u64);
        let _ = done.send(Done::Written {
            items: points.len(),
            forecasts,
        });
    }
    Ok(())
}
