//! A finished run as it is kept on disk (`runs/<id>/result.json`) and ranked: what the
//! leaderboard and the chart read.

use std::path::{Path, PathBuf};

use maintcast_models::config::Config;
use serde::{Deserialize, Serialize};

/// One epoch as the leaderboard and chart keep it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub lr: f64,
    pub elapsed_s: f64,
}

/// What a finished run left in `result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub label: String,
    pub config: Config,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub params: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// Seconds inside the training loop (all ensemble members).
    pub train_s: f64,
    /// Forecasts per second of the saved model on the validation windows, batches of 256.
    pub infer_windows_per_s: f64,
    pub val_windows: usize,
    /// Validation figures per epoch of the first ensemble member.
    pub curve: Vec<EpochPoint>,
    pub finished_at: String,
}

pub const RESULT_FILE: &str = "result.json";
pub const MODEL_DIR: &str = "model";

pub fn run_dir(out: &Path, id: &str) -> PathBuf {
    out.join("runs").join(id)
}

/// A finished run's result, or `None` when the run has not finished (or its file is unreadable,
/// in which case it is trained again).
pub fn read_result(dir: &Path) -> Option<RunResult> {
    let p = dir.join(RESULT_FILE);
    let text = std::fs::read_to_string(&p).ok()?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("{}: {e}; training this run again", p.display());
            None
        }
    }
}
