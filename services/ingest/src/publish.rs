//! Kafka out: dead letters and alerts. A record counts as done only when the broker's delivery
//! report says so; a failed delivery is retried (its epoch's commit waits for it), so no record
//! derived from a committed offset is ever lost.

use std::time::Duration;

use maintcast_common::influx::Backoff;
use maintcast_common::shutdown::Shutdown;
use maintcast_proto::Alert;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, labels};
use crate::offsets::Ack;
use crate::source::header;

/// A record to deliver, owned so that it can be sent again after a failed delivery.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl OutRecord {
    /// The original bytes of a rejected message, with why and where it came from.
    pub fn dead_letter(dlq: &str, msg: &OwnedMessage, error: &str) -> Self {
        let mut headers = vec![
            ("error".to_string(), error.to_string()),
            ("source-offset".to_string(), msg.offset().to_string()),
            ("source-topic".to_string(), msg.topic().to_string()),
            ("source-partition".to_string(), msg.partition().to_string()),
        ];
        if let Some(ct) = header(msg, maintcast_proto::CONTENT_TYPE_HEADER) {
            headers.push((maintcast_proto::CONTENT_TYPE_HEADER.to_string(), ct));
        }
        OutRecord {
            topic: dlq.to_string(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    pub fn alert(topic: &str, alert: &Alert) -> Self {
        OutRecord {
            topic: topic.to_string(),
            key: Some(alert.machine_id.as_bytes().to_vec()),
            payload: Some(serde_json::to_vec(alert).expect("alert serialises")),
            headers: vec![(
                maintcast_proto::CONTENT_TYPE_HEADER.to_string(),
                maintcast_proto::CONTENT_TYPE_JSON.to_string(),
            )],
        }
    }

    fn to_future_record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut r = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = &self.key {
            r = r.key(k);
        }
        if let Some(p) = &self.payload {
            r = r.payload(p);
        }
        r
    }
}

/// Sends records and reports each delivery to the service loop as an [`Ack`].
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    acks: mpsc::UnboundedSender<Ack>,
    metrics: Metrics,
    shutdown: Shutdown,
}

/// Attempts that may still fail after shutdown before a record is given up (and its offset left
/// uncommitted, so the next start reprocesses it).
const ATTEMPTS_AFTER_SHUTDOWN: u32 = 5;

impl Publisher {
    pub fn new(
        producer: FutureProducer,
        acks: mpsc::UnboundedSender<Ack>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Self {
        Publisher {
            producer,
            acks,
            metrics,
            shutdown,
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Delivers `record` in the background; `ack` goes to the loop once the broker has it.
    /// Returns the number of acknowledgements to expect (1).
    pub fn send(&self, record: OutRecord, role: &'static str, ack: Ack) -> usize {
        let this = self.clone();
        tokio::spawn(async move {
            if this.deliver(&record, role).await {
                let _ = this.acks.send(ack);
            }
        });
        1
    }

    /// Delivers with retries; false only when shutdown gave up on it.
    pub async fn deliver(&self, record: &OutRecord, role: &'static str) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut after_shutdown = 0;
        loop {
            let error = match self.producer.send_result(record.to_future_record()) {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => return true,
                    Ok(Err((e, _))) => e.to_string(),
                    Err(_) => "the producer dropped the delivery".to_string(),
                },
                Err((e, _)) => e.to_string(),
            };
            self.metrics
                .delivery_retries
                .get_or_create(&labels(&[("role", role)]))
                .inc();
            if self.shutdown.is_triggered() {
                after_shutdown += 1;
                if after_shutdown > ATTEMPTS_AFTER_SHUTDOWN {
                    tracing::error!(topic = record.topic, role, %error, "giving up a delivery at shutdown; its offset stays uncommitted");
                    return false;
                }
            }
            let delay = backoff.next_delay();
            tracing::warn!(topic = record.topic, role, %error, retry_in_ms = delay.as_millis() as u64, "Kafka delivery failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}
