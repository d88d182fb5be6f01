//! Simulated history as files and as wire messages.
//!
//! File layout of a history directory (what `maintcast train --format csv --data DIR` reads):
//! - `telemetry.csv`: `machine_id,ts,machine_type,site,<sensors...>`, `ts` RFC 3339, an empty cell
//!   for a dropped reading;
//! - `events.csv`: `machine_id,ts,kind,note`;
//! - `truth.csv`: `machine_id,ts,days_to_maintenance,next_event,bearing_wear,seal_wear,load`, one line
//!   per telemetry row (only a simulation knows these);
//! - `telemetry.jsonl`, `events.jsonl`: the Kafka message forms, one per line (optional).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use maintcast_proto::{MaintenanceKind, Telemetry};

use crate::{EventKind, MachineInfo, MaintenanceEvent, Reading, SENSORS, SimHistory};

pub fn rfc3339(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts_ms.to_string())
}

/// A reading as the telemetry message a machine would send; a dropped value is NaN (JSON null).
pub fn telemetry(machine: &MachineInfo, r: &Reading) -> Telemetry {
    Telemetry {
        machine_id: machine.id.clone(),
        ts_ms: r.ts_ms,
        sensors: SENSORS
            .iter()
            .zip(r.values)
            .map(|(n, v)| (n.to_string(), v.map_or(f64::NAN, f64::from)))
            .collect(),
        machine_type: Some(machine.machine_type.as_str().to_string()),
        site: Some(machine.site.clone()),
    }
}

pub fn maintenance_event(
    machine: &MachineInfo,
    e: &MaintenanceEvent,
) -> maintcast_proto::MaintenanceEvent {
    maintcast_proto::MaintenanceEvent {
        machine_id: machine.id.clone(),
        ts_ms: e.ts_ms,
        kind: match e.kind {
            EventKind::Repair => MaintenanceKind::Repair,
            EventKind::Scheduled => MaintenanceKind::Scheduled,
            EventKind::Failure => MaintenanceKind::Failure,
        },
        note: e.note.clone(),
    }
}

fn create(dir: &Path, name: &str) -> anyhow::Result<BufWriter<File>> {
    let path = dir.join(name);
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::new(f))
}

/// Writes `telemetry.csv`, `events.csv` and `truth.csv` into `dir` (created if missing).
pub fn write_csv(history: &SimHistory, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let m = &history.machines;

    let mut w = csv::Writer::from_writer(create(dir, "telemetry.csv")?);
    let mut header = vec!["machine_id", "ts", "machine_type", "site"];
    header.extend(SENSORS);
    w.write_record(&header)?;
    let mut rec: Vec<String> = Vec::with_capacity(header.len());
    for r in &history.readings {
        let info = &m[r.machine as usize];
        rec.clear();
        rec.extend([
            info.id.clone(),
            rfc3339(r.ts_ms),
            info.machine_type.to_string(),
            info.site.clone(),
        ]);
        rec.extend(
            r.values
                .iter()
                .map(|v| v.map(|v| v.to_string()).unwrap_or_default()),
        );
        w.write_record(&rec)?;
    }
    w.flush()?;

    let mut w = csv::Writer::from_writer(create(dir, "events.csv")?);
    w.write_record(["machine_id", "ts", "kind", "note"])?;
    for e in &history.events {
        w.write_record([
            &m[e.machine as usize].id,
            &rfc3339(e.ts_ms),
            e.kind.as_str(),
            &e.note,
        ])?;
    }
    w.flush()?;

    let mut w = csv::Writer::from_writer(create(dir, "truth.csv")?);
    w.write_record([
        "machine_id",
        "ts",
        "days_to_maintenance",
        "next_event",
        "bearing_wear",
        "seal_wear",
        "load",
    ])?;
    for r in &history.readings {
        let t = &r.truth;
        w.write_record([
            m[r.machine as usize].id.clone(),
            rfc3339(r.ts_ms),
            format!("{:.4}", t.days_to_maintenance),
            t.next_event.to_string(),
            format!("{:.4}", t.bearing_wear),
            format!("{:.4}", t.seal_wear),
            format!("{:.3}", t.load),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `telemetry.jsonl` and `events.jsonl` (the JSON Kafka messages) into `dir`.
pub fn write_jsonl(history: &SimHistory, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let m = &history.machines;
    let mut w = create(dir, "telemetry.jsonl")?;
    for r in &history.readings {
        w.write_all(&telemetry(&m[r.machine as usize], r).to_json())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let mut w = create(dir, "events.jsonl")?;
    for e in &history.events {
        w.write_all(&maintenance_event(&m[e.machine as usize], e).to_json())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}
