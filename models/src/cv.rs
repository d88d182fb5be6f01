//! Engine-level cross-validation: the recipe is trained K times, each time with one fold of whole
//! machines held out, and scored on that fold with the test protocol replayed
//! (`evaluate_truncated`). One test set of 100 units judges a recipe by a single draw; K folds show
//! how much a figure moves with the machines it is measured on, which is what choosing a recipe
//! honestly needs.

use candle_core::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::evaluate::{CutRule, EvalReport, evaluate_truncated};
use crate::forecaster::Forecaster;
use crate::history::{History, MachineHistory};
use crate::metrics::RangeStats;
use crate::pipeline;
use crate::train::EpochReport;

/// One fold's result.
#[derive(Clone, Debug, Serialize)]
pub struct FoldReport {
    pub fold: usize,
    pub held_out: Vec<String>,
    pub train_s: f64,
    pub report: EvalReport,
}

/// Mean, sample standard deviation, least and greatest of one figure across folds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// The figures across folds.
#[derive(Clone, Debug, Serialize)]
pub struct CvSummary {
    pub folds: usize,
    pub rmse: Spread,
    pub mae: Spread,
    /// PHM08 score per example (folds differ in size, so the sum would not compare).
    pub score_per_example: Spread,
    pub coverage_p10_p90: Spread,
    pub interval_width: Spread,
    /// Coverage per third of the true value's range, near failure first: the interval's
    /// conditional calibration, which the overall figure can hide.
    pub coverage_by_third: Vec<Spread>,
    /// RMSE per third of the true value's range, near failure first: where the point error is.
    pub rmse_by_third: Vec<Spread>,
}

impl CvSummary {
    pub fn of(folds: &[FoldReport]) -> CvSummary {
        let pick = |f: fn(&EvalReport) -> f64| -> Spread {
            Spread::of(&folds.iter().map(|r| f(&r.report)).collect::<Vec<_>>())
        };
        let thirds = folds
            .first()
            .map_or(0, |r| r.report.interval_by_third.len());
        CvSummary {
            folds: folds.len(),
            rmse: pick(|r| r.rmse),
            mae: pick(|r| r.mae),
            score_per_example: pick(|r| r.score / r.n as f64),
            coverage_p10_p90: pick(|r| r.coverage_p10_p90),
            interval_width: pick(|r| r.interval_width),
            coverage_by_third: by_third(folds, thirds, |s| s.stats.coverage),
            rmse_by_third: by_third(folds, thirds, |s| s.rmse),
        }
    }
}

/// One figure per third across folds; a fold with no truth in a third does not count there.
fn by_third(folds: &[FoldReport], thirds: usize, f: fn(&RangeStats) -> f64) -> Vec<Spread> {
    (0..thirds)
        .map(|t| {
            Spread::of(
                &(folds.iter())
                    .filter_map(|r| r.report.interval_by_third.get(t))
                    .filter(|s| s.stats.n > 0)
                    .map(f)
                    .collect::<Vec<_>>(),
            )
        })
        .collect()
}

/// Machine indices `0..n` shuffled by `seed` and dealt into `k` folds whose sizes differ by at
/// most one.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut out = vec![Vec::new(); k];
    for (i, m) in idx.into_iter().enumerate() {
        out[i % k].push(m);
    }
    for f in &mut out {
        f.sort_unstable();
    }
    out
}

/// Settings of a cross-validation run besides the recipe.
#[derive(Clone, Copy, Debug)]
pub struct CvSettings {
    pub folds: usize,
    pub fold_seed: u64,
    /// Cuts per held-out machine, and their seed (`evaluate_truncated`).
    pub cuts: usize,
    pub cut_seed: u64,
    pub cut_rule: CutRule,
}

/// Trains `cfg` once per fold on the other folds' machines and scores the fold. `on_epoch(fold,
/// member, report)` follows training; `on_fold` gets each fold's result as it is done.
pub fn cross_validate(
    history: &History,
    cfg: &Config,
    s: CvSettings,
    device: &Device,
    on_epoch: &mut dyn FnMut(usize, usize, &EpochReport),
    on_fold: &mut dyn FnMut(&FoldReport),
) -> Result<Vec<FoldReport>> {
    let n = history.machines.len();
    if s.folds < 2 || s.folds > n {
        return Err(ModelError::Config(format!(
            "--folds must be between 2 and the {n} machines, got {}",
            s.folds
        )));
    }
    let mut out = Vec::with_capacity(s.folds);
    for (f, held) in folds(n, s.folds, s.fold_seed).iter().enumerate() {
        let train = History {
            machines: (history.machines.iter().enumerate())
                .filter(|(i, _)| held.binary_search(i).is_err())
                .map(|(_, m)| m.clone())
                .collect(),
        };
        let started = std::time::Instant::now();
        let trained = pipeline::train_model(&train, cfg, device, &mut |k, r| on_epoch(f, k, r))?;
        let train_s = started.elapsed().as_secs_f64();
        let dir = tempfile::tempdir().map_err(|e| ModelError::Data(format!("tempdir: {e}")))?;
        trained.save(dir.path())?;
        let forecaster = Forecaster::load(dir.path(), device)?;
        let machines: Vec<&MachineHistory> = held.iter().map(|&i| &history.machines[i]).collect();
        let report = evaluate_truncated(&forecaster, &machines, s.cuts, s.cut_seed, s.cut_rule)?;
        let fold = FoldReport {
            fold: f + 1,
            held_out: machines.iter().map(|m| m.machine_id.clone()).collect(),
            train_s,
            report,
        };
        on_fold(&fold);
        out.push(fold);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_machines_evenly() {
        let f = folds(23, 5, 1);
        assert_eq!(f.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 4, 4]);
        let mut all: Vec<usize> = f.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert_eq!(f, folds(23, 5, 1));
        assert_ne!(f, folds(23, 5, 2));
    }

    fn fold(coverage_by_third: [(usize, f64); 3]) -> FoldReport {
        let third = |k: usize| crate::metrics::RangeStats {
            from: k as f32,
            to: k as f32 + 1.0,
            rmse: coverage_by_third[k].1 * 10.0,
            stats: crate::metrics::IntervalStats {
                n: coverage_by_third[k].0,
                coverage: coverage_by_third[k].1,
                mean_width: 1.0,
            },
        };
        FoldReport {
            fold: 1,
            held_out: Vec::new(),
            train_s: 0.0,
            report: EvalReport {
                rmse: 1.0,
                mae: 1.0,
                score: 1.0,
                n: 1,
                coverage_p10_p90: 0.8,
                interval_width: 1.0,
                interval_by_third: (0..3).map(third).collect(),
                target: crate::artifact::TargetSpec {
                    name: "days".into(),
                    cap: 3.0,
                    ends_on: Vec::new(),
                },
            },
        }
    }

    #[test]
    fn coverage_per_third_spreads_over_the_folds_that_have_truths_there() {
        let s = CvSummary::of(&[
            fold([(5, 0.6), (5, 0.7), (5, 0.9)]),
            fold([(5, 0.8), (0, f64::NAN), (5, 0.7)]),
        ]);
        let mean: Vec<f64> = s.coverage_by_third.iter().map(|s| s.mean).collect();
        assert!((mean[0] - 0.7).abs() < 1e-12 && (mean[2] - 0.8).abs() < 1e-12);
        // The second fold had no truth in the middle third: it does not count as NaN.
        assert_eq!((mean[1], s.coverage_by_third[1].std), (0.7, 0.0));
        let rmse: Vec<f64> = s.rmse_by_third.iter().map(|s| s.mean).collect();
        assert!((rmse[0] - 7.0).abs() < 1e-9 && (rmse[1] - 7.0).abs() < 1e-9);
    }

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        // numpy: np.std([12.0, 13.0, 14.5, 11.5], ddof=1) = 1.3228756555322954
        let s = Spread::of(&[12.0, 13.0, 14.5, 11.5]);
        assert!((s.mean - 12.75).abs() < 1e-12);
        assert!((s.std - 1.322_875_655_532_295_4).abs() < 1e-12);
        assert_eq!((s.min, s.max), (11.5, 14.5));
        assert_eq!(Spread::of(&[3.0]).std, 0.0);
    }
}
