//! The one way untrusted bytes become telemetry rows or maintenance events.
//!
//! Over 400 lines on purpose: JSON and Protobuf share every rule after parsing (limits, id,
//! timestamp window, sensor names), and keeping both parsers beside those rules is what makes
//! the two encodings accept and refuse exactly the same rows.

use std::fmt;

use chrono::{DateTime, Utc};
use prost::Message;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::messages::{MaintenanceEvent, MaintenanceKind, Telemetry};
use crate::{pb, wire};

/// What is wrong with a message. The `Display` text goes to the DLQ `error` header, so it names
/// the field and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("message is empty")]
    Empty,
    #[error("unsupported content-type {0:?} (expected application/json or application/x-protobuf)")]
    UnsupportedContentType(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid JSON: NaN and Infinity are not JSON numbers; send null for a missing value")]
    NonFiniteLiteral,
    #[error("invalid Protobuf: {0}")]
    Protobuf(String),
    #[error("machine_id is missing")]
    MissingMachineId,
    #[error("machine_id is empty")]
    EmptyMachineId,
    #[error("machine_id is {len} bytes, over the {limit}-byte limit")]
    MachineIdTooLong { len: usize, limit: usize },
    #[error("machine_id contains control characters")]
    MachineIdControlChars,
    #[error("ts is missing")]
    MissingTimestamp,
    #[error("ts {0} is neither RFC 3339 nor integer epoch milliseconds")]
    BadTimestamp(String),
    #[error("ts {0} is before 1970-01-01")]
    TimestampBeforeEpoch(i64),
    #[error(
        "ts {ts_ms} ms is before the oldest accepted time {min_ms} ms: epoch seconds sent as \
         milliseconds? ts must be epoch milliseconds or RFC 3339"
    )]
    TimestampTooOld { ts_ms: i64, min_ms: i64 },
    #[error("ts {ts_ms} is {ahead_ms} ms in the future (limit {limit_ms} ms)")]
    FutureTimestamp {
        ts_ms: i64,
        ahead_ms: i64,
        limit_ms: i64,
    },
    #[error("sensors are missing or empty")]
    NoSensors,
    #[error("{count} sensors, over the limit of {limit}")]
    TooManySensors { count: usize, limit: usize },
    #[error("a sensor name is empty")]
    EmptySensorName,
    #[error("sensor {0:?} appears more than once")]
    DuplicateSensor(String),
    #[error("maintenance kind {0:?} is not one of repair, scheduled, failure")]
    BadKind(String),
}

impl DecodeError {
    /// A short stable label, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Empty => "empty",
            DecodeError::UnsupportedContentType(_) => "content_type",
            DecodeError::Json(_) | DecodeError::NonFiniteLiteral => "json",
            DecodeError::Protobuf(_) => "protobuf",
            DecodeError::MissingMachineId
            | DecodeError::EmptyMachineId
            | DecodeError::MachineIdTooLong { .. }
            | DecodeError::MachineIdControlChars => "machine_id",
            DecodeError::MissingTimestamp
            | DecodeError::BadTimestamp(_)
            | DecodeError::TimestampBeforeEpoch(_)
            | DecodeError::TimestampTooOld { .. }
            | DecodeError::FutureTimestamp { .. } => "ts",
            DecodeError::NoSensors
            | DecodeError::TooManySensors { .. }
            | DecodeError::EmptySensorName
            | DecodeError::DuplicateSensor(_) => "sensors",
            DecodeError::BadKind(_) => "kind",
        }
    }
}

/// 2000-01-01T00:00:00Z: any telemetry older than this is a unit mistake, not history.
pub const MIN_PLAUSIBLE_TS_MS: i64 = 946_684_800_000;

/// Validation limits. The defaults suit a factory fleet; all are configurable in the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_bytes: usize,
    /// How far ahead of this host's clock a timestamp may be. `None` disables the check, for
    /// replaying synthetic histories whose clock runs ahead of the wall clock.
    pub max_future_ms: Option<i64>,
    /// The oldest accepted timestamp (epoch ms); `None` accepts any from 1970 on. The default
    /// (2000-01-01) catches epoch seconds sent as milliseconds, which land in January 1970.
    pub min_ts_ms: Option<i64>,
    pub max_machine_id_bytes: usize,
    pub max_sensors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024,
            max_future_ms: Some(24 * 3600 * 1000),
            min_ts_ms: Some(MIN_PLAUSIBLE_TS_MS),
            max_machine_id_bytes: 256,
            max_sensors: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Json,
    Protobuf,
}

impl ContentType {
    /// From the Kafka `content-type` header; without one the first byte decides (`{` = JSON),
    /// as docs/messages.md says. Parameters such as `; charset=utf-8` are ignored.
    pub fn detect(header: Option<&str>, bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some(header) = header else {
            return Ok(if bytes.first() == Some(&b'{') {
                ContentType::Json
            } else {
                ContentType::Protobuf
            });
        };
        let essence = header
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(ContentType::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Ok(ContentType::Protobuf),
            _ => Err(DecodeError::UnsupportedContentType(header.to_string())),
        }
    }
}

/// Decodes and validates messages against [`Limits`].
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    pub limits: Limits,
}

/// [`Decoder::decode_telemetry`] with default limits.
pub fn decode_telemetry(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Telemetry, DecodeError> {
    Decoder::default().decode_telemetry(bytes, content_type)
}

/// [`Decoder::decode_maintenance_event`] with default limits.
pub fn decode_maintenance_event(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<MaintenanceEvent, DecodeError> {
    Decoder::default().decode_maintenance_event(bytes, content_type)
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder { limits }
    }

    pub fn decode_telemetry(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<Telemetry, DecodeError> {
        self.decode_telemetry_at(bytes, content_type, Utc::now().timestamp_millis())
    }

    /// As [`Decoder::decode_telemetry`] with the clock passed in, so tests are deterministic.
    pub fn decode_telemetry_at(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        now_ms: i64,
    ) -> Result<Telemetry, DecodeError> {
        let kind = self.precheck(bytes, content_type)?;
        let (machine_id, ts, sensors, machine_type, site) = match kind {
            ContentType::Json => {
                let raw: TelemetryJson = parse_json(bytes)?;
                let ts = raw.ts.ok_or(DecodeError::MissingTimestamp)?.0?;
                let sensors = raw.sensors.map(|s| s.0).unwrap_or_default();
                (raw.machine_id, ts, sensors, raw.machine_type, raw.site)
            }
            ContentType::Protobuf => {
                let raw = wire::TelemetryWire::decode(bytes)
                    .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
                let ts = raw.ts_ms.ok_or(DecodeError::MissingTimestamp)?;
                (
                    Some(raw.machine_id),
                    ts,
                    wire::sensors(raw.sensors),
                    raw.machine_type,
                    raw.site,
                )
            }
        };
        let machine_id = self.check_machine_id(machine_id)?;
        self.check_ts(ts, now_ms)?;
        if sensors.is_empty() {
            return Err(DecodeError::NoSensors);
        }
        if sensors.len() > self.limits.max_sensors {
            return Err(DecodeError::TooManySensors {
                count: sensors.len(),
                limit: self.limits.max_sensors,
            });
        }
        if sensors.iter().any(|(n, _)| n.is_empty()) {
            return Err(DecodeError::EmptySensorName);
        }
        Ok(Telemetry {
            machine_id,
            ts_ms: ts,
            sensors,
            machine_type: machine_type.filter(|s| !s.is_empty()),
            site: site.filter(|s| !s.is_empty()),
        })
    }

    pub fn decode_maintenance_event(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<MaintenanceEvent, DecodeError> {
        self.decode_maintenance_event_at(bytes, content_type, Utc::now().timestamp_millis())
    }

    pub fn decode_maintenance_event_at(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        now_ms: i64,
    ) -> Result<MaintenanceEvent, DecodeError> {
        let kind = self.precheck(bytes, content_type)?;
        let (machine_id, ts, kind, note) = match kind {
            ContentType::Json => {
                let raw: EventJson = parse_json(bytes)?;
                let ts = raw.ts.ok_or(DecodeError::MissingTimestamp)?.0?;
                let kind_text = raw.kind.unwrap_or_default();
                let kind = match kind_text.as_str() {
                    "repair" => MaintenanceKind::Repair,
                    "scheduled" => MaintenanceKind::Scheduled,
                    "failure" => MaintenanceKind::Failure,
                    _ => return Err(DecodeError::BadKind(kind_text)),
                };
                (raw.machine_id, ts, kind, raw.note.unwrap_or_default())
            }
            ContentType::Protobuf => {
                let raw = pb::MaintenanceEvent::decode(bytes)
                    .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
                let ts = raw.ts_ms.ok_or(DecodeError::MissingTimestamp)?;
                let kind = pb::MaintenanceKind::try_from(raw.kind)
                    .ok()
                    .and_then(MaintenanceKind::from_pb)
                    .ok_or_else(|| DecodeError::BadKind(raw.kind.to_string()))?;
                (Some(raw.machine_id), ts, kind, raw.note)
            }
        };
        let machine_id = self.check_machine_id(machine_id)?;
        self.check_ts(ts, now_ms)?;
        Ok(MaintenanceEvent {
            machine_id,
            ts_ms: ts,
            kind,
            note,
        })
    }

    fn precheck(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<ContentType, DecodeError> {
        if bytes.len() > self.limits.max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.limits.max_bytes,
            });
        }
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        ContentType::detect(content_type, bytes)
    }

    fn check_machine_id(&self, id: Option<String>) -> Result<String, DecodeError> {
        let id = id.ok_or(DecodeError::MissingMachineId)?;
        if id.trim().is_empty() {
            return Err(DecodeError::EmptyMachineId);
        }
        if id.len() > self.limits.max_machine_id_bytes {
            return Err(DecodeError::MachineIdTooLong {
                len: id.len(),
                limit: self.limits.max_machine_id_bytes,
            });
        }
        // Control characters would corrupt InfluxDB line protocol tags and log lines.
        if id.chars().any(char::is_control) {
            return Err(DecodeError::MachineIdControlChars);
        }
        Ok(id)
    }

    fn check_ts(&self, ts_ms: i64, now_ms: i64) -> Result<(), DecodeError> {
        if ts_ms < 0 {
            return Err(DecodeError::TimestampBeforeEpoch(ts_ms));
        }
        if let Some(min_ms) = self.limits.min_ts_ms
            && ts_ms < min_ms
        {
            return Err(DecodeError::TimestampTooOld { ts_ms, min_ms });
        }
        if let Some(limit_ms) = self.limits.max_future_ms {
            let ahead_ms = ts_ms.saturating_sub(now_ms);
            if ahead_ms > limit_ms {
                return Err(DecodeError::FutureTimestamp {
                    ts_ms,
                    ahead_ms,
                    limit_ms,
                });
            }
        }
        Ok(())
    }
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if has_non_finite_literal(bytes) {
            DecodeError::NonFiniteLiteral
        } else {
            DecodeError::Json(e.to_string())
        }
    })
}

/// Whether the text holds a bare `NaN` / `Infinity` token outside strings: what Python's json
/// module and some PLC gateways emit. Only called on the error path, to give a better reason.
fn has_non_finite_literal(bytes: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if bytes[i..].starts_with(b"NaN") || bytes[i..].starts_with(b"Infinity") {
            return true;
        }
    }
    false
}

/// A JSON `ts`: integer epoch milliseconds or an RFC 3339 string, read without building a
/// `serde_json::Value` (a string copy per row). `null` is a missing `ts` (the `Option` around
/// it); any other value is a bad one, reported with its text.
struct TsJson(Result<i64, DecodeError>);

impl<'de> Deserialize<'de> for TsJson {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TsJson;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TsJson, E> {
                Ok(TsJson(Ok(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TsJson, E> {
                Ok(TsJson(
                    i64::try_from(v).map_err(|_| DecodeError::BadTimestamp(v.to_string())),
                ))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TsJson, E> {
                Ok(TsJson(Err(DecodeError::BadTimestamp(
                    serde_json::Number::from_f64(v)
                        .map_or_else(|| v.to_string(), |n| n.to_string()),
                ))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TsJson, E> {
                Ok(TsJson(Err(DecodeError::BadTimestamp(v.to_string()))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TsJson, E> {
                Ok(TsJson(
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| DecodeError::BadTimestamp(format!("{s:?}"))),
                ))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<TsJson, A::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(TsJson(Err(DecodeError::BadTimestamp(v.to_string()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TsJson, A::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TsJson(Err(DecodeError::BadTimestamp(v.to_string()))))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct TelemetryJson {
    machine_id: Option<String>,
    ts: Option<TsJson>,
    sensors: Option<SensorsJson>,
    machine_type: Option<String>,
    site: Option<String>,
}

#[derive(Deserialize)]
struct EventJson {
    machine_id: Option<String>,
    ts: Option<TsJson>,
    kind: Option<String>,
    note: Option<String>,
}

/// Sensor object in document order; `null` becomes NaN (a missing value, filled later).
struct SensorsJson(Vec<(String, f64)>);

impl<'de> Deserialize<'de> for SensorsJson {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SensorsJson;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of sensor name -> number or null")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SensorsJson, A::Error> {
                let mut out: Vec<(String, f64)> = Vec::with_capacity(map.size_hint().unwrap_or(16));
                // A short fingerprint per name makes the duplicate check compare integers; names
                // are compared only when fingerprints agree.
                let mut prints: Vec<u64> = Vec::with_capacity(out.capacity());
                while let Some(name) = map.next_key::<String>()? {
                    let value: Option<f64> = map.next_value().map_err(|e| {
                        de::Error::custom(format!(
                            "sensor {name:?}: expected a number or null ({e})"
                        ))
                    })?;
                    let print = fingerprint(&name);
                    if prints
                        .iter()
                        .zip(&out)
                        .any(|(&p, (n, _))| p == print && *n == name)
                    {
                        return Err(de::Error::custom(format!(
                            "sensor {name:?} appears more than once"
                        )));
                    }
                    prints.push(print);
                    out.push((name, value.unwrap_or(f64::NAN)));
                }
                Ok(SensorsJson(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// FNV-1a of a sensor name: not a hash table key (no attacker gains from collisions, they only
/// cost a string compare), just a cheap way to tell most names apart.
pub(crate) fn fingerprint(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
