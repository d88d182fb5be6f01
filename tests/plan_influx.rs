//! `maintcast plan` against the real InfluxDB: forecasts and maintenance events written in the
//! documented schema into a bucket of the test's own, planned through the planner's reader, the
//! plan written back as `maintenance_plan` and read again.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{Duration, SubsecRound, Utc};
use influxdb2::models::DataPoint;
use maintcast_common::config::Secret;
use maintcast_common::influx::InfluxConfig;
use maintcast_common::shutdown::Shutdown;
use maintcast_e2e::bucket::{create_bucket, delete_bucket};
use maintcast_e2e::{InfluxEnv, influx, unique};
use maintcast_planner::influx::{Request, plan_from_influx, write_plan};
use maintcast_planner::{Capacity, GroupBy, PlanConfig, Status};

const DAY_MS: i64 = 86_400_000;

/// (site, type, newest days_to_maintenance); p10/p90 are 0.6x/1.5x of it.
const FLEET: [(&str, &str, f64); 7] = [
    ("aarhus", "pump", 2.0),
    ("aarhus", "pump", 3.0),
    ("aarhus", "press", 3.0),
    ("lyon", "press", 4.0),
    ("lyon", "pump", 5.0),
    ("lyon", "press", 6.0),
    ("lyon", "pump", 60.0),
];

fn forecast(id: &str, site: &str, kind: &str, days: f64, t_ns: i64) -> DataPoint {
    DataPoint::builder("maintenance_forecast")
        .tag("machine_id", id)
        .tag("model", "lstm")
        .tag("model_version", "v1")
        .tag("machine_type", kind)
        .tag("site", site)
        .field("days_to_maintenance", days)
        .field("due_at", t_ns / 1_000_000_000 + (days * 86_400.0) as i64)
        .field("days_p10", days * 0.6)
        .field("days_p90", days * 1.5)
        .field("window_rows", 60i64)
        .timestamp(t_ns)
        .build()
        .unwrap()
}

fn event(id: &str, kind: &str, t_ms: i64) -> DataPoint {
    DataPoint::builder("maintenance_event")
        .tag("machine_id", id)
        .tag("kind", kind)
        .field("note", format!("{kind} of {id}"))
        .timestamp(t_ms * 1_000_000)
        .build()
        .unwrap()
}

struct Setup {
    env: InfluxEnv,
    bucket: String,
    ids: Vec<String>,
    now_ms: i64,
}

async fn setup() -> Setup {
    let env = influx();
    let bucket = unique("plan");
    create_bucket(&env, &bucket).await;
    let prefix = unique("m");
    let now = Utc::now().trunc_subsecs(0) - Duration::minutes(10);
    let now_ms = now.timestamp_millis();
    let mut points = Vec::new();
    let mut ids = Vec::new();
    for (i, (site, kind, days)) in FLEET.iter().enumerate() {
        let id = format!("{prefix}-{kind}-{i}");
        // An older forecast that said "due at once": the planner must use the newest.
        points.push(forecast(
            &id,
            site,
            kind,
            0.1,
            (now_ms - 6 * 3_600_000) * 1_000_000,
        ));
        points.push(forecast(&id, site, kind, *days, now_ms * 1_000_000));
        ids.push(id);
    }
    // Pumps needed maintenance 10 and 20 days into their cycles; one press was serviced by the
    // calendar at 30 days (censored) and needed a repair after 15.
    let d = DAY_MS;
    for (machine, kind, at) in [
        (0, "repair", now_ms - 40 * d),
        (0, "failure", now_ms - 30 * d),
        (0, "repair", now_ms - 10 * d),
        (2, "scheduled", now_ms - 50 * d),
        (2, "scheduled", now_ms - 20 * d),
        (2, "repair", now_ms - 5 * d),
    ] {
        points.push(event(&ids[machine], kind, at));
    }
    env.client()
        .write(&bucket, futures::stream::iter(points))
        .await
        .expect("write forecasts and events");
    Setup {
        env,
        bucket,
        ids,
        now_ms,
    }
}

fn request(now_ms: i64, capacity: Capacity) -> Request {
    Request {
        plan: PlanConfig {
            // Day 0's slot two hours after the newest forecasts.
            first_slot_ms: now_ms + 2 * 3_600_000,
            horizon_days: 10,
            max_risk: 0.1,
            capacity,
        },
        forecast_lookback: StdDuration::from_secs(86_400),
        history_lookback: StdDuration::from_secs(90 * 86_400),
        interval_risk: 0.1,
    }
}

#[tokio::test]
async fn a_plan_from_real_forecasts_respects_capacity_and_goes_back_to_influx() {
    let s = setup().await;
    let client = s.env.client();
    let (plan, suggestions) =
        plan_from_influx(&client, &s.bucket, &request(s.now_ms, Capacity::fleet(1)))
            .await
            .expect("plan");

    // Every machine, from its newest forecast.
    assert_eq!(plan.choices.len(), FLEET.len());
    for c in &plan.choices {
        let i = s.ids.iter().position(|id| *id == c.machine_id).unwrap();
        assert_eq!(c.forecast.days, FLEET[i].2, "{}", c.machine_id);
        assert_eq!(c.forecast.ts_ms, s.now_ms);
        assert_eq!(c.site.as_deref(), Some(FLEET[i].0));
    }
    // One slot a day: no day twice; six machines due within the horizon, the last one not.
    let days: Vec<u32> = plan.choices.iter().filter_map(|c| c.day).collect();
    let mut unique_days = days.clone();
    unique_days.sort();
    unique_days.dedup();
    assert_eq!(days.len(), unique_days.len(), "{days:?}");
    assert_eq!(days.len(), 6);
    let far = plan
        .choices
        .iter()
        .find(|c| c.machine_id == s.ids[6])
        .unwrap();
    assert_eq!(far.status, Status::NotDue);
    // Three aarhus machines must go by day 1 and there are two slots until then: the most urgent
    // two make it, the rest of the fleet queues behind them, late.
    assert_eq!(
        (plan.count(Status::Scheduled), plan.count(Status::Late)),
        (2, 4)
    );
    let choice = |i: usize| {
        plan.choices
            .iter()
            .find(|c| c.machine_id == s.ids[i])
            .unwrap()
    };
    assert_eq!(choice(0).status, Status::Scheduled, "{}", choice(0).reason);
    assert!(choice(0).day.unwrap() <= 1, "{}", choice(0).reason);
    // Machines 1 and 2 have the same forecast: the id decides which one waits.
    let (on_time, late) = if choice(1).status == Status::Late {
        (choice(2), choice(1))
    } else {
        (choice(1), choice(2))
    };
    assert_eq!(on_time.status, Status::Scheduled, "{}", on_time.reason);
    assert_eq!(late.status, Status::Late, "{}", late.reason);
    assert!(on_time.machine_id < late.machine_id);
    assert!(
        late.reason.contains("days 0..=1 are full"),
        "{}",
        late.reason
    );

    // Interval per type from the events: pumps needed maintenance after 10 and 20 days.
    let by_type: BTreeMap<&str, _> = suggestions
        .iter()
        .map(|g| (g.machine_type.as_str(), g))
        .collect();
    let pump = by_type["pump"];
    assert_eq!((pump.cycles, pump.needed), (3, 2), "{pump:?}");
    assert_eq!(pump.interval_days, Some(10.0));
    let press = by_type["press"];
    assert_eq!((press.cycles, press.needed), (3, 1), "{press:?}");

    // Written and read back: one point per machine with a slot, all at the plan's time.
    let config = InfluxConfig {
        url: s.env.url.clone(),
        org: s.env.org.clone(),
        bucket: s.bucket.clone(),
        token: Secret::new(s.env.token.clone()),
        token_file: None,
    };
    let made = s.now_ms + 60_000;
    let n = write_plan(&config, &plan, made, &Shutdown::new())
        .await
        .expect("write");
    assert_eq!(n, 6);
    let rows = s
        .env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: -1d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "maintenance_plan")
  |> pivot(rowKey: ["_time", "machine_id"], columnKey: ["_field"], valueColumn: "_value")
  |> group()"#,
            s.bucket
        ))
        .await;
    assert_eq!(rows.len(), 6, "{rows:#?}");
    for r in &rows {
        let c = plan
            .choices
            .iter()
            .find(|c| c.machine_id == r["machine_id"])
            .unwrap();
        assert_eq!(r["status"], c.status.as_str());
        assert_eq!(r["day"], c.day.unwrap().to_string());
        assert_eq!(r["slot_at"], (c.slot_ms.unwrap() / 1000).to_string());
        assert_eq!(r["reason"], c.reason);
        let t = chrono::DateTime::parse_from_rfc3339(&r["_time"]).unwrap();
        assert_eq!(t.timestamp_millis(), made);
    }
    delete_bucket(&s.env, &s.bucket).await;
}

#[tokio::test]
async fn per_site_capacity_from_real_forecasts() {
    let s = setup().await;
    let client = s.env.client();
    let mut capacity = Capacity {
        slots_per_day: 1,
        by: GroupBy::Site,
        overrides: Default::default(),
    };
    capacity.overrides.insert("lyon".into(), 2);
    let (plan, _) = plan_from_influx(&client, &s.bucket, &request(s.now_ms, capacity.clone()))
        .await
        .expect("plan");
    let mut load: BTreeMap<(String, u32), u32> = BTreeMap::new();
    for c in plan.choices.iter() {
        if let Some(d) = c.day {
            *load.entry((c.group.clone(), d)).or_default() += 1;
        }
    }
    assert!(
        load.iter().all(|((g, _), n)| *n <= capacity.slots(g)),
        "{load:?}"
    );
    // Lyon's two slots are used on one day by its two most urgent machines.
    assert!(
        load.iter().any(|((g, _), n)| g == "lyon" && *n == 2),
        "{load:?}"
    );
    assert!(load.keys().all(|(g, _)| g == "lyon" || g == "aarhus"));
    delete_bucket(&s.env, &s.bucket).await;
}
