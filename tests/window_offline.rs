//! Serving sees what training saw: messy telemetry streams (gaps, nulls, NaN and infinities,
//! unknown and missing sensors, duplicate and out-of-order rows, maintenance events on time, late
//! and stale, histories shorter than the window, checkpoints taken and restored mid-stream) go
//! through the ingest service's pipeline (`maintcast_ingest::pipeline`: window store, forecast
//! schedule, forecast requests) row by row, and the same rows through the offline
//! data path that training and evaluation use. At every message the window the store holds must
//! equal the offline window, and every forecast the store asks for must equal the offline one to
//! 1e-4. No servers: this is the pure part of the pipeline.

use candle_core::Device;
use maintcast_e2e::offline::{OfflineMachine, forecast};
use maintcast_e2e::stream::{RandomModel, publish_random_model};
use maintcast_ingest::checkpoint;
use maintcast_ingest::model::Model as _;
use maintcast_ingest::pipeline::Pipeline;
use maintcast_ingest::serving::ServingModel;
use maintcast_ingest::window::{RowOutcome, WindowStore};
use maintcast_models::Forecaster;
use maintcast_models::prep::Arrival;
use maintcast_proto::{MaintenanceEvent, MaintenanceKind, Telemetry};
use proptest::prelude::*;

const SENSORS: [&str; 3] = ["temp", "vibration", "pressure"];
const MACHINES: usize = 3;
/// Rows are 10 ms apart, so an event at `row ts + 5` falls between two rows.
const STEP: i64 = 10;

/// One sensor reading as a producer might send it.
#[derive(Debug, Clone)]
enum Reading {
    Value(f64),
    /// The sensor is not in the message at all.
    Absent,
    /// JSON null or NaN.
    Nan,
    Inf,
    /// Finite in f64, infinite in f32.
    Huge,
}

#[derive(Debug, Clone)]
enum Msg {
    Row {
        machine: usize,
        /// Time relative to the machine's newest row so far, in steps: > 0 in order, 0 a
        /// duplicate, < 0 out of order.
        dt: i64,
        readings: Vec<Reading>,
        unknown_sensor: bool,
    },
    Event {
        machine: usize,
        /// Relative to the machine's newest row, in steps (negative: the event arrives late).
        de: i64,
    },
    /// The machine's window goes through a checkpoint and back.
    Checkpoint { machine: usize },
}

fn reading() -> impl Strategy<Value = Reading> {
    prop_oneof![
        12 => (-50.0..150.0f64).prop_map(Reading::Value),
        2 => Just(Reading::Absent),
        2 => Just(Reading::Nan),
        1 => Just(Reading::Inf),
        1 => Just(Reading::Huge),
    ]
}

fn msg(max_late: i64) -> impl Strategy<Value = Msg> {
    prop_oneof![
        20 => (
            0..MACHINES,
            prop_oneof![8 => 1..=3i64, 1 => Just(0i64), 2 => -5..0i64],
            proptest::collection::vec(reading(), SENSORS.len()),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(machine, dt, readings, unknown_sensor)| Msg::Row {
                machine,
                dt,
                readings,
                unknown_sensor,
            }),
        2 => (0..MACHINES, -max_late..=1i64).prop_map(|(machine, de)| Msg::Event { machine, de }),
        1 => (0..MACHINES).prop_map(|machine| Msg::Checkpoint { machine }),
    ]
}

/// A model's shape and the stream it serves: window 2-6 rows, padding from `min_rows` on, a
/// forecast every `stride` rows. With a stride above 1, events are at most `window - 1` rows late
/// (the store counts rows since a maintenance only among the rows it holds, see
/// `MachineWindow::rows_since_reset`); with stride 1 they may be arbitrarily late.
fn case() -> impl Strategy<Value = (usize, usize, u64, u64, Vec<Msg>)> {
    (2..=6usize, 1..=3u64)
        .prop_flat_map(|(window, stride)| {
            let max_late = if stride == 1 { 40 } else { window as i64 - 1 };
            (
                Just(window),
                1..=window,
                Just(stride),
                any::<u64>(),
                proptest::collection::vec(msg(max_late), 1..120),
            )
        })
        .prop_map(|(w, min_rows, stride, seed, msgs)| (w, min_rows, stride, seed, msgs))
}

struct Model {
    serving: ServingModel,
    offline: Forecaster,
    _registry: tempfile::TempDir,
}

fn model(window: usize, min_rows: usize, seed: u64) -> Model {
    let registry = tempfile::tempdir().unwrap();
    // The model lists its features in another order than the messages: columns go by name.
    let features = vec!["pressure".into(), "temp".into(), "vibration".into()];
    let spec = RandomModel {
        features,
        window,
        min_rows,
        hidden: vec![6],
        offset: vec![1.0, 50.0, 0.0],
        scale: vec![4.0, 50.0, 2.0],
        seed,
        pooling: Default::default(),
        member_windows: Vec::new(),
    };
    let version = publish_random_model(registry.path(), "m", spec).unwrap();
    let dir = registry.path().join("m").join(version);
    Model {
        serving: ServingModel::load(&dir, &Device::Cpu).unwrap(),
        offline: Forecaster::load(&dir, &Device::Cpu).unwrap(),
        _registry: registry,
    }
}

fn telemetry(machine: usize, ts_ms: i64, readings: &[Reading], unknown: bool) -> Telemetry {
    let mut sensors: Vec<(String, f64)> = SENSORS
        .iter()
        .zip(readings)
        .filter_map(|(name, r)| {
            let v = match r {
                Reading::Value(v) => *v,
                Reading::Absent => return None,
                Reading::Nan => f64::NAN,
                Reading::Inf => f64::INFINITY,
                Reading::Huge => 1e300,
            };
            Some((name.to_string(), v))
        })
        .collect();
    if unknown {
        sensors.push(("oil_level".into(), 3.0));
    }
    Telemetry {
        machine_id: format!("m{machine}"),
        ts_ms,
        sensors,
        machine_type: None,
        site: None,
    }
}

fn same_outcome(store: RowOutcome, offline: Arrival) -> bool {
    matches!(
        (store, offline),
        (RowOutcome::Applied { .. }, Arrival::Accept)
            | (RowOutcome::Duplicate, Arrival::Duplicate)
            | (RowOutcome::Late, Arrival::Late)
    )
}

/// Runs one stream through both paths, failing at the first difference.
fn check(
    window: usize,
    min_rows: usize,
    stride: u64,
    seed: u64,
    msgs: &[Msg],
) -> Result<(), TestCaseError> {
    let m = model(window, min_rows, seed);
    let card = m.offline.card();
    let nf = card.features.len();
    let store = WindowStore::new(
        m.serving.features().to_vec(),
        m.serving.window(),
        m.serving.neutral_raw(),
    );
    let mut pipeline = Pipeline::new(store, m.serving.min_rows(), stride);
    let mut offline: Vec<OfflineMachine> = (0..MACHINES)
        .map(|i| OfflineMachine::new(&format!("m{i}"), &card.features))
        .collect();
    let mut clock = [1_000_000i64; MACHINES];
    let mut held = vec![0.0f32; window * nf];
    for (k, msg) in msgs.iter().enumerate() {
        let machine = match msg {
            Msg::Row {
                machine,
                dt,
                readings,
                unknown_sensor,
            } => {
                let ts = clock[*machine] + dt * STEP;
                clock[*machine] = clock[*machine].max(ts);
                let t = telemetry(*machine, ts, readings, *unknown_sensor);
                let step = pipeline.on_telemetry(&t, 0, k as i64);
                let got = step.outcome;
                let want = offline[*machine].row(&t);
                prop_assert!(
                    same_outcome(got, want),
                    "msg {k}: store {got:?}, offline {want:?}"
                );
                if let RowOutcome::Applied { filled } = got {
                    let missing = card
                        .features
                        .iter()
                        .filter(|f| t.sensor(f).is_none_or(|v| !(v as f32).is_finite()))
                        .count();
                    prop_assert_eq!(filled as usize, missing, "msg {}: filled", k);
                    prop_assert_eq!(
                        step.forecast.is_some(),
                        offline[*machine].due(min_rows, stride as usize),
                        "msg {}: forecast due",
                        k
                    );
                    if let Some(req) = step.forecast {
                        // The service's path: raw window, the model's own scaling, inference.
                        let real = req.window_rows;
                        let mut scaled = vec![0.0; req.raw.len()];
                        for (r, s) in req.raw.chunks(nf).zip(scaled.chunks_mut(nf)) {
                            m.serving.scale_row(r, s);
                        }
                        let streamed = m.serving.predict(&scaled, 1).unwrap()[0].days;
                        let (want, want_real) = offline[*machine].window(card).unwrap();
                        prop_assert_eq!(real, want_real, "msg {}: real rows", k);
                        let expected = forecast(&m.offline, &want);
                        prop_assert!(
                            (streamed - expected).abs() < 1e-4,
                            "msg {k}: streamed {streamed}, offline {expected}"
                        );
                    }
                }
                *machine
            }
            Msg::Event { machine, de } => {
                let ts = clock[*machine] + de * STEP + 5;
                let e = MaintenanceEvent {
                    machine_id: format!("m{machine}"),
                    ts_ms: ts,
                    kind: MaintenanceKind::Repair,
                    note: String::new(),
                };
                let got = pipeline.on_event(&e, 0).reset;
                prop_assert_eq!(got, offline[*machine].event(ts), "msg {}: event", k);
                *machine
            }
            Msg::Checkpoint { machine } => {
                let id = format!("m{machine}");
                let store = pipeline.store();
                if let Some(w) = store.get(&id) {
                    let bytes = checkpoint::encode(store.features(), w, k as i64 + 1);
                    let (back, next) = checkpoint::decode(store, &bytes).expect("same layout");
                    pipeline.restore(id, back, next);
                }
                *machine
            }
        };
        // Whatever the message, the machine's window equals the offline one.
        let id = format!("m{machine}");
        let offline_rows = offline[machine].rows_since_reset();
        let Some(w) = pipeline.store().get(&id) else {
            prop_assert_eq!(offline_rows, 0);
            continue;
        };
        prop_assert_eq!(w.len(), offline_rows.min(window), "msg {}: rows held", k);
        if w.is_empty() {
            continue;
        }
        let real = w.snapshot(window, &mut held);
        let mut one_row = card.clone();
        one_row.min_rows = 1;
        let (want, want_real) = offline[machine].window(&one_row).unwrap();
        prop_assert_eq!(real, want_real);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(
            bits(&held),
            bits(&want),
            "msg {}: window {:?} vs offline {:?}",
            k,
            held,
            want
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_window_store_holds_the_offline_window_at_every_row(
        (window, min_rows, stride, seed, msgs) in case()
    ) {
        check(window, min_rows, stride, seed, &msgs)?;
    }
}

/// The cases the generator must reach, written out: a late event refills the rows after it, a
/// value that left the ring after a late event still fills, padding below the window.
#[test]
fn hand_written_messy_stream() {
    use Reading::*;
    let v = |x: f64| Value(x);
    let row = |machine, dt, readings: [Reading; 3]| Msg::Row {
        machine,
        dt,
        readings: readings.to_vec(),
        unknown_sensor: false,
    };
    let msgs = vec![
        row(0, 1, [Nan, v(1.0), Absent]),
        row(0, 1, [v(20.0), Nan, v(2.0)]),
        row(0, 1, [Nan, Nan, Nan]),
        row(0, 0, [v(99.0), v(99.0), v(99.0)]),
        row(0, -2, [v(99.0), v(99.0), v(99.0)]),
        row(0, 1, [Absent, Inf, Huge]),
        row(0, 1, [Nan, Nan, Nan]),
        Msg::Event { machine: 0, de: -3 },
        Msg::Checkpoint { machine: 0 },
        row(0, 1, [Nan, v(5.0), Nan]),
        Msg::Event { machine: 0, de: -9 },
        row(0, 1, [v(30.0), Nan, Nan]),
        Msg::Event { machine: 0, de: 1 },
        row(0, 1, [Nan, Nan, Nan]),
        row(0, 1, [v(31.0), v(0.5), v(1.5)]),
    ];
    for stride in [1, 2] {
        check(3, 1, stride, 5, &msgs).unwrap();
        check(4, 2, stride, 5, &msgs).unwrap();
    }
}
