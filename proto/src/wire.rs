//! `Telemetry` as its bytes arrive. On the wire `map<string, double> sensors = 3` is a repeated
//! entry message (`string key = 1; double value = 2;`), so this view reads the same bytes as the
//! generated [`crate::pb::Telemetry`] and writes bytes it reads. It keeps the producer's order
//! instead of collecting a `HashMap`: no name is hashed, and a producer that sends its sensors in
//! the model's order gets its row matched to the features by position (the generated type's
//! hash order, sorted for determinism, never matched). A name sent twice follows the map's rule:
//! the last value wins, in the place the name first had.

use crate::decode::fingerprint;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TelemetryWire {
    #[prost(string, tag = "1")]
    pub machine_id: String,
    #[prost(int64, optional, tag = "2")]
    pub ts_ms: Option<i64>,
    #[prost(message, repeated, tag = "3")]
    pub sensors: Vec<SensorEntry>,
    #[prost(string, optional, tag = "4")]
    pub machine_type: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub site: Option<String>,
}

/// One entry of the `sensors` map as the wire carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SensorEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// The entries in wire order, a repeated name keeping its first place and its last value.
pub(crate) fn sensors(entries: Vec<SensorEntry>) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::with_capacity(entries.len());
    let mut prints: Vec<u64> = Vec::with_capacity(entries.len());
    for SensorEntry { key, value } in entries {
        let print = fingerprint(&key);
        match prints
            .iter()
            .zip(&out)
            .position(|(&p, (n, _))| p == print && *n == key)
        {
            Some(i) => out[i].1 = value,
            None => {
                prints.push(print);
                out.push((key, value));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;

    use super::*;
    use crate::pb;

    fn entry(key: &str, value: f64) -> SensorEntry {
        SensorEntry {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn reads_what_the_generated_type_writes_and_the_other_way_round() {
        let generated = pb::Telemetry {
            machine_id: "m1".into(),
            ts_ms: Some(1_700_000_000_000),
            sensors: HashMap::from([
                ("a".into(), 1.0),
                ("b".into(), f64::NAN),
                ("c".into(), -3.5),
            ]),
            machine_type: Some("press".into()),
            site: None,
        };
        let wire = TelemetryWire::decode(&generated.encode_to_vec()[..]).unwrap();
        assert_eq!(wire.machine_id, "m1");
        assert_eq!(wire.ts_ms, Some(1_700_000_000_000));
        assert_eq!(wire.machine_type.as_deref(), Some("press"));
        assert_eq!(wire.site, None);
        let mut got = sensors(wire.sensors.clone());
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let bits: Vec<(String, u64)> = got.iter().map(|(n, v)| (n.clone(), v.to_bits())).collect();
        assert_eq!(
            bits,
            [("a", 1.0f64), ("b", f64::NAN), ("c", -3.5)]
                .map(|(n, v)| (n.to_string(), v.to_bits()))
        );

        let back = pb::Telemetry::decode(&wire.encode_to_vec()[..]).unwrap();
        assert_eq!(back.machine_id, generated.machine_id);
        assert_eq!(back.ts_ms, generated.ts_ms);
        assert_eq!(back.machine_type, generated.machine_type);
        assert_eq!(back.sensors.len(), 3);
        assert_eq!(back.sensors["c"], -3.5);
    }

    #[test]
    fn keeps_the_producers_order_and_the_maps_rule_for_a_repeated_name() {
        let wire = TelemetryWire {
            machine_id: "m1".into(),
            ts_ms: Some(1),
            sensors: vec![
                entry("s2", 2.0),
                entry("s10", 10.0),
                entry("s2", 7.0),
                entry("s1", 1.0),
            ],
            machine_type: None,
            site: None,
        };
        let bytes = wire.encode_to_vec();
        let read = TelemetryWire::decode(&bytes[..]).unwrap();
        assert_eq!(
            sensors(read.sensors),
            vec![
                ("s2".to_string(), 7.0),
                ("s10".into(), 10.0),
                ("s1".into(), 1.0)
            ]
        );
        // The generated type agrees on the value: the last one sent.
        assert_eq!(
            pb::Telemetry::decode(&bytes[..]).unwrap().sensors["s2"],
            7.0
        );
    }
}
