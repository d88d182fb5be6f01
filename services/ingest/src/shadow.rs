//! The shadow challenger (docs/LIVE_EVALUATION.md): the version the registry's SHADOW names runs
//! beside the serving model on the same windows, in the same batches; its forecasts go to
//! `shadow_forecast`, are scored when maintenance happens, and never raise alerts.
//!
//! Whatever happens to the shadow (it fails to load, its features or window do not fit the
//! windows, a forecast fails) is logged and counted, and the served forecasts go on unchanged.

use std::path::PathBuf;
use std::time::Instant;

use crate::config::Config;
use crate::metrics::{Metrics, labels};
use crate::model::Model;
use crate::serving::{Fitted, load_for_windows};

/// Watches the registry's SHADOW pointer, checked between batches like CURRENT.
pub struct ShadowWatch {
    config: Config,
    device: candle_core::Device,
    window_features: Vec<String>,
    window: usize,
    last_check: Option<Instant>,
    /// The directory last acted on (loaded or refused): it is not loaded again until SHADOW moves.
    seen: Option<PathBuf>,
    /// SHADOW could not be read at the last look (refused once, not again every look).
    unreadable: bool,
    current: Option<Fitted>,
}

impl ShadowWatch {
    pub fn new(config: &Config, device: candle_core::Device, windows: &dyn Model) -> Self {
        ShadowWatch {
            config: config.clone(),
            device,
            window_features: windows.features().to_vec(),
            window: windows.window(),
            last_check: None,
            seen: None,
            unreadable: false,
            current: None,
        }
    }

    /// The shadow to run on the next batch, after looking at SHADOW when `reload_interval` has
    /// passed (at once on the first call).
    pub async fn check(&mut self, metrics: &Metrics) -> Option<Fitted> {
        if self
            .last_check
            .is_none_or(|t| t.elapsed() >= self.config.reload_interval)
        {
            self.last_check = Some(Instant::now());
            self.look(metrics).await;
        }
        self.current.clone()
    }

    async fn look(&mut self, metrics: &Metrics) {
        let dir = match maintcast_models::registry::shadow_version_dir(
            &self.config.registry,
            &self.config.model,
        ) {
            Ok(d) => d,
            Err(e) => {
                // A hand-edited SHADOW that names no version: nothing shadows.
                if !self.unreadable {
                    tracing::error!(error = %e, "SHADOW is unreadable; no shadow runs");
                    self.refuse(metrics, None);
                    self.unreadable = true;
                }
                return;
            }
        };
        self.unreadable = false;
        if dir == self.seen {
            return;
        }
        let Some(dir) = dir else {
            if let Some(s) = self.current.take() {
                tracing::info!(version = s.model.version(), "shadow cleared");
            }
            self.seen = None;
            return;
        };
        let fitted = load_for_windows(&dir, &self.device, &self.window_features, self.window).await;
        match fitted {
            Ok(s) => {
                tracing::info!(
                    version = s.model.version(),
                    dir = %dir.display(),
                    "shadow loaded: it runs beside the serving model, never serves"
                );
                metrics
                    .shadow_loads
                    .get_or_create(&labels(&[("result", "ok")]))
                    .inc();
                self.current = Some(s);
                self.seen = Some(dir);
            }
            Err(e) => {
                tracing::error!(
                    dir = %dir.display(),
                    error = format!("{e:#}"),
                    "refusing the shadow model; served forecasts are unaffected"
                );
                self.refuse(metrics, Some(dir));
            }
        }
    }

    fn refuse(&mut self, metrics: &Metrics, dir: Option<PathBuf>) {
        metrics
            .shadow_loads
            .get_or_create(&labels(&[("result", "refused")]))
            .inc();
        self.current = None;
        self.seen = dir;
    }
}
