//! Input quality of a forecast: is what goes into it what the model was trained on? Four checks,
//! each a flag on one sensor, all judged from the machine's raw window (the rows as received, NaN
//! where missing) when a forecast is made:
//!
//! - **stuck**: the sensor's newest values are one identical value, repeated (missing rows do not
//!   break the run) at least `stuck_rows` times and at least as long as a healthy sensor of the
//!   training data repeats itself with a chance of `stuck_chance` (`FeatureStats::repeat`: a
//!   sensor quantised coarser than its noise repeats itself while healthy, and must not be called
//!   frozen for it).
//! - **out of range**: its newest value lies outside the training minimum..maximum widened by
//!   `range_margin` of that span on each side (the model card's `feature_stats`).
//! - **missing**: more than `missing_share` of its values in the window were filled in rather than
//!   reported.
//! - **drift**: the window's mean is more than `drift_z` training standard deviations from the
//!   training mean: `|mean_window - mean_train| / std_train > drift_z`.
//!
//! The quality score is the share of sensors without a flag (`1 - flagged / sensors`); below
//! `min_score` the forecast is low-confidence and its interval is widened by `1 / max(score,
//! 0.25)` on each side of the median (a score of 0.5 doubles both half-widths).
//!
//! Memory per machine beyond the window: none. Everything is read from the window's raw rows, so
//! checkpoints, restores and late maintenance events (which rewrite the window) need no state of
//! their own; the cost is one pass over the window per forecast, next to the one that fills it.
//!
//! Over 400 lines because half are the unit tests of the four checks and the settings.

use maintcast_models::artifact::FeatureStats;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Fewest identical consecutive values that make a sensor stuck.
    pub stuck_rows: u16,
    /// Chance of a healthy sensor repeating itself that long (sets the run per sensor from the
    /// training data's repeat share; the longer of the two applies).
    pub stuck_chance: f32,
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
            stuck_chance: 1e-3,
            range_margin: 0.1,
            missing_share: 0.2,
            drift_z: 3.0,
            min_score: 0.9,
        }
    }
}

impl QualityConfig {
    /// Problems with the settings, each naming its `--quality-*` flag.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let share = |v: f32| (0.0..=1.0).contains(&v);
        if self.stuck_rows < 2 {
            out.push("--quality-stuck-rows: must be at least 2".to_string());
        }
        if !(self.stuck_chance > 0.0 && self.stuck_chance < 1.0) {
            out.push("--quality-stuck-chance: must be in (0, 1)".to_string());
        }
        if !(self.range_margin.is_finite() && self.range_margin >= 0.0) {
            out.push("--quality-range-margin: must be 0 or more".to_string());
        }
        if !share(self.missing_share) {
            out.push("--quality-missing-share: must be in [0, 1]".to_string());
        }
        if !(self.drift_z.is_finite() && self.drift_z > 0.0) {
            out.push("--quality-drift-z: must be above 0".to_string());
        }
        if !share(self.min_score) {
            out.push("--quality-min-score: must be in [0, 1]".to_string());
        }
        out
    }

    /// Identical values in a row that make sensor `s` stuck.
    fn stuck_after(&self, s: Option<&FeatureStats>) -> u32 {
        let base = u32::from(self.stuck_rows);
        match s.map(|s| s.repeat) {
            // Constant in training: a repeat says nothing.
            Some(r) if r >= 1.0 => u32::MAX,
            Some(r) if r > 0.0 => {
                let k = 1.0 + (self.stuck_chance.ln() / r.ln()).ceil();
                base.max(k.min(u32::MAX as f32) as u32)
            }
            _ => base,
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

/// What a window's raw rows say about each sensor, taken when the forecast is requested (the
/// filled window loses which values were missing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Real rows looked at.
    pub rows: u16,
    /// Per sensor: length of the newest run of identical values, and missing values.
    per_sensor: Vec<(u16, u16)>,
}

impl Evidence {
    /// From a window's real raw rows, oldest first, `n_features` values each, NaN where missing.
    pub fn of_rows<'a>(
        rows: impl DoubleEndedIterator<Item = &'a [f32]>,
        n_features: usize,
    ) -> Self {
        // Per sensor: newest finite value, its run, and whether the run is still open.
        let mut state = vec![(f32::NAN, 0u16, true); n_features];
        let mut missing = vec![0u16; n_features];
        let mut n = 0u16;
        for row in rows.rev() {
            n = n.saturating_add(1);
            for (f, &v) in row.iter().take(n_features).enumerate() {
                let (last, run, open) = &mut state[f];
                if !v.is_finite() {
                    missing[f] = missing[f].saturating_add(1);
                } else if last.is_nan() {
                    (*last, *run) = (v, 1);
                } else if *open && v == *last {
                    *run = run.saturating_add(1);
                } else {
                    *open = false;
                }
            }
        }
        Evidence {
            rows: n,
            per_sensor: state.iter().map(|s| s.1).zip(missing).collect(),
        }
    }

    /// Judges a forecast's inputs: this evidence and `filled`, the window as the model gets it
    /// (row-major, oldest first, left-padded; its last `rows` rows are real). `stats` follow the
    /// window's feature order; without them (an older card) only stuck and missing are checked.
    pub fn assess(&self, filled: &[f32], stats: &[FeatureStats], cfg: &QualityConfig) -> Quality {
        let nf = self.per_sensor.len();
        let total = filled.len() / nf.max(1);
        let rows = usize::from(self.rows).min(total);
        let mut flags = vec![0u8; nf];
        for (f, &(run, missing)) in self.per_sensor.iter().enumerate() {
            let s = stats.get(f);
            if u32::from(run) >= cfg.stuck_after(s) {
                flags[f] |= flag::STUCK;
            }
            if rows > 0 && f32::from(missing) / rows as f32 > cfg.missing_share {
                flags[f] |= flag::MISSING;
            }
            let (Some(s), true) = (s, rows > 0) else {
                continue;
            };
            let newest = filled[(total - 1) * nf + f];
            let margin = cfg.range_margin * (s.max - s.min);
            if newest < s.min - margin || newest > s.max + margin {
                flags[f] |= flag::OUT_OF_RANGE;
            }
            let mean = (total - rows..total)
                .map(|r| f64::from(filled[r * nf + f]))
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
}

/// Flags against a truth, for measuring the checks (the precision/recall example and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl Confusion {
    pub fn add(&mut self, flagged: bool, truth: bool) {
        match (flagged, truth) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            _ => {}
        }
    }
    pub fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
    pub fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
}

/// The verdict on one forecast's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// One flag set per sensor, in the window's feature order.
    pub flags: Vec<u8>,
    pub score: f32,
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

    /// `(sensor, flag name)` for every flag raised.
    pub fn raised<'a>(
        &'a self,
        features: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'static str)> + 'a {
        self.flags.iter().enumerate().flat_map(move |(f, &bits)| {
            flag::ALL
                .iter()
                .filter(move |(bit, _)| bits & bit != 0)
                .map(move |(_, name)| (features.get(f).map_or("?", String::as_str), *name))
        })
    }

    /// `sensor:flag` for every flag raised, comma-separated (empty when clean).
    pub fn describe(&self, features: &[String]) -> String {
        self.raised(features)
            .map(|(s, f)| format!("{s}:{f}"))
            .collect::<Vec<_>>()
            .join(",")
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
            repeat: 0.0,
        }
    }

    /// Judges the newest 60 rows as ingest would: evidence from the raw rows, the filled window
    /// (missing values carried from the previous row) for range and drift.
    fn judge(rows: &[[f32; 2]], st: &[FeatureStats], cfg: &QualityConfig) -> Quality {
        let rows = &rows[rows.len().saturating_sub(60)..];
        let ev = Evidence::of_rows(rows.iter().map(|r| &r[..]), 2);
        let mut last = [0.0f32; 2];
        let filled: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                for f in 0..2 {
                    if r[f].is_finite() {
                        last[f] = r[f];
                    }
                }
                last
            })
            .collect();
        ev.assess(&filled, st, cfg)
    }

    #[test]
    fn a_healthy_machine_is_clean() {
        let rows: Vec<[f32; 2]> = (0..60)
            .map(|i| [10.0 + (i % 7) as f32 * 0.1, 50.0 + (i % 3) as f32])
            .collect();
        let st = [stats(9.0, 12.0, 10.3, 0.5), stats(45.0, 55.0, 51.0, 2.0)];
        let got = judge(&rows, &st, &QualityConfig::default());
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
        let mut rows: Vec<[f32; 2]> = (0..20)
            .map(|i| [10.0 + i as f32 * 0.01, 50.0 + (i % 3) as f32])
            .collect();
        rows.extend((0..5).map(|i| [10.5, 50.0 + (i % 3) as f32]));
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, 0]);
        // A missing value in the run does not break it.
        rows.extend([[f32::NAN, 52.0], [10.5, 50.0]]);
        let got = judge(&rows, &st, &cfg);
        assert_eq!(got.flags, [flag::STUCK, 0]);
        assert_eq!(got.score, 0.5);
        assert!(got.low_confidence(&cfg));
        assert_eq!(got.describe(&names), "vib:stuck");
        // Wider by 1/0.5 = 2 on each side of the median.
        assert_eq!(got.widen(&cfg, 5.0, 3.0, 8.0), (1.0, 11.0));
        // A new value ends the run.
        rows.push([10.6, 51.0]);
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, 0]);

        // Out of range: span 10, margin 1: 56 is in, 56.5 out.
        let mut rows: Vec<[f32; 2]> = (0..30)
            .map(|i| [10.0 + i as f32 * 0.01, 50.0 + (i % 3) as f32])
            .collect();
        rows.push([10.4, 56.0]);
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, 0]);
        rows.push([10.45, 56.5]);
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, flag::OUT_OF_RANGE]);

        // Missing: 12 of 60 (20%) is tolerated, 13 is not.
        for (extra, want) in [(None, 0), (Some(3), flag::MISSING)] {
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
            assert_eq!(judge(&rows, &st, &cfg).flags, [want, 0], "{extra:?}");
        }

        // Drift: vib's window mean 3.2 training std above its training mean (10.3 + 3.2 * 0.5 =
        // 11.9), still inside the training range.
        let rows: Vec<[f32; 2]> = (0..60)
            .map(|i| [11.9 + (i % 2) as f32 * 0.01 - 0.005, 50.0 + (i % 3) as f32])
            .collect();
        let got = judge(&rows, &st, &cfg);
        assert_eq!(got.flags, [flag::DRIFT, 0]);
        assert_eq!(got.describe(&names), "vib:drift");
    }

    /// A sensor that repeats itself half of the time in training (coarse resolution) needs a run
    /// with a chance below `stuck_chance`: 1 + ceil(ln 0.001 / ln 0.5) = 11 identical values.
    #[test]
    fn a_coarse_sensor_needs_a_longer_run_to_be_stuck() {
        let cfg = QualityConfig::default();
        let mut coarse = stats(9.0, 12.0, 10.3, 0.5);
        coarse.repeat = 0.5;
        let st = [coarse, stats(45.0, 55.0, 51.0, 2.0)];
        let mut rows: Vec<[f32; 2]> = (0..20)
            .map(|i| [10.0 + i as f32 * 0.01, 50.0 + (i % 3) as f32])
            .collect();
        rows.extend((0..10).map(|i| [10.5, 50.0 + (i % 3) as f32]));
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, 0]);
        rows.push([10.5, 51.0]);
        assert_eq!(judge(&rows, &st, &cfg).flags, [flag::STUCK, 0]);
        // Constant in training: never stuck.
        let mut constant = stats(10.5, 10.5, 10.5, 0.0);
        constant.repeat = 1.0;
        let st = [constant, stats(45.0, 55.0, 51.0, 2.0)];
        assert_eq!(judge(&rows, &st, &cfg).flags, [0, 0]);
    }

    #[test]
    fn without_training_statistics_only_stuck_and_missing_are_judged() {
        let rows: Vec<[f32; 2]> = (0..60).map(|_| [1e9, f32::NAN]).collect();
        let got = judge(&rows, &[], &QualityConfig::default());
        assert_eq!(got.flags, [flag::STUCK, flag::MISSING]);
        assert_eq!(got.score, 0.0);
        let ev = Evidence::of_rows(std::iter::empty(), 2);
        assert_eq!(
            ev.assess(&[0.0; 4], &[], &QualityConfig::default()).score,
            1.0
        );
    }

    #[test]
    fn settings_are_checked_naming_the_flag() {
        assert!(QualityConfig::default().problems().is_empty());
        let bad = QualityConfig {
            stuck_rows: 1,
            min_score: 1.5,
            drift_z: 0.0,
            ..QualityConfig::default()
        };
        let p = bad.problems().join("; ");
        for flag in [
            "--quality-stuck-rows",
            "--quality-min-score",
            "--quality-drift-z",
        ] {
            assert!(p.contains(flag), "{p}");
        }
    }
}
