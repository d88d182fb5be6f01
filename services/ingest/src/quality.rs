//! Input quality per machine and sensor: is what goes into a forecast what the model was trained
//! on? Four checks, each a flag on one sensor:
//!
//! - **stuck**: the sensor reported the identical value `stuck_rows` rows in a row (live sensors
//!   carry noise; a frozen logger repeats itself exactly). Missing rows do not break a run.
//! - **out of range**: its newest value lies outside the training minimum..maximum widened by
//!   `range_margin` of that span on each side (the model card's `feature_stats`).
//! - **missing**: more than `missing_share` of its values in the window were filled in rather than
//!   reported (counted over the newest 64 rows at most).
//! - **drift**: the window's mean is more than `drift_z` training standard deviations from the
//!   training mean: `|mean_window - mean_train| / std_train > drift_z`.
//!
//! The quality score is the share of sensors without a flag (`1 - flagged / sensors`); below
//! `min_score` the forecast is low-confidence and its interval is widened by `1 / max(score,
//! 0.25)` on each side of the median (a score of 0.5 doubles both half-widths).
//!
//! Memory per machine beyond the window: one 16-byte track per sensor (last value, run length,
//! 64-row missing bitmap), so 96 bytes for six sensors plus a `Vec`'s 24. Out of range and drift
//! are computed from the window itself when a forecast is made.

use maintcast_models::artifact::FeatureStats;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Identical consecutive values that make a sensor stuck.
    pub stuck_rows: u16,
    /// Margin beyond the training min..max, as a share of that span.
    pub range_margin: f32,
    /// Share of filled-in values in the window above which a sensor is missing.
    pub missing_share: f32,
    /// Standardised distance of the window mean from the training mean that is drift.
    pub drift_z: f32,
    /// Forecasts scoring below this are low-confidence.
    pub min_score: f32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            stuck_rows: 6,
            range_margin: 0.1,
            missing_share: 0.2,
            drift_z: 3.0,
            min_score: 0.9,
        }
    }
}

/// Flag bits of one sensor.
pub mod flag {
    pub const STUCK: u8 = 1;
    pub const OUT_OF_RANGE: u8 = 2;
    pub const MISSING: u8 = 4;
    pub const DRIFT: u8 = 8;
    pub const ALL: [(u8, &str); 4] = [
        (STUCK, "stuck"),
        (OUT_OF_RANGE, "out_of_range"),
        (MISSING, "missing"),
        (DRIFT, "drift"),
    ];
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Track {
    last: f32,
    run: u16,
    /// Bit i set: the value i rows ago was missing.
    missing: u64,
}

/// What one machine's sensors did between forecasts.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineQuality {
    tracks: Vec<Track>,
    /// Rows seen since the last reset, saturating at 64 (the missing bitmap's reach).
    rows: u8,
}

/// The verdict on one forecast's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// One flag set per sensor, in feature order.
    pub flags: Vec<u8>,
    pub score: f32,
}

impl MachineQuality {
    pub fn new(n_features: usize) -> Self {
        MachineQuality {
            tracks: vec![
                Track {
                    last: f32::NAN,
                    run: 0,
                    missing: 0
                };
                n_features
            ],
            rows: 0,
        }
    }

    /// A new row in feature order, NaN where the value was missing.
    pub fn observe(&mut self, raw: &[f32]) {
        self.rows = self.rows.saturating_add(1).min(64);
        for (t, &v) in self.tracks.iter_mut().zip(raw) {
            t.missing = (t.missing << 1) | u64::from(!v.is_finite());
            if !v.is_finite() {
                continue;
            }
            if v == t.last {
                t.run = t.run.saturating_add(1);
            } else {
                t.last = v;
                t.run = 1;
            }
        }
    }

    /// Maintenance: what the sensors did before says nothing about them now.
    pub fn reset(&mut self) {
        let n = self.tracks.len();
        *self = MachineQuality::new(n);
    }

    /// Judges the inputs of a forecast over `window` (the filled raw rows it is made from,
    /// row-major, oldest first). Without training statistics (an older card) only stuck and
    /// missing are checked.
    pub fn assess(&self, window: &[f32], stats: &[FeatureStats], cfg: &QualityConfig) -> Quality {
        let nf = self.tracks.len();
        let rows = window.len() / nf.max(1);
        let counted = usize::from(self.rows).min(rows.max(1)).min(64);
        let mask = if counted >= 64 {
            u64::MAX
        } else {
            (1u64 << counted) - 1
        };
        let mut flags = vec![0u8; nf];
        for (f, t) in self.tracks.iter().enumerate() {
            if t.run >= cfg.stuck_rows {
                flags[f] |= flag::STUCK;
            }
            if self.rows > 0
                && (t.missing & mask).count_ones() as f32 / counted as f32 > cfg.missing_share
            {
                flags[f] |= flag::MISSING;
            }
            let (Some(s), true) = (stats.get(f), rows > 0) else {
                continue;
            };
            let newest = window[(rows - 1) * nf + f];
            let margin = cfg.range_margin * (s.max - s.min);
            if newest < s.min - margin || newest > s.max + margin {
                flags[f] |= flag::OUT_OF_RANGE;
            }
            let mean = (0..rows)
                .map(|r| f64::from(window[r * nf + f]))
                .sum::<f64>()
                / rows as f64;
            if s.std > 0.0
                && ((mean - f64::from(s.mean)) / f64::from(s.std)).abs() > f64::from(cfg.drift_z)
            {
                flags[f] |= flag::DRIFT;
            }
        }
        let flagged = flags.iter().filter(|&&x| x != 0).count();
        Quality {
            score: if nf == 0 {
                1.0
            } else {
                1.0 - flagged as f32 / nf as f32
            },
            flags,
        }
    }

    /// Bytes this machine's quality state takes beyond the window.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.tracks.capacity() * std::mem::size_of::<Track>()
    }
}

impl Quality {
    pub fn low_confidence(&self, cfg: &QualityConfig) -> bool {
        self.score < cfg.min_score
    }

    /// The interval a low-confidence forecast is given: both half-widths times `1 / max(score,
    /// 0.25)`. A confident forecast keeps its own.
    pub fn widen(&self, cfg: &QualityConfig, days: f32, p10: f32, p90: f32) -> (f32, f32) {
        if !self.low_confidence(cfg) {
            return (p10, p90);
        }
        let w = 1.0 / self.score.max(0.25);
        (days - (days - p10) * w, days + (p90 - days) * w)
    }

    /// `sensor:flag` for every flag raised, comma-separated (empty when clean).
    pub fn describe(&self, features: &[String]) -> String {
        let mut out = Vec::new();
        for (f, &bits) in self.flags.iter().enumerate() {
            for (bit, name) in flag::ALL {
                if bits & bit != 0 {
                    out.push(format!(
                        "{}:{name}",
                        features.get(f).map_or("?", String::as_str)
                    ));
                }
            }
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(min: f32, max: f32, mean: f32, std: f32) -> FeatureStats {
        FeatureStats {
            min,
            max,
            mean,
            std,
            p01: min,
            p50: mean,
            p99: max,
        }
    }

    fn feed(q: &mut MachineQuality, rows: &[[f32; 2]]) -> Vec<f32> {
        for r in rows {
            q.observe(r);
        }
        // The window as the store would hold it: missing values filled from the previous row.
        let mut last = [0.0f32; 2];
        rows.iter()
            .flat_map(|r| {
                for f in 0..2 {
                    if r[f].is_finite() {
                        last[f] = r[f];
                    }
                }
                last
            })
            .collect()
    }

    #[test]
    fn a_healthy_machine_is_clean() {
        let mut q = MachineQuality::new(2);
        let rows: Vec<[f32; 2]> = (0..60)
            .map(|i| [10.0 + (i % 7) as f32 * 0.1, 50.0 + (i % 3) as f32])
            .collect();
        let w = feed(&mut q, &rows);
        let st = [stats(9.0, 12.0, 10.3, 0.5), stats(45.0, 55.0, 51.0, 2.0)];
        let got = q.assess(&w, &st, &QualityConfig::default());
        assert_eq!(got.flags, [0, 0]);
        assert_eq!(got.score, 1.0);
        assert!(!got.low_confidence(&QualityConfig::default()));
        assert_eq!(
            got.widen(&QualityConfig::default(), 5.0, 3.0, 8.0),
            (3.0, 8.0)
        );
        assert_eq!(got.describe(&["a".into(), "b".into()]), "");
    }

    #[test]
    fn each_fault_raises_its_own_flag() {
        let cfg = QualityConfig::default();
        let st = [stats(9.0, 12.0, 10.3, 0.5), stats(45.0, 55.0, 51.0, 2.0)];
        let names = ["vib".to_string(), "temp".to_string()];
        // Stuck: five repeats are noise-compatible, six are not.
        let mut q = MachineQuality::new(2);
        let mut rows: Vec<[f32; 2]> = (0..20)
            .map(|i| [10.0 + i as f32 * 0.01, 50.0 + (i % 3) as f32])
            .collect();
        rows.extend((0..5).map(|i| [10.5, 50.0 + (i % 3) as f32]));
        let w = feed(&mut q, &rows);
        assert_eq!(q.assess(&w, &st, &cfg).flags, [0, 0]);
        // A missing value in the run does not break it.
        let w2 = feed(&mut q, &[[f32::NAN, 52.0], [10.5, 50.0]]);
        let mut all = w.clone();
        all.extend(&w2[..]);
        let got = q.assess(&all, &st, &cfg);
        assert_eq!(got.flags, [flag::STUCK, 0]);
        assert_eq!(got.score, 0.5);
        assert!(got.low_confidence(&cfg));
        assert_eq!(got.describe(&names), "vib:stuck");
        // Wider by 1/0.5 = 2 on each side of the median.
        assert_eq!(got.widen(&cfg, 5.0, 3.0, 8.0), (1.0, 11.0));

        // Out of range: span 10, margin 1: 56 is in, 56.5 out.
        let mut q = MachineQuality::new(2);
        let mut rows: Vec<[f32; 2]> = (0..30)
            .map(|i| [10.0 + i as f32 * 0.01, 50.0 + (i % 3) as f32])
            .collect();
        rows.push([10.4, 56.0]);
        assert_eq!(
            {
                let w = feed(&mut q, &rows);
                q.assess(&w, &st, &cfg)
            }
            .flags,
            [0, 0]
        );
        let mut q = MachineQuality::new(2);
        rows.push([10.45, 56.5]);
        assert_eq!(
            {
                let w = feed(&mut q, &rows);
                q.assess(&w, &st, &cfg)
            }
            .flags,
            [0, flag::OUT_OF_RANGE]
        );

        // Missing: 12 of 60 (20%) is tolerated, 13 is not.
        for (extra, want) in [(None, 0), (Some(3), flag::MISSING)] {
            let mut q = MachineQuality::new(2);
            let hole = |i: usize| i % 5 == 1 || Some(i) == extra;
            let rows: Vec<[f32; 2]> = (0..60)
                .map(|i| {
                    [
                        if hole(i) {
                            f32::NAN
                        } else {
                            10.0 + i as f32 * 0.01
                        },
                        50.0 + (i % 3) as f32,
                    ]
                })
                .collect();
            assert_eq!(
                {
                    let w = feed(&mut q, &rows);
                    q.assess(&w, &st, &cfg)
                }
                .flags,
                [want, 0],
                "{extra:?}"
            );
        }

        // Drift: the window's mean of temp 3 std above training (51 + 6 = 57 would also be out
        // of range, so the test drifts vib: mean 10.3 + 3.2 * 0.5 = 11.9, still in range).
        let mut q = MachineQuality::new(2);
        let rows: Vec<[f32; 2]> = (0..60)
            .map(|i| [11.9 + (i % 2) as f32 * 0.01 - 0.005, 50.0 + (i % 3) as f32])
            .collect();
        let got = {
            let w = feed(&mut q, &rows);
            q.assess(&w, &st, &cfg)
        };
        assert_eq!(got.flags, [flag::DRIFT, 0]);
        assert_eq!(got.describe(&names), "vib:drift");
    }

    #[test]
    fn reset_forgets_and_memory_stays_small() {
        let mut q = MachineQuality::new(6);
        for _ in 0..10 {
            q.observe(&[1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0]);
        }
        let w = vec![1.0f32; 60];
        assert_ne!(q.assess(&w, &[], &QualityConfig::default()).score, 1.0);
        q.reset();
        q.observe(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(q.assess(&w[..6], &[], &QualityConfig::default()).score, 1.0);
        // 16 bytes a sensor: a few hundred bytes even for the 14 C-MAPSS features.
        assert_eq!(std::mem::size_of::<Track>(), 16);
        assert!(q.memory_bytes() <= 6 * 16 + 40, "{}", q.memory_bytes());
    }
}
