//! The real model: `maintcast_models::Forecaster` loaded from the registry's CURRENT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use maintcast_models::{Forecaster, registry};

use crate::model::{Model, Prediction};
use crate::window::Columns;

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

/// A model loaded to run on the service's windows, with where its features sit in a window row.
#[derive(Clone)]
pub struct Fitted {
    pub model: Arc<dyn Model>,
    /// `None` while the model lists the features in the windows' order.
    pub columns: Option<Arc<[usize]>>,
}

/// Loads the version in `dir` off the async runtime, for windows of `features` over `window`
/// rows: the check every model swapped in while the service runs goes through (a new CURRENT, a
/// shadow). Windows are shaped once, at start, so other features (in any order) or another
/// window cannot run on them.
pub async fn load_for_windows(
    dir: &Path,
    device: &Device,
    features: &[String],
    window: usize,
) -> anyhow::Result<Fitted> {
    let (d, dev) = (dir.to_path_buf(), device.clone());
    let m = tokio::task::spawn_blocking(move || ServingModel::load(&d, &dev)).await??;
    let columns = match Columns::between(features, m.features()) {
        Columns::Same => None,
        Columns::Reordered(map) => Some(map.into()),
        Columns::Incompatible => anyhow::bail!(
            "its features {:?} differ from the windows' {features:?}",
            m.features()
        ),
    };
    anyhow::ensure!(
        m.window() == window,
        "its window {} differs from the windows' {window}",
        m.window()
    );
    Ok(Fitted {
        model: Arc::new(m),
        columns,
    })
}

/// The one device parser (`maintcast_models::device`), re-exported where ingest always found it.
pub use maintcast_models::device::parse_device;
