//! The decoders under arbitrary input: random bytes, valid messages mutated (truncated, bits
//! flipped, bytes inserted) and JSON documents of any shape, each as JSON and as Protobuf, with
//! and without a content-type header. Whatever comes in, decoding returns (no panic) and the
//! input is classified: a row that holds the documented rules, or an error with a reason label
//! and a message for the DLQ.
//!
//! A fixed seed and case count keep CI deterministic; `PROPTEST_RNG_SEED` and `PROPTEST_CASES`
//! explore further (e.g. `PROPTEST_CASES=200000 PROPTEST_RNG_SEED=$RANDOM cargo test -p
//! maintcast-proto --test fuzz`).

use maintcast_proto::{DecodeError, Decoder, MaintenanceEvent, MaintenanceKind, Telemetry, pb};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use prost::Message;

const NOW: i64 = 1_790_000_000_000;

/// The reason labels `DecodeError::reason` may give; a new variant must be added here knowingly.
const REASONS: &[&str] = &[
    "too_large",
    "empty",
    "content_type",
    "json",
    "protobuf",
    "machine_id",
    "ts",
    "sensors",
    "kind",
];

fn config() -> Config {
    let mut c = Config {
        cases: 2000,
        rng_seed: RngSeed::Fixed(0x6d61_696e_7463_6173),
        ..Config::default()
    };
    // The variables proptest documents still win, so a longer or different run needs no edit.
    if std::env::var_os("PROPTEST_CASES").is_some() {
        c.cases = Config::default().cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        c.rng_seed = Config::default().rng_seed;
    }
    c
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/x-protobuf".to_string())),
        Just(Some("application/JSON; charset=utf-8".to_string())),
        Just(Some("application/vnd.google.protobuf".to_string())),
        ".{0,40}".prop_map(Some),
    ]
}

fn classified_error(e: &DecodeError) {
    assert!(REASONS.contains(&e.reason()), "unknown reason {e:?}");
    assert!(!e.to_string().is_empty(), "{e:?} has no message");
}

fn check_machine_id(id: &str, decoder: &Decoder) {
    assert!(!id.trim().is_empty(), "accepted an empty machine_id");
    assert!(id.len() <= decoder.limits.max_machine_id_bytes);
    assert!(!id.chars().any(char::is_control), "control chars in {id:?}");
}

fn check_ts(ts_ms: i64, decoder: &Decoder) {
    assert!(ts_ms >= 0, "accepted ts {ts_ms} before 1970");
    if let Some(min) = decoder.limits.min_ts_ms {
        assert!(
            ts_ms >= min,
            "accepted ts {ts_ms}, older than the floor {min}"
        );
    }
    if let Some(limit) = decoder.limits.max_future_ms {
        assert!(ts_ms - NOW <= limit, "accepted ts {ts_ms}, too far ahead");
    }
}

/// Decodes `bytes` as telemetry and as a maintenance event; each must be a valid value or a
/// classified error, and decoding twice gives the same answer.
fn decode_both(bytes: &[u8], ct: Option<&str>) {
    let decoder = Decoder::default();
    let t = decoder.decode_telemetry_at(bytes, ct, NOW);
    assert_eq!(
        format!("{t:?}"),
        format!("{:?}", decoder.decode_telemetry_at(bytes, ct, NOW)),
        "decoding is deterministic"
    );
    match t {
        Ok(t) => {
            assert!(bytes.len() <= decoder.limits.max_bytes);
            check_machine_id(&t.machine_id, &decoder);
            check_ts(t.ts_ms, &decoder);
            assert!(!t.sensors.is_empty() && t.sensors.len() <= decoder.limits.max_sensors);
            let mut names: Vec<&str> = t.sensors.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.iter().all(|n| !n.is_empty()), "empty sensor name");
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.sensors.len(), "duplicate sensor accepted");
        }
        Err(e) => classified_error(&e),
    }
    match decoder.decode_maintenance_event_at(bytes, ct, NOW) {
        Ok(e) => {
            check_machine_id(&e.machine_id, &decoder);
            check_ts(e.ts_ms, &decoder);
        }
        Err(e) => classified_error(&e),
    }
}

fn telemetry() -> impl Strategy<Value = Telemetry> {
    (
        ".{0,20}",
        -10_000_000_000_000i64..3_000_000_000_000,
        prop::collection::vec((".{0,8}", any::<f64>()), 0..6),
        prop::option::of(".{0,8}"),
    )
        .prop_map(|(machine_id, ts_ms, sensors, machine_type)| Telemetry {
            machine_id,
            ts_ms,
            sensors,
            machine_type,
            site: None,
        })
}

fn event() -> impl Strategy<Value = MaintenanceEvent> {
    (
        ".{0,20}",
        -10_000_000_000_000i64..3_000_000_000_000,
        0..3usize,
        ".{0,12}",
    )
        .prop_map(|(machine_id, ts_ms, k, note)| MaintenanceEvent {
            machine_id,
            ts_ms,
            kind: [
                MaintenanceKind::Repair,
                MaintenanceKind::Scheduled,
                MaintenanceKind::Failure,
            ][k],
            note,
        })
}

/// A valid encoding of either message in either form.
fn encoded() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        telemetry().prop_map(|t| t.to_json()),
        telemetry().prop_map(|t| t.to_protobuf()),
        event().prop_map(|e| e.to_json()),
        event().prop_map(|e| pb::MaintenanceEvent {
            machine_id: e.machine_id,
            ts_ms: Some(e.ts_ms),
            kind: 1,
            note: e.note,
        }
        .encode_to_vec()),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    FlipBit(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match *m {
            Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
            Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
                let i = at(i, bytes.len());
                bytes[i] ^= 1 << (bit % 8);
            }
            Mutation::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(at(i, bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

/// JSON values of any shape, numbers at their extremes included.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2026-11-29T06:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON object using the messages' keys (and others) with values of any type.
fn json_document() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("machine_id".to_string()),
        Just("ts".to_string()),
        Just("sensors".to_string()),
        Just("machine_type".to_string()),
        Just("site".to_string()),
        Just("kind".to_string()),
        Just("note".to_string()),
        "[a-z_]{1,8}",
    ];
    prop::collection::vec((key, json_value()), 0..7).prop_map(|kv| {
        serde_json::to_vec(&serde_json::Value::Object(kv.into_iter().collect())).unwrap()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_classified(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        ct in content_type(),
    ) {
        decode_both(&bytes, ct.as_deref());
        // The same bytes opening as a JSON object, so the JSON path sees them too.
        let mut braced = vec![b'{'];
        braced.extend_from_slice(&bytes);
        decode_both(&braced, ct.as_deref());
    }

    #[test]
    fn mutated_messages_are_classified(
        bytes in encoded(),
        mutations in prop::collection::vec(mutation(), 0..4),
        ct in content_type(),
    ) {
        decode_both(&mutate(bytes, &mutations), ct.as_deref());
    }

    #[test]
    fn json_of_any_shape_is_classified(
        doc in json_document(),
        ct in content_type(),
    ) {
        decode_both(&doc, ct.as_deref());
    }
}

/// Oversized input is refused by size whatever it holds, before any parsing.
#[test]
fn oversized_input_is_refused_by_size() {
    let decoder = Decoder::default();
    let big = vec![b'{'; decoder.limits.max_bytes + 1];
    for ct in [
        None,
        Some("application/json"),
        Some("application/x-protobuf"),
    ] {
        let e = decoder.decode_telemetry_at(&big, ct, NOW).unwrap_err();
        assert_eq!(e.reason(), "too_large");
    }
}
