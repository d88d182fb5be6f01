//! One training job from a history to a staged model, and the evaluation of a model on data.
//! The `maintcast train` / `eval` commands, the trainer service and the sweep all go through here;
//! the evaluation itself lives in `evaluate.rs`.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;

use crate::artifact::{self, ModelCard, TargetSpec};
use crate::config::{Config, MemberSplits};
use crate::dataset::{self, WindowSpec, Windows};
use crate::error::{ModelError, Result};
pub use crate::evaluate::{EvalReport, evaluate_cmapss, evaluate_history, evaluate_truncated};
use crate::history::{History, MachineHistory};
use crate::labels;
use crate::metrics::{self, IntervalSpec};
use crate::network::ArchConfig;
use crate::regimes::Regimes;
use crate::scaler::Scaler;
use crate::smoothing;
use crate::splits;
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
    let mut candidates: Vec<String> = cfg
        .data
        .include
        .clone()
        .unwrap_or_else(|| history.common_sensors())
        .into_iter()
        .filter(|s| !cfg.data.exclude.contains(s))
        .collect();
    // Settings are read wherever they are listed, even outside `include`.
    for c in &cfg.data.regime_columns {
        if !candidates.contains(c) {
            candidates.push(c.clone());
        }
    }
    let features = dataset::varying_features(train, &candidates, cfg.data.constant_tolerance)?;
    if features.is_empty() {
        return Err(ModelError::Data(format!(
            "no usable sensors: every candidate of {candidates:?} is excluded or constant"
        )));
    }
    Ok(features)
}

/// Labelled windows of `machines` with the recipe's smoothing applied.
fn windows_of(
    machines: &[&MachineHistory],
    features: &[String],
    scaler: &Scaler,
    spec: WindowSpec,
    cfg: &Config,
) -> Result<Windows> {
    let mut w = dataset::training_windows(machines, features, scaler, spec, cfg.data.cap)?;
    smoothing::ema_windows(&mut w.x, w.window, w.n_features, cfg.data.ema_alpha);
    Ok(w)
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
    let history = labels::apply(history, &d.ends_on)?;
    let pick = |idx: &[usize]| -> Vec<&MachineHistory> {
        idx.iter().map(|&i| &history.machines[i]).collect()
    };
    let sp = splits::splits(history.machines.len(), cfg)?;
    // Features and scaler come from every machine some member trains on, never from the shared
    // calibration machines. With folds every machine is some member's training machine; what
    // the scaler learns from the others is label-free.
    let mut fit_idx: Vec<usize> = sp.members.iter().flat_map(|m| m.train.clone()).collect();
    fit_idx.sort_unstable();
    fit_idx.dedup();
    let fit_m = pick(&fit_idx);
    let features = choose_features(cfg, &history, &fit_m)?;
    let n_features = features.len();
    let rows = dataset::training_rows(&fit_m, &features)?;
    if rows.is_empty() {
        return Err(ModelError::Data(
            "the training machines have no labelled rows (no maintenance events?)".into(),
        ));
    }
    let mut scaler = Scaler::fit(d.scaler, &rows, features.len())?;
    let settings: Vec<usize> = (features.iter().enumerate())
        .filter(|(_, f)| d.regime_columns.contains(f))
        .map(|(i, _)| i)
        .collect();
    scaler.regimes = Regimes::detect(&scaler, &rows, &settings);
    match &scaler.regimes {
        Some(g) if g.centres.len() > 1 => tracing::info!(
            "{} operating regimes in {:?}, each sensor scaled per regime; centres {:?}",
            g.centres.len(),
            d.regime_columns,
            g.centres
        ),
        Some(_) => tracing::info!(
            "the settings {:?} form one operating regime: sensors scaled fleet-wide",
            d.regime_columns
        ),
        None => {}
    }
    let spec = WindowSpec {
        window: d.window,
        step: d.step,
        min_rows: d.min_rows(),
    };
    // Validation and calibration look at every window (step 1) so their figures do not depend on
    // `step`.
    let every = WindowSpec { step: 1, ..spec };
    let shared_cal_w = windows_of(&pick(&sp.shared_cal), &features, &scaler, every, cfg)?;
    let arch = ArchConfig {
        n_features: features.len(),
        hidden: cfg.model.hidden.clone(),
        dropout: cfg.model.dropout,
        pooling: cfg.model.pooling,
    };
    let mut members = Vec::with_capacity(cfg.train.ensemble);
    let mut member_reports = Vec::new();
    let mut networks = Vec::new();
    let mut first_val = None;
    // With folds, each member's residuals on its own calibration half (out-of-fold).
    let mut oof = (Vec::new(), Vec::new());
    let mut built: Option<(Windows, Windows)> = None;
    let member_windows: Vec<usize> = (0..sp.members.len())
        .map(|k| cfg.model.member_window(k, d.window))
        .collect();
    for (k, m) in sp.members.iter().enumerate() {
        let rows = member_windows[k];
        let seed = cfg.train.seed + k as u64;
        let (tr_idx, va_idx) = (&m.train, &m.val);
        if k == 0 || cfg.train.member_splits != MemberSplits::Shared {
            let train_w = windows_of(&pick(tr_idx), &features, &scaler, spec, cfg)?;
            let val_w = windows_of(&pick(va_idx), &features, &scaler, every, cfg)?;
            tracing::info!(
                "member {}: {} training machines ({} windows), {} validation machines ({} \
                 windows), {} calibration machines, {} features: {:?}",
                k + 1,
                tr_idx.len(),
                train_w.len(),
                va_idx.len(),
                val_w.len(),
                if m.cal.is_empty() {
                    sp.shared_cal.len()
                } else {
                    m.cal.len()
                },
                features.len(),
                features
            );
            built = Some((train_w, val_w));
        }
        let (train_w, val_w) = built.as_ref().expect("built for member 0");
        // A member that reads fewer rows trains on the windows' newest rows; with min_rows at or
        // below its rows those are the windows it would have had with that window length.
        let (train_w, val_w) = (train_w.tail(rows), val_w.tail(rows));
        let fitted = train::fit(
            &arch,
            &train_w,
            &val_w,
            &cfg.train,
            seed,
            device,
            &mut |r| on_epoch(k, r),
        )?;
        let best = &fitted.epochs[fitted.best_epoch - 1];
        member_reports.push(serde_json::json!({
            "seed": seed, "epochs": fitted.epochs.len(), "best_epoch": fitted.best_epoch,
            "train_s": fitted.train_s, "best_val_loss": best.val_loss,
            "val_rmse": best.val_rmse, "val_mae": best.val_mae,
            "val_machines": pick(va_idx).iter().map(|m| m.machine_id.clone()).collect::<Vec<_>>(),
        }));
        if first_val.is_none() {
            first_val = Some(built.as_ref().expect("built for member 0").1.clone());
        }
        if !m.cal.is_empty() {
            let w = windows_of(&pick(&m.cal), &features, &scaler, every, cfg)?;
            let pred = train::predict_all(&fitted.network, &w.tail(rows))?;
            oof.0.extend(pred.into_iter().map(|p| p.max(0.0)));
            oof.1.extend(w.y);
        }
        members.push(fitted.varmap);
        networks.push(fitted.network);
    }
    let ensemble = |w: &Windows| -> Result<Vec<f32>> {
        let mut sum = vec![0.0f32; w.len()];
        if !w.is_empty() {
            for (n, &rows) in networks.iter().zip(&member_windows) {
                for (s, p) in sum.iter_mut().zip(train::predict_all(n, &w.tail(rows))?) {
                    *s += p;
                }
            }
        }
        let k = networks.len() as f32;
        Ok(sum.iter().map(|s| (s / k).max(0.0)).collect())
    };
    // Member 0's validation machines: with shared splits, every member's.
    let val_w = first_val.unwrap_or_default();
    let val_pred = ensemble(&val_w)?;
    let shared_cal_pred = ensemble(&shared_cal_w)?;
    let in_sample = oof.0.is_empty() && shared_cal_w.is_empty();
    let (calib_from, cp, cy) = if !oof.0.is_empty() {
        // A member's residuals run wider than the ensemble's, so the interval errs wide.
        (
            "each member's own calibration machines (folds: out of sample for the member that \
             forecasts them)",
            &oof.0,
            &oof.1,
        )
    } else if !shared_cal_w.is_empty() {
        (
            "calibration machines (held out from training and early stopping)",
            &shared_cal_pred,
            &shared_cal_w.y,
        )
    } else {
        (
            "validation machines (in-sample: early stopping saw them)",
            &val_pred,
            &val_w.y,
        )
    };
    let interval = IntervalSpec::calibrate_binned(cp, cy, 0.1, 0.9, d.interval_bins);
    let scores = |pred: &[f32], y: &[f32]| {
        let (lo, hi): (Vec<f32>, Vec<f32>) = pred.iter().map(|&p| interval.bounds(p)).unzip();
        serde_json::json!({
            "mae": metrics::mae(pred, y),
            "rmse": metrics::rmse(pred, y),
            "coverage_p10_p90": metrics::coverage(&lo, &hi, y),
            "interval_width": metrics::mean_width(&lo, &hi),
            "n": y.len(),
        })
    };
    let (first, last) = history.time_range().unwrap_or((0, 0));
    let id = |ms: &[&MachineHistory]| -> Vec<String> {
        ms.iter().map(|m| m.machine_id.clone()).collect()
    };
    let mut metrics_json = serde_json::json!({ "val": scores(&val_pred, &val_w.y) });
    if !in_sample && !cy.is_empty() {
        metrics_json["calibration"] = scores(cp, cy);
    }
    let card = ModelCard {
        name: String::new(),
        version: String::new(),
        features,
        window: d.window,
        min_rows: d.min_rows(),
        target: TargetSpec {
            name: labels::target_name(&d.ends_on),
            cap: d.cap,
            ends_on: d.ends_on.clone(),
        },
        scaler,
        ema_alpha: d.ema_alpha,
        arch,
        interval,
        members: members.len(),
        member_windows: if cfg.model.member_windows.is_empty() {
            Vec::new()
        } else {
            member_windows
        },
        inference_precision: Default::default(),
        training: serde_json::json!({ "config": cfg, "members": member_reports,
                                      "device": format!("{device:?}"),
                                      "interval_calibrated_on": calib_from }),
        data: serde_json::json!({
            "first_ts_ms": first, "last_ts_ms": last, "rows": history.n_rows(),
            "train_machines": id(&fit_m),
            "val_machines": id(&pick(&sp.members[0].val)),
            // Held out from every member: `eval --held-out cal` scores on these.
            "cal_machines": id(&pick(&sp.shared_cal)),
            "member_cal_machines": sp.members.iter().map(|m| id(&pick(&m.cal))).collect::<Vec<_>>(),
            "val_windows": val_w.len(),
            "cal_windows": if in_sample { 0 } else { cy.len() },
        }),
        metrics: metrics_json,
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
