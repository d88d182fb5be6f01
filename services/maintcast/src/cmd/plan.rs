//! `maintcast plan`: a maintenance schedule for the next days from the newest forecast of every
//! machine in InfluxDB, within the crew's slots, with the reason for each choice; and a suggested
//! maintenance interval per machine type from the event history (`maintcast_planner`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_planner::influx::{Request, plan_from_influx, write_plan};
use maintcast_planner::schedule::DAY_MS;
use maintcast_planner::{Capacity, GroupBy, PlanConfig, report};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// Days planned ahead.
    #[arg(long, env = "MAINTCAST_HORIZON_DAYS", default_value_t = 14)]
    pub horizon_days: u32,
    /// Maintenance slots per day (per group with --per).
    #[arg(long, env = "MAINTCAST_SLOTS", default_value_t = 2)]
    pub slots: u32,
    /// What shares a day's slots: fleet, site or type.
    #[arg(long, env = "MAINTCAST_PER", default_value = "fleet")]
    pub per: GroupBy,
    /// Slots per day of one group, overriding --slots: `lyon=3` (repeatable).
    #[arg(long = "slots-for", value_parser = parse_override)]
    pub slots_for: Vec<(String, u32)>,
    /// Largest acceptable probability that a machine comes due before its slot.
    #[arg(long, env = "MAINTCAST_MAX_RISK", default_value_t = 0.1)]
    pub max_risk: f64,
    /// First day of the plan (YYYY-MM-DD, UTC); default: today if its slot hour is still ahead,
    /// else tomorrow.
    #[arg(long)]
    pub start: Option<NaiveDate>,
    /// Hour of the day (UTC) at which a day's maintenance happens: the risk is taken there.
    #[arg(long, default_value_t = 8)]
    pub slot_hour: u32,
    /// How far back to look for each machine's newest forecast.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub lookback: Duration,
    /// How far back the event history for the interval suggestion goes.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub history: Duration,
    /// Share of cycles allowed to need maintenance before the suggested interval (0.1 = B10).
    #[arg(long, default_value_t = 0.1)]
    pub interval_risk: f64,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
    /// Write the output here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also list machines not due within the horizon (table).
    #[arg(long)]
    pub all: bool,
    /// Write the plan to InfluxDB as `maintenance_plan` (the Grafana fleet dashboard shows it).
    #[arg(long)]
    pub write: bool,
}

fn parse_override(s: &str) -> Result<(String, u32), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected GROUP=SLOTS, got {s:?}"))?;
    let n = v
        .parse()
        .map_err(|_| format!("slots in {s:?} must be a whole number"))?;
    Ok((k.to_string(), n))
}

/// Day 0's slot: `start` at `hour`, or the next such time from `now`.
pub fn first_slot_ms(
    start: Option<NaiveDate>,
    hour: u32,
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    anyhow::ensure!(hour < 24, "--slot-hour must be 0..=23");
    let at = |d: NaiveDate| {
        d.and_hms_opt(hour, 0, 0)
            .expect("valid hour")
            .and_utc()
            .timestamp_millis()
    };
    Ok(match start {
        Some(d) => at(d),
        None => {
            let today = at(now.date_naive());
            if today >= now.timestamp_millis() {
                today
            } else {
                today + DAY_MS
            }
        }
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let influx = InfluxConfig::from_env()?;
    let req = Request {
        plan: PlanConfig {
            first_slot_ms: first_slot_ms(args.start, args.slot_hour, Utc::now())?,
            horizon_days: args.horizon_days,
            max_risk: args.max_risk,
            capacity: Capacity {
                slots_per_day: args.slots,
                by: args.per,
                overrides: args.slots_for.iter().cloned().collect::<BTreeMap<_, _>>(),
            },
        },
        forecast_lookback: args.lookback,
        history_lookback: args.history,
        interval_risk: args.interval_risk,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (plan, suggestions) = rt.block_on(async {
        let client = influx.client()?;
        let (plan, suggestions) = plan_from_influx(&client, &influx.bucket, &req).await?;
        if args.write {
            let n = write_plan(
                &influx,
                &plan,
                Utc::now().timestamp_millis(),
                &Shutdown::new(),
            )
            .await?;
            eprintln!(
                "wrote {n} maintenance_plan points to bucket {}",
                influx.bucket
            );
        }
        anyhow::Ok((plan, suggestions))
    })?;
    if plan.choices.is_empty() {
        eprintln!(
            "no forecasts in bucket {} in the last {}: nothing to plan",
            influx.bucket,
            humantime::format_duration(args.lookback)
        );
    }
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    match args.output {
        Output::Table => write!(out, "{}", report::table(&plan, &suggestions, args.all))?,
        Output::Csv => report::write_csv(&plan, &mut out)?,
        Output::Json => writeln!(out, "{}", report::to_json(&plan, &suggestions)?)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slot_is_the_next_slot_hour() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ms = |s: &str| t(s).timestamp_millis();
        assert_eq!(
            first_slot_ms(None, 8, t("2026-03-02T07:59:00Z")).unwrap(),
            ms("2026-03-02T08:00:00Z")
        );
        assert_eq!(
            first_slot_ms(None, 8, t("2026-03-02T08:01:00Z")).unwrap(),
            ms("2026-03-03T08:00:00Z")
        );
        let d = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(
            first_slot_ms(Some(d), 6, t("2026-03-02T08:01:00Z")).unwrap(),
            ms("2026-03-01T06:00:00Z")
        );
        assert!(first_slot_ms(None, 24, Utc::now()).is_err());
        assert_eq!(parse_override("lyon=3").unwrap(), ("lyon".into(), 3));
        assert!(parse_override("lyon").is_err());
    }
}
