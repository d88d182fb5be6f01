//! The forecaster's network: a stack of LSTM layers and a dense head on the last hidden state.
//!
//! Weights are named and laid out like PyTorch's `nn.LSTM` (gate order i, f, g, o) followed by an
//! `nn.Linear`, so a model trained in PyTorch and saved as safetensors loads unchanged:
//!
//! | name                | shape           |
//! |---------------------|-----------------|
//! | `lstm.{l}.weight_ih` | `[4H_l, in_l]`  |
//! | `lstm.{l}.weight_hh` | `[4H_l, H_l]`   |
//! | `lstm.{l}.bias_ih`   | `[4H_l]`        |
//! | `lstm.{l}.bias_hh`   | `[4H_l]`        |
//! | `attn.weight`        | `[1, H_last]` (attention pooling only) |
//! | `head.weight`        | `[1, H_last]`; `[1, 2·H_last]` with attention pooling |
//! | `head.bias`          | `[1]`           |
//!
//! With [`Pooling::Attention`] the head reads `[h_T ; Σ_t α_t h_t]`, where `α = softmax_t(a·h_t)`
//! over the top layer's outputs and `a` is `attn.weight` (PyTorch: `nn.Linear(H, 1, bias=False)`
//! scoring each step, `softmax` over time, and `nn.Linear(2H, 1)` on the concatenation). Keeping
//! `h_T` beside the pooled state lets training fall back to the last-state model where pooling
//! does not help.
//!
//! Two forward passes share these weights. [`Network::forward`] is built from Candle ops so that
//! autograd trains it on any device; [`Network::predict`] runs a fused CPU kernel
//! ([`crate::lstm_avx512`] where the CPU has AVX-512, else [`crate::fused`]; no per-step tensors)
//! and [`crate::stepwise`] (one GEMM and one fused kernel a step) on a GPU.

use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, IndexOp, Result, Tensor, bail};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::cpu_kernel::{CpuKernel, Precision};
use crate::fused::{FusedLayer, FusedLstm};
pub use crate::pooling::Pooling;
use crate::pooling::attention_head;
use crate::stepwise::LayerWeights;

/// Shape of the network; stored in `model.json` so a saved model rebuilds itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// Inputs per timestep (sensors after constant ones were dropped).
    pub n_features: usize,
    /// Hidden size of each LSTM layer, input side first.
    pub hidden: Vec<usize>,
    /// Dropout applied to the output sequence of every LSTM layer but the last, in training only.
    pub dropout: f32,
    /// What the head reads from the top layer; models saved before this setting existed read the
    /// last state.
    #[serde(default)]
    pub pooling: Pooling,
}

impl ArchConfig {
    /// Rejects shapes the network cannot be built with, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.n_features == 0 {
            bail!("arch.n_features must be at least 1");
        }
        if self.hidden.is_empty() {
            bail!("arch.hidden must list at least one LSTM layer");
        }
        if let Some(l) = self.hidden.iter().position(|&h| h == 0) {
            bail!("arch.hidden[{l}] is 0; every LSTM layer needs at least one unit");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("arch.dropout must be in [0, 1), got {}", self.dropout);
        }
        Ok(())
    }

    /// Every weight the network reads, with its shape, in a stable order. Artifact loading uses
    /// this to refuse a file whose tensors do not match the card before building anything.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::with_capacity(4 * self.hidden.len() + 2);
        let mut n_in = self.n_features;
        for (l, &h) in self.hidden.iter().enumerate() {
            shapes.push((format!("lstm.{l}.weight_ih"), vec![4 * h, n_in]));
            shapes.push((format!("lstm.{l}.weight_hh"), vec![4 * h, h]));
            shapes.push((format!("lstm.{l}.bias_ih"), vec![4 * h]));
            shapes.push((format!("lstm.{l}.bias_hh"), vec![4 * h]));
            n_in = h;
        }
        if self.pooling == Pooling::Attention {
            shapes.push(("attn.weight".to_string(), vec![1, n_in]));
        }
        shapes.push((
            "head.weight".to_string(),
            vec![1, self.pooling.head_width(n_in)],
        ));
        shapes.push(("head.bias".to_string(), vec![1]));
        shapes
    }
}

struct LstmLayer {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    hidden: usize,
}

impl LstmLayer {
    fn new(vb: VarBuilder, n_in: usize, hidden: usize) -> Result<Self> {
        // PyTorch's default: every LSTM parameter uniform in ±1/sqrt(hidden). Only used when the
        // VarBuilder creates variables (training); loading from safetensors ignores the hint.
        let bound = 1.0 / (hidden as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight_ih: vb.get_with_hints((4 * hidden, n_in), "weight_ih", init)?,
            weight_hh: vb.get_with_hints((4 * hidden, hidden), "weight_hh", init)?,
            bias_ih: vb.get_with_hints(4 * hidden, "bias_ih", init)?,
            bias_hh: vb.get_with_hints(4 * hidden, "bias_hh", init)?,
            hidden,
        })
    }

    /// `seq`: [b, t, in]. Returns the whole output sequence [b, t, H], or only the last hidden
    /// state [b, H] when `last_only` (the top layer feeds just that to the head).
    fn forward(&self, seq: &Tensor, last_only: bool) -> Result<Tensor> {
        let (b, t, n_in) = seq.dims3()?;
        let h_size = self.hidden;
        let bias = (&self.bias_ih + &self.bias_hh)?;
        // All timesteps' input projections in one matmul; the loop then only adds h·W_hhᵀ.
        let x_proj = seq
            .reshape((b * t, n_in))?
            .matmul(&self.weight_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((b, t, 4 * h_size))?;
        let w_hh_t = self.weight_hh.t()?;
        let mut h: Option<Tensor> = None;
        let mut c: Option<Tensor> = None;
        let mut outputs = Vec::with_capacity(if last_only { 0 } else { t });
        for s in 0..t {
            let x_s = x_proj.i((.., s, ..))?;
            // h and c start at zero, so step 0 skips the recurrent product and the forget term.
            let gates = match &h {
                Some(h) => (x_s + h.matmul(&w_hh_t)?)?,
                None => x_s,
            };
            let sig = candle_nn::ops::sigmoid(&gates)?;
            let i = sig.narrow(D::Minus1, 0, h_size)?;
            let f = sig.narrow(D::Minus1, h_size, h_size)?;
            let g = gates.narrow(D::Minus1, 2 * h_size, h_size)?.tanh()?;
            let o = sig.narrow(D::Minus1, 3 * h_size, h_size)?;
            let c_next = match &c {
                Some(c) => ((f * c)? + (i * g)?)?,
                None => (i * g)?,
            };
            let h_next = (o * c_next.tanh()?)?;
            if !last_only {
                outputs.push(h_next.clone());
            }
            h = Some(h_next);
            c = Some(c_next);
        }
        match h {
            None => bail!("LSTM input has no timesteps"),
            Some(h) if last_only => Ok(h),
            Some(_) => Tensor::stack(&outputs, 1),
        }
    }
}

/// Stacked LSTM + dense head; see the module docs for weight names and layout.
pub struct Network {
    cfg: ArchConfig,
    layers: Vec<LstmLayer>,
    /// `attn.weight` [1, H], with attention pooling.
    attn_weight: Option<Tensor>,
    head_weight: Tensor,
    head_bias: Tensor,
    device: Device,
    /// Weights copied into the fused kernel's layout on first CPU `predict`; see
    /// [`Network::refresh_inference_weights`].
    fused: Mutex<FusedSlot>,
}

struct FusedSlot {
    kernel: CpuKernel,
    weights: Option<Arc<FusedLstm>>,
}

impl Network {
    /// Builds the network from `vb`: a `VarMap`-backed builder creates fresh trainable weights,
    /// a safetensors-backed one loads them (names and shapes as in the module docs).
    pub fn new(vb: VarBuilder, cfg: &ArchConfig) -> Result<Self> {
        cfg.validate()?;
        let mut layers = Vec::with_capacity(cfg.hidden.len());
        let mut n_in = cfg.n_features;
        for (l, &h) in cfg.hidden.iter().enumerate() {
            layers.push(LstmLayer::new(vb.pp(format!("lstm.{l}")), n_in, h)?);
            n_in = h;
        }
        // nn.Linear's default: uniform in ±1/sqrt(fan_in) for weight and bias.
        let linear_init = |fan_in: usize| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        };
        let attn_weight = match cfg.pooling {
            Pooling::Last => None,
            Pooling::Attention => Some(vb.pp("attn").get_with_hints(
                (1, n_in),
                "weight",
                linear_init(n_in),
            )?),
        };
        let width = cfg.pooling.head_width(n_in);
        let head = vb.pp("head");
        let head_weight = head.get_with_hints((1, width), "weight", linear_init(width))?;
        let head_bias = head.get_with_hints(1, "bias", linear_init(width))?;
        Ok(Self {
            cfg: cfg.clone(),
            layers,
            attn_weight,
            head_weight,
            head_bias,
            device: vb.device().clone(),
            fused: Mutex::new(FusedSlot {
                kernel: CpuKernel::best(Precision::F32),
                weights: None,
            }),
        })
    }

    pub fn config(&self) -> &ArchConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `x`: [batch, window, n_features]; returns [batch]. Composed of Candle ops so gradients flow
    /// to every weight; `train` enables dropout between LSTM layers.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, t, f) = x.dims3()?;
        if f != self.cfg.n_features {
            bail!(
                "network expects {} features per timestep, input has {f}",
                self.cfg.n_features
            );
        }
        if t == 0 {
            bail!("network input has an empty window");
        }
        let mut seq = x.clone();
        let last = self.layers.len() - 1;
        for layer in &self.layers[..last] {
            seq = layer.forward(&seq, false)?;
            if train && self.cfg.dropout > 0.0 {
                seq = candle_nn::ops::dropout(&seq, self.cfg.dropout)?;
            }
        }
        match &self.attn_weight {
            None => {
                let h = self.layers[last].forward(&seq, true)?;
                h.matmul(&self.head_weight.t()?)?
                    .broadcast_add(&self.head_bias)?
                    .squeeze(1)
            }
            Some(attn) => {
                let seq = self.layers[last].forward(&seq, false)?;
                attention_head(&seq, attn, &self.head_weight, &self.head_bias)
            }
        }
    }

    /// Inference on `batch` row-major windows of shape [window, n_features] (window is inferred
    /// from the slice length). On CPU this runs the fused kernel; elsewhere the stepwise path.
    pub fn predict(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let window = self.window_of(x.len(), batch)?;
        if self.device.is_cpu() {
            let fused = self.fused_weights()?;
            return Ok(fused.forward(x, batch, window));
        }
        let xs = Tensor::from_slice(x, (batch, window, self.cfg.n_features), &self.device)?;
        self.forward_stepwise(&xs)?.to_dtype(DType::F32)?.to_vec1()
    }

    /// Inference through [`crate::stepwise`]: per step one GEMM and one fused cell kernel, on any
    /// device. This is what `predict` runs off the CPU; on the CPU it is the reference for it.
    pub fn forward_stepwise(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, f) = x.dims3()?;
        if f != self.cfg.n_features {
            bail!(
                "network expects {} features per timestep, input has {f}",
                self.cfg.n_features
            );
        }
        let layers: Vec<LayerWeights> = self
            .layers
            .iter()
            .map(|l| LayerWeights {
                weight_ih: &l.weight_ih,
                weight_hh: &l.weight_hh,
                bias_ih: &l.bias_ih,
                bias_hh: &l.bias_hh,
                hidden: l.hidden,
            })
            .collect();
        crate::stepwise::forward(
            x,
            &layers,
            self.attn_weight.as_ref(),
            &self.head_weight,
            &self.head_bias,
        )
    }

    /// `predict` on a tensor: [batch, window, n_features] -> [batch], through the fused kernel as
    /// a Candle custom op on CPU and the stepwise path on other devices. No gradient.
    pub fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return self.forward_stepwise(x);
        }
        let (_, _, f) = x.dims3()?;
        if f != self.cfg.n_features {
            bail!(
                "network expects {} features per timestep, input has {f}",
                self.cfg.n_features
            );
        }
        x.to_dtype(DType::F32)?
            .contiguous()?
            .apply_op1_no_bwd(&crate::fused::FusedOp(self.fused_weights()?))
    }

    /// The fused path keeps its own copy of the weights, taken on first use. Training updates the
    /// variables in place, so call this after optimizer steps before predicting again.
    pub fn refresh_inference_weights(&self) {
        self.fused.lock().unwrap_or_else(|e| e.into_inner()).weights = None;
    }

    /// The CPU kernel `predict` runs (by default the best exact-f32 one this CPU supports).
    pub fn cpu_kernel(&self) -> CpuKernel {
        self.fused.lock().unwrap_or_else(|e| e.into_inner()).kernel
    }

    /// Chooses the CPU kernel; refused when this CPU cannot run it.
    pub fn set_cpu_kernel(&self, kernel: CpuKernel) -> Result<()> {
        if !kernel.is_supported() {
            bail!("this CPU cannot run the {} inference kernel", kernel.name());
        }
        let mut slot = self.fused.lock().unwrap_or_else(|e| e.into_inner());
        if slot.kernel != kernel {
            slot.kernel = kernel;
            slot.weights = None;
        }
        Ok(())
    }

    fn window_of(&self, len: usize, batch: usize) -> Result<usize> {
        if batch == 0 {
            bail!("predict needs a batch of at least one window");
        }
        let per_step = batch * self.cfg.n_features;
        if len == 0 || !len.is_multiple_of(per_step) {
            bail!(
                "predict got {len} values, not a whole number of windows of {} features for batch {batch}",
                self.cfg.n_features
            );
        }
        Ok(len / per_step)
    }

    fn fused_weights(&self) -> Result<Arc<FusedLstm>> {
        let mut slot = self.fused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fused) = slot.weights.as_ref() {
            return Ok(fused.clone());
        }
        #[allow(unused_mut)]
        let mut fused = self.extract_fused()?;
        #[cfg(target_arch = "x86_64")]
        if slot.kernel != CpuKernel::Portable {
            let bf16 = slot.kernel == CpuKernel::Avx512Bf16;
            fused.avx512 = Some(crate::lstm_avx512::Avx512Lstm::pack(&fused, bf16));
        }
        let fused = Arc::new(fused);
        slot.weights = Some(fused.clone());
        Ok(fused)
    }

    fn extract_fused(&self) -> Result<FusedLstm> {
        let host =
            |t: &Tensor| -> Result<Tensor> { t.to_device(&Device::Cpu)?.to_dtype(DType::F32) };
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut n_in = self.cfg.n_features;
        for layer in &self.layers {
            let bias = host(&(&layer.bias_ih + &layer.bias_hh)?)?;
            layers.push(FusedLayer {
                n_in,
                hidden: layer.hidden,
                // The kernel multiplies row-major activations by Wᵀ, so store Wᵀ contiguous.
                w_ih_t: host(&layer.weight_ih.t()?.contiguous()?)?
                    .flatten_all()?
                    .to_vec1()?,
                w_hh_t: host(&layer.weight_hh.t()?.contiguous()?)?
                    .flatten_all()?
                    .to_vec1()?,
                bias: bias.to_vec1()?,
            });
            n_in = layer.hidden;
        }
        Ok(FusedLstm {
            n_features: self.cfg.n_features,
            layers,
            attn_weight: match &self.attn_weight {
                Some(a) => Some(host(a)?.flatten_all()?.to_vec1()?),
                None => None,
            },
            head_weight: host(&self.head_weight)?.flatten_all()?.to_vec1()?,
            head_bias: host(&self.head_bias)?.to_vec1::<f32>()?[0],
            #[cfg(target_arch = "x86_64")]
            avx512: None,
        })
    }
}
