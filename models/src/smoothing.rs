//! Exponential smoothing of a window's rows, the recipe's `data.ema_alpha`. Applied inside the
//! model (training windows and `Forecaster::predict` alike), so the streaming path and offline
//! evaluation smooth the same way without the ingest service knowing about it.

/// `s_0 = x_0`, `s_t = alpha * x_t + (1 - alpha) * s_{t-1}`, per feature, over each window of
/// `window` rows of `nf` features in `x` (row-major `[n, window, nf]`), in place.
pub fn ema_windows(x: &mut [f32], window: usize, nf: usize, alpha: f32) {
    if alpha >= 1.0 || window == 0 || nf == 0 {
        return;
    }
    for w in x.chunks_mut(window * nf) {
        for t in 1..window {
            let (prev, cur) = w.split_at_mut(t * nf);
            let prev = &prev[(t - 1) * nf..];
            for (c, p) in cur[..nf].iter_mut().zip(prev) {
                *c = alpha * *c + (1.0 - alpha) * p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_each_window_from_its_first_row() {
        // two windows of 3 rows x 1 feature
        let mut x = [0.0, 10.0, 10.0, 4.0, 4.0, 0.0];
        ema_windows(&mut x, 3, 1, 0.5);
        assert_eq!(x, [0.0, 5.0, 7.5, 4.0, 4.0, 2.0]);
        let mut y = [1.0, 2.0];
        ema_windows(&mut y, 2, 1, 1.0);
        assert_eq!(y, [1.0, 2.0]);
    }
}
