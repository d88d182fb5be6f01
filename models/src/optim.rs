//! Optimizers, learning-rate schedules and losses for training, over Candle variables.
//!
//! The optimizers follow Keras's definitions (the seed's stack), epsilon placement included, and are
//! pinned against an independent NumPy implementation in `tests/reference/gen_nadam.py`.

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adam,
    /// Adam with Nesterov momentum and Keras's momentum schedule; the seed's winner.
    #[default]
    Nadam,
    Rmsprop,
    /// Plain SGD with (heavy-ball) momentum.
    Sgd,
}

/// Hyper-parameters; Keras's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    /// RMSprop's decay of the squared-gradient average.
    pub rho: f64,
    /// Momentum of SGD and RMSprop (0 disables it).
    pub momentum: f64,
    /// Keep an exponential moving average of the weights, as Keras's `use_ema` does: the first
    /// step copies them, each later one moves the average this fraction of the way less. What
    /// validation scores and what training keeps is the average, which smooths the step-to-step
    /// noise a large learning rate leaves in the weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_momentum: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Nadam,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            rho: 0.9,
            momentum: 0.9,
            ema_momentum: None,
        }
    }
}

pub struct Optimizer {
    cfg: OptimizerConfig,
    iterations: u64,
    /// Nadam's running product of the momentum schedule.
    u_product: f64,
    /// Per variable: first moment / velocity, second moment / momentum buffer.
    state: Vec<(Tensor, Tensor)>,
    /// The weights' moving average (`ema_momentum`), empty until the first step.
    average: Vec<Tensor>,
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, vars: &[Var]) -> Result<Self> {
        let state = vars
            .iter()
            .map(|v| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            iterations: 0,
            u_product: 1.0,
            state,
            average: Vec::new(),
        })
    }

    /// The moving average of the weights after the steps so far; `None` when `ema_momentum` is
    /// off or no step has been taken.
    pub fn averaged(&self) -> Option<&[Tensor]> {
        (!self.average.is_empty()).then_some(&self.average[..])
    }

    /// One update of `vars` (the same list, in the same order, as given to `new`) with `grads`.
    pub fn step(&mut self, vars: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
        let c = &self.cfg;
        let t = (self.iterations + 1) as f64;
        // Nadam's schedule for this step and the next (Keras: u_t and u_{t+1}).
        let u_t = c.beta_1 * (1.0 - 0.5 * 0.96f64.powf(0.004 * t));
        let u_t1 = c.beta_1 * (1.0 - 0.5 * 0.96f64.powf(0.004 * (t + 1.0)));
        let u_prod_t = self.u_product * u_t;
        let u_prod_t1 = u_prod_t * u_t1;
        for ((var, g), (s1, s2)) in vars.iter().zip(grads).zip(self.state.iter_mut()) {
            match c.kind {
                OptimizerKind::Adam => {
                    let alpha = lr * (1.0 - c.beta_2.powf(t)).sqrt() / (1.0 - c.beta_1.powf(t));
                    *s1 = ((&*s1 * c.beta_1)? + (g * (1.0 - c.beta_1))?)?;
                    *s2 = ((&*s2 * c.beta_2)? + (g.sqr()? * (1.0 - c.beta_2))?)?;
                    let upd = (&*s1 / (s2.sqrt()? + c.epsilon)?)?;
                    var.set(&(var.as_tensor() - (upd * alpha)?)?)?;
                }
                OptimizerKind::Nadam => {
                    *s1 = ((&*s1 * c.beta_1)? + (g * (1.0 - c.beta_1))?)?;
                    *s2 = ((&*s2 * c.beta_2)? + (g.sqr()? * (1.0 - c.beta_2))?)?;
                    let m_hat = ((&*s1 * (u_t1 / (1.0 - u_prod_t1)))?
                        + (g * ((1.0 - u_t) / (1.0 - u_prod_t)))?)?;
                    let v_hat = (&*s2 * (1.0 / (1.0 - c.beta_2.powf(t))))?;
                    let upd = (m_hat / (v_hat.sqrt()? + c.epsilon)?)?;
                    var.set(&(var.as_tensor() - (upd * lr)?)?)?;
                }
                OptimizerKind::Rmsprop => {
                    *s1 = ((&*s1 * c.rho)? + (g.sqr()? * (1.0 - c.rho))?)?;
                    let inc = ((g * lr)? / (&*s1 + c.epsilon)?.sqrt()?)?;
                    let inc = if c.momentum > 0.0 {
                        *s2 = ((&*s2 * c.momentum)? + inc)?;
                        s2.clone()
                    } else {
                        inc
                    };
                    var.set(&(var.as_tensor() - inc)?)?;
                }
                OptimizerKind::Sgd => {
                    *s1 = ((&*s1 * c.momentum)? - (g * lr)?)?;
                    var.set(&(var.as_tensor() + &*s1)?)?;
                }
            }
        }
        if let Some(m) = c.ema_momentum {
            self.average = if self.average.is_empty() {
                vars.iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<Result<_>>()?
            } else {
                (self.average.iter().zip(vars))
                    .map(|(a, v)| (a * m)? + (v.as_tensor() * (1.0 - m))?)
                    .collect::<Result<_>>()?
            };
        }
        self.u_product = u_prod_t;
        self.iterations += 1;
        Ok(())
    }
}

/// Scales `grads` so their joint L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    if norm > max_norm && norm.is_finite() {
        let k = max_norm / norm;
        for g in grads.iter_mut() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

/// Learning rate over epochs. `plateau` lowers the rate when the validation loss stops improving.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// Multiplies the rate by `gamma` every `every` epochs.
    Step { every: usize, gamma: f64 },
    /// `lr * gamma^epoch`.
    Exponential { gamma: f64 },
    /// Half a cosine from `lr` down to `min_lr` over `epochs` epochs (default: all of them).
    Cosine {
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        epochs: Option<usize>,
    },
    /// Multiplies the rate by `factor` after `patience` epochs without a better validation loss.
    Plateau {
        factor: f64,
        patience: usize,
        #[serde(default)]
        min_lr: f64,
    },
}

pub struct LrSchedule {
    schedule: Schedule,
    base: f64,
    total_epochs: usize,
    plateau_lr: f64,
    best: f64,
    bad_epochs: usize,
}

impl LrSchedule {
    pub fn new(schedule: Schedule, base: f64, total_epochs: usize) -> Self {
        Self {
            schedule,
            base,
            total_epochs,
            plateau_lr: base,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// Rate for `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.base,
            Schedule::Step { every, gamma } => {
                self.base * gamma.powi((epoch / every.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => self.base * gamma.powi(epoch as i32),
            Schedule::Cosine { min_lr, epochs } => {
                let n = epochs.unwrap_or(self.total_epochs).max(1);
                let p = (epoch.min(n) as f64) / n as f64;
                min_lr + 0.5 * (self.base - min_lr) * (1.0 + (std::f64::consts::PI * p).cos())
            }
            Schedule::Plateau { .. } => self.plateau_lr,
        }
    }

    /// Tells the schedule how the epoch ended.
    pub fn observe(&mut self, val_loss: f64) {
        if let Schedule::Plateau {
            factor,
            patience,
            min_lr,
        } = self.schedule
        {
            if val_loss < self.best {
                self.best = val_loss;
                self.bad_epochs = 0;
            } else {
                self.bad_epochs += 1;
                if self.bad_epochs > patience {
                    self.plateau_lr = (self.plateau_lr * factor).max(min_lr);
                    self.bad_epochs = 0;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    #[default]
    Mse,
    Mae,
    /// Quadratic within `huber_delta` of the target, linear beyond.
    Huber,
}

/// Mean loss of `pred` against `target` (same shape), differentiable.
pub fn loss(kind: LossKind, pred: &Tensor, target: &Tensor, huber_delta: f64) -> Result<Tensor> {
    let d = (pred - target)?;
    match kind {
        LossKind::Mse => d.sqr()?.mean_all(),
        LossKind::Mae => d.abs()?.mean_all(),
        LossKind::Huber => {
            let r = d.abs()?;
            let quad = r.clamp(0.0, huber_delta)?;
            let lin = (&r - &quad)?;
            ((quad.sqr()? * 0.5)? + (lin * huber_delta)?)?.mean_all()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grad(w: &[f32]) -> Vec<f32> {
        let mut g: Vec<f32> = w.iter().map(|x| x * x * x - 1.0).collect();
        g[0] += w[1];
        g[1] += w[0];
        g
    }

    fn trajectory(cfg: OptimizerConfig, lr: f64, w0: &[f32], steps: usize) -> Vec<Vec<f32>> {
        let dev = Device::Cpu;
        let var = Var::from_slice(w0, w0.len(), &dev).unwrap();
        let vars = [var.clone()];
        let mut opt = Optimizer::new(cfg, &vars).unwrap();
        (0..steps)
            .map(|_| {
                let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
                let g = Tensor::from_vec(grad(&w), w.len(), &dev).unwrap();
                opt.step(&vars, &[g], lr).unwrap();
                var.as_tensor().to_vec1().unwrap()
            })
            .collect()
    }

    fn reference(name: &str) -> (Vec<f32>, f64, Vec<Vec<f64>>) {
        let text = include_str!("../tests/reference/optimizers.json");
        let r: serde_json::Value = serde_json::from_str(text).unwrap();
        let w0: Vec<f32> = serde_json::from_value(r["w0"].clone()).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(r[name].clone()).unwrap();
        (w0, r["lr"].as_f64().unwrap(), want)
    }

    fn check(name: &str, cfg: OptimizerConfig) {
        let (w0, lr, want) = reference(name);
        let got = trajectory(cfg, lr, &w0, want.len());
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "{name} step {step}: got {g:?}, want {w:?}"
                );
            }
        }
    }

    #[test]
    fn nadam_matches_numpy_reference() {
        check("nadam", OptimizerConfig::default());
    }

    #[test]
    fn adam_rmsprop_and_sgd_match_numpy_reference() {
        let kind = |kind, momentum| OptimizerConfig {
            kind,
            momentum,
            ..Default::default()
        };
        check("adam", kind(OptimizerKind::Adam, 0.0));
        check("rmsprop", kind(OptimizerKind::Rmsprop, 0.0));
        check("rmsprop_momentum", kind(OptimizerKind::Rmsprop, 0.5));
        check("sgd_momentum", kind(OptimizerKind::Sgd, 0.9));
    }

    #[test]
    fn the_weight_average_matches_keras_use_ema_in_numpy() {
        let (w0, lr, want) = reference("nadam_ema_0_9");
        let dev = Device::Cpu;
        let var = Var::from_slice(&w0, w0.len(), &dev).unwrap();
        let vars = [var.clone()];
        let cfg = OptimizerConfig {
            ema_momentum: Some(0.9),
            ..Default::default()
        };
        let mut opt = Optimizer::new(cfg, &vars).unwrap();
        assert!(opt.averaged().is_none(), "nothing to average before a step");
        for (step, w) in want.iter().enumerate() {
            let g = Tensor::from_vec(grad(&var.as_tensor().to_vec1().unwrap()), w0.len(), &dev);
            opt.step(&vars, &[g.unwrap()], lr).unwrap();
            let got: Vec<f32> = opt.averaged().unwrap()[0].to_vec1().unwrap();
            for (a, b) in got.iter().zip(w) {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "step {step}: got {got:?}, want {w:?}"
                );
            }
        }
        // The average trails the weights, which follow plain Nadam unchanged.
        check(
            "nadam",
            OptimizerConfig {
                ema_momentum: Some(0.9),
                ..Default::default()
            },
        );
    }

    #[test]
    fn clipping_rescales_to_the_global_norm() {
        let dev = Device::Cpu;
        let mut g = vec![
            Tensor::new(&[3.0f32], &dev).unwrap(),
            Tensor::new(&[4.0f32], &dev).unwrap(),
        ];
        assert!((clip_global_norm(&mut g, 1.0).unwrap() - 5.0).abs() < 1e-9);
        let a: Vec<f32> = g[0].to_vec1().unwrap();
        let b: Vec<f32> = g[1].to_vec1().unwrap();
        assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
        clip_global_norm(&mut g, 10.0).unwrap();
        assert!((g[0].to_vec1::<f32>().unwrap()[0] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn schedules() {
        let s = LrSchedule::new(
            Schedule::Step {
                every: 2,
                gamma: 0.5,
            },
            1.0,
            10,
        );
        assert_eq!([s.lr(0), s.lr(1), s.lr(2), s.lr(5)], [1.0, 1.0, 0.5, 0.25]);
        let s = LrSchedule::new(Schedule::Exponential { gamma: 0.9 }, 1.0, 10);
        assert!((s.lr(2) - 0.81).abs() < 1e-12);
        let s = LrSchedule::new(
            Schedule::Cosine {
                min_lr: 0.1,
                epochs: None,
            },
            1.0,
            10,
        );
        assert!((s.lr(0) - 1.0).abs() < 1e-12);
        assert!((s.lr(5) - 0.55).abs() < 1e-12);
        assert!((s.lr(10) - 0.1).abs() < 1e-12);
        let mut s = LrSchedule::new(
            Schedule::Plateau {
                factor: 0.5,
                patience: 1,
                min_lr: 0.3,
            },
            1.0,
            10,
        );
        for v in [1.0, 0.9, 0.95, 0.95] {
            s.observe(v);
        }
        assert_eq!(s.lr(4), 0.5);
        for v in [0.95, 0.95, 0.95, 0.95] {
            s.observe(v);
        }
        assert_eq!(s.lr(8), 0.3, "floored at min_lr");
    }

    #[test]
    fn losses() {
        let dev = Device::Cpu;
        let p = Tensor::new(&[0.0f32, 3.0], &dev).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0], &dev).unwrap();
        let v = |k| loss(k, &p, &t, 1.0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(v(LossKind::Mse), 5.0);
        assert_eq!(v(LossKind::Mae), 2.0);
        // 0.5 * 1^2 for the first, 0.5 + 1 * (3 - 1) for the second
        assert_eq!(v(LossKind::Huber), (0.5 + 2.5) / 2.0);
    }
}
