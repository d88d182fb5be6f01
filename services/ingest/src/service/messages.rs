//! What the service loop does with each consumed message: decode it, feed the pipeline, queue
//! its history point and forecast request, dead-letter what cannot be used, and raise alerts
//! from delivered forecasts. Everything here only queues work; `service` owns the loop and the
//! commits.

use maintcast_common::points::Point;
use maintcast_proto::{
    Alert, AlertState, CONTENT_TYPE_HEADER, DecodeError, Forecast, MaintenanceEvent, Telemetry,
};
use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{Message, OwnedMessage};

use super::Loop;
use crate::accuracy::ScoreJob;
use crate::metrics::labels;
use crate::offsets::{Ack, Epoch};
use crate::publish::OutRecord;
use crate::sink::{Origin, WriteItem};
use crate::source::{self, Partition};
use crate::window::RowOutcome;

/// Distinct sensor names given their own label on `unknown_sensors`; the rest share "other", so
/// a producer sending random names cannot blow up the metric's cardinality.
const MAX_UNKNOWN_SENSOR_LABELS: usize = 200;

impl Loop {
    /// An alert counts in `epoch`, the oldest of its forecast's batch: the commit past the row
    /// that raised it waits for its delivery.
    pub(super) fn maybe_alert(&mut self, f: &Forecast, epoch: Epoch) {
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
            quality_score: f.quality_score,
            quality_flags: f.quality_flags.clone(),
            low_confidence: f.low_confidence,
        };
        let record = OutRecord::alert(&self.config.topics.alerts, &alert);
        let ack = Ack::AlertDelivered {
            machine_id: f.machine_id.clone(),
            due,
            epoch,
        };
        let n = self.publisher.send(record, "alert", ack);
        self.ledger.expect_in(epoch, n);
    }

    pub(super) fn dead_letter(&mut self, msg: &OwnedMessage, error: &str, reason: &str) {
        tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), %error, "rejected message");
        let record = OutRecord::dead_letter(&self.config.topics.dlq, msg, error);
        let n = self
            .publisher
            .send(record, "dlq", Ack::Delivered(self.ledger.epoch()));
        self.ledger.expect(n);
        self.metrics
            .rejected
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Consecutive messages from the poll thread. Runs from one partition are the rule, so its
    /// key, ownership and counter are looked up once per run, not per message (assignments
    /// change only between batches).
    pub(super) async fn on_messages(&mut self, batch: Vec<OwnedMessage>) -> anyhow::Result<()> {
        let mut run: Option<(Partition, bool, Counter)> = None;
        for msg in batch {
            let same = run
                .as_ref()
                .is_some_and(|((t, p), ..)| *p == msg.partition() && t == msg.topic());
            if !same {
                let key = (msg.topic().to_string(), msg.partition());
                let counter = self
                    .metrics
                    .consumed
                    .get_or_create(&labels(&[("topic", &key.0)]))
                    .clone();
                let owned = self.ledger.owns(&key);
                run = Some((key, owned, counter));
            }
            let (key, owned, consumed) = run.as_ref().expect("set above");
            if !owned {
                continue;
            }
            consumed.inc();
            let content_type = source::header(&msg, CONTENT_TYPE_HEADER);
            let (bytes, content_type) = (msg.payload().unwrap_or(&[]), content_type.as_deref());
            if *key.0 == self.config.topics.telemetry {
                let t = self.decoder.decode_telemetry(bytes, content_type);
                self.on_telemetry(&msg, t).await?;
            } else {
                let ev = self.decoder.decode_maintenance_event(bytes, content_type);
                self.on_event(&msg, ev).await?;
            }
            self.ledger.consumed(key, msg.offset());
        }
        Ok(())
    }

    pub(super) async fn on_telemetry(
        &mut self,
        msg: &OwnedMessage,
        decoded: Result<Telemetry, DecodeError>,
    ) -> anyhow::Result<()> {
        let t = match decoded {
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
        if let Some(mut req) = step.forecast {
            req.epoch = self.ledger.epoch();
            self.ledger.expect(1);
            // Blocks when inference is behind: consumption pauses.
            self.req_tx
                .send(req)
                .await
                .map_err(|_| anyhow::anyhow!("inference stopped"))?;
        }
        Ok(())
    }

    pub(super) async fn on_event(
        &mut self,
        msg: &OwnedMessage,
        decoded: Result<MaintenanceEvent, DecodeError>,
    ) -> anyhow::Result<()> {
        let ev = match decoded {
            Ok(ev) => ev,
            Err(e) => {
                self.dead_letter(msg, &e.to_string(), e.reason());
                return Ok(());
            }
        };
        self.check_key(msg, &ev.machine_id);
        let step = self.pipeline.on_event(&ev, msg.partition());
        if step.reset {
            // Scored once its epoch settles, when every forecast of the life it ended is written.
            self.score_jobs.push(ScoreJob {
                machine_id: ev.machine_id.clone(),
                since_ms: step.previous_reset_ms,
                event_ms: ev.ts_ms,
                kind: ev.kind,
                epoch: self.ledger.epoch(),
            });
        }
        // Every event is history, also a stale one: the trainer decides what it means.
        if self.config.write_raw {
            let point = Point::maintenance_event(&ev).map(|p| p.data_point());
            self.write_history(msg, &ev.machine_id, point).await?;
        }
        Ok(())
    }

    /// Queues a raw history point, or dead-letters its message when no point can be built.
    pub(super) async fn write_history(
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
            .send(WriteItem::Raw {
                point,
                origin,
                epoch: self.ledger.epoch(),
            })
            .await
            .map_err(|_| anyhow::anyhow!("writer stopped"))
    }

    /// Events reset windows only if they share their machine's telemetry partition, which the
    /// key decides: a key that is not the machine_id is counted and warned about once.
    pub(super) fn check_key(&mut self, msg: &OwnedMessage, machine_id: &str) {
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
}
