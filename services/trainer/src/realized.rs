//! Realized accuracy: once a machine's maintenance event is known, the forecasts made for it since
//! its previous event can be scored against what actually happened. Validation MAE says how a
//! model did on held-out history; this says how the serving models did on the shop floor.
//!
//! For a forecast made at `t` before an event at `E`, the truth is `(E - t)` in days, capped like
//! the training target (a model cannot say more than its cap). Errors are `forecast - truth`
//! (positive = maintenance came earlier than forecast: the dangerous side), grouped by how far
//! ahead the event was. Forewarning is how long before the event the forecasts fell below the
//! warning threshold and stayed there.

use std::collections::BTreeMap;

use anyhow::Result;
use influxdb2::models::Query;
use maintcast_common::points;
use maintcast_models::history::DAY_MS;
use serde::Serialize;

use maintcast_common::flux::{escape, number, string, time as flux_time, time_ms};

/// Horizon buckets (days until the event) for the error breakdown: `[lo, hi)`.
pub const BUCKETS: [(f64, f64); 4] = [(0.0, 7.0), (7.0, 30.0), (30.0, 90.0), (90.0, f64::INFINITY)];

/// One forecast as InfluxDB has it.
#[derive(Clone, Debug, PartialEq)]
pub struct PastForecast {
    pub ts_ms: i64,
    pub days: f64,
    pub version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ErrorStats {
    pub n: usize,
    pub mae: f64,
    /// Mean of `forecast - truth`.
    pub bias: f64,
}

impl ErrorStats {
    fn add(&mut self, err: f64) {
        self.n += 1;
        // Running means keep long histories exact enough without storing every error.
        self.mae += (err.abs() - self.mae) / self.n as f64;
        self.bias += (err - self.bias) / self.n as f64;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventScore {
    pub machine_id: String,
    pub event_ms: i64,
    pub forecasts: usize,
    pub mae: f64,
    /// Days before the event from which every forecast was below the threshold; 0 when the last
    /// forecast still was not.
    pub forewarning_days: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RealizedReport {
    pub events: usize,
    pub forecasts: usize,
    pub overall_mae: Option<f64>,
    /// `"0-7d"`, `"7-30d"`, `"30-90d"`, `"90d+"` -> errors of forecasts that far ahead.
    pub by_horizon: BTreeMap<String, ErrorStats>,
    pub by_version: BTreeMap<String, ErrorStats>,
    pub median_forewarning_days: Option<f64>,
    pub warn_days: f64,
    pub scored: Vec<EventScore>,
}

impl RealizedReport {
    pub fn version_mae(&self, version: &str) -> Option<f64> {
        self.by_version
            .get(version)
            .filter(|s| s.n > 0)
            .map(|s| s.mae)
    }

    pub fn summary(&self) -> String {
        let Some(mae) = self.overall_mae else {
            return format!("realized: no scored forecasts yet ({} events)", self.events);
        };
        let buckets: Vec<String> = BUCKETS
            .iter()
            .map(|b| bucket_name(*b))
            .filter_map(|k| self.by_horizon.get(&k).map(|s| format!("{k} {:.1}", s.mae)))
            .collect();
        format!(
            "realized: {} events, {} forecasts, MAE {mae:.2} d ({}), median forewarning {} at < {} d",
            self.events,
            self.forecasts,
            buckets.join(", "),
            self.median_forewarning_days
                .map_or("-".into(), |d| format!("{d:.1} d")),
            self.warn_days
        )
    }
}

fn bucket_name((lo, hi): (f64, f64)) -> String {
    if hi.is_infinite() {
        format!("{lo}d+")
    } else {
        format!("{lo}-{hi}d")
    }
}

/// Scores the forecasts of one machine between its previous event and `event_ms`, adding them to
/// `report`. `forecasts` must be sorted by time.
pub fn score_event(
    report: &mut RealizedReport,
    machine_id: &str,
    event_ms: i64,
    forecasts: &[PastForecast],
    cap: f64,
) {
    report.events += 1;
    let mut stats = ErrorStats::default();
    for f in forecasts.iter().filter(|f| f.ts_ms <= event_ms) {
        let truth = ((event_ms - f.ts_ms) as f64 / DAY_MS as f64).min(cap);
        let err = f.days - truth;
        stats.add(err);
        if let Some(b) = BUCKETS.iter().find(|(lo, hi)| truth >= *lo && truth < *hi) {
            report
                .by_horizon
                .entry(bucket_name(*b))
                .or_default()
                .add(err);
        }
        report
            .by_version
            .entry(f.version.clone())
            .or_default()
            .add(err);
    }
    if stats.n == 0 {
        return;
    }
    // Walk back from the event while forecasts stay below the threshold.
    let scored: Vec<&PastForecast> = forecasts.iter().filter(|f| f.ts_ms <= event_ms).collect();
    let mut since = None;
    for f in scored.iter().rev() {
        if f.days < report.warn_days {
            since = Some(f.ts_ms);
        } else {
            break;
        }
    }
    let forewarning_days = since.map_or(0.0, |t| (event_ms - t) as f64 / DAY_MS as f64);
    let n_before = report.forecasts;
    report.forecasts += stats.n;
    let prev = report.overall_mae.unwrap_or(0.0) * n_before as f64;
    report.overall_mae = Some((prev + stats.mae * stats.n as f64) / report.forecasts as f64);
    report.scored.push(EventScore {
        machine_id: machine_id.to_string(),
        event_ms,
        forecasts: stats.n,
        mae: stats.mae,
        forewarning_days,
    });
    let mut fw: Vec<f64> = report.scored.iter().map(|s| s.forewarning_days).collect();
    fw.sort_by(f64::total_cmp);
    report.median_forewarning_days = Some(if fw.len() % 2 == 1 {
        fw[fw.len() / 2]
    } else {
        (fw[fw.len() / 2 - 1] + fw[fw.len() / 2]) / 2.0
    });
}

/// Scores every maintenance event of `machines` in InfluxDB against the `maintenance_forecast` points of model
/// `model` made for that machine since its previous event. One query per event keeps each
/// response to one machine's stretch.
pub async fn score(
    client: &influxdb2::Client,
    bucket: &str,
    model: &str,
    cap: f64,
    warn_days: f64,
    machines: &std::collections::HashSet<String>,
) -> Result<RealizedReport> {
    let run = |flux: String| async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            client.query_raw(Some(Query::new(flux))),
        )
        .await
        .map_err(|_| anyhow::anyhow!("InfluxDB query timed out"))?
        .map_err(|e| anyhow::anyhow!("InfluxDB query failed: {e}"))
    };
    let now = chrono::Utc::now().timestamp_millis() + 1;
    let events_flux = format!(
        r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => r._measurement == "{event}")
  |> keep(columns: ["_time", "{machine_id}"])"#,
        b = escape(bucket),
        event = points::maintenance_event::MEASUREMENT,
        machine_id = points::maintenance_event::tag::MACHINE_ID,
        s = flux_time(0),
        e = flux_time(now),
    );
    let mut events: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for rec in run(events_flux).await? {
        if let (Some(id), Some(t)) = (
            string(rec.values.get(points::maintenance_event::tag::MACHINE_ID)),
            time_ms(rec.values.get("_time")),
        ) {
            events.entry(id).or_default().push(t);
        }
    }
    let mut report = RealizedReport {
        warn_days,
        ..Default::default()
    };
    events.retain(|m, _| machines.contains(m));
    for (machine, mut times) in events {
        times.sort_unstable();
        times.dedup();
        let mut prev = 0i64;
        for &e in &times {
            let flux = format!(
                r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {t})
  |> filter(fn: (r) => r._measurement == "{forecast}" and r._field == "{days}")
  |> filter(fn: (r) => r.{machine_id} == "{m}" and r.{model_tag} == "{model}")
  |> keep(columns: ["_time", "_value", "{model_version}"])
  |> group()
  |> sort(columns: ["_time"])"#,
                b = escape(bucket),
                s = flux_time(prev + 1),
                t = flux_time(e + 1),
                m = escape(&machine),
                model = escape(model),
                forecast = points::forecast::MEASUREMENT,
                days = points::forecast::field::DAYS,
                machine_id = points::forecast::tag::MACHINE_ID,
                model_tag = points::forecast::tag::MODEL,
                model_version = points::forecast::tag::MODEL_VERSION,
            );
            let forecasts: Vec<PastForecast> = run(flux)
                .await?
                .into_iter()
                .filter_map(|r| {
                    Some(PastForecast {
                        ts_ms: time_ms(r.values.get("_time"))?,
                        days: number(r.values.get("_value"))?,
                        version: string(r.values.get(points::forecast::tag::MODEL_VERSION))
                            .unwrap_or_default(),
                    })
                })
                .collect();
            score_event(&mut report, &machine, e, &forecasts, cap);
            prev = e;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(day: f64, days: f64, v: &str) -> PastForecast {
        PastForecast {
            ts_ms: (day * DAY_MS as f64) as i64,
            days,
            version: v.into(),
        }
    }

    #[test]
    fn one_event_by_hand() {
        // Event on day 40. Forecasts on days 0, 20, 35, 38, 39: truths 40 (capped to 30), 20, 5,
        // 2, 1; errors 5, -2, 1, 0, -1.
        let mut r = RealizedReport {
            warn_days: 7.0,
            ..Default::default()
        };
        let fc = [
            f(0.0, 35.0, "v1"),
            f(20.0, 18.0, "v1"),
            f(35.0, 6.0, "v2"),
            f(38.0, 2.0, "v2"),
            f(39.0, 0.0, "v2"),
        ];
        score_event(&mut r, "m", 40 * DAY_MS, &fc, 30.0);
        assert_eq!(r.events, 1);
        assert_eq!(r.forecasts, 5);
        assert!((r.overall_mae.unwrap() - 9.0 / 5.0).abs() < 1e-12);
        let near = &r.by_horizon["0-7d"];
        assert_eq!(near.n, 3);
        assert!((near.mae - 2.0 / 3.0).abs() < 1e-12 && near.bias.abs() < 1e-12);
        let mid = &r.by_horizon["7-30d"];
        assert_eq!((mid.n, mid.mae, mid.bias), (1, 2.0, -2.0));
        // the capped truth 30 falls in 30-90d
        assert_eq!(r.by_horizon["30-90d"].mae, 5.0);
        assert!((r.version_mae("v1").unwrap() - 3.5).abs() < 1e-12);
        assert!((r.version_mae("v2").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // below 7 days from day 35 on: 5 days of forewarning
        assert_eq!(r.scored[0].forewarning_days, 5.0);
        assert_eq!(r.median_forewarning_days, Some(5.0));
    }

    #[test]
    fn a_late_warning_resets_and_a_missed_one_is_zero() {
        let mut r = RealizedReport {
            warn_days: 7.0,
            ..Default::default()
        };
        // below at day 5, back above at day 7, below again at 8: the warning counts from day 8
        let fc = [f(5.0, 4.0, "v"), f(7.0, 8.0, "v"), f(8.0, 3.0, "v")];
        score_event(&mut r, "a", 10 * DAY_MS, &fc, 100.0);
        assert_eq!(r.scored[0].forewarning_days, 2.0);
        score_event(&mut r, "b", 10 * DAY_MS, &[f(9.0, 30.0, "v")], 100.0);
        assert_eq!(r.scored[1].forewarning_days, 0.0);
        assert_eq!(r.median_forewarning_days, Some(1.0));
        // an event without forecasts counts as an event, not as a score
        score_event(&mut r, "c", DAY_MS, &[], 100.0);
        assert_eq!((r.events, r.scored.len()), (3, 2));
    }
}
