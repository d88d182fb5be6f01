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
        interval_by_third: metrics::interval_by_third(&lo, &hi, truth, target.cap),
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

/// The C-MAPSS test protocol replayed on machines whose histories run to an event (held-out
/// training units): each machine is cut after `cuts` row counts drawn uniformly from `min_rows` up
/// to its first labelled segment's length, and scored on the last (left-padded) window of the
/// rows kept, truth = that row's label. Validation figures over all windows are dominated by
/// early-life windows at the cap; the test set is not, and this is what resembles it.
pub fn evaluate_truncated(
    f: &Forecaster,
    machines: &[&MachineHistory],
    cuts: usize,
    seed: u64,
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
        let n = m.sensors.len();
        for _ in 0..cuts {
            let end = a + rng.random_range(card.min_rows..=b - a);
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
            truth.push(label[end - 1].expect("rows of a labelled segment are labelled"));
        }
    }
    report(f, &x, &truth)
}
