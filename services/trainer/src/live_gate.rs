//! The live gate: a challenger that passed the offline gate shadows the serving model, and is
//! promoted only once its forecasts, scored against the maintenance that really came, beat the
//! served forecasts on the same machines and events (docs/LIVE_EVALUATION.md).
//!
//! The evidence is the `forecast_accuracy` points the ingest service writes when an event
//! arrives. An event counts when both the shadow and the served (champion) forecasts were scored
//! on it, so the two MAEs are over the same machines, the same lives and the same horizons; each
//! side's MAE pools its forecasts over those events (sums, not a mean of means). After
//! `min_events` such events the shadow is promoted when its MAE is at most the champion's times
//! `1 - margin`, and retired otherwise; before that it keeps shadowing.

use std::collections::BTreeMap;

use anyhow::Result;
use influxdb2::models::Query;
use maintcast_models::accuracy::{Role, Tally};
use maintcast_models::registry as reg;
use serde::Serialize;

use maintcast_common::flux::{escape, number, string, time as flux_time, time_ms};

/// One `forecast_accuracy` point (one band of one version on one event), as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct AccuracyRow {
    pub machine_id: String,
    pub event_ms: i64,
    pub version: String,
    pub role: Role,
    pub tally: Tally,
}

/// The shadow against the served forecasts over the events both were scored on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    pub shadow: String,
    pub events: usize,
    pub machines: usize,
    pub shadow_tally: Tally,
    pub champion_tally: Tally,
}

impl Evidence {
    pub fn shadow_mae(&self) -> Option<f64> {
        self.shadow_tally.mae()
    }
    pub fn champion_mae(&self) -> Option<f64> {
        self.champion_tally.mae()
    }
}

/// Pairs the shadow's rows with the champion's by (machine, event).
pub fn evidence(rows: &[AccuracyRow], shadow: &str) -> Evidence {
    let mut by_event: BTreeMap<(&str, i64), (Tally, Tally)> = BTreeMap::new();
    for r in rows {
        if r.role == Role::Shadow && r.version != shadow {
            continue;
        }
        let (champion, mine) = by_event.entry((&r.machine_id, r.event_ms)).or_default();
        match r.role {
            Role::Champion => champion.merge(&r.tally),
            Role::Shadow => mine.merge(&r.tally),
        }
    }
    let mut ev = Evidence {
        shadow: shadow.to_string(),
        ..Default::default()
    };
    let mut machines = std::collections::BTreeSet::new();
    for ((m, _), (c, s)) in by_event {
        if c.n == 0 || s.n == 0 {
            continue;
        }
        ev.events += 1;
        machines.insert(m);
        ev.champion_tally.merge(&c);
        ev.shadow_tally.merge(&s);
    }
    ev.machines = machines.len();
    ev
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Promote,
    Retire,
    Keep,
}

/// The rule, with the sentence the promotion log and the round report carry.
pub fn decide(e: &Evidence, min_events: usize, margin: f64) -> (Verdict, String) {
    let (Some(s), Some(c)) = (e.shadow_mae(), e.champion_mae()) else {
        return (
            Verdict::Keep,
            format!(
                "shadow {} is collecting live evidence: no event scored for both it and the served model yet (needs {min_events})",
                e.shadow
            ),
        );
    };
    let facts = format!(
        "on the same {} maintenance events of {} machines, shadow {} has realized MAE {s:.2} d \
         ({} forecasts, p10-p90 coverage {:.0}%), the served forecasts {c:.2} d ({} forecasts, {:.0}%)",
        e.events,
        e.machines,
        e.shadow,
        e.shadow_tally.n,
        e.shadow_tally.coverage().unwrap_or(0.0) * 100.0,
        e.champion_tally.n,
        e.champion_tally.coverage().unwrap_or(0.0) * 100.0,
    );
    if e.events < min_events {
        return (
            Verdict::Keep,
            format!(
                "live evidence so far ({} of {min_events} events): {facts}",
                e.events
            ),
        );
    }
    let need = c * (1.0 - margin);
    if s <= need {
        (
            Verdict::Promote,
            format!(
                "live evidence: {facts}; better by more than {:.0}% (needs <= {need:.2})",
                margin * 100.0
            ),
        )
    } else {
        (
            Verdict::Retire,
            format!(
                "live evidence: {facts}; not {:.0}% better (needs <= {need:.2}), retired",
                margin * 100.0
            ),
        )
    }
}

/// The `forecast_accuracy` rows of model `model` the gate needs: every event the shadow was
/// scored on, and the champion's rows over the same span of time.
pub async fn read(
    client: &influxdb2::Client,
    bucket: &str,
    model: &str,
    shadow: &str,
) -> Result<Vec<AccuracyRow>> {
    let now = chrono::Utc::now().timestamp_millis() + 1;
    let mine = query(
        client,
        bucket,
        model,
        0,
        now,
        &format!(
            r#"r.role == "shadow" and r.model_version == "{}""#,
            escape(shadow)
        ),
    )
    .await?;
    let (Some(first), Some(last)) = (
        mine.iter().map(|r| r.event_ms).min(),
        mine.iter().map(|r| r.event_ms).max(),
    ) else {
        return Ok(mine);
    };
    let mut rows = query(
        client,
        bucket,
        model,
        first,
        last + 1,
        r#"r.role == "champion""#,
    )
    .await?;
    rows.extend(mine);
    Ok(rows)
}

async fn query(
    client: &influxdb2::Client,
    bucket: &str,
    model: &str,
    start_ms: i64,
    stop_ms: i64,
    which: &str,
) -> Result<Vec<AccuracyRow>> {
    let flux = format!(
        r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => r._measurement == "{measurement}" and r.model == "{m}")
  |> filter(fn: (r) => {which})
  |> filter(fn: (r) => r._field == "n" or r._field == "error_sum" or r._field == "abs_error_sum" or r._field == "covered")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> keep(columns: ["_time", "machine_id", "model_version", "role", "n", "error_sum", "abs_error_sum", "covered"])"#,
        b = escape(bucket),
        s = flux_time(start_ms),
        e = flux_time(stop_ms),
        measurement = maintcast_common::points::forecast_accuracy::MEASUREMENT,
        m = escape(model),
    );
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        client.query_raw(Some(Query::new(flux))),
    )
    .await
    .map_err(|_| anyhow::anyhow!("InfluxDB query timed out"))?
    .map_err(|e| anyhow::anyhow!("reading forecast_accuracy failed: {e}"))?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let v = &r.values;
            Some(AccuracyRow {
                machine_id: string(v.get("machine_id"))?,
                event_ms: time_ms(v.get("_time"))?,
                version: string(v.get("model_version"))?,
                role: Role::parse(&string(v.get("role"))?)?,
                tally: Tally {
                    n: number(v.get("n"))? as u64,
                    error_sum: number(v.get("error_sum"))?,
                    abs_error_sum: number(v.get("abs_error_sum"))?,
                    covered: number(v.get("covered"))? as u64,
                },
            })
        })
        .collect())
}

/// What a round did about the shadow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveDecision {
    pub verdict: Verdict,
    pub reason: String,
    pub evidence: Evidence,
}

/// Reads the evidence for the shadowing version (if any) and acts on it: promotes it (logged
/// with the evidence), retires it, or leaves it shadowing. `None` when nothing shadows.
pub async fn review(
    client: &influxdb2::Client,
    bucket: &str,
    registry_dir: &std::path::Path,
    name: &str,
    min_events: usize,
    margin: f64,
    run_id: &str,
) -> Result<Option<LiveDecision>> {
    let Some(shadow) = reg::shadow_version(registry_dir, name)? else {
        return Ok(None);
    };
    if reg::current_version(registry_dir, name)?.as_deref() == Some(shadow.as_str()) {
        // A promotion that crashed before it cleared SHADOW: finish it.
        reg::clear_shadow(registry_dir, name)?;
        return Ok(None);
    }
    let rows = read(client, bucket, name, &shadow).await?;
    let evidence = evidence(&rows, &shadow);
    let (verdict, reason) = decide(&evidence, min_events, margin);
    match verdict {
        Verdict::Promote => {
            reg::promote(
                registry_dir,
                name,
                &shadow,
                &format!("trainer round {run_id}: {reason}"),
            )?;
            reg::clear_shadow(registry_dir, name)?;
        }
        Verdict::Retire => {
            crate::shadow::clear(
                registry_dir,
                name,
                &format!("trainer round {run_id}: {reason}"),
            )?;
        }
        Verdict::Keep => {}
    }
    Ok(Some(LiveDecision {
        verdict,
        reason,
        evidence,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(m: &str, e: i64, v: &str, role: Role, n: u64, abs: f64) -> AccuracyRow {
        AccuracyRow {
            machine_id: m.into(),
            event_ms: e,
            version: v.into(),
            role,
            tally: Tally {
                n,
                error_sum: -abs,
                abs_error_sum: abs,
                covered: n / 2,
            },
        }
    }

    #[test]
    fn only_events_both_were_scored_on_count_and_bands_pool() {
        let (c, s) = (Role::Champion, Role::Shadow);
        let rows = vec![
            // event a/1: two champion versions (a promotion mid-life) and two bands of the shadow
            row("a", 1, "v1", c, 10, 30.0),
            row("a", 1, "v2", c, 10, 10.0),
            row("a", 1, "v3", s, 15, 15.0),
            row("a", 1, "v3", s, 5, 5.0),
            // event a/2: champion only (the shadow started later): not evidence
            row("a", 2, "v2", c, 10, 50.0),
            // event b/1: the shadow only: not evidence
            row("b", 1, "v3", s, 10, 1.0),
            // event b/5: both; and an older shadow's rows, ignored
            row("b", 5, "v2", c, 4, 8.0),
            row("b", 5, "v3", s, 4, 4.0),
            row("b", 5, "v0", s, 4, 400.0),
        ];
        let e = evidence(&rows, "v3");
        assert_eq!((e.events, e.machines), (2, 2));
        assert_eq!(e.champion_tally.n, 24);
        assert_eq!(e.champion_mae(), Some(48.0 / 24.0));
        assert_eq!(e.shadow_tally.n, 24);
        assert_eq!(e.shadow_mae(), Some(24.0 / 24.0));
    }

    fn ev(events: usize, shadow_mae: f64, champion_mae: f64) -> Evidence {
        let t = |mae: f64| Tally {
            n: 100,
            error_sum: 0.0,
            abs_error_sum: mae * 100.0,
            covered: 80,
        };
        Evidence {
            shadow: "v3".into(),
            events,
            machines: events,
            shadow_tally: t(shadow_mae),
            champion_tally: t(champion_mae),
        }
    }

    #[test]
    fn promote_after_enough_events_by_the_margin_else_retire_and_wait_before() {
        let (v, why) = decide(&ev(2, 1.0, 10.0), 3, 0.1);
        assert_eq!(v, Verdict::Keep);
        assert!(why.contains("2 of 3 events"), "{why}");
        let (v, why) = decide(&ev(3, 8.9, 10.0), 3, 0.1);
        assert_eq!(v, Verdict::Promote);
        assert!(
            why.contains("live evidence") && why.contains("8.90") && why.contains("10.00"),
            "{why}"
        );
        assert_eq!(decide(&ev(3, 9.0, 10.0), 3, 0.1).0, Verdict::Promote);
        let (v, why) = decide(&ev(3, 9.5, 10.0), 3, 0.1);
        assert_eq!(v, Verdict::Retire);
        assert!(why.contains("retired"), "{why}");
        assert_eq!(decide(&ev(9, 12.0, 10.0), 3, 0.0).0, Verdict::Retire);
        assert_eq!(decide(&Evidence::default(), 0, 0.1).0, Verdict::Keep);
    }
}
