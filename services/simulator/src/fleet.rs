//! A fleet of simulated machines sampled on a common clock.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::machine::{EventKind, Item, MachineSim, MachineType, MaintenanceEvent, Reading};
use crate::sensors::SensorFaultConfig;

/// 2026-01-01T00:00:00Z: a fixed default so that a seed alone reproduces a fleet.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetConfig {
    pub seed: u64,
    pub machines: usize,
    /// Time of the first row, epoch ms.
    pub start_ms: i64,
    /// Sampling interval: one row per machine per interval.
    pub interval_ms: i64,
    /// Machine types to draw from (uniformly).
    pub types: Vec<MachineType>,
    pub sites: Vec<String>,
    /// Damage level at which condition monitoring raises an alarm and a repair gets planned.
    pub repair_threshold: f64,
    /// Days of operation after which a machine gets its calendar service regardless of condition.
    pub scheduled_days: f64,
    pub sensor_faults: SensorFaultConfig,
    /// Who maintains the machines: their own condition monitoring and calendar (the default), or
    /// a policy outside the simulator through [`Fleet::maintain`].
    #[serde(default)]
    pub upkeep: Upkeep,
}

/// Who decides when a machine is maintained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upkeep {
    /// A repair follows the condition alarm (`repair_threshold`), a calendar service follows
    /// `scheduled_days`: the history the models learn from.
    #[default]
    Builtin,
    /// Nothing but failures and [`Fleet::maintain`] ends a cycle: for comparing policies.
    External,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 42,
            machines: 30,
            start_ms: DEFAULT_START_MS,
            interval_ms: 3_600_000,
            types: MachineType::ALL.to_vec(),
            sites: vec!["aarhus".into(), "lyon".into(), "porto".into()],
            repair_threshold: 0.8,
            scheduled_days: 45.0,
            sensor_faults: SensorFaultConfig::default(),
            upkeep: Upkeep::Builtin,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("a fleet needs at least one machine")]
    NoMachines,
    #[error("the sampling interval must be between 1 minute and 1 day, got {0} ms")]
    Interval(i64),
    #[error("at least one machine type and one site are needed")]
    EmptyChoice,
    #[error("repair_threshold must be in (0, 1], got {0}")]
    RepairThreshold(f64),
    #[error("scheduled_days must be at least 1, got {0}")]
    ScheduledDays(f64),
    #[error("probability {name} must be in [0, 1), got {value}")]
    Probability { name: &'static str, value: f64 },
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.machines == 0 {
            return Err(ConfigError::NoMachines);
        }
        if !(60_000..=86_400_000).contains(&self.interval_ms) {
            return Err(ConfigError::Interval(self.interval_ms));
        }
        if self.types.is_empty() || self.sites.is_empty() {
            return Err(ConfigError::EmptyChoice);
        }
        if !(self.repair_threshold > 0.0 && self.repair_threshold <= 1.0) {
            return Err(ConfigError::RepairThreshold(self.repair_threshold));
        }
        if self.scheduled_days.is_nan() || self.scheduled_days < 1.0 {
            return Err(ConfigError::ScheduledDays(self.scheduled_days));
        }
        let f = &self.sensor_faults;
        for (name, value) in [
            ("drop_value_prob", f.drop_value_prob),
            ("drop_row_prob", f.drop_row_prob),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::Probability { name, value });
            }
        }
        for (name, value) in [
            ("stuck_per_day", f.stuck_per_day),
            ("drift_per_day", f.drift_per_day),
        ] {
            if value.is_nan() || value < 0.0 || value.is_infinite() {
                return Err(ConfigError::Probability { name, value });
            }
        }
        Ok(())
    }

    /// Number of sampling intervals in `days`.
    pub fn steps_for_days(&self, days: f64) -> usize {
        (days * 86_400_000.0 / self.interval_ms as f64)
            .round()
            .max(0.0) as usize
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// `<type>-<nnn>`, numbered per type.
    pub id: String,
    pub machine_type: MachineType,
    pub site: String,
}

/// Everything that happened in one sampling interval: events since the previous tick, then the rows
/// sampled at `ts_ms`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tick {
    pub ts_ms: i64,
    pub events: Vec<MaintenanceEvent>,
    pub readings: Vec<Reading>,
}

/// A stretch of a fleet's life, readings and events each in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct SimHistory {
    pub machines: Vec<MachineInfo>,
    pub readings: Vec<Reading>,
    pub events: Vec<MaintenanceEvent>,
}

pub struct Fleet {
    cfg: FleetConfig,
    machines: Vec<MachineInfo>,
    sims: Vec<MachineSim>,
    next_ts_ms: i64,
    scratch: Vec<Item>,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        // One master stream hands each machine its type, site and its own seed, so machine k is the
        // same whatever the fleet size and however its neighbours are stepped.
        let mut master = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut counts = std::collections::HashMap::<MachineType, usize>::new();
        let mut machines = Vec::with_capacity(cfg.machines);
        let mut sims = Vec::with_capacity(cfg.machines);
        for i in 0..cfg.machines {
            let machine_type = cfg.types[master.random_range(0..cfg.types.len())];
            let site = cfg.sites[master.random_range(0..cfg.sites.len())].clone();
            let n = counts.entry(machine_type).or_default();
            *n += 1;
            let rng = ChaCha8Rng::seed_from_u64(master.random());
            machines.push(MachineInfo {
                id: format!("{machine_type}-{n:03}"),
                machine_type,
                site,
            });
            sims.push(MachineSim::new(i as u32, machine_type, rng, &cfg));
        }
        Ok(Fleet {
            next_ts_ms: cfg.start_ms,
            cfg,
            machines,
            sims,
            scratch: Vec::new(),
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    pub fn machines(&self) -> &[MachineInfo] {
        &self.machines
    }

    /// Sample time of the next [`Fleet::step`].
    pub fn next_ts_ms(&self) -> i64 {
        self.next_ts_ms
    }

    /// Advances the fleet by one sampling interval.
    pub fn step(&mut self) -> Tick {
        let ts_ms = self.next_ts_ms;
        self.next_ts_ms += self.cfg.interval_ms;
        let mut tick = Tick {
            ts_ms,
            ..Tick::default()
        };
        for sim in &mut self.sims {
            sim.take_until(ts_ms, &self.cfg, &mut self.scratch);
            for item in self.scratch.drain(..) {
                match item {
                    Item::Reading(r) => tick.readings.push(r),
                    Item::Event(e) => tick.events.push(e),
                }
            }
        }
        tick.events.sort_by_key(|e| (e.ts_ms, e.machine));
        tick
    }

    /// Maintains `machine` at `at_ms` (after the last [`Fleet::step`]'s sample time): its current
    /// cycle ends there with a planned service (a repair if its damage had reached
    /// `repair_threshold`), and it restarts after the service's downtime. `None` when the machine
    /// is down at `at_ms` or fails before it.
    pub fn maintain(&mut self, machine: u32, at_ms: i64, note: &str) -> Option<EventKind> {
        let last = self.next_ts_ms - self.cfg.interval_ms;
        assert!(
            at_ms > last,
            "maintenance at {at_ms} is not after the last step ({last})"
        );
        self.sims
            .get_mut(machine as usize)?
            .maintain(at_ms, note, &self.cfg)
    }

    /// When `machine` runs from: the start of its running cycle, or while it is down the time it
    /// comes back. An event's downtime is this minus the event's time, read right after the
    /// step that returned the event.
    pub fn running_since_ms(&self, machine: u32) -> Option<i64> {
        self.sims.get(machine as usize).map(|s| s.cycle_start_ms)
    }

    /// Runs `steps` sampling intervals and collects them.
    pub fn run(&mut self, steps: usize) -> SimHistory {
        let mut h = SimHistory {
            machines: self.machines.clone(),
            readings: Vec::new(),
            events: Vec::new(),
        };
        for _ in 0..steps {
            let tick = self.step();
            h.readings.extend(tick.readings);
            h.events.extend(tick.events);
        }
        h
    }
}
