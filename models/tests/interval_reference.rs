//! The interval metrics, the binned conformal calibration and the window smoothing against NumPy:
//! values from `reference/gen_intervals.py` (in `reference/intervals.json`).

use maintcast_models::metrics::{self, IntervalSpec};
use maintcast_models::smoothing;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cal_pred: Vec<f32>,
    cal_truth: Vec<f32>,
    lower_offset: f32,
    upper_offset: f32,
    bins: Vec<Bin>,
    test_pred: Vec<f32>,
    test_truth: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    cap: f32,
    overall: Stats,
    thirds: Vec<Third>,
    ema: Ema,
}

#[derive(Deserialize)]
struct Bin {
    upto: Option<f32>,
    lower_offset: f32,
    upper_offset: f32,
    n: usize,
}

#[derive(Deserialize)]
struct Stats {
    n: usize,
    coverage: f64,
    mean_width: f64,
}

#[derive(Deserialize)]
struct Third {
    from: f64,
    to: f64,
    rmse: f64,
    #[serde(flatten)]
    stats: Stats,
}

#[derive(Deserialize)]
struct Ema {
    window: usize,
    nf: usize,
    alpha: f32,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("reference/intervals.json")).unwrap()
}

#[test]
fn binned_conformal_offsets_match_numpy() {
    let r = reference();
    let s = IntervalSpec::calibrate_binned(&r.cal_pred, &r.cal_truth, 0.1, 0.9, 3);
    assert_eq!(
        (s.lower_offset, s.upper_offset),
        (r.lower_offset, r.upper_offset)
    );
    assert_eq!(s.n_calibration, r.cal_pred.len());
    assert_eq!(s.bins.len(), r.bins.len());
    for (got, want) in s.bins.iter().zip(&r.bins) {
        assert_eq!(
            (got.upto, got.lower_offset, got.upper_offset, got.n),
            (want.upto, want.lower_offset, want.upper_offset, want.n)
        );
    }
    // one bin = the plain split-conformal interval
    let one = IntervalSpec::calibrate_binned(&r.cal_pred, &r.cal_truth, 0.1, 0.9, 1);
    assert!(one.bins.is_empty());
    assert_eq!(
        (one.lower_offset, one.upper_offset),
        (r.lower_offset, r.upper_offset)
    );
}

#[test]
fn interval_bounds_coverage_and_width_match_numpy() {
    let r = reference();
    let s = IntervalSpec::calibrate_binned(&r.cal_pred, &r.cal_truth, 0.1, 0.9, 3);
    let (lo, hi): (Vec<f32>, Vec<f32>) = r.test_pred.iter().map(|&p| s.bounds(p)).unzip();
    assert_eq!(lo, r.lo);
    assert_eq!(hi, r.hi);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(r.test_truth.len(), r.overall.n);
    assert!(close(
        metrics::coverage(&lo, &hi, &r.test_truth),
        r.overall.coverage
    ));
    assert!(close(metrics::mean_width(&lo, &hi), r.overall.mean_width));
    let thirds = metrics::interval_by_third(&r.test_pred, &lo, &hi, &r.test_truth, r.cap);
    assert_eq!(thirds.len(), 3);
    for (got, want) in thirds.iter().zip(&r.thirds) {
        assert!((got.from as f64 - want.from).abs() < 1e-4);
        assert!((got.to as f64 - want.to).abs() < 1e-4);
        assert_eq!(got.stats.n, want.stats.n);
        assert!(close(got.rmse, want.rmse), "{got:?}");
        assert!(close(got.stats.coverage, want.stats.coverage), "{got:?}");
        assert!(
            close(got.stats.mean_width, want.stats.mean_width),
            "{got:?}"
        );
    }
}

#[test]
fn window_smoothing_matches_numpy() {
    let e = reference().ema;
    let mut x = e.x.clone();
    smoothing::ema_windows(&mut x, e.window, e.nf, e.alpha);
    for (g, w) in x.iter().zip(&e.y) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}
