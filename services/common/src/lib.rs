//! Plumbing shared by the maintcast services: logging, configuration helpers, Kafka and InfluxDB
//! clients, the metrics/health HTTP endpoint and shutdown.

pub mod config;
pub mod flux;
pub mod http;
pub mod influx;
pub mod kafka;
pub mod logging;
pub mod points;
pub mod shutdown;
