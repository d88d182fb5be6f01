//! From machine histories to training examples: labels, feature choice, the machine split and
//! windows.
//!
//! A row's label is the number of days from its `ts` to the machine's next maintenance event,
//! capped at `cap`; a row at the event's own `ts` belongs before the event (label 0). Rows after a
//! machine's last event have no label and are not trained on. Events cut each history into
//! segments and no window spans two of them: rows before an event describe a machine that no longer
//! exists.
//!
//! A window of `window` rows is labelled with its last row's label. Within a segment the windows
//! end at its last row and every `step` rows before it, so the rows nearest the event (the ones
//! that matter most) are always used, down to the segment's `min_rows`-th row: windows ending
//! before its `window`-th row are left-padded with the segment's first row. Those are the windows
//! the ingest service forecasts from in the first rows after a maintenance, so a model with
//! `min_rows < window` learns from inputs shaped like the ones it will be served; with the default
//! `min_rows = window` no window is padded.
//!
//! Rows are filled, padded and scaled by the data path (`crate::prep`), segment by segment from
//! its first row, exactly as the ingest service prepares a machine's rows after a maintenance.
//!
//! Over 450 lines only by its inline tests, which pin these rules beside the code (labels,
//! windows and their padding, fill per segment, feature choice).

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::error::{ModelError, Result};
use crate::history::{DAY_MS, MachineHistory};
use crate::prep;
use crate::scaler::Scaler;

#[derive(Clone, Copy, Debug)]
pub struct WindowSpec {
    pub window: usize,
    pub step: usize,
    pub min_rows: usize,
}

/// Examples ready for the network: `x` is row-major `[len, window, n_features]`.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub window: usize,
    pub n_features: usize,
}

impl Windows {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn get(&self, i: usize) -> &[f32] {
        let n = self.window * self.n_features;
        &self.x[i * n..(i + 1) * n]
    }

    /// The same windows cut to their last `rows` rows (an ensemble member that reads fewer rows
    /// than the window); borrowed when nothing is cut.
    pub fn tail(&self, rows: usize) -> std::borrow::Cow<'_, Windows> {
        if rows >= self.window {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(Windows {
            x: tail_rows(&self.x, self.window, self.n_features, rows),
            y: self.y.clone(),
            window: rows,
            n_features: self.n_features,
        })
    }
}

/// The last `rows` rows of each `[window, n_features]` window in `x`.
pub fn tail_rows(x: &[f32], window: usize, n_features: usize, rows: usize) -> Vec<f32> {
    let skip = (window - rows.min(window)) * n_features;
    (x.chunks_exact(window * n_features))
        .flat_map(|w| &w[skip..])
        .copied()
        .collect()
}

/// Days to the next event for each row (capped), `None` after the last event.
pub fn labels(m: &MachineHistory, cap: f32) -> Vec<Option<f32>> {
    let mut next = 0;
    m.ts.iter()
        .map(|&t| {
            while next < m.events.len() && m.events[next] < t {
                next += 1;
            }
            m.events
                .get(next)
                .map(|&e| (((e - t) as f64 / DAY_MS as f64) as f32).min(cap))
        })
        .collect()
}

/// Row ranges `[start, end)` between events that carry labels, in time order.
///
/// Every event the history knows of ends a segment, also one the label policy dropped from
/// `events` (it stays in `event_kinds`): serving starts a machine's window afresh at any
/// maintenance, so no training window may span one either. Labels still count down to the next
/// event in `events`, and rows after the last of those carry none.
pub fn labelled_segments(m: &MachineHistory) -> Vec<(usize, usize)> {
    let Some(&last) = m.events.last() else {
        return Vec::new();
    };
    let mut bounds: Vec<i64> = m
        .events
        .iter()
        .copied()
        .chain(m.event_kinds.keys().copied().filter(|&t| t < last))
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for &e in &bounds {
        let end = start + m.ts[start..].partition_point(|&t| t <= e);
        if end > start {
            out.push((start, end));
        }
        start = end;
    }
    out
}

/// The rows after the last event: what the machine looks like now.
pub fn current_segment(m: &MachineHistory) -> (usize, usize) {
    let start = m
        .events
        .last()
        .map_or(0, |&e| m.ts.partition_point(|&t| t <= e));
    (start, m.n_rows())
}

/// Sensors among `candidates` whose range over `machines` exceeds `tolerance`; the others carry no
/// information and would only divide by zero in the scaler.
pub fn varying_features(
    machines: &[&MachineHistory],
    candidates: &[String],
    tolerance: f32,
) -> Result<Vec<String>> {
    let mut lo = vec![f32::INFINITY; candidates.len()];
    let mut hi = vec![f32::NEG_INFINITY; candidates.len()];
    for m in machines {
        let cols = m.columns(candidates)?;
        for r in 0..m.n_rows() {
            let row = m.row(r);
            for (k, &c) in cols.iter().enumerate() {
                lo[k] = lo[k].min(row[c]);
                hi[k] = hi[k].max(row[c]);
            }
        }
    }
    Ok(candidates
        .iter()
        .enumerate()
        .filter(|&(k, _)| hi[k] - lo[k] > tolerance)
        .map(|(_, f)| f.clone())
        .collect())
}

/// Splits machine indices `0..n` into (training, validation), validation machines held out whole.
pub fn split_machines(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut n_val = (n as f64 * val_fraction).round() as usize;
    if val_fraction > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    }
    let mut val = idx.split_off(n - n_val.min(n));
    idx.sort_unstable();
    val.sort_unstable();
    (idx, val)
}

/// Raw feature rows (missing values NaN) of the labelled segments of `machines`, for fitting the
/// scaler, which learns from the values that were received.
pub fn training_rows(machines: &[&MachineHistory], features: &[String]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for m in machines {
        let cols = m.columns(features)?;
        for (a, b) in labelled_segments(m) {
            out.extend(raw_rows(m, &cols, (a, b)));
        }
    }
    Ok(out)
}

/// Rows `[start, end)` of one machine in feature order, as received.
fn raw_rows(m: &MachineHistory, cols: &[usize], (start, end): (usize, usize)) -> Vec<f32> {
    let mut out = Vec::with_capacity((end - start) * cols.len());
    for r in start..end {
        let row = m.row(r);
        out.extend(cols.iter().map(|&c| row[c]));
    }
    out
}

/// Rows `[start, end)` of one machine filled and scaled; `start` must begin a segment (the first
/// row or the first after an event), where the fill starts afresh.
fn prepared_rows(
    m: &MachineHistory,
    cols: &[usize],
    scaler: &Scaler,
    seg: (usize, usize),
) -> Vec<f32> {
    let filled = prep::fill_rows(&raw_rows(m, cols, seg), &prep::neutral(scaler));
    let mut out = vec![0.0; filled.len()];
    prep::scale_window(scaler, &prep::Columns::Same, &filled, &mut out);
    out
}

/// Appends the window of `window` rows ending before row `end` of `rows` (row-major, `nf` wide),
/// left-padded with row 0 where the history is shorter.
fn push_window(rows: &[f32], nf: usize, end: usize, window: usize, out: &mut Vec<f32>) {
    let real = end.min(window);
    let at = out.len();
    out.resize(at + window * nf, 0.0);
    out[at + (window - real) * nf..].copy_from_slice(&rows[(end - real) * nf..end * nf]);
    prep::pad_left(&mut out[at..], nf, real);
}

/// Labelled windows of `machines` (see the module doc for which windows).
pub fn training_windows(
    machines: &[&MachineHistory],
    features: &[String],
    scaler: &Scaler,
    spec: WindowSpec,
    cap: f32,
) -> Result<Windows> {
    if spec.window == 0 || spec.step == 0 {
        return Err(ModelError::Config(
            "window and step must be at least 1".into(),
        ));
    }
    let nf = features.len();
    let mut out = Windows {
        window: spec.window,
        n_features: nf,
        ..Default::default()
    };
    for m in machines {
        let cols = m.columns(features)?;
        let labels = labels(m, cap);
        for seg in labelled_segments(m) {
            let len = seg.1 - seg.0;
            let shortest = spec.min_rows.clamp(1, spec.window);
            if len < shortest {
                continue;
            }
            let rows = prepared_rows(m, &cols, scaler, seg);
            let mut end = len;
            while end >= shortest {
                push_window(&rows, nf, end, spec.window, &mut out.x);
                out.y
                    .push(labels[seg.0 + end - 1].expect("segment rows are labelled"));
                if end < spec.step {
                    break;
                }
                end -= spec.step;
            }
        }
    }
    Ok(out)
}

/// The newest window of a machine's current segment (rows after its last event), filled but not
/// scaled, left-padded with the segment's first row, and how many real rows it holds; `None` when
/// that segment has fewer than `min_rows` rows. What the ingest service holds for the machine.
pub fn current_window(
    m: &MachineHistory,
    features: &[String],
    neutral: &[f32],
    window: usize,
    min_rows: usize,
) -> Result<Option<(Vec<f32>, usize)>> {
    let (a, b) = current_segment(m);
    if b - a < min_rows.max(1) {
        return Ok(None);
    }
    let cols = m.columns(features)?;
    // The whole segment is filled: a gap in the window takes a value from before it.
    let filled = prep::fill_rows(&raw_rows(m, &cols, (a, b)), neutral);
    Ok(Some(prep::newest_window(&filled, features.len(), window)))
}

/// [`current_window`] scaled: what the network is given for the machine now.
pub fn last_window(
    m: &MachineHistory,
    features: &[String],
    scaler: &Scaler,
    window: usize,
    min_rows: usize,
) -> Result<Option<Vec<f32>>> {
    let Some((raw, _)) = current_window(m, features, &prep::neutral(scaler), window, min_rows)?
    else {
        return Ok(None);
    };
    let mut out = vec![0.0; raw.len()];
    prep::scale_window(scaler, &prep::Columns::Same, &raw, &mut out);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::ScalerKind;

    #[test]
    fn a_tail_keeps_the_newest_rows_of_each_window() {
        // two windows of 3 rows x 2 features; row r of window w holds (10w + r, -(10w + r))
        let x: Vec<f32> = (0..2)
            .flat_map(|w| (0..3).flat_map(move |r| [(10 * w + r) as f32, -((10 * w + r) as f32)]))
            .collect();
        assert_eq!(
            tail_rows(&x, 3, 2, 2),
            [1.0, -1.0, 2.0, -2.0, 11.0, -11.0, 12.0, -12.0]
        );
        assert_eq!(tail_rows(&x, 3, 2, 3), x);
        let w = Windows {
            x: x.clone(),
            y: vec![5.0, 6.0],
            window: 3,
            n_features: 2,
        };
        let t = w.tail(1);
        assert_eq!(
            (t.window, t.get(1), &t.y[..]),
            (1, &[12.0, -12.0][..], &[5.0, 6.0][..])
        );
        assert!(matches!(w.tail(3), std::borrow::Cow::Borrowed(_)));
    }

    /// One sensor whose value is the row index, one constant sensor; one row a day.
    fn machine(rows: usize, events_at_row: &[usize]) -> MachineHistory {
        MachineHistory {
            machine_id: "m".into(),
            ts: (0..rows as i64).map(|d| d * DAY_MS).collect(),
            sensors: vec!["idx".into(), "flat".into()],
            values: (0..rows).flat_map(|r| [r as f32, 7.0]).collect(),
            events: events_at_row.iter().map(|&r| r as i64 * DAY_MS).collect(),
            ..Default::default()
        }
    }

    fn identity() -> Scaler {
        Scaler {
            kind: ScalerKind::MinMax,
            offset: vec![0.0],
            scale: vec![1.0],
            regimes: None,
        }
    }

    #[test]
    fn labels_count_days_to_next_event_capped_and_none_after_last() {
        let m = machine(8, &[2, 6]);
        let l = labels(&m, 3.0);
        assert_eq!(
            l,
            [
                Some(2.0),
                Some(1.0),
                Some(0.0),
                Some(3.0),
                Some(2.0),
                Some(1.0),
                Some(0.0),
                None
            ]
        );
        // half-day timestamps give fractional days
        let mut m = machine(2, &[1]);
        m.ts[0] = DAY_MS / 2;
        assert_eq!(labels(&m, 10.0), [Some(0.5), Some(0.0)]);
    }

    #[test]
    fn windows_end_at_the_event_step_back_and_never_span_events() {
        // segments: rows 0..=4 (event at 4), rows 5..=9 (event at 9), row 10 unlabelled
        let m = machine(11, &[4, 9]);
        let spec = WindowSpec {
            window: 3,
            step: 2,
            min_rows: 3,
        };
        let w = training_windows(&[&m], &["idx".into()], &identity(), spec, 100.0).unwrap();
        // ends (last row): segment 1 -> 4, 2; segment 2 -> 9, 7
        let got: Vec<Vec<f32>> = (0..w.len()).map(|i| w.get(i).to_vec()).collect();
        assert_eq!(
            got,
            [
                vec![2.0, 3.0, 4.0],
                vec![0.0, 1.0, 2.0],
                vec![7.0, 8.0, 9.0],
                vec![5.0, 6.0, 7.0]
            ]
        );
        assert_eq!(w.y, [0.0, 2.0, 0.0, 2.0]);
    }

    #[test]
    fn short_segments_are_left_padded_down_to_min_rows() {
        let m = machine(3, &[2]);
        let spec = WindowSpec {
            window: 5,
            step: 1,
            min_rows: 2,
        };
        let w = training_windows(&[&m], &["idx".into()], &identity(), spec, 100.0).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.get(0), [0.0, 0.0, 0.0, 1.0, 2.0]);
        assert_eq!(w.get(1), [0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(w.y, [0.0, 1.0]);
        let spec = WindowSpec {
            min_rows: 4,
            ..spec
        };
        let w = training_windows(&[&m], &["idx".into()], &identity(), spec, 100.0).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn long_segments_also_yield_padded_windows_down_to_min_rows() {
        // one segment of 6 rows, window 4: ends at rows 6, 5, 4 full, 3 and 2 padded
        let m = machine(6, &[5]);
        let spec = WindowSpec {
            window: 4,
            step: 1,
            min_rows: 2,
        };
        let w = training_windows(&[&m], &["idx".into()], &identity(), spec, 100.0).unwrap();
        assert_eq!(w.len(), 5);
        assert_eq!(w.get(3), [0.0, 0.0, 1.0, 2.0]);
        assert_eq!(w.get(4), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(w.y, [0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn last_window_uses_only_rows_after_the_last_event() {
        let m = machine(6, &[2]);
        let f = ["idx".to_string()];
        let w = last_window(&m, &f, &identity(), 4, 1).unwrap().unwrap();
        assert_eq!(w, [3.0, 3.0, 4.0, 5.0]);
        assert!(last_window(&m, &f, &identity(), 4, 4).unwrap().is_none());
        let w = last_window(&m, &f, &identity(), 2, 2).unwrap().unwrap();
        assert_eq!(w, [4.0, 5.0]);
    }

    #[test]
    fn windows_are_scaled() {
        let m = machine(4, &[3]);
        let f = ["idx".to_string()];
        let rows = training_rows(&[&m], &f).unwrap();
        let s = Scaler::fit(ScalerKind::MinMax, &rows, 1).unwrap();
        let spec = WindowSpec {
            window: 4,
            step: 1,
            min_rows: 4,
        };
        let w = training_windows(&[&m], &f, &s, spec, 9.0).unwrap();
        assert_eq!(w.get(0), [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }

    #[test]
    fn gaps_are_filled_per_segment_from_the_last_good_value_else_neutral() {
        // idx: 0, NaN, 2 | event | NaN, 4 ; neutral of the identity min-max scaler is 0.5
        let mut m = machine(5, &[2]);
        m.values[2] = f32::NAN;
        m.values[6] = f32::NAN;
        let spec = WindowSpec {
            window: 3,
            step: 1,
            min_rows: 1,
        };
        let w = training_windows(&[&m], &["idx".into()], &identity(), spec, 100.0).unwrap();
        assert_eq!(w.get(0), [0.0, 0.0, 2.0]);
        let w = last_window(&m, &["idx".to_string()], &identity(), 3, 1)
            .unwrap()
            .unwrap();
        // the gap after the event does not take the 2 from before it
        assert_eq!(w, [0.5, 0.5, 4.0]);
    }

    #[test]
    fn constant_features_are_dropped() {
        let m = machine(5, &[4]);
        let f = varying_features(&[&m], &["idx".into(), "flat".into()], 0.0).unwrap();
        assert_eq!(f, ["idx"]);
        assert!(varying_features(&[&m], &["nope".into()], 0.0).is_err());
    }

    #[test]
    fn split_holds_out_whole_machines_reproducibly() {
        let (t, v) = split_machines(10, 0.2, 7);
        assert_eq!(v.len(), 2);
        assert_eq!(t.len(), 8);
        assert!(v.iter().all(|i| !t.contains(i)));
        assert_eq!(split_machines(10, 0.2, 7), (t, v.clone()));
        assert_ne!(split_machines(10, 0.2, 8).1, v);
        assert_eq!(split_machines(3, 0.0, 1).1.len(), 0);
    }
}
