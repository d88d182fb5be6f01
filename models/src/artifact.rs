//! A model on disk: `model.safetensors` (the weights) and `model.json` (the card that says how to
//! use them). Loading refuses weights whose sha256, tensor names or shapes disagree with the card,
//! so a half-copied or mismatched artifact never serves.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cpu_kernel::Precision;
use crate::error::{ModelError, Result};
use crate::metrics::IntervalSpec;
use crate::network::{ArchConfig, Network};
use crate::scaler::Scaler;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CARD_FILE: &str = "model.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub name: String,
    pub cap: f32,
    /// The label policy: event kinds that end a cycle; empty = every maintenance event.
    #[serde(default)]
    pub ends_on: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    /// Assigned by the registry when the model is published; empty while staged.
    pub version: String,
    /// Sensor names in model order (constant ones already dropped).
    pub features: Vec<String>,
    pub window: usize,
    /// Fewest rows since the last maintenance event that still get a (left-padded) forecast.
    pub min_rows: usize,
    pub target: TargetSpec,
    pub scaler: Scaler,
    /// Exponential smoothing of each window's scaled rows before the network (1 = none).
    #[serde(default = "no_smoothing")]
    pub ema_alpha: f32,
    pub arch: ArchConfig,
    pub interval: IntervalSpec,
    /// Networks averaged for a forecast; with more than one, weights are prefixed `member.{k}.`.
    #[serde(default = "one")]
    pub members: usize,
    /// Rows each member reads, the last ones of the window, in member order; empty (and absent
    /// in older cards) = every member reads the whole window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_windows: Vec<usize>,
    /// Arithmetic the CPU inference kernel may use for this model. `bf16` is set by hand, and
    /// only once the model's accuracy was checked under it; older cards mean `f32`.
    #[serde(default)]
    pub inference_precision: Precision,
    pub training: serde_json::Value,
    pub data: serde_json::Value,
    pub metrics: serde_json::Value,
    pub weights_sha256: String,
    pub parent_version: Option<String>,
    pub created_at: String,
    /// What the model saw of each feature in training, in `features` order: the reference for
    /// the stream's input-quality checks. Empty on cards written before it existed.
    #[serde(default)]
    pub feature_stats: Vec<FeatureStats>,
}

fn one() -> usize {
    1
}

/// Distribution of one feature's raw training values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    pub std: f32,
    pub p01: f32,
    pub p50: f32,
    pub p99: f32,
    /// Share of consecutive rows (both present) that repeat the previous value exactly: how
    /// often a quantised or slow sensor looks frozen while healthy. Rows are in time order per
    /// machine, so only the few pairs across machine boundaries are not true neighbours. Absent
    /// (0) in cards written before it existed.
    #[serde(default)]
    pub repeat: f32,
}

impl FeatureStats {
    /// Per-feature summaries of row-major `rows` (`n_features` a row); empty without rows.
    /// Percentiles are nearest-rank. Missing (non-finite) values are skipped: raw rows keep them
    /// as NaN, and JSON has no NaN to write. A feature with no finite value gets zeros.
    pub fn of_rows(rows: &[f32], n_features: usize) -> Vec<FeatureStats> {
        if n_features == 0 || rows.len() < n_features {
            return Vec::new();
        }
        (0..n_features)
            .map(|f| {
                let mut col: Vec<f32> = rows
                    .iter()
                    .skip(f)
                    .step_by(n_features)
                    .copied()
                    .filter(|v| v.is_finite())
                    .collect();
                let n = col.len();
                if n == 0 {
                    return FeatureStats::default();
                }
                let (mut pairs, mut same) = (0u64, 0u64);
                let mut prev = f32::NAN;
                for v in rows.iter().skip(f).step_by(n_features) {
                    if v.is_finite() && prev.is_finite() {
                        pairs += 1;
                        same += u64::from(*v == prev);
                    }
                    prev = *v;
                }
                col.sort_by(f32::total_cmp);
                let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let var = col
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n as f64;
                let rank = |p: f64| col[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
                FeatureStats {
                    min: col[0],
                    max: col[n - 1],
                    mean: mean as f32,
                    std: var.sqrt() as f32,
                    p01: rank(0.01),
                    p50: rank(0.5),
                    p99: rank(0.99),
                    repeat: if pairs == 0 {
                        0.0
                    } else {
                        (same as f64 / pairs as f64) as f32
                    },
                }
            })
            .collect()
    }
}

fn no_smoothing() -> f32 {
    1.0
}

impl ModelCard {
    /// Tensor name prefix of ensemble member `k`.
    pub fn member_prefix(&self, k: usize) -> String {
        if self.members == 1 {
            String::new()
        } else {
            format!("member.{k}.")
        }
    }

    /// Every tensor the weights file must hold, with its shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        (0..self.members)
            .flat_map(|k| {
                let p = self.member_prefix(k);
                self.arch
                    .weight_shapes()
                    .into_iter()
                    .map(move |(n, s)| (format!("{p}{n}"), s))
            })
            .collect()
    }

    /// Internal consistency of the card, before any weights are read.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Integrity(m));
        let nf = self.features.len();
        if self.arch.n_features != nf || self.scaler.n_features() != nf {
            return bad(format!(
                "card lists {nf} features but the network takes {} and the scaler has {}",
                self.arch.n_features,
                self.scaler.n_features()
            ));
        }
        if self.scaler.scale.len() != nf {
            return bad("scaler offset and scale differ in length".into());
        }
        if let Some(regimes) = &self.scaler.regimes {
            regimes.validate(nf).or_else(bad)?;
        }
        if self.window == 0 || self.min_rows == 0 || self.min_rows > self.window {
            return bad(format!(
                "window {} / min_rows {} are inconsistent",
                self.window, self.min_rows
            ));
        }
        if self.members == 0 {
            return bad("members must be at least 1".into());
        }
        if !self.member_windows.is_empty()
            && (self.member_windows.len() != self.members
                || (self.member_windows.iter()).any(|&w| w == 0 || w > self.window))
        {
            return bad(format!(
                "member_windows {:?}: one per member ({}), each in 1..={} (window)",
                self.member_windows, self.members, self.window
            ));
        }
        if self.ema_alpha.is_nan() || self.ema_alpha <= 0.0 || self.ema_alpha > 1.0 {
            return bad(format!("ema_alpha {} is not in (0, 1]", self.ema_alpha));
        }
        self.arch
            .validate()
            .map_err(|e| ModelError::Integrity(e.to_string()))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `file` and flushes it to disk, so a later rename publishes complete contents.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(ModelError::io(path))?;
    f.write_all(bytes).map_err(ModelError::io(path))?;
    f.sync_all().map_err(ModelError::io(path))
}

/// Writes the weights of `members` and the card into `dir` (created if needed), filling in
/// `weights_sha256`. Returns the card as written.
pub fn save(dir: &Path, mut card: ModelCard, members: &[&VarMap]) -> Result<ModelCard> {
    std::fs::create_dir_all(dir).map_err(ModelError::io(dir))?;
    card.members = members.len();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, vm) in members.iter().enumerate() {
        let p = card.member_prefix(k);
        for (name, var) in vm.data().lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let t = var
                .as_tensor()
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?;
            tensors.insert(format!("{p}{name}"), t);
        }
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| ModelError::Integrity(format!("serialising weights: {e}")))?;
    card.weights_sha256 = sha256_hex(&bytes);
    card.check()?;
    write_synced(&dir.join(WEIGHTS_FILE), &bytes)?;
    write_synced(
        &dir.join(CARD_FILE),
        serde_json::to_string_pretty(&card)?.as_bytes(),
    )?;
    Ok(card)
}

pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let p = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&p).map_err(ModelError::io(&p))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Integrity(format!("{}: {e}", p.display())))
}

/// Reads and verifies an artifact: the card, the weights' sha256, and every tensor's name and
/// shape; then builds the member networks on `device`.
pub fn load(dir: &Path, device: &Device) -> Result<(ModelCard, Vec<Network>)> {
    let card = read_card(dir)?;
    card.check()?;
    let p = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&p).map_err(ModelError::io(&p))?;
    let sha = sha256_hex(&bytes);
    if sha != card.weights_sha256 {
        return Err(ModelError::Integrity(format!(
            "{}: sha256 {sha} does not match the card's {}",
            p.display(),
            card.weights_sha256
        )));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::Integrity(format!("{}: {e}", p.display())))?;
    let expected = card.expected_tensors();
    for (name, shape) in &expected {
        let t = st.tensor(name).map_err(|_| {
            ModelError::Integrity(format!("{}: tensor {name} is missing", p.display()))
        })?;
        if t.shape() != shape.as_slice() {
            return Err(ModelError::Integrity(format!(
                "{}: tensor {name} has shape {:?}, the card's architecture needs {shape:?}",
                p.display(),
                t.shape()
            )));
        }
    }
    if st.len() != expected.len() {
        let extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !expected.iter().any(|(e, _)| e == *n))
            .map(str::to_string)
            .collect();
        return Err(ModelError::Integrity(format!(
            "{}: unexpected tensors {extra:?}",
            p.display()
        )));
    }
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut networks = Vec::with_capacity(card.members);
    for k in 0..card.members {
        let prefix = card.member_prefix(k);
        let mut mine = HashMap::new();
        for (name, _) in card.arch.weight_shapes() {
            let t = &all[&format!("{prefix}{name}")];
            mine.insert(name, t.to_dtype(DType::F32)?.to_device(device)?);
        }
        let vb = VarBuilder::from_tensors(mine, DType::F32, device);
        networks.push(Network::new(vb, &card.arch)?);
    }
    Ok((card, networks))
}

#[cfg(test)]
mod feature_stats_tests {
    use super::FeatureStats;

    #[test]
    fn summaries_per_feature() {
        // Feature 0 takes 1..=100 (in reverse, so sorting matters), feature 1 is constant.
        let rows: Vec<f32> = (1..=100).rev().flat_map(|v| [v as f32, 5.0]).collect();
        let s = FeatureStats::of_rows(&rows, 2);
        assert_eq!(s.len(), 2);
        // Python: statistics.mean(range(1, 101)), statistics.pstdev(range(1, 101)).
        assert_eq!((s[0].min, s[0].max, s[0].mean), (1.0, 100.0, 50.5));
        assert!((s[0].std - 28.866_07).abs() < 1e-4, "{}", s[0].std);
        assert_eq!((s[0].p01, s[0].p50, s[0].p99), (1.0, 50.0, 99.0));
        assert_eq!(
            (s[1].min, s[1].max, s[1].std, s[1].p99),
            (5.0, 5.0, 0.0, 5.0)
        );
        assert!(FeatureStats::of_rows(&[], 3).is_empty());
        // Feature 0 never repeats; the constant feature 1 always does.
        assert_eq!((s[0].repeat, s[1].repeat), (0.0, 1.0));
    }

    /// A sensor quantised coarser than its noise repeats itself while healthy; the share is
    /// counted over neighbouring rows that both hold a value.
    #[test]
    fn repeat_share_counts_present_neighbours() {
        // Feature 0: 1, 1, NaN, 1, 2 -> pairs (1,1) and (1,2): one of two repeats.
        let rows = [1.0, 0.0, 1.0, 0.0, f32::NAN, 0.0, 1.0, 0.0, 2.0, 0.0];
        let s = FeatureStats::of_rows(&rows, 2);
        assert_eq!(s[0].repeat, 0.5);
        let old: FeatureStats = serde_json::from_str(
            r#"{"min":0,"max":1,"mean":0.5,"std":0.5,"p01":0,"p50":0,"p99":1}"#,
        )
        .unwrap();
        assert_eq!(old.repeat, 0.0, "cards without the field still load");
    }

    /// Raw rows hold NaN where a reading was missing; a NaN statistic would be written as JSON
    /// `null` and make the card unreadable (seen: a trainer round refused its own artifact).
    #[test]
    fn missing_values_are_skipped_and_the_stats_survive_json() {
        let rows = [1.0, f32::NAN, f32::NAN, f32::NAN, 3.0, f32::INFINITY];
        let s = FeatureStats::of_rows(&rows, 2);
        assert_eq!(
            (s[0].min, s[0].max, s[0].mean, s[0].p50),
            (1.0, 3.0, 2.0, 1.0)
        );
        assert_eq!(s[1], FeatureStats::default());
        let json = serde_json::to_string(&s).unwrap();
        let back: Vec<FeatureStats> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
