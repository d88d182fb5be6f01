use maintcast_proto::{
    DecodeError, Decoder, Limits, MaintenanceEvent, MaintenanceKind, Telemetry,
    decode_maintenance_event, decode_telemetry, pb,
};
use prost::Message;

const NOW: i64 = 1_790_000_000_000;

/// Default limits except the timestamp floor, so the rules below can use tiny timestamps.
fn decoder() -> Decoder {
    Decoder::new(Limits {
        min_ts_ms: None,
        ..Limits::default()
    })
}

fn tel(bytes: &[u8], ct: Option<&str>) -> Result<Telemetry, DecodeError> {
    decoder().decode_telemetry_at(bytes, ct, NOW)
}

fn row() -> Telemetry {
    Telemetry {
        machine_id: "press-017".into(),
        ts_ms: NOW - 60_000,
        sensors: vec![
            ("vibration_rms".into(), 0.42),
            ("bearing_temp_c".into(), 61.2),
        ],
        machine_type: Some("press".into()),
        site: Some("aarhus".into()),
    }
}

#[test]
fn design_example_json_decodes() {
    let json = br#"{"machine_id": "press-017", "ts": "2026-11-29T06:00:00Z", "sensors": {"vibration_rms": 0.42, "bearing_temp_c": 61.2},
 "machine_type": "press", "site": "aarhus"}"#;
    let t = decode_telemetry(json, Some("application/json")).unwrap();
    assert_eq!(t.machine_id, "press-017");
    assert_eq!(t.ts_ms, 1_795_932_000_000);
    assert_eq!(
        t.sensors,
        vec![
            ("vibration_rms".into(), 0.42),
            ("bearing_temp_c".into(), 61.2)
        ]
    );
    assert_eq!(t.machine_type.as_deref(), Some("press"));
    assert_eq!(t.site.as_deref(), Some("aarhus"));
}

#[test]
fn json_round_trip_and_epoch_ms() {
    let r = row();
    assert_eq!(tel(&r.to_json(), None).unwrap(), r);
    let t = tel(
        br#"{"machine_id":"m","ts":1789999999123,"sensors":{"a":1}}"#,
        None,
    )
    .unwrap();
    assert_eq!(t.ts_ms, 1_789_999_999_123);
    assert_eq!(t.machine_type, None);
    // RFC 3339 with an offset is converted to UTC.
    let t = tel(
        br#"{"machine_id":"m","ts":"2026-01-01T01:00:00+01:00","sensors":{"a":1}}"#,
        None,
    )
    .unwrap();
    assert_eq!(t.ts_ms, 1_767_225_600_000);
}

#[test]
fn protobuf_round_trip_with_and_without_header() {
    let r = row();
    let bytes = r.to_protobuf();
    // The sensors come back in the order they were sent.
    let expected = r.clone();
    assert_eq!(
        tel(&bytes, Some("application/x-protobuf")).unwrap(),
        expected
    );
    assert_eq!(tel(&bytes, None).unwrap(), expected);
    assert_eq!(
        tel(
            &bytes,
            Some("application/protobuf; proto=maintcast.v1.Telemetry")
        )
        .unwrap(),
        expected
    );
}

#[test]
fn null_and_protobuf_nan_are_kept_as_missing_values() {
    let t = tel(
        br#"{"machine_id":"m","ts":1,"sensors":{"a":null,"b":2.5}}"#,
        None,
    )
    .unwrap();
    assert!(t.sensors[0].1.is_nan());
    assert_eq!(t.sensors[1], ("b".into(), 2.5));
    let mut r = row();
    r.sensors[0].1 = f64::NAN;
    r.sensors[1].1 = f64::INFINITY;
    let t = tel(&r.to_protobuf(), None).unwrap();
    assert!(t.sensor("vibration_rms").unwrap().is_nan());
    assert_eq!(t.sensor("bearing_temp_c"), Some(f64::INFINITY));
    // The JSON form writes them as null rather than inventing a number.
    let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
    assert!(json["sensors"]["vibration_rms"].is_null());
}

#[test]
fn nan_literals_are_rejected_with_a_clear_reason() {
    for body in [
        &br#"{"machine_id":"m","ts":1,"sensors":{"a":NaN}}"#[..],
        br#"{"machine_id":"m","ts":1,"sensors":{"a":Infinity}}"#,
        br#"{"machine_id":"m","ts":1,"sensors":{"a":-Infinity}}"#,
    ] {
        let e = tel(body, None).unwrap_err();
        assert_eq!(
            e,
            DecodeError::NonFiniteLiteral,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.reason(), "json");
    }
    // "NaN" inside a string is not a literal: the error is the real one.
    let e = tel(br#"{"machine_id":"NaN","ts":1,"sensors":{"a":1}"#, None).unwrap_err();
    assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
}

#[test]
fn malformed_json_is_rejected() {
    for body in [
        &b"{not json"[..],
        b"{\"machine_id\":\"m\",",
        b"{\"machine_id\":7,\"ts\":1,\"sensors\":{\"a\":1}}",
    ] {
        let e = tel(body, None).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
    }
    let e = tel(br#"{"machine_id":"m","ts":1,"sensors":{"a":"hot"}}"#, None).unwrap_err();
    assert!(e.to_string().contains("sensor \"a\""), "{e}");
    let e = tel(
        br#"{"machine_id":"m","ts":1,"sensors":{"a":1,"a":2}}"#,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("more than once"), "{e}");
}

#[test]
fn bad_protobuf_is_rejected() {
    // Truncated length-delimited field.
    let e = tel(&[0x0a, 0x20, b'a'], None).unwrap_err();
    assert!(matches!(e, DecodeError::Protobuf(_)), "{e:?}");
    // Wire type 7 does not exist.
    let e = tel(&[0x0f, 0x01], Some("application/x-protobuf")).unwrap_err();
    assert!(matches!(e, DecodeError::Protobuf(_)), "{e:?}");
    // JSON sent with a Protobuf header is undecodable, or at best empty: never accepted.
    assert!(tel(&row().to_json(), Some("application/x-protobuf")).is_err());
}

#[test]
fn machine_id_rules() {
    assert_eq!(
        tel(br#"{"ts":1,"sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::MissingMachineId
    );
    assert_eq!(
        tel(br#"{"machine_id":"","ts":1,"sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::EmptyMachineId
    );
    assert_eq!(
        tel(br#"{"machine_id":"  ","ts":1,"sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::EmptyMachineId
    );
    assert_eq!(
        tel(br#"{"machine_id":"a\nb","ts":1,"sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::MachineIdControlChars
    );
    let long = format!(
        r#"{{"machine_id":"{}","ts":1,"sensors":{{"a":1}}}}"#,
        "x".repeat(257)
    );
    assert_eq!(
        tel(long.as_bytes(), None).unwrap_err(),
        DecodeError::MachineIdTooLong {
            len: 257,
            limit: 256
        }
    );
    let mut r = row();
    r.machine_id.clear();
    assert_eq!(
        tel(&r.to_protobuf(), None).unwrap_err(),
        DecodeError::EmptyMachineId
    );
}

#[test]
fn epoch_seconds_sent_as_milliseconds_are_refused_with_a_hint() {
    let seconds = NOW / 1000;
    let body = format!(r#"{{"machine_id":"m","ts":{seconds},"sensors":{{"a":1}}}}"#);
    let e = Decoder::default()
        .decode_telemetry_at(body.as_bytes(), None, NOW)
        .unwrap_err();
    assert_eq!(
        e,
        DecodeError::TimestampTooOld {
            ts_ms: seconds,
            min_ms: maintcast_proto::MIN_PLAUSIBLE_TS_MS
        }
    );
    assert_eq!(e.reason(), "ts");
    assert!(e.to_string().contains("epoch seconds"), "{e}");
    let ok = format!(r#"{{"machine_id":"m","ts":{NOW},"sensors":{{"a":1}}}}"#);
    assert!(
        Decoder::default()
            .decode_telemetry_at(ok.as_bytes(), None, NOW)
            .is_ok()
    );
}

#[test]
fn timestamp_rules() {
    assert_eq!(
        tel(br#"{"machine_id":"m","sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::MissingTimestamp
    );
    for ts in [
        r#""yesterday""#,
        r#""2026-13-01T00:00:00Z""#,
        "1.5",
        "true",
        r#""1789999999000""#,
        "[1789999999000]",
        r#"{"ms":1789999999000}"#,
        "18446744073709551615",
    ] {
        let body = format!(r#"{{"machine_id":"m","ts":{ts},"sensors":{{"a":1}}}}"#);
        let e = tel(body.as_bytes(), None).unwrap_err();
        assert!(matches!(e, DecodeError::BadTimestamp(_)), "{ts}: {e:?}");
    }
    assert_eq!(
        tel(br#"{"machine_id":"m","ts":-5,"sensors":{"a":1}}"#, None).unwrap_err(),
        DecodeError::TimestampBeforeEpoch(-5)
    );
    let day = 24 * 3600 * 1000;
    let body = format!(
        r#"{{"machine_id":"m","ts":{},"sensors":{{"a":1}}}}"#,
        NOW + day + 1
    );
    assert_eq!(
        tel(body.as_bytes(), None).unwrap_err(),
        DecodeError::FutureTimestamp {
            ts_ms: NOW + day + 1,
            ahead_ms: day + 1,
            limit_ms: day
        }
    );
    let body = format!(
        r#"{{"machine_id":"m","ts":{},"sensors":{{"a":1}}}}"#,
        NOW + day
    );
    assert!(tel(body.as_bytes(), None).is_ok());
    // The limit is configurable and can be switched off for replays of synthetic clocks.
    let lenient = Decoder::new(Limits {
        max_future_ms: None,
        min_ts_ms: None,
        ..Limits::default()
    });
    let body = format!(
        r#"{{"machine_id":"m","ts":{},"sensors":{{"a":1}}}}"#,
        NOW + 1000 * day
    );
    assert!(
        lenient
            .decode_telemetry_at(body.as_bytes(), None, NOW)
            .is_ok()
    );
    let mut r = row();
    let mut m = pb::Telemetry::decode(&r.to_protobuf()[..]).unwrap();
    m.ts_ms = None;
    assert_eq!(
        tel(&m.encode_to_vec(), None).unwrap_err(),
        DecodeError::MissingTimestamp
    );
    r.ts_ms = NOW + 2 * day;
    assert!(matches!(
        tel(&r.to_protobuf(), None).unwrap_err(),
        DecodeError::FutureTimestamp { .. }
    ));
}

#[test]
fn sensor_rules() {
    assert_eq!(
        tel(br#"{"machine_id":"m","ts":1}"#, None).unwrap_err(),
        DecodeError::NoSensors
    );
    assert_eq!(
        tel(br#"{"machine_id":"m","ts":1,"sensors":{}}"#, None).unwrap_err(),
        DecodeError::NoSensors
    );
    assert_eq!(
        tel(br#"{"machine_id":"m","ts":1,"sensors":{"":1}}"#, None).unwrap_err(),
        DecodeError::EmptySensorName
    );
    let small = Decoder::new(Limits {
        max_sensors: 1,
        min_ts_ms: None,
        ..Limits::default()
    });
    assert_eq!(
        small
            .decode_telemetry_at(
                br#"{"machine_id":"m","ts":1,"sensors":{"a":1,"b":2}}"#,
                None,
                NOW
            )
            .unwrap_err(),
        DecodeError::TooManySensors { count: 2, limit: 1 }
    );
    // Extra top-level fields are ignored so producers can add them first.
    assert!(
        tel(
            br#"{"machine_id":"m","ts":1,"sensors":{"a":1},"firmware":"2.1"}"#,
            None
        )
        .is_ok()
    );
}

#[test]
fn size_limit_empty_and_content_type() {
    let limited = Decoder::new(Limits {
        max_bytes: 40,
        min_ts_ms: None,
        ..Limits::default()
    });
    let body = row().to_json();
    assert_eq!(
        limited.decode_telemetry_at(&body, None, NOW).unwrap_err(),
        DecodeError::TooLarge {
            size: body.len(),
            limit: 40
        }
    );
    assert_eq!(tel(b"", None).unwrap_err(), DecodeError::Empty);
    let e = tel(&body, Some("text/csv")).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedContentType("text/csv".into()));
    assert!(tel(&body, Some("Application/JSON; charset=utf-8")).is_ok());
}

#[test]
fn maintenance_events_both_forms() {
    let ev = MaintenanceEvent {
        machine_id: "press-017".into(),
        ts_ms: NOW - 1000,
        kind: MaintenanceKind::Repair,
        note: "bearing".into(),
    };
    let d = decoder();
    assert_eq!(
        d.decode_maintenance_event_at(&ev.to_json(), None, NOW)
            .unwrap(),
        ev
    );
    assert_eq!(
        d.decode_maintenance_event_at(&ev.to_protobuf(), None, NOW)
            .unwrap(),
        ev
    );
    let e = d
        .decode_maintenance_event_at(
            br#"{"machine_id":"m","ts":1,"kind":"oil change"}"#,
            None,
            NOW,
        )
        .unwrap_err();
    assert_eq!(e, DecodeError::BadKind("oil change".into()));
    let e =
        decode_maintenance_event(br#"{"machine_id":"","ts":1,"kind":"repair"}"#, None).unwrap_err();
    assert_eq!(e, DecodeError::EmptyMachineId);
    let unspecified = pb::MaintenanceEvent {
        machine_id: "m".into(),
        ts_ms: Some(1),
        kind: 0,
        note: String::new(),
    };
    assert!(matches!(
        d.decode_maintenance_event_at(&unspecified.encode_to_vec(), None, NOW)
            .unwrap_err(),
        DecodeError::BadKind(_)
    ));
}

#[test]
fn every_error_has_a_reason_label_and_message() {
    let e = DecodeError::FutureTimestamp {
        ts_ms: 5,
        ahead_ms: 4,
        limit_ms: 3,
    };
    assert_eq!(e.reason(), "ts");
    assert!(e.to_string().contains("future"));
    assert_eq!(
        DecodeError::TooLarge { size: 2, limit: 1 }.reason(),
        "too_large"
    );
}
