//! What the service exports on `/metrics`, and the readiness it reports on `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Counters and histograms served on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub consumed: Family<Labels, Counter>,
    pub rejected: Family<Labels, Counter>,
    pub decoded: Counter,
    pub filled_values: Counter,
    pub duplicates: Counter,
    pub late: Counter,
    pub forecasts_written: Counter,
    /// Forecasts the model returned as NaN or infinite: never written, never alerted on.
    pub forecasts_nonfinite: Family<Labels, Counter>,
    /// Quality flags raised on forecast inputs, by sensor and flag (stuck, out_of_range,
    /// missing, drift); the sensors are the model's, so the label set is bounded.
    pub input_flags: Family<Labels, Counter>,
    /// Forecasts whose input quality fell below `--quality-min-score`.
    pub forecasts_low_confidence: Counter,
    pub write_retries: Counter,
    /// Failed InfluxDB writes by kind (unauthorized, bucket_missing, too_large, bad_points, unavailable).
    pub write_errors: Family<Labels, Counter>,
    /// Points InfluxDB refused one by one, sent to the DLQ.
    pub points_dead_lettered: Counter,
    pub alerts_sent: Counter,
    /// Kafka records (DLQ, alerts) whose delivery failed and was retried.
    pub delivery_retries: Family<Labels, Counter>,
    pub model_reloads: Family<Labels, Counter>,
    /// Shadow model loads, by result (ok, refused).
    pub shadow_loads: Family<Labels, Counter>,
    /// Shadow forecasts acknowledged by InfluxDB (`shadow_forecast`).
    pub shadow_forecasts_written: Counter,
    /// Shadow forecasts not made: the shadow's inference failed or returned a non-finite value.
    pub shadow_failures: Counter,
    pub shadow_inference_seconds: Arc<Histogram>,
    /// Realized accuracy scored at maintenance events.
    pub accuracy: crate::accuracy::AccuracyMetrics,
    /// Telemetry sensors the serving model does not know, by sensor name.
    pub unknown_sensors: Family<Labels, Counter>,
    /// Messages whose Kafka key is not their machine_id (events may then miss their windows).
    pub key_mismatches: Counter,
    pub machines: Gauge,
    pub consumer_lag: Gauge,
    /// 1 while `/readyz` answers 200.
    pub ready: Gauge,
    pub batch_size: Arc<Histogram>,
    pub inference_seconds: Arc<Histogram>,
    pub write_seconds: Arc<Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            batch_size: Arc::new(Histogram::new(exponential_buckets(1.0, 2.0, 12))),
            inference_seconds: Arc::new(Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            shadow_inference_seconds: Arc::new(Histogram::new(exponential_buckets(
                0.0005, 2.0, 16,
            ))),
            write_seconds: Arc::new(Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            consumed: Default::default(),
            rejected: Default::default(),
            decoded: Default::default(),
            filled_values: Default::default(),
            duplicates: Default::default(),
            late: Default::default(),
            forecasts_written: Default::default(),
            forecasts_nonfinite: Default::default(),
            input_flags: Default::default(),
            forecasts_low_confidence: Default::default(),
            write_retries: Default::default(),
            write_errors: Default::default(),
            points_dead_lettered: Default::default(),
            alerts_sent: Default::default(),
            delivery_retries: Default::default(),
            model_reloads: Default::default(),
            shadow_loads: Default::default(),
            shadow_forecasts_written: Default::default(),
            shadow_failures: Default::default(),
            accuracy: Default::default(),
            unknown_sensors: Default::default(),
            key_mismatches: Default::default(),
            machines: Default::default(),
            consumer_lag: Default::default(),
            ready: Default::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("maintcast_ingest");
        let c = self.clone();
        r.register(
            "messages_consumed",
            "Kafka messages consumed, by topic",
            c.consumed,
        );
        r.register(
            "messages_rejected",
            "Messages sent to the DLQ, by reason",
            c.rejected,
        );
        r.register("rows_decoded", "Telemetry rows decoded", c.decoded);
        r.register(
            "values_filled",
            "Missing or non-finite sensor values filled",
            c.filled_values,
        );
        r.register("rows_duplicate", "Duplicate rows ignored", c.duplicates);
        r.register(
            "rows_late",
            "Rows older than the window's newest or its last reset: kept in history, not in the window",
            c.late,
        );
        r.register(
            "forecasts_written",
            "Forecasts acknowledged by InfluxDB",
            c.forecasts_written,
        );
        r.register(
            "forecasts_nonfinite",
            "Forecasts the model returned as NaN or infinite (not written), by model version",
            c.forecasts_nonfinite,
        );
        r.register(
            "input_flags",
            "Input-quality flags raised on forecasts, by sensor and flag (stuck, out_of_range, missing, drift)",
            c.input_flags,
        );
        r.register(
            "forecasts_low_confidence",
            "Forecasts whose input quality fell below --quality-min-score (interval widened)",
            c.forecasts_low_confidence,
        );
        r.register(
            "influx_write_retries",
            "Failed InfluxDB writes retried",
            c.write_retries,
        );
        r.register(
            "influx_write_errors",
            "Failed InfluxDB writes, by kind",
            c.write_errors,
        );
        r.register(
            "points_dead_lettered",
            "Points InfluxDB refused individually, sent to the DLQ",
            c.points_dead_lettered,
        );
        r.register("alerts_sent", "Alerts delivered to Kafka", c.alerts_sent);
        r.register(
            "delivery_retries",
            "Kafka deliveries (DLQ, alerts, checkpoints) that failed and were retried, by topic role",
            c.delivery_retries,
        );
        r.register(
            "model_reloads",
            "Model reload attempts, by result",
            c.model_reloads,
        );
        r.register(
            "shadow_loads",
            "Shadow model loads (registry SHADOW), by result",
            c.shadow_loads,
        );
        r.register(
            "shadow_forecasts_written",
            "Shadow forecasts acknowledged by InfluxDB (shadow_forecast; never served or alerted on)",
            c.shadow_forecasts_written,
        );
        r.register(
            "shadow_failures",
            "Shadow forecasts not made: the shadow's inference failed or was not finite",
            c.shadow_failures,
        );
        r.register(
            "shadow_inference_seconds",
            "Shadow inference time per batch (on top of inference_seconds)",
            HistogramRef(c.shadow_inference_seconds),
        );
        c.accuracy.register(r);
        r.register(
            "unknown_sensors",
            "Telemetry values for sensors the serving model does not use, by sensor",
            c.unknown_sensors,
        );
        r.register(
            "key_mismatches",
            "Messages whose Kafka key differs from their machine_id",
            c.key_mismatches,
        );
        r.register("machines_tracked", "Machines with a window", c.machines);
        r.register(
            "consumer_lag",
            "Messages behind the high watermark (assigned partitions)",
            c.consumer_lag,
        );
        r.register(
            "ready",
            "1 while the service is ready (consuming, writer healthy, model loaded)",
            c.ready,
        );
        r.register(
            "batch_size",
            "Windows per inference batch",
            HistogramRef(c.batch_size),
        );
        r.register(
            "inference_seconds",
            "Inference time per batch",
            HistogramRef(c.inference_seconds),
        );
        r.register(
            "influx_write_seconds",
            "InfluxDB write latency",
            HistogramRef(c.write_seconds),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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

/// The conditions `/readyz` reports: each part is set by the task that knows it.
#[derive(Clone, Default)]
pub struct Health {
    pub model_loaded: Arc<AtomicBool>,
    /// The broker answers (watermark queries succeed).
    pub consuming: Arc<AtomicBool>,
    /// The last InfluxDB write succeeded (false while writes fail and are retried).
    pub writer_ok: Arc<AtomicBool>,
    /// What `/readyz` serves.
    pub ready: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        let h = Health::default();
        h.writer_ok.store(true, Ordering::Relaxed);
        h
    }

    /// Recomputes `/readyz` from its parts; returns whether it is ready.
    pub fn refresh(&self, metrics: &Metrics) -> bool {
        let ready = self.model_loaded.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && self.writer_ok.load(Ordering::Relaxed);
        let was = self.ready.swap(ready, Ordering::Relaxed);
        if was != ready {
            tracing::info!(
                ready,
                model_loaded = self.model_loaded.load(Ordering::Relaxed),
                consuming = self.consuming.load(Ordering::Relaxed),
                writer_ok = self.writer_ok.load(Ordering::Relaxed),
                "readiness changed"
            );
        }
        metrics.ready.set(ready as i64);
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        let (h, m) = (Health::new(), Metrics::new());
        assert!(!h.refresh(&m), "nothing loaded yet");
        h.model_loaded.store(true, Ordering::Relaxed);
        h.consuming.store(true, Ordering::Relaxed);
        assert!(h.refresh(&m));
        assert_eq!(m.ready.get(), 1);
        h.writer_ok.store(false, Ordering::Relaxed);
        assert!(!h.refresh(&m), "a failing writer makes the service unready");
        assert!(!h.ready.load(Ordering::Relaxed));
        assert_eq!(m.ready.get(), 0);
    }
}
