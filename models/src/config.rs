//! The training configuration, read from TOML. Every field has a default, so a file only names
//! what it changes; unknown keys are errors so that a typo cannot silently train something else.
//!
//! ```toml
//! [data]
//! window = 60            # rows per window
//! step = 1               # rows between consecutive training windows
//! # min_rows = 60        # fewest rows that still get a (left-padded) window; default = window
//! cap = 125.0            # labels (days to maintenance) are capped here
//! val_fraction = 0.2     # share of machines held out whole for validation (early stopping)
//! cal_fraction = 0.0     # share held out whole for calibrating the interval; 0 = calibrate on
//!                        # the validation machines (in-sample: early stopping saw them)
//! interval_bins = 1      # conformal offsets per bin of the forecast (equal-count bins)
//! ends_on = []           # event kinds that end a cycle (labels = days to the next such event);
//!                        # empty = every event, e.g. ["failure"] = days to failure
//! ema_alpha = 1.0        # exponential smoothing of each window's rows, 1 = none
//! scaler = "min-max"     # or "z-score"
//! # include = [...]      # sensors to consider (default: every sensor all machines have)
//! exclude = []           # sensors never used
//! regime_columns = []    # operating settings: if their training values form a few distinct
//!                        # regimes, each sensor is scaled per regime (the settings read as 0)
//! constant_tolerance = 0.0  # sensors whose training range is <= this are dropped
//!
//! [model]
//! hidden = [64, 64]      # LSTM layer widths, input side first
//! dropout = 0.2          # between LSTM layers, training only
//! pooling = "last"       # what the head reads: the last state, or "attention": the last state
//!                        # and an attention-weighted mean of every step's output
//! member_windows = []    # rows each ensemble member reads (the last ones of the window), cycled
//!                        # over the members, e.g. [60, 30]; empty = the whole window
//!
//! [train]
//! epochs = 100
//! batch_size = 64
//! lr = 0.001
//! loss = "mse"           # "mae", "huber" (with huber_delta)
//! huber_delta = 1.0
//! # clip_norm = 1.0      # clip gradients to this global L2 norm
//! # spike_factor = 2.0   # an epoch's training loss above this times the previous epoch's rolls
//!                        # back to the best weights, fresh optimizer moments, half the lr
//! patience = 10          # epochs without a better validation loss before stopping
//! min_delta = 0.0
//! seed = 0
//! ensemble = 1           # members trained with seeds seed, seed+1, ...; forecasts are their mean
//! member_splits = "shared"  # or "per-member": each member early-stops on other machines; or
//!                        # "folds": machines dealt into `ensemble` folds, member k trains on the
//!                        # others, early-stops on half of fold k and calibrates the interval on
//!                        # the other half (cross-conformal; val/cal_fraction do not apply)
//! [train.optimizer]
//! kind = "nadam"         # "adam", "rmsprop", "sgd"; beta_1, beta_2, epsilon, rho, momentum
//! # ema_momentum = 0.99  # keep a moving average of the weights (Keras's use_ema); validation
//!                        # scores it and training keeps it
//! [train.schedule]
//! kind = "constant"      # "step" {every, gamma}, "exponential" {gamma},
//!                        # "cosine" {min_lr, epochs}, "plateau" {factor, patience, min_lr}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::network::Pooling;
use crate::optim::{LossKind, OptimizerConfig, Schedule};
use crate::scaler::ScalerKind;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub window: usize,
    pub step: usize,
    pub min_rows: Option<usize>,
    pub cap: f32,
    pub val_fraction: f64,
    pub cal_fraction: f64,
    pub interval_bins: usize,
    pub ends_on: Vec<String>,
    pub ema_alpha: f32,
    pub scaler: ScalerKind,
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
    pub regime_columns: Vec<String>,
    pub constant_tolerance: f32,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            window: 60,
            step: 1,
            min_rows: None,
            cap: 125.0,
            val_fraction: 0.2,
            cal_fraction: 0.0,
            interval_bins: 1,
            ends_on: Vec::new(),
            ema_alpha: 1.0,
            scaler: ScalerKind::MinMax,
            include: None,
            exclude: Vec::new(),
            regime_columns: Vec::new(),
            constant_tolerance: 0.0,
        }
    }
}

impl DataConfig {
    pub fn min_rows(&self) -> usize {
        self.min_rows.unwrap_or(self.window)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub hidden: Vec<usize>,
    pub dropout: f32,
    pub pooling: Pooling,
    /// Rows each ensemble member reads, cycled over the members (member k reads the last
    /// `member_windows[k % len]` rows of the window); empty = every member reads the whole window.
    pub member_windows: Vec<usize>,
}

impl ModelConfig {
    /// The rows member `k` of an ensemble reads, given the data's window.
    pub fn member_window(&self, k: usize, window: usize) -> usize {
        match self.member_windows.len() {
            0 => window,
            n => self.member_windows[k % n],
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            dropout: 0.2,
            pooling: Pooling::Last,
            member_windows: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub loss: LossKind,
    pub huber_delta: f64,
    pub clip_norm: Option<f64>,
    pub spike_factor: Option<f64>,
    pub patience: usize,
    pub min_delta: f64,
    pub seed: u64,
    pub ensemble: usize,
    pub member_splits: MemberSplits,
}

/// Which machines each ensemble member trains and early-stops on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberSplits {
    /// One training/validation split for all members (they differ by seed only).
    #[default]
    Shared,
    /// Member k draws its validation machines with seed + k, so members see different machines.
    PerMember,
    /// The machines are dealt into `ensemble` folds: member k trains on the other folds,
    /// early-stops on half of fold k and calibrates the interval on the other half.
    /// `data.val_fraction` and `data.cal_fraction` do not apply.
    Folds,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 64,
            lr: 1e-3,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Constant,
            loss: LossKind::Mse,
            huber_delta: 1.0,
            clip_norm: None,
            spike_factor: None,
            patience: 10,
            min_delta: 0.0,
            seed: 0,
            ensemble: 1,
            member_splits: MemberSplits::Shared,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config = toml::from_str(text).map_err(|e| ModelError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(ModelError::io(path))?;
        Self::from_toml(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        let d = &self.data;
        if d.window == 0 || d.step == 0 {
            return bad("data.window and data.step must be at least 1".into());
        }
        if d.min_rows() == 0 || d.min_rows() > d.window {
            return bad(format!("data.min_rows must be in 1..={}", d.window));
        }
        if let Some(c) = d.regime_columns.iter().find(|c| d.exclude.contains(c)) {
            return bad(format!(
                "data.regime_columns names {c}, which data.exclude excludes"
            ));
        }
        if d.cap.is_nan() || d.cap <= 0.0 {
            return bad(format!("data.cap must be positive, got {}", d.cap));
        }
        if !(0.0..1.0).contains(&d.val_fraction) {
            return bad(format!(
                "data.val_fraction must be in [0, 1), got {}",
                d.val_fraction
            ));
        }
        if !(0.0..1.0).contains(&d.cal_fraction) || d.val_fraction + d.cal_fraction >= 1.0 {
            return bad(format!(
                "data.cal_fraction must be in [0, 1) and leave training machines after \
                 val_fraction, got {} + {}",
                d.val_fraction, d.cal_fraction
            ));
        }
        if self.train.member_splits == MemberSplits::Folds
            && (self.train.ensemble < 2 || d.cal_fraction > 0.0)
        {
            return bad(format!(
                "train.member_splits = \"folds\" needs train.ensemble >= 2 (got {}) and \
                 data.cal_fraction = 0 (got {}): each member calibrates on half of its own fold",
                self.train.ensemble, d.cal_fraction
            ));
        }
        if d.interval_bins == 0 {
            return bad("data.interval_bins must be at least 1".into());
        }
        if d.ema_alpha.is_nan() || d.ema_alpha <= 0.0 || d.ema_alpha > 1.0 {
            return bad(format!(
                "data.ema_alpha must be in (0, 1], got {}",
                d.ema_alpha
            ));
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.ensemble == 0 {
            return bad(
                "train.epochs, train.batch_size and train.ensemble must be at least 1".into(),
            );
        }
        if t.lr.is_nan() || t.lr <= 0.0 {
            return bad(format!("train.lr must be positive, got {}", t.lr));
        }
        if t.clip_norm.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return bad("train.clip_norm must be positive".into());
        }
        if t.spike_factor.is_some_and(|f| f.is_nan() || f <= 1.0) {
            return bad("train.spike_factor must be above 1 (a rise, not a fall)".into());
        }
        if self.model.hidden.is_empty() || self.model.hidden.contains(&0) {
            return bad("model.hidden must list at least one non-zero width".into());
        }
        if let Some(w) = (self.model.member_windows.iter()).find(|&&w| w == 0 || w > d.window) {
            return bad(format!(
                "model.member_windows: {w} rows is outside 1..={} (data.window)",
                d.window
            ));
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return bad("model.dropout must be in [0, 1)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerKind;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.data.window, 60);
        assert_eq!(c.data.min_rows(), 60);
        assert_eq!(c.train.patience, 10);
        assert_eq!(c.train.optimizer.kind, OptimizerKind::Nadam);
    }

    #[test]
    fn tables_parse_and_typos_are_refused() {
        let c = Config::from_toml(
            "[data]\nwindow = 30\n[train]\nloss = \"huber\"\n[train.optimizer]\nkind = \"rmsprop\"\n\
             [train.schedule]\nkind = \"plateau\"\nfactor = 0.5\npatience = 3\n",
        )
        .unwrap();
        assert_eq!(c.data.window, 30);
        assert_eq!(c.train.loss, LossKind::Huber);
        assert_eq!(c.train.optimizer.kind, OptimizerKind::Rmsprop);
        assert!(matches!(
            c.train.schedule,
            Schedule::Plateau { patience: 3, .. }
        ));
        let e = Config::from_toml("[train]\npatiance = 3\n").unwrap_err();
        assert!(e.to_string().contains("patiance"), "{e}");
        assert!(Config::from_toml("[data]\nwindow = 10\nmin_rows = 11\n").is_err());
        assert!(Config::from_toml("[train.optimizer]\nkind = \"lbfgs\"\n").is_err());
        assert!(Config::from_toml("[train]\nspike_factor = 2.0\n").is_ok());
        assert!(Config::from_toml("[train]\nspike_factor = 1.0\n").is_err());
        let folds = "[train]\nensemble = 3\nmember_splits = \"folds\"\n";
        assert!(Config::from_toml(folds).is_ok());
        let one = "[train]\nmember_splits = \"folds\"\n";
        assert!(
            Config::from_toml(one).is_err(),
            "one member has no other folds"
        );
        let mixed = Config::from_toml("[data]\nwindow = 60\n[model]\nmember_windows = [60, 30]\n");
        let mixed = mixed.unwrap().model;
        assert_eq!(
            (0..3)
                .map(|k| mixed.member_window(k, 60))
                .collect::<Vec<_>>(),
            [60, 30, 60]
        );
        assert_eq!(ModelConfig::default().member_window(4, 60), 60);
        let e = Config::from_toml("[data]\nwindow = 60\n[model]\nmember_windows = [90]\n");
        assert!(e.unwrap_err().to_string().contains("member_windows"));
        let attn = Config::from_toml("[model]\npooling = \"attention\"\n").unwrap();
        assert_eq!(attn.model.pooling, Pooling::Attention);
        let e = Config::from_toml("[model]\npooling = \"mean\"\n").unwrap_err();
        assert!(e.to_string().contains("attention"), "{e}");
        let cal = format!("[data]\ncal_fraction = 0.1\n{folds}");
        assert!(
            Config::from_toml(&cal).is_err(),
            "folds calibrate on their own halves"
        );
    }

    #[test]
    fn committed_cmapss_config_parses() {
        let c = Config::from_toml(include_str!("../configs/cmapss-fd001.toml")).unwrap();
        assert_eq!((c.data.window, c.data.cap), (60, 125.0));
        // the interval is calibrated out of sample (cross-conformal), and the label says what it
        // means
        assert_eq!(c.train.member_splits, MemberSplits::Folds);
        assert_eq!(c.data.cal_fraction, 0.0);
        assert_eq!(c.data.ends_on, ["failure"]);
        // a member whose training loss spikes goes back to its best weights
        assert_eq!(c.train.spike_factor, Some(2.0));
        assert!(Config::from_toml("[data]\nval_fraction = 0.5\ncal_fraction = 0.5\n").is_err());
        assert!(Config::from_toml("[data]\nema_alpha = 0.0\n").is_err());
        assert!(Config::from_toml("[train]\nmember_splits = \"per-member\"\n").is_ok());
    }
}
