//! InfluxDB out: forecasts and raw history, written in batches. A batch InfluxDB refuses as too
//! large is split; one it refuses for its content is bisected until the refused points are found,
//! and those go to the DLQ with InfluxDB's reason while the rest are written. Nothing is counted
//! as written, or acknowledged to the offset ledger, before InfluxDB or the DLQ has it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use influxdb2::models::{DataPoint, WriteDataPoint};
use maintcast_common::influx::{WriteError, Writer};
use maintcast_common::points::Point;
use maintcast_common::shutdown::Shutdown;
use maintcast_proto::Forecast;
use tokio::sync::mpsc;

use crate::metrics::{Health, Metrics, labels};
use crate::offsets::{Ack, Epoch, by_epoch};
use crate::publish::{OutRecord, Publisher};

/// Where a raw point came from, so a refused one can be traced in the DLQ.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub machine_id: String,
}

pub enum WriteItem {
    /// A served forecast and, when a shadow runs, the shadow's forecast of the same window
    /// (written to `shadow_forecast`, acknowledged with it, never alerted on).
    Forecast {
        served: Forecast,
        /// Boxed: most items have none, and the channel's slots stay the size of one forecast.
        shadow: Option<Box<Forecast>>,
        epoch: Epoch,
    },
    Raw {
        point: DataPoint,
        origin: Origin,
        epoch: Epoch,
    },
}

impl WriteItem {
    fn epoch(&self) -> Epoch {
        match self {
            WriteItem::Forecast { epoch, .. } | WriteItem::Raw { epoch, .. } => *epoch,
        }
    }
}

pub struct Sink {
    pub writer: Writer,
    pub publisher: Publisher,
    pub dlq_topic: String,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub metrics: Metrics,
    pub health: Health,
    pub max_batch: usize,
    pub shutdown: Shutdown,
}

/// What a point is, for the DLQ and for counting forecasts.
enum Meta {
    Forecast(Forecast),
    Shadow,
    Raw(Origin),
}

/// Attempts after shutdown before the writer gives up (offsets then stay uncommitted).
const ATTEMPTS_AFTER_SHUTDOWN: u32 = 20;

impl Sink {
    pub async fn run(mut self, mut rx: mpsc::Receiver<WriteItem>) -> anyhow::Result<()> {
        let mut items = Vec::with_capacity(self.max_batch);
        while let Some(first) = rx.recv().await {
            items.push(first);
            // Whatever queued up while the last write ran goes in this one: natural batching,
            // with no timer adding latency when the stream is slow.
            while items.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(i) => items.push(i),
                    Err(_) => break,
                }
            }
            let epochs = by_epoch(items.iter().map(WriteItem::epoch));
            let n = items.len();
            let mut points = Vec::with_capacity(n);
            let mut metas = Vec::with_capacity(n);
            for item in items.drain(..) {
                match item {
                    WriteItem::Forecast { served, shadow, .. } => {
                        if let Some(s) = shadow {
                            match Point::shadow_forecast(&s).map(|p| p.data_point()) {
                                Ok(p) => {
                                    points.push(p);
                                    metas.push(Meta::Shadow);
                                }
                                Err(_) => {
                                    self.metrics.shadow_failures.inc();
                                }
                            }
                        }
                        match Point::forecast(&served).map(|p| p.data_point()) {
                            Ok(p) => {
                                points.push(p);
                                metas.push(Meta::Forecast(served));
                            }
                            Err(e) => {
                                // Inference never hands over a non-finite forecast; if a point
                                // still cannot be built, it is dead-lettered, not lost.
                                let json = serde_json::to_vec(&served).unwrap_or_default();
                                self.dead_letter(json, &e.to_string(), None).await;
                            }
                        }
                    }
                    WriteItem::Raw { point, origin, .. } => {
                        points.push(point);
                        metas.push(Meta::Raw(origin));
                    }
                }
            }
            let started = Instant::now();
            let written = self.write_all(&points, &metas).await?;
            self.metrics
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
            let mut shadows = 0;
            let forecasts: Vec<Forecast> = metas
                .into_iter()
                .zip(written)
                .filter_map(|(m, ok)| match (m, ok) {
                    (Meta::Forecast(f), true) => Some(f),
                    (Meta::Shadow, true) => {
                        shadows += 1;
                        None
                    }
                    _ => None,
                })
                .collect();
            self.metrics.shadow_forecasts_written.inc_by(shadows);
            self.metrics
                .forecasts_written
                .inc_by(forecasts.len() as u64);
            let _ = self.acks.send(Ack::Written {
                items: epochs,
                forecasts,
            });
        }
        Ok(())
    }

    /// Writes every point or dead-letters the ones InfluxDB refuses; returns, per point, whether
    /// it was written.
    async fn write_all(
        &mut self,
        points: &[DataPoint],
        metas: &[Meta],
    ) -> anyhow::Result<Vec<bool>> {
        let mut written = vec![true; points.len()];
        let mut chunks = vec![(0, points.len())];
        while let Some((lo, hi)) = chunks.pop() {
            if lo == hi {
                continue;
            }
            let (metrics, health) = (self.metrics.clone(), self.health.clone());
            let result = self
                .writer
                .write(
                    &points[lo..hi],
                    &self.shutdown,
                    ATTEMPTS_AFTER_SHUTDOWN,
                    |failure, _| {
                        metrics.write_retries.inc();
                        metrics
                            .write_errors
                            .get_or_create(&labels(&[("kind", failure.as_str())]))
                            .inc();
                        health.writer_ok.store(false, Ordering::Relaxed);
                    },
                )
                .await;
            let reason = match result {
                Ok(()) => {
                    self.health.writer_ok.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(e @ WriteError::Shutdown(_)) => return Err(e.into()),
                Err(e @ WriteError::TooLarge(_)) => ("too_large", e.to_string()),
                Err(e @ WriteError::Rejected { .. }) => ("bad_points", e.to_string()),
            };
            // InfluxDB answered, so the writer works; the content is what it refused.
            self.health.writer_ok.store(true, Ordering::Relaxed);
            self.metrics
                .write_errors
                .get_or_create(&labels(&[("kind", reason.0)]))
                .inc();
            if hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                tracing::warn!(points = hi - lo, error = %reason.1, "InfluxDB refused a batch; splitting it");
                chunks.push((mid, hi));
                chunks.push((lo, mid));
                continue;
            }
            written[lo] = false;
            let mut line = Vec::new();
            let _ = points[lo].write_data_point_to(&mut line);
            let origin = match &metas[lo] {
                Meta::Raw(o) => Some(o.clone()),
                Meta::Forecast(_) | Meta::Shadow => None,
            };
            tracing::error!(error = %reason.1, point = %String::from_utf8_lossy(&line).trim_end(), "InfluxDB refused a point; sent to the DLQ");
            self.dead_letter(line, &reason.1, origin).await;
        }
        Ok(written)
    }

    async fn dead_letter(&self, payload: Vec<u8>, error: &str, origin: Option<Origin>) {
        let mut headers = vec![("error".to_string(), error.to_string())];
        let mut key = None;
        if let Some(o) = origin {
            headers.push(("source-topic".into(), o.topic));
            headers.push(("source-partition".into(), o.partition.to_string()));
            headers.push(("source-offset".into(), o.offset.to_string()));
            key = Some(o.machine_id.into_bytes());
        }
        headers.push((
            maintcast_proto::CONTENT_TYPE_HEADER.to_string(),
            "text/plain; format=influx-line-protocol".to_string(),
        ));
        let record = OutRecord {
            topic: self.dlq_topic.clone(),
            key,
            payload: Some(payload),
            headers,
        };
        self.metrics.points_dead_lettered.inc();
        // The batch is acknowledged only after this: a refused point is never silently dropped.
        self.publisher.deliver(&record, "dlq").await;
    }
}
