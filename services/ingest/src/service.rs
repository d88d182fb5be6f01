//! The running service, wired: source (Kafka) -> decode -> pipeline (windows) -> infer -> sink
//! (InfluxDB) and publish (DLQ, alerts) -> offsets (committed by epoch).
//!
//! Every `commit_interval` the current epoch is sealed (see `offsets`): its consumed positions and
//! changed windows are noted, and consumption goes on. Once every record derived from the sealed
//! epoch is acknowledged, the windows are checkpointed and the positions committed. A revoke or a
//! shutdown stops consumption and waits until everything consumed is settled the same way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use maintcast_common::influx::Writer;
use maintcast_common::shutdown::Shutdown;
use maintcast_proto::Decoder;
use prometheus_client::registry::Registry;
use rdkafka::producer::FutureProducer;
use tokio::sync::{Notify, mpsc};

use crate::accuracy::{self, ScoreJob, Scorer};
use crate::checkpoint;
use crate::config::Config;
use crate::infer::Inference;
use crate::metrics::{Health, Metrics};
use crate::model::Model;
use crate::offsets::{Ack, Ledger};
use crate::pipeline::{ForecastRequest, Pipeline};
use crate::publish::Publisher;
use crate::serving::{ServingModel, parse_device};
use crate::sink::{Sink, WriteItem};
use crate::source::{self, KafkaConsumer, Polled, Source};
use crate::window::WindowStore;

mod commits;
mod messages;

use commits::{Revoking, Sealed};

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

    let (score_tx, score_rx) = mpsc::unbounded_channel::<ScoreJob>();
    let scorer = tokio::spawn(accuracy::run(
        score_rx,
        Scorer::new(
            &config.influx,
            config.registry.clone(),
            config.model.clone(),
            metrics.accuracy.clone(),
        )?,
        ack_tx.clone(),
        shutdown.clone(),
    ));
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
        score_tx,
        score_jobs: Vec::new(),
        sealed: None,
        checkpoints_done: Arc::new(Notify::new()),
        metrics,
        health,
        shutdown: shutdown.clone(),
    };
    let result = service.run(polled_rx, ack_rx).await;
    let Loop {
        req_tx,
        write_tx,
        score_tx,
        ..
    } = service;
    // The loop is gone: a revoke during the consumer's close finds no one to drain and returns.
    source.close().await;
    result?;
    drop(req_tx);
    drop(write_tx);
    drop(score_tx);
    inference.await??;
    writer.await??;
    scorer.await?;
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
    score_tx: mpsc::UnboundedSender<ScoreJob>,
    /// Maintenance events applied in the current epoch, scored once it settles.
    score_jobs: Vec<ScoreJob>,
    /// The epoch waiting to settle; at most one, so a slow sink delays commits, not consumption
    /// (which the bounded queues to inference and InfluxDB pace).
    sealed: Option<Sealed>,
    /// Wakes the loop when the sealed epoch's checkpoints are delivered (or given up on).
    checkpoints_done: Arc<Notify>,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
}

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
        let checkpoints_done = self.checkpoints_done.clone();
        loop {
            tokio::select! {
                biased;
                Some(ack) = ack_rx.recv() => self.on_ack(ack),
                _ = checkpoints_done.notified() => {}
                _ = self.shutdown.wait(), if !stopping => {
                    tracing::info!(in_flight = self.ledger.in_flight(), "draining before exit");
                    stopping = true;
                    draining = true;
                    stop_deadline = Some(tokio::time::Instant::now() + self.config.drain_timeout);
                }
                // A tick while the last sealed epoch is still settling is skipped: its commit
                // covers what came before, and the next tick seals the rest.
                _ = commit_tick.tick(), if !draining => {
                    if self.sealed.is_none() {
                        self.seal(None);
                    }
                }
                _ = health_tick.tick() => {
                    self.health.refresh(&self.metrics);
                }
                _ = lag_tick.tick() => {
                    self.metrics.machines.set(self.pipeline.store().len() as i64);
                    self.poll_lag(&lag_running);
                }
                polled = polled_rx.recv(), if !draining => match polled {
                    None => anyhow::bail!("the Kafka poll thread stopped"),
                    Some(Polled::Messages(batch)) => self.on_messages(batch).await?,
                    Some(Polled::Error(e)) => tracing::warn!(error = %e, "Kafka consume error"),
                    Some(Polled::Revoke { partitions, reply }) => {
                        tracing::info!(?partitions, in_flight = self.ledger.in_flight(), "partitions revoked: draining before the handover");
                        revoking = Some((partitions, reply));
                        draining = true;
                    }
                    Some(Polled::Assign(newly)) => self.assign(newly).await?,
                    Some(Polled::Committed(answer)) => self.ledger.answered(answer),
                },
                _ = tokio::time::sleep(Duration::from_millis(20)), if draining => {}
            }

            // A drain seals what was consumed since the last epoch once that one is committed.
            if draining && self.sealed.is_none() {
                self.seal(Some(revoking.take()));
            }
            if self.settle().await == Some(true) {
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
                // Alerts are expected before the batch is acknowledged, so its epoch cannot
                // settle between the two.
                if let Some(&(oldest, _)) = items.first() {
                    for f in forecasts {
                        self.maybe_alert(&f, oldest);
                    }
                }
                for (epoch, n) in items {
                    self.ledger.acknowledged(epoch, n);
                }
            }
            Ack::Delivered(epoch) | Ack::Dropped(epoch) | Ack::Scored(epoch) => {
                self.ledger.acknowledged(epoch, 1)
            }
            Ack::AlertDelivered {
                machine_id,
                due,
                epoch,
            } => {
                self.ledger.acknowledged(epoch, 1);
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
}
