//! What goes wrong between a machine and its telemetry: drifting and stuck sensors, dropped readings.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::SENSORS;

/// Rates of sensor trouble. All zero gives clean telemetry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorFaultConfig {
    /// Probability that one sensor's value is missing from a row.
    pub drop_value_prob: f64,
    /// Probability that a whole row never arrives.
    pub drop_row_prob: f64,
    /// Expected stuck-sensor episodes per machine per day (a sensor repeats its last value).
    pub stuck_per_day: f64,
    /// Expected calibration drifts per machine per day; a drift lasts until the next maintenance.
    pub drift_per_day: f64,
}

impl Default for SensorFaultConfig {
    fn default() -> Self {
        SensorFaultConfig {
            drop_value_prob: 0.003,
            drop_row_prob: 0.002,
            stuck_per_day: 1.0 / 40.0,
            drift_per_day: 1.0 / 60.0,
        }
    }
}

impl SensorFaultConfig {
    pub fn none() -> Self {
        SensorFaultConfig {
            drop_value_prob: 0.0,
            drop_row_prob: 0.0,
            stuck_per_day: 0.0,
            drift_per_day: 0.0,
        }
    }
}

/// Which sensors of a row were faulty, and how far off the drifting ones were (only a simulation
/// knows). Bit `s` of a mask is sensor `s` in [`SENSORS`] order; a dropped value is `None` in the
/// reading itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorFaultTruth {
    /// Reporting a frozen value instead of the true one.
    pub stuck: u8,
    /// Under a calibration drift (the offset may still be small).
    pub drifting: u8,
    /// Calibration offset in the sensor's units.
    pub drift: [f32; SENSORS.len()],
}

impl SensorFaultTruth {
    pub fn is_stuck(&self, s: usize) -> bool {
        (self.stuck >> s) & 1 == 1
    }

    pub fn is_drifting(&self, s: usize) -> bool {
        (self.drifting >> s) & 1 == 1
    }
}

/// Per-cycle sensor fault state; a maintenance visit recalibrates everything.
#[derive(Default)]
pub(crate) struct SensorFaults {
    /// Accumulated calibration offset and its rate per hour, per sensor.
    drift: [(f32, f32); SENSORS.len()],
    /// Frozen value and hours left, per sensor.
    stuck: [Option<(f32, f32)>; SENSORS.len()],
    last: [Option<f32>; SENSORS.len()],
}

impl SensorFaults {
    /// Turns true values into what the telemetry reports, and says what went wrong.
    pub(crate) fn observe(
        &mut self,
        truth: &[f32; SENSORS.len()],
        interval_h: f32,
        cfg: &SensorFaultConfig,
        nominal: [f32; SENSORS.len()],
        rng: &mut ChaCha8Rng,
    ) -> ([Option<f32>; SENSORS.len()], SensorFaultTruth) {
        let per_step = interval_h as f64 / 24.0;
        if rng.random::<f64>() < cfg.drift_per_day * per_step {
            let s = rng.random_range(0..SENSORS.len());
            // 0.5-3 % of the nominal level per day, either way.
            let per_day = nominal[s] * rng.random_range(0.005..0.03);
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            self.drift[s].1 = sign * per_day / 24.0;
        }
        if rng.random::<f64>() < cfg.stuck_per_day * per_step {
            let s = rng.random_range(0..SENSORS.len());
            if let Some(v) = self.last[s] {
                self.stuck[s] = Some((v, rng.random_range(6.0..72.0)));
            }
        }
        let mut out = [None; SENSORS.len()];
        let mut faults = SensorFaultTruth::default();
        for s in 0..SENSORS.len() {
            self.drift[s].0 += self.drift[s].1 * interval_h;
            if self.drift[s].1 != 0.0 {
                faults.drifting |= 1 << s;
                faults.drift[s] = self.drift[s].0;
            }
            let mut v = truth[s] + self.drift[s].0;
            if let Some((frozen, left)) = &mut self.stuck[s] {
                faults.stuck |= 1 << s;
                v = *frozen;
                *left -= interval_h;
                if *left <= 0.0 {
                    self.stuck[s] = None;
                }
            }
            // Loggers report a fixed resolution; rounding here keeps files and streams identical.
            let v = (v * 1000.0).round() / 1000.0;
            self.last[s] = Some(v);
            if rng.random::<f64>() >= cfg.drop_value_prob {
                out[s] = Some(v);
            }
        }
        (out, faults)
    }
}
