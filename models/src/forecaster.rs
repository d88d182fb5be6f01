//! What the ingest service and the demo call: a loaded, verified model that turns scaled windows
//! into forecasts.

use std::path::Path;

use candle_core::Device;

use crate::artifact::{self, ModelCard};
use crate::cpu_kernel::CpuKernel;
use crate::dataset;
use crate::error::{ModelError, Result};
use crate::network::Network;
use crate::smoothing;

/// Days to maintenance and its prediction interval (`days_p10`, `days_p90` in InfluxDB).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    pub days: f32,
    pub p10: f32,
    pub p90: f32,
}

pub struct Forecaster {
    card: ModelCard,
    members: Vec<Network>,
}

impl Forecaster {
    /// Loads `dir` (`model.json` + `model.safetensors`), refusing it when the weights' sha256 or any
    /// tensor's shape disagrees with the card.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (card, members) = artifact::load(dir, device)?;
        let forecaster = Self { card, members };
        forecaster.set_cpu_kernel(CpuKernel::best(forecaster.card.inference_precision))?;
        Ok(forecaster)
    }

    /// Overrides the CPU kernel the card's precision chose (e.g. to measure a bf16 model in
    /// exact f32); refused when this CPU cannot run it.
    pub fn set_cpu_kernel(&self, kernel: CpuKernel) -> Result<()> {
        for m in &self.members {
            m.set_cpu_kernel(kernel)?;
        }
        Ok(())
    }

    pub fn cpu_kernel(&self) -> CpuKernel {
        self.members[0].cpu_kernel()
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn features(&self) -> &[String] {
        &self.card.features
    }

    pub fn window(&self) -> usize {
        self.card.window
    }

    pub fn min_rows(&self) -> usize {
        self.card.min_rows
    }

    /// Raw sensor values in `features()` order -> scaled values written to `out`.
    pub fn scale_row(&self, raw: &[f32], out: &mut [f32]) {
        self.card.scaler.transform_row(raw, out);
    }

    /// `windows`: `batch` scaled windows, row-major `[batch, window, features]`; shorter histories
    /// are left-padded by the caller with the first row.
    pub fn predict(&self, windows: &[f32], batch: usize) -> Result<Vec<Forecast>> {
        let want = batch * self.card.window * self.card.features.len();
        if batch == 0 || windows.len() != want {
            return Err(ModelError::Data(format!(
                "predict got {} values; {batch} windows of {} rows x {} features need {want}",
                windows.len(),
                self.card.window,
                self.card.features.len()
            )));
        }
        let smoothed;
        let windows = if self.card.ema_alpha < 1.0 {
            let mut w = windows.to_vec();
            smoothing::ema_windows(
                &mut w,
                self.card.window,
                self.card.features.len(),
                self.card.ema_alpha,
            );
            smoothed = w;
            &smoothed[..]
        } else {
            windows
        };
        let (window, nf) = (self.card.window, self.card.features.len());
        let mut days = vec![0.0f32; batch];
        for (k, m) in self.members.iter().enumerate() {
            let rows = self.card.member_windows.get(k).copied().unwrap_or(window);
            let p = if rows < window {
                m.predict(&dataset::tail_rows(windows, window, nf, rows), batch)?
            } else {
                m.predict(windows, batch)?
            };
            for (d, p) in days.iter_mut().zip(p) {
                *d += p;
            }
        }
        let k = self.members.len() as f32;
        Ok(days
            .into_iter()
            .map(|d| {
                // Negative days mean "overdue"; the target never goes below 0, so neither do we.
                // A NaN stays NaN (`f32::max` would turn it into 0, "due now"): the caller
                // must see that the model failed.
                let days = d / k;
                let days = if days.is_nan() { days } else { days.max(0.0) };
                let (p10, p90) = self.card.interval.bounds(days);
                Forecast { days, p10, p90 }
            })
            .collect())
    }
}
