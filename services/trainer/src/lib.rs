//! placeholder

pub mod chart;
pub mod influx_history;
pub mod leaderboard;
pub mod realized;
pub mod registry;
pub mod service;
pub mod sweep;
pub mod tensorboard;
pub mod training_run;
