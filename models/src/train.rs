//! The training loop: mini-batches over windows, gradients from the fused CPU trainer (`fused_train`,
//! backpropagation written by hand) or, on other devices, Candle's autograd through
//! `Network::forward`; an optimizer step per batch, validation after every epoch (of the weights'
//! moving average when the optimizer keeps one), early stopping that restores the best weights.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::dataset::Windows;
use crate::error::{ModelError, Result};
use crate::fused_train::FusedTrainer;
use crate::metrics;
use crate::network::{ArchConfig, Network};
use crate::optim::{self, LrSchedule, Optimizer};

/// What one epoch did; handed to the `on_epoch` hook (TensorBoard, InfluxDB `training_run`, logs).
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub lr: f64,
    pub elapsed_s: f64,
    /// Whether this epoch is the best so far (its weights are the ones kept).
    pub best: bool,
}

pub struct Fitted {
    pub varmap: VarMap,
    pub network: Network,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub train_s: f64,
}

/// Re-draws every weight from `seed` the way Keras initialises its LSTM and Dense layers (Glorot
/// uniform inputs, orthogonal recurrent weights, forget-gate bias 1), so a run is reproducible from
/// its seed; Candle's own initialisers draw from an unseedable thread RNG on the CPU.
pub fn init_weights(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let vars = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let values: Vec<f32> = if name.ends_with("weight_hh") {
            orthogonal_t(dims[1], dims[0], &mut rng)
        } else if name.ends_with("weight_ih") || name.ends_with("weight") {
            let limit = (6.0 / (dims[0] + dims[1]) as f64).sqrt();
            (0..dims[0] * dims[1])
                .map(|_| rng.random_range(-limit..limit) as f32)
                .collect()
        } else if name.ends_with("bias_ih") {
            // gate order i, f, g, o: the second quarter is the forget gate
            let h = dims[0] / 4;
            (0..dims[0])
                .map(|k| if (h..2 * h).contains(&k) { 1.0 } else { 0.0 })
                .collect()
        } else {
            vec![0.0; dims.iter().product()]
        };
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// A `[cols, rows]` row-major matrix whose transpose (`rows x cols`, rows <= cols) has orthonormal
/// rows: Keras's orthogonal recurrent kernel `[h, 4h]`, stored as PyTorch's `[4h, h]`.
fn orthogonal_t(rows: usize, cols: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut m: Vec<Vec<f64>> = (0..rows)
        .map(|_| (0..cols).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    for i in 0..rows {
        let (done, rest) = m.split_at_mut(i);
        let row = &mut rest[0];
        for prev in done.iter() {
            let d: f64 = row.iter().zip(prev).map(|(a, b)| a * b).sum();
            row.iter_mut().zip(prev).for_each(|(a, b)| *a -= d * b);
        }
        let n = m[i].iter().map(|v| v * v).sum::<f64>().sqrt();
        m[i].iter_mut().for_each(|v| *v /= n);
    }
    (0..cols)
        .flat_map(|k| m.iter().map(move |row| row[k] as f32))
        .collect()
}

/// Trains a fresh network of shape `arch` on `train`, early-stopping on `val` (or on the training
/// loss when `val` is empty). `on_epoch` sees every epoch as it ends.
pub fn fit(
    arch: &ArchConfig,
    train: &Windows,
    val: &Windows,
    cfg: &TrainConfig,
    seed: u64,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<Fitted> {
    if train.is_empty() {
        return Err(ModelError::Data(
            "no training windows: are histories shorter than the window, or without events?".into(),
        ));
    }
    let varmap = VarMap::new();
    let network = Network::new(VarBuilder::from_varmap(&varmap, DType::F32, device), arch)?;
    init_weights(&varmap, seed)?;
    // Start the head at the mean label. From zero, the fastest way to the mean of labels near 100
    // is to saturate the LSTM units (an optimizer moves the lone bias by ~lr a step), and a
    // saturated network stops learning from its inputs: FD001 runs got stuck predicting the mean.
    let mean = train.y.iter().map(|&v| v as f64).sum::<f64>() / train.len() as f64;
    if let Some(bias) = varmap.data().lock().unwrap().get("head.bias") {
        bias.set(&Tensor::new(&[mean as f32], device)?)?;
    }
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    let vars: Vec<Var> = {
        let data = varmap.data().lock().unwrap();
        names.iter().map(|n| data[n].clone()).collect()
    };
    let mut opt = Optimizer::new(cfg.optimizer.clone(), &vars)?;
    // On the CPU a hand-written backward pass replaces autograd, whose per-op overhead made an
    // epoch ~20x slower; other devices keep autograd over the composed ops. MAINTCAST_AUTOGRAD=1
    // forces autograd on the CPU too, to compare the two.
    let mut fused = if device.is_cpu() && std::env::var_os("MAINTCAST_AUTOGRAD").is_none() {
        Some(FusedTrainer::new(arch, &names, seed ^ 0xd40f)?)
    } else {
        None
    };
    let mut schedule = LrSchedule::new(cfg.schedule.clone(), cfg.lr, cfg.epochs);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let per = train.window * train.n_features;
    let mut xb = Vec::with_capacity(cfg.batch_size * per);
    let mut yb = Vec::with_capacity(cfg.batch_size);

    let started = Instant::now();
    let mut reports: Vec<EpochReport> = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    // Halved at each rollback after a loss spike, on top of the schedule.
    let mut lr_scale = 1.0;
    let mut prev_loss: Option<f64> = None;
    for epoch in 0..cfg.epochs {
        let lr = schedule.lr(epoch) * lr_scale;
        order.shuffle(&mut rng);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            xb.clear();
            yb.clear();
            for &i in chunk {
                xb.extend_from_slice(train.get(i));
                yb.push(train.y[i]);
            }
            let b = chunk.len();
            let (batch_loss, mut g) = if let Some(fused) = fused.as_mut() {
                fused.load(&vars)?;
                let l = fused.step(&xb, &yb, cfg.loss, cfg.huber_delta, true)?;
                (l, fused.grad_tensors(&vars)?)
            } else {
                let x = Tensor::from_slice(&xb, (b, train.window, train.n_features), device)?;
                let y = Tensor::from_slice(&yb, b, device)?;
                let pred = network.forward(&x, true)?;
                let loss = optim::loss(cfg.loss, &pred, &y, cfg.huber_delta)?;
                let grads = loss.backward()?;
                let g = vars
                    .iter()
                    .map(|v| {
                        grads
                            .get(v.as_tensor())
                            .cloned()
                            .map_or_else(|| v.zeros_like(), Ok)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                (loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, g)
            };
            if let Some(max) = cfg.clip_norm {
                optim::clip_global_norm(&mut g, max)?;
            }
            opt.step(&vars, &g, lr)?;
            loss_sum += batch_loss * b as f64;
            seen += b;
        }
        let train_loss = loss_sum / seen as f64;
        if let (true, Some((_, at, snapshot))) =
            (spiked(cfg.spike_factor, prev_loss, train_loss), &best)
        {
            // An epoch that ends with Adam's moments full of a spike's gradients rarely finds its
            // way back before patience runs out (FD001: a member stuck at val RMSE 27 beside
            // two at 12); from the best weights with fresh moments and a smaller step it does.
            for (v, t) in vars.iter().zip(snapshot) {
                v.set(t)?;
            }
            opt = Optimizer::new(cfg.optimizer.clone(), &vars)?;
            lr_scale *= 0.5;
            tracing::warn!(
                "epoch {}: training loss {train_loss:.3} after {:.3}: back to epoch {}'s weights, \
                 learning rate halved",
                epoch + 1,
                prev_loss.unwrap_or(f64::NAN),
                at + 1
            );
            prev_loss = Some(reports[*at].train_loss);
        } else {
            prev_loss = Some(train_loss);
        }
        // With a weight average, the average is what is scored and kept; training goes on from
        // the raw weights.
        let raw = match opt.averaged() {
            Some(average) => {
                let raw = (vars.iter())
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<Vec<_>>>()?;
                for (v, a) in vars.iter().zip(average) {
                    v.set(a)?;
                }
                Some(raw)
            }
            None => None,
        };
        network.refresh_inference_weights();
        let (val_loss, val_mae, val_rmse) = if val.is_empty() {
            (train_loss, f64::NAN, f64::NAN)
        } else {
            let pred = predict_all(&network, val)?;
            let p = Tensor::from_slice(&pred, pred.len(), &Device::Cpu)?;
            let t = Tensor::from_slice(&val.y, val.len(), &Device::Cpu)?;
            let l = optim::loss(cfg.loss, &p, &t, cfg.huber_delta)?.to_scalar::<f32>()? as f64;
            (l, metrics::mae(&pred, &val.y), metrics::rmse(&pred, &val.y))
        };
        schedule.observe(val_loss);
        let improved = best
            .as_ref()
            .is_none_or(|(b, _, _)| val_loss < b - cfg.min_delta);
        if improved {
            let snapshot = vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?;
            best = Some((val_loss, epoch, snapshot));
        }
        for (v, t) in vars.iter().zip(raw.iter().flatten()) {
            v.set(t)?;
        }
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss,
            val_loss,
            val_mae,
            val_rmse,
            lr,
            elapsed_s: started.elapsed().as_secs_f64(),
            best: improved,
        };
        on_epoch(&report);
        reports.push(report);
        let best_epoch = best.as_ref().map_or(0, |b| b.1);
        if !val_loss.is_finite() || epoch - best_epoch >= cfg.patience {
            break;
        }
    }
    let (_, best_epoch, snapshot) = best.expect("at least one epoch ran");
    for (v, t) in vars.iter().zip(&snapshot) {
        v.set(t)?;
    }
    network.refresh_inference_weights();
    Ok(Fitted {
        varmap,
        network,
        epochs: reports,
        best_epoch: best_epoch + 1,
        train_s: started.elapsed().as_secs_f64(),
    })
}

/// Whether an epoch's training loss is a spike: `factor` times the previous epoch's, or not a
/// number.
fn spiked(factor: Option<f64>, prev: Option<f64>, loss: f64) -> bool {
    match (factor, prev) {
        (Some(f), Some(p)) => !loss.is_finite() || loss > f * p,
        _ => false,
    }
}

/// Forecasts for every window, in chunks so memory stays bounded.
pub fn predict_all(network: &Network, w: &Windows) -> Result<Vec<f32>> {
    const CHUNK: usize = 1024;
    let per = w.window * w.n_features;
    let mut out = Vec::with_capacity(w.len());
    for chunk in w.x.chunks(CHUNK * per) {
        out.extend(network.predict(chunk, chunk.len() / per)?);
    }
    Ok(out)
}

/// A log line per epoch, for the command line.
pub fn log_epoch(r: &EpochReport) {
    tracing::info!(
        "epoch {:>3}  train_loss {:>9.3}  val_mae {:>7.3}  val_rmse {:>7.3}  lr {:.2e}  {:>6.1}s{}",
        r.epoch,
        r.train_loss,
        r.val_mae,
        r.val_rmse,
        r.lr,
        r.elapsed_s,
        if r.best { "  *" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_a_rise_by_the_factor_or_not_a_number() {
        assert!(spiked(Some(2.0), Some(100.0), 201.0));
        assert!(!spiked(Some(2.0), Some(100.0), 199.0));
        assert!(spiked(Some(2.0), Some(100.0), f64::NAN));
        assert!(!spiked(None, Some(100.0), 1e9), "off unless configured");
        assert!(
            !spiked(Some(2.0), None, 1e9),
            "the first epoch has nothing to rise from"
        );
    }

    /// Plain SGD at a rate that makes the training loss rise from one epoch to the next.
    fn bumpy_run(spike_factor: Option<f64>) -> Fitted {
        bumpy_run_with(spike_factor, None)
    }

    fn bumpy_windows() -> Windows {
        let (n, window, nf) = (256, 4, 2);
        let mut rng = StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..n * window * nf).map(|_| rng.random::<f32>()).collect();
        let y: Vec<f32> = (0..n)
            .map(|i| {
                125.0
                    * x[i * window * nf..(i + 1) * window * nf]
                        .iter()
                        .sum::<f32>()
                    / 8.0
            })
            .collect();
        Windows {
            x,
            y,
            window,
            n_features: nf,
        }
    }

    fn bumpy_run_with(spike_factor: Option<f64>, ema_momentum: Option<f64>) -> Fitted {
        let w = bumpy_windows();
        let arch = ArchConfig {
            n_features: w.n_features,
            hidden: vec![8],
            dropout: 0.0,
            pooling: Default::default(),
        };
        let cfg = TrainConfig {
            epochs: 12,
            batch_size: 32,
            lr: 0.1,
            patience: 12,
            optimizer: optim::OptimizerConfig {
                kind: optim::OptimizerKind::Sgd,
                ema_momentum,
                ..Default::default()
            },
            spike_factor,
            ..Default::default()
        };
        fit(&arch, &w, &w, &cfg, 0, &Device::Cpu, &mut |_| {}).unwrap()
    }

    #[test]
    fn with_a_weight_average_the_average_is_scored_and_kept() {
        let plain = bumpy_run_with(None, None);
        let averaged = bumpy_run_with(None, Some(0.9));
        assert_ne!(
            plain.epochs[0].val_loss, averaged.epochs[0].val_loss,
            "the first epoch scores the average, not the weights it ends on"
        );
        // What the network forecasts after fit is what its best epoch scored.
        let w = bumpy_windows();
        let pred = predict_all(&averaged.network, &w).unwrap();
        let mse = pred
            .iter()
            .zip(&w.y)
            .map(|(p, y)| ((p - y) as f64).powi(2))
            .sum::<f64>()
            / w.len() as f64;
        let best = averaged.epochs[averaged.best_epoch - 1].val_loss;
        assert!(
            (mse - best).abs() < 1e-3 * best,
            "kept {mse}, best epoch scored {best}"
        );
    }

    #[test]
    fn a_loss_spike_rolls_back_to_the_best_weights_at_half_the_rate() {
        let rises =
            |f: &Fitted| (f.epochs.windows(2)).any(|p| p[1].train_loss > 1.2 * p[0].train_loss);
        let off = bumpy_run(None);
        assert!(rises(&off), "without a rise this test means nothing");
        assert!(off.epochs.iter().all(|e| e.lr == 0.1));
        let on = bumpy_run(Some(1.2));
        let at = (on.epochs.windows(2))
            .position(|p| p[1].lr < p[0].lr)
            .expect("a rollback halves the rate");
        assert_eq!(on.epochs[at + 1].lr, 0.05);
        // The epoch that spiked is scored with the weights it rolled back to.
        let best_before = (on.epochs[..at].iter())
            .map(|e| e.val_loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(on.epochs[at].val_loss, best_before);
    }

    #[test]
    fn orthogonal_init_has_orthonormal_columns_in_pytorch_layout() {
        let (h, four_h) = (8, 32);
        let mut rng = StdRng::seed_from_u64(1);
        let w = orthogonal_t(h, four_h, &mut rng); // [4h, h] row-major
        for a in 0..h {
            for b in 0..h {
                let d: f32 = (0..four_h).map(|k| w[k * h + a] * w[k * h + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-5, "({a},{b}) = {d}");
            }
        }
    }
}
