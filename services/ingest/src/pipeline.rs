//! The pure heart of ingest: a decoded row or event -> window update -> what to write and what
//! to forecast. No I/O here, so the service, the demo and the tests drive the same code.

use std::collections::{HashMap, HashSet};

use maintcast_proto::{MaintenanceEvent, Telemetry};

use crate::offsets::Epoch;
use crate::quality::Evidence;
use crate::window::{MachineWindow, RowOutcome, WindowStore};

/// A window due for a forecast, handed from the consumer loop to inference.
#[derive(Debug, Clone)]
pub struct ForecastRequest {
    pub machine_id: String,
    pub ts_ms: i64,
    pub window_rows: usize,
    /// Raw rows in the window's feature order, `[window, features]`, left-padded.
    pub raw: Vec<f32>,
    /// What the raw rows said about each sensor (stuck runs, missing values), for input quality.
    pub evidence: Evidence,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    /// The ledger epoch of the row it answers; the service loop sets it as it queues the request.
    pub epoch: Epoch,
}

/// What a telemetry row led to.
#[derive(Debug)]
pub struct RowStep {
    pub outcome: RowOutcome,
    /// The row belongs in the raw history (`--write-raw`): every row that is not a duplicate,
    /// also late ones, so backfills and reordered topics lose no training data.
    pub history: bool,
    pub forecast: Option<ForecastRequest>,
    /// Sensor names the model does not use, reported once per machine and name.
    pub new_unknown_sensors: Vec<String>,
}

/// What a maintenance event led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStep {
    /// The window was reset (false: older than the last reset already applied).
    pub reset: bool,
    /// The machine's reset before this one, when known: the forecasts in between belong to the
    /// life this event ended.
    pub previous_reset_ms: Option<i64>,
}

/// Remembering every (machine, unknown sensor) pair is bounded so that a producer sending random
/// names cannot grow memory without end; past the bound names are still counted, not logged.
const MAX_UNKNOWN_REPORTED: usize = 10_000;

pub struct Pipeline {
    store: WindowStore,
    min_rows: usize,
    stride: u64,
    /// After a restore: telemetry offsets below this are already in the machine's window.
    skip_below: HashMap<String, i64>,
    /// Machines changed since their last checkpoint.
    dirty: HashSet<String>,
    unknown_reported: HashSet<(String, String)>,
}

impl Pipeline {
    pub fn new(store: WindowStore, min_rows: usize, stride: u64) -> Self {
        Pipeline {
            store,
            min_rows,
            stride: stride.max(1),
            skip_below: HashMap::new(),
            dirty: HashSet::new(),
            unknown_reported: HashSet::new(),
        }
    }

    pub fn store(&self) -> &WindowStore {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut WindowStore {
        &mut self.store
    }

    /// Offers a decoded row read from `partition` at `offset`.
    pub fn on_telemetry(&mut self, t: &Telemetry, partition: i32, offset: i64) -> RowStep {
        let new_unknown_sensors = self.unknown_sensors(t);
        if self
            .skip_below
            .get(&t.machine_id)
            .is_some_and(|&n| offset < n)
        {
            // Replayed after a restore: the window has it and history was written before.
            return RowStep {
                outcome: RowOutcome::Duplicate,
                history: false,
                forecast: None,
                new_unknown_sensors,
            };
        }
        let outcome = self.store.apply(t);
        let mut forecast = None;
        if let RowOutcome::Applied { .. } = outcome {
            let w = self
                .store
                .get_mut(&t.machine_id)
                .expect("window just applied");
            w.partition = partition;
            if !self.dirty.contains(t.machine_id.as_str()) {
                self.dirty.insert(t.machine_id.clone());
            }
            if w.forecast_due(self.min_rows, self.stride) {
                forecast = Some(request(&self.store, &t.machine_id, t.ts_ms));
            }
        }
        RowStep {
            outcome,
            history: outcome != RowOutcome::Duplicate,
            forecast,
            new_unknown_sensors,
        }
    }

    pub fn on_event(&mut self, e: &MaintenanceEvent, partition: i32) -> EventStep {
        let previous_reset_ms = self.store.get(&e.machine_id).and_then(|w| w.reset_ts);
        let reset = self.store.apply_event(e);
        if reset {
            if let Some(w) = self.store.get_mut(&e.machine_id) {
                w.partition = partition;
            }
            self.dirty.insert(e.machine_id.clone());
        }
        EventStep {
            reset,
            previous_reset_ms,
        }
    }

    fn unknown_sensors(&mut self, t: &Telemetry) -> Vec<String> {
        let mut fresh = Vec::new();
        for name in self.store.unknown_in(t) {
            let key = (t.machine_id.clone(), name.to_string());
            if self.unknown_reported.len() < MAX_UNKNOWN_REPORTED
                && self.unknown_reported.insert(key)
            {
                fresh.push(name.to_string());
            }
        }
        fresh
    }

    /// Sensors of `t` the model does not use (for counting every occurrence).
    pub fn unknown_in<'a>(&'a self, t: &'a Telemetry) -> impl Iterator<Item = &'a str> + 'a {
        self.store.unknown_in(t)
    }

    /// Drops the windows of machines whose telemetry partition is in `partitions` (they moved
    /// to another instance, or are about to be restored from their checkpoints).
    pub fn drop_partitions(&mut self, partitions: &HashSet<i32>) {
        if partitions.is_empty() {
            return;
        }
        let mut dropped = Vec::new();
        self.store.remove_where(|id, w| {
            let d = partitions.contains(&w.partition);
            if d {
                dropped.push(id.to_string());
            }
            d
        });
        for id in dropped {
            self.skip_below.remove(&id);
            self.dirty.remove(&id);
        }
    }

    /// Puts back a checkpointed window; rows below `next_offset` are already in it.
    pub fn restore(&mut self, machine_id: String, w: MachineWindow, next_offset: i64) {
        self.skip_below.insert(machine_id.clone(), next_offset);
        self.store.insert(machine_id, w);
    }

    /// Machines whose window changed since the last checkpoint.
    pub fn dirty(&self) -> impl Iterator<Item = (&String, &MachineWindow)> {
        self.dirty
            .iter()
            .filter_map(|id| self.store.get(id).map(|w| (id, w)))
    }

    pub fn checkpointed(&mut self) {
        self.dirty.clear();
    }

    /// Machines whose checkpoint was not delivered: the next snapshot writes them again.
    pub fn mark_dirty(&mut self, ids: impl IntoIterator<Item = String>) {
        self.dirty
            .extend(ids.into_iter().filter(|id| self.store.get(id).is_some()));
    }
}

/// The machine's newest window as inference wants it.
fn request(store: &WindowStore, machine_id: &str, ts_ms: i64) -> ForecastRequest {
    let w = store.get(machine_id).expect("window exists");
    let (window, nf) = (store.window(), store.features().len());
    let mut raw = vec![0.0; window * nf];
    let window_rows = w.snapshot(window, &mut raw);
    let first = w.len() - window_rows;
    let evidence = Evidence::of_rows((first..w.len()).map(|i| w.row(i).1), nf);
    ForecastRequest {
        machine_id: machine_id.to_string(),
        ts_ms,
        window_rows,
        raw,
        evidence,
        machine_type: w.machine_type.clone(),
        site: w.site.clone(),
        epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_proto::MaintenanceKind;

    fn row(id: &str, ts: i64, sensors: &[(&str, f64)]) -> Telemetry {
        Telemetry {
            machine_id: id.into(),
            ts_ms: ts,
            machine_type: Some("press".into()),
            site: None,
            sensors: sensors.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    fn pipeline(window: usize, min_rows: usize, stride: u64) -> Pipeline {
        let store = WindowStore::new(vec!["a".into(), "b".into()], window, vec![0.0, 0.0]);
        Pipeline::new(store, min_rows, stride)
    }

    #[test]
    fn forecasts_from_min_rows_on_every_stride_th_row_left_padded() {
        let mut p = pipeline(4, 2, 2);
        let due: Vec<bool> = (1..=7)
            .map(|t| {
                p.on_telemetry(&row("m", t, &[("a", t as f64), ("b", 0.0)]), 0, t)
                    .forecast
                    .is_some()
            })
            .collect();
        assert_eq!(due, [false, true, false, true, false, true, false]);
        let r = p
            .on_telemetry(&row("m", 8, &[("a", 8.0), ("b", 0.0)]), 0, 8)
            .forecast
            .unwrap();
        assert_eq!(r.window_rows, 4);
        let mut q = pipeline(4, 2, 1);
        q.on_telemetry(&row("m", 1, &[("a", 1.0), ("b", 0.0)]), 0, 1);
        let r = q
            .on_telemetry(&row("m", 2, &[("a", 2.0), ("b", 0.0)]), 0, 2)
            .forecast
            .unwrap();
        assert_eq!(r.window_rows, 2);
        assert_eq!(r.raw.len(), 8);
        assert_eq!(r.raw[0], 1.0, "left padding repeats the oldest row");
    }

    #[test]
    fn late_rows_go_to_history_but_not_the_window_and_duplicates_to_neither() {
        let mut p = pipeline(3, 1, 1);
        assert!(p.on_telemetry(&row("m", 10, &[("a", 1.0)]), 0, 0).history);
        let ev = MaintenanceEvent {
            machine_id: "m".into(),
            ts_ms: 20,
            kind: MaintenanceKind::Repair,
            note: String::new(),
        };
        assert!(p.on_event(&ev, 0).reset);
        assert!(!p.on_event(&ev, 0).reset, "the same event again is stale");
        let late = p.on_telemetry(&row("m", 15, &[("a", 1.0)]), 0, 1);
        assert_eq!(late.outcome, RowOutcome::Late);
        assert!(late.history, "a row before the reset is still history");
        assert!(late.forecast.is_none());
        let fresh = p.on_telemetry(&row("m", 30, &[("a", 1.0)]), 0, 2);
        assert!(fresh.forecast.is_some());
        let dup = p.on_telemetry(&row("m", 30, &[("a", 1.0)]), 0, 3);
        assert_eq!(dup.outcome, RowOutcome::Duplicate);
        assert!(!dup.history);
    }

    #[test]
    fn unknown_sensors_are_reported_once_per_machine_and_name() {
        let mut p = pipeline(3, 1, 1);
        let t = row("m", 1, &[("a", 1.0), ("temp_c", 3.0)]);
        assert_eq!(p.on_telemetry(&t, 0, 0).new_unknown_sensors, ["temp_c"]);
        assert_eq!(p.unknown_in(&t).collect::<Vec<_>>(), ["temp_c"]);
        let t2 = row("m", 2, &[("a", 1.0), ("temp_c", 3.0)]);
        assert!(p.on_telemetry(&t2, 0, 1).new_unknown_sensors.is_empty());
        let other = row("n", 2, &[("temp_c", 3.0)]);
        assert_eq!(p.on_telemetry(&other, 0, 2).new_unknown_sensors, ["temp_c"]);
    }

    #[test]
    fn restored_windows_skip_rows_they_already_hold() {
        let mut p = pipeline(3, 1, 1);
        p.on_telemetry(&row("m", 1, &[("a", 1.0)]), 1, 0);
        let w = p.store().get("m").unwrap().clone();
        p.drop_partitions(&HashSet::from([1]));
        assert!(p.store().get("m").is_none());
        p.restore("m".into(), w, 1);
        let replay = p.on_telemetry(&row("m", 1, &[("a", 1.0)]), 1, 0);
        assert!(!replay.history && replay.forecast.is_none());
        assert!(
            p.on_telemetry(&row("m", 2, &[("a", 1.0)]), 1, 1)
                .forecast
                .is_some()
        );
        assert_eq!(p.dirty().count(), 1);
        p.checkpointed();
        assert_eq!(p.dirty().count(), 0);
    }
}
