//! The plan for people and programs: a terminal table, CSV and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::interval::Suggestion;
use crate::schedule::{Plan, Status};

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// The plan as a table, planned machines by day, then the ones without a slot; machines not due
/// are counted, not listed (`all` lists them too).
pub fn table(plan: &Plan, suggestions: &[Suggestion], all: bool) -> String {
    let c = &plan.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "maintenance plan: {} days from {}, {} slot(s)/day per {:?}{}, max risk {:.0}%",
        c.horizon_days,
        rfc3339(c.first_slot_ms),
        c.capacity.slots_per_day,
        c.capacity.by,
        if c.capacity.overrides.is_empty() {
            String::new()
        } else {
            format!(" (overrides {:?})", c.capacity.overrides)
        },
        100.0 * c.max_risk
    );
    let _ = writeln!(
        s,
        "{:>3}  {:<10} {:<16} {:<11} {:<8} {:<11} {:>5} {:>6} {:>13}  why",
        "day", "date", "machine", "type", "site", "status", "risk", "days", "p10..p90"
    );
    for ch in &plan.choices {
        if ch.status == Status::NotDue && !all {
            continue;
        }
        let f = &ch.forecast;
        let _ = writeln!(
            s,
            "{:>3}  {:<10} {:<16} {:<11} {:<8} {:<11} {:>4.0}% {:>6.1} {:>6.1}..{:<6.1}  {}",
            ch.day.map_or("-".into(), |d| d.to_string()),
            ch.slot_ms
                .map_or("-".into(), |ms| rfc3339(ms)[..10].to_string()),
            ch.machine_id,
            opt(&ch.machine_type),
            opt(&ch.site),
            ch.status.as_str(),
            100.0 * ch.risk,
            f.days,
            f.p10,
            f.p90,
            ch.reason
        );
    }
    let _ = writeln!(
        s,
        "{} scheduled, {} late, {} without a slot, {} not due within the horizon",
        plan.count(Status::Scheduled),
        plan.count(Status::Late),
        plan.count(Status::NoCapacity),
        plan.count(Status::NotDue)
    );
    if !suggestions.is_empty() {
        let _ = writeln!(s, "\nsuggested maintenance interval per machine type");
        for g in suggestions {
            let _ = writeln!(
                s,
                "  {:<11} {:>8}  {}",
                g.machine_type,
                g.interval_days.map_or("-".into(), |d| format!("{d:.1} d")),
                g.reason
            );
        }
    }
    s
}

#[derive(Serialize)]
struct CsvRow<'a> {
    machine_id: &'a str,
    machine_type: &'a str,
    site: &'a str,
    group: &'a str,
    status: &'a str,
    day: Option<u32>,
    slot: String,
    risk: f64,
    deadline_day: Option<i64>,
    forecast_at: String,
    days_to_maintenance: f64,
    days_p10: f64,
    days_p90: f64,
    reason: &'a str,
}

pub fn write_csv(plan: &Plan, out: impl std::io::Write) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    for ch in &plan.choices {
        w.serialize(CsvRow {
            machine_id: &ch.machine_id,
            machine_type: opt(&ch.machine_type),
            site: opt(&ch.site),
            group: &ch.group,
            status: ch.status.as_str(),
            day: ch.day,
            slot: ch.slot_ms.map(rfc3339).unwrap_or_default(),
            risk: ch.risk,
            deadline_day: ch.deadline_day,
            forecast_at: rfc3339(ch.forecast.ts_ms),
            days_to_maintenance: ch.forecast.days,
            days_p10: ch.forecast.p10,
            days_p90: ch.forecast.p90,
            reason: &ch.reason,
        })?;
    }
    w.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct JsonReport<'a> {
    plan: &'a Plan,
    suggested_intervals: &'a [Suggestion],
}

pub fn to_json(plan: &Plan, suggestions: &[Suggestion]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&JsonReport {
        plan,
        suggested_intervals: suggestions,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Capacity, MachineForecast, PlanConfig, plan};

    #[test]
    fn csv_and_json_carry_every_machine_and_the_reason() {
        let f = |id: &str, days: f64| MachineForecast {
            machine_id: id.into(),
            machine_type: Some("pump".into()),
            site: None,
            ts_ms: 0,
            days,
            p10: days - 1.5,
            p90: days + 2.0,
        };
        let p = plan(
            &[f("a", 2.0), f("b", 40.0)],
            &PlanConfig {
                first_slot_ms: 0,
                horizon_days: 7,
                max_risk: 0.1,
                capacity: Capacity::fleet(1),
            },
        )
        .unwrap();
        let mut buf = Vec::new();
        write_csv(&p, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        let h = r.headers().unwrap().clone();
        let col = |name: &str| h.iter().position(|c| c == name).unwrap();
        assert_eq!(&rows[0][col("machine_id")], "a");
        assert_eq!(&rows[0][col("status")], "scheduled");
        assert_eq!(&rows[0][col("slot")], "1970-01-01T00:00:00Z");
        assert!(rows[0][col("reason")].contains("due in 2.0 d"));
        assert_eq!(&rows[1][col("status")], "not_due");
        assert_eq!(&rows[1][col("day")], "");
        let v: serde_json::Value = serde_json::from_str(&to_json(&p, &[]).unwrap()).unwrap();
        assert_eq!(v["plan"]["choices"][0]["status"], "scheduled");
        assert_eq!(v["plan"]["config"]["capacity"]["slots_per_day"], 1);
        let t = table(&p, &[], false);
        assert!(
            t.contains("1 scheduled, 0 late, 0 without a slot, 1 not due"),
            "{t}"
        );
        assert!(!t.contains(" b "), "{t}");
    }
}
