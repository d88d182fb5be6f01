//! The planner's InfluxDB side: newest forecasts and the maintenance history in, the plan out.
//!
//! `maintenance_plan` (one point per machine given a slot or left without one; machines not due
//! are not written), timestamp = the time the plan was made, shared by all its points so that a
//! dashboard can pick the newest plan. Tags `machine_id`, `machine_type`, `site` (when known);
//! fields `status` (scheduled | late | no_capacity), `day` (integer, 0 = first day; -1 without a
//! slot), `slot_at` (integer epoch seconds; 0 without a slot), `risk` (probability the machine
//! comes due before its slot), `deadline_day` (integer), `days_to_maintenance`, `days_p10`,
//! `days_p90`, `forecast_at` (integer epoch seconds) and `reason` (the one-line why). See
//! docs/maintenance-plan.md.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use influxdb2::models::{DataPoint, Query};
use maintcast_common::flux::{escape, number, string, time_ms};

use crate::interval::{EventKind, MachineEvents};
use crate::schedule::{MachineForecast, Plan, Status};

pub const MEASUREMENT: &str = "maintenance_plan";

/// Newest forecast of every machine that had one in the last `lookback`.
pub async fn latest_forecasts(
    client: &influxdb2::Client,
    bucket: &str,
    lookback: Duration,
) -> Result<Vec<MachineForecast>> {
    let flux = format!(
        r#"from(bucket: "{b}")
  |> range(start: -{s}s)
  |> filter(fn: (r) => r._measurement == "maintenance_forecast")
  |> filter(fn: (r) => r._field == "days_to_maintenance" or r._field == "days_p10" or r._field == "days_p90")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group(columns: ["machine_id"])
  |> sort(columns: ["_time"])
  |> last(column: "_time")
  |> group()"#,
        b = escape(bucket),
        s = lookback.as_secs().max(1)
    );
    let mut out = Vec::new();
    for rec in run(client, &flux).await? {
        let v = &rec.values;
        let (Some(machine_id), Some(ts_ms), Some(days)) = (
            string(v.get("machine_id")),
            time_ms(v.get("_time")),
            number(v.get("days_to_maintenance")),
        ) else {
            continue;
        };
        // A forecast written without its interval is planned as if certain.
        out.push(MachineForecast {
            machine_id,
            machine_type: string(v.get("machine_type")),
            site: string(v.get("site")),
            ts_ms,
            days,
            p10: number(v.get("days_p10")).unwrap_or(days),
            p90: number(v.get("days_p90")).unwrap_or(days),
        });
    }
    out.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
    Ok(out)
}

/// Maintenance events of the last `lookback`, per machine, typed by `machine_types` (machines
/// missing from it are typed `unknown`); each machine's running cycle is censored at its
/// `last_seen` time when given.
pub async fn event_history(
    client: &influxdb2::Client,
    bucket: &str,
    lookback: Duration,
    machine_types: &HashMap<String, String>,
    last_seen: &HashMap<String, i64>,
) -> Result<Vec<MachineEvents>> {
    let flux = format!(
        r#"from(bucket: "{b}")
  |> range(start: -{s}s)
  |> filter(fn: (r) => r._measurement == "maintenance_event" and r._field == "note")
  |> keep(columns: ["_time", "machine_id", "kind"])
  |> group()"#,
        b = escape(bucket),
        s = lookback.as_secs().max(1)
    );
    let mut machines: BTreeMap<String, MachineEvents> = BTreeMap::new();
    for rec in run(client, &flux).await? {
        let v = &rec.values;
        let (Some(id), Some(ts), Some(kind)) = (
            string(v.get("machine_id")),
            time_ms(v.get("_time")),
            string(v.get("kind")).and_then(|k| k.parse::<EventKind>().ok()),
        ) else {
            continue;
        };
        let m = machines.entry(id.clone()).or_insert_with(|| MachineEvents {
            machine_type: machine_types
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
            events: Vec::new(),
            last_seen_ms: last_seen.get(&id).copied(),
        });
        m.events.push((ts, kind));
    }
    Ok(machines.into_values().collect())
}

/// The plan's points, all at `made_ms`.
pub fn plan_points(plan: &Plan, made_ms: i64) -> Result<Vec<DataPoint>> {
    let mut points = Vec::new();
    for ch in plan.choices.iter().filter(|c| c.status != Status::NotDue) {
        let f = &ch.forecast;
        let mut p = DataPoint::builder(MEASUREMENT).tag("machine_id", ch.machine_id.as_str());
        if let Some(t) = &ch.machine_type {
            p = p.tag("machine_type", t.as_str());
        }
        if let Some(s) = &ch.site {
            p = p.tag("site", s.as_str());
        }
        points.push(
            p.field("status", ch.status.as_str())
                .field("day", ch.day.map_or(-1, i64::from))
                .field("slot_at", ch.slot_ms.map_or(0, |ms| ms.div_euclid(1000)))
                .field("risk", ch.risk)
                .field("deadline_day", ch.deadline_day.unwrap_or(-1))
                .field("days_to_maintenance", f.days)
                .field("days_p10", f.p10)
                .field("days_p90", f.p90)
                .field("forecast_at", f.ts_ms.div_euclid(1000))
                .field("reason", ch.reason.as_str())
                .timestamp(made_ms)
                .build()
                .context("building a maintenance_plan point")?,
        );
    }
    Ok(points)
}

async fn run(
    client: &influxdb2::Client,
    flux: &str,
) -> Result<Vec<influxdb2::api::query::FluxRecord>> {
    let timeout = Duration::from_secs(60);
    tokio::time::timeout(
        timeout,
        client.query_raw(Some(Query::new(flux.to_string()))),
    )
    .await
    .with_context(|| format!("InfluxDB query timed out after {timeout:?}"))?
    .map_err(|e| anyhow::anyhow!("InfluxDB query failed: {e}"))
}

/// What `maintcast plan` reads and how it plans.
#[derive(Clone, Debug)]
pub struct Request {
    pub plan: crate::PlanConfig,
    /// How far back to look for each machine's newest forecast.
    pub forecast_lookback: Duration,
    /// How far back the maintenance history for the interval suggestion goes.
    pub history_lookback: Duration,
    /// Share of cycles allowed to need maintenance before the suggested interval (0.1 = B10).
    pub interval_risk: f64,
}

/// A plan from what InfluxDB holds now: the newest forecasts, and the interval per type from
/// the events.
pub async fn plan_from_influx(
    client: &influxdb2::Client,
    bucket: &str,
    req: &Request,
) -> Result<(Plan, Vec<crate::interval::Suggestion>)> {
    let forecasts = latest_forecasts(client, bucket, req.forecast_lookback).await?;
    let plan = crate::plan(&forecasts, &req.plan)?;
    let types: HashMap<String, String> = forecasts
        .iter()
        .filter_map(|f| Some((f.machine_id.clone(), f.machine_type.clone()?)))
        .collect();
    let seen: HashMap<String, i64> = forecasts
        .iter()
        .map(|f| (f.machine_id.clone(), f.ts_ms))
        .collect();
    let history = event_history(client, bucket, req.history_lookback, &types, &seen).await?;
    Ok((plan, crate::interval::suggest(&history, req.interval_risk)))
}

/// Writes the plan's points (retrying while InfluxDB is unreachable, until `shutdown`).
pub async fn write_plan(
    config: &maintcast_common::influx::InfluxConfig,
    plan: &Plan,
    made_ms: i64,
    shutdown: &maintcast_common::shutdown::Shutdown,
) -> Result<usize> {
    let points = plan_points(plan, made_ms)?;
    if points.is_empty() {
        return Ok(0);
    }
    let mut writer = maintcast_common::influx::Writer::new(config)?;
    writer
        .write(&points, shutdown, 2, |_, _| {})
        .await
        .context("writing maintenance_plan")?;
    Ok(points.len())
}
