//! Small pieces every Flux reader needs (the trainer's history and live gate, the planner, the
//! ingest scorer): literals for a query, and typed values out of influxdb2's raw query records.

use influxdb2_structmap::value::Value;

/// Epoch milliseconds as a Flux time literal (RFC 3339, millisecond precision).
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Quotes a value for a Flux string literal.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A non-empty string column.
pub fn string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A numeric column of any of InfluxDB's number types.
pub fn number(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Double(d)) => Some(d.into_inner()),
        Some(Value::Long(l)) => Some(*l as f64),
        Some(Value::UnsignedLong(u)) => Some(*u as f64),
        _ => None,
    }
}

/// A time column as epoch milliseconds.
pub fn time_ms(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::TimeRFC(t)) => Some(t.timestamp_millis()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(number(Some(&Value::Long(3))), Some(3.0));
        assert_eq!(string(Some(&Value::String(String::new()))), None);
        assert_eq!(time_ms(None), None);
    }
}
