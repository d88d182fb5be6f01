//! Accuracy metrics and the conformal prediction interval.

use serde::{Deserialize, Serialize};

pub fn mae(pred: &[f32], truth: &[f32]) -> f64 {
    mean(
        pred.iter()
            .zip(truth)
            .map(|(p, t)| (*p as f64 - *t as f64).abs()),
    )
}

pub fn rmse(pred: &[f32], truth: &[f32]) -> f64 {
    mean(
        pred.iter()
            .zip(truth)
            .map(|(p, t)| (*p as f64 - *t as f64).powi(2)),
    )
    .sqrt()
}

/// The PHM08 challenge score (Saxena et al. 2008): late predictions (`pred > truth`) cost
/// `exp(d/10) - 1`, early ones `exp(-d/13) - 1`. A sum, so it grows with the number of machines.
pub fn phm08_score(pred: &[f32], truth: &[f32]) -> f64 {
    pred.iter()
        .zip(truth)
        .map(|(p, t)| {
            let d = *p as f64 - *t as f64;
            if d < 0.0 {
                (-d / 13.0).exp() - 1.0
            } else {
                (d / 10.0).exp() - 1.0
            }
        })
        .sum()
}

fn mean(it: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = it.len();
    if n == 0 {
        return f64::NAN;
    }
    it.sum::<f64>() / n as f64
}

/// A split-conformal interval: offsets added to the point forecast, taken from the residuals
/// (`truth - pred`) on held-out machines. With `bins`, the offsets depend on the forecast itself
/// (Mondrian conformal prediction by predicted-RUL bin): near the cap the residuals are small and
/// one-sided, near failure they are wide, and one pair of offsets for all fits neither.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalSpec {
    pub lower_quantile: f32,
    pub upper_quantile: f32,
    /// Offsets over all residuals; used when `bins` is empty (cards written before bins existed).
    pub lower_offset: f32,
    pub upper_offset: f32,
    /// Residuals the offsets came from; 0 means the interval is uncalibrated (offsets 0).
    pub n_calibration: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<IntervalBin>,
}

/// Offsets for forecasts below `upto` (and at or above the previous bin's `upto`); the last bin
/// has no upper edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalBin {
    pub upto: Option<f32>,
    pub lower_offset: f32,
    pub upper_offset: f32,
    pub n: usize,
}

/// The split-conformal order statistics of sorted residuals `r`: `(lower, upper)` offsets.
fn conformal_offsets(r: &[f32], lower_quantile: f32, upper_quantile: f32) -> (f32, f32) {
    let n = r.len();
    let n1 = (n + 1) as f64;
    let hi = ((n1 * upper_quantile as f64).ceil() as usize).clamp(1, n);
    let lo = ((n1 * lower_quantile as f64).floor() as usize).clamp(1, n);
    (r[lo - 1], r[hi - 1])
}

impl IntervalSpec {
    /// Offsets so that, for an exchangeable new example, `truth <= pred + upper` with probability at
    /// least `upper_quantile` and `truth < pred + lower` with probability at most
    /// `lower_quantile` (the finite-sample order statistics of split conformal prediction).
    pub fn calibrate(
        pred: &[f32],
        truth: &[f32],
        lower_quantile: f32,
        upper_quantile: f32,
    ) -> Self {
        Self::calibrate_binned(pred, truth, lower_quantile, upper_quantile, 1)
    }

    /// Like [`calibrate`](Self::calibrate), separately within `n_bins` bins of the forecast whose
    /// edges are quantiles of `pred` (equal counts), so every bin has the same share of residuals.
    /// Bins that would hold fewer than 50 residuals are merged away: their order statistics would
    /// be too coarse to mean anything.
    pub fn calibrate_binned(
        pred: &[f32],
        truth: &[f32],
        lower_quantile: f32,
        upper_quantile: f32,
        n_bins: usize,
    ) -> Self {
        let mut pairs: Vec<(f32, f32)> = pred
            .iter()
            .zip(truth)
            .map(|(&p, &t)| (p, t - p))
            .filter(|(p, r)| p.is_finite() && r.is_finite())
            .collect();
        let n = pairs.len();
        let mut spec = Self {
            lower_quantile,
            upper_quantile,
            lower_offset: 0.0,
            upper_offset: 0.0,
            n_calibration: n,
            bins: Vec::new(),
        };
        if n == 0 {
            return spec;
        }
        let mut all: Vec<f32> = pairs.iter().map(|p| p.1).collect();
        all.sort_by(f32::total_cmp);
        (spec.lower_offset, spec.upper_offset) =
            conformal_offsets(&all, lower_quantile, upper_quantile);
        let n_bins = n_bins.min(n / 50).max(1);
        if n_bins == 1 {
            return spec;
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut start = 0;
        for b in 0..n_bins {
            let mut end = n * (b + 1) / n_bins;
            // Equal forecasts stay in one bin, so that the edge separates them cleanly.
            while b + 1 < n_bins && end < n && pairs[end].0 == pairs[end - 1].0 {
                end += 1;
            }
            if end <= start {
                continue;
            }
            let mut r: Vec<f32> = pairs[start..end].iter().map(|p| p.1).collect();
            r.sort_by(f32::total_cmp);
            let (lower_offset, upper_offset) =
                conformal_offsets(&r, lower_quantile, upper_quantile);
            let upto = (end < n).then(|| pairs[end].0);
            spec.bins.push(IntervalBin {
                upto,
                lower_offset,
                upper_offset,
                n: end - start,
            });
            start = end;
            if end == n {
                break;
            }
        }
        spec
    }

    /// The `(lower, upper)` offsets that apply to a forecast of `pred`.
    pub fn offsets(&self, pred: f32) -> (f32, f32) {
        match self.bins.iter().find(|b| b.upto.is_none_or(|u| pred < u)) {
            Some(b) => (b.lower_offset, b.upper_offset),
            None => (self.lower_offset, self.upper_offset),
        }
    }

    /// (p_lower, p_upper) around `pred`, never below 0 days.
    pub fn bounds(&self, pred: f32) -> (f32, f32) {
        let (lo, hi) = self.offsets(pred);
        ((pred + lo).max(0.0), (pred + hi).max(0.0))
    }
}

/// Fraction of `truth` inside `[lo, hi]`.
pub fn coverage(lo: &[f32], hi: &[f32], truth: &[f32]) -> f64 {
    mean(
        truth
            .iter()
            .zip(lo.iter().zip(hi))
            .map(|(t, (l, h))| f64::from(u8::from(l <= t && t <= h))),
    )
}

/// Mean of `hi - lo`.
pub fn mean_width(lo: &[f32], hi: &[f32]) -> f64 {
    mean(lo.iter().zip(hi).map(|(l, h)| *h as f64 - *l as f64))
}

/// How an interval did on some examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalStats {
    pub n: usize,
    pub coverage: f64,
    pub mean_width: f64,
}

impl IntervalStats {
    pub fn of(lo: &[f32], hi: &[f32], truth: &[f32]) -> Self {
        Self {
            n: truth.len(),
            coverage: coverage(lo, hi, truth),
            mean_width: mean_width(lo, hi),
        }
    }
}

/// Point error and interval statistics for one range of the true value, `[from, to)` (the last
/// range has no upper end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeStats {
    pub from: f32,
    pub to: f32,
    /// RMSE of the point forecast on these examples (NaN when there are none).
    #[serde(default)]
    pub rmse: f64,
    #[serde(flatten)]
    pub stats: IntervalStats,
}

/// Interval statistics per third of `[0, cap]` of the true value: near failure, middle, far. An
/// interval can cover 80 % overall by being too wide far from failure and too narrow near it;
/// this is what shows that.
pub fn interval_by_third(
    pred: &[f32],
    lo: &[f32],
    hi: &[f32],
    truth: &[f32],
    cap: f32,
) -> Vec<RangeStats> {
    (0..3)
        .map(|k| {
            let (from, to) = (cap * k as f32 / 3.0, cap * (k + 1) as f32 / 3.0);
            // Truth above the cap (uncapped callers) counts in the last third.
            let inside = |t: f32| t >= from && (t < to || k == 2);
            let idx: Vec<usize> = (0..truth.len()).filter(|&i| inside(truth[i])).collect();
            let pick = |v: &[f32]| -> Vec<f32> { idx.iter().map(|&i| v[i]).collect() };
            RangeStats {
                from,
                to,
                rmse: rmse(&pick(pred), &pick(truth)),
                stats: IntervalStats::of(&pick(lo), &pick(hi), &pick(truth)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_metrics() {
        let p = [1.0, 2.0, 5.0];
        let t = [1.0, 4.0, 4.0];
        assert!((mae(&p, &t) - 1.0).abs() < 1e-12);
        assert!((rmse(&p, &t) - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // early by 2: e^(2/13)-1; late by 1: e^(1/10)-1
        let s = (2.0f64 / 13.0).exp() - 1.0 + (0.1f64).exp() - 1.0;
        assert!((phm08_score(&p, &t) - s).abs() < 1e-12);
    }

    #[test]
    fn conformal_offsets_are_order_statistics_of_residuals() {
        // residuals 1..=19
        let truth: Vec<f32> = (1..=19).map(|v| v as f32).collect();
        let pred = vec![0.0; 19];
        let s = IntervalSpec::calibrate(&pred, &truth, 0.1, 0.9);
        // n+1 = 20: upper = ceil(18)-th = 18, lower = floor(2)-th = 2
        assert_eq!(
            (s.lower_offset, s.upper_offset, s.n_calibration),
            (2.0, 18.0, 19)
        );
        let (lo, hi): (Vec<f32>, Vec<f32>) = pred.iter().map(|&p| s.bounds(p)).unzip();
        let c = coverage(&lo, &hi, &truth);
        assert!((c - 17.0 / 19.0).abs() < 1e-12);
    }

    #[test]
    fn empty_calibration_gives_a_zero_width_interval() {
        let s = IntervalSpec::calibrate(&[], &[], 0.1, 0.9);
        assert_eq!(s.n_calibration, 0);
        assert_eq!(s.bounds(3.0), (3.0, 3.0));
        assert_eq!(s.bounds(-1.0), (0.0, 0.0));
    }
}
