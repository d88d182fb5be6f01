//! A forecast's due date as a probability distribution.
//!
//! The model gives three quantiles of the days until maintenance: p10, the median and p90. The
//! planner needs more than three points: the probability that the machine comes due before a given
//! slot. We take the split normal through those quantiles: left of the median a normal whose 10th
//! percentile is p10, right of it one whose 90th percentile is p90. It reproduces the three
//! quantiles exactly, keeps the forecast's skew (the interval is rarely symmetric), and needs no
//! parameter the model did not give.

/// The 90th percentile of the standard normal.
pub const Z90: f64 = 1.281_551_565_544_600_5;

/// Spreads narrower than this (days) are treated as this: a forecast that claims to know its due
/// date to the minute still gets a smooth risk curve, so ties break by days rather than by chance.
pub const MIN_SIGMA_DAYS: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DueDate {
    /// Days from the forecast's time to the median due date.
    pub median: f64,
    pub sigma_lo: f64,
    pub sigma_hi: f64,
}

impl DueDate {
    /// From a forecast's p10, median and p90 (days). Crossed quantiles (p10 above the median, p90
    /// below it) are clamped to the median, so a malformed interval narrows rather than inverts.
    pub fn from_quantiles(p10: f64, median: f64, p90: f64) -> DueDate {
        let lo = (median - p10).max(0.0) / Z90;
        let hi = (p90 - median).max(0.0) / Z90;
        DueDate {
            median,
            sigma_lo: lo.max(MIN_SIGMA_DAYS),
            sigma_hi: hi.max(MIN_SIGMA_DAYS),
        }
    }

    /// Probability that the machine comes due within `t` days of the forecast's time.
    pub fn due_by(&self, t: f64) -> f64 {
        let sigma = if t < self.median {
            self.sigma_lo
        } else {
            self.sigma_hi
        };
        normal_cdf((t - self.median) / sigma)
    }

    /// The day (from the forecast's time) by which the machine comes due with probability `p`.
    pub fn quantile(&self, p: f64) -> f64 {
        let z = normal_quantile(p);
        self.median
            + z * if z < 0.0 {
                self.sigma_lo
            } else {
                self.sigma_hi
            }
    }
}

pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Inverse of [`normal_cdf`] by bisection: called once per plan, so simplicity beats speed.
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_tabulated_values() {
        // Values from Python's statistics.NormalDist: services/planner/reference/normal_cdf.py.
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_1),
            (-1.959_963_985, 0.025),
            (Z90, 0.9),
            (-3.0, 0.001_349_898_032),
        ] {
            assert!(
                (normal_cdf(z) - want).abs() < 1e-9,
                "{z}: {}",
                normal_cdf(z)
            );
            assert!((normal_quantile(want) - z).abs() < 1e-7, "{want}");
        }
    }

    #[test]
    fn split_normal_reproduces_the_three_quantiles() {
        let d = DueDate::from_quantiles(2.0, 5.0, 11.0);
        assert!((d.due_by(2.0) - 0.1).abs() < 1e-12);
        assert!((d.due_by(5.0) - 0.5).abs() < 1e-12);
        assert!((d.due_by(11.0) - 0.9).abs() < 1e-12);
        // The long right tail: the 95th percentile lies further above the median than the 5th below.
        assert!(d.quantile(0.95) - 5.0 > 5.0 - d.quantile(0.05));
        assert!((d.quantile(0.1) - 2.0).abs() < 1e-6);
        // Monotone.
        let mut last = 0.0;
        for i in 0..200 {
            let p = d.due_by(i as f64 * 0.1 - 2.0);
            assert!(p >= last);
            last = p;
        }
    }

    #[test]
    fn crossed_or_degenerate_intervals_narrow_instead_of_inverting() {
        let d = DueDate::from_quantiles(6.0, 5.0, 4.0);
        assert_eq!(d.sigma_lo, MIN_SIGMA_DAYS);
        assert_eq!(d.sigma_hi, MIN_SIGMA_DAYS);
        assert!(d.due_by(4.8) < 0.01 && d.due_by(5.2) > 0.99);
    }
}
