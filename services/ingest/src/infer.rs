//! Inference: forecast requests in, batched (size or linger, whichever first), scaled and run off
//! the async runtime, forecasts out to the sink. The model may change between batches (hot reload
//! of the registry's CURRENT), never within one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::batch::Batcher;
use crate::config::Config;
use crate::forecast::{forecast, window_stats};
use crate::metrics::{Metrics, labels};
use crate::model::{Model, Prediction};
use crate::offsets::Ack;
use crate::pipeline::ForecastRequest;
use crate::quality::{Quality, QualityConfig};
use crate::serving::{Fitted, load_for_windows};
use crate::shadow::ShadowWatch;
use crate::sink::WriteItem;

pub struct Inference {
    pub model: Arc<dyn Model>,
    pub config: Config,
    pub device: candle_core::Device,
    pub metrics: Metrics,
    pub acks: mpsc::UnboundedSender<Ack>,
}

impl Inference {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<ForecastRequest>,
        tx: mpsc::Sender<WriteItem>,
    ) -> anyhow::Result<()> {
        let Inference {
            mut model,
            config,
            device,
            metrics,
            acks,
        } = self;
        // Windows hold rows in the feature order of the model the service started with; a model
        // reloaded since may list the same features in another order.
        let window_features = model.features().to_vec();
        // Where the serving model's features sit in a window row; None while they are in order.
        let mut columns: Option<Arc<[usize]>> = None;
        let mut stats = window_stats(&window_features, &*model);
        let mut batcher = Batcher::new(config.batch_size, config.linger);
        let mut shadows = ShadowWatch::new(&config, device.clone(), &*model);
        let mut reloader = Reloader::new(&config, device, &*model);
        loop {
            let batch = match batcher.deadline() {
                None => match rx.recv().await {
                    Some(r) => batcher.push(r, Instant::now()),
                    None => break,
                },
                Some(deadline) => {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Some(r) => batcher.push(r, Instant::now()),
                            None => Some(batcher.take()),
                        },
                        _ = tokio::time::sleep_until(deadline.into()) => batcher.poll(Instant::now()),
                    }
                }
            };
            let Some(batch) = batch else { continue };
            if batch.is_empty() {
                break;
            }
            // Between batches: the only place the model may change, so a batch is all one version.
            if let Some(f) = reloader.check(&*model, &metrics).await {
                (model, columns) = (f.model, f.columns);
                stats = window_stats(&window_features, &*model);
            }
            let shadow = shadows.check(&metrics).await;
            metrics.batch_size.observe(batch.len() as f64);
            let started = Instant::now();
            let (batch, predictions) = predict(model.clone(), columns.clone(), batch).await?;
            metrics
                .inference_seconds
                .observe(started.elapsed().as_secs_f64());
            let predictions = predictions.context("inference failed")?;
            let (batch, shadow_predictions) = match &shadow {
                Some(s) => predict_shadow(s, batch, &metrics).await?,
                None => (batch, None),
            };
            let mut shadow_predictions = shadow_predictions.map(Vec::into_iter);
            for (r, p) in batch.into_iter().zip(predictions) {
                let epoch = r.epoch;
                let q = r.evidence.assess(&r.raw, &stats, &config.quality);
                count_flags(&metrics, &q, &window_features, &config.quality);
                let shadow_forecast = match (&shadow, shadow_predictions.as_mut()) {
                    (Some(s), Some(ps)) => ps.next().and_then(|sp| {
                        forecast(&*s.model, &r, sp, (&q, &window_features), &config.quality)
                            .map_err(|_| metrics.shadow_failures.inc())
                            .ok()
                            .map(Box::new)
                    }),
                    _ => None,
                };
                match forecast(&*model, &r, p, (&q, &window_features), &config.quality) {
                    Ok(served) => tx
                        .send(WriteItem::Forecast {
                            served,
                            shadow: shadow_forecast,
                            epoch,
                        })
                        .await
                        .map_err(|_| anyhow::anyhow!("writer stopped"))?,
                    Err(r) => {
                        // A NaN written as a number would read as "0 days: due now" and raise a
                        // false alert; it is counted and dropped instead.
                        metrics
                            .forecasts_nonfinite
                            .get_or_create(&labels(&[
                                ("model", model.name()),
                                ("model_version", model.version()),
                            ]))
                            .inc();
                        tracing::error!(
                            model = model.name(),
                            version = model.version(),
                            machine_id = r.machine_id,
                            ts_ms = r.ts_ms,
                            "the model returned a non-finite forecast; not written"
                        );
                        let _ = acks.send(Ack::Dropped(epoch));
                    }
                }
            }
        }
        Ok(())
    }
}

fn count_flags(metrics: &Metrics, q: &Quality, features: &[String], cfg: &QualityConfig) {
    for (sensor, flag) in q.raised(features) {
        metrics
            .input_flags
            .get_or_create(&labels(&[("sensor", sensor), ("flag", flag)]))
            .inc();
    }
    if q.low_confidence(cfg) {
        metrics.forecasts_low_confidence.inc();
    }
}

/// Runs the shadow on the batch the serving model just ran on. Its failure is counted and logged,
/// and the batch is served without shadow forecasts.
async fn predict_shadow(
    s: &Fitted,
    batch: Vec<ForecastRequest>,
    metrics: &Metrics,
) -> anyhow::Result<(Vec<ForecastRequest>, Option<Vec<Prediction>>)> {
    let started = Instant::now();
    let (batch, p) = predict(s.model.clone(), s.columns.clone(), batch).await?;
    metrics
        .shadow_inference_seconds
        .observe(started.elapsed().as_secs_f64());
    match p {
        Ok(p) => Ok((batch, Some(p))),
        Err(e) => {
            metrics.shadow_failures.inc_by(batch.len() as u64);
            tracing::error!(
                version = s.model.version(),
                error = format!("{e:#}"),
                "shadow inference failed; served forecasts are unaffected"
            );
            Ok((batch, None))
        }
    }
}

/// Scales the batch's windows for `model` and runs it, off the async runtime.
async fn predict(
    model: Arc<dyn Model>,
    columns: Option<Arc<[usize]>>,
    batch: Vec<ForecastRequest>,
) -> anyhow::Result<(Vec<ForecastRequest>, anyhow::Result<Vec<Prediction>>)> {
    Ok(tokio::task::spawn_blocking(move || {
        let (n, w, nf) = (batch.len(), model.window(), model.features().len());
        let mut scaled = vec![0.0f32; n * w * nf];
        let mut reordered = vec![0.0f32; nf];
        for (i, r) in batch.iter().enumerate() {
            for row in 0..w {
                let at = (i * w + row) * nf;
                let mut raw = &r.raw[row * nf..(row + 1) * nf];
                if let Some(map) = &columns {
                    for (dst, &j) in reordered.iter_mut().zip(map.iter()) {
                        *dst = raw[j];
                    }
                    raw = &reordered;
                }
                model.scale_row(raw, &mut scaled[at..at + nf]);
            }
        }
        let p = model.predict(&scaled, n);
        (batch, p)
    })
    .await?)
}

/// Watches the registry's CURRENT and loads a new version when it moves.
struct Reloader {
    config: Config,
    device: candle_core::Device,
    window_features: Vec<String>,
    window: usize,
    last_check: Instant,
    serving_dir: Option<PathBuf>,
    refused: Option<PathBuf>,
}

impl Reloader {
    fn new(config: &Config, device: candle_core::Device, windows: &dyn Model) -> Self {
        Reloader {
            serving_dir: maintcast_models::registry::current_version_dir(
                &config.registry,
                &config.model,
            )
            .ok(),
            config: config.clone(),
            device,
            window_features: windows.features().to_vec(),
            window: windows.window(),
            last_check: Instant::now(),
            refused: None,
        }
    }

    /// Loads CURRENT if it moved. A model that fails to load, or cannot run on the windows
    /// (`load_for_windows`), is refused once and the old one stays.
    async fn check(&mut self, current: &dyn Model, metrics: &Metrics) -> Option<Fitted> {
        if self.last_check.elapsed() < self.config.reload_interval {
            return None;
        }
        self.last_check = Instant::now();
        let dir = maintcast_models::registry::current_version_dir(
            &self.config.registry,
            &self.config.model,
        )
        .ok()?;
        if Some(&dir) == self.serving_dir.as_ref() || Some(&dir) == self.refused.as_ref() {
            return None;
        }
        match load_for_windows(&dir, &self.device, &self.window_features, self.window).await {
            Ok(f) => {
                tracing::info!(
                    from = current.version(),
                    to = f.model.version(),
                    "model reloaded"
                );
                metrics
                    .model_reloads
                    .get_or_create(&labels(&[("result", "ok")]))
                    .inc();
                self.serving_dir = Some(dir);
                Some(f)
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = format!("{e:#}"), "refusing new model; the old one keeps serving (one over other features or another window needs an ingest restart)");
                metrics
                    .model_reloads
                    .get_or_create(&labels(&[("result", "refused")]))
                    .inc();
                self.refused = Some(dir);
                None
            }
        }
    }
}
