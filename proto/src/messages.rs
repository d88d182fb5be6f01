use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use crate::pb;

/// One telemetry row of one machine, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub machine_id: String,
    /// Epoch milliseconds.
    pub ts_ms: i64,
    /// In the producer's order. A missing value (JSON `null`) or a non-finite one is kept as NaN:
    /// filling it needs the machine's history, which only the window store has.
    pub sensors: Vec<(String, f64)>,
    pub machine_type: Option<String>,
    pub site: Option<String>,
}

impl Telemetry {
    pub fn sensor(&self, name: &str) -> Option<f64> {
        self.sensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }

    /// The JSON form (docs/messages.md): `ts` as RFC 3339 with milliseconds, non-finite values as null.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("telemetry always serialises")
    }

    /// `maintcast.v1.Telemetry`, its sensors in the row's order (the generated type would write
    /// them in hash order).
    pub fn to_protobuf(&self) -> Vec<u8> {
        crate::wire::TelemetryWire {
            machine_id: self.machine_id.clone(),
            ts_ms: Some(self.ts_ms),
            sensors: self
                .sensors
                .iter()
                .map(|(key, value)| crate::wire::SensorEntry {
                    key: key.clone(),
                    value: *value,
                })
                .collect(),
            machine_type: self.machine_type.clone(),
            site: self.site.clone(),
        }
        .encode_to_vec()
    }
}

pub(crate) fn rfc3339_ms(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts_ms.to_string())
}

struct SensorMap<'a>(&'a [(String, f64)]);

impl Serialize for SensorMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &value.is_finite().then_some(*value))?;
        }
        map.end()
    }
}

impl Serialize for Telemetry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Telemetry", 5)?;
        st.serialize_field("machine_id", &self.machine_id)?;
        st.serialize_field("ts", &rfc3339_ms(self.ts_ms))?;
        st.serialize_field("sensors", &SensorMap(&self.sensors))?;
        if let Some(t) = &self.machine_type {
            st.serialize_field("machine_type", t)?;
        }
        if let Some(site) = &self.site {
            st.serialize_field("site", site)?;
        }
        st.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceKind {
    Repair,
    Scheduled,
    Failure,
}

impl MaintenanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceKind::Repair => "repair",
            MaintenanceKind::Scheduled => "scheduled",
            MaintenanceKind::Failure => "failure",
        }
    }

    pub(crate) fn to_pb(self) -> pb::MaintenanceKind {
        match self {
            MaintenanceKind::Repair => pb::MaintenanceKind::Repair,
            MaintenanceKind::Scheduled => pb::MaintenanceKind::Scheduled,
            MaintenanceKind::Failure => pb::MaintenanceKind::Failure,
        }
    }

    pub(crate) fn from_pb(kind: pb::MaintenanceKind) -> Option<Self> {
        match kind {
            pb::MaintenanceKind::Unspecified => None,
            pb::MaintenanceKind::Repair => Some(MaintenanceKind::Repair),
            pb::MaintenanceKind::Scheduled => Some(MaintenanceKind::Scheduled),
            pb::MaintenanceKind::Failure => Some(MaintenanceKind::Failure),
        }
    }
}

/// Maintenance done on a machine, validated. Resets the machine's window.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceEvent {
    pub machine_id: String,
    pub ts_ms: i64,
    pub kind: MaintenanceKind,
    pub note: String,
}

impl MaintenanceEvent {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "machine_id": self.machine_id,
            "ts": rfc3339_ms(self.ts_ms),
            "kind": self.kind,
            "note": self.note,
        }))
        .expect("event always serialises")
    }

    pub fn to_protobuf(&self) -> Vec<u8> {
        pb::MaintenanceEvent {
            machine_id: self.machine_id.clone(),
            ts_ms: Some(self.ts_ms),
            kind: self.kind.to_pb() as i32,
            note: self.note.clone(),
        }
        .encode_to_vec()
    }
}

/// A days-to-maintenance forecast (InfluxDB `maintenance_forecast`, docs/influxdb.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub machine_id: String,
    /// Newest row in the window, epoch milliseconds.
    pub ts_ms: i64,
    pub model: String,
    pub model_version: String,
    pub days_to_maintenance: f64,
    /// Epoch seconds.
    pub due_at: i64,
    pub days_p10: f64,
    pub days_p90: f64,
    pub window_rows: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Input quality: the share of the model's sensors that passed every check (1 = clean).
    #[serde(default = "clean", skip_serializing_if = "is_clean")]
    pub quality_score: f64,
    /// `sensor:flag` pairs that lowered the score (flags: stuck, out_of_range, missing, drift),
    /// comma-separated; empty when clean.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quality_flags: String,
    /// The score is below the service's threshold: the interval was widened and the forecast
    /// should not be acted on as certain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low_confidence: bool,
}

fn clean() -> f64 {
    1.0
}

fn is_clean(score: &f64) -> bool {
    *score == 1.0
}

impl Forecast {
    pub fn to_protobuf(&self) -> Vec<u8> {
        pb::Forecast {
            machine_id: self.machine_id.clone(),
            ts_ms: self.ts_ms,
            model: self.model.clone(),
            model_version: self.model_version.clone(),
            days_to_maintenance: self.days_to_maintenance,
            due_at: self.due_at,
            days_p10: self.days_p10,
            days_p90: self.days_p90,
            window_rows: self.window_rows,
            machine_type: self.machine_type.clone(),
            site: self.site.clone(),
            quality_score: Some(self.quality_score),
            quality_flags: self.quality_flags.clone(),
            low_confidence: self.low_confidence,
        }
        .encode_to_vec()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The forecast fell below the threshold.
    Due,
    /// The forecast rose back above the threshold plus the hysteresis margin.
    Recovered,
}

/// One message on `maintenance-alerts` per threshold crossing (JSON on the topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub machine_id: String,
    pub ts_ms: i64,
    pub state: AlertState,
    pub days_to_maintenance: f64,
    pub threshold_days: f64,
    pub due_at: i64,
    pub model: String,
    pub model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Input quality: the share of the model's sensors that passed every check (1 = clean).
    #[serde(default = "clean", skip_serializing_if = "is_clean")]
    pub quality_score: f64,
    /// `sensor:flag` pairs that lowered the score (flags: stuck, out_of_range, missing, drift),
    /// comma-separated; empty when clean.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quality_flags: String,
    /// The score is below the service's threshold: the interval was widened and the forecast
    /// should not be acted on as certain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low_confidence: bool,
}

impl Alert {
    pub fn to_protobuf(&self) -> Vec<u8> {
        pb::Alert {
            machine_id: self.machine_id.clone(),
            ts_ms: self.ts_ms,
            state: match self.state {
                AlertState::Due => pb::AlertState::Due,
                AlertState::Recovered => pb::AlertState::Recovered,
            } as i32,
            days_to_maintenance: self.days_to_maintenance,
            threshold_days: self.threshold_days,
            due_at: self.due_at,
            model: self.model.clone(),
            model_version: self.model_version.clone(),
            machine_type: self.machine_type.clone(),
            site: self.site.clone(),
            quality_score: Some(self.quality_score),
            quality_flags: self.quality_flags.clone(),
            low_confidence: self.low_confidence,
        }
        .encode_to_vec()
    }
}
