//! The trainer: the service that retrains a model from history in rounds and promotes a
//! challenger only through its champion/challenger gate (`service`), experiment sweeps (`sweep`),
//! history read from InfluxDB (`influx_history`), realized accuracy of served forecasts
//! (`realized`), the shadow challenger and the gate that promotes it on live evidence (`shadow`,
//! `live_gate`), the registry listing (`registry`; promotion itself is
//! `maintcast_models::registry::promote`), and training logs (`tensorboard`, `training_run`).

pub mod influx_history;
pub mod live_gate;
pub mod realized;
pub mod registry;
pub mod service;
pub mod shadow;
pub mod sweep;
// Their paths before they moved under `sweep`.
pub use sweep::{chart, leaderboard};
pub mod tensorboard;
pub mod training_run;
