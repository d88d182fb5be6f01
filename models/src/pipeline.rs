//! One training job from a history to a staged model, and the evaluation of a model on data.
//! The `maintcast train` / `eval` commands, the trainer service and the sweep all go through here.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use serde::Serialize;

use crate::artifact::{self, ModelCard, TargetSpec};
use crate::config::Config;
use crate::dataset::{self, WindowSpec, Windows};
use crate::error::{ModelError, Result};
use crate::forecaster::Forecaster;
use crate::history::{Cmapss, History, MachineHistory};
use crate::metrics::{self, IntervalSpec};
use crate::network::ArchConfig;
use crate::scaler::Scaler;
use crate::train::{self, EpochReport};

/// A trained model, not yet on disk.
pub struct Trained {
    pub card: ModelCard,
    pub members: Vec<VarMap>,
    /// Validation windows with the ensemble's forecasts, for callers that compare models.
    pub val: Windows,
    pub val_pred: Vec<f32>,
}

impl Trained {
    /// Writes `model.safetensors` and `model.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<ModelCard> {
        let refs: Vec<&VarMap> = self.members.iter().collect();
        artifact::save(dir, self.card.clone(), &refs)
    }
}

/// Which sensors the model uses: configured candidates minus exclusions minus sensors constant on
/// the training machines.
fn choose_features(
    cfg: &Config,
    history: &History,
    train: &[&MachineHistory],
) -> Result<Vec<String>> {
    let candidates: Vec<String> = cfg
        .data
        .include
        .clone()
        .unwrap_or_else(|| history.common_sensors())
        .into_iter()
        .filter(|s| !cfg.data.exclude.contains(s))
        .collect();
    let features = dataset::varying_features(train, &candidates, cfg.data.constant_tolerance)?;
    if features.is_empty() {
        return Err(ModelError::Data(format!(
            "no usable sensors: every candidate of {candidates:?} is excluded or constant"
        )));
    }
    Ok(features)
}

/// Trains on `history` as `cfg` says. `on_epoch(member, report)` sees every epoch of every member.
pub fn train_model(
    history: &History,
    cfg: &Config,
    device: &Device,
    on_epoch: &mut dyn FnMut(usize, &EpochReport),
) -> Result<Trained> {
    cfg.validate()?;
    let d = &cfg.data;
    let (tr_idx, va_idx) =
        dataset::split_machines(history.machines.len(), d.val_fraction, cfg.train.seed);
    let train_m: Vec<&MachineHistory> = tr_idx.iter().map(|&i| &history.machines[i]).collect();
    let val_m: Vec<&MachineHistory> = va_idx.iter().map(|&i| &history.machines[i]).collect();
    let features = choose_features(cfg, history, &train_m)?;
    let n_features = features.len();
    let rows = dataset::training_rows(&train_m, &features)?;
    if rows.is_empty() {
        return Err(ModelError::Data(
            "the training machines have no labelled rows (no maintenance events?)".into(),
        ));
    }
    let scaler = Scaler::fit(d.scaler, &rows, features.len())?;
    let spec = WindowSpec {
        window: d.window,
        step: d.step,
        min_rows: d.min_rows(),
    };
    let train_w = dataset::training_windows(&train_m, &features, &scaler, spec, d.cap)?;
    // Validation looks at every window (step 1) so its figures do not depend on `step`.
    let val_w = dataset::training_windows(
        &val_m,
        &features,
        &scaler,
        WindowSpec { step: 1, ..spec },
        d.cap,
    )?;
    tracing::info!(
        "{} training machines ({} windows), {} validation machines ({} windows), {} features: {:?}",
        train_m.len(),
        train_w.len(),
        val_m.len(),
        val_w.len(),
        features.len(),
        features
    );
    let arch = ArchConfig {
        n_features: features.len(),
        hidden: cfg.model.hidden.clone(),
        dropout: cfg.model.dropout,
    };
    let mut members = Vec::with_capacity(cfg.train.ensemble);
    let mut val_sum = vec![0.0f32; val_w.len()];
    let mut member_reports = Vec::new();
    for k in 0..cfg.train.ensemble {
        let seed = cfg.train.seed + k as u64;
        let fitted = train::fit(
            &arch,
            &train_w,
            &val_w,
            &cfg.train,
            seed,
            device,
            &mut |r| on_epoch(k, r),
        )?;
        if !val_w.is_empty() {
            for (s, p) in val_sum
                .iter_mut()
                .zip(train::predict_all(&fitted.network, &val_w)?)
            {
                *s += p;
            }
        }
        member_reports.push(serde_json::json!({
            "seed": seed, "epochs": fitted.epochs.len(), "best_epoch": fitted.best_epoch,
            "train_s": fitted.train_s,
            "best_val_loss": fitted.epochs[fitted.best_epoch - 1].val_loss,
        }));
        members.push(fitted.varmap);
    }
    let k = members.len() as f32;
    let val_pred: Vec<f32> = val_sum.iter().map(|s| (s / k).max(0.0)).collect();
    let interval = IntervalSpec::calibrate(&val_pred, &val_w.y, 0.1, 0.9);
    let (lo, hi): (Vec<f32>, Vec<f32>) = val_pred.iter().map(|&p| interval.bounds(p)).unzip();
    let (first, last) = history.time_range().unwrap_or((0, 0));
    let id = |ms: &[&MachineHistory]| -> Vec<String> {
        ms.iter().map(|m| m.machine_id.clone()).collect()
    };
    let card = ModelCard {
        name: String::new(),
        version: String::new(),
        features,
        window: d.window,
        min_rows: d.min_rows(),
        target: TargetSpec {
            name: "days_to_maintenance".into(),
            cap: d.cap,
        },
        scaler,
        arch,
        interval,
        members: members.len(),
        inference_precision: Default::default(),
        training: serde_json::json!({ "config": cfg, "members": member_reports,
                                      "device": format!("{device:?}") }),
        data: serde_json::json!({
            "first_ts_ms": first, "last_ts_ms": last, "rows": history.n_rows(),
            "train_machines": id(&train_m), "val_machines": id(&val_m),
            "train_windows": train_w.len(), "val_windows": val_w.len(),
        }),
        metrics: serde_json::json!({ "val": {
            "mae": metrics::mae(&val_pred, &val_w.y),
            "rmse": metrics::rmse(&val_pred, &val_w.y),
            "coverage_p10_p90": metrics::coverage(&lo, &hi, &val_w.y),
            "n": val_w.len(),
        }}),
        weights_sha256: String::new(),
        parent_version: None,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        feature_stats: crate::artifact::FeatureStats::of_rows(&rows, n_features),
    };
    Ok(Trained {
        card,
        members,
        val: val_w,
        val_pred,
    })
}

/// Accuracy of a model on some data, as `maintcast eval` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub rmse: f64,
    pub mae: f64,
    /// PHM08 score (a sum over examples).
    pub score: f64,
    pub n: usize,
    pub coverage_p10_p90: f64,
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
    Ok(EvalReport {
        rmse: metrics::rmse(&pred, truth),
        mae: metrics::mae(&pred, truth),
        score: metrics::phm08_score(&pred, truth),
        n,
        coverage_p10_p90: metrics::coverage(&lo, &hi, truth),
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

/// Every labelled window (step 1) of every machine in `history`.
pub fn evaluate_history(f: &Forecaster, history: &History) -> Result<EvalReport> {
    let card = f.card();
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
