//! Machine histories from InfluxDB: the `telemetry` measurement (one field per sensor, tags
//! `machine_id`, `machine_type`, `site`) and `maintenance_event` (tag `machine_id`), as the ingest
//! service writes them.
//!
//! Telemetry is read in time pages so that no single response holds the whole history: only the
//! assembled rows (which training needs anyway) grow with its length. Each page is a plain
//! long-format query (one record per field value) rather than a `pivot()`, so a sensor that is
//! missing from some rows shows up as a gap (NaN). Gaps are kept: the data path
//! (`maintcast_models::prep`) fills them when it builds windows, with the rule the ingest service
//! applies to the same rows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use influxdb2::models::Query;
use maintcast_common::flux::{escape, number, string, time as flux_time, time_ms};
use maintcast_models::{History, MachineHistory};

/// What to read and how.
#[derive(Clone, Debug)]
pub struct HistoryQuery {
    pub bucket: String,
    /// Inclusive lower bound, epoch ms; `None` = everything.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, epoch ms; `None` = now.
    pub until_ms: Option<i64>,
    /// Length of one telemetry page.
    pub page: Duration,
    /// Abandon a query that takes longer than this.
    pub timeout: Duration,
    /// Only machines with this `machine_type` tag (a model per machine type).
    pub machine_type: Option<String>,
}

impl HistoryQuery {
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            since_ms: None,
            until_ms: None,
            page: Duration::from_secs(7 * 86_400),
            timeout: Duration::from_secs(120),
            machine_type: None,
        }
    }
}

/// Telemetry of one machine while pages arrive.
#[derive(Default)]
struct Acc {
    machine_type: Option<String>,
    site: Option<String>,
    sensors: Vec<String>,
    index: HashMap<String, usize>,
    rows: BTreeMap<i64, Vec<f32>>,
}

impl Acc {
    fn set(&mut self, ts: i64, field: &str, value: f32) {
        let col = match self.index.get(field) {
            Some(&c) => c,
            None => {
                self.sensors.push(field.to_string());
                self.index.insert(field.to_string(), self.sensors.len() - 1);
                self.sensors.len() - 1
            }
        };
        let row = self.rows.entry(ts).or_default();
        if row.len() <= col {
            row.resize(col + 1, f32::NAN);
        }
        row[col] = value;
    }
}

/// Reads the history between `q.since_ms` and `q.until_ms`. Machines are sorted by id and sensors
/// by name, so the same data gives the same `History` (and the same machine split) every time.
pub async fn read_history(client: &influxdb2::Client, q: &HistoryQuery) -> Result<History> {
    if q.page.is_zero() {
        bail!("history page length must be positive");
    }
    let until = q
        .until_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + 1);
    let Some((first, last)) = telemetry_bounds(client, q, until).await? else {
        return Ok(History::default());
    };
    let mut machines: BTreeMap<String, Acc> = BTreeMap::new();
    let page_ms = q.page.as_millis().min(i64::MAX as u128) as i64;
    let mut start = first;
    let mut pages = 0usize;
    while start <= last {
        let stop = start.saturating_add(page_ms).min(until);
        let flux = format!(
            r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => r._measurement == "telemetry"{t})
  |> keep(columns: ["_time", "_field", "_value", "machine_id", "machine_type", "site"])"#,
            b = escape(&q.bucket),
            t = type_filter(q),
            s = flux_time(start),
            e = flux_time(stop),
        );
        for rec in run(client, &flux, q.timeout).await? {
            let v = &rec.values;
            let (Some(id), Some(ts), Some(field), Some(value)) = (
                string(v.get("machine_id")),
                time_ms(v.get("_time")),
                string(v.get("_field")),
                number(v.get("_value")),
            ) else {
                // A non-numeric field (a note, say) is not a sensor.
                continue;
            };
            let acc = machines.entry(id).or_default();
            if acc.machine_type.is_none() {
                acc.machine_type = string(v.get("machine_type"));
            }
            if acc.site.is_none() {
                acc.site = string(v.get("site"));
            }
            if value.is_finite() {
                acc.set(ts, &field, value as f32);
            }
        }
        pages += 1;
        if stop >= until {
            break;
        }
        start = stop;
    }
    let events = read_events(client, q, until).await?;
    let sensors = sensor_names(&machines);
    let mut out = Vec::with_capacity(machines.len());
    for (id, acc) in machines {
        let mut m = assemble(id, acc, &sensors);
        if let Some(ev) = events.get(&m.machine_id) {
            m.events = ev.iter().map(|(ts, _)| *ts).collect();
            m.event_kinds = ev
                .iter()
                .filter_map(|(ts, kind)| kind.clone().map(|k| (*ts, k)))
                .collect();
        }
        if m.n_rows() > 0 && !m.sensors.is_empty() {
            out.push(m);
        }
    }
    tracing::debug!(pages, machines = out.len(), "read history from InfluxDB");
    Ok(History { machines: out })
}

/// First and last telemetry time in the range, or `None` when there is none.
async fn telemetry_bounds(
    client: &influxdb2::Client,
    q: &HistoryQuery,
    until: i64,
) -> Result<Option<(i64, i64)>> {
    let since = q.since_ms.unwrap_or(0);
    let mut out = [0i64; 2];
    for (k, agg) in ["min", "max"].iter().enumerate() {
        let flux = format!(
            r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => r._measurement == "telemetry"{t})
  |> keep(columns: ["_time"])
  |> group()
  |> {agg}(column: "_time")"#,
            b = escape(&q.bucket),
            t = type_filter(q),
            s = flux_time(since),
            e = flux_time(until),
        );
        let recs = run(client, &flux, q.timeout).await?;
        match recs.first().and_then(|r| time_ms(r.values.get("_time"))) {
            Some(t) => out[k] = t,
            None => return Ok(None),
        }
    }
    Ok(Some((out[0], out[1])))
}

async fn read_events(
    client: &influxdb2::Client,
    q: &HistoryQuery,
    until: i64,
) -> Result<HashMap<String, Vec<(i64, Option<String>)>>> {
    // Events before `since` still matter: they say where the first segment starts.
    let flux = format!(
        r#"from(bucket: "{b}")
  |> range(start: {s}, stop: {e})
  |> filter(fn: (r) => r._measurement == "maintenance_event")
  |> keep(columns: ["_time", "machine_id", "kind"])"#,
        b = escape(&q.bucket),
        s = flux_time(0),
        e = flux_time(until),
    );
    // The kind (a tag) feeds the recipe's label policy; events written before it had one read
    // as kindless, which a policy that names kinds refuses with a clear error.
    let mut out: HashMap<String, Vec<(i64, Option<String>)>> = HashMap::new();
    for rec in run(client, &flux, q.timeout).await? {
        if let (Some(id), Some(ts)) = (
            string(rec.values.get("machine_id")),
            time_ms(rec.values.get("_time")),
        ) {
            let kind = string(rec.values.get("kind")).filter(|k| !k.is_empty());
            out.entry(id).or_default().push((ts, kind));
        }
    }
    for ev in out.values_mut() {
        ev.sort_unstable();
        ev.dedup_by_key(|(ts, _)| *ts);
    }
    Ok(out)
}

/// Every sensor any machine reported, sorted by name: each machine gets all of them, so one
/// that never reported a sensor reads it as missing (filled with the neutral value, as the ingest
/// service fills it) rather than being left out of training.
fn sensor_names(machines: &BTreeMap<String, Acc>) -> Vec<String> {
    let mut names: Vec<String> = machines
        .values()
        .flat_map(|a| {
            a.sensors
                .iter()
                .enumerate()
                .filter(|&(c, _)| {
                    a.rows
                        .values()
                        .any(|r| r.get(c).is_some_and(|v| !v.is_nan()))
                })
                .map(|(_, s)| s.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One machine's rows in `sensors` order, NaN where a value is missing.
fn assemble(machine_id: String, acc: Acc, sensors: &[String]) -> MachineHistory {
    let cols: Vec<Option<usize>> = sensors.iter().map(|s| acc.index.get(s).copied()).collect();
    let mut values = Vec::with_capacity(acc.rows.len() * sensors.len());
    for row in acc.rows.values() {
        values.extend(
            cols.iter()
                .map(|c| c.and_then(|c| row.get(c).copied()).unwrap_or(f32::NAN)),
        );
    }
    MachineHistory {
        machine_id,
        machine_type: acc.machine_type,
        site: acc.site,
        ts: acc.rows.keys().copied().collect(),
        sensors: sensors.to_vec(),
        values,
        ..Default::default()
    }
}

async fn run(
    client: &influxdb2::Client,
    flux: &str,
    timeout: Duration,
) -> Result<Vec<influxdb2::api::query::FluxRecord>> {
    tokio::time::timeout(
        timeout,
        client.query_raw(Some(Query::new(flux.to_string()))),
    )
    .await
    .with_context(|| format!("InfluxDB query timed out after {timeout:?}"))?
    .map_err(|e| anyhow::anyhow!("InfluxDB query failed: {e}"))
}

fn type_filter(q: &HistoryQuery) -> String {
    q.machine_type
        .as_deref()
        .map(|t| format!(r#" and r.machine_type == "{}""#, escape(t)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_sorts_sensors_keeps_gaps_and_drops_silent_sensors() {
        let mut acc = Acc::default();
        acc.set(2000, "vib", 2.0);
        acc.set(1000, "temp", 10.0);
        acc.set(3000, "temp", 30.0);
        acc.set(3000, "vib", 3.0);
        // a sensor that never sent a value is no sensor
        acc.index.insert("dead".into(), 2);
        acc.sensors.push("dead".into());
        let mut other = Acc::default();
        other.set(1000, "oil", 1.0);
        let machines: BTreeMap<String, Acc> = [("m".to_string(), acc), ("n".to_string(), other)]
            .into_iter()
            .collect();
        let sensors = sensor_names(&machines);
        assert_eq!(sensors, ["oil", "temp", "vib"]);
        let mut it = machines.into_iter();
        let (id, acc) = it.next().unwrap();
        let m = assemble(id, acc, &sensors);
        assert_eq!(m.ts, [1000, 2000, 3000]);
        assert_eq!(m.sensors, ["oil", "temp", "vib"]);
        // gaps stay missing (the data path fills them); `oil` was never reported by this machine
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let nan = f32::NAN;
        assert_eq!(
            bits(&m.values),
            bits(&[nan, 10.0, nan, nan, nan, 2.0, nan, 30.0, 3.0])
        );
    }

    #[test]
    fn flux_literals() {
        assert_eq!(flux_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(flux_time(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
