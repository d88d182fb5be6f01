//! The running service, wired: source (Kafka) -> decode -> pipeline (windows) -> infer -> sink
//! (InfluxDB) and publish (DLQ, alerts) -> offsets (commit at barriers).
//!
//! Every `commit_interval` consumption stops until every record derived from what was consumed is
//! acknowledged (see `offsets`), the changed windows are checkpointed, and the consumed positions
//! are committed. A revoke drains the same way before the partitions move.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use maintcast_common::influx::Writer;
use maintcast_common::points::Point;
use maintcast_common::shutdown::Shutdown;
use maintcast_proto::{Alert, AlertState, Decoder, Forecast};
use prometheus_client::registry::Registry;
use rdkafka::TopicPartitionList;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;

use crate::checkpoint;
use crate::config::Config;
use crate::infer::Inference;
use crate::metrics::{Health, Metrics, labels};
use crate::model::Model;
use crate::offsets::{Ack, Ledger};
use crate::pipeline::{ForecastRequest, Pipeline};
use crate::publish::{OutRecord, Publisher};
use crate::serving::{ServingModel, parse_device};
use crate::sink::{Origin, Sink, WriteItem};
use crate::source::{self, KafkaConsumer, Partition, Polled, Source};
use crate::window::{RowOutcome, WindowStore};

/// Distinct sensor names given their own label on `unknown_sensors`; the rest share "other", so
/// a producer sending random names cannot blow up the metric's cardinality.
const MAX_UNKNOWN_SENSOR_LABELS: usize = 200;

/// Runs the service until `shutdown` fires, then drains, commits and returns.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
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
    let health = Health::new();
    health.model_loaded.store(true, Ordering::Relaxed);
    let (addr, http) = maintcast_common::http::serve(
        config.http_addr,
        Arc::new(registry),
        health.ready.clone(),
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
    checkpoint::ensure_topic(&config).await?;
    {
        let c = config.clone();
        tokio::task::spawn_blocking(move || source::check_partitions(&c)).await??;
    }
    let (source, polled_rx) = Source::start(&config)?;

    let (req_tx, req_rx) = mpsc::channel::<ForecastRequest>(config.queue_capacity);
    let (write_tx, write_rx) = mpsc::channel::<WriteItem>(config.queue_capacity);
    // Unbounded: acknowledgements must never block the writer, or a full request queue could
    // deadlock the loop that drains this channel. Its size is bounded by what is in flight.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Ack>();
    let publisher = Publisher::new(
        producer.clone(),
        ack_tx.clone(),
        metrics.clone(),
        shutdown.clone(),
    );

    let inference = tokio::spawn(
        Inference {
            model: model.clone(),
            config: config.clone(),
            device,
            metrics: metrics.clone(),
            acks: ack_tx.clone(),
        }
        .run(req_rx, write_tx.clone()),
    );
    let writer = tokio::spawn(
        Sink {
            writer: Writer::new(&config.influx)?,
            publisher: publisher.clone(),
            dlq_topic: config.topics.dlq.clone(),
            acks: ack_tx.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            max_batch: config.write_batch,
            shutdown: shutdown.clone(),
        }
        .run(write_rx),
    );

    let store = WindowStore::new(
        model.features().to_vec(),
        model.window(),
        model.neutral_raw(),
    );
    let mut service = Loop {
        pipeline: Pipeline::new(store, model.min_rows(), config.stride),
        decoder: Decoder::new(config.limits.clone()),
        ledger: Ledger::default(),
        alerts_pending: HashMap::new(),
        unknown_labels: HashSet::new(),
        key_warned: HashSet::new(),
        config,
        consumer: source.consumer.clone(),
        producer,
        publisher,
        req_tx,
        write_tx,
        metrics,
        health,
        shutdown: shutdown.clone(),
    };
    let result = service.run(polled_rx, ack_rx).await;
    let Loop {
        req_tx, write_tx, ..
    } = service;
    // The loop is gone: a revoke during the consumer's close finds no one to drain and returns.
    source.close().await;
    result?;
    drop(req_tx);
    drop(write_tx);
    inference.await??;
    writer.await??;
    shutdown.trigger();
    let _ = http.await;
    tracing::info!("ingest stopped");
    Ok(())
}

/// The state the service loop owns.
struct Loop {
    config: Config,
    pipeline: Pipeline,
    decoder: Decoder,
    ledger: Ledger,
    /// Alert states sent but not yet delivered, by machine (the window's state changes on delivery).
    alerts_pending: HashMap<String, bool>,
    unknown_labels: HashSet<String>,
    key_warned: HashSet<String>,
    consumer: Arc<KafkaConsumer>,
    producer: FutureProducer,
    publisher: Publisher,
    req_tx: mpsc::Sender<ForecastRequest>,
    write_tx: mpsc::Sender<WriteItem>,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
}

/// A revoke waiting for the drain: its partitions and where to send the offsets to commit.
type Revoking = (
    Vec<Partition>,
    std::sync::mpsc::SyncSender<TopicPartitionList>,
);

impl Loop {
    async fn run(
        &mut self,
        mut polled_rx: mpsc::Receiver<Polled>,
        mut ack_rx: mpsc::UnboundedReceiver<Ack>,
    ) -> anyhow::Result<()> {
        let mut draining = false;
        let mut revoking: Option<Revoking> = None;
        let mut stopping = false;
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let mut commit_tick = tokio::time::interval(self.config.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health_tick = tokio::time::interval(Duration::from_millis(500));
        let lag_running = Arc::new(AtomicBool::new(false));
        loop {
            tokio::select! {
                biased;
                Some(ack) = ack_rx.recv() => self.on_ack(ack),
                _ = self.shutdown.wait(), if !stopping => {
                    tracing::info!(in_flight = self.ledger.in_flight(), "draining before exit");
                    stopping = true;
                    draining = true;
                    stop_deadline = Some(tokio::time::Instant::now() + self.config.drain_timeout);
                }
                _ = commit_tick.tick(), if !draining => draining = true,
                _ = health_tick.tick() => {
                    self.health.refresh(&self.metrics);
                }
                _ = lag_tick.tick() => {
                    self.metrics.machines.set(self.pipeline.store().len() as i64);
                    self.poll_lag(&lag_running);
                }
                polled = polled_rx.recv(), if !draining => match polled {
                    None => anyhow::bail!("the Kafka poll thread stopped"),
                    Some(Polled::Message(m)) => self.on_message(m).await?,
                    Some(Polled::Error(e)) => tracing::warn!(error = %e, "Kafka consume error"),
                    Some(Polled::Revoke { partitions, reply }) => {
                        tracing::info!(?partitions, in_flight = self.ledger.in_flight(), "partitions revoked: draining before the handover");
                        revoking = Some((partitions, reply));
                        draining = true;
                    }
                    Some(Polled::Assign(newly)) => self.assign(newly).await?,
                },
                _ = tokio::time::sleep(Duration::from_millis(20)), if draining => {}
            }

            if draining && self.ledger.in_flight() == 0 {
                self.barrier(revoking.take()).await;
                draining = false;
                if stopping {
                    return Ok(());
                }
            }
            if let Some(deadline) = stop_deadline
                && tokio::time::Instant::now() > deadline
            {
                anyhow::bail!(
                    "{} writes still unacknowledged after the drain timeout; offsets not committed past them",
                    self.ledger.in_flight()
                );
            }
        }
    }

    /// Lag comes from blocking watermark queries: they run off the runtime, one at a time, and
    /// tell readiness whether the broker answers.
    fn poll_lag(&self, running: &Arc<AtomicBool>) {
        if running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (consumer, positions) = (self.consumer.clone(), self.ledger.positions().clone());
        let (metrics, health, running) =
            (self.metrics.clone(), self.health.clone(), running.clone());
        tokio::task::spawn_blocking(move || {
            match source::consumer_lag(&consumer, &positions) {
                Some(lag) => {
                    metrics.consumer_lag.set(lag);
                    health.consuming.store(true, Ordering::Relaxed);
                }
                None => health.consuming.store(false, Ordering::Relaxed),
            }
            running.store(false, Ordering::Release);
        });
    }

    fn on_ack(&mut self, ack: Ack) {
        match ack {
            Ack::Written { items, forecasts } => {
                self.ledger.acknowledged(items);
                for f in forecasts {
                    self.maybe_alert(&f);
                }
            }
            Ack::Delivered => self.ledger.acknowledged(1),
            Ack::Dropped(n) => self.ledger.acknowledged(n),
            Ack::AlertDelivered { machine_id, due } => {
                self.ledger.acknowledged(1);
                self.metrics.alerts_sent.inc();
                // Only the newest state sent may settle the window's; an older delivery that
                // completes late must not overwrite it.
                if self.alerts_pending.get(&machine_id) == Some(&due) {
                    self.alerts_pending.remove(&machine_id);
                    if let Some(w) = self.pipeline.store_mut().get_mut(&machine_id) {
                        w.alert_due = due;
                    }
                }
            }
        }
    }

    fn maybe_alert(&mut self, f: &Forecast) {
        let Some(w) = self.pipeline.store().get(&f.machine_id) else {
            return;
        };
        let current = self
            .alerts_pending
            .get(&f.machine_id)
            .copied()
            .unwrap_or(w.alert_due);
        let Some(state) = self.config.alert.evaluate(current, f.days_to_maintenance) else {
            return;
        };
        let due = state == AlertState::Due;
        self.alerts_pending.insert(f.machine_id.clone(), due);
        let alert = Alert {
            machine_id: f.machine_id.clone(),
            ts_ms: f.ts_ms,
            state,
            days_to_maintenance: f.days_to_maintenance,
            threshold_days: self.config.alert.threshold_days,
            due_at: f.due_at,
            model: f.model.clone(),
            model_version: f.model_version.clone(),
            machine_type: f.machine_type.clone(),
            site: f.site.clone(),
        };
        let record = OutRecord::alert(&self.config.topics.alerts, &alert);
        let ack = Ack::AlertDelivered {
            machine_id: f.machine_id.clone(),
            due,
        };
        let n = self.publisher.send(record, "alert", ack);
        self.ledger.expect(n);
    }

    fn dead_letter(&mut self, msg: &OwnedMessage, error: &str, reason: &str) {
        tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), %error, "rejected message");
        let record = OutRecord::dead_letter(&self.config.topics.dlq, msg, error);
        let n = self.publisher.send(record, "dlq", Ack::Delivered);
        self.ledger.expect(n);
        self.metrics
            .rejected
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    async fn on_message(&mut self, msg: OwnedMessage) -> anyhow::Result<()> {
        let key = (msg.topic().to_string(), msg.partition());
        if !self.ledger.owns(&key) {
            return Ok(());
        }
        self.metrics
            .consumed
            .get_or_create(&labels(&[("topic", &key.0)]))
            .inc();
        if key.0 == self.config.topics.telemetry {
            self.on_telemetry(&msg).await?;
        } else {
            self.on_event(&msg).await?;
        }
        self.ledger.consumed(key, msg.offset());
        Ok(())
    }

    async fn on_telemetry(&mut self, msg: &OwnedMessage) -> anyhow::Result<()> {
        let content_type = source::header(msg, maintcast_proto::CONTENT_TYPE_HEADER);
        let t = match self
            .decoder
            .decode_telemetry(msg.payload().unwrap_or(&[]), content_type.as_deref())
        {
            Ok(t) => t,
            Err(e) => {
                self.dead_letter(msg, &e.to_string(), e.reason());
                return Ok(());
            }
        };
        self.metrics.decoded.inc();
        self.check_key(msg, &t.machine_id);
        let step = self
            .pipeline
            .on_telemetry(&t, msg.partition(), msg.offset());
        for sensor in &step.new_unknown_sensors {
            tracing::warn!(
                machine_id = t.machine_id,
                sensor,
                "telemetry names a sensor the serving model does not use; its values are ignored \
                 (sensor names must match the model's features exactly)"
            );
        }
        let unknown: Vec<String> = self.pipeline.unknown_in(&t).map(str::to_string).collect();
        for sensor in unknown {
            let label = if self.unknown_labels.contains(&sensor)
                || self.unknown_labels.len() < MAX_UNKNOWN_SENSOR_LABELS
            {
                self.unknown_labels.insert(sensor.clone());
                sensor
            } else {
                "other".to_string()
            };
            self.metrics
                .unknown_sensors
                .get_or_create(&labels(&[("sensor", &label)]))
                .inc();
        }
        match step.outcome {
            RowOutcome::Applied { filled } => self.metrics.filled_values.inc_by(filled as u64),
            RowOutcome::Duplicate => self.metrics.duplicates.inc(),
            RowOutcome::Late => self.metrics.late.inc(),
        };
        if step.history && self.config.write_raw {
            // The row still updates the window even when its history entry is impossible.
            let point = Point::telemetry(&t).map(|p| p.data_point());
            self.write_history(msg, &t.machine_id, point).await?;
        }
        if let Some(req) = step.forecast {
            self.ledger.expect(1);
            // Blocks when inference is behind: consumption pauses.
            self.req_tx
                .send(req)
                .await
                .map_err(|_| anyhow::anyhow!("inference stopped"))?;
        }
        Ok(())
    }

    async fn on_event(&mut self, msg: &OwnedMessage) -> anyhow::Result<()> {
        let content_type = source::header(msg, maintcast_proto::CONTENT_TYPE_HEADER);
        let ev = match self
            .decoder
            .decode_maintenance_event(msg.payload().unwrap_or(&[]), content_type.as_deref())
        {
            Ok(ev) => ev,
            Err(e) => {
                self.dead_letter(msg, &e.to_string(), e.reason());
                return Ok(());
            }
        };
        self.check_key(msg, &ev.machine_id);
        self.pipeline.on_event(&ev, msg.partition());
        // Every event is history, also a stale one: the trainer decides what it means.
        if self.config.write_raw {
            let point = Point::maintenance_event(&ev).map(|p| p.data_point());
            self.write_history(msg, &ev.machine_id, point).await?;
        }
        Ok(())
    }

    /// Queues a raw history point, or dead-letters its message when no point can be built.
    async fn write_history(
        &mut self,
        msg: &OwnedMessage,
        machine_id: &str,
        point: Result<influxdb2::models::DataPoint, maintcast_common::points::PointError>,
    ) -> anyhow::Result<()> {
        let point = match point {
            Ok(p) => p,
            Err(e) => {
                self.dead_letter(msg, &format!("{e:#}"), "history");
                return Ok(());
            }
        };
        let origin = Origin {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            machine_id: machine_id.to_string(),
        };
        self.ledger.expect(1);
        self.write_tx
            .send(WriteItem::Raw { point, origin })
            .await
            .map_err(|_| anyhow::anyhow!("writer stopped"))
    }

    /// Events reset windows only if they share their machine's telemetry partition, which the
    /// key decides: a key that is not the machine_id is counted and warned about once.
    fn check_key(&mut self, msg: &OwnedMessage, machine_id: &str) {
        match msg.key() {
            Some(k) if k != machine_id.as_bytes() => {
                self.metrics.key_mismatches.inc();
                if self.key_warned.len() < 10_000 && self.key_warned.insert(machine_id.to_string())
                {
                    tracing::warn!(
                        machine_id,
                        topic = msg.topic(),
                        key = %String::from_utf8_lossy(k),
                        "message key is not its machine_id: its maintenance events may land in \
                         another partition and never reset its window"
                    );
                }
            }
            _ => {}
        }
    }

    /// Everything consumed is acknowledged: checkpoint, then commit (or answer a revoke).
    async fn barrier(&mut self, revoking: Option<Revoking>) {
        // Checkpoints first: a committed offset must never be ahead of the windows.
        let checkpointed = checkpoint::write_dirty(
            &self.config,
            &self.producer,
            &mut self.pipeline,
            &self.ledger,
        )
        .await;
        match revoking {
            Some((partitions, reply)) => {
                let offsets = if checkpointed {
                    self.ledger.uncommitted(|tp| partitions.contains(tp))
                } else {
                    TopicPartitionList::new()
                };
                // The poll thread commits these before the partitions go.
                let _ = reply.send(offsets);
                self.revoke(partitions);
            }
            None if checkpointed => self.ledger.commit(&self.consumer),
            None => {}
        }
    }

    /// Forgets revoked partitions: their windows belong to their next owner, which restores them
    /// from the checkpoints just written.
    fn revoke(&mut self, revoked: Vec<Partition>) {
        let mut gone = HashSet::new();
        for tp in revoked {
            tracing::info!(topic = tp.0, partition = tp.1, "partition revoked");
            if tp.0 == self.config.topics.telemetry {
                gone.insert(tp.1);
            }
            self.ledger.revoke(&tp);
        }
        self.pipeline.drop_partitions(&gone);
    }

    /// Takes on newly assigned partitions with their windows from the checkpoint topic, which
    /// match the committed offset consumption starts from.
    async fn assign(&mut self, newly: Vec<Partition>) -> anyhow::Result<()> {
        let mut fresh = HashSet::new();
        for tp in newly {
            tracing::info!(topic = tp.0, partition = tp.1, "partition assigned");
            if tp.0 == self.config.topics.telemetry {
                fresh.insert(tp.1);
            }
            self.ledger.assign(tp);
        }
        // Windows still held for these partitions (a revoke that timed out) may be ahead of the
        // committed offset; the checkpoint is not.
        self.pipeline.drop_partitions(&fresh);
        if fresh.is_empty() {
            return Ok(());
        }
        checkpoint::restore(&self.config, &fresh, &mut self.pipeline, &self.shutdown).await
    }
}
