//! How good a model is on some data: the C-MAPSS test protocol, every labelled window of a history,
//! and the C-MAPSS protocol replayed on held-out run-to-failure machines (validation that looks
//! like the test).

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::artifact::TargetSpec;
use crate::dataset::{self, WindowSpec};
use crate::error::{ModelError, Result};
use crate::forecaster::Forecaster;
use crate::history::{Cmapss, History, MachineHistory};
use crate::labels;
use crate::metrics::{self, RangeStats};

/// Accuracy of a model on some data, as `maintcast eval` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub rmse: f64,
    pub mae: f64,
    /// PHM08 score (a sum over examples).
    pub score: f64,
    pub n: usize,
    pub coverage_p10_p90: f64,
    /// Mean width of the p10-p90 interval, days.
    pub interval_width: f64,
    /// Coverage and width per third of the true value's range `[0, cap]`: near failure first.
    pub interval_by_third: Vec<RangeStats>,
    /// What the label means (the label policy), from the model card.
    pub target: TargetSpec,
}

fn report(f: &Forecaster, x: &[f32], truth: &[f32]) -> Result<EvalReport> {
    let n = truth.len();
    if n == 0 {
        return Err(ModelError::Data("nothing to evaluate: no windows".into()));
    }
    let per = f.window() * f.features().len();
    let mut fc = Vec::with_capacity(n);
    for chunk in x.chunks(1024 * per) {
        fc.extend(f.predict(chunk, chunk.len() / per)?);
    }
    let pred: Vec<f32> = fc.iter().map(|c| c.days).collect();
    let lo: Vec<f32> = fc.iter().map(|c| c.p10).collect();
    let hi: Vec<f32> = fc.iter().map(|c| c.p90).collect();
    let target = f.card().target.clone();
    Ok(EvalReport {
        rmse: metrics::rmse(&pred, truth),
        mae: metrics::mae(&pred, truth),
        score: metrics::phm08_score(&pred, truth),
        n,
        coverage_p10_p90: metrics::coverage(&lo, &hi, truth),
        interval_width: metrics::mean_width(&lo, &hi),
        interval_by_third: metrics::interval_by_third(&pred, &lo, &hi, truth, target.cap),
        target,
    })
}

/// The C-MAPSS protocol: the last window of each test unit (left-padded when shorter), truth = the
/// unit's RUL after its last row, capped like the training target.
pub fn evaluate_cmapss(f: &Forecaster, data: &Cmapss) -> Result<EvalReport> {
    let card = f.card();
    let mut x = Vec::new();
    let mut truth = Vec::new();
    for (m, &rul) in data.test.machines.iter().zip(&data.test_rul) {
        let w = dataset::last_window(m, &card.features, &card.scaler, card.window, 1)?
            .ok_or_else(|| ModelError::Data(format!("test unit {} has no rows", m.machine_id)))?;
        x.extend(w);
        truth.push(rul.min(card.target.cap));
    }
    report(f, &x, &truth)
}

/// Every labelled window (step 1) of every machine in `history`, labelled by the model's own label
/// policy.
pub fn evaluate_history(f: &Forecaster, history: &History) -> Result<EvalReport> {
    let card = f.card();
    let history = labels::apply(history, &card.target.ends_on)?;
    let machines: Vec<&MachineHistory> = history.machines.iter().collect();
    let spec = WindowSpec {
        window: card.window,
        step: 1,
        min_rows: card.min_rows,
    };
    let w = dataset::training_windows(
        &machines,
        &card.features,
        &card.scaler,
        spec,
        card.target.cap,
    )?;
    report(f, &w.x, &w.y)
}

/// Where `evaluate_truncated` cuts a held-out machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutRule {
    /// The number of rows kept is uniform from `min_rows` to the machine's length. A long-lived
    /// machine is then mostly cut while still healthy, so much of the truth sits at the cap,
    /// where a forecast saturated at the cap is right for free.
    #[default]
    Length,
    /// The true remaining life after the cut is uniform from 0 to the cap (as far as `min_rows`
    /// allows), so every part of the range the forecast covers weighs the same: errors far from
    /// and near failure count alike, whatever the machines' lifetimes.
    Rul,
}

impl CutRule {
    /// The number of rows to keep of a labelled segment whose labels (remaining life after each
    /// row, capped, falling) are `label`, at least `min_rows` of them.
    fn draw(self, rng: &mut StdRng, label: &[f32], min_rows: usize) -> usize {
        let len = label.len();
        match self {
            CutRule::Length => rng.random_range(min_rows..=len),
            CutRule::Rul => {
                // Labels count days, not rows, so the row is found by its label: the first one
                // (of those with at least min_rows kept) whose remaining life is at or below the
                // drawn one.
                let (hi, lo) = (label[min_rows - 1], label[len - 1]);
                let r = if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                };
                min_rows + label[min_rows - 1..].partition_point(|&l| l > r)
            }
        }
    }
}

/// The C-MAPSS test protocol replayed on machines whose histories run to an event (held-out
/// training units): each machine is cut after `cuts` row counts drawn by `rule`, from `min_rows`
/// up to its first labelled segment's length, and scored on the last (left-padded) window of the
/// rows kept, truth = that row's label. Validation figures over all windows are dominated by
/// early-life windows at the cap; the test set is not, and this is what resembles it.
pub fn evaluate_truncated(
    f: &Forecaster,
    machines: &[&MachineHistory],
    cuts: usize,
    seed: u64,
    rule: CutRule,
) -> Result<EvalReport> {
    let card = f.card();
    let owned = History {
        machines: machines.iter().map(|&m| m.clone()).collect(),
    };
    let history = labels::apply(&owned, &card.target.ends_on)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Vec::new();
    let mut truth = Vec::new();
    for m in &history.machines {
        let Some(&(a, b)) = dataset::labelled_segments(m).first() else {
            continue;
        };
        if b - a < card.min_rows {
            continue;
        }
        let label = dataset::labels(m, card.target.cap);
        let segment: Vec<f32> = label[a..b]
            .iter()
            .map(|l| l.expect("rows of a labelled segment are labelled"))
            .collect();
        let n = m.sensors.len();
        for _ in 0..cuts {
            let end = a + rule.draw(&mut rng, &segment, card.min_rows);
            let cut = MachineHistory {
                machine_id: m.machine_id.clone(),
                ts: m.ts[a..end].to_vec(),
                sensors: m.sensors.clone(),
                values: m.values[a * n..end * n].to_vec(),
                ..Default::default()
            };
            let w = dataset::last_window(&cut, &card.features, &card.scaler, card.window, 1)?
                .expect("a cut keeps at least min_rows rows");
            x.extend(w);
            truth.push(segment[end - a - 1]);
        }
    }
    report(f, &x, &truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels of a machine of `rows` rows, `per_day` rows a day, failing after the last row,
    /// capped at `cap`.
    fn life(rows: usize, per_day: usize, cap: f32) -> Vec<f32> {
        (0..rows)
            .map(|i| (((rows - i) as f32) / per_day as f32).min(cap))
            .collect()
    }

    /// Share of the truths of 4,000 cuts in each third of [0, cap], and at the cap.
    fn spread(rule: CutRule, label: &[f32], min_rows: usize, cap: f32) -> ([f64; 3], f64) {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut thirds, mut at_cap) = ([0.0; 3], 0.0);
        let n = 4000;
        for _ in 0..n {
            let kept = rule.draw(&mut rng, label, min_rows);
            assert!((min_rows..=label.len()).contains(&kept), "{kept}");
            let t = label[kept - 1];
            thirds[((3.0 * t / cap) as usize).min(2)] += 1.0 / n as f64;
            at_cap += f64::from(u8::from(t >= cap)) / n as f64;
        }
        (thirds, at_cap)
    }

    #[test]
    fn rul_cuts_weigh_every_third_of_the_range_alike() {
        let cap = 125.0;
        // A long life, one row a day and four rows a day: by length most cuts land at the cap.
        for label in [life(360, 1, cap), life(4 * 360, 4, cap)] {
            let (thirds, at_cap) = spread(CutRule::Rul, &label, 30, cap);
            for share in thirds {
                assert!((0.28..0.39).contains(&share), "{thirds:?}");
            }
            assert!(at_cap < 0.01, "{at_cap}");
            let (_, at_cap) = spread(CutRule::Length, &label, 30, cap);
            assert!(at_cap > 0.5, "{at_cap}");
        }
    }

    #[test]
    fn rul_cuts_of_a_short_life_keep_min_rows() {
        // 40 rows, min_rows 30: only the last 11 row counts are possible.
        let label = life(40, 1, 125.0);
        let (thirds, _) = spread(CutRule::Rul, &label, 30, 125.0);
        assert!((thirds[0] - 1.0).abs() < 1e-9, "{thirds:?}");
    }
}
