//! Per-machine windows: the newest `window` rows of each machine, in the model's feature order.
//!
//! Rows are kept raw (filled, unscaled): a retrained model brings its own scaler, and hot reload
//! must not lose the windows, so scaling happens when a window is handed to the model.

use std::collections::HashMap;

use maintcast_proto::{MaintenanceEvent, Telemetry};

/// What happened to a row offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Added; `filled` values were missing or non-finite and came from the last good value.
    Applied { filled: u32 },
    /// Same machine and ts as the newest row: ignored.
    Duplicate,
    /// Older than the newest row, or from before the last maintenance: counted and dropped.
    Late,
}

/// One machine's state. Everything here goes into checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineWindow {
    /// Ring of `cap` rows x `n_features`, oldest at `head`.
    values: Vec<f32>,
    ts: Vec<i64>,
    head: usize,
    len: usize,
    cap: usize,
    n_features: usize,
    /// Last finite value per feature since the last maintenance; NaN where none yet.
    pub last_good: Vec<f32>,
    pub newest_ts: Option<i64>,
    /// ts of the last maintenance event: rows at or before it are late.
    pub reset_ts: Option<i64>,
    /// Rows applied since the last maintenance (drives `min_rows` and `stride`).
    pub rows_since_reset: u64,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    /// Whether the last alert sent for this machine was "due" (hysteresis state).
    pub alert_due: bool,
    /// Telemetry partition the machine's rows arrive on (whose owner keeps this window).
    pub partition: i32,
}

impl MachineWindow {
    pub fn new(cap: usize, n_features: usize) -> Self {
        MachineWindow {
            values: vec![0.0; cap * n_features],
            ts: vec![0; cap],
            head: 0,
            len: 0,
            cap,
            n_features,
            last_good: vec![f32::NAN; n_features],
            newest_ts: None,
            reset_ts: None,
            rows_since_reset: 0,
            machine_type: None,
            site: None,
            alert_due: false,
            partition: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i` (0 = oldest) as (ts, values).
    pub fn row(&self, i: usize) -> (i64, &[f32]) {
        let slot = (self.head + i) % self.cap;
        (
            self.ts[slot],
            &self.values[slot * self.n_features..(slot + 1) * self.n_features],
        )
    }

    /// Offers a row whose values are in feature order, NaN where missing.
    pub fn push(&mut self, ts: i64, raw: &[f32], neutral: &[f32]) -> RowOutcome {
        if self.reset_ts.is_some_and(|r| ts <= r) {
            return RowOutcome::Late;
        }
        match self.newest_ts {
            Some(n) if ts == n => return RowOutcome::Duplicate,
            Some(n) if ts < n => return RowOutcome::Late,
            _ => {}
        }
        let slot = if self.len < self.cap {
            self.len += 1;
            (self.head + self.len - 1) % self.cap
        } else {
            let s = self.head;
            self.head = (self.head + 1) % self.cap;
            s
        };
        let mut filled = 0;
        let nf = self.n_features;
        for (f, &v) in raw.iter().enumerate().take(nf) {
            let value = if v.is_finite() {
                self.last_good[f] = v;
                v
            } else {
                filled += 1;
                if self.last_good[f].is_finite() {
                    self.last_good[f]
                } else {
                    neutral[f]
                }
            };
            self.values[slot * nf + f] = value;
        }
        self.ts[slot] = ts;
        self.newest_ts = Some(ts);
        self.rows_since_reset += 1;
        RowOutcome::Applied { filled }
    }

    /// Maintenance at `ts`: rows at or before it describe a machine that no longer exists.
    /// Rows after it (the event arrived late) stay. Returns false for a stale event.
    pub fn reset(&mut self, ts: i64) -> bool {
        if self.reset_ts.is_some_and(|r| ts <= r) {
            return false;
        }
        let keep: Vec<(i64, Vec<f32>)> = (0..self.len)
            .map(|i| self.row(i))
            .filter(|(t, _)| *t > ts)
            .map(|(t, v)| (t, v.to_vec()))
            .collect();
        self.head = 0;
        self.len = 0;
        self.last_good.fill(f32::NAN);
        for (i, (t, v)) in keep.iter().enumerate() {
            self.values[i * self.n_features..(i + 1) * self.n_features].copy_from_slice(v);
            self.ts[i] = *t;
            self.last_good.copy_from_slice(v);
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

    /// Writes the newest `window` rows (raw) into `out` (`window * n_features`), left-padded
    /// with the oldest row when fewer exist. Returns the number of real rows.
    pub fn snapshot(&self, window: usize, out: &mut [f32]) -> usize {
        let nf = self.n_features;
        let real = self.len.min(window);
        let pad = window - real;
        let first = self.len - real;
        for i in 0..window {
            let src = if i < pad { first } else { first + i - pad };
            out[i * nf..(i + 1) * nf].copy_from_slice(self.row(src).1);
        }
        real
    }

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

    pub fn load_rows(&mut self, ts: &[i64], values: &[f32]) {
        let nf = self.n_features;
        let skip = ts.len().saturating_sub(self.cap);
        self.head = 0;
        self.len = 0;
        for (i, &t) in ts.iter().enumerate().skip(skip) {
            let slot = self.len;
            self.values[slot * nf..(slot + 1) * nf].copy_from_slice(&values[i * nf..(i + 1) * nf]);
            self.ts[slot] = t;
            self.len += 1;
        }
    }
}

/// How rows laid out in one feature order are read in another. Models retrained from another
/// source may list the same sensors in another order; windows and checkpoints are carried over by
/// name, never by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns {
    Same,
    /// `map[j]` is where `to`'s feature j sits in `from`.
    Reordered(Vec<usize>),
    /// Other sensors: rows of one cannot be read as the other.
    Incompatible,
}

impl Columns {
    pub fn between(from: &[String], to: &[String]) -> Columns {
        if from.len() != to.len() {
            return Columns::Incompatible;
        }
        let map: Option<Vec<usize>> = to
            .iter()
            .map(|f| from.iter().position(|g| g == f))
            .collect();
        match map {
            None => Columns::Incompatible,
            Some(m) if m.iter().enumerate().all(|(i, &j)| i == j) => Columns::Same,
            Some(m) => Columns::Reordered(m),
        }
    }
}

/// All machines this instance tracks, for one feature layout.
pub struct WindowStore {
    features: Vec<String>,
    index: HashMap<String, usize>,
    neutral: Vec<f32>,
    cap: usize,
    machines: HashMap<String, MachineWindow>,
    scratch: Vec<f32>,
}

impl WindowStore {
    pub fn new(features: Vec<String>, window: usize, neutral: Vec<f32>) -> Self {
        let index = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        let n = features.len();
        WindowStore {
            features,
            index,
            neutral,
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
        MachineWindow::new(self.cap, self.features.len())
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
        self.scratch.fill(f32::NAN);
        for (name, value) in &t.sensors {
            if let Some(&i) = self.index.get(name) {
                // f64 -> f32 overflow gives inf, which is then filled like any non-finite value.
                self.scratch[i] = *value as f32;
            }
        }
        let (cap, nf) = (self.cap, self.features.len());
        let w = self
            .machines
            .entry(t.machine_id.clone())
            .or_insert_with(|| MachineWindow::new(cap, nf));
        let outcome = w.push(t.ts_ms, &self.scratch, &self.neutral);
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

    /// Applies a maintenance event. Returns false when it was stale (at or before the last one).
    pub fn apply_event(&mut self, e: &MaintenanceEvent) -> bool {
        let (cap, nf) = (self.cap, self.features.len());
        self.machines
            .entry(e.machine_id.clone())
            .or_insert_with(|| MachineWindow::new(cap, nf))
            .reset(e.ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEUTRAL: [f32; 2] = [100.0, 200.0];

    fn w() -> MachineWindow {
        MachineWindow::new(3, 2)
    }

    fn rows(w: &MachineWindow) -> Vec<(i64, Vec<f32>)> {
        (0..w.len())
            .map(|i| (w.row(i).0, w.row(i).1.to_vec()))
            .collect()
    }

    #[test]
    fn ring_keeps_newest_rows_in_order() {
        let mut w = w();
        for t in 1..=5 {
            assert_eq!(
                w.push(t, &[t as f32, -(t as f32)], &NEUTRAL),
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
        w.push(10, &[1.0, 1.0], &NEUTRAL);
        assert_eq!(w.push(10, &[9.0, 9.0], &NEUTRAL), RowOutcome::Duplicate);
        assert_eq!(w.push(9, &[9.0, 9.0], &NEUTRAL), RowOutcome::Late);
        assert_eq!(rows(&w), vec![(10, vec![1.0, 1.0])]);
        assert_eq!(w.rows_since_reset, 1);
    }

    #[test]
    fn missing_and_non_finite_filled_from_last_good_else_neutral() {
        let mut w = w();
        assert_eq!(
            w.push(1, &[f32::NAN, 5.0], &NEUTRAL),
            RowOutcome::Applied { filled: 1 }
        );
        assert_eq!(
            w.push(2, &[7.0, f32::INFINITY], &NEUTRAL),
            RowOutcome::Applied { filled: 1 }
        );
        assert_eq!(
            w.push(3, &[f32::NAN, f32::NEG_INFINITY], &NEUTRAL),
            RowOutcome::Applied { filled: 2 }
        );
        assert_eq!(
            rows(&w),
            vec![
                (1, vec![100.0, 5.0]),
                (2, vec![7.0, 5.0]),
                (3, vec![7.0, 5.0])
            ]
        );
    }

    #[test]
    fn maintenance_resets_but_keeps_rows_after_the_event() {
        let mut w = w();
        for t in 1..=3 {
            w.push(t * 10, &[t as f32, 0.0], &NEUTRAL);
        }
        assert!(w.reset(25));
        assert_eq!(rows(&w), vec![(30, vec![3.0, 0.0])]);
        assert_eq!(w.rows_since_reset, 1);
        // Rows from before the maintenance are late now, as is a stale event.
        assert_eq!(w.push(24, &[0.0, 0.0], &NEUTRAL), RowOutcome::Late);
        assert!(!w.reset(20));
        assert!(w.reset(40));
        assert!(w.is_empty());
        assert_eq!(w.newest_ts, None);
        // last_good went with the old machine: a gap now gets the neutral value.
        assert_eq!(
            w.push(41, &[f32::NAN, 1.0], &NEUTRAL),
            RowOutcome::Applied { filled: 1 }
        );
        assert_eq!(rows(&w), vec![(41, vec![100.0, 1.0])]);
    }

    #[test]
    fn stride_and_min_rows() {
        let mut w = MachineWindow::new(4, 1);
        let due: Vec<u64> = (1..=12)
            .filter(|&t| {
                w.push(t as i64, &[0.0], &[0.0]);
                w.forecast_due(4, 3)
            })
            .collect();
        assert_eq!(due, vec![4, 7, 10]);
        let mut w = MachineWindow::new(4, 1);
        let due: Vec<u64> = (1..=5)
            .filter(|&t| {
                w.push(t as i64, &[0.0], &[0.0]);
                w.forecast_due(2, 1)
            })
            .collect();
        assert_eq!(due, vec![2, 3, 4, 5]);
    }

    #[test]
    fn snapshot_left_pads_with_oldest_row() {
        let mut w = MachineWindow::new(4, 2);
        w.push(1, &[1.0, 10.0], &NEUTRAL);
        w.push(2, &[2.0, 20.0], &NEUTRAL);
        let mut out = vec![0.0; 8];
        assert_eq!(w.snapshot(4, &mut out), 2);
        assert_eq!(out, vec![1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 2.0, 20.0]);
        for t in 3..=6 {
            w.push(t, &[t as f32, 0.0], &NEUTRAL);
        }
        assert_eq!(w.snapshot(4, &mut out), 4);
        assert_eq!(out, vec![3.0, 0.0, 4.0, 0.0, 5.0, 0.0, 6.0, 0.0]);
    }

    #[test]
    fn parts_round_trip() {
        let mut w = w();
        for t in 1..=4 {
            w.push(t, &[t as f32, 0.5], &NEUTRAL);
        }
        let (ts, values) = w.parts();
        let mut back = MachineWindow::new(3, 2);
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
        assert_eq!(m.row(0).1, &[0.5, 1.0]);
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
