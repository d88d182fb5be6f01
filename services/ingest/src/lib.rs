//! The ingest service: Kafka telemetry -> per-machine windows -> batched inference -> InfluxDB
//! forecasts (docs/topics.md "Delivery", docs/influxdb.md).

pub mod alerts;
pub mod batch;
pub mod checkpoint;
pub mod model;
pub mod service;
pub mod serving;
pub mod window;

pub use service::{Config, Metrics, Topics, run};
