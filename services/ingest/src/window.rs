//! Per-machine windows: the newest `window` rows of each machine, in the model's feature order,
//! prepared by the data path that training uses (`maintcast_models::prep`): the same arrival
//! rule, fill rule, reset at maintenance and left padding.
//!
//! Rows are kept raw (as received, NaN where missing, unscaled) and filled when a window is taken:
//! a maintenance event that arrives after rows later than it must refill those rows from scratch,
//! as training sees them; and a retrained model brings its own scaler, while hot reload must not
//! lose the windows, so scaling happens when a window is handed to the model.
//!
//! Over 400 lines because about half are the unit tests of the ring's rules (arrival, fill across
//! evictions and late maintenance, padding, stride).

use std::collections::HashMap;
use std::sync::Arc;

use maintcast_models::prep::{self, Arrival, FeatureIndex};
use maintcast_proto::{MaintenanceEvent, Telemetry};

pub use maintcast_models::prep::Columns;

/// What happened to a row offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Added; `filled` values were missing or non-finite and are filled by the data path's rule.
    Applied { filled: u32 },
    /// Same machine and ts as the newest row: ignored.
    Duplicate,
    /// Older than the newest row, or from before the last maintenance: counted and dropped.
    Late,
}

/// One machine's state. Everything here but `neutral` goes into checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineWindow {
    /// Ring of `cap` raw rows x `n_features` (NaN where missing), oldest at `head`.
    values: Vec<f32>,
    ts: Vec<i64>,
    head: usize,
    len: usize,
    cap: usize,
    n_features: usize,
    /// The fill state entering the oldest row held: per feature, the last finite value among the
    /// rows since the last maintenance that have left the ring; NaN where none.
    pub fill_base: Vec<f32>,
    /// The ts of the row each `fill_base` value came from, so that a late maintenance event can
    /// tell whether the value belongs to the machine after it.
    pub fill_base_ts: Vec<i64>,
    pub newest_ts: Option<i64>,
    /// ts of the last maintenance event: rows at or before it are late.
    pub reset_ts: Option<i64>,
    /// Rows applied since the last maintenance (drives `min_rows` and `stride`). An event that
    /// arrives more than `window` rows late counts only the rows still held after it.
    pub rows_since_reset: u64,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    /// Whether the last alert sent for this machine was "due" (hysteresis state).
    pub alert_due: bool,
    /// Telemetry partition the machine's rows arrive on (whose owner keeps this window).
    pub partition: i32,
    /// Raw value per feature that a feature never reported since the last maintenance reads as
    /// (the serving model's scaler centre, `prep::neutral`).
    neutral: Arc<[f32]>,
}

impl MachineWindow {
    pub fn new(cap: usize, neutral: Arc<[f32]>) -> Self {
        let n_features = neutral.len();
        MachineWindow {
            values: vec![0.0; cap * n_features],
            ts: vec![0; cap],
            head: 0,
            len: 0,
            cap,
            n_features,
            fill_base: prep::fill_state(n_features),
            fill_base_ts: vec![i64::MIN; n_features],
            newest_ts: None,
            reset_ts: None,
            rows_since_reset: 0,
            machine_type: None,
            site: None,
            alert_due: false,
            partition: 0,
            neutral,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i` (0 = oldest) as (ts, raw values).
    pub fn row(&self, i: usize) -> (i64, &[f32]) {
        let slot = (self.head + i) % self.cap;
        (
            self.ts[slot],
            &self.values[slot * self.n_features..(slot + 1) * self.n_features],
        )
    }

    /// Remembers a row leaving the ring in the fill state of the rows after it.
    fn retire(&mut self, i: usize) {
        let slot = (self.head + i) % self.cap;
        let nf = self.n_features;
        let (t, raw) = (self.ts[slot], &self.values[slot * nf..(slot + 1) * nf]);
        for (f, &v) in raw.iter().enumerate() {
            if v.is_finite() {
                self.fill_base[f] = v;
                self.fill_base_ts[f] = t;
            }
        }
    }

    /// Offers a row whose values are in feature order, NaN where missing.
    pub fn push(&mut self, ts: i64, raw: &[f32]) -> RowOutcome {
        match prep::arrival(self.newest_ts, self.reset_ts, ts) {
            Arrival::Accept => {}
            Arrival::Duplicate => return RowOutcome::Duplicate,
            Arrival::Late => return RowOutcome::Late,
        }
        let slot = if self.len < self.cap {
            self.len += 1;
            (self.head + self.len - 1) % self.cap
        } else {
            self.retire(0);
            let s = self.head;
            self.head = (self.head + 1) % self.cap;
            s
        };
        let nf = self.n_features;
        self.values[slot * nf..(slot + 1) * nf].copy_from_slice(&raw[..nf]);
        self.ts[slot] = ts;
        self.newest_ts = Some(ts);
        self.rows_since_reset += 1;
        let filled = raw[..nf].iter().filter(|v| !v.is_finite()).count() as u32;
        RowOutcome::Applied { filled }
    }

    /// Maintenance at `ts`: rows at or before it describe a machine that no longer exists.
    /// Rows after it (the event arrived late) stay, and are filled as if the event had come first.
    /// Returns false for a stale event.
    pub fn reset(&mut self, ts: i64) -> bool {
        if !prep::event_applies(self.reset_ts, ts) {
            return false;
        }
        let keep: Vec<(i64, Vec<f32>)> = (0..self.len)
            .map(|i| self.row(i))
            .filter(|(t, _)| *t > ts)
            .map(|(t, v)| (t, v.to_vec()))
            .collect();
        // Values that left the ring after the event still fill the rows after them.
        for (v, t) in self.fill_base.iter_mut().zip(&self.fill_base_ts) {
            if *t <= ts {
                *v = f32::NAN;
            }
        }
        self.head = 0;
        for (i, (t, v)) in keep.iter().enumerate() {
            self.values[i * self.n_features..(i + 1) * self.n_features].copy_from_slice(v);
            self.ts[i] = *t;
        }
        self.len = keep.len();
        self.rows_since_reset = keep.len() as u64;
        self.newest_ts = keep.last().map(|(t, _)| *t);
        self.reset_ts = Some(ts);
        true
    }

    /// Whether the row just applied should get a forecast: from `min_rows` rows on, every
    /// `stride`-th row.
    pub fn forecast_due(&self, min_rows: usize, stride: u64) -> bool {
        let n = self.rows_since_reset;
        let min = min_rows.max(1) as u64;
        n >= min && (n - min).is_multiple_of(stride.max(1))
    }

    /// Writes the newest `window` rows, filled (unscaled), into `out` (`window * n_features`),
    /// left-padded with the oldest row when fewer exist. Returns the number of real rows.
    pub fn snapshot(&self, window: usize, out: &mut [f32]) -> usize {
        let nf = self.n_features;
        let real = self.len.min(window);
        let pad = window - real;
        let first = self.len - real;
        let mut state = self.fill_base.clone();
        for i in 0..first {
            prep::remember(&mut state, self.row(i).1);
        }
        for i in 0..real {
            let dst = &mut out[(pad + i) * nf..(pad + i + 1) * nf];
            prep::fill_row(&mut state, self.row(first + i).1, &self.neutral, dst);
        }
        if real > 0 {
            prep::pad_left(&mut out[..window * nf], nf, real);
        }
        real
    }

    /// The raw rows held, oldest first: (ts, row-major values).
    pub fn parts(&self) -> (Vec<i64>, Vec<f32>) {
        let mut ts = Vec::with_capacity(self.len);
        let mut values = Vec::with_capacity(self.len * self.n_features);
        for i in 0..self.len {
            let (t, v) = self.row(i);
            ts.push(t);
            values.extend_from_slice(v);
        }
        (ts, values)
    }

    /// Replaces the rows held with `ts`/`values` (raw, oldest first); rows beyond the ring's
    /// capacity are remembered in the fill state, as if they had left it.
    pub fn load_rows(&mut self, ts: &[i64], values: &[f32]) {
        let nf = self.n_features;
        let skip = ts.len().saturating_sub(self.cap);
        self.head = 0;
        self.len = 0;
        for (i, &t) in ts.iter().enumerate() {
            let row = &values[i * nf..(i + 1) * nf];
            if i < skip {
                for (f, &v) in row.iter().enumerate() {
                    if v.is_finite() {
                        self.fill_base[f] = v;
                        self.fill_base_ts[f] = t;
                    }
                }
                continue;
            }
            let slot = self.len;
            self.values[slot * nf..(slot + 1) * nf].copy_from_slice(row);
            self.ts[slot] = t;
            self.len += 1;
        }
    }
}

/// All machines this instance tracks, for one feature layout.
pub struct WindowStore {
    features: Vec<String>,
    index: FeatureIndex,
    neutral: Arc<[f32]>,
    cap: usize,
    machines: HashMap<String, MachineWindow>,
    scratch: Vec<f32>,
}

impl WindowStore {
    /// `neutral`: what a feature never reported since a machine's last maintenance reads as
    /// (`prep::neutral` of the serving model's scaler).
    pub fn new(features: Vec<String>, window: usize, neutral: Vec<f32>) -> Self {
        assert_eq!(
            features.len(),
            neutral.len(),
            "one neutral value per feature"
        );
        let n = features.len();
        WindowStore {
            index: FeatureIndex::new(&features),
            features,
            neutral: neutral.into(),
            cap: window,
            machines: HashMap::new(),
            scratch: vec![0.0; n],
        }
    }

    pub fn features(&self) -> &[String] {
        &self.features
    }

    pub fn window(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    pub fn get(&self, machine_id: &str) -> Option<&MachineWindow> {
        self.machines.get(machine_id)
    }

    pub fn get_mut(&mut self, machine_id: &str) -> Option<&mut MachineWindow> {
        self.machines.get_mut(machine_id)
    }

    pub fn insert(&mut self, machine_id: String, w: MachineWindow) {
        self.machines.insert(machine_id, w);
    }

    pub fn new_window(&self) -> MachineWindow {
        MachineWindow::new(self.cap, self.neutral.clone())
    }

    pub fn remove_where(&mut self, mut drop: impl FnMut(&str, &MachineWindow) -> bool) -> usize {
        let before = self.machines.len();
        self.machines.retain(|id, w| !drop(id, w));
        before - self.machines.len()
    }

    pub fn machines(&self) -> impl Iterator<Item = (&String, &MachineWindow)> {
        self.machines.iter()
    }

    /// Applies one row. Sensors the model does not use are ignored; ones it uses but the row
    /// lacks count as missing and are filled.
    pub fn apply(&mut self, t: &Telemetry) -> RowOutcome {
        self.index.read(
            t.sensors.iter().map(|(n, v)| (n.as_str(), *v)),
            &mut self.scratch,
        );
        // Looked up before inserting: a row of a known machine (nearly all of them) must not
        // pay for a copy of its id.
        let w = match self.machines.get_mut(t.machine_id.as_str()) {
            Some(w) => w,
            None => self
                .machines
                .entry(t.machine_id.clone())
                .or_insert_with(|| MachineWindow::new(self.cap, self.neutral.clone())),
        };
        let outcome = w.push(t.ts_ms, &self.scratch);
        if matches!(outcome, RowOutcome::Applied { .. }) {
            if t.machine_type.is_some() {
                w.machine_type.clone_from(&t.machine_type);
            }
            if t.site.is_some() {
                w.site.clone_from(&t.site);
            }
        }
        outcome
    }

    /// Sensors of `t` the serving model does not use, in row order.
    pub fn unknown_in<'a>(&'a self, t: &'a Telemetry) -> impl Iterator<Item = &'a str> + 'a {
        self.index
            .unknown(t.sensors.iter().map(|(n, _)| n.as_str()))
    }

    /// Applies a maintenance event. Returns false when it was stale (at or before the last one).
    pub fn apply_event(&mut self, e: &MaintenanceEvent) -> bool {
        let (cap, neutral) = (self.cap, &self.neutral);
        self.machines
            .entry(e.machine_id.clone())
            .or_insert_with(|| MachineWindow::new(cap, neutral.clone()))
            .reset(e.ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEUTRAL: [f32; 2] = [100.0, 200.0];
    const NAN: f32 = f32::NAN;

    fn w() -> MachineWindow {
        MachineWindow::new(3, NEUTRAL.into())
    }

    fn rows(w: &MachineWindow) -> Vec<(i64, Vec<f32>)> {
        (0..w.len())
            .map(|i| (w.row(i).0, w.row(i).1.to_vec()))
            .collect()
    }

    fn snap(w: &MachineWindow, window: usize) -> (usize, Vec<f32>) {
        let mut out = vec![0.0; window * NEUTRAL.len()];
        (w.snapshot(window, &mut out), out)
    }

    #[test]
    fn ring_keeps_newest_rows_in_order() {
        let mut w = w();
        for t in 1..=5 {
            assert_eq!(
                w.push(t, &[t as f32, -(t as f32)]),
                RowOutcome::Applied { filled: 0 }
            );
        }
        assert_eq!(
            rows(&w),
            vec![
                (3, vec![3.0, -3.0]),
                (4, vec![4.0, -4.0]),
                (5, vec![5.0, -5.0])
            ]
        );
        assert_eq!(w.rows_since_reset, 5);
    }

    #[test]
    fn duplicates_ignored_and_late_rows_dropped() {
        let mut w = w();
        w.push(10, &[1.0, 1.0]);
        assert_eq!(w.push(10, &[9.0, 9.0]), RowOutcome::Duplicate);
        assert_eq!(w.push(9, &[9.0, 9.0]), RowOutcome::Late);
        assert_eq!(rows(&w), vec![(10, vec![1.0, 1.0])]);
        assert_eq!(w.rows_since_reset, 1);
    }

    #[test]
    fn missing_and_non_finite_filled_from_last_good_else_neutral() {
        let mut w = w();
        assert_eq!(w.push(1, &[NAN, 5.0]), RowOutcome::Applied { filled: 1 });
        assert_eq!(
            w.push(2, &[7.0, f32::INFINITY]),
            RowOutcome::Applied { filled: 1 }
        );
        assert_eq!(
            w.push(3, &[NAN, f32::NEG_INFINITY]),
            RowOutcome::Applied { filled: 2 }
        );
        assert_eq!(snap(&w, 3), (3, vec![100.0, 5.0, 7.0, 5.0, 7.0, 5.0]));
        // A good value that has left the ring still fills the gaps after it.
        w.push(4, &[NAN, NAN]);
        w.push(5, &[NAN, NAN]);
        assert_eq!(snap(&w, 3), (3, vec![7.0, 5.0, 7.0, 5.0, 7.0, 5.0]));
    }

    #[test]
    fn maintenance_resets_but_keeps_rows_after_the_event_refilled() {
        let mut w = w();
        w.push(10, &[1.0, 0.0]);
        w.push(20, &[2.0, 0.0]);
        w.push(30, &[NAN, 0.0]);
        assert_eq!(snap(&w, 3).1[4], 2.0);
        assert!(w.reset(25));
        assert_eq!(w.rows_since_reset, 1);
        // Row 30 belongs to the machine after the event: its gap no longer takes the 2.
        assert_eq!(snap(&w, 2), (1, vec![100.0, 0.0, 100.0, 0.0]));
        // Rows from before the maintenance are late now, as is a stale event.
        assert_eq!(w.push(24, &[0.0, 0.0]), RowOutcome::Late);
        assert!(!w.reset(20));
        assert!(w.reset(40));
        assert!(w.is_empty());
        assert_eq!(w.newest_ts, None);
        assert_eq!(w.push(41, &[NAN, 1.0]), RowOutcome::Applied { filled: 1 });
        assert_eq!(snap(&w, 1), (1, vec![100.0, 1.0]));
    }

    #[test]
    fn a_late_event_keeps_values_that_left_the_ring_after_it() {
        let mut w = MachineWindow::new(2, NEUTRAL.into());
        w.push(10, &[1.0, 1.0]);
        w.push(20, &[2.0, NAN]);
        w.push(30, &[NAN, NAN]);
        w.push(40, &[NAN, NAN]);
        // Rows 10 and 20 left the ring; the event at 15 keeps 20's value, not 10's.
        assert!(w.reset(15));
        assert_eq!(snap(&w, 2), (2, vec![2.0, 200.0, 2.0, 200.0]));
    }

    #[test]
    fn stride_and_min_rows() {
        let mut w = MachineWindow::new(4, vec![0.0].into());
        let due: Vec<u64> = (1..=12)
            .filter(|&t| {
                w.push(t as i64, &[0.0]);
                w.forecast_due(4, 3)
            })
            .collect();
        assert_eq!(due, vec![4, 7, 10]);
        let mut w = MachineWindow::new(4, vec![0.0].into());
        let due: Vec<u64> = (1..=5)
            .filter(|&t| {
                w.push(t as i64, &[0.0]);
                w.forecast_due(2, 1)
            })
            .collect();
        assert_eq!(due, vec![2, 3, 4, 5]);
    }

    #[test]
    fn snapshot_left_pads_with_oldest_row() {
        let mut w = MachineWindow::new(4, NEUTRAL.into());
        w.push(1, &[1.0, 10.0]);
        w.push(2, &[2.0, 20.0]);
        let mut out = vec![0.0; 8];
        assert_eq!(w.snapshot(4, &mut out), 2);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 2.0, 20.0]);
        for t in 3..=6 {
            w.push(t, &[t as f32, 0.0]);
        }
        assert_eq!(w.snapshot(4, &mut out), 4);
        assert_eq!(out, vec![3.0, 0.0, 4.0, 0.0, 5.0, 0.0, 6.0, 0.0]);
    }

    #[test]
    fn parts_round_trip() {
        let mut w = w();
        for t in 1..=4 {
            w.push(t, &[t as f32, 0.5]);
        }
        let (ts, values) = w.parts();
        let mut back = w.clone();
        back.load_rows(&ts, &values);
        assert_eq!(rows(&back), rows(&w));
    }

    #[test]
    fn store_maps_sensors_by_name_and_counts_missing() {
        let mut s = WindowStore::new(vec!["b".into(), "a".into()], 3, vec![0.5, 0.25]);
        let t = Telemetry {
            machine_id: "m1".into(),
            ts_ms: 5,
            sensors: vec![("a".into(), 1.0), ("extra".into(), 9.0)],
            machine_type: Some("press".into()),
            site: None,
        };
        assert_eq!(s.apply(&t), RowOutcome::Applied { filled: 1 });
        let m = s.get("m1").unwrap();
        let mut out = [0.0; 2];
        m.snapshot(1, &mut out);
        assert_eq!(out, [0.5, 1.0]);
        assert_eq!(m.machine_type.as_deref(), Some("press"));
        assert_eq!(s.apply(&t), RowOutcome::Duplicate);
        let ev = MaintenanceEvent {
            machine_id: "m1".into(),
            ts_ms: 5,
            kind: maintcast_proto::MaintenanceKind::Repair,
            note: String::new(),
        };
        assert!(s.apply_event(&ev));
        assert!(s.get("m1").unwrap().is_empty());
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove_where(|id, _| id == "m1"), 1);
    }
}
