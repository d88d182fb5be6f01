//! What the pipeline needs of a model. The one implementation, `serving::ServingModel`, wraps
//! `maintcast_models::Forecaster`; the tests drive the pipeline with small randomly initialised
//! models published to a registry (`tests/support`), so they exercise real weights.

/// One forecast as the model produces it, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub days: f32,
    pub p10: f32,
    pub p90: f32,
}

pub trait Model: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// Sensor names in the model's order.
    fn features(&self) -> &[String];
    fn window(&self) -> usize;
    /// Rows a machine needs before its first forecast (shorter windows are left-padded).
    fn min_rows(&self) -> usize;
    /// Raw value used for a sensor a machine has never reported a good value for: the training
    /// centre, so the gap pulls the forecast as little as possible.
    fn neutral_raw(&self) -> Vec<f32>;
    fn scale_row(&self, raw: &[f32], out: &mut [f32]);
    /// `windows`: `batch` scaled windows, row-major `[batch, window, features]`.
    fn predict(&self, windows: &[f32], batch: usize) -> anyhow::Result<Vec<Prediction>>;
    /// Per-feature summaries of the training data, in the model's feature order (empty for a
    /// card written before they existed): what input quality is judged against.
    fn feature_stats(&self) -> &[maintcast_models::artifact::FeatureStats] {
        &[]
    }
}
