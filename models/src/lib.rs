//! placeholder

mod fused;
pub mod fused_train;
pub mod network;

pub mod artifact;
pub mod config;
pub mod dataset;
pub mod error;
pub mod forecaster;
pub mod history;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod registry;
pub mod scaler;
pub mod train;

pub use artifact::{ModelCard, TargetSpec};
pub use error::ModelError;
pub use forecaster::{Forecast, Forecaster};
pub use history::{History, MachineHistory};
