//! Precision and recall of the input-quality detector (`maintcast_ingest::quality`) against the
//! faults the simulator injects and records (`Truth::sensor_faults`, dropped values).
//!
//! A reference fleet (another seed, the same fault rates: training data is never clean) gives the
//! per-feature training statistics the model card would carry. The evaluated fleet streams row by
//! row through the detector exactly as ingest keeps it: a 60-row window of raw rows (and their
//! filled values), reset by each maintenance event. Every (row, sensor) is scored against the truth of that row:
//!
//! - stuck: the sensor reports a frozen value in this row;
//! - drift: a calibration drift is running; "material" when its offset is at least one training
//!   standard deviation;
//! - missing: more than `missing_share` of the sensor's values in the window were dropped;
//! - out of range: no fault of its own; a flag on a sensor with no fault at all is a false alarm.
//!
//! `cargo run -p maintcast-ingest --example quality_eval -- [machines] [days] [drop_value_prob]`

use std::collections::VecDeque;

use maintcast_ingest::quality::{Confusion, Evidence, QualityConfig, flag};
use maintcast_models::artifact::FeatureStats;
use maintcast_simulator::{Fleet, FleetConfig, SENSORS, SensorFaultConfig};

const WINDOW: usize = 60;
const NF: usize = SENSORS.len();

/// One table row of the report.
fn row(c: &Confusion, name: &str, truth: &str) -> String {
    format!(
        "| {name} | {truth} | {} | {} | {} | {:.3} | {:.3} |",
        c.tp + c.fn_,
        c.tp + c.fp,
        c.tp,
        c.precision(),
        c.recall()
    )
}

/// Consecutive truth rows on one sensor, and whether any of them was flagged.
#[derive(Default, Clone, Copy)]
struct Episodes {
    open: bool,
    hit: bool,
    total: u64,
    detected: u64,
}

impl Episodes {
    fn step(&mut self, truth: bool, flagged: bool) {
        if truth {
            if !self.open {
                self.open = true;
                self.hit = false;
                self.total += 1;
            }
            if flagged && !self.hit {
                self.hit = true;
                self.detected += 1;
            }
        } else {
            self.open = false;
        }
    }
}

struct Machine {
    /// Rows as received (NaN where dropped), as ingest's window keeps them.
    raw: VecDeque<[f32; NF]>,
    window: VecDeque<[f32; NF]>,
    dropped: VecDeque<[bool; NF]>,
    last_good: [f32; NF],
    stuck_ep: [Episodes; NF],
    drift_ep: [Episodes; NF],
}

impl Machine {
    fn new() -> Self {
        Machine {
            raw: VecDeque::new(),
            window: VecDeque::new(),
            dropped: VecDeque::new(),
            last_good: [f32::NAN; NF],
            stuck_ep: [Episodes::default(); NF],
            drift_ep: [Episodes::default(); NF],
        }
    }
    fn reset(&mut self) {
        self.raw.clear();
        self.window.clear();
        self.dropped.clear();
        self.last_good = [f32::NAN; NF];
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let machines: usize = args.first().map_or(Ok(60), |a| a.parse())?;
    let days: f64 = args.get(1).map_or(Ok(120.0), |a| a.parse())?;
    let faults = SensorFaultConfig {
        drop_value_prob: args
            .get(2)
            .map_or(Ok(SensorFaultConfig::default().drop_value_prob), |a| {
                a.parse()
            })?,
        ..SensorFaultConfig::default()
    };
    let cfg = QualityConfig::default();

    // Training statistics from another fleet, over the rows with every value present.
    let reference = FleetConfig {
        seed: 1_000,
        machines,
        sensor_faults: faults.clone(),
        ..FleetConfig::default()
    };
    let steps = reference.steps_for_days(days);
    let hist = Fleet::new(reference)?.run(steps);
    // Machine by machine, in time order, as training summarises its rows (the repeat share
    // counts neighbouring rows of one machine).
    let mut readings: Vec<_> = hist.readings.iter().collect();
    readings.sort_by_key(|r| r.machine);
    let rows: Vec<f32> = readings
        .into_iter()
        .filter(|r| r.values.iter().all(Option::is_some))
        .flat_map(|r| r.values.map(|v| v.unwrap_or_default()))
        .collect();
    let stats = FeatureStats::of_rows(&rows, NF);

    let fleet_cfg = FleetConfig {
        seed: 7,
        machines,
        sensor_faults: faults.clone(),
        ..FleetConfig::default()
    };
    let steps = fleet_cfg.steps_for_days(days);
    let mut fleet = Fleet::new(fleet_cfg)?;
    let mut state: Vec<Machine> = (0..machines).map(|_| Machine::new()).collect();
    let (mut stuck, mut drift, mut drift_material, mut missing, mut any) = (
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
    );
    let mut out_of_range_false = 0u64;
    let mut clean_sensor_rows = 0u64;
    let (mut forecasts, mut low_faulty, mut faulty, mut low_clean) = (0u64, 0u64, 0u64, 0u64);
    let mut flat = Vec::with_capacity(WINDOW * NF);
    let (mut judged, mut judgements) = (std::time::Duration::ZERO, 0u32);
    for _ in 0..steps {
        let tick = fleet.step();
        for e in &tick.events {
            state[e.machine as usize].reset();
        }
        for r in &tick.readings {
            let m = &mut state[r.machine as usize];
            let raw: [f32; NF] = r.values.map(|v| v.unwrap_or(f32::NAN));
            let mut filled = [0f32; NF];
            for s in 0..NF {
                if raw[s].is_finite() {
                    m.last_good[s] = raw[s];
                }
                filled[s] = if m.last_good[s].is_finite() {
                    m.last_good[s]
                } else {
                    stats[s].p50
                };
            }
            m.window.push_back(filled);
            m.raw.push_back(raw);
            m.dropped.push_back(r.values.map(|v| v.is_none()));
            if m.window.len() > WINDOW {
                m.window.pop_front();
                m.raw.pop_front();
                m.dropped.pop_front();
            }
            flat.clear();
            flat.extend(m.window.iter().flatten());
            let t = std::time::Instant::now();
            let evidence = Evidence::of_rows(m.raw.iter().map(|r| &r[..]), NF);
            let q = evidence.assess(&flat, &stats, &cfg);
            judged += t.elapsed();
            judgements += 1;
            let f = &r.truth.sensor_faults;
            let mut row_faulty = false;
            for s in 0..NF {
                let bits = q.flags[s];
                let dropped_share =
                    m.dropped.iter().filter(|d| d[s]).count() as f32 / m.dropped.len() as f32;
                let t_stuck = f.is_stuck(s);
                let t_drift = f.is_drifting(s);
                let t_material = t_drift && f.drift[s].abs() >= stats[s].std;
                let t_missing = dropped_share > cfg.missing_share;
                stuck.add(bits & flag::STUCK != 0, t_stuck);
                drift.add(bits & flag::DRIFT != 0, t_drift);
                drift_material.add(bits & flag::DRIFT != 0, t_material);
                missing.add(bits & flag::MISSING != 0, t_missing);
                let t_any = t_stuck || t_material || t_missing;
                any.add(bits != 0, t_any);
                m.stuck_ep[s].step(t_stuck, bits & flag::STUCK != 0);
                m.drift_ep[s].step(t_material, bits & flag::DRIFT != 0);
                if !(t_stuck || t_drift || t_missing) {
                    clean_sensor_rows += 1;
                    out_of_range_false += u64::from(bits & flag::OUT_OF_RANGE != 0);
                }
                row_faulty |= t_any;
            }
            if m.window.len() >= WINDOW {
                forecasts += 1;
                let low = q.low_confidence(&cfg);
                if row_faulty {
                    faulty += 1;
                    low_faulty += u64::from(low);
                } else {
                    low_clean += u64::from(low);
                }
            }
        }
    }
    let sum = |f: fn(&Machine) -> &[Episodes; NF]| {
        state
            .iter()
            .flat_map(|m| f(m).iter())
            .fold((0, 0), |(t, d), e| (t + e.total, d + e.detected))
    };
    let (stuck_total, stuck_found) = sum(|m| &m.stuck_ep);
    let (drift_total, drift_found) = sum(|m| &m.drift_ep);

    println!(
        "fleet: {machines} machines x {days} days (seed 7; reference seed 1000), faults {faults:?}"
    );
    println!("detector: {cfg:?}\n");
    println!("| flag | truth | sensor-rows true | flagged | both | precision | recall |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    println!("{}", row(&stuck, "stuck", "frozen value"));
    println!("{}", row(&drift, "drift", "drift running (any offset)"));
    println!(
        "{}",
        row(&drift_material, "drift", "drift offset >= 1 training std")
    );
    println!(
        "{}",
        row(&missing, "missing", "dropped share in window > threshold")
    );
    println!(
        "{}",
        row(&any, "any flag", "stuck, material drift or missing")
    );
    println!(
        "\nepisodes detected (any row flagged): stuck {stuck_found}/{stuck_total} ({:.1}%), material drift {drift_found}/{drift_total} ({:.1}%)",
        100.0 * stuck_found as f64 / stuck_total.max(1) as f64,
        100.0 * drift_found as f64 / drift_total.max(1) as f64
    );
    println!(
        "out-of-range flags on sensors with no fault: {out_of_range_false} of {clean_sensor_rows} sensor-rows ({:.4}%)",
        100.0 * out_of_range_false as f64 / clean_sensor_rows.max(1) as f64
    );
    println!(
        "low-confidence forecasts (full windows): {:.1}% of {faulty} with a faulty sensor, {:.2}% of {} without",
        100.0 * low_faulty as f64 / faulty.max(1) as f64,
        100.0 * low_clean as f64 / (forecasts - faulty).max(1) as f64,
        forecasts - faulty
    );
    println!(
        "detector cost: {:.2} us per judgement (evidence from the raw window + assessment), {judgements} judgements",
        judged.as_secs_f64() * 1e6 / f64::from(judgements.max(1))
    );
    Ok(())
}
