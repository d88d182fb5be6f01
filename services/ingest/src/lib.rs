//! The ingest service: Kafka telemetry -> per-machine windows -> batched inference -> InfluxDB
//! forecasts (DESIGN.md "The shape", "Delivery").

pub mod alerts;
pub mod batch;
pub mod checkpoint;
pub mod model;
pub mod quality;
pub mod service;
pub mod serving;
pub mod window;

pub use service::{Config, Metrics, Topics, run};
