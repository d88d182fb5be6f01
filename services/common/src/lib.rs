//! Plumbing shared by the maintcast services: logging, configuration helpers, Kafka and InfluxDB
//! clients, the metrics/health HTTP endpoint and shutdown.

pub mod logging;
