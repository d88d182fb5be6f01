//! A steady stream of fleet rows in the background, at a set pace, for tests that inject faults
//! while rows keep arriving: how many rows were delivered is readable while it runs, and the
//! fleet it sent comes back at the end for the offline forecaster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::stream::{Fleet, fleet_messages, new_fleet, produce_to};

/// Rows per machine at most: the last one's timestamp (one a minute from two days ago) must stay
/// in the past.
pub const MAX_ROWS: usize = 2500;

/// How long a row may wait for delivery before the stream gives up on its producer.
const STUCK: Duration = Duration::from_secs(60);

/// A producer for a stream that must survive a broker outage: it waits up to ten minutes for
/// delivery, so that an outage delays rows rather than losing them, and what librdkafka warns of
/// goes to stderr, so a stalled stream shows why. Order needs no idempotence here, since a
/// machine's next row is sent only once its last one is delivered, and without it there is no
/// producer id to win back from a restarted broker. A retry may write a row twice, which the
/// service ignores as a duplicate.
pub fn ordered_producer(brokers: &str) -> FutureProducer<Logged> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "600000")
        .create_with_context(Logged)
        .expect("Kafka producer")
}

/// Prints librdkafka's warnings and errors (a test installs no logger for the `log` crate).
pub struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        if matches!(level, Emerg | Alert | Critical | Error | Warning) {
            eprintln!("[stream producer] {level:?} {fac}: {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("[stream producer] {error}: {reason}");
    }
}

/// One row for every machine each `period`, until [`SteadyStream::finish`] or [`MAX_ROWS`].
pub struct SteadyStream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Fleet>,
}

impl SteadyStream {
    pub fn start(brokers: &str, run: &str, machines: usize, period: Duration) -> SteadyStream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (brokers, run) = (brokers.to_string(), run.to_string());
        let task = tokio::spawn({
            let (stop, sent) = (stop.clone(), sent.clone());
            async move {
                let mut producer = ordered_producer(&brokers);
                let topic = format!("{run}-telemetry");
                let mut fleet = new_fleet(&run, machines);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) && r < MAX_ROWS {
                    tick.tick().await;
                    // One row per machine at a time: a machine's rows stay in order, and the
                    // machines' rows go out together.
                    let messages = fleet_messages(&mut fleet, r..r + 1);
                    loop {
                        let sends = futures::future::join_all(messages.iter().map(|m| {
                            produce_to(&producer, &topic, m.partition, &m.key, &m.payload, m.ct)
                        }));
                        if tokio::time::timeout(STUCK, sends).await.is_ok() {
                            break;
                        }
                        // Seen about one broker restart in seven: this client delivered nothing
                        // for minutes after the broker was back, while a new client could. The
                        // stream is the test's, not the system under test, so it starts over
                        // with a new producer; a row that also arrives from the old one is a
                        // duplicate or late row, which the service ignores for forecasts.
                        eprintln!(
                            "[stream producer] no delivery for {STUCK:?}: resending row {r} with a new producer"
                        );
                        producer = ordered_producer(&brokers);
                    }
                    r += 1;
                    sent.store(r, Ordering::Relaxed);
                }
                fleet
            }
        });
        SteadyStream { stop, sent, task }
    }

    /// Rows per machine delivered so far.
    pub fn rows(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `more` further rows per machine have been delivered.
    pub async fn advance(&self, more: usize) {
        let target = self.rows() + more;
        while self.rows() < target {
            assert!(!self.task.is_finished(), "the stream ended early");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the stream and returns what it sent.
    pub async fn finish(self) -> Fleet {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("stream task")
    }
}

/// Messages a fleet's stream put on the telemetry topic, at least: every row plus the one
/// duplicate [`fleet_messages`] sends (machine 2's row 5); a retried send may add more.
pub fn messages_sent(fleet: &Fleet) -> usize {
    let rows: usize = fleet.rows.iter().map(|(_, r)| r.len()).sum();
    rows + usize::from(fleet.rows.len() > 2 && fleet.rows[2].1.len() > 5)
}
