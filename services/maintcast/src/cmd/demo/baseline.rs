//! The plain baseline the seed tried and found wanting: a ridge regression on the same scaled
//! windows, printed next to the LSTM so the demo shows what the network adds.

use anyhow::Context;

/// Ridge regression `y ~ w.x + b` by the normal equations (intercept not penalised): the plain
/// baseline the demo prints next to the LSTM.
pub(super) struct Ridge {
    w: Vec<f64>,
    b: f64,
}

impl Ridge {
    pub(super) fn fit(x: &[f32], y: &[f32], d: usize, lambda: f64) -> anyhow::Result<Ridge> {
        let n = y.len();
        anyhow::ensure!(
            n > 0 && x.len() == n * d,
            "no windows to fit ({n} labels, {} values)",
            x.len()
        );
        // Centre so the intercept drops out of the system.
        let mut mean = vec![0f64; d];
        for row in x.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let ymean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let mut a = vec![0f64; d * d];
        let mut rhs = vec![0f64; d];
        let mut c = vec![0f64; d];
        for (row, &yv) in x.chunks(d).zip(y) {
            for j in 0..d {
                c[j] = f64::from(row[j]) - mean[j];
            }
            let yc = f64::from(yv) - ymean;
            for i in 0..d {
                let ci = c[i];
                rhs[i] += ci * yc;
                let ai = &mut a[i * d..i * d + i + 1];
                for (aij, &cj) in ai.iter_mut().zip(&c[..=i]) {
                    *aij += ci * cj;
                }
            }
        }
        for i in 0..d {
            a[i * d + i] += lambda * n as f64;
        }
        let w = cholesky_solve(&mut a, &rhs, d)
            .context("the baseline's normal equations are singular")?;
        let b = ymean - w.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
        Ok(Ridge { w, b })
    }

    pub(super) fn predict(&self, x: &[f32]) -> f32 {
        (self.b
            + self
                .w
                .iter()
                .zip(x)
                .map(|(w, &v)| w * f64::from(v))
                .sum::<f64>()) as f32
    }
}

/// Solves `A w = rhs` for symmetric positive definite `A`, given its lower triangle (overwritten).
fn cholesky_solve(a: &mut [f64], rhs: &[f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        if diag <= 0.0 {
            return None;
        }
        let l = diag.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / l;
        }
    }
    let mut z = rhs.to_vec();
    for i in 0..d {
        for k in 0..i {
            z[i] -= a[i * d + k] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            z[i] -= a[k * d + i] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    Some(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_an_exact_linear_law() {
        // y = 2 x0 - 3 x1 + 0.5 x2 + 7 on points in general position.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..50 {
            let r = [
                (i as f32 * 0.37).sin(),
                (i as f32 * 0.11).cos(),
                (i % 7) as f32 / 7.0,
            ];
            x.extend(r);
            y.push(2.0 * r[0] - 3.0 * r[1] + 0.5 * r[2] + 7.0);
        }
        let m = Ridge::fit(&x, &y, 3, 0.0).unwrap();
        for (w, want) in m.w.iter().zip([2.0, -3.0, 0.5]) {
            assert!((w - want).abs() < 1e-4, "{:?}", m.w);
        }
        assert!((m.b - 7.0).abs() < 1e-4);
        assert!((m.predict(&[1.0, 1.0, 1.0]) - 6.5).abs() < 1e-3);
        // Collinear columns without a penalty have no unique solution.
        let flat = vec![1.0f32; 30];
        assert!(Ridge::fit(&flat, &[1.0; 10], 3, 0.0).is_err());
    }
}
