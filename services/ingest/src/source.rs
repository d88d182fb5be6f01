//! Kafka in: the consumer, polled on a thread of its own, hands messages, rebalances and the
//! broker's answers to offset commits to the service loop in the order it produced them.
//!
//! Messages go over in batches of what the consumer had ready: one hand-over (and one wake-up of
//! the loop) per message cost more than decoding it at high rates. A rebalance or an error first
//! flushes the batch before it, so the order holds.
//!
//! When the group takes partitions away, the poll thread holds the rebalance until the loop has
//! drained, checkpointed the windows and named the offsets to commit, and commits them before the
//! partitions go: the next owner starts exactly where this one stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::Config;

pub type Partition = (String, i32);

/// What the poll thread hands the service loop, in the order the consumer produced it.
pub enum Polled {
    /// Consecutive messages, in the order the consumer returned them.
    Messages(Vec<OwnedMessage>),
    Error(KafkaError),
    /// The group takes these partitions away. The loop drains, checkpoints and answers with the
    /// offsets to commit; the poll thread commits them before the rebalance goes on.
    Revoke {
        partitions: Vec<Partition>,
        reply: std::sync::mpsc::SyncSender<TopicPartitionList>,
    },
    Assign(Vec<Partition>),
    /// The broker's answer to an offset commit: the offsets it took (per partition, each with
    /// its own error), or the error for all of them.
    Committed(Result<TopicPartitionList, KafkaError>),
}

pub struct IngestContext {
    tx: mpsc::Sender<Polled>,
    /// Messages polled but not yet handed over. Only the poll thread touches it (rebalance
    /// callbacks run inside its `poll`), so the lock is never contended.
    pending: Mutex<Vec<OwnedMessage>>,
    /// How long a revoke waits for the loop's drain before the rebalance goes on without it (the
    /// last commit then stands, and the next owner re-forecasts from there).
    revoke_timeout: Duration,
}

pub fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl IngestContext {
    /// Hands `item` to the loop after the messages polled before it; false when the loop is
    /// gone.
    fn hand_over(&self, item: Polled) -> bool {
        self.flush() && self.send(item)
    }

    /// Hands the pending messages to the loop; false when the loop is gone.
    fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.pending.lock().expect("pending messages"));
        batch.is_empty() || self.send(Polled::Messages(batch))
    }

    /// Dropping the consumer on an async runtime thread must not block it, so there the item is
    /// only offered.
    fn send(&self, item: Polled) -> bool {
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
                    tracing::warn!(error = %e, "commit on revoke failed; the last committed offsets stand")
                }
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                timeout = ?self.revoke_timeout,
                "revoked partitions not drained in time; the last committed offsets stand"
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        self.hand_over(Polled::Committed(result.map(|()| offsets.clone())));
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

pub type KafkaConsumer = BaseConsumer<IngestContext>;

/// The subscribed consumer and the thread that polls it.
pub struct Source {
    pub consumer: Arc<KafkaConsumer>,
    poll_thread: PollThread,
}

impl Source {
    /// Subscribes to telemetry and events; returns the source and the channel the loop reads.
    pub fn start(config: &Config) -> anyhow::Result<(Source, mpsc::Receiver<Polled>)> {
        let (tx, rx) = mpsc::channel::<Polled>(CHANNEL_BATCHES);
        let consumer: KafkaConsumer = consumer_config(&config.brokers, std::env::vars())
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range keeps partition p of `telemetry` and of `maintenance-events` on one instance,
            // so a machine's rows and its events meet in one window.
            .set("partition.assignment.strategy", "range")
            .create_with_context(IngestContext {
                tx: tx.clone(),
                pending: Mutex::new(Vec::with_capacity(MAX_BATCH)),
                revoke_timeout: config.drain_timeout,
            })
            .context("creating the Kafka consumer")?;
        consumer
            .subscribe(&[&config.topics.telemetry, &config.topics.events])
            .context("subscribing to the telemetry topics")?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn({
                let (consumer, stop) = (consumer.clone(), stop.clone());
                move || poll_consumer(consumer, tx, stop)
            })
            .context("starting the Kafka poll thread")?;
        let poll_thread = PollThread {
            stop,
            handle: Some(handle),
        };
        Ok((
            Source {
                consumer,
                poll_thread,
            },
            rx,
        ))
    }

    /// Stops polling and closes the consumer. The loop must be gone (its receiver dropped) so a
    /// revoke during the close finds no one to drain and returns.
    pub async fn close(self) {
        let Source {
            consumer,
            poll_thread,
        } = self;
        drop(consumer);
        poll_thread.join().await;
    }
}

/// librdkafka stops fetching a partition while its local queue is over `queued.min.messages`,
/// and by default waits a whole second before it looks again. Whenever the loop is the slower
/// side (catching up, or the poll thread's channel full) that second left the queue empty and
/// the loop idle: a catching-up service ran at half the rate it could decode. The queue's
/// thresholds still bound its memory; this only makes fetching resume promptly. A
/// `MAINTCAST_KAFKA_FETCH_QUEUE_BACKOFF_MS` in the environment takes precedence.
const FETCH_QUEUE_BACKOFF: &str = "fetch.queue.backoff.ms";
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The consumer's client config: `vars` passed through as `maintcast_common::kafka` reads them,
/// and the fetch backoff below unless they set it.
fn consumer_config(
    brokers: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> rdkafka::ClientConfig {
    let mut client = maintcast_common::kafka::client_config_from(brokers, vars);
    if client.get(FETCH_QUEUE_BACKOFF).is_none() {
        client.set(FETCH_QUEUE_BACKOFF, FETCH_QUEUE_BACKOFF_MS);
    }
    client
}

/// The most messages handed over at once: enough to amortise the hand-over, few enough that
/// the loop sees acknowledgements and ticks between batches.
const MAX_BATCH: usize = 256;

/// Batches waiting for the loop. While it drains or waits on a full queue downstream, the poll
/// thread holds at most this many batches plus the one it is gathering (16,640 raw messages, about
/// 10 MiB of small ones), then stops polling: that bounds the memory an outage can fill. The
/// read-ahead that keeps a catching-up loop busy is librdkafka's own fetch queue, bounded by its
/// `queued.*` settings (see `FETCH_QUEUE_BACKOFF_MS`).
const CHANNEL_BATCHES: usize = 64;

/// Polls the consumer until `stop` is set or the loop is gone. Blocking on a full channel is the
/// back-pressure: the loop takes no messages while it drains.
fn poll_consumer(consumer: Arc<KafkaConsumer>, tx: mpsc::Sender<Polled>, stop: Arc<AtomicBool>) {
    let context = consumer.context();
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let pending = context.pending.lock().expect("pending messages").len();
        // Waits only with nothing pending: what is pending goes over as soon as the consumer
        // has nothing more ready, so a quiet stream adds no latency.
        let wait = if pending == 0 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        let handed = match consumer.poll(wait) {
            None => context.flush(),
            Some(Ok(m)) => {
                let mut pending = context.pending.lock().expect("pending messages");
                pending.push(m.detach());
                let full = pending.len() >= MAX_BATCH;
                drop(pending);
                !full || context.flush()
            }
            Some(Err(e)) => context.hand_over(Polled::Error(e)),
        };
        if !handed {
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

/// Messages behind the high watermark over `positions` (the next offset to consume, by
/// partition). Blocking: call it off the async runtime. None when the broker does not answer.
pub fn consumer_lag(consumer: &KafkaConsumer, positions: &HashMap<Partition, i64>) -> Option<i64> {
    let mut lag = 0;
    for (tp, &next) in positions {
        let (_, high) = consumer
            .fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2))
            .ok()?;
        lag += (high - next).max(0);
    }
    if positions.is_empty() {
        // Nothing assigned yet: whether the broker answers is still worth knowing.
        consumer.fetch_metadata(None, Duration::from_secs(2)).ok()?;
    }
    Some(lag)
}

/// Windows reset on maintenance events only if a machine's rows and events share a partition
/// index: that needs the two topics to have as many partitions. Checked at start; a topic that
/// does not exist yet is not checked (it gets the broker's default when first written).
pub fn check_partitions(config: &Config) -> anyhow::Result<()> {
    let probe: BaseConsumer = maintcast_common::kafka::client_config(&config.brokers)
        .create()
        .context("creating a Kafka metadata client")?;
    let count = |topic: &str| -> anyhow::Result<Option<usize>> {
        let md = probe
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading metadata of topic {topic}"))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    };
    let (t, e) = (&config.topics.telemetry, &config.topics.events);
    match (count(t)?, count(e)?) {
        (Some(a), Some(b)) if a != b => anyhow::bail!(
            "topic {t} has {a} partitions and {e} has {b}: a machine's maintenance events would \
             land in another partition than its telemetry and never reset its window. Give both \
             topics the same partition count (see docs/ on partitioning)"
        ),
        (a, b) => {
            if a.is_none() || b.is_none() {
                tracing::warn!(
                    telemetry = t,
                    events = e,
                    "a topic does not exist yet: partition counts not checked"
                );
            }
            Ok(())
        }
    }
}

/// The `content-type` (or any named) header of a message.
pub fn header(msg: &impl Message, name: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetching_resumes_promptly_unless_the_environment_says_otherwise() {
        let ours = consumer_config("b:9092", Vec::new());
        assert_eq!(ours.get(FETCH_QUEUE_BACKOFF), Some(FETCH_QUEUE_BACKOFF_MS));
        let theirs = consumer_config(
            "b:9092",
            vec![(
                "MAINTCAST_KAFKA_FETCH_QUEUE_BACKOFF_MS".to_string(),
                "250".to_string(),
            )],
        );
        assert_eq!(theirs.get(FETCH_QUEUE_BACKOFF), Some("250"));
    }
}
