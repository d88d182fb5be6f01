//! A small model with random weights, published in a registry: what a test or benchmark needs to
//! drive the serving path without training one.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use maintcast_models::metrics::IntervalSpec;
use maintcast_models::network::{ArchConfig, Network, Pooling};
use maintcast_models::scaler::{Scaler, ScalerKind};
use maintcast_models::{ModelCard, TargetSpec, artifact, registry};

pub const FEATURES: [&str; 3] = ["temp", "vibration", "pressure"];
pub const WINDOW: usize = 10;

/// Publishes a small randomly initialised model as the next version of `name` in `registry_dir`
/// and returns that version; CURRENT is left alone.
pub fn publish_model(registry_dir: &Path, name: &str, seed: u64) -> String {
    publish_model_ordered(registry_dir, name, seed, &FEATURES)
}

/// As [`publish_model`], with the features listed in `order` (a permutation of [`FEATURES`]), as
/// a model trained from another history source may list them.
pub fn publish_model_ordered(
    registry_dir: &Path,
    name: &str,
    seed: u64,
    order: &[&str; 3],
) -> String {
    let (offset, scale): (Vec<f32>, Vec<f32>) = order
        .iter()
        .map(|f| match *f {
            "temp" => (50.0, 50.0),
            "vibration" => (0.0, 2.0),
            "pressure" => (1.0, 4.0),
            other => panic!("unknown feature {other}"),
        })
        .unzip();
    let spec = RandomModel {
        features: order.iter().map(|s| s.to_string()).collect(),
        window: WINDOW,
        min_rows: WINDOW,
        hidden: vec![8],
        offset,
        scale,
        seed,
        pooling: Default::default(),
        member_windows: Vec::new(),
    };
    publish_random_model(registry_dir, name, spec).expect("publish")
}

/// A model with random weights: what a test or benchmark needs to drive the serving path.
pub struct RandomModel {
    pub features: Vec<String>,
    pub window: usize,
    /// Rows a machine needs since its last maintenance before its first forecast; fewer than
    /// `window` means short histories are left-padded.
    pub min_rows: usize,
    pub hidden: Vec<usize>,
    /// Min-max scaler: `(raw - offset) / scale` per feature.
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
    pub seed: u64,
    /// What the head reads (`Pooling::Attention` serves the attention architecture).
    pub pooling: Pooling,
    /// Empty: one network reading the whole window. Otherwise one member per entry, each reading
    /// that many of the window's newest rows, with weights drawn from `seed + k`.
    pub member_windows: Vec<usize>,
}

/// Publishes `spec` as the next version of `name` in `registry_dir` (CURRENT is left alone) and
/// returns that version.
pub fn publish_random_model(
    registry_dir: &Path,
    name: &str,
    spec: RandomModel,
) -> anyhow::Result<String> {
    let arch = ArchConfig {
        n_features: spec.features.len(),
        hidden: spec.hidden,
        dropout: 0.0,
        pooling: spec.pooling,
    };
    let members = spec.member_windows.len().max(1);
    let mut varmaps = Vec::with_capacity(members);
    for k in 0..members {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Network::new(vb, &arch)?;
        maintcast_models::train::init_weights(&varmap, spec.seed + k as u64)?;
        varmaps.push(varmap);
    }
    let card = ModelCard {
        name: name.into(),
        version: String::new(),
        features: spec.features,
        window: spec.window,
        min_rows: spec.min_rows,
        target: TargetSpec {
            name: "days_to_maintenance".into(),
            cap: 100.0,
            ends_on: Vec::new(),
        },
        scaler: Scaler {
            kind: ScalerKind::MinMax,
            offset: spec.offset,
            scale: spec.scale,
            regimes: None,
        },
        ema_alpha: 1.0,
        arch,
        interval: IntervalSpec {
            lower_quantile: 0.1,
            upper_quantile: 0.9,
            lower_offset: -2.0,
            upper_offset: 3.0,
            n_calibration: 10,
            bins: Vec::new(),
        },
        members,
        inference_precision: Default::default(),
        member_windows: spec.member_windows,
        training: serde_json::json!({}),
        data: serde_json::json!({}),
        metrics: serde_json::json!({}),
        weights_sha256: String::new(),
        parent_version: None,
        created_at: "2026-11-29T00:00:00Z".into(),
        // No training ranges: the stream's input-quality checks stay silent for random models.
        feature_stats: Vec::new(),
    };
    let staged = tempfile::tempdir()?;
    artifact::save(staged.path(), card, &varmaps.iter().collect::<Vec<_>>())?;
    Ok(registry::publish(registry_dir, name, staged.path())?)
}

/// A small randomly initialised model, published and promoted in `registry_dir`.
pub fn make_model(registry_dir: &Path, name: &str, seed: u64) -> String {
    let version = publish_model(registry_dir, name, seed);
    registry::promote(registry_dir, name, &version, "test model").expect("promote");
    version
}
