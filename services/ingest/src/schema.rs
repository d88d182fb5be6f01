//! The InfluxDB points ingest writes. (To be replaced by the project-wide point schema.)

use influxdb2::models::DataPoint;
use maintcast_proto::{Forecast, MaintenanceEvent, Telemetry};

/// A raw row for the history; refused when no sensor value is finite (a point needs a field).
pub fn telemetry_point(t: &Telemetry) -> anyhow::Result<DataPoint> {
    let mut b = DataPoint::builder("telemetry").tag("machine_id", &t.machine_id);
    if let Some(mt) = &t.machine_type {
        b = b.tag("machine_type", mt);
    }
    if let Some(site) = &t.site {
        b = b.tag("site", site);
    }
    let mut any = false;
    for (name, v) in &t.sensors {
        if v.is_finite() {
            b = b.field(name.clone(), *v);
            any = true;
        }
    }
    anyhow::ensure!(
        any,
        "no sensor value is a finite number, so the row cannot be stored in the telemetry history"
    );
    Ok(b.timestamp(t.ts_ms).build()?)
}

pub fn event_point(e: &MaintenanceEvent) -> anyhow::Result<DataPoint> {
    Ok(DataPoint::builder("maintenance_event")
        .tag("machine_id", &e.machine_id)
        .tag("kind", e.kind.as_str())
        .field("note", e.note.clone())
        .timestamp(e.ts_ms)
        .build()?)
}

pub fn forecast_point(f: &Forecast) -> anyhow::Result<DataPoint> {
    anyhow::ensure!(
        [f.days_to_maintenance, f.days_p10, f.days_p90]
            .iter()
            .all(|v| v.is_finite()),
        "forecast for {} at {} is not finite",
        f.machine_id,
        f.ts_ms
    );
    let mut b = DataPoint::builder("maintenance_forecast")
        .tag("machine_id", &f.machine_id)
        .tag("model", &f.model)
        .tag("model_version", &f.model_version);
    if let Some(mt) = &f.machine_type {
        b = b.tag("machine_type", mt);
    }
    if let Some(site) = &f.site {
        b = b.tag("site", site);
    }
    Ok(b.field("days_to_maintenance", f.days_to_maintenance)
        .field("due_at", f.due_at)
        .field("days_p10", f.days_p10)
        .field("days_p90", f.days_p90)
        .field("window_rows", f.window_rows as i64)
        .timestamp(f.ts_ms)
        .build()?)
}
