//! The GPU inference path: per layer one GEMM projects every timestep's input, then each step is
//! one GEMM for the recurrent product and one fused kernel for the gate nonlinearities and the
//! c/h update (the composed `Network::forward` launches ~10 kernels a step).
//!
//! Activations are kept time-major so that every per-step operand is a contiguous `[batch, ·]`
//! slice: a layer's state is one tensor `[window + 2, batch, H]` holding h_{-1} = 0 at index 0,
//! h_s at index s + 1 and the cell state at index window + 1. The fused step writes h_s and c in
//! place ([`CellStep`]), and the next layer's input is `state[1..=window]` without a copy.
//!
//! The step runs on any device: on CUDA through a kernel compiled by NVRTC on first use, on CPU
//! through the same arithmetic in Rust, so the orchestration is tested against PyTorch on machines
//! without a GPU (`scripts/gpu-check.sh` runs the same tests on one).

use candle_core::{CpuStorage, D, DType, InplaceOp3, Layout, Result, Tensor, bail};

/// One LSTM layer's weights as stored (PyTorch layout).
pub(crate) struct LayerWeights<'a> {
    pub weight_ih: &'a Tensor,
    pub weight_hh: &'a Tensor,
    pub bias_ih: &'a Tensor,
    pub bias_hh: &'a Tensor,
    pub hidden: usize,
}

/// `x` `[batch, window, features]` -> `[batch]`.
pub(crate) fn forward(
    x: &Tensor,
    layers: &[LayerWeights],
    attn_weight: Option<&Tensor>,
    head_weight: &Tensor,
    head_bias: &Tensor,
) -> Result<Tensor> {
    let (batch, window, features) = x.dims3()?;
    if window == 0 {
        bail!("network input has an empty window");
    }
    let mut seq = x
        .to_dtype(DType::F32)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((window * batch, features))?;
    for layer in layers {
        let h = layer.hidden;
        let bias = (layer.bias_ih + layer.bias_hh)?;
        let x_proj = seq
            .matmul(&layer.weight_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((window, batch, 4 * h))?;
        let w_hh_t = layer.weight_hh.t()?;
        let state = Tensor::zeros((window + 2, batch, h), DType::F32, x.device())?;
        for s in 0..window {
            let x_s = x_proj.get(s)?;
            // h_{-1} = 0: step 0 has no recurrent product; the kernel then ignores `rec`.
            let rec = if s == 0 {
                x_s.clone()
            } else {
                state.get(s)?.matmul(&w_hh_t)?
            };
            state.inplace_op3(
                &x_s,
                &rec,
                &CellStep {
                    step: s,
                    window,
                    batch,
                    hidden: h,
                },
            )?;
        }
        seq = state.narrow(0, 1, window)?.reshape((window * batch, h))?;
    }
    let h = layers.last().map_or(features, |l| l.hidden);
    if let Some(attn) = attn_weight {
        let seq = seq
            .reshape((window, batch, h))?
            .transpose(0, 1)?
            .contiguous()?;
        return crate::pooling::attention_head(&seq, attn, head_weight, head_bias);
    }
    seq.narrow(0, (window - 1) * batch, batch)?
        .reshape((batch, h))?
        .matmul(&head_weight.t()?)?
        .broadcast_add(head_bias)?
        .squeeze(D::Minus1)
}

/// The fused step on a layer's state `[window + 2, batch, H]` (see the module docs), from this
/// step's input projection `[batch, 4H]` (bias included) and recurrent product `[batch, 4H]`.
struct CellStep {
    step: usize,
    window: usize,
    batch: usize,
    hidden: usize,
}

impl CellStep {
    fn check(&self, state: &Layout, x_s: &Layout, rec: &Layout) -> Result<()> {
        let (b, h) = (self.batch, self.hidden);
        let ok = state.is_contiguous()
            && x_s.is_contiguous()
            && rec.is_contiguous()
            && state.shape().elem_count() == (self.window + 2) * b * h
            && x_s.shape().elem_count() == b * 4 * h
            && rec.shape().elem_count() == b * 4 * h;
        if !ok {
            bail!("lstm cell step: unexpected operand layouts");
        }
        Ok(())
    }
}

impl InplaceOp3 for CellStep {
    fn name(&self) -> &'static str {
        "lstm-cell-step"
    }

    fn cpu_fwd(
        &self,
        state: &mut CpuStorage,
        state_l: &Layout,
        x_s: &CpuStorage,
        x_l: &Layout,
        rec: &CpuStorage,
        rec_l: &Layout,
    ) -> Result<()> {
        self.check(state_l, x_l, rec_l)?;
        let (CpuStorage::F32(state), CpuStorage::F32(x_s), CpuStorage::F32(rec)) =
            (state, x_s, rec)
        else {
            bail!("lstm cell step expects f32 operands");
        };
        let (b, h) = (self.batch, self.hidden);
        let state = &mut state[state_l.start_offset()..];
        let x_s = &x_s[x_l.start_offset()..][..b * 4 * h];
        let rec = &rec[rec_l.start_offset()..][..b * 4 * h];
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let (h_at, c_at) = ((self.step + 1) * b * h, (self.window + 1) * b * h);
        for i in 0..b * h {
            let (row, j) = (i / h, i % h);
            let gate = |k: usize| {
                let at = row * 4 * h + k * h + j;
                x_s[at] + if self.step > 0 { rec[at] } else { 0.0 }
            };
            let c = sig(gate(1)) * state[c_at + i] + sig(gate(0)) * gate(2).tanh();
            state[c_at + i] = c;
            state[h_at + i] = sig(gate(3)) * c.tanh();
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        state: &mut candle_core::CudaStorage,
        state_l: &Layout,
        x_s: &candle_core::CudaStorage,
        x_l: &Layout,
        rec: &candle_core::CudaStorage,
        rec_l: &Layout,
    ) -> Result<()> {
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};

        self.check(state_l, x_l, rec_l)?;
        let dev = state.device.clone();
        let func = dev.get_or_load_custom_func("lstm_cell_step", "maintcast_lstm", cuda::ptx()?)?;
        let x_s = x_s.as_cuda_slice::<f32>()?.slice(x_l.start_offset()..);
        let rec = rec.as_cuda_slice::<f32>()?.slice(rec_l.start_offset()..);
        let mut st = state
            .as_cuda_slice_mut::<f32>()?
            .slice_mut(state_l.start_offset()..);
        let n = (self.batch * self.hidden) as u32;
        let (batch, hidden) = (self.batch as i32, self.hidden as i32);
        let (step, window) = (self.step as i32, self.window as i32);
        let mut builder = func.builder();
        builder.arg(&x_s);
        builder.arg(&rec);
        builder.arg(&mut st);
        builder.arg(&batch);
        builder.arg(&hidden);
        builder.arg(&step);
        builder.arg(&window);
        // SAFETY: the kernel touches `batch * hidden` cells of each operand's checked extent.
        unsafe { builder.launch(LaunchConfig::for_num_elems(n)) }.w()?;
        Ok(())
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::Result;

    /// Same arithmetic as `CellStep::cpu_fwd`, one thread per (window, unit).
    const SRC: &str = r#"
extern "C" __global__ void lstm_cell_step(const float* x_s, const float* rec, float* state,
                                          int batch, int hidden, int step, int window) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * hidden) return;
    int row = i / hidden, j = i - row * hidden;
    const float* gx = x_s + (size_t)row * 4 * hidden;
    float gi = gx[j], gf = gx[hidden + j], gg = gx[2 * hidden + j], go = gx[3 * hidden + j];
    if (step > 0) {
        const float* gr = rec + (size_t)row * 4 * hidden;
        gi += gr[j]; gf += gr[hidden + j]; gg += gr[2 * hidden + j]; go += gr[3 * hidden + j];
    }
    float* c = state + (size_t)(window + 1) * batch * hidden;
    float* h = state + (size_t)(step + 1) * batch * hidden;
    float si = 1.0f / (1.0f + expf(-gi)), sf = 1.0f / (1.0f + expf(-gf));
    float so = 1.0f / (1.0f + expf(-go));
    float cn = sf * c[i] + si * tanhf(gg);
    c[i] = cn;
    h[i] = so * tanhf(cn);
}
"#;

    pub(super) fn ptx() -> Result<&'static str> {
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SRC)
                .map(|p| p.to_src())
                .map_err(|e| format!("compiling the LSTM cell kernel: {e:?}"))
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(e.clone()))
    }
}
