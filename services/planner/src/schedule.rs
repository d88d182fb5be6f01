//! The scheduler: newest forecast of every machine in, one maintenance day per machine out, within
//! the slots each day has, with one line per machine saying why.
//!
//! Each machine's forecast is a due-date distribution ([`crate::risk::DueDate`]). A slot on day
//! `d` carries the risk `P(due before the slot)`. The machine's *deadline* is the last day whose
//! risk stays within `max_risk`: maintaining later gambles more than allowed, maintaining earlier
//! gives away useful life. Machines whose risk stays within `max_risk` over the whole horizon are
//! not planned yet. The rest are placed tightest deadline first, each on the latest day up to its
//! deadline with a free slot in its capacity group. With one capacity per day and deadlines that
//! all start at day 0 this order meets every deadline whenever any assignment can (a later
//! deadline can use every day an earlier one can). A machine that cannot make its deadline
//! (already past it, or every slot up to it taken) goes on the earliest free day, marked late.
//!
//! Over 400 lines only by its inline tests (capacity, lateness, tie-breaks, reasons).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::risk::DueDate;

pub const DAY_MS: i64 = 86_400_000;

/// The newest forecast of one machine, as `maintenance_forecast` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineForecast {
    pub machine_id: String,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    /// Time of the forecast (its window's newest row), epoch ms.
    pub ts_ms: i64,
    pub days: f64,
    pub p10: f64,
    pub p90: f64,
}

/// What shares a day's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One crew for the whole fleet.
    #[default]
    Fleet,
    /// A crew per site.
    Site,
    /// A crew per machine type (specialists).
    MachineType,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fleet" => Ok(GroupBy::Fleet),
            "site" => Ok(GroupBy::Site),
            "type" | "machine_type" => Ok(GroupBy::MachineType),
            _ => Err(format!(
                "unknown grouping {s:?} (expected fleet, site or type)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Maintenance slots per day in each group.
    pub slots_per_day: u32,
    pub by: GroupBy,
    /// Slots per day of particular groups (a site or type name), overriding `slots_per_day`.
    pub overrides: BTreeMap<String, u32>,
}

impl Capacity {
    pub fn fleet(slots_per_day: u32) -> Capacity {
        Capacity {
            slots_per_day,
            by: GroupBy::Fleet,
            overrides: BTreeMap::new(),
        }
    }

    /// The capacity group of a machine; machines without the tag share the group `unknown`.
    pub fn group_of(&self, f: &MachineForecast) -> String {
        self.group(f.machine_type.as_deref(), f.site.as_deref())
    }

    pub fn group(&self, machine_type: Option<&str>, site: Option<&str>) -> String {
        let tag = match self.by {
            GroupBy::Fleet => return "fleet".into(),
            GroupBy::Site => site,
            GroupBy::MachineType => machine_type,
        };
        tag.unwrap_or("unknown").to_string()
    }

    pub fn slots(&self, group: &str) -> u32 {
        self.overrides
            .get(group)
            .copied()
            .unwrap_or(self.slots_per_day)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    /// Time of day 0's slot, epoch ms; day `d`'s slot is `d` days later.
    pub first_slot_ms: i64,
    pub horizon_days: u32,
    /// Largest acceptable probability that a machine comes due before its slot.
    pub max_risk: f64,
    pub capacity: Capacity,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("the horizon must be at least one day")]
    Horizon,
    #[error("max_risk must be in (0, 1), got {0}")]
    MaxRisk(f64),
    #[error("machine {0} has a non-finite forecast")]
    NonFinite(String),
    #[error("machine {0} appears twice")]
    Duplicate(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// On a day within its deadline.
    Scheduled,
    /// On a day after its deadline: the deadline had passed or its slots were taken.
    Late,
    /// Due within the horizon, but no slot left in it.
    NoCapacity,
    /// Risk within bounds over the whole horizon: not planned yet.
    NotDue,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Late => "late",
            Status::NoCapacity => "no_capacity",
            Status::NotDue => "not_due",
        }
    }
}

/// The decision for one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub machine_id: String,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    pub group: String,
    pub status: Status,
    /// Day of the plan (0 = first day), when a slot was given.
    pub day: Option<u32>,
    pub slot_ms: Option<i64>,
    /// Probability that the machine comes due before its slot (or, unplanned, before the
    /// horizon's last slot).
    pub risk: f64,
    /// Last day whose risk is within `max_risk`; -1 when even day 0 is beyond it; `None` when the
    /// whole horizon is.
    pub deadline_day: Option<i64>,
    pub forecast: MachineForecast,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub config: PlanConfig,
    /// Every machine: planned ones in slot order, then those without a slot, then those not due.
    pub choices: Vec<Choice>,
}

impl Plan {
    /// Machines given a slot on `day`.
    pub fn on_day(&self, day: u32) -> impl Iterator<Item = &Choice> {
        self.choices.iter().filter(move |c| c.day == Some(day))
    }

    pub fn count(&self, status: Status) -> usize {
        self.choices.iter().filter(|c| c.status == status).count()
    }
}

/// One machine between the risk pass and the placement pass.
struct Candidate {
    index: usize,
    group: String,
    /// Risk at each day's slot.
    risk: Vec<f64>,
    deadline: Option<i64>,
}

pub fn plan(forecasts: &[MachineForecast], cfg: &PlanConfig) -> Result<Plan, PlanError> {
    if cfg.horizon_days == 0 {
        return Err(PlanError::Horizon);
    }
    if !(cfg.max_risk > 0.0 && cfg.max_risk < 1.0) {
        return Err(PlanError::MaxRisk(cfg.max_risk));
    }
    let mut seen = std::collections::HashSet::new();
    for f in forecasts {
        if ![f.days, f.p10, f.p90].iter().all(|v| v.is_finite()) {
            return Err(PlanError::NonFinite(f.machine_id.clone()));
        }
        if !seen.insert(&f.machine_id) {
            return Err(PlanError::Duplicate(f.machine_id.clone()));
        }
    }
    let horizon = cfg.horizon_days as usize;
    let slot_ms = |d: usize| cfg.first_slot_ms + d as i64 * DAY_MS;
    let mut cands: Vec<Candidate> = forecasts
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let due = DueDate::from_quantiles(f.p10, f.days, f.p90);
            let risk: Vec<f64> = (0..horizon)
                .map(|d| due.due_by((slot_ms(d) - f.ts_ms) as f64 / DAY_MS as f64))
                .collect();
            let within = risk.iter().take_while(|&&r| r <= cfg.max_risk).count();
            let deadline = (within < horizon).then_some(within as i64 - 1);
            Candidate {
                index,
                group: cfg.capacity.group_of(f),
                risk,
                deadline,
            }
        })
        .collect();
    // Tightest first; among machines already past their deadline, the most at risk first; then
    // the sooner median, then the id so that equal forecasts always give the same plan.
    cands.sort_by(|a, b| {
        let fa = &forecasts[a.index];
        let fb = &forecasts[b.index];
        let key = |c: &Candidate| c.deadline.unwrap_or(i64::MAX);
        key(a)
            .cmp(&key(b))
            .then(b.risk[0].total_cmp(&a.risk[0]))
            .then(fa.days.total_cmp(&fb.days))
            .then(fa.machine_id.cmp(&fb.machine_id))
    });

    let mut used: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut choices = Vec::with_capacity(forecasts.len());
    let pct = |r: f64| format!("{:.0}%", 100.0 * r);
    let max = pct(cfg.max_risk);
    for c in &cands {
        let f = &forecasts[c.index];
        let forecast = format!(
            "due in {:.1} d (p10 {:.1}, p90 {:.1}) as of its forecast",
            f.days, f.p10, f.p90
        );
        let slots = cfg.capacity.slots(&c.group);
        let load = used
            .entry(c.group.as_str())
            .or_insert_with(|| vec![0; horizon]);
        let free = |d: usize| load[d] < slots;
        let (status, day, reason) = match c.deadline {
            None => (
                Status::NotDue,
                None,
                format!(
                    "{forecast}; risk of coming due before the last slot of the {horizon}-day \
                     horizon is {} <= {max}: not planned yet",
                    pct(c.risk[horizon - 1])
                ),
            ),
            Some(deadline) if deadline >= 0 => {
                let deadline = deadline as usize;
                let after = if deadline + 1 < horizon {
                    format!(
                        "a slot after day {deadline} would risk it coming due first ({} > {max})",
                        pct(c.risk[deadline + 1])
                    )
                } else {
                    format!("its risk reaches {max} just after the horizon")
                };
                if let Some(d) = (0..=deadline).rev().find(|&d| free(d)) {
                    let why_day = if d == deadline {
                        "the latest day within that risk".to_string()
                    } else {
                        format!(
                            "days {}..={deadline} are full ({slots} slot(s) a day in {})",
                            d + 1,
                            c.group
                        )
                    };
                    (
                        Status::Scheduled,
                        Some(d),
                        format!(
                            "{forecast}; {after}; day {d}: {why_day}; risk at this slot {}",
                            pct(c.risk[d])
                        ),
                    )
                } else if let Some(d) = (deadline + 1..horizon).find(|&d| free(d)) {
                    (
                        Status::Late,
                        Some(d),
                        format!(
                            "{forecast}; {after}, but days 0..={deadline} are full in {}; \
                             earliest free day {d}, risk {}",
                            c.group,
                            pct(c.risk[d])
                        ),
                    )
                } else {
                    (
                        Status::NoCapacity,
                        None,
                        format!(
                            "{forecast}; due by day {deadline} but every slot of {} in the horizon \
                             is taken",
                            c.group
                        ),
                    )
                }
            }
            Some(_) => {
                let past = format!(
                    "{forecast}; already {} likely to come due before the first slot (> {max})",
                    pct(c.risk[0])
                );
                match (0..horizon).find(|&d| free(d)) {
                    Some(d) => (
                        Status::Late,
                        Some(d),
                        format!(
                            "{past}; day {d} is the earliest free slot in {}{}",
                            c.group,
                            if d > 0 {
                                format!(", risk {}", pct(c.risk[d]))
                            } else {
                                String::new()
                            }
                        ),
                    ),
                    None => (
                        Status::NoCapacity,
                        None,
                        format!("{past}; every slot of {} in the horizon is taken", c.group),
                    ),
                }
            }
        };
        if let Some(d) = day {
            load[d] += 1;
        }
        let risk = match day {
            Some(d) => c.risk[d],
            None if status == Status::NotDue => c.risk[horizon - 1],
            None => {
                c.risk[c
                    .deadline
                    .map_or(horizon - 1, |d| d.clamp(0, horizon as i64 - 1) as usize)]
            }
        };
        choices.push(Choice {
            machine_id: f.machine_id.clone(),
            machine_type: f.machine_type.clone(),
            site: f.site.clone(),
            group: c.group.clone(),
            status,
            day: day.map(|d| d as u32),
            slot_ms: day.map(slot_ms),
            risk,
            deadline_day: c.deadline,
            forecast: f.clone(),
            reason,
        });
    }
    choices.sort_by(|a, b| {
        (
            a.day.is_none(),
            a.status == Status::NotDue,
            a.day,
            &a.machine_id,
        )
            .cmp(&(
                b.day.is_none(),
                b.status == Status::NotDue,
                b.day,
                &b.machine_id,
            ))
    });
    Ok(Plan {
        config: cfg.clone(),
        choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000;

    fn fc(id: &str, days: f64, p10: f64, p90: f64) -> MachineForecast {
        MachineForecast {
            machine_id: id.into(),
            machine_type: Some(if id.starts_with('p') { "pump" } else { "press" }.into()),
            site: Some(if id.ends_with('a') { "aarhus" } else { "lyon" }.into()),
            ts_ms: T0,
            days,
            p10,
            p90,
        }
    }

    fn cfg(slots: u32, horizon: u32) -> PlanConfig {
        PlanConfig {
            first_slot_ms: T0 + DAY_MS / 3,
            horizon_days: horizon,
            max_risk: 0.1,
            capacity: Capacity::fleet(slots),
        }
    }

    fn choice<'a>(p: &'a Plan, id: &str) -> &'a Choice {
        p.choices.iter().find(|c| c.machine_id == id).unwrap()
    }

    #[test]
    fn a_lone_machine_goes_on_the_last_day_within_the_risk() {
        // p10 at 5 d: the 10% point. Slots at 0.33 + d days: day 4 (4.33 d) is within, day 5 not.
        let p = plan(&[fc("m1", 8.0, 5.0, 12.0)], &cfg(1, 14)).unwrap();
        let c = choice(&p, "m1");
        assert_eq!(
            (c.status, c.day, c.deadline_day),
            (Status::Scheduled, Some(4), Some(4))
        );
        assert!(c.risk <= 0.1 && c.risk > 0.05, "{}", c.risk);
        assert_eq!(c.slot_ms, Some(T0 + DAY_MS / 3 + 4 * DAY_MS));
        assert!(c.reason.contains("after day 4"), "{}", c.reason);
        // A wider interval on the early side moves the same median earlier.
        let p = plan(&[fc("m1", 8.0, 2.0, 12.0)], &cfg(1, 14)).unwrap();
        assert_eq!(choice(&p, "m1").day, Some(1));
    }

    #[test]
    fn machines_far_from_due_are_not_planned() {
        let p = plan(&[fc("m1", 40.0, 30.0, 50.0)], &cfg(1, 14)).unwrap();
        let c = choice(&p, "m1");
        assert_eq!(
            (c.status, c.day, c.deadline_day),
            (Status::NotDue, None, None)
        );
        assert!(c.reason.contains("not planned"), "{}", c.reason);
    }

    #[test]
    fn capacity_is_never_exceeded_and_deadlines_are_met_when_possible() {
        // Five machines with the same deadline (day 4) and one slot a day: days 0..=4 each get one.
        let fleet: Vec<_> = (0..5)
            .map(|i| fc(&format!("m{i}"), 8.0, 5.0, 12.0))
            .collect();
        let p = plan(&fleet, &cfg(1, 14)).unwrap();
        let mut days: Vec<u32> = p.choices.iter().map(|c| c.day.unwrap()).collect();
        days.sort();
        assert_eq!(days, [0, 1, 2, 3, 4]);
        assert!(p.choices.iter().all(|c| c.status == Status::Scheduled));
        let pushed = p.choices.iter().find(|c| c.day == Some(0)).unwrap();
        assert!(
            pushed.reason.contains("days 1..=4 are full"),
            "{}",
            pushed.reason
        );
        // A sixth cannot make day 4: it goes late, on day 5.
        let mut fleet = fleet;
        fleet.push(fc("m5", 8.0, 5.0, 12.0));
        let p = plan(&fleet, &cfg(1, 14)).unwrap();
        assert_eq!(p.count(Status::Late), 1);
        assert_eq!(
            p.choices
                .iter()
                .find(|c| c.status == Status::Late)
                .unwrap()
                .day,
            Some(5)
        );
        // The tight machine is served before the loose ones take its days.
        let mixed = vec![
            fc("loose1", 8.0, 5.0, 12.0),
            fc("loose2", 8.0, 5.0, 12.0),
            fc("tight", 3.0, 1.0, 6.0),
        ];
        let p = plan(&mixed, &cfg(1, 14)).unwrap();
        assert_eq!(choice(&p, "tight").status, Status::Scheduled);
        assert!(
            choice(&p, "tight").day.unwrap() <= choice(&p, "tight").deadline_day.unwrap() as u32
        );
    }

    #[test]
    fn randomised_fleets_respect_every_groups_capacity() {
        // A small LCG keeps the test dependency-free and reproducible.
        let mut s: u64 = 7;
        let mut rnd = || {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 33) as f64 / (1u64 << 31) as f64
        };
        for round in 0..50 {
            let n = 5 + (rnd() * 40.0) as usize;
            let fleet: Vec<MachineForecast> = (0..n)
                .map(|i| {
                    let days = rnd() * 20.0 - 2.0;
                    let mut f = fc(
                        &format!("m{i}{}", if rnd() < 0.5 { 'a' } else { 'b' }),
                        days,
                        days - rnd() * 4.0,
                        days + rnd() * 6.0,
                    );
                    f.machine_type =
                        Some(["pump", "press", "compressor"][(rnd() * 3.0) as usize].into());
                    f
                })
                .collect();
            let mut c = cfg(1 + (rnd() * 3.0) as u32, 3 + (rnd() * 12.0) as u32);
            c.capacity.by = [GroupBy::Fleet, GroupBy::Site, GroupBy::MachineType][round % 3];
            c.capacity.overrides.insert("pump".into(), 1);
            let p = plan(&fleet, &c).unwrap();
            assert_eq!(p.choices.len(), n);
            let mut load: BTreeMap<(String, u32), u32> = BTreeMap::new();
            for ch in &p.choices {
                if let Some(d) = ch.day {
                    *load.entry((ch.group.clone(), d)).or_default() += 1;
                    assert!(d < c.horizon_days);
                }
                assert_eq!(ch.group, c.capacity.group_of(&ch.forecast));
                match ch.status {
                    Status::Scheduled => {
                        assert!(ch.day.unwrap() as i64 <= ch.deadline_day.unwrap())
                    }
                    Status::Late => assert!(ch.day.unwrap() as i64 > ch.deadline_day.unwrap()),
                    Status::NoCapacity | Status::NotDue => assert!(ch.day.is_none()),
                }
            }
            for ((g, d), n) in &load {
                assert!(*n <= c.capacity.slots(g), "round {round}: {g} day {d}: {n}");
            }
            // Nothing is left without a slot while its group still has a free one.
            for ch in p.choices.iter().filter(|c| c.status == Status::NoCapacity) {
                let full = (0..c.horizon_days).all(|d| {
                    load.get(&(ch.group.clone(), d)).copied().unwrap_or(0)
                        >= c.capacity.slots(&ch.group)
                });
                assert!(full, "round {round}: {} left out", ch.machine_id);
            }
        }
    }

    #[test]
    fn overdue_machines_take_the_earliest_slot_most_at_risk_first() {
        let fleet = vec![
            fc("a", 0.5, 0.2, 1.0),
            fc("b", -1.0, -2.0, 0.0),
            fc("c", 9.0, 6.0, 12.0),
        ];
        let p = plan(&fleet, &cfg(1, 7)).unwrap();
        let b = choice(&p, "b");
        assert_eq!(
            (b.status, b.day, b.deadline_day),
            (Status::Late, Some(0), Some(-1))
        );
        assert!(b.reason.contains("already"), "{}", b.reason);
        assert_eq!(
            (choice(&p, "a").status, choice(&p, "a").day),
            (Status::Late, Some(1))
        );
        assert_eq!(choice(&p, "c").status, Status::Scheduled);
        // With one day of one slot, the second overdue machine has none.
        let p = plan(&fleet, &cfg(1, 1)).unwrap();
        assert_eq!(choice(&p, "a").status, Status::NoCapacity);
    }

    #[test]
    fn per_group_capacity_and_overrides() {
        let fleet = vec![
            fc("pump-a", 3.0, 1.5, 6.0),
            fc("pump-b", 3.0, 1.5, 6.0),
            fc("press-a", 3.0, 1.5, 6.0),
        ];
        let mut c = cfg(1, 3);
        c.capacity.by = GroupBy::Site;
        let p = plan(&fleet, &c).unwrap();
        // aarhus has two machines and one slot a day; lyon one.
        assert_eq!(choice(&p, "pump-b").group, "lyon");
        assert_ne!(choice(&p, "pump-a").day, choice(&p, "press-a").day);
        c.capacity.overrides.insert("aarhus".into(), 2);
        let p = plan(&fleet, &c).unwrap();
        assert_eq!(choice(&p, "pump-a").day, choice(&p, "press-a").day);
    }

    #[test]
    fn a_stale_forecast_counts_from_its_own_time() {
        let mut old = fc("m1", 8.0, 5.0, 12.0);
        old.ts_ms -= 3 * DAY_MS;
        let p = plan(&[old], &cfg(1, 14)).unwrap();
        assert_eq!(choice(&p, "m1").day, Some(1));
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(plan(&[], &cfg(1, 0)).unwrap_err(), PlanError::Horizon);
        let mut c = cfg(1, 3);
        c.max_risk = 1.0;
        assert_eq!(plan(&[], &c).unwrap_err(), PlanError::MaxRisk(1.0));
        let nan = fc("m", f64::NAN, 1.0, 2.0);
        assert!(matches!(
            plan(&[nan], &cfg(1, 3)),
            Err(PlanError::NonFinite(_))
        ));
        let twice = [fc("m", 1.0, 1.0, 2.0), fc("m", 1.0, 1.0, 2.0)];
        assert!(matches!(
            plan(&twice, &cfg(1, 3)),
            Err(PlanError::Duplicate(_))
        ));
    }
}
