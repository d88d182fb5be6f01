//! The JSON Schemas beside the .proto (`proto/maintcast/v1/*.schema.json`) and docs/messages.md
//! agree with the decoder: every example the page shows validates against its schema and decodes,
//! every example it shows as rejected fails both, and what our own serialisers write validates.

use maintcast_proto::{
    Alert, AlertState, Decoder, Limits, MaintenanceEvent, MaintenanceKind, Telemetry,
};
use serde_json::Value;

/// Any time after the page's examples, so none is "in the future".
const NOW: i64 = 1_800_000_000_000;

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/maintcast/v1/{name}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}"))
}

/// The fenced blocks of docs/messages.md whose info string is `json <kind>`.
fn examples(kind: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/messages.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let fence = format!("```json {kind}");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() == fence {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            out.push(body.join("\n"));
        }
    }
    assert!(!out.is_empty(), "no `{fence}` example in docs/messages.md");
    out
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| e.to_string()).collect()
}

fn decoder() -> Decoder {
    Decoder::new(Limits::default())
}

#[test]
fn documented_telemetry_validates_and_decodes() {
    let v = schema("telemetry");
    for text in examples("telemetry") {
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(errors(&v, &json), Vec::<String>::new(), "{text}");
        decoder()
            .decode_telemetry_at(text.as_bytes(), Some("application/json"), NOW)
            .unwrap_or_else(|e| panic!("the decoder refuses a documented row ({e}): {text}"));
    }
}

#[test]
fn documented_events_validate_and_decode() {
    let v = schema("maintenance_event");
    for text in examples("maintenance-event") {
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(errors(&v, &json), Vec::<String>::new(), "{text}");
        decoder()
            .decode_maintenance_event_at(text.as_bytes(), Some("application/json"), NOW)
            .unwrap_or_else(|e| panic!("the decoder refuses a documented event ({e}): {text}"));
    }
}

#[test]
fn documented_rejections_fail_both() {
    let v = schema("telemetry");
    for text in examples("rejected") {
        let json: Value = serde_json::from_str(&text).unwrap();
        assert!(v.validate(&json).is_err(), "the schema accepts {text}");
        let e = decoder()
            .decode_telemetry_at(text.as_bytes(), Some("application/json"), NOW)
            .err();
        assert!(e.is_some(), "the decoder accepts {text}");
    }
}

#[test]
fn events_the_decoder_refuses_the_schema_refuses() {
    let v = schema("maintenance_event");
    for text in [
        r#"{"machine_id": "m1", "ts": 1764417600000, "kind": "inspection"}"#,
        r#"{"machine_id": "m1", "ts": 1764417600000}"#,
        r#"{"machine_id": "m1", "kind": "repair"}"#,
        r#"{"machine_id": "m\u0007", "ts": 1764417600000, "kind": "repair"}"#,
        r#"{"machine_id": "m1", "ts": 1764417600000, "kind": "repair", "note": 3}"#,
    ] {
        let json: Value = serde_json::from_str(text).unwrap();
        assert!(v.validate(&json).is_err(), "the schema accepts {text}");
        assert!(
            decoder()
                .decode_maintenance_event_at(text.as_bytes(), None, NOW)
                .is_err(),
            "the decoder accepts {text}"
        );
    }
}

#[test]
fn what_our_serialisers_write_validates() {
    let row = Telemetry {
        machine_id: "press-017".into(),
        ts_ms: NOW - 1,
        sensors: vec![("a".into(), 1.5), ("b".into(), f64::NAN)],
        machine_type: Some("press".into()),
        site: None,
    };
    let json: Value = serde_json::from_slice(&row.to_json()).unwrap();
    assert_eq!(errors(&schema("telemetry"), &json), Vec::<String>::new());

    let event = MaintenanceEvent {
        machine_id: "press-017".into(),
        ts_ms: NOW - 1,
        kind: MaintenanceKind::Scheduled,
        note: String::new(),
    };
    let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
    assert_eq!(
        errors(&schema("maintenance_event"), &json),
        Vec::<String>::new()
    );

    let alert = Alert {
        machine_id: "press-017".into(),
        ts_ms: NOW,
        state: AlertState::Recovered,
        days_to_maintenance: 9.0,
        threshold_days: 7.0,
        due_at: NOW / 1000 + 9 * 86_400,
        model: "maintcast".into(),
        model_version: "v0001".into(),
        machine_type: None,
        site: Some("aarhus".into()),
        quality_score: 1.0,
        quality_flags: String::new(),
        low_confidence: false,
    };
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(errors(&schema("alert"), &json), Vec::<String>::new());
    assert!(
        json.get("quality_score").is_none(),
        "clean inputs add nothing"
    );
    let doubtful = Alert {
        quality_score: 5.0 / 6.0,
        quality_flags: "bearing_temp_c:stuck".into(),
        low_confidence: true,
        ..alert
    };
    let json = serde_json::to_value(&doubtful).unwrap();
    assert_eq!(errors(&schema("alert"), &json), Vec::<String>::new());
    assert_eq!(json["low_confidence"], true);
}

#[test]
fn the_documented_alert_is_what_ingest_writes() {
    let v = schema("alert");
    for text in examples("alert") {
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(errors(&v, &json), Vec::<String>::new(), "{text}");
        let alert: Alert = serde_json::from_str(&text).unwrap();
        // Written back, it is the same document: the page shows the service's own form.
        assert_eq!(serde_json::to_value(&alert).unwrap(), json);
    }
}
