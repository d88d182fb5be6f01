//! Per-feature scaling, fitted on training machines only and stored in the model card so that
//! serving scales rows exactly as training did.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::regimes::Regimes;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalerKind {
    /// Maps the training range of each feature onto [0, 1] (what the seed did).
    #[default]
    MinMax,
    /// Subtracts the training mean and divides by the training standard deviation.
    ZScore,
}

/// `x' = (x - offset) / scale` per feature; both kinds reduce to that form. With `regimes`, each
/// row is scaled by its operating regime's offsets instead (`regimes.rs`); `offset` and `scale`
/// stay the fleet-wide fit, which places the neutral value of a missing reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub kind: ScalerKind,
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regimes: Option<Regimes>,
}

impl Scaler {
    /// Fits on row-major `rows` of `n_features` columns, from their finite values: missing readings
    /// (NaN) are filled only after the scaler exists, from its centre. No regimes: see
    /// `Regimes::detect`.
    pub fn fit(kind: ScalerKind, rows: &[f32], n_features: usize) -> Result<Self> {
        if n_features == 0 || rows.is_empty() || !rows.len().is_multiple_of(n_features) {
            return Err(ModelError::Data(format!(
                "cannot fit a scaler on {} values of {n_features} features",
                rows.len()
            )));
        }
        let mut offset = Vec::with_capacity(n_features);
        let mut scale = Vec::with_capacity(n_features);
        for (f, fitted) in fit_columns(kind, rows, n_features).into_iter().enumerate() {
            let Some((o, s)) = fitted else {
                return Err(ModelError::Data(format!(
                    "cannot fit a scaler: feature {f} has no finite value"
                )));
            };
            offset.push(o);
            scale.push(s);
        }
        Ok(Self {
            kind,
            offset,
            scale,
            regimes: None,
        })
    }

    /// Scales one row; `raw` and `out` hold `n_features()` values.
    pub fn transform_row(&self, raw: &[f32], out: &mut [f32]) {
        if let Some(regimes) = &self.regimes {
            return regimes.transform_row(raw, out);
        }
        for (((o, &x), &off), &s) in out.iter_mut().zip(raw).zip(&self.offset).zip(&self.scale) {
            *o = (x - off) / s;
        }
    }

    pub fn n_features(&self) -> usize {
        self.offset.len()
    }

    /// The fleet-wide inverse of `transform_row` (regimes aside).
    pub fn inverse_row(&self, scaled: &[f32], out: &mut [f32]) {
        for (((o, &x), &off), &s) in out
            .iter_mut()
            .zip(scaled)
            .zip(&self.offset)
            .zip(&self.scale)
        {
            *o = x * s + off;
        }
    }
}

/// Per feature, `(offset, scale)` from its finite values, `None` for a feature with none.
/// Accumulates in f64 so that long histories of large readings do not lose the variance to
/// rounding.
pub(crate) fn fit_columns(
    kind: ScalerKind,
    rows: &[f32],
    n_features: usize,
) -> Vec<Option<(f32, f32)>> {
    (0..n_features)
        .map(|f| {
            let col = rows
                .iter()
                .skip(f)
                .step_by(n_features)
                .filter(|v| v.is_finite())
                .map(|&v| v as f64);
            let n = col.clone().count();
            if n == 0 {
                return None;
            }
            let (o, s) = match kind {
                ScalerKind::MinMax => {
                    let (lo, hi) = col.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    });
                    (lo, hi - lo)
                }
                ScalerKind::ZScore => {
                    let (sum, sq) = col.fold((0.0, 0.0), |(s, q), v| (s + v, q + v * v));
                    let mean = sum / n as f64;
                    let var = (sq / n as f64 - mean * mean).max(0.0);
                    (mean, var.sqrt())
                }
            };
            // A constant feature would divide by zero; it maps to 0 instead (feature selection
            // normally drops such features before the scaler sees them).
            Some((o as f32, if s > 0.0 { s as f32 } else { 1.0 }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_maps_training_range_onto_unit_interval() {
        let rows = [1.0, 10.0, 3.0, 20.0, 2.0, 30.0];
        let s = Scaler::fit(ScalerKind::MinMax, &rows, 2).unwrap();
        let mut out = [0.0; 2];
        s.transform_row(&[1.0, 30.0], &mut out);
        assert_eq!(out, [0.0, 1.0]);
        s.transform_row(&[2.0, 15.0], &mut out);
        assert!((out[0] - 0.5).abs() < 1e-6 && (out[1] - 0.25).abs() < 1e-6);
        // Values outside the training range are not clipped: the network sees how far out they are.
        s.transform_row(&[5.0, 0.0], &mut out);
        assert!((out[0] - 2.0).abs() < 1e-6 && (out[1] + 0.5).abs() < 1e-6);
    }

    #[test]
    fn z_score_uses_population_moments() {
        let rows = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let s = Scaler::fit(ScalerKind::ZScore, &rows, 1).unwrap();
        assert!((s.offset[0] - 5.0).abs() < 1e-6);
        assert!((s.scale[0] - 2.0).abs() < 1e-6);
        let mut out = [0.0];
        s.transform_row(&[9.0], &mut out);
        assert!((out[0] - 2.0).abs() < 1e-6);
        let mut back = [0.0];
        s.inverse_row(&out, &mut back);
        assert!((back[0] - 9.0).abs() < 1e-5);
    }

    #[test]
    fn constant_feature_maps_to_zero_not_nan() {
        let s = Scaler::fit(ScalerKind::MinMax, &[3.0, 3.0, 3.0], 1).unwrap();
        let mut out = [1.0];
        s.transform_row(&[3.0], &mut out);
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn missing_values_are_left_out_of_the_fit() {
        let rows = [1.0, f32::NAN, 3.0, 2.0, f32::NAN, 4.0];
        let s = Scaler::fit(ScalerKind::MinMax, &rows, 2).unwrap();
        assert_eq!(
            (s.offset.clone(), s.scale.clone()),
            (vec![1.0, 2.0], vec![2.0, 2.0])
        );
        let z = Scaler::fit(ScalerKind::ZScore, &rows, 2).unwrap();
        assert_eq!((z.offset[0], z.scale[0]), (2.0, 1.0));
        assert!(Scaler::fit(ScalerKind::MinMax, &[f32::NAN, 1.0], 2).is_err());
    }

    #[test]
    fn rejects_ragged_input() {
        assert!(Scaler::fit(ScalerKind::MinMax, &[1.0, 2.0, 3.0], 2).is_err());
    }

    #[test]
    fn serde_names_are_kebab_case() {
        let s = Scaler::fit(ScalerKind::ZScore, &[1.0, 2.0], 1).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"z-score\""), "{json}");
        assert_eq!(serde_json::from_str::<Scaler>(&json).unwrap(), s);
    }
}
