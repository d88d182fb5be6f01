//! Realized accuracy: how far the forecasts made for a machine were from the maintenance that
//! actually came. Pure arithmetic, shared by the ingest service (which scores each event as it
//! arrives and writes `forecast_accuracy`), the trainer's live gate (which reads those points back)
//! and the tests (which recompute them offline).
//!
//! For a forecast made at `t` for a machine whose next maintenance came at `E`, the truth is
//! `min((E - t) / 1 day, cap)`: the model was trained to say at most its cap, so a forecast of
//! "cap or more" is right whenever the event was at least that far away. The error is
//! `forecast - truth` (positive: maintenance came earlier than forecast, the dangerous side), and
//! the interval holds the truth when `p10 <= truth <= p90`. Forecasts are grouped by the band the
//! truth fell in (`[0, 7)`, `[7, 30)`, `[30, inf)` days), so a model that is good far ahead but
//! late close to the event does not hide behind an average.
//!
//! A [`Tally`] keeps sums, not means: tallies of different events, machines or pages of forecasts
//! merge exactly, which is what the live gate and the running metrics need.
//! `tests/reference/gen_accuracy.py` recomputes the same numbers in NumPy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::DAY_MS;

/// Horizon band of a forecast: how many days the maintenance really was away (after the cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Band {
    /// `[0, 7)` days.
    Near,
    /// `[7, 30)` days.
    Mid,
    /// 30 days or more.
    Far,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Near, Band::Mid, Band::Far];

    pub fn of(truth_days: f64) -> Band {
        if truth_days < 7.0 {
            Band::Near
        } else if truth_days < 30.0 {
            Band::Mid
        } else {
            Band::Far
        }
    }

    /// The `band` tag of `forecast_accuracy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Near => "0-7d",
            Band::Mid => "7-30d",
            Band::Far => "30d+",
        }
    }

    pub fn parse(s: &str) -> Option<Band> {
        Band::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// Whether a forecast was served (it reached dashboards and alerts) or made by the shadow
/// challenger beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Champion,
    Shadow,
}

impl Role {
    /// The `role` tag of `forecast_accuracy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Shadow => "shadow",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "champion" => Some(Role::Champion),
            "shadow" => Some(Role::Shadow),
            _ => None,
        }
    }
}

/// One forecast as it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct PastForecast {
    pub ts_ms: i64,
    pub model: String,
    pub version: String,
    pub role: Role,
    pub days: f64,
    pub p10: f64,
    pub p90: f64,
}

/// One forecast against the truth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub truth: f64,
    pub error: f64,
    pub covered: bool,
    pub band: Band,
}

/// Scores a forecast made at `ts_ms` against maintenance at `event_ms`; `None` for a forecast
/// made after the event (it belongs to the machine's next life).
pub fn score(days: f64, p10: f64, p90: f64, ts_ms: i64, event_ms: i64, cap: f64) -> Option<Scored> {
    if ts_ms > event_ms {
        return None;
    }
    let truth = ((event_ms - ts_ms) as f64 / DAY_MS as f64).min(cap);
    Some(Scored {
        truth,
        error: days - truth,
        covered: p10 <= truth && truth <= p90,
        band: Band::of(truth),
    })
}

/// Sums over scored forecasts; merges exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub n: u64,
    pub error_sum: f64,
    pub abs_error_sum: f64,
    /// Forecasts whose p10-p90 interval held the truth.
    pub covered: u64,
}

impl Tally {
    pub fn add(&mut self, s: &Scored) {
        self.n += 1;
        self.error_sum += s.error;
        self.abs_error_sum += s.error.abs();
        self.covered += s.covered as u64;
    }

    pub fn merge(&mut self, o: &Tally) {
        self.n += o.n;
        self.error_sum += o.error_sum;
        self.abs_error_sum += o.abs_error_sum;
        self.covered += o.covered;
    }

    pub fn mae(&self) -> Option<f64> {
        (self.n > 0).then(|| self.abs_error_sum / self.n as f64)
    }

    /// Mean of `forecast - truth`.
    pub fn bias(&self) -> Option<f64> {
        (self.n > 0).then(|| self.error_sum / self.n as f64)
    }

    /// Share of forecasts whose p10-p90 interval held the truth.
    pub fn coverage(&self) -> Option<f64> {
        (self.n > 0).then(|| self.covered as f64 / self.n as f64)
    }
}

/// What a `forecast_accuracy` point is about (besides the machine and the event).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub model: String,
    pub version: String,
    pub role: Role,
    pub band: Band,
}

/// One maintenance event being scored: feed it the machine's forecasts (in any order, in as many
/// pages as they come), then read the tallies.
#[derive(Clone, Debug)]
pub struct EventScore {
    /// The machine's previous maintenance: forecasts at or before it belong to an earlier life.
    pub since_ms: Option<i64>,
    pub event_ms: i64,
    pub tallies: BTreeMap<Key, Tally>,
}

impl EventScore {
    pub fn new(since_ms: Option<i64>, event_ms: i64) -> Self {
        EventScore {
            since_ms,
            event_ms,
            tallies: BTreeMap::new(),
        }
    }

    /// Adds `f` if it was made in this life of the machine; `cap` is its model version's cap.
    /// Returns whether it counted.
    pub fn add(&mut self, f: &PastForecast, cap: f64) -> bool {
        if self.since_ms.is_some_and(|s| f.ts_ms <= s) {
            return false;
        }
        let Some(s) = score(f.days, f.p10, f.p90, f.ts_ms, self.event_ms, cap) else {
            return false;
        };
        let key = Key {
            model: f.model.clone(),
            version: f.version.clone(),
            role: f.role,
            band: s.band,
        };
        self.tallies.entry(key).or_default().add(&s);
        true
    }

    /// The tallies of one model version and role over every band.
    pub fn total(&self, model: &str, version: &str, role: Role) -> Tally {
        let mut t = Tally::default();
        for (k, v) in &self.tallies {
            if k.model == model && k.version == version && k.role == role {
                t.merge(v);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(day: f64, days: f64, p10: f64, p90: f64, version: &str, role: Role) -> PastForecast {
        PastForecast {
            ts_ms: (day * DAY_MS as f64) as i64,
            model: "m".into(),
            version: version.into(),
            role,
            days,
            p10,
            p90,
        }
    }

    #[test]
    fn one_event_by_hand() {
        // Event on day 50, previous one on day 5. Champion forecasts on days 5 (previous life),
        // 10, 30, 45, 49, 51 (next life); truths 40 -> cap 30, 20, 5, 1.
        let mut e = EventScore::new(Some(5 * DAY_MS), 50 * DAY_MS);
        let c = Role::Champion;
        let counted: Vec<bool> = [
            f(5.0, 1.0, 0.0, 2.0, "v1", c),
            f(10.0, 28.0, 25.0, 31.0, "v1", c),
            f(30.0, 24.0, 21.0, 26.0, "v1", c),
            f(45.0, 3.0, 2.0, 5.0, "v1", c),
            f(49.0, 2.0, 0.0, 1.0, "v1", c),
            f(51.0, 9.0, 0.0, 20.0, "v1", c),
        ]
        .iter()
        .map(|x| e.add(x, 30.0))
        .collect();
        assert_eq!(counted, [false, true, true, true, true, false]);
        let near = e.tallies[&Key {
            model: "m".into(),
            version: "v1".into(),
            role: c,
            band: Band::Near,
        }];
        // errors 3 - 5 = -2 and 2 - 1 = 1; both intervals hold the truth, bounds included
        assert_eq!(
            (near.n, near.error_sum, near.abs_error_sum, near.covered),
            (2, -1.0, 3.0, 2)
        );
        let total = e.total("m", "v1", c);
        // far: 28 - 30 = -2 (covered), mid: 24 - 20 = 4 (not covered)
        assert_eq!(total.n, 4);
        assert_eq!(total.mae(), Some(9.0 / 4.0));
        assert_eq!(total.bias(), Some(1.0 / 4.0));
        assert_eq!(total.coverage(), Some(3.0 / 4.0));
        assert_eq!(e.total("m", "v1", Role::Shadow), Tally::default());
    }

    #[test]
    fn bands_are_half_open_and_the_cap_moves_the_band() {
        assert_eq!(Band::of(0.0), Band::Near);
        assert_eq!(Band::of(6.999), Band::Near);
        assert_eq!(Band::of(7.0), Band::Mid);
        assert_eq!(Band::of(30.0), Band::Far);
        // 40 days ahead with a cap of 25 is a truth of 25: the mid band.
        let s = score(20.0, 10.0, 30.0, 0, 40 * DAY_MS, 25.0).unwrap();
        assert_eq!(
            (s.truth, s.error, s.covered, s.band),
            (25.0, -5.0, true, Band::Mid)
        );
        assert_eq!(score(1.0, 0.0, 2.0, DAY_MS + 1, DAY_MS, 30.0), None);
        for b in Band::ALL {
            assert_eq!(Band::parse(b.as_str()), Some(b));
        }
        assert_eq!(Role::parse(Role::Shadow.as_str()), Some(Role::Shadow));
    }

    #[test]
    fn tallies_merge_like_one_pass() {
        let mut one = EventScore::new(None, 60 * DAY_MS);
        let (mut a, mut b) = (one.clone(), one.clone());
        let fs: Vec<PastForecast> = (0..40)
            .map(|i| {
                let d = i as f64 * 1.5;
                f(d, (60.0 - d) * 0.9, 50.0 - d, 62.0 - d, "v2", Role::Shadow)
            })
            .collect();
        for (i, x) in fs.iter().enumerate() {
            one.add(x, 45.0);
            if i % 2 == 0 {
                a.add(x, 45.0)
            } else {
                b.add(x, 45.0)
            };
        }
        for (k, t) in b.tallies {
            a.tallies.entry(k).or_default().merge(&t);
        }
        let total = |e: &EventScore| e.total("m", "v2", Role::Shadow);
        assert_eq!(total(&one).n, 40);
        assert_eq!(total(&a).n, total(&one).n);
        assert_eq!(total(&a).covered, total(&one).covered);
        assert!((total(&a).abs_error_sum - total(&one).abs_error_sum).abs() < 1e-9);
        assert_eq!(Tally::default().mae(), None);
    }
}
