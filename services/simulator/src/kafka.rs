//! Publishing telemetry and maintenance events to Kafka, paced or as fast as possible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use maintcast_proto::{CONTENT_TYPE_HEADER, CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, Telemetry};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

/// One message for Kafka, keyed by machine.
#[derive(Clone, Debug)]
pub enum Message {
    Telemetry(Telemetry),
    Event(maintcast_proto::MaintenanceEvent),
}

impl Message {
    pub fn ts_ms(&self) -> i64 {
        match self {
            Message::Telemetry(t) => t.ts_ms,
            Message::Event(e) => e.ts_ms,
        }
    }

    pub fn machine_id(&self) -> &str {
        match self {
            Message::Telemetry(t) => &t.machine_id,
            Message::Event(e) => &e.machine_id,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Encoding::Json),
            "protobuf" | "proto" => Ok(Encoding::Protobuf),
            _ => Err(format!(
                "unknown encoding {s:?} (expected json or protobuf)"
            )),
        }
    }
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => CONTENT_TYPE_JSON,
            Encoding::Protobuf => CONTENT_TYPE_PROTOBUF,
        }
    }

    pub fn encode(self, m: &Message) -> Vec<u8> {
        match (self, m) {
            (Encoding::Json, Message::Telemetry(t)) => t.to_json(),
            (Encoding::Protobuf, Message::Telemetry(t)) => t.to_protobuf(),
            (Encoding::Json, Message::Event(e)) => e.to_json(),
            (Encoding::Protobuf, Message::Event(e)) => e.to_protobuf(),
        }
    }
}

/// How fast messages go out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    AsFastAsPossible,
    /// Messages per second.
    Rate(f64),
    /// Message time runs this many times faster than wall time (3600: an hour per second).
    Speedup(f64),
    /// Message time is the wall clock: a message goes out when its timestamp comes due, so rows
    /// stamped in the past (a backfill) go at once and the stream never runs ahead of the clock.
    /// `anchor` is the instant at which the clock read `anchor_ms` (epoch ms).
    WallClock {
        anchor: Instant,
        anchor_ms: i64,
    },
}

impl Pace {
    /// Real time from the current wall clock.
    pub fn wall_clock() -> Self {
        Pace::WallClock {
            anchor: Instant::now(),
            anchor_ms: crate::clock::now_ms(),
        }
    }
}

/// Decides how long to wait before each message. Messages before `backfill_until_ms` go out at once.
pub struct Pacer {
    pace: Pace,
    backfill_until_ms: i64,
    /// Wall time and message time when paced sending began.
    origin: Option<(Instant, i64)>,
    paced_sent: u64,
}

impl Pacer {
    pub fn new(pace: Pace, backfill_until_ms: i64) -> Self {
        Pacer {
            pace,
            backfill_until_ms,
            origin: None,
            paced_sent: 0,
        }
    }

    /// How long to sleep, at wall time `now`, before sending a message stamped `ts_ms`.
    pub fn delay(&mut self, ts_ms: i64, now: Instant) -> Duration {
        if let Pace::WallClock { anchor, anchor_ms } = self.pace {
            let due = anchor + Duration::from_millis((ts_ms - anchor_ms).max(0) as u64);
            return due.saturating_duration_since(now);
        }
        if ts_ms < self.backfill_until_ms || self.pace == Pace::AsFastAsPossible {
            return Duration::ZERO;
        }
        let (t0, ts0) = *self.origin.get_or_insert((now, ts_ms));
        let due = match self.pace {
            Pace::AsFastAsPossible | Pace::WallClock { .. } => return Duration::ZERO,
            Pace::Rate(r) => {
                let due = Duration::from_secs_f64(self.paced_sent as f64 / r);
                self.paced_sent += 1;
                due
            }
            Pace::Speedup(x) => Duration::from_secs_f64(((ts_ms - ts0).max(0) as f64 / 1000.0) / x),
        };
        (t0 + due).saturating_duration_since(now)
    }
}

pub struct Topics {
    pub telemetry: String,
    pub events: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            telemetry: "telemetry".into(),
            events: "maintenance-events".into(),
        }
    }
}

/// A producer that keeps many messages in flight and fails on the first undeliverable one.
pub struct KafkaSink {
    producer: FutureProducer,
    topics: Topics,
    encoding: Encoding,
    in_flight: VecDeque<DeliveryFuture>,
    pub sent: u64,
}

const MAX_IN_FLIGHT: usize = 50_000;

impl KafkaSink {
    pub fn new(
        mut config: ClientConfig,
        topics: Topics,
        encoding: Encoding,
    ) -> anyhow::Result<Self> {
        config.set("linger.ms", "20").set("compression.type", "lz4");
        let producer: FutureProducer = config.create().context("creating the Kafka producer")?;
        Ok(KafkaSink {
            producer,
            topics,
            encoding,
            in_flight: VecDeque::new(),
            sent: 0,
        })
    }

    pub async fn send(&mut self, m: &Message) -> anyhow::Result<()> {
        let payload = self.encoding.encode(m);
        let topic = match m {
            Message::Telemetry(_) => self.topics.telemetry.clone(),
            Message::Event(_) => self.topics.events.clone(),
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: CONTENT_TYPE_HEADER,
            value: Some(self.encoding.content_type()),
        });
        let mut record = FutureRecord::to(&topic)
            .key(m.machine_id())
            .payload(&payload)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push_back(delivery);
                    self.sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // The local queue is full: wait for the oldest delivery to make room.
                    if !self.await_oldest().await? {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => return Err(e).context("queueing a Kafka message"),
            }
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> anyhow::Result<bool> {
        let Some(d) = self.in_flight.pop_front() else {
            return Ok(false);
        };
        match d.await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err((e, _))) => Err(e).context("delivering a Kafka message"),
            Err(_) => anyhow::bail!("the Kafka producer dropped a message before delivering it"),
        }
    }

    /// Waits until everything sent so far has been acknowledged.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        while self.await_oldest().await? {}
        self.producer
            .flush(Duration::from_secs(30))
            .context("flushing the Kafka producer")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_backfills_then_paces() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Pace::Rate(10.0), 1_000);
        assert_eq!(p.delay(999, t0), Duration::ZERO);
        assert_eq!(p.delay(1_000, t0), Duration::ZERO);
        assert_eq!(p.delay(1_000, t0), Duration::from_millis(100));
        // Time already spent counts: 150 ms later the third message (due at 200 ms) waits 50 ms.
        assert_eq!(
            p.delay(1_000, t0 + Duration::from_millis(150)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn pacer_scales_message_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Pace::Speedup(3600.0), 0);
        assert_eq!(p.delay(0, t0), Duration::ZERO);
        // Two hours of message time at 3600x is two seconds.
        assert_eq!(p.delay(7_200_000, t0), Duration::from_secs(2));
        let mut fast = Pacer::new(Pace::AsFastAsPossible, 0);
        assert_eq!(fast.delay(i64::MAX, t0), Duration::ZERO);
    }

    #[test]
    fn wall_clock_sends_the_past_at_once_and_the_future_when_due() {
        let t0 = Instant::now();
        let clock_ms = 1_767_225_600_000;
        let mut p = Pacer::new(
            Pace::WallClock {
                anchor: t0,
                anchor_ms: clock_ms,
            },
            // Backfill boundaries do not matter on the wall clock: the past is the backfill.
            i64::MAX,
        );
        assert_eq!(p.delay(clock_ms - 30 * 86_400_000, t0), Duration::ZERO);
        assert_eq!(p.delay(clock_ms, t0), Duration::ZERO);
        assert_eq!(p.delay(clock_ms + 3_600_000, t0), Duration::from_secs(3600));
        // Half an hour later, the same row is half an hour away.
        assert_eq!(
            p.delay(clock_ms + 3_600_000, t0 + Duration::from_secs(1800)),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn encodings_decode_back() {
        let t = Telemetry {
            machine_id: "pump-001".into(),
            ts_ms: 1_767_225_600_000,
            sensors: vec![("vibration_rms".into(), 1.5)],
            machine_type: Some("pump".into()),
            site: None,
        };
        for enc in [Encoding::Json, Encoding::Protobuf] {
            let bytes = enc.encode(&Message::Telemetry(t.clone()));
            let back = maintcast_proto::decode_telemetry(&bytes, Some(enc.content_type())).unwrap();
            assert_eq!(back, t);
        }
        assert!("xml".parse::<Encoding>().is_err());
    }
}
