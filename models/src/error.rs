//! The one error type of this crate. Variants say whose fault a failure is, because callers decide
//! on it: bad input is reported to the user, a refused artifact keeps the old model serving.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not a `#[source]`: the message already says it, and anyhow's `{:#}` would repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input data (history files, windows passed to `predict`) is malformed.
    #[error("invalid data: {0}")]
    Data(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An artifact on disk does not match its card (hash, tensor names or shapes).
    #[error("artifact refused: {0}")]
    Integrity(String),
    #[error("model registry: {0}")]
    Registry(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("model card: {0}")]
    Json(#[from] serde_json::Error),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |error| ModelError::Io { path, error }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
