//! Operating regimes: machines that run at a few distinct settings (altitude and throttle of an
//! engine, the load step of a pump) read very differently at each, and a sensor's healthy value at
//! one setting can be its worn value at another. Scaling each sensor per regime removes that, so the
//! network sees wear, not the setting. This is the per-operating-condition normalisation the
//! literature applies to the multi-condition C-MAPSS subsets (FD002, FD004).
//!
//! Regimes are found from the training rows' setting columns, without a count given: the settings
//! of a multi-regime fleet sit in a few tight clusters, those of a single-regime fleet are one cloud
//! of noise. Leader clustering with a radius that is small against each column's spread tells the
//! two apart: tight clusters give a few leaders, a noise cloud more than `MAX_REGIMES`, and then
//! the data has one regime, scaled fleet-wide. Either way the settings themselves read as 0: they
//! choose the scaling, they are not inputs (in a single-regime fleet they are noise).

use serde::{Deserialize, Serialize};

use crate::scaler::{Scaler, fit_columns};

/// More distinct settings than this are taken as one noisy setting, not as regimes.
pub const MAX_REGIMES: usize = 12;
/// A cluster's radius in units of each setting column's standard deviation.
const RADIUS: f64 = 0.1;
/// A cluster holding fewer training rows than this share is an outlier, not a regime.
const MIN_SHARE: f64 = 0.005;

/// The regimes of a model: where their settings lie and how each scales the features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regimes {
    /// Feature indices of the setting columns; the network sees them as 0.
    pub columns: Vec<usize>,
    /// Per setting column, the training standard deviation distances are measured in.
    pub spread: Vec<f32>,
    /// Per regime, its settings (`columns.len()` values, raw units).
    pub centres: Vec<Vec<f32>>,
    /// Per regime, `x' = (x - offset) / scale` for every feature.
    pub offset: Vec<Vec<f32>>,
    pub scale: Vec<Vec<f32>>,
}

impl Regimes {
    /// Finds regimes in row-major training `rows` (the features of `global`, the fleet-wide fit
    /// on the same rows) from the setting `columns`, and fits a scaler of the same kind per
    /// regime. One regime, scaled by `global`, when the settings do not form distinct ones;
    /// `None` without setting columns.
    pub fn detect(global: &Scaler, rows: &[f32], columns: &[usize]) -> Option<Regimes> {
        if columns.is_empty() {
            return None;
        }
        Some(
            Self::find(global, rows, columns).unwrap_or_else(|| Regimes {
                columns: columns.to_vec(),
                spread: vec![0.0; columns.len()],
                centres: vec![vec![0.0; columns.len()]],
                offset: vec![global.offset.clone()],
                scale: vec![global.scale.clone()],
            }),
        )
    }

    /// `detect` where the settings form at least two regimes.
    fn find(global: &Scaler, rows: &[f32], columns: &[usize]) -> Option<Regimes> {
        let n_features = global.n_features();
        let n = rows.len() / n_features.max(1);
        if n == 0 {
            return None;
        }
        let setting = |r: usize, k: usize| rows[r * n_features + columns[k]] as f64;
        let finite = |r: usize| (0..columns.len()).all(|k| setting(r, k).is_finite());
        let spread: Vec<f64> = (0..columns.len())
            .map(|k| {
                let vals = (0..n).filter(|&r| finite(r)).map(|r| setting(r, k));
                let (c, s, q) =
                    vals.fold((0.0, 0.0, 0.0), |(c, s, q), v| (c + 1.0, s + v, q + v * v));
                let mean = s / c;
                (q / c - mean * mean).max(0.0).sqrt()
            })
            .collect();
        if !spread.iter().any(|&s| s > 0.0) {
            return None;
        }
        let dist = |r: usize, centre: &[f64]| -> f64 {
            (0..columns.len())
                .filter(|&k| spread[k] > 0.0)
                .map(|k| ((setting(r, k) - centre[k]) / spread[k]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        // Leaders: the first row farther than RADIUS from every leader so far starts a cluster.
        let mut leaders: Vec<Vec<f64>> = Vec::new();
        for r in (0..n).filter(|&r| finite(r)) {
            if leaders.iter().all(|l| dist(r, l) > RADIUS) {
                if leaders.len() == 4 * MAX_REGIMES {
                    return None;
                }
                leaders.push((0..columns.len()).map(|k| setting(r, k)).collect());
            }
        }
        let nearest = |r: usize, centres: &[Vec<f64>]| -> usize {
            (0..centres.len())
                .min_by(|&a, &b| dist(r, &centres[a]).total_cmp(&dist(r, &centres[b])))
                .expect("at least one centre")
        };
        let members = |centres: &[Vec<f64>]| -> Vec<Vec<usize>> {
            let mut m = vec![Vec::new(); centres.len()];
            for r in (0..n).filter(|&r| finite(r)) {
                m[nearest(r, centres)].push(r);
            }
            m
        };
        // Outlier leaders go; the rest are regimes if there are few of them.
        let min_rows = ((n as f64 * MIN_SHARE).ceil() as usize).max(2);
        let kept: Vec<Vec<f64>> = members(&leaders)
            .iter()
            .zip(&leaders)
            .filter(|(m, _)| m.len() >= min_rows)
            .map(|(_, l)| l.clone())
            .collect();
        if kept.len() < 2 || kept.len() > MAX_REGIMES {
            return None;
        }
        let groups = members(&kept);
        let centres: Vec<Vec<f64>> = groups
            .iter()
            .map(|g| {
                (0..columns.len())
                    .map(|k| g.iter().map(|&r| setting(r, k)).sum::<f64>() / g.len() as f64)
                    .collect()
            })
            .collect();
        let (mut offset, mut scale) = (Vec::new(), Vec::new());
        for g in &groups {
            let sub: Vec<f32> = g
                .iter()
                .flat_map(|&r| rows[r * n_features..(r + 1) * n_features].iter().copied())
                .collect();
            // A sensor silent in just this regime keeps the fleet-wide fit.
            let (o, s): (Vec<f32>, Vec<f32>) = fit_columns(global.kind, &sub, n_features)
                .into_iter()
                .enumerate()
                .map(|(f, fitted)| fitted.unwrap_or((global.offset[f], global.scale[f])))
                .unzip();
            offset.push(o);
            scale.push(s);
        }
        Some(Regimes {
            columns: columns.to_vec(),
            spread: spread.iter().map(|&s| s as f32).collect(),
            centres: centres
                .iter()
                .map(|c| c.iter().map(|&v| v as f32).collect())
                .collect(),
            offset,
            scale,
        })
    }

    /// The regime of a raw row (feature order): the nearest centre, settings measured in their
    /// training spread. A row whose settings are not finite is filled before it gets here.
    pub fn of(&self, raw: &[f32]) -> usize {
        let mut best = (0, f32::INFINITY);
        for (i, centre) in self.centres.iter().enumerate() {
            let d: f32 = self
                .columns
                .iter()
                .zip(centre)
                .zip(&self.spread)
                .filter(|(_, s)| **s > 0.0)
                .map(|((&c, &m), &s)| ((raw[c] - m) / s).powi(2))
                .sum();
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    }

    /// Scales one raw row with its regime's offsets; the setting columns become 0, since the
    /// regime has already been taken out of every other feature.
    pub fn transform_row(&self, raw: &[f32], out: &mut [f32]) {
        let r = self.of(raw);
        for (((o, &x), &off), &s) in out
            .iter_mut()
            .zip(raw)
            .zip(&self.offset[r])
            .zip(&self.scale[r])
        {
            *o = (x - off) / s;
        }
        for &c in &self.columns {
            out[c] = 0.0;
        }
    }

    /// Checks the shapes against the model's feature count (a hand-edited card).
    pub fn validate(&self, n_features: usize) -> Result<(), String> {
        let k = self.centres.len();
        let ok = self.columns.iter().all(|&c| c < n_features)
            && self.spread.len() == self.columns.len()
            && self.centres.iter().all(|c| c.len() == self.columns.len())
            && self.offset.len() == k
            && self.scale.len() == k
            && self
                .offset
                .iter()
                .chain(&self.scale)
                .all(|v| v.len() == n_features)
            && self
                .scale
                .iter()
                .flatten()
                .all(|&s| s.is_finite() && s != 0.0);
        if ok && k >= 1 {
            Ok(())
        } else {
            Err(format!(
                "scaler.regimes does not fit {n_features} features ({k} regimes, columns {:?})",
                self.columns
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::ScalerKind;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Rows of [setting_a, setting_b, sensor]: the sensor reads `base[regime] + wear`.
    fn fleet(settings: &[(f32, f32)], base: &[f32], n: usize, noise: f32) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows = Vec::new();
        for i in 0..n {
            let r = i % settings.len();
            let wear = rng.random::<f32>();
            rows.extend([
                settings[r].0 + noise * (rng.random::<f32>() - 0.5),
                settings[r].1 + noise * 1e-2 * (rng.random::<f32>() - 0.5),
                base[r] + wear,
            ]);
        }
        rows
    }

    fn detect(rows: &[f32], columns: &[usize]) -> Option<Regimes> {
        let global = Scaler::fit(ScalerKind::MinMax, rows, 3).unwrap();
        Regimes::detect(&global, rows, columns)
    }

    #[test]
    fn distinct_settings_are_regimes_and_scale_the_sensor_per_regime() {
        let settings = [(0.0, 0.0), (10.0, 0.25), (20.0, 0.7), (42.0, 0.84)];
        let rows = fleet(&settings, &[500.0, 300.0, 800.0, 100.0], 4000, 0.01);
        let g = detect(&rows, &[0, 1]).expect("four regimes");
        assert_eq!(g.centres.len(), 4);
        // The same wear reads the same after scaling, whichever regime the row came from.
        let mut a = [0.0; 3];
        let mut b = [0.0; 3];
        g.transform_row(&[0.003, 0.0, 500.5], &mut a);
        g.transform_row(&[42.0, 0.84, 100.5], &mut b);
        assert!((a[2] - b[2]).abs() < 0.01, "{a:?} {b:?}");
        assert_eq!((a[0], a[1]), (0.0, 0.0));
        // A global scaler would put them far apart.
        let global = Scaler::fit(ScalerKind::MinMax, &rows, 3).unwrap();
        global.transform_row(&[0.003, 0.0, 500.5], &mut a);
        global.transform_row(&[42.0, 0.84, 100.5], &mut b);
        assert!((a[2] - b[2]).abs() > 0.4);
    }

    #[test]
    fn a_single_noisy_setting_is_one_regime() {
        // FD001-like: the settings are noise around one point.
        let mut rng = StdRng::seed_from_u64(3);
        let rows: Vec<f32> = (0..20_000)
            .flat_map(|_| {
                let (a, b) = (
                    rng.random::<f32>() * 0.02 - 0.01,
                    rng.random::<f32>() * 1e-3,
                );
                [a, b, 500.0 + rng.random::<f32>()]
            })
            .collect();
        let g = detect(&rows, &[0, 1]).expect("settings given");
        assert_eq!(g.centres.len(), 1);
        // The settings still read as 0 and the sensor scales fleet-wide.
        let global = Scaler::fit(ScalerKind::MinMax, &rows, 3).unwrap();
        let (mut a, mut b) = ([0.0; 3], [0.0; 3]);
        g.transform_row(&[0.004, 5e-4, 500.25], &mut a);
        global.transform_row(&[0.004, 5e-4, 500.25], &mut b);
        assert_eq!((a[0], a[1], a[2]), (0.0, 0.0, b[2]));
        assert!(detect(&rows, &[]).is_none());
    }

    #[test]
    fn rare_outlier_settings_are_not_regimes() {
        let mut rows = fleet(&[(0.0, 0.0), (35.0, 0.84)], &[500.0, 300.0], 4000, 0.01);
        rows.extend([99.0, 0.5, 400.0]);
        let g = detect(&rows, &[0, 1]).expect("two regimes");
        assert_eq!(g.centres.len(), 2);
        // The outlier's row is scaled by the regime nearest to it.
        assert_eq!(g.of(&[99.0, 0.5, 400.0]), 1);
        g.validate(3).unwrap();
        assert!(g.validate(2).is_err());
    }
}
