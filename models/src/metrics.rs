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
/// (`truth - pred`) on held-out validation machines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalSpec {
    pub lower_quantile: f32,
    pub upper_quantile: f32,
    pub lower_offset: f32,
    pub upper_offset: f32,
    /// Residuals the offsets came from; 0 means the interval is uncalibrated (offsets 0).
    pub n_calibration: usize,
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
        let mut r: Vec<f32> = truth.iter().zip(pred).map(|(t, p)| t - p).collect();
        r.retain(|v| v.is_finite());
        r.sort_by(f32::total_cmp);
        let n = r.len();
        if n == 0 {
            return Self {
                lower_quantile,
                upper_quantile,
                lower_offset: 0.0,
                upper_offset: 0.0,
                n_calibration: 0,
            };
        }
        let n1 = (n + 1) as f64;
        let hi = ((n1 * upper_quantile as f64).ceil() as usize).clamp(1, n);
        let lo = ((n1 * lower_quantile as f64).floor() as usize).clamp(1, n);
        Self {
            lower_quantile,
            upper_quantile,
            lower_offset: r[lo - 1],
            upper_offset: r[hi - 1],
            n_calibration: n,
        }
    }

    /// (p_lower, p_upper) around `pred`, never below 0 days.
    pub fn bounds(&self, pred: f32) -> (f32, f32) {
        (
            (pred + self.lower_offset).max(0.0),
            (pred + self.upper_offset).max(0.0),
        )
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
