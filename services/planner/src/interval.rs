//! A maintenance interval per machine type from the history of maintenance events.
//!
//! A cycle runs from one maintenance event of a machine to its next. It ends either because the
//! machine *needed* maintenance (a condition-based repair or a failure) or because it was serviced
//! before it needed to be (a calendar or planned service), which says only that it lasted at least
//! that long: a right-censored observation. Dropping censored cycles, or counting them as needs,
//! would bias the interval short; the Kaplan-Meier estimator uses both correctly. The suggested
//! interval is the B-life at `risk`: the cycle age by which that share of cycles had needed
//! maintenance (B10 for 10%), the usual basis of a time-based maintenance interval. A machine's
//! first event starts its first cycle (the history does not say when the cycle before it began),
//! and the cycle still running at its last sighting counts as censored there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schedule::DAY_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Condition-based repair: the machine needed it.
    Repair,
    /// The machine broke down.
    Failure,
    /// A calendar or planned service: done before the machine needed it.
    Scheduled,
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "repair" => Ok(EventKind::Repair),
            "failure" => Ok(EventKind::Failure),
            "scheduled" => Ok(EventKind::Scheduled),
            _ => Err(format!("unknown maintenance kind {s:?}")),
        }
    }
}

/// What the history says about one machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineEvents {
    pub machine_type: String,
    /// (epoch ms, kind), any order.
    pub events: Vec<(i64, EventKind)>,
    /// Newest sign of life (a row or forecast), epoch ms: ends the running cycle as censored.
    pub last_seen_ms: Option<i64>,
}

/// One cycle: its length and whether it ended in a need for maintenance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cycle {
    pub days: f64,
    pub needed: bool,
}

pub fn cycles(m: &MachineEvents) -> Vec<Cycle> {
    let mut events = m.events.clone();
    events.sort_by_key(|e| e.0);
    let mut out: Vec<Cycle> = events
        .windows(2)
        .map(|w| Cycle {
            days: (w[1].0 - w[0].0) as f64 / DAY_MS as f64,
            needed: w[1].1 != EventKind::Scheduled,
        })
        .collect();
    if let (Some(last), Some(seen)) = (events.last(), m.last_seen_ms)
        && seen > last.0
    {
        out.push(Cycle {
            days: (seen - last.0) as f64 / DAY_MS as f64,
            needed: false,
        });
    }
    out
}

/// Kaplan-Meier survival: `(t, S(t))` at each time a cycle needed maintenance. Censored cycles
/// leave the risk set after the needs at the same time, as the estimator's convention has it.
pub fn kaplan_meier(cycles: &[Cycle]) -> Vec<(f64, f64)> {
    let mut sorted = cycles.to_vec();
    sorted.sort_by(|a, b| a.days.total_cmp(&b.days).then(b.needed.cmp(&a.needed)));
    let mut at_risk = sorted.len();
    let mut s = 1.0;
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].days;
        let same: Vec<&Cycle> = sorted[i..].iter().take_while(|c| c.days == t).collect();
        let needs = same.iter().filter(|c| c.needed).count();
        if needs > 0 {
            s *= 1.0 - needs as f64 / at_risk as f64;
            out.push((t, s));
        }
        at_risk -= same.len();
        i += same.len();
    }
    out
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    pub machine_type: String,
    /// `None` when the history has too few needs to place the B-life.
    pub interval_days: Option<f64>,
    pub cycles: usize,
    /// Cycles that ended in a repair or failure.
    pub needed: usize,
    /// Median cycle age at need (Kaplan-Meier), when the history reaches it.
    pub median_days: Option<f64>,
    pub reason: String,
}

/// The B-life at `risk` (0.1 = B10) per machine type, in type order.
pub fn suggest(history: &[MachineEvents], risk: f64) -> Vec<Suggestion> {
    let mut by_type: BTreeMap<&str, Vec<Cycle>> = BTreeMap::new();
    for m in history {
        by_type
            .entry(m.machine_type.as_str())
            .or_default()
            .extend(cycles(m));
    }
    by_type
        .into_iter()
        .map(|(t, cycles)| {
            let km = kaplan_meier(&cycles);
            let crossing = |p: f64| km.iter().find(|(_, s)| 1.0 - s >= p - 1e-12).map(|e| e.0);
            let needed = cycles.iter().filter(|c| c.needed).count();
            let interval_days = crossing(risk);
            let median_days = crossing(0.5);
            let pct = 100.0 * risk;
            let reason = match interval_days {
                Some(d) => format!(
                    "{needed} of {} cycles ended in a repair or failure; by {d:.1} days {pct:.0}% \
                     of cycles had needed maintenance (Kaplan-Meier, calendar services as censored)",
                    cycles.len()
                ),
                None => format!(
                    "{needed} of {} cycles ended in a repair or failure: too few to estimate when \
                     {pct:.0}% of cycles need maintenance",
                    cycles.len()
                ),
            };
            Suggestion {
                machine_type: t.to_string(),
                interval_days,
                cycles: cycles.len(),
                needed,
                median_days,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(days: f64, needed: bool) -> Cycle {
        Cycle { days, needed }
    }

    /// Freireich et al. (1963), 6-MP arm: remission times in weeks, `+` censored. The estimates
    /// are the published ones (Kaplan-Meier table in Klein & Moeschberger, "Survival Analysis",
    /// 2nd ed., Table 4.1A): an independent reference for the estimator.
    #[test]
    fn kaplan_meier_matches_the_published_6mp_table() {
        let data = [
            (6, true),
            (6, true),
            (6, true),
            (6, false),
            (7, true),
            (9, false),
            (10, true),
            (10, false),
            (11, false),
            (13, true),
            (16, true),
            (17, false),
            (19, false),
            (20, false),
            (22, true),
            (23, true),
            (25, false),
            (32, false),
            (32, false),
            (34, false),
            (35, false),
        ];
        let cycles: Vec<Cycle> = data.iter().map(|&(t, n)| c(t as f64, n)).collect();
        let km = kaplan_meier(&cycles);
        let want = [
            (6.0, 0.857),
            (7.0, 0.807),
            (10.0, 0.753),
            (13.0, 0.690),
            (16.0, 0.627),
            (22.0, 0.538),
            (23.0, 0.448),
        ];
        assert_eq!(km.len(), want.len());
        for ((t, s), (wt, ws)) in km.iter().zip(want) {
            assert_eq!(*t, wt);
            assert!((s - ws).abs() < 5e-4, "S({t}) = {s}, published {ws}");
        }
    }

    #[test]
    fn cycles_run_between_events_and_the_open_one_is_censored() {
        let d = DAY_MS;
        let m = MachineEvents {
            machine_type: "pump".into(),
            events: vec![
                (30 * d, EventKind::Scheduled),
                (10 * d, EventKind::Repair),
                (42 * d, EventKind::Failure),
            ],
            last_seen_ms: Some(50 * d),
        };
        assert_eq!(
            cycles(&m),
            vec![c(20.0, false), c(12.0, true), c(8.0, false)]
        );
    }

    #[test]
    fn suggestion_is_the_b_life_and_says_so() {
        let d = DAY_MS;
        // Ten pumps, one cycle each after a first event at 0: needs at 11..=20 days.
        let history: Vec<MachineEvents> = (0..10)
            .map(|i| MachineEvents {
                machine_type: "pump".into(),
                events: vec![(0, EventKind::Repair), ((11 + i) * d, EventKind::Repair)],
                last_seen_ms: None,
            })
            .chain(std::iter::once(MachineEvents {
                machine_type: "press".into(),
                events: vec![(0, EventKind::Scheduled), (45 * d, EventKind::Scheduled)],
                last_seen_ms: None,
            }))
            .collect();
        let s = suggest(&history, 0.1);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].machine_type, "press");
        assert_eq!(s[0].interval_days, None);
        assert!(s[0].reason.contains("too few"));
        assert_eq!(s[1].interval_days, Some(11.0));
        assert_eq!(s[1].median_days, Some(15.0));
        assert_eq!((s[1].cycles, s[1].needed), (10, 10));
        // Five more pumps serviced by the calendar at 30 days had not needed it by then: they stay
        // in the risk set, so 1 need in 15 cycles is under 10% and the B10 moves to the second
        // need. Dropping them (1 in 10) would have said 11 days.
        let mut censored = history.clone();
        censored.extend((0..5).map(|_| MachineEvents {
            machine_type: "pump".into(),
            events: vec![(0, EventKind::Repair), (30 * d, EventKind::Scheduled)],
            last_seen_ms: None,
        }));
        let s = suggest(&censored, 0.1);
        assert_eq!(s[1].interval_days, Some(12.0));
        assert_eq!((s[1].cycles, s[1].needed), (15, 10));
    }
}
