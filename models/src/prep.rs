//! The data path: everything between raw telemetry rows and the tensor the network sees, written
//! once. Training (CSV, C-MAPSS and InfluxDB histories), evaluation, the ingest service's window
//! store, the demo and the tests' expectations all go through these functions, so a model is
//! served rows prepared exactly as the rows it was trained on.
//!
//! The rules, in the order a row meets them:
//! 1. **Columns by name.** A row's sensors are read into the model's feature order by name
//!    ([`FeatureIndex`]); sensors the model does not use are ignored, ones it uses but the row lacks
//!    are missing (NaN). Rows laid out for one feature order are read in another by name
//!    ([`Columns`]), never by position.
//! 2. **Arrival** ([`arrival`]). Per machine, a row at the newest accepted `ts` is a duplicate and
//!    the first one wins; an older row is late, and so is a row at or before the last maintenance
//!    event; both are dropped. A history read whole (a file) is sorted by `ts` first, so there only
//!    duplicates drop out.
//! 3. **Maintenance** ([`event_applies`]). An event at `E` ends the machine as it was: rows at or
//!    before `E` never share a window with rows after it, and the fill forgets what it knew. An
//!    event at or before the last applied one changes nothing.
//! 4. **Fill** ([`fill_row`]). A missing or non-finite value becomes the last finite value of that
//!    feature since the last maintenance, else the feature's neutral value ([`neutral`]: the raw
//!    value that scales to the training centre). The rule never looks ahead, so a stream applies
//!    it row by row; training applies the same rule to whole histories.
//! 5. **Padding** ([`pad_left`]). A machine with fewer than `window` rows since its last
//!    maintenance, but at least `min_rows`, gets a window left-padded with its first (filled) row.
//! 6. **Scaling** ([`scale_window`]). Each filled row goes through the model's scaler.

use std::collections::HashMap;

use crate::scaler::{Scaler, ScalerKind};

/// Where a model's features sit in rows that name their sensors.
///
/// Producers almost always send a model's sensors in one fixed order, so each name is first
/// compared with the feature at its own position and looked up in the map only when that
/// misses: a row in feature order costs a string compare per sensor, not a hash.
#[derive(Clone, Debug)]
pub struct FeatureIndex {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl FeatureIndex {
    pub fn new(features: &[String]) -> Self {
        let index = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        FeatureIndex {
            names: features.to_vec(),
            index,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The feature index of the sensor at `pos` in a row, `None` for a sensor the model does
    /// not use.
    fn locate(&self, pos: usize, sensor: &str) -> Option<usize> {
        match self.names.get(pos) {
            Some(n) if n == sensor => Some(pos),
            _ => self.index.get(sensor).copied(),
        }
    }

    pub fn position(&self, sensor: &str) -> Option<usize> {
        self.index.get(sensor).copied()
    }

    /// Reads named sensor values into `out` (feature order): unknown sensors are ignored, missing
    /// features are NaN. An f64 too large for f32 becomes infinite and is then filled like any
    /// non-finite value. Returns how many sensors the model does not use.
    pub fn read<'a>(
        &self,
        sensors: impl IntoIterator<Item = (&'a str, f64)>,
        out: &mut [f32],
    ) -> usize {
        out.fill(f32::NAN);
        let mut unknown = 0;
        for (pos, (name, value)) in sensors.into_iter().enumerate() {
            match self.locate(pos, name) {
                Some(i) => out[i] = value as f32,
                None => unknown += 1,
            }
        }
        unknown
    }

    /// Names in `sensors` the model does not use, in row order.
    pub fn unknown<'a>(
        &'a self,
        sensors: impl IntoIterator<Item = &'a str> + 'a,
    ) -> impl Iterator<Item = &'a str> + 'a {
        sensors
            .into_iter()
            .enumerate()
            .filter(|&(pos, name)| self.locate(pos, name).is_none())
            .map(|(_, name)| name)
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

    /// One row of the `from` layout rewritten in the `to` layout. `Incompatible` copies as is
    /// (callers refuse such a pair before they get here).
    pub fn reorder(&self, from: &[f32], to: &mut [f32]) {
        match self {
            Columns::Reordered(map) => {
                for (dst, &j) in to.iter_mut().zip(map) {
                    *dst = from[j];
                }
            }
            Columns::Same | Columns::Incompatible => to.copy_from_slice(from),
        }
    }
}

/// What the arrival rule makes of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Accept,
    /// Same `ts` as the machine's newest accepted row: the first one wins.
    Duplicate,
    /// Older than the newest accepted row, or at or before the last maintenance.
    Late,
}

/// The arrival rule for a row at `ts` of a machine whose newest accepted row is at `newest_ts` and
/// whose last applied maintenance event is at `reset_ts`.
pub fn arrival(newest_ts: Option<i64>, reset_ts: Option<i64>, ts: i64) -> Arrival {
    if reset_ts.is_some_and(|r| ts <= r) {
        return Arrival::Late;
    }
    match newest_ts {
        Some(n) if ts == n => Arrival::Duplicate,
        Some(n) if ts < n => Arrival::Late,
        _ => Arrival::Accept,
    }
}

/// Whether a maintenance event at `ts` applies after the one at `reset_ts`: an event at or before
/// it is stale (its rows are gone already).
pub fn event_applies(reset_ts: Option<i64>, ts: i64) -> bool {
    reset_ts.is_none_or(|r| ts > r)
}

/// A fresh fill state: no good value seen since the last maintenance.
pub fn fill_state(n_features: usize) -> Vec<f32> {
    vec![f32::NAN; n_features]
}

/// The fill rule: writes `raw` to `out` with each missing or non-finite value replaced by the
/// last finite value of its feature in `state` (the values since the last maintenance), else by
/// `neutral`; remembers `raw`'s finite values in `state`. Returns how many values were filled.
pub fn fill_row(state: &mut [f32], raw: &[f32], neutral: &[f32], out: &mut [f32]) -> u32 {
    let mut filled = 0;
    for (((o, &v), s), &n) in out.iter_mut().zip(raw).zip(state.iter_mut()).zip(neutral) {
        *o = if v.is_finite() {
            *s = v;
            v
        } else {
            filled += 1;
            if s.is_finite() { *s } else { n }
        };
    }
    filled
}

/// Remembers `raw`'s finite values in `state` without producing a row (a row that leaves a
/// window still decides how later gaps are filled).
pub fn remember(state: &mut [f32], raw: &[f32]) {
    for (s, &v) in state.iter_mut().zip(raw) {
        if v.is_finite() {
            *s = v;
        }
    }
}

/// Rows `raw` (row-major, `neutral.len()` wide) filled in order from a fresh state: the rows of
/// one machine since its last maintenance, as training and evaluation see them.
pub fn fill_rows(raw: &[f32], neutral: &[f32]) -> Vec<f32> {
    let nf = neutral.len();
    let mut state = fill_state(nf);
    let mut out = vec![0.0; raw.len()];
    for (r, o) in raw.chunks_exact(nf).zip(out.chunks_exact_mut(nf)) {
        fill_row(&mut state, r, neutral, o);
    }
    out
}

/// The raw value per feature that scales to the training centre (0.5 of the range for min-max,
/// the mean for z-score): what a feature never reported since the last maintenance reads as, so
/// the gap pulls the forecast as little as possible.
pub fn neutral(scaler: &Scaler) -> Vec<f32> {
    let centre = match scaler.kind {
        ScalerKind::MinMax => 0.5,
        ScalerKind::ZScore => 0.0,
    };
    let n = scaler.n_features();
    let mut out = vec![0.0; n];
    scaler.inverse_row(&vec![centre; n], &mut out);
    out
}

/// Left padding: `window` holds rows (`n_features` wide) of which the last `real` are a
/// machine's newest rows; the slots before them get the first of those rows. `real` must be at
/// least 1.
pub fn pad_left(window: &mut [f32], n_features: usize, real: usize) {
    let rows = window.len() / n_features;
    let pad = rows - real.min(rows);
    if pad == 0 {
        return;
    }
    let (head, tail) = window.split_at_mut(pad * n_features);
    let first = &tail[..n_features];
    for slot in head.chunks_exact_mut(n_features) {
        slot.copy_from_slice(first);
    }
}

/// The newest window of `filled` rows (row-major, `n_features` wide): its last `window` rows,
/// left-padded with the first row when there are fewer. Returns (window, real rows).
pub fn newest_window(filled: &[f32], n_features: usize, window: usize) -> (Vec<f32>, usize) {
    let n = filled.len() / n_features;
    let real = n.min(window);
    let mut out = vec![0.0; window * n_features];
    out[(window - real) * n_features..].copy_from_slice(&filled[(n - real) * n_features..]);
    pad_left(&mut out, n_features, real);
    (out, real)
}

/// Scales filled rows laid out in `columns`' `from` order into the scaler's (model's) order;
/// `raw` and `out` hold the same number of rows.
pub fn scale_window(scaler: &Scaler, columns: &Columns, raw: &[f32], out: &mut [f32]) {
    let nf = scaler.n_features();
    let mut ordered = vec![0.0; nf];
    for (r, o) in raw.chunks_exact(nf).zip(out.chunks_exact_mut(nf)) {
        columns.reorder(r, &mut ordered);
        scaler.transform_row(&ordered, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f32 = f32::NAN;

    #[test]
    fn features_are_read_by_name_unknown_ignored_missing_nan() {
        let idx = FeatureIndex::new(&["b".into(), "a".into()]);
        let mut out = [0.0; 2];
        assert_eq!(idx.read([("a", 1.0), ("zzz", 9.0)], &mut out), 1);
        assert!(out[0].is_nan());
        assert_eq!(out[1], 1.0);
        assert_eq!(idx.read([("b", 1e300)], &mut out), 0);
        assert!(
            out[0].is_infinite(),
            "overflow becomes infinite, then filled"
        );
    }

    #[test]
    fn rows_in_any_order_read_the_same_and_name_the_unknown() {
        let feats: Vec<String> = ["s1", "s2", "s3"].map(String::from).to_vec();
        let idx = FeatureIndex::new(&feats);
        let mut in_order = [0.0; 3];
        let mut shuffled = [0.0; 3];
        // In feature order (the positional path), and shuffled with strangers in between (where
        // a position names another feature or none).
        assert_eq!(
            idx.read([("s1", 1.0), ("s2", 2.0), ("s3", 3.0)], &mut in_order),
            0
        );
        let row = [
            ("x", 9.0),
            ("s3", 3.0),
            ("s1", 1.0),
            ("y", 8.0),
            ("s2", 2.0),
        ];
        assert_eq!(idx.read(row, &mut shuffled), 2);
        assert_eq!(in_order, [1.0, 2.0, 3.0]);
        assert_eq!(shuffled, in_order);
        let unknown: Vec<&str> = idx.unknown(row.iter().map(|(n, _)| *n)).collect();
        assert_eq!(unknown, ["x", "y"]);
        // A name at the position of another feature is still found by name.
        assert_eq!(idx.read([("s2", 2.0)], &mut shuffled), 0);
        assert_eq!(shuffled[1], 2.0);
        assert!(shuffled[0].is_nan() && shuffled[2].is_nan());
    }

    #[test]
    fn columns_follow_names() {
        let (a, b): (Vec<String>, Vec<String>) =
            (vec!["x".into(), "y".into()], vec!["y".into(), "x".into()]);
        assert_eq!(Columns::between(&a, &a), Columns::Same);
        let c = Columns::between(&a, &b);
        assert_eq!(c, Columns::Reordered(vec![1, 0]));
        let mut out = [0.0; 2];
        c.reorder(&[1.0, 2.0], &mut out);
        assert_eq!(out, [2.0, 1.0]);
        assert_eq!(
            Columns::between(&a, &["x".into(), "z".into()]),
            Columns::Incompatible
        );
        assert_eq!(Columns::between(&a, &["x".into()]), Columns::Incompatible);
    }

    #[test]
    fn arrival_rule() {
        assert_eq!(arrival(None, None, 5), Arrival::Accept);
        assert_eq!(arrival(Some(5), None, 5), Arrival::Duplicate);
        assert_eq!(arrival(Some(5), None, 4), Arrival::Late);
        assert_eq!(arrival(Some(5), None, 6), Arrival::Accept);
        // At or before the last maintenance: late, even where it would be a duplicate.
        assert_eq!(arrival(Some(5), Some(5), 5), Arrival::Late);
        assert_eq!(arrival(None, Some(5), 3), Arrival::Late);
        assert_eq!(arrival(Some(3), Some(5), 6), Arrival::Accept);
        assert!(event_applies(None, 1));
        assert!(!event_applies(Some(5), 5));
        assert!(event_applies(Some(5), 6));
    }

    #[test]
    fn fill_takes_last_good_since_reset_else_neutral_never_a_later_value() {
        let neutral = [100.0, 200.0];
        let raw = [
            NAN,
            5.0,
            7.0,
            f32::INFINITY,
            NAN,
            f32::NEG_INFINITY,
            8.0,
            6.0,
        ];
        let filled = fill_rows(&raw, &neutral);
        // Row 0's gap is neutral although row 1 has a value: no look-ahead.
        assert_eq!(filled, [100.0, 5.0, 7.0, 5.0, 7.0, 5.0, 8.0, 6.0]);
        let mut state = fill_state(2);
        let mut out = [0.0; 2];
        assert_eq!(fill_row(&mut state, &[NAN, 1.0], &neutral, &mut out), 1);
        remember(&mut state, &[3.0, NAN]);
        assert_eq!(fill_row(&mut state, &[NAN, NAN], &neutral, &mut out), 2);
        assert_eq!(out, [3.0, 1.0]);
    }

    #[test]
    fn neutral_is_the_training_centre() {
        let mm = Scaler {
            kind: ScalerKind::MinMax,
            offset: vec![10.0],
            scale: vec![4.0],
            regimes: None,
        };
        assert_eq!(neutral(&mm), [12.0]);
        let z = Scaler {
            kind: ScalerKind::ZScore,
            ..mm
        };
        assert_eq!(neutral(&z), [10.0]);
    }

    #[test]
    fn padding_repeats_the_first_real_row() {
        let (w, real) = newest_window(&[1.0, 10.0, 2.0, 20.0], 2, 4);
        assert_eq!(real, 2);
        assert_eq!(w, [1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 2.0, 20.0]);
        let (w, real) = newest_window(&[1.0, 2.0, 3.0, 4.0], 1, 3);
        assert_eq!((w, real), (vec![2.0, 3.0, 4.0], 3));
    }

    #[test]
    fn scaling_reads_columns_by_name() {
        let s = Scaler {
            kind: ScalerKind::MinMax,
            offset: vec![0.0, 10.0],
            scale: vec![1.0, 2.0],
            regimes: None,
        };
        let mut out = [0.0; 4];
        // Rows laid out [second, first]: read by name into the scaler's order.
        scale_window(
            &s,
            &Columns::Reordered(vec![1, 0]),
            &[12.0, 3.0, 14.0, 4.0],
            &mut out,
        );
        assert_eq!(out, [3.0, 1.0, 4.0, 2.0]);
    }
}
