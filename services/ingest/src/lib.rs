//! The ingest service: Kafka telemetry -> per-machine windows -> batched inference -> InfluxDB
//! forecasts. Read the modules in the order data flows through them: `source` (Kafka in),
//! `pipeline` (decoded rows -> windows -> forecast requests; pure), `infer` (batched inference;
//! `quality` and `forecast` judge the inputs and make the record), `sink` (InfluxDB),
//! `publish` (DLQ, alerts), `offsets` (what may be committed); `service` only wires them.
//! The contracts are in docs/ (topics.md "Delivery", influxdb.md, configuration.md).

pub mod accuracy;
pub mod alerts;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod forecast;
pub mod infer;
pub mod metrics;
pub mod model;
pub mod offsets;
pub mod pipeline;
pub mod publish;
pub mod quality;
pub mod service;
pub mod serving;
pub mod shadow;
pub mod sink;
pub mod source;
pub mod window;

pub use config::{Config, ConfigError, Topics};
pub use metrics::Metrics;
pub use service::run;
