//! Fused CPU training step for [`crate::network::Network`]: the forward pass over a batch that
//! keeps what backward needs, the loss, and backpropagation through time written out by hand.
//!
//! Over 400 lines on purpose: forward and backward share one buffer layout and must change
//! together; split apart, a change to one would silently break the other's gradients (the
//! reference tests against Candle autograd guard the whole).
//!
//! Candle autograd over the composed ops builds dozens of tensors per timestep and layer, forward
//! and backward; at batch 64 that overhead, not the arithmetic, was the epoch time (~15x this). Here every buffer
//! is allocated once and reused across batches. Activations are stored time-major (`[t, b, ·]`),
//! so one step's rows are contiguous and the weight gradients of a whole layer are single GEMMs
//! over every timestep after the recurrent loop:
//!
//! - forward: `gates = x·W_ihᵀ` for all steps at once, then per step `gates_s += h_{s-1}·W_hhᵀ`
//!   and one pass for the nonlinearities and the cell update;
//! - backward, per layer from the top: per step one pass turns dh/dc into gate pre-activation
//!   gradients (overwriting the stored activations) and one GEMM sends `dgates_s·W_hh` to step
//!   s-1; then `dW_ih = dgatesᵀ·x`, `dW_hh = dgates_{1..}ᵀ·h_{..t-1}`, `db = Σ dgates` and the
//!   input gradient `dgates·W_ih` for the layer below.
//!
//! Large batches split into chunks that rayon runs on separate workspaces; their gradients are
//! summed. Dropout masks are drawn for the whole batch before the split, so results do not
//! depend on the thread count.

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::fused::exp;
use crate::network::{ArchConfig, Pooling};
use crate::optim::LossKind;

/// Fewest windows a rayon chunk gets: below this the per-step GEMMs are too small for a second
/// thread to pay for its synchronisation.
const MIN_CHUNK: usize = 16;
/// Bound on the exponents in σ and tanh; changes them by less than 1e-8 (as in `crate::fused`).
const CLAMP: f32 = 20.0;

/// Where one entry of the caller's variable list lives.
#[derive(Clone, Copy, Debug)]
enum Slot {
    WeightIh(usize),
    WeightHh(usize),
    BiasIh(usize),
    BiasHh(usize),
    AttnWeight,
    HeadWeight,
    HeadBias,
}

struct Layer {
    n_in: usize,
    hidden: usize,
    /// [4H, in], PyTorch's layout: the input-gradient GEMM multiplies by it as is.
    w_ih: Vec<f32>,
    /// [in, 4H]: the forward projection multiplies by `W_ihᵀ`.
    w_ih_t: Vec<f32>,
    /// [4H, H].
    w_hh: Vec<f32>,
    /// [H, 4H].
    w_hh_t: Vec<f32>,
    bias_ih: Vec<f32>,
    bias_hh: Vec<f32>,
    /// `bias_ih + bias_hh`.
    bias: Vec<f32>,
}

struct Weights {
    layers: Vec<Layer>,
    /// `attn.weight` [H_top]; empty without attention pooling.
    attn_weight: Vec<f32>,
    /// [H_top], or [2·H_top] with attention pooling (`[last ; pooled]`).
    head_weight: Vec<f32>,
    head_bias: f32,
}

/// One layer's activations for one chunk, time-major: row `s * b + k` is window k at step s.
#[derive(Default)]
struct LayerActs {
    /// The layer's input: the windows (layer 0) or the dropped-out outputs of the layer below.
    x: Vec<f32>,
    /// Gate activations i, f, g, o after the nonlinearities; backward overwrites them with the
    /// gradients of the pre-activations.
    gates: Vec<f32>,
    c: Vec<f32>,
    tanh_c: Vec<f32>,
    h: Vec<f32>,
}

#[derive(Default)]
struct LayerGrads {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    bias: Vec<f32>,
}

/// Everything one chunk of the batch writes, reused from batch to batch.
#[derive(Default)]
struct Workspace {
    acts: Vec<LayerActs>,
    grads: Vec<LayerGrads>,
    attn_weight: Vec<f32>,
    head_weight: Vec<f32>,
    head_bias: f32,
    /// One window's attention weights over time [t] and pooled state [H], reused per window.
    alpha: Vec<f32>,
    pooled: Vec<f32>,
    /// Gradient of the loss w.r.t. the current layer's outputs, [t * b, H].
    dh: Vec<f32>,
    /// Gradient w.r.t. the cell state carried from step s+1 to s, [b, H].
    dc: Vec<f32>,
    /// Sum (not mean) of the chunk's per-window losses.
    loss: f64,
}

/// One training step's forward, loss and backward on the CPU, with gradients for every
/// variable in the order of the `names` it was built with.
pub struct FusedTrainer {
    arch: ArchConfig,
    slots: Vec<Slot>,
    weights: Weights,
    workspaces: Vec<Workspace>,
    /// Per dropout layer, the last batch's mask in `[b, t, H]` order: 0 or 1/(1-p).
    masks: Vec<Vec<f32>>,
    rng: StdRng,
    grads: Vec<Vec<f32>>,
}

impl FusedTrainer {
    /// `names`: the network's variable names (see [`ArchConfig::weight_shapes`]) in the order
    /// that [`FusedTrainer::load`] receives values and [`FusedTrainer::grads`] returns them.
    /// `seed` drives the dropout masks.
    pub fn new(arch: &ArchConfig, names: &[String], seed: u64) -> Result<Self> {
        arch.validate()?;
        let shapes = arch.weight_shapes();
        if names.len() != shapes.len() {
            return Err(ModelError::Config(format!(
                "fused trainer: {} variables given, the network has {}",
                names.len(),
                shapes.len()
            )));
        }
        let slots = names
            .iter()
            .map(|n| parse_slot(n, arch.hidden.len()))
            .collect::<Result<Vec<_>>>()?;
        let mut n_in = arch.n_features;
        let layers = arch
            .hidden
            .iter()
            .map(|&h| {
                let layer = Layer {
                    n_in,
                    hidden: h,
                    w_ih: vec![0.0; 4 * h * n_in],
                    w_ih_t: vec![0.0; 4 * h * n_in],
                    w_hh: vec![0.0; 4 * h * h],
                    w_hh_t: vec![0.0; 4 * h * h],
                    bias_ih: vec![0.0; 4 * h],
                    bias_hh: vec![0.0; 4 * h],
                    bias: vec![0.0; 4 * h],
                };
                n_in = h;
                layer
            })
            .collect();
        let grads = slots
            .iter()
            .map(|&s| vec![0.0; slot_len(arch, s)])
            .collect();
        Ok(Self {
            arch: arch.clone(),
            slots,
            weights: Weights {
                layers,
                attn_weight: match arch.pooling {
                    Pooling::Last => Vec::new(),
                    Pooling::Attention => vec![0.0; n_in],
                },
                head_weight: vec![0.0; arch.pooling.head_width(n_in)],
                head_bias: 0.0,
            },
            workspaces: Vec::new(),
            masks: vec![Vec::new(); arch.hidden.len() - 1],
            rng: StdRng::seed_from_u64(seed),
            grads,
        })
    }

    /// Copies the current values of `vars` (same order as `names`) into the kernel's layout.
    pub fn load(&mut self, vars: &[Var]) -> Result<()> {
        if vars.len() != self.slots.len() {
            return Err(ModelError::Config(format!(
                "fused trainer: {} variables given, expected {}",
                vars.len(),
                self.slots.len()
            )));
        }
        for (k, var) in vars.iter().enumerate() {
            let values: Vec<f32> = var
                .as_tensor()
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            self.load_one(k, &values)?;
        }
        Ok(())
    }

    /// Sets variable `k` (index into `names`) from a flat row-major slice.
    pub fn load_one(&mut self, k: usize, values: &[f32]) -> Result<()> {
        let slot = *self
            .slots
            .get(k)
            .ok_or_else(|| ModelError::Config(format!("fused trainer: no variable number {k}")))?;
        let want = slot_len(&self.arch, slot);
        if values.len() != want {
            return Err(ModelError::Config(format!(
                "fused trainer: variable {slot:?} has {} values, expected {want}",
                values.len()
            )));
        }
        let w = &mut self.weights;
        match slot {
            Slot::WeightIh(l) => {
                let layer = &mut w.layers[l];
                layer.w_ih.copy_from_slice(values);
                transpose(values, 4 * layer.hidden, layer.n_in, &mut layer.w_ih_t);
            }
            Slot::WeightHh(l) => {
                let layer = &mut w.layers[l];
                layer.w_hh.copy_from_slice(values);
                transpose(values, 4 * layer.hidden, layer.hidden, &mut layer.w_hh_t);
            }
            Slot::BiasIh(l) | Slot::BiasHh(l) => {
                let layer = &mut w.layers[l];
                if matches!(slot, Slot::BiasIh(_)) {
                    layer.bias_ih.copy_from_slice(values);
                } else {
                    layer.bias_hh.copy_from_slice(values);
                }
                for ((b, x), y) in layer
                    .bias
                    .iter_mut()
                    .zip(&layer.bias_ih)
                    .zip(&layer.bias_hh)
                {
                    *b = x + y;
                }
            }
            Slot::AttnWeight => w.attn_weight.copy_from_slice(values),
            Slot::HeadWeight => w.head_weight.copy_from_slice(values),
            Slot::HeadBias => w.head_bias = values[0],
        }
        Ok(())
    }

    /// One forward and backward pass over `y.len()` windows `x` ([b, t, n_features] row-major).
    /// Returns the mean loss; the gradients are then in [`FusedTrainer::grads`]. `train` turns on
    /// dropout (a fresh mask from the trainer's RNG per call).
    pub fn step(
        &mut self,
        x: &[f32],
        y: &[f32],
        loss: LossKind,
        huber_delta: f64,
        train: bool,
    ) -> Result<f64> {
        let batch = y.len();
        let per_step = batch * self.arch.n_features;
        if batch == 0 || x.is_empty() || !x.len().is_multiple_of(per_step) {
            return Err(ModelError::Data(format!(
                "fused trainer: {} inputs are not {batch} whole windows of {} features",
                x.len(),
                self.arch.n_features
            )));
        }
        let window = x.len() / per_step;
        let dropout = if train { self.arch.dropout } else { 0.0 };
        self.draw_masks(batch, window, dropout);

        let threads = rayon::current_num_threads();
        let chunks = (batch / MIN_CHUNK).clamp(1, threads.max(1));
        let chunk = batch.div_ceil(chunks);
        let chunks = batch.div_ceil(chunk);
        if self.workspaces.len() < chunks {
            self.workspaces.resize_with(chunks, Workspace::default);
        }
        let job = Job {
            weights: &self.weights,
            masks: if dropout > 0.0 { &self.masks } else { &[] },
            batch,
            window,
            n_features: self.arch.n_features,
            loss,
            huber_delta: huber_delta as f32,
        };
        let work = self.workspaces[..chunks].par_iter_mut().enumerate();
        work.with_max_len(1).for_each(|(k, ws)| {
            let first = k * chunk;
            let b = chunk.min(batch - first);
            job.run(ws, first, b, x, y);
        });

        let mut total = 0.0;
        for g in &mut self.grads {
            g.fill(0.0);
        }
        for ws in &self.workspaces[..chunks] {
            total += ws.loss;
            for (g, &slot) in self.grads.iter_mut().zip(&self.slots) {
                let part: &[f32] = match slot {
                    Slot::WeightIh(l) => &ws.grads[l].w_ih,
                    Slot::WeightHh(l) => &ws.grads[l].w_hh,
                    Slot::BiasIh(l) | Slot::BiasHh(l) => &ws.grads[l].bias,
                    Slot::AttnWeight => &ws.attn_weight,
                    Slot::HeadWeight => &ws.head_weight,
                    Slot::HeadBias => std::slice::from_ref(&ws.head_bias),
                };
                for (a, b) in g.iter_mut().zip(part) {
                    *a += b;
                }
            }
        }
        Ok(total / batch as f64)
    }

    /// Gradients of the last [`FusedTrainer::step`]'s mean loss, in the order of `names`.
    pub fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }

    /// The gradients as tensors shaped like `vars` (same order as `names`), for the optimizer.
    pub fn grad_tensors(&self, vars: &[Var]) -> Result<Vec<Tensor>> {
        vars.iter()
            .zip(&self.grads)
            .map(|(v, g)| Ok(Tensor::from_slice(g, v.shape(), v.device())?.to_dtype(v.dtype())?))
            .collect()
    }

    /// The last step's dropout masks, one per layer but the top, in `[b, t, H]` order with
    /// values 0 or 1/(1-p); empty when that step ran without dropout.
    pub fn dropout_masks(&self) -> &[Vec<f32>] {
        &self.masks
    }

    fn draw_masks(&mut self, batch: usize, window: usize, p: f32) {
        let scale = 1.0 / (1.0 - p);
        for (mask, &h) in self.masks.iter_mut().zip(&self.arch.hidden) {
            mask.clear();
            if p > 0.0 {
                // Keep where a uniform draw is >= p, as candle_nn::ops::dropout does.
                let rng = &mut self.rng;
                mask.extend(
                    (0..batch * window * h).map(
                        |_| {
                            if rng.random::<f32>() >= p { scale } else { 0.0 }
                        },
                    ),
                );
            }
        }
    }
}

/// The read-only inputs of one step, shared by the chunks.
struct Job<'a> {
    weights: &'a Weights,
    masks: &'a [Vec<f32>],
    batch: usize,
    window: usize,
    n_features: usize,
    loss: LossKind,
    huber_delta: f32,
}

impl Job<'_> {
    /// Forward and backward for windows `first..first + b` of the batch.
    fn run(&self, ws: &mut Workspace, first: usize, b: usize, x: &[f32], y: &[f32]) {
        let t = self.window;
        let rows = t * b;
        let layers = &self.weights.layers;
        let n_layers = layers.len();
        ws.acts.resize_with(n_layers, LayerActs::default);
        ws.grads.resize_with(n_layers, LayerGrads::default);
        let max_h = layers.iter().map(|l| l.hidden).max().unwrap_or(0);
        grow(&mut ws.dh, rows * max_h);
        grow(&mut ws.dc, b * max_h);

        // Input to time-major.
        let f = self.n_features;
        let a0 = &mut ws.acts[0];
        grow(&mut a0.x, rows * f);
        for k in 0..b {
            let win = &x[(first + k) * t * f..][..t * f];
            for s in 0..t {
                a0.x[(s * b + k) * f..][..f].copy_from_slice(&win[s * f..][..f]);
            }
        }

        for (l, layer) in layers.iter().enumerate() {
            let (lower, upper) = ws.acts.split_at_mut(l + 1);
            let acts = &mut lower[l];
            forward_layer(layer, acts, b, t);
            if let Some(next) = upper.first_mut() {
                let h = layer.hidden;
                grow(&mut next.x, rows * h);
                match self.masks.get(l) {
                    Some(mask) => {
                        for k in 0..b {
                            let m = &mask[(first + k) * t * h..][..t * h];
                            for s in 0..t {
                                let r = (s * b + k) * h;
                                let dst = &mut next.x[r..r + h];
                                for ((d, &v), &m) in
                                    dst.iter_mut().zip(&acts.h[r..r + h]).zip(&m[s * h..][..h])
                                {
                                    *d = v * m;
                                }
                            }
                        }
                    }
                    None => next.x[..rows * h].copy_from_slice(&acts.h[..rows * h]),
                }
            }
        }

        // The head, the loss and its gradient, which becomes the top layer's output gradient:
        // at the last step only, or at every step with attention pooling.
        let top = &layers[n_layers - 1];
        let h = top.hidden;
        let seq = &ws.acts[n_layers - 1].h[..rows * h];
        let weights = self.weights;
        let (w_last, w_pooled) = weights.head_weight.split_at(h);
        let attn = &weights.attn_weight;
        let n = self.batch as f32;
        grow(&mut ws.head_weight, weights.head_weight.len());
        ws.head_weight[..weights.head_weight.len()].fill(0.0);
        grow(&mut ws.attn_weight, attn.len());
        ws.attn_weight[..attn.len()].fill(0.0);
        ws.head_bias = 0.0;
        ws.loss = 0.0;
        grow(&mut ws.alpha, t);
        grow(&mut ws.pooled, h);
        let dh = &mut ws.dh[..rows * h];
        dh.fill(0.0);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let row = |s: usize, k: usize| (s * b + k) * h;
        for k in 0..b {
            let hk = &seq[row(t - 1, k)..][..h];
            let mut pred = dot(hk, w_last) + weights.head_bias;
            let (alpha, pooled) = (&mut ws.alpha[..t], &mut ws.pooled[..h]);
            if !attn.is_empty() {
                for (s, a) in alpha.iter_mut().enumerate() {
                    *a = dot(&seq[row(s, k)..][..h], attn);
                }
                let max = alpha.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0;
                for a in alpha.iter_mut() {
                    *a = (*a - max).exp();
                    total += *a;
                }
                pooled.fill(0.0);
                for (s, a) in alpha.iter_mut().enumerate() {
                    *a /= total;
                    for (p, &v) in pooled.iter_mut().zip(&seq[row(s, k)..][..h]) {
                        *p += *a * v;
                    }
                }
                pred += dot(pooled, w_pooled);
            }
            let (l, dy) = loss_and_grad(self.loss, pred - y[first + k], self.huber_delta);
            ws.loss += l as f64;
            let dy = dy / n;
            ws.head_bias += dy;
            for (g, &v) in ws.head_weight.iter_mut().zip(hk) {
                *g += dy * v;
            }
            for (d, &v) in dh[row(t - 1, k)..][..h].iter_mut().zip(w_last) {
                *d = dy * v;
            }
            if attn.is_empty() {
                continue;
            }
            // pooled = Σ α_s h_s with α = softmax(a·h_s): d pooled = dy·w_pooled reaches each h_s
            // as α_s·d pooled and, through the score, as ds_s·a with
            // ds_s = α_s (d pooled·h_s − Σ_u α_u d pooled·h_u).
            for (g, &v) in ws.head_weight[h..2 * h].iter_mut().zip(pooled.iter()) {
                *g += dy * v;
            }
            let mean: f32 = (0..t)
                .map(|s| alpha[s] * dy * dot(&seq[row(s, k)..][..h], w_pooled))
                .sum();
            for (s, &a) in alpha.iter().enumerate() {
                let hs = &seq[row(s, k)..][..h];
                let ds = a * (dy * dot(hs, w_pooled) - mean);
                for (((d, &wp), &at), (g, &v)) in dh[row(s, k)..][..h]
                    .iter_mut()
                    .zip(w_pooled)
                    .zip(attn)
                    .zip(ws.attn_weight.iter_mut().zip(hs))
                {
                    *d += a * dy * wp + ds * at;
                    *g += ds * v;
                }
            }
        }

        for l in (0..n_layers).rev() {
            let layer = &layers[l];
            backward_layer(
                layer,
                &mut ws.acts[l],
                &mut ws.grads[l],
                &mut ws.dh,
                &mut ws.dc,
                b,
                t,
            );
            if l > 0 {
                // The input gradient becomes the lower layer's output gradient.
                let acts = &ws.acts[l];
                let h_below = layer.n_in;
                mm(
                    rows,
                    h_below,
                    4 * layer.hidden,
                    &mut ws.dh,
                    h_below,
                    false,
                    Mat::rows(&acts.gates, 4 * layer.hidden),
                    Mat::rows(&layer.w_ih, h_below),
                );
                if let Some(mask) = self.masks.get(l - 1) {
                    for k in 0..b {
                        let m = &mask[(first + k) * t * h_below..][..t * h_below];
                        for s in 0..t {
                            let r = (s * b + k) * h_below;
                            for (d, &m) in ws.dh[r..r + h_below]
                                .iter_mut()
                                .zip(&m[s * h_below..][..h_below])
                            {
                                *d *= m;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Per-window loss and its derivative w.r.t. the prediction, matching `optim::loss` (and its
/// autograd: |d|' is +1 at 0).
fn loss_and_grad(kind: LossKind, d: f32, delta: f32) -> (f32, f32) {
    let sign = if d >= 0.0 { 1.0 } else { -1.0 };
    match kind {
        LossKind::Mse => (d * d, 2.0 * d),
        LossKind::Mae => (d.abs(), sign),
        LossKind::Huber => {
            let r = d.abs();
            if r <= delta {
                (0.5 * r * r, d)
            } else {
                (0.5 * delta * delta + delta * (r - delta), sign * delta)
            }
        }
    }
}

fn forward_layer(layer: &Layer, acts: &mut LayerActs, b: usize, t: usize) {
    let h = layer.hidden;
    let g4 = 4 * h;
    let rows = t * b;
    grow(&mut acts.gates, rows * g4);
    grow(&mut acts.c, rows * h);
    grow(&mut acts.tanh_c, rows * h);
    grow(&mut acts.h, rows * h);
    mm(
        rows,
        g4,
        layer.n_in,
        &mut acts.gates,
        g4,
        false,
        Mat::rows(&acts.x, layer.n_in),
        Mat::rows(&layer.w_ih_t, g4),
    );
    for s in 0..t {
        let (done, now) = acts.h.split_at_mut(s * b * h);
        if s > 0 {
            let h_prev = &done[(s - 1) * b * h..];
            mm(
                b,
                g4,
                h,
                &mut acts.gates[s * b * g4..],
                g4,
                true,
                Mat::rows(h_prev, h),
                Mat::rows(&layer.w_hh_t, g4),
            );
        }
        let (c_done, c_now) = acts.c.split_at_mut(s * b * h);
        let c_prev = (s > 0).then(|| &c_done[(s - 1) * b * h..]);
        cell_forward(
            &mut acts.gates[s * b * g4..][..b * g4],
            &layer.bias,
            c_prev,
            &mut c_now[..b * h],
            &mut acts.tanh_c[s * b * h..][..b * h],
            &mut now[..b * h],
        );
    }
}

fn backward_layer(
    layer: &Layer,
    acts: &mut LayerActs,
    grads: &mut LayerGrads,
    dh: &mut [f32],
    dc: &mut [f32],
    b: usize,
    t: usize,
) {
    let h = layer.hidden;
    let g4 = 4 * h;
    let rows = t * b;
    let dc = &mut dc[..b * h];
    dc.fill(0.0);
    for s in (0..t).rev() {
        let c_prev = (s > 0).then(|| &acts.c[(s - 1) * b * h..][..b * h]);
        let (dh_done, dh_now) = dh.split_at_mut(s * b * h);
        cell_backward(
            h,
            &mut acts.gates[s * b * g4..][..b * g4],
            &acts.tanh_c[s * b * h..][..b * h],
            c_prev,
            &dh_now[..b * h],
            dc,
        );
        if s > 0 {
            mm(
                b,
                h,
                g4,
                &mut dh_done[(s - 1) * b * h..],
                h,
                true,
                Mat::rows(&acts.gates[s * b * g4..], g4),
                Mat::rows(&layer.w_hh, h),
            );
        }
    }
    grads.w_ih.resize(g4 * layer.n_in, 0.0);
    grads.w_hh.resize(g4 * h, 0.0);
    grads.bias.resize(g4, 0.0);
    let dgates = &acts.gates[..rows * g4];
    mm(
        g4,
        layer.n_in,
        rows,
        &mut grads.w_ih,
        layer.n_in,
        false,
        Mat::cols(dgates, g4),
        Mat::rows(&acts.x, layer.n_in),
    );
    if t > 1 {
        mm(
            g4,
            h,
            (t - 1) * b,
            &mut grads.w_hh,
            h,
            false,
            Mat::cols(&dgates[b * g4..], g4),
            Mat::rows(&acts.h, h),
        );
    } else {
        grads.w_hh.fill(0.0);
    }
    grads.bias.fill(0.0);
    for row in dgates.chunks_exact(g4) {
        for (a, &v) in grads.bias.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// A matrix operand of [`mm`]: element (i, k) is at `data[i * row_stride + k * col_stride]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major rows `row_stride` apart.
    fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `stride` apart.
    fn cols(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: stride,
        }
    }

    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "GEMM operand out of bounds");
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, dst row-major with rows `dst_rs` apart.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_rs + n <= dst.len(),
        "GEMM output out of bounds"
    );
    lhs.check(m, k);
    rhs.check(k, n);
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..][..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the checks above bound every element the GEMM reads or writes; `dst` is a unique
    // borrow, so it cannot alias the operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

avx2_dispatch! {
    /// One step's nonlinearities and state update for b windows. `gates`: [b, 4H] pre-activations
    /// without bias in, activations (i, f, g, o) out; `c_prev` None at step 0 (zero state).
    fn cell_forward(
        gates: &mut [f32],
        bias: &[f32],
        c_prev: Option<&[f32]>,
        c: &mut [f32],
        tanh_c: &mut [f32],
        h: &mut [f32],
    ) => cell_forward_body
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp((-x).clamp(-CLAMP, CLAMP)))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp((-2.0 * x).clamp(-CLAMP, CLAMP));
    (1.0 - e) / (1.0 + e)
}

#[inline(always)]
fn cell_forward_body(
    gates: &mut [f32],
    bias: &[f32],
    c_prev: Option<&[f32]>,
    c: &mut [f32],
    tanh_c: &mut [f32],
    h: &mut [f32],
) {
    let n = bias.len() / 4;
    let (bi, rest) = bias.split_at(n);
    let (bf, rest) = rest.split_at(n);
    let (bg, bo) = rest.split_at(n);
    for (k, g) in gates.chunks_exact_mut(4 * n).enumerate() {
        let (gi, rest) = g.split_at_mut(n);
        let (gf, rest) = rest.split_at_mut(n);
        let (gg, go) = rest.split_at_mut(n);
        let c = &mut c[k * n..][..n];
        let tc = &mut tanh_c[k * n..][..n];
        let h = &mut h[k * n..][..n];
        match c_prev {
            Some(cp) => {
                let cp = &cp[k * n..][..n];
                for j in 0..n {
                    let i = sigmoid(gi[j] + bi[j]);
                    let f = sigmoid(gf[j] + bf[j]);
                    let g = tanh(gg[j] + bg[j]);
                    let o = sigmoid(go[j] + bo[j]);
                    let cn = f.mul_add(cp[j], i * g);
                    let t = tanh(cn);
                    (gi[j], gf[j], gg[j], go[j]) = (i, f, g, o);
                    (c[j], tc[j], h[j]) = (cn, t, o * t);
                }
            }
            None => {
                for j in 0..n {
                    let i = sigmoid(gi[j] + bi[j]);
                    let f = sigmoid(gf[j] + bf[j]);
                    let g = tanh(gg[j] + bg[j]);
                    let o = sigmoid(go[j] + bo[j]);
                    let cn = i * g;
                    let t = tanh(cn);
                    (gi[j], gf[j], gg[j], go[j]) = (i, f, g, o);
                    (c[j], tc[j], h[j]) = (cn, t, o * t);
                }
            }
        }
    }
}

avx2_dispatch! {
    /// One step backward for b windows. `gates`: activations in, pre-activation gradients out;
    /// `dh`: gradient w.r.t. this step's h (from above and from step s+1); `dc`: gradient w.r.t.
    /// this step's c from step s+1 in, w.r.t. c_{s-1} out.
    fn cell_backward(
        n: usize,
        gates: &mut [f32],
        tanh_c: &[f32],
        c_prev: Option<&[f32]>,
        dh: &[f32],
        dc: &mut [f32],
    ) => cell_backward_body
}

#[inline(always)]
fn cell_backward_body(
    n: usize,
    gates: &mut [f32],
    tanh_c: &[f32],
    c_prev: Option<&[f32]>,
    dh: &[f32],
    dc: &mut [f32],
) {
    for (k, g) in gates.chunks_exact_mut(4 * n).enumerate() {
        let (gi, rest) = g.split_at_mut(n);
        let (gf, rest) = rest.split_at_mut(n);
        let (gg, go) = rest.split_at_mut(n);
        let tc = &tanh_c[k * n..][..n];
        let dh = &dh[k * n..][..n];
        let dc = &mut dc[k * n..][..n];
        // At step 0 c_{-1} = 0, so the forget gate gets no gradient.
        let cp = c_prev.map(|cp| &cp[k * n..][..n]);
        for j in 0..n {
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let dcj = (dh[j] * o).mul_add(1.0 - tc[j] * tc[j], dc[j]);
            gi[j] = dcj * g * i * (1.0 - i);
            gg[j] = dcj * i * (1.0 - g * g);
            go[j] = dh[j] * tc[j] * o * (1.0 - o);
            dc[j] = dcj * f;
            gf[j] = dcj * f * (1.0 - f);
        }
        match cp {
            Some(cp) => gf.iter_mut().zip(cp).for_each(|(d, &c)| *d *= c),
            None => gf.fill(0.0),
        }
    }
}

fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

fn parse_slot(name: &str, n_layers: usize) -> Result<Slot> {
    let bad = || ModelError::Config(format!("fused trainer: unknown variable {name:?}"));
    match name {
        "attn.weight" => return Ok(Slot::AttnWeight),
        "head.weight" => return Ok(Slot::HeadWeight),
        "head.bias" => return Ok(Slot::HeadBias),
        _ => {}
    }
    let rest = name.strip_prefix("lstm.").ok_or_else(bad)?;
    let (l, field) = rest.split_once('.').ok_or_else(bad)?;
    let l: usize = l.parse().map_err(|_| bad())?;
    if l >= n_layers {
        return Err(bad());
    }
    match field {
        "weight_ih" => Ok(Slot::WeightIh(l)),
        "weight_hh" => Ok(Slot::WeightHh(l)),
        "bias_ih" => Ok(Slot::BiasIh(l)),
        "bias_hh" => Ok(Slot::BiasHh(l)),
        _ => Err(bad()),
    }
}

fn slot_len(arch: &ArchConfig, slot: Slot) -> usize {
    let n_in = |l: usize| {
        if l == 0 {
            arch.n_features
        } else {
            arch.hidden[l - 1]
        }
    };
    match slot {
        Slot::WeightIh(l) => 4 * arch.hidden[l] * n_in(l),
        Slot::WeightHh(l) => 4 * arch.hidden[l] * arch.hidden[l],
        Slot::BiasIh(l) | Slot::BiasHh(l) => 4 * arch.hidden[l],
        Slot::AttnWeight => *arch.hidden.last().expect("validated: at least one layer"),
        Slot::HeadWeight => arch
            .pooling
            .head_width(*arch.hidden.last().expect("validated: at least one layer")),
        Slot::HeadBias => 1,
    }
}
