//! Maintenance policies compared on a simulated fleet, and what each one cost.
//!
//! The planner's own policy is [`crate::plan`] recomputed daily, acting on its day-0 choices. The
//! fixed-interval policy here is the one the history suggests ([`crate::interval`]): maintain a
//! machine once its cycle is as old as its type's interval, most overdue first, within the same
//! slots. Run-to-failure does nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::schedule::Capacity;

/// A running machine as the fixed-interval policy sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub group: String,
    /// Days since its cycle started.
    pub age_days: f64,
    /// Its type's interval; `None` when the history gave none (never maintained by the calendar).
    pub interval_days: Option<f64>,
}

/// Indices of the machines the calendar says to maintain today: those at or past their interval,
/// most overdue first (ties by index), at most each group's slots.
pub fn fixed_interval(machines: &[Running], capacity: &Capacity) -> Vec<usize> {
    let mut due: Vec<(usize, f64)> = machines
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let over = m.age_days - m.interval_days?;
            (over >= 0.0).then_some((i, over))
        })
        .collect();
    due.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut used: BTreeMap<&str, u32> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, _) in due {
        let g = machines[i].group.as_str();
        let n = used.entry(g).or_default();
        if *n < capacity.slots(g) {
            *n += 1;
            out.push(i);
        }
    }
    out.sort_unstable();
    out
}

/// What one policy cost over the simulated period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub policy: String,
    pub failures: usize,
    /// Maintenance the policy ordered and the simulator carried out.
    pub actions: usize,
    /// Of those, on machines already past the condition alarm (a repair rather than a service).
    pub late_actions: usize,
    /// Machine-days down after failures.
    pub failure_days: f64,
    /// Machine-days down for the policy's maintenance.
    pub action_days: f64,
    /// Mean damage (0..1) of machines when the policy maintained them: how much life it used.
    pub wear_at_action: f64,
    pub machine_days: f64,
}

impl Outcome {
    pub fn days_lost(&self) -> f64 {
        self.failure_days + self.action_days
    }

    pub fn availability(&self) -> f64 {
        1.0 - self.days_lost() / self.machine_days.max(1e-9)
    }
}

/// The comparison as a Markdown table (BENCHMARKS.md and the demo's summary).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| policy | failures | maintenance actions (on alarm-worn machines) | machine-days lost: failures + maintenance = total | availability | mean wear at maintenance |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}) | {:.1} + {:.1} = **{:.1}** | {:.2}% | {} |",
            o.policy,
            o.failures,
            o.actions,
            o.late_actions,
            o.failure_days,
            o.action_days,
            o.days_lost(),
            100.0 * o.availability(),
            if o.actions > 0 {
                format!("{:.2}", o.wear_at_action)
            } else {
                "-".into()
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::GroupBy;

    #[test]
    fn the_calendar_takes_the_most_overdue_within_each_groups_slots() {
        // (site, age, interval); the caller puts each machine in its capacity group.
        let fleet = [
            ("lyon", 10.0, Some(12.0)),
            ("lyon", 15.0, Some(12.0)),
            ("lyon", 20.0, Some(12.0)),
            ("porto", 30.0, None),
            ("porto", 12.0, Some(12.0)),
            ("lyon", 13.0, Some(12.0)),
        ];
        let running = |cap: &Capacity| -> Vec<Running> {
            fleet
                .iter()
                .map(|&(site, age, interval)| Running {
                    group: cap.group(Some("pump"), Some(site)),
                    age_days: age,
                    interval_days: interval,
                })
                .collect()
        };
        let mut cap = Capacity::fleet(2);
        assert_eq!(fixed_interval(&running(&cap), &cap), vec![1, 2]);
        cap.by = GroupBy::Site;
        assert_eq!(fixed_interval(&running(&cap), &cap), vec![1, 2, 4]);
        cap.overrides.insert("lyon".into(), 3);
        assert_eq!(fixed_interval(&running(&cap), &cap), vec![1, 2, 4, 5]);
    }

    #[test]
    fn outcome_table_sums_the_days_lost() {
        let o = Outcome {
            policy: "p".into(),
            failures: 2,
            actions: 3,
            late_actions: 1,
            failure_days: 4.0,
            action_days: 1.5,
            wear_at_action: 0.5,
            machine_days: 100.0,
        };
        assert_eq!(o.days_lost(), 5.5);
        assert!((o.availability() - 0.945).abs() < 1e-12);
        let t = table(&[o]);
        assert!(
            t.contains("| p | 2 | 3 (1) | 4.0 + 1.5 = **5.5** | 94.50% | 0.50 |"),
            "{t}"
        );
    }
}
