//! The real model: `maintcast_models::Forecaster` loaded from the registry's CURRENT.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use maintcast_models::{Forecaster, registry};

use crate::model::{Model, Prediction};

pub struct ServingModel {
    forecaster: Forecaster,
    version: String,
    neutral: Vec<f32>,
    pub dir: PathBuf,
}

impl ServingModel {
    pub fn load_current(registry_dir: &Path, name: &str, device: &Device) -> anyhow::Result<Self> {
        let dir = registry::current_version_dir(registry_dir, name).with_context(|| {
            format!(
                "no serving version of model {name:?} in {}",
                registry_dir.display()
            )
        })?;
        Self::load(&dir, device)
    }

    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let forecaster = Forecaster::load(dir, device)
            .with_context(|| format!("refusing model at {}", dir.display()))?;
        let card = forecaster.card();
        let n = card.features.len();
        anyhow::ensure!(
            n > 0 && card.window > 0,
            "model at {} has no features or window",
            dir.display()
        );
        let neutral = maintcast_models::prep::neutral(&card.scaler);
        Ok(ServingModel {
            version: card.version.clone(),
            forecaster,
            neutral,
            dir: dir.to_path_buf(),
        })
    }
}

impl Model for ServingModel {
    fn name(&self) -> &str {
        &self.forecaster.card().name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn features(&self) -> &[String] {
        self.forecaster.features()
    }
    fn window(&self) -> usize {
        self.forecaster.window()
    }
    fn min_rows(&self) -> usize {
        self.forecaster.min_rows()
    }
    fn neutral_raw(&self) -> Vec<f32> {
        self.neutral.clone()
    }
    fn scale_row(&self, raw: &[f32], out: &mut [f32]) {
        self.forecaster.scale_row(raw, out)
    }
    fn feature_stats(&self) -> &[maintcast_models::artifact::FeatureStats] {
        &self.forecaster.card().feature_stats
    }
    fn predict(&self, windows: &[f32], batch: usize) -> anyhow::Result<Vec<Prediction>> {
        Ok(self
            .forecaster
            .predict(windows, batch)?
            .into_iter()
            .map(|f| Prediction {
                days: f.days,
                p10: f.p10,
                p90: f.p90,
            })
            .collect())
    }
}

/// The one device parser (`maintcast_models::device`), re-exported where ingest always found it.
pub use maintcast_models::device::parse_device;
