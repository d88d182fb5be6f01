//! Maintenance planning from forecasts: which machine to maintain on which day, within the slots a
//! crew has, and why ([`schedule`]); a maintenance interval per machine type from the history
//! ([`interval`]); the plan as a table, CSV and JSON ([`report`]) and in InfluxDB ([`influx`]).
//! Everything but [`influx`] is pure.

pub mod influx;
pub mod interval;
pub mod policy;
pub mod report;
pub mod risk;
pub mod schedule;

pub use schedule::{Capacity, GroupBy, MachineForecast, Plan, PlanConfig, Status, plan};
