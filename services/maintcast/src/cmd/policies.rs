//! `maintcast demo --plan`: what the plan is worth. The same simulated fleet (same seed, same
//! capacity) is run for a quarter three times, each time maintained by another policy - run to
//! failure, fixed intervals (the interval the history suggests per type), and maintcast's plan
//! recomputed every day from live forecasts - and each policy's failures, maintenance actions and
//! machine-days lost are counted.
//!
//! The fleet keeps itself in no way here (`Upkeep::External`): only failures and the policy end a
//! cycle. A failure is repaired at once by an emergency crew, outside the planned slots; its
//! downtime (1-3 days) is what the policies try to avoid. A planned service takes 3-8 hours, or
//! 6-20 if the machine was already past the condition alarm (see the simulator's `upkeep`).
//! A short warm-up before the quarter, identical for every policy, fills the forecast windows.

use std::collections::HashMap;

use anyhow::Context;
use maintcast_ingest::model::Model;
use maintcast_ingest::serving::ServingModel;
use maintcast_ingest::window::{RowOutcome, WindowStore};
use maintcast_planner::interval::{self, MachineEvents, Suggestion};
use maintcast_planner::policy::{self, Outcome, Running};
use maintcast_planner::schedule::DAY_MS;
use maintcast_planner::{Capacity, GroupBy, MachineForecast, PlanConfig};
use maintcast_simulator::{EventKind, Fleet, FleetConfig, MachineInfo, SimHistory, Upkeep, output};

#[derive(clap::Args, Clone, Debug)]
pub struct PlanArgs {
    /// After the live stream, compare maintenance policies over a simulated quarter.
    #[arg(long)]
    pub plan: bool,
    /// Days simulated per policy.
    #[arg(long, default_value_t = 91.0)]
    pub plan_days: f64,
    /// Maintenance slots per day (per group with --plan-per), the same for every policy.
    #[arg(long, default_value_t = 2)]
    pub plan_slots: u32,
    /// What shares a day's slots: fleet, site or type.
    #[arg(long, default_value = "fleet")]
    pub plan_per: GroupBy,
    /// Days the daily plan looks ahead.
    #[arg(long, default_value_t = 14)]
    pub plan_horizon_days: u32,
    /// The plan's largest acceptable risk that a machine comes due before its slot.
    #[arg(long, default_value_t = 0.1)]
    pub plan_max_risk: f64,
    /// Share of cycles allowed to need maintenance before the fixed interval (0.1 = B10).
    #[arg(long, default_value_t = 0.1)]
    pub interval_risk: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    RunToFailure,
    FixedInterval,
    Plan,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::RunToFailure, Policy::FixedInterval, Policy::Plan];

    fn name(self, args: &PlanArgs) -> String {
        match self {
            Policy::RunToFailure => "run to failure".into(),
            Policy::FixedInterval => format!(
                "fixed interval (B{:.0} of the history per type)",
                100.0 * args.interval_risk
            ),
            Policy::Plan => format!(
                "maintcast plan, daily ({} d horizon, max risk {:.0}%)",
                args.plan_horizon_days,
                100.0 * args.plan_max_risk
            ),
        }
    }
}

/// The history's events as the interval suggestion reads them.
pub fn history_events(sim: &SimHistory, end_ms: i64) -> Vec<MachineEvents> {
    let mut per: Vec<MachineEvents> = sim
        .machines
        .iter()
        .map(|m| MachineEvents {
            machine_type: m.machine_type.as_str().into(),
            events: Vec::new(),
            last_seen_ms: Some(end_ms),
        })
        .collect();
    for e in &sim.events {
        let kind = match e.kind {
            EventKind::Repair => interval::EventKind::Repair,
            EventKind::Failure => interval::EventKind::Failure,
            EventKind::Scheduled => interval::EventKind::Scheduled,
        };
        per[e.machine as usize].events.push((e.ts_ms, kind));
    }
    per
}

/// Hour of the day (UTC) of the daily decision; maintenance follows at once.
const DECISION_HOUR_MS: i64 = 8 * 3_600_000;
const WARMUP_DAYS: f64 = 3.0;

/// The demo's closing section: the interval the history suggests per type, then every policy on
/// the demo's fleet over the period after the history.
pub fn summary(
    args: &PlanArgs,
    base: &FleetConfig,
    history: &SimHistory,
    history_end_ms: i64,
    model: &ServingModel,
) -> anyhow::Result<()> {
    let suggestions =
        interval::suggest(&history_events(history, history_end_ms), args.interval_risk);
    println!("suggested maintenance interval per machine type (from the simulated history)");
    for s in &suggestions {
        println!(
            "  {:<11} {:>8}  {}",
            s.machine_type,
            s.interval_days.map_or("-".into(), |d| format!("{d:.1} d")),
            s.reason
        );
    }
    eprintln!(
        "comparing maintenance policies: {} machines, {} days each, {} slot(s)/day per {:?} ...",
        base.machines, args.plan_days, args.plan_slots, args.plan_per
    );
    let outcomes = compare(base, history_end_ms, &suggestions, model, args)?;
    println!(
        "\nmaintenance policies over {} simulated days (seed {}, {} machines, {} slot(s)/day per {:?})",
        args.plan_days, base.seed, base.machines, args.plan_slots, args.plan_per
    );
    print!("{}", policy::table(&outcomes));
    Ok(())
}

/// Runs every policy on the fleet `base` describes, starting at `start_ms`.
pub fn compare(
    base: &FleetConfig,
    start_ms: i64,
    suggestions: &[Suggestion],
    model: &ServingModel,
    args: &PlanArgs,
) -> anyhow::Result<Vec<Outcome>> {
    anyhow::ensure!(args.plan_days >= 1.0, "--plan-days must be at least 1");
    Policy::ALL
        .iter()
        .map(|&p| {
            let t = std::time::Instant::now();
            let o = run_policy(base, start_ms, suggestions, model, args, p)?;
            eprintln!(
                "  {:<58} {:>3} failures, {:>3} actions, {:>6.1} machine-days lost  ({:.0} s)",
                o.policy,
                o.failures,
                o.actions,
                o.days_lost(),
                t.elapsed().as_secs_f64()
            );
            Ok(o)
        })
        .collect()
}

fn run_policy(
    base: &FleetConfig,
    start_ms: i64,
    suggestions: &[Suggestion],
    model: &ServingModel,
    args: &PlanArgs,
    policy: Policy,
) -> anyhow::Result<Outcome> {
    let quarter_start = start_ms + (WARMUP_DAYS * DAY_MS as f64) as i64;
    let quarter_end = quarter_start + (args.plan_days * DAY_MS as f64) as i64;
    let cfg = FleetConfig {
        start_ms,
        upkeep: Upkeep::External,
        ..base.clone()
    };
    let mut fleet = Fleet::new(cfg).context("the policy fleet")?;
    let machines = fleet.machines().to_vec();
    let capacity = Capacity {
        slots_per_day: args.plan_slots,
        by: args.plan_per,
        overrides: Default::default(),
    };
    let intervals: HashMap<&str, f64> = suggestions
        .iter()
        .filter_map(|s| Some((s.machine_type.as_str(), s.interval_days?)))
        .collect();
    let (window, nf) = (model.window(), model.features().len());
    let mut store = WindowStore::new(model.features().to_vec(), window, model.neutral_raw());
    let mut wear: Vec<f32> = vec![0.0; machines.len()];
    let mut out = Outcome {
        policy: policy.name(args),
        machine_days: machines.len() as f64 * args.plan_days,
        ..Outcome::default()
    };
    let mut wear_sum = 0.0f64;
    while fleet.next_ts_ms() < quarter_end {
        let tick = fleet.step();
        let counted = tick.ts_ms >= quarter_start;
        for e in &tick.events {
            if policy == Policy::Plan {
                store.apply_event(&output::maintenance_event(&machines[e.machine as usize], e));
            }
            if e.ts_ms < quarter_start {
                continue;
            }
            let back = fleet.running_since_ms(e.machine).expect("known machine");
            let down = (back.min(quarter_end) - e.ts_ms).max(0) as f64 / DAY_MS as f64;
            if e.kind == EventKind::Failure {
                out.failures += 1;
                out.failure_days += down;
            } else {
                out.action_days += down;
            }
        }
        for r in &tick.readings {
            wear[r.machine as usize] = r.truth.bearing_wear.max(r.truth.seal_wear);
            if policy == Policy::Plan {
                let t = output::telemetry(&machines[r.machine as usize], r);
                let _: RowOutcome = store.apply(&t);
            }
        }
        if !counted || tick.ts_ms.rem_euclid(DAY_MS) != DECISION_HOUR_MS {
            continue;
        }
        let chosen: Vec<u32> = match policy {
            Policy::RunToFailure => Vec::new(),
            Policy::FixedInterval => {
                let running: Vec<Running> = machines
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let since = fleet.running_since_ms(i as u32).expect("known machine");
                        Running {
                            group: capacity
                                .group(Some(m.machine_type.as_str()), Some(m.site.as_str())),
                            // A machine that is down is not due (negative age).
                            age_days: (tick.ts_ms - since) as f64 / DAY_MS as f64,
                            interval_days: intervals.get(m.machine_type.as_str()).copied(),
                        }
                    })
                    .collect();
                policy::fixed_interval(&running, &capacity)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            }
            Policy::Plan => {
                let forecasts = forecast_all(&store, &machines, model, window, nf)?;
                let plan = maintcast_planner::plan(
                    &forecasts,
                    &PlanConfig {
                        first_slot_ms: tick.ts_ms + 1,
                        horizon_days: args.plan_horizon_days,
                        max_risk: args.plan_max_risk,
                        capacity: capacity.clone(),
                    },
                )?;
                let index: HashMap<&str, u32> = machines
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.id.as_str(), i as u32))
                    .collect();
                plan.on_day(0)
                    .map(|c| index[c.machine_id.as_str()])
                    .collect()
            }
        };
        for m in chosen {
            let w = wear[m as usize];
            if let Some(kind) = fleet.maintain(m, tick.ts_ms + 1, "planned") {
                out.actions += 1;
                out.late_actions += usize::from(kind == EventKind::Repair);
                wear_sum += f64::from(w);
            }
        }
    }
    out.wear_at_action = wear_sum / out.actions.max(1) as f64;
    Ok(out)
}

/// The newest forecast of every machine with enough rows since its last maintenance.
fn forecast_all(
    store: &WindowStore,
    machines: &[MachineInfo],
    model: &ServingModel,
    window: usize,
    nf: usize,
) -> anyhow::Result<Vec<MachineForecast>> {
    let mut raw = vec![0f32; window * nf];
    let mut xs = Vec::new();
    let mut who = Vec::new();
    for m in machines {
        let Some(w) = store.get(&m.id) else { continue };
        if w.rows_since_reset < model.min_rows() as u64 || w.is_empty() {
            continue;
        }
        w.snapshot(window, &mut raw);
        let start = xs.len();
        xs.resize(start + window * nf, 0.0);
        for (src, dst) in raw.chunks(nf).zip(xs[start..].chunks_mut(nf)) {
            model.scale_row(src, dst);
        }
        who.push((m, w.newest_ts.unwrap_or_default()));
    }
    if who.is_empty() {
        return Ok(Vec::new());
    }
    let preds = model.predict(&xs, who.len())?;
    Ok(who
        .into_iter()
        .zip(preds)
        .map(|((m, ts_ms), p)| MachineForecast {
            machine_id: m.id.clone(),
            machine_type: Some(m.machine_type.as_str().into()),
            site: Some(m.site.clone()),
            ts_ms,
            days: f64::from(p.days),
            p10: f64::from(p.p10),
            p90: f64::from(p.p90),
        })
        .collect())
}
