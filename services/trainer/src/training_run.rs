//! Epochs to InfluxDB's `training_run` measurement (`maintcast_common::points::training_run`), so
//! the Grafana training panel follows a sweep live.
//!
//! Best effort on purpose: training must not wait for, or fail because of, a monitoring write. The
//! training threads hand points to one writer thread; a failed batch is logged and dropped.

use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::DataPoint;
use maintcast_common::influx::InfluxConfig;
use maintcast_common::points::{Point, TrainingEpoch};
use maintcast_models::train::EpochReport;

pub const MEASUREMENT: &str = maintcast_common::points::training_run::MEASUREMENT;

pub struct TrainingRunSink {
    tx: Mutex<Option<mpsc::Sender<DataPoint>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl TrainingRunSink {
    /// A sink when InfluxDB is configured (`MAINTCAST_INFLUX_URL` set), else `None`.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        if std::env::var("MAINTCAST_INFLUX_URL").map_or(true, |v| v.is_empty()) {
            return Ok(None);
        }
        let config = InfluxConfig::from_env()?;
        Self::new(&config).map(Some)
    }

    pub fn new(config: &InfluxConfig) -> anyhow::Result<Self> {
        let client = config.client()?;
        let bucket = config.bucket.clone();
        let (tx, rx) = mpsc::channel::<DataPoint>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the InfluxDB writer")?;
        let writer = std::thread::Builder::new()
            .name("training-run-influx".into())
            .spawn(move || {
                let mut warned = false;
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let write = client.write_with_precision(
                        &bucket,
                        futures::stream::iter(batch),
                        TimestampPrecision::Milliseconds,
                    );
                    let result = runtime.block_on(async {
                        tokio::time::timeout(Duration::from_secs(10), write).await
                    });
                    let error = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("timed out after 10 s".to_string()),
                    };
                    if let Some(e) = error {
                        // One warning per sweep is enough to say the panel will have gaps.
                        if !warned {
                            tracing::warn!("training_run points not written to InfluxDB: {e}");
                            warned = true;
                        }
                    }
                }
            })
            .context("starting the InfluxDB writer thread")?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one epoch; never blocks on InfluxDB.
    pub fn epoch(&self, model: &str, run_id: &str, r: &EpochReport) {
        let Ok(point) = point(model, run_id, r, chrono::Utc::now().timestamp_millis()) else {
            return;
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(point);
        }
    }

    /// Writes what is queued and stops the writer.
    pub fn finish(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for TrainingRunSink {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The point of one epoch, as `maintcast_common::points` defines it.
pub fn point(model: &str, run_id: &str, r: &EpochReport, ts_ms: i64) -> anyhow::Result<DataPoint> {
    let epoch = TrainingEpoch {
        epoch: r.epoch,
        train_loss: r.train_loss,
        val_mae: r.val_mae,
        val_rmse: r.val_rmse,
        elapsed_s: r.elapsed_s,
        lr: r.lr,
    };
    Ok(Point::training_epoch(model, run_id, &epoch, ts_ms)?.data_point())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_becomes_one_millisecond_point() {
        let r = EpochReport {
            epoch: 3,
            train_loss: 2.5,
            val_loss: 2.0,
            val_mae: 1.5,
            val_rmse: f64::NAN,
            lr: 0.001,
            elapsed_s: 4.0,
            best: true,
        };
        let p = point("cmapss", "abc123", &r, 1_700_000_000_000).unwrap();
        let mut buf = Vec::new();
        influxdb2::models::WriteDataPoint::write_data_point_to(&p, &mut buf).unwrap();
        let line = String::from_utf8(buf).unwrap();
        let line = line.trim_end();
        assert!(
            line.starts_with("training_run,model=cmapss,run_id=abc123 "),
            "{line}"
        );
        for f in ["train_loss=2.5", "val_mae=1.5", "elapsed_s=4", "epoch=3i"] {
            assert!(line.contains(f), "{f} missing from {line}");
        }
        assert!(!line.contains("val_rmse"), "{line}");
        assert!(line.ends_with(" 1700000000000"), "{line}");
    }
}
