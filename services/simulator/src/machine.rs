//! One machine's physics: operating regime, wear, sensor readings and maintenance.
//!
//! A machine lives in *cycles*: it starts healthy, wears, and ends the cycle with a maintenance
//! event (condition-based repair, calendar service, or failure), then restarts after some downtime.
//! A whole cycle is simulated as soon as it starts, so every row knows its true time to the event
//! that ends its cycle before anyone downstream sees the row.
//!
//! Over 400 lines on purpose: regime, wear and its fault modes, readings and maintenance
//! are one state machine per cycle, and the truth each row carries depends on all of them.

use std::collections::VecDeque;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};
use serde::{Deserialize, Serialize};

use crate::sensors::{SensorFaultTruth, SensorFaults};
use crate::{FleetConfig, SENSORS, Upkeep};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: f64 = 86_400_000.0;

/// Index of each sensor in [`SENSORS`] order.
pub(crate) mod idx {
    pub const VIBRATION: usize = 0;
    pub const BEARING_TEMP: usize = 1;
    pub const CURRENT: usize = 2;
    pub const PRESSURE: usize = 3;
    pub const SPEED: usize = 4;
    pub const OIL_TEMP: usize = 5;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    Pump,
    Press,
    Compressor,
}

impl MachineType {
    pub const ALL: [MachineType; 3] = [
        MachineType::Pump,
        MachineType::Press,
        MachineType::Compressor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Pump => "pump",
            MachineType::Press => "press",
            MachineType::Compressor => "compressor",
        }
    }

    fn profile(self) -> &'static Profile {
        match self {
            MachineType::Pump => &PUMP,
            MachineType::Press => &PRESS,
            MachineType::Compressor => &COMPRESSOR,
        }
    }
}

impl std::fmt::Display for MachineType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MachineType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MachineType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown machine type {s:?} (expected pump, press or compressor)")
            })
    }
}

/// How a machine type is driven over the day.
#[derive(Clone, Copy)]
enum Duty {
    /// Runs around the clock at its regime's load (process pumps).
    Continuous,
    /// Two shifts on weekdays, idle at night and at weekends (presses).
    TwoShifts,
    /// Load/unload cycling whose hourly mean jitters around the regime's load (compressors).
    LoadUnload,
}

/// Nameplate values and wear sensitivities of one machine type.
struct Profile {
    duty: Duty,
    speed_rpm: f32,
    /// Fractional speed drop at full load (induction motor slip).
    slip: f32,
    current_a: f32,
    pressure_bar: f32,
    vibration_mm_s: f32,
    /// Temperature rise over ambient at full load.
    bearing_rise_c: f32,
    oil_rise_c: f32,
    /// Median days from the onset of wear to the damage limit, at nominal load.
    bearing_days: f64,
    seal_days: f64,
}

const PUMP: Profile = Profile {
    duty: Duty::Continuous,
    speed_rpm: 2960.0,
    slip: 0.012,
    current_a: 42.0,
    pressure_bar: 6.5,
    vibration_mm_s: 1.4,
    bearing_rise_c: 28.0,
    oil_rise_c: 30.0,
    bearing_days: 26.0,
    seal_days: 32.0,
};

const PRESS: Profile = Profile {
    duty: Duty::TwoShifts,
    speed_rpm: 1480.0,
    slip: 0.02,
    current_a: 64.0,
    pressure_bar: 180.0,
    vibration_mm_s: 2.6,
    bearing_rise_c: 24.0,
    oil_rise_c: 22.0,
    bearing_days: 32.0,
    seal_days: 24.0,
};

const COMPRESSOR: Profile = Profile {
    duty: Duty::LoadUnload,
    speed_rpm: 2950.0,
    slip: 0.015,
    current_a: 118.0,
    pressure_bar: 8.2,
    vibration_mm_s: 2.0,
    bearing_rise_c: 38.0,
    oil_rise_c: 52.0,
    bearing_days: 22.0,
    seal_days: 28.0,
};

/// The two fault modes. Each has its own damage variable in [0, 1] and its own sensor signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Rolling-element bearing wear: vibration and bearing temperature climb, faster and faster
    /// (spalling feeds on itself), and much faster under heavy load (L10 life ~ load^-3).
    BearingWear,
    /// Internal leakage (pump seal, compressor valve, press hydraulic seal): delivered pressure
    /// falls while motor current and oil temperature rise; vibration hardly moves.
    SealLeak,
}

impl FaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultMode::BearingWear => "bearing_wear",
            FaultMode::SealLeak => "seal_leak",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Condition-based: the damage crossed the alarm threshold and a crew fixed it.
    Repair,
    /// Calendar service after `scheduled_days` without maintenance.
    Scheduled,
    /// A damage variable reached its limit before anyone intervened.
    Failure,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Repair => "repair",
            EventKind::Scheduled => "scheduled",
            EventKind::Failure => "failure",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about a row only because this is a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Days from this row to the maintenance event that ends its cycle.
    pub days_to_maintenance: f32,
    /// Kind of that event.
    pub next_event: EventKind,
    pub bearing_wear: f32,
    pub seal_wear: f32,
    /// Load as a fraction of rated load.
    pub load: f32,
    /// Stuck and drifting sensors in this row.
    #[serde(default)]
    pub sensor_faults: SensorFaultTruth,
}

/// One sampled row of one machine. `values` follow [`SENSORS`]; `None` is a dropped reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Index into [`crate::Fleet::machines`].
    pub machine: u32,
    pub ts_ms: i64,
    pub values: [Option<f32>; SENSORS.len()],
    pub truth: Truth,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceEvent {
    pub machine: u32,
    pub ts_ms: i64,
    pub kind: EventKind,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    Reading(Reading),
    Event(MaintenanceEvent),
}

impl Item {
    pub(crate) fn ts_ms(&self) -> i64 {
        match self {
            Item::Reading(r) => r.ts_ms,
            Item::Event(e) => e.ts_ms,
        }
    }
}

/// State that outlives a maintenance cycle: the plant around the machine and its thermal mass.
pub(crate) struct Surroundings {
    /// Mean ambient temperature of the machine's hall.
    pub(crate) ambient_c: f32,
    regime_load: f32,
    regime_hours_left: f32,
    pub(crate) bearing_temp_c: f32,
    pub(crate) oil_temp_c: f32,
}

pub(crate) struct MachineSim {
    pub(crate) index: u32,
    kind: MachineType,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) surroundings: Surroundings,
    /// Start of the cycle whose items are pending (a sample time).
    pub(crate) cycle_start_ms: i64,
    /// Start of the next cycle to simulate (a sample time).
    pub(crate) next_cycle_ms: i64,
    /// Simulated rows and events not yet handed out, in time order: the rest of one cycle.
    pub(crate) pending: VecDeque<Item>,
    /// Items before this time are burn-in and are never handed out.
    pub(crate) visible_from_ms: i64,
}

impl MachineSim {
    pub(crate) fn new(
        index: u32,
        kind: MachineType,
        mut rng: ChaCha8Rng,
        cfg: &FleetConfig,
    ) -> Self {
        let ambient_c = 18.0 + rng.random_range(-4.0..6.0);
        // Machines join the fleet part-way through a cycle, so the fleet does not age in lockstep.
        let burn_in_steps = rng.random_range(0..=(30 * HOUR_MS * 24 / cfg.interval_ms));
        MachineSim {
            index,
            kind,
            surroundings: Surroundings {
                ambient_c,
                regime_load: rng.random_range(0.45..1.0),
                regime_hours_left: rng.random_range(0.0..96.0),
                bearing_temp_c: ambient_c,
                oil_temp_c: ambient_c,
            },
            rng,
            cycle_start_ms: cfg.start_ms - burn_in_steps * cfg.interval_ms,
            next_cycle_ms: cfg.start_ms - burn_in_steps * cfg.interval_ms,
            pending: VecDeque::new(),
            visible_from_ms: cfg.start_ms,
        }
    }

    /// Pops every item at or before `until_ms`, simulating new cycles as needed.
    pub(crate) fn take_until(&mut self, until_ms: i64, cfg: &FleetConfig, out: &mut Vec<Item>) {
        loop {
            while let Some(item) = self.pending.front() {
                if item.ts_ms() > until_ms {
                    return;
                }
                out.push(self.pending.pop_front().expect("front exists"));
            }
            self.simulate_cycle(cfg);
        }
    }

    fn simulate_cycle(&mut self, cfg: &FleetConfig) {
        let p = self.kind.profile();
        let rng = &mut self.rng;
        let interval_h = cfg.interval_ms as f64 / HOUR_MS as f64;
        let cycle_start = self.next_cycle_ms;
        self.cycle_start_ms = cycle_start;
        let own_upkeep = cfg.upkeep == Upkeep::Builtin;

        // Per-cycle variation: parts differ, and so does how soon wear sets in after a service.
        let bearing_onset_h = rng.random_range(0.0..3.0) * 24.0;
        let seal_onset_h = rng.random_range(0.0..4.0) * 24.0;
        let spread = LogNormal::new(0.0, 0.35).expect("valid lognormal");
        let bearing_days = p.bearing_days * spread.sample(rng);
        let seal_days = p.seal_days * spread.sample(rng);
        // Bearing damage grows as dd/dt = r * (load/0.75)^3 * (1 + 3d); from 0 to 1 that integrates
        // to ln(4)/3, which fixes r for the drawn number of days at nominal load.
        let bearing_rate = (4f64.ln() / 3.0) / (bearing_days * 24.0);
        // Leak damage grows as dd/dt = r * (0.4 + 0.6 load), 0.85 being that factor at nominal load.
        let seal_rate = 1.0 / (seal_days * 24.0 * 0.85);
        let mut bearing = rng.random_range(0.0..0.03);
        let mut seal = rng.random_range(0.0..0.03);

        let mut faults = SensorFaults::default();
        let mut rows: Vec<Reading> = Vec::new();
        // Planned repair time once the alarm has gone off.
        let mut repair_at_h: Option<f64> = None;
        let mut alarm_mode = FaultMode::BearingWear;

        let noise = Normal::new(0.0f32, 1.0).expect("valid normal");
        let mut step = 0i64;
        let (event_kind, event_ms, note) = loop {
            let ts_ms = cycle_start + step * cfg.interval_ms;
            let age_h = step as f64 * interval_h;
            let s = &mut self.surroundings;

            // Operating regime: production plans change every few days.
            s.regime_hours_left -= interval_h as f32;
            if s.regime_hours_left <= 0.0 {
                s.regime_load = rng.random_range(0.45..1.0);
                s.regime_hours_left = rng.random_range(24.0..144.0);
            }
            let t = Utc
                .timestamp_millis_opt(ts_ms)
                .single()
                .expect("valid timestamp");
            let hour = t.hour() as f32;
            let load = match p.duty {
                Duty::Continuous => s.regime_load + 0.03 * noise.sample(rng),
                Duty::TwoShifts => {
                    let weekday = t.weekday().num_days_from_monday() < 5;
                    if weekday && (6.0..22.0).contains(&hour) {
                        s.regime_load + 0.05 * noise.sample(rng)
                    } else {
                        0.12 + 0.02 * noise.sample(rng)
                    }
                }
                Duty::LoadUnload => s.regime_load * rng.random_range(0.88..1.12),
            }
            .clamp(0.05, 1.1);

            // Ambient follows the day (warmest mid-afternoon).
            let ambient = s.ambient_c
                + 5.0 * ((hour - 9.0) / 24.0 * std::f32::consts::TAU).sin()
                + 0.5 * noise.sample(rng);

            // Thermal targets, then a first-order lag (bearing housing ~2 h, oil sump ~4 h).
            let (b, l) = (bearing as f32, seal as f32);
            let bearing_target = ambient
                + p.bearing_rise_c * (0.45 + 0.55 * load)
                + 10.0 * b
                + 22.0 * b.powi(3)
                + 3.0 * l;
            let oil_target = ambient + p.oil_rise_c * (0.4 + 0.6 * load) + 14.0 * l + 4.0 * b * b;
            let lag = |tau_h: f32| 1.0 - (-(interval_h as f32) / tau_h).exp();
            s.bearing_temp_c += (bearing_target - s.bearing_temp_c) * lag(2.0);
            s.oil_temp_c += (oil_target - s.oil_temp_c) * lag(4.0);

            let mut truth_values = [0f32; SENSORS.len()];
            // Bearing defects add impulsive energy: the spread grows with damage, so the hourly
            // RMS gets spiky before its mean moves much.
            let spike = (1.0 + 0.25 * noise.sample(rng) * (0.1 + 2.0 * b)).max(0.6);
            truth_values[idx::VIBRATION] = p.vibration_mm_s
                * (0.75 + 0.35 * load)
                * (1.0 + 1.2 * b + 4.5 * b.powi(3) + 0.25 * l)
                * spike
                * (1.0 + 0.03 * noise.sample(rng));
            truth_values[idx::BEARING_TEMP] = s.bearing_temp_c + 0.3 * noise.sample(rng);
            // Leakage costs efficiency (more current for the same work); a worn bearing adds friction.
            truth_values[idx::CURRENT] = p.current_a
                * (0.3 + 0.7 * load)
                * (1.0 + 0.16 * l + 0.06 * b * b)
                * (1.0 + 0.012 * noise.sample(rng));
            truth_values[idx::PRESSURE] = p.pressure_bar
                * (0.55 + 0.45 * load)
                * (1.0 - 0.22 * l.powf(1.3))
                * (1.0 + 0.01 * noise.sample(rng));
            truth_values[idx::SPEED] =
                p.speed_rpm * (1.0 - p.slip * (load + 0.25 * b * b)) + 1.5 * noise.sample(rng);
            truth_values[idx::OIL_TEMP] = s.oil_temp_c + 0.3 * noise.sample(rng);

            let (values, sensor_faults) = faults.observe(
                &truth_values,
                interval_h as f32,
                &cfg.sensor_faults,
                p_nominal(p),
                rng,
            );
            if rng.random::<f64>() >= cfg.sensor_faults.drop_row_prob {
                rows.push(Reading {
                    machine: self.index,
                    ts_ms,
                    values,
                    // Filled in once the cycle's end is known.
                    truth: Truth {
                        days_to_maintenance: 0.0,
                        next_event: EventKind::Repair,
                        bearing_wear: b,
                        seal_wear: l,
                        load,
                        sensor_faults,
                    },
                });
            }

            // Wear during the coming interval. Hot oil thins the lubricant film, so a leak that
            // heats the oil also speeds up bearing wear.
            let oil_excess = (s.oil_temp_c - (ambient + p.oil_rise_c)).max(0.0) as f64;
            if age_h >= bearing_onset_h {
                bearing += bearing_rate
                    * (load as f64 / 0.75).powi(3)
                    * (1.0 + 3.0 * bearing)
                    * (1.0 + 0.03 * oil_excess)
                    * interval_h;
            }
            if age_h >= seal_onset_h {
                seal += seal_rate * (0.4 + 0.6 * load as f64) * interval_h;
            }
            let next_h = age_h + interval_h;
            let within = rng.random_range(0.0..1.0) * cfg.interval_ms as f64;
            let event_ms = ts_ms + within as i64;

            if bearing >= 1.0 || seal >= 1.0 {
                let mode = if bearing >= seal {
                    FaultMode::BearingWear
                } else {
                    FaultMode::SealLeak
                };
                break (
                    EventKind::Failure,
                    event_ms,
                    format!("{} failure", mode.as_str()),
                );
            }
            if !own_upkeep {
                // Only a failure or the outside policy (`Fleet::maintain`) ends the cycle.
            } else if let Some(at) = repair_at_h {
                if next_h >= at {
                    let wear = if alarm_mode == FaultMode::BearingWear {
                        bearing
                    } else {
                        seal
                    };
                    let note = format!("{} repair (damage {:.2})", alarm_mode.as_str(), wear);
                    break (EventKind::Repair, event_ms, note);
                }
            } else if bearing >= cfg.repair_threshold || seal >= cfg.repair_threshold {
                alarm_mode = if bearing >= seal {
                    FaultMode::BearingWear
                } else {
                    FaultMode::SealLeak
                };
                // A crew and parts have to be found: the repair happens some hours later.
                repair_at_h = Some(next_h + rng.random_range(4.0..48.0));
            }
            if own_upkeep && next_h >= cfg.scheduled_days * 24.0 {
                break (
                    EventKind::Scheduled,
                    event_ms,
                    "calendar service".to_string(),
                );
            }
            step += 1;
        };

        for row in &mut rows {
            row.truth.days_to_maintenance = ((event_ms - row.ts_ms) as f64 / DAY_MS) as f32;
            row.truth.next_event = event_kind;
        }
        self.pending.extend(
            rows.into_iter()
                .filter(|r| r.ts_ms >= self.visible_from_ms)
                .map(Item::Reading),
        );
        if event_ms >= self.visible_from_ms {
            self.pending.push_back(Item::Event(MaintenanceEvent {
                machine: self.index,
                ts_ms: event_ms,
                kind: event_kind,
                note,
            }));
        }

        self.restart_after(event_kind, event_ms, cfg);
    }

    /// Draws the downtime of an event that ends the pending cycle and sets the next cycle's start.
    pub(crate) fn restart_after(&mut self, kind: EventKind, event_ms: i64, cfg: &FleetConfig) {
        let downtime_h = match kind {
            EventKind::Scheduled => self.rng.random_range(3.0..8.0),
            EventKind::Repair => self.rng.random_range(6.0..20.0),
            EventKind::Failure => self.rng.random_range(24.0..72.0),
        };
        // The machine has cooled down by the time it restarts.
        self.surroundings.bearing_temp_c = self.surroundings.ambient_c;
        self.surroundings.oil_temp_c = self.surroundings.ambient_c;
        let restart_ms = event_ms + (downtime_h * HOUR_MS as f64) as i64;
        let cycle_start = self.cycle_start_ms;
        let steps = (restart_ms - cycle_start + cfg.interval_ms - 1) / cfg.interval_ms;
        self.next_cycle_ms = cycle_start + steps * cfg.interval_ms;
    }
}

/// Nominal sensor levels of a type, the scale for drifts.
fn p_nominal(p: &Profile) -> [f32; SENSORS.len()] {
    let mut n = [0f32; SENSORS.len()];
    n[idx::VIBRATION] = p.vibration_mm_s;
    n[idx::BEARING_TEMP] = 20.0 + p.bearing_rise_c;
    n[idx::CURRENT] = p.current_a;
    n[idx::PRESSURE] = p.pressure_bar;
    n[idx::SPEED] = p.speed_rpm;
    n[idx::OIL_TEMP] = 20.0 + p.oil_rise_c;
    n
}
