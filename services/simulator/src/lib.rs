//! A deterministic fleet simulator: machines of a few types wear out under load, report telemetry
//! through imperfect sensors and get maintained; every row carries its true days to maintenance.
//!
//! The simulator is pure: the same [`FleetConfig`] (seed included) gives the same rows and events,
//! whatever the consumer does with them. Output formats (CSV, JSON lines, Kafka) live in [`output`]
//! and [`kafka`].

pub mod clock;
mod fleet;
pub mod kafka;
mod machine;
pub mod output;
mod sensors;
mod upkeep;

pub use clock::Start;
pub use fleet::{
    ConfigError, DEFAULT_START_MS, Fleet, FleetConfig, MachineInfo, SimHistory, Tick, Upkeep,
};
pub use machine::{EventKind, FaultMode, MachineType, MaintenanceEvent, Reading, Truth};
pub use sensors::{SensorFaultConfig, SensorFaultTruth};

/// Sensor names in the order of [`Reading::values`]. Every machine type reports all of them; the
/// types differ in levels and in how wear shows up.
pub const SENSORS: [&str; 6] = [
    "vibration_rms",
    "bearing_temp_c",
    "motor_current_a",
    "pressure_bar",
    "speed_rpm",
    "oil_temp_c",
];
