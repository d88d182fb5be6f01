//! Fused CPU inference for [`crate::network::Network`]: the whole stacked LSTM and head over a
//! batch of windows with no per-step allocation.
//!
//! Per layer, one GEMM projects every timestep's input at once into a `[batch, window, 4H]`
//! buffer; each step then adds `h_{t-1}·W_hhᵀ` into that buffer in place (a second GEMM with
//! strided rows) and one pass over the gates updates c and h. Composing these steps from Candle
//! ops costs ~20 tensor allocations and passes over memory per step, which is what dominated the
//! plain Candle version. Windows are independent, so large batches split across rayon's workers,
//! each with its own reusable scratch.
//!
//! Over 400 lines only by its inline tests (the fast exp against libm, the cell update against
//! exact LSTM maths, the batch split across threads).

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, bail};
use rayon::prelude::*;

/// One LSTM layer's weights in the kernel's layout.
pub(crate) struct FusedLayer {
    pub n_in: usize,
    pub hidden: usize,
    /// `weight_ih` transposed: [n_in, 4H] row-major.
    pub w_ih_t: Vec<f32>,
    /// `weight_hh` transposed: [H, 4H] row-major.
    pub w_hh_t: Vec<f32>,
    /// `bias_ih + bias_hh`: [4H].
    pub bias: Vec<f32>,
}

pub(crate) struct FusedLstm {
    pub n_features: usize,
    pub layers: Vec<FusedLayer>,
    /// `attn.weight` [H_last], with attention pooling.
    pub attn_weight: Option<Vec<f32>>,
    /// [H_last], or [2·H_last] with attention pooling.
    pub head_weight: Vec<f32>,
    pub head_bias: f32,
    /// The same weights packed for the AVX-512 kernel, present when `Network` chose it (only
    /// after checking that the CPU runs it); `forward` then hands every batch to it.
    #[cfg(target_arch = "x86_64")]
    pub avx512: Option<crate::lstm_avx512::Avx512Lstm>,
}

/// Largest batch slice one worker runs at a time, so that its `[chunk, window, 4H]` projection
/// buffer (1 MB for 16 windows of 60 steps at H = 64) stays near that core's L2; 16 rows are also
/// exactly one panel of the GEMM's microkernel. Measured: 16 and 32 tie, 8 and 64 are slower.
const MAX_CHUNK: usize = 16;
/// Below this many windows, splitting across threads costs more than it saves.
const MIN_PARALLEL_BATCH: usize = 8;
/// Up to this many windows per worker, the recurrent product runs row by row (`matvec_acc`).
const SMALL_BATCH: usize = 2;

#[derive(Default)]
struct Scratch {
    gates: Vec<f32>,
    seq_in: Vec<f32>,
    seq_out: Vec<f32>,
    cell: Vec<f32>,
}

thread_local! {
    // Reused across calls so the hot path never touches the allocator (or fresh pages).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

impl FusedLstm {
    /// `x`: `batch` windows, row-major [batch, window, n_features]; the caller has checked that
    /// `x.len() == batch * window * n_features`. Returns one output per window.
    pub fn forward(&self, x: &[f32], batch: usize, window: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), batch * window * self.n_features);
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = &self.avx512 {
            return fast.forward(x, batch, window);
        }
        let mut out = vec![0f32; batch];
        let threads = rayon::current_num_threads();
        let chunk = chunk_size(batch, threads);
        let per_window = window * self.n_features;
        if threads <= 1 || batch < MIN_PARALLEL_BATCH {
            for (out, x) in out.chunks_mut(chunk).zip(x.chunks(chunk * per_window)) {
                self.forward_chunk(x, window, out);
            }
        } else {
            out.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk * per_window))
                .for_each(|(out, x)| self.forward_chunk(x, window, out));
        }
        out
    }

    fn forward_chunk(&self, x: &[f32], window: usize, out: &mut [f32]) {
        let batch = out.len();
        let max_h = self.layers.iter().map(|l| l.hidden).max().unwrap_or(0);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                gates,
                seq_in,
                seq_out,
                cell,
            } = &mut *scratch;
            grow(gates, batch * window * 4 * max_h);
            grow(seq_in, batch * window * max_h);
            grow(seq_out, batch * window * max_h);
            grow(cell, batch * max_h);
            for (l, layer) in self.layers.iter().enumerate() {
                let input = if l == 0 { x } else { &seq_in[..] };
                run_layer(layer, input, batch, window, gates, seq_out, cell);
                std::mem::swap(seq_in, seq_out);
            }
            // After the final swap seq_in holds the top layer's sequence.
            let h = self.layers.last().map_or(0, |l| l.hidden);
            for (b, y) in out.iter_mut().enumerate() {
                let seq = &seq_in[b * window * h..][..window * h];
                *y = crate::pooling::head(
                    seq,
                    h,
                    self.attn_weight.as_deref(),
                    &self.head_weight,
                    self.head_bias,
                );
            }
        });
    }
}

fn chunk_size(batch: usize, threads: usize) -> usize {
    let chunks = if threads <= 1 || batch < MIN_PARALLEL_BATCH {
        batch.div_ceil(MAX_CHUNK)
    } else {
        threads.max(batch.div_ceil(MAX_CHUNK))
    };
    batch.div_ceil(chunks)
}

/// One layer over `batch` windows: `input` [batch, window, n_in] -> `out` [batch, window, H].
fn run_layer(
    layer: &FusedLayer,
    input: &[f32],
    batch: usize,
    window: usize,
    gates: &mut [f32],
    out: &mut [f32],
    cell: &mut [f32],
) {
    let h = layer.hidden;
    let g4 = 4 * h;
    let rows = batch * window;
    assert!(input.len() >= rows * layer.n_in);
    assert!(gates.len() >= rows * g4 && out.len() >= rows * h && cell.len() >= batch * h);
    assert!(layer.w_ih_t.len() == layer.n_in * g4 && layer.w_hh_t.len() == h * g4);
    // SAFETY: the asserts above bound every row the GEMM touches: rows * n_in of input,
    // rows * 4H of gates, n_in * 4H of weights.
    unsafe {
        sgemm(
            rows,
            g4,
            layer.n_in,
            gates.as_mut_ptr(),
            g4,
            false,
            input.as_ptr(),
            layer.n_in,
            layer.w_ih_t.as_ptr(),
        );
    }
    // h and c start at zero: step 0 skips the recurrent product, and a zeroed c makes its
    // forget term vanish without a branch in the gate loop.
    cell[..batch * h].fill(0.0);
    for s in 0..window {
        if s > 0 && batch <= SMALL_BATCH {
            for b in 0..batch {
                let h_prev = &out[(b * window + s - 1) * h..][..h];
                matvec_acc(
                    &mut gates[(b * window + s) * g4..][..g4],
                    h_prev,
                    &layer.w_hh_t,
                );
            }
        } else if s > 0 {
            // SAFETY: rows b * window + s of gates (stride window * 4H) and rows
            // b * window + s - 1 of out (stride window * H), b < batch, lie inside the
            // buffers checked above; the two buffers do not overlap.
            unsafe {
                gemm::gemm(
                    batch,
                    g4,
                    h,
                    gates.as_mut_ptr().add(s * g4),
                    1,
                    (window * g4) as isize,
                    true,
                    out.as_ptr().add((s - 1) * h),
                    1,
                    (window * h) as isize,
                    layer.w_hh_t.as_ptr(),
                    1,
                    g4 as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        cell_step(
            &gates[s * g4..],
            window * g4,
            &layer.bias,
            &mut cell[..batch * h],
            &mut out[s * h..],
            window * h,
        );
    }
}

avx2_dispatch! {
    /// `acc += x · w` for one row: `x` [k], `w` [k, n] row-major, `acc` [n]. For a handful of
    /// windows this beats the GEMM, whose packing and dispatch cost more than the few FLOPs of a
    /// [1, H] × [H, 4H] product.
    fn matvec_acc(acc: &mut [f32], x: &[f32], w: &[f32]) => matvec_acc_body
}

#[inline(always)]
fn matvec_acc_body(acc: &mut [f32], x: &[f32], w: &[f32]) {
    let n = acc.len();
    let w = &w[..x.len() * n];
    // Four rows of w per pass over acc: four FMAs for each load and store of an accumulator.
    let mut w_rows = w.chunks_exact(4 * n);
    let mut x_quads = x.chunks_exact(4);
    for (w4, x4) in w_rows.by_ref().zip(x_quads.by_ref()) {
        let (w0, rest) = w4.split_at(n);
        let (w1, rest) = rest.split_at(n);
        let (w2, w3) = rest.split_at(n);
        let (x0, x1, x2, x3) = (x4[0], x4[1], x4[2], x4[3]);
        for ((((a, &v0), &v1), &v2), &v3) in acc.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
            *a = x3.mul_add(v3, x2.mul_add(v2, x1.mul_add(v1, x0.mul_add(v0, *a))));
        }
    }
    for (w_row, &xk) in w_rows.remainder().chunks_exact(n).zip(x_quads.remainder()) {
        for (a, &v) in acc.iter_mut().zip(w_row) {
            *a = xk.mul_add(v, *a);
        }
    }
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]` (plus `dst` when `accumulate`), all row-major with rhs
/// contiguous and the given row strides for dst and lhs.
///
/// # Safety
/// The pointers must cover `m` rows of their row strides and `rhs` `k * n` values.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

avx2_dispatch! {
    /// Gate nonlinearities and the cell/hidden update of one step for every window of the batch.
    /// Window b's pre-activations (without bias, PyTorch's gate order i, f, g, o) start at
    /// `gates[b * gate_stride]`, its cell state is `cell[b * H..]` and its new hidden state goes to
    /// `out[b * out_stride..]`.
    fn cell_step(
        gates: &[f32],
        gate_stride: usize,
        bias: &[f32],
        cell: &mut [f32],
        out: &mut [f32],
        out_stride: usize,
    ) => cell_step_body
}

#[inline(always)]
fn cell_step_body(
    gates: &[f32],
    gate_stride: usize,
    bias: &[f32],
    cell: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let n = bias.len() / 4;
    for (b, c) in cell.chunks_exact_mut(n).enumerate() {
        let g = &gates[b * gate_stride..][..4 * n];
        let h = &mut out[b * out_stride..][..n];
        // Equal lengths, stated once, let the compiler drop the bounds checks in the loop.
        let (gi, gf, gg, go) = (&g[..n], &g[n..2 * n], &g[2 * n..3 * n], &g[3 * n..4 * n]);
        let (bi, bf, bg, bo) = (
            &bias[..n],
            &bias[n..2 * n],
            &bias[2 * n..3 * n],
            &bias[3 * n..4 * n],
        );
        for j in 0..n {
            // With e_x = exp(-x): σ(x) = 1/(1+e_x) and tanh(x) = (1-e_2x)/(1+e_2x). Putting each
            // update over one denominator needs 2 divisions instead of 5; divisions, not the
            // exps, bound this loop. Clamping the exponents to ±CLAMP keeps the products of
            // three (1+e) terms finite; it changes σ and tanh by less than 1e-8.
            let e_i = exp(-(gi[j] + bi[j]).clamp(-CLAMP, CLAMP));
            let e_f = exp(-(gf[j] + bf[j]).clamp(-CLAMP, CLAMP));
            let e_g = exp((-2.0 * (gg[j] + bg[j])).clamp(-CLAMP, CLAMP));
            let e_o = exp(-(go[j] + bo[j]).clamp(-CLAMP, CLAMP));
            // c' = σ(f)·c + σ(i)·tanh(g)
            let ig = (1.0 + e_i) * (1.0 + e_g);
            let num = c[j].mul_add(ig, (1.0 - e_g) * (1.0 + e_f));
            let c_next = num / ((1.0 + e_f) * ig);
            c[j] = c_next;
            // h = σ(o)·tanh(c')
            let e_c = exp((-2.0 * c_next).clamp(-CLAMP, CLAMP));
            h[j] = (1.0 - e_c) / ((1.0 + e_o) * (1.0 + e_c));
        }
    }
}

/// Bound on the exponents of the gate functions; see `cell_step_body`.
const CLAMP: f32 = 20.0;

/// Branch-free expf (Cephes' polynomial, ~2 ulp) so the gate loop vectorises; libm's expf is a
/// scalar call.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits, so
    // 2^k is built with integer ops only (`as i32` on floats saturates and does not vectorise).
    const ROUND: f32 = 12_582_912.0;
    // Keeps 2^k a normal float: k stays in [-126, 127].
    let x = x.clamp(-87.3, 88.3);
    let t = x.mul_add(LOG2E, ROUND);
    let k = t - ROUND;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    let k_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    y * f32::from_bits(k_bits.wrapping_add(127) << 23)
}

/// The fused kernel as a Candle op, so `Network::forward_inference` keeps tensors in and out.
pub(crate) struct FusedOp(pub Arc<FusedLstm>);

impl CustomOp1 for FusedOp {
    fn name(&self) -> &'static str {
        "fused-lstm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, window, features) = layout.shape().dims3()?;
        if features != self.0.n_features {
            bail!(
                "fused LSTM expects {} features per timestep, input has {features}",
                self.0.n_features
            );
        }
        let CpuStorage::F32(data) = storage else {
            bail!("fused LSTM expects f32 input, got {:?}", storage.dtype());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("fused LSTM needs a contiguous input");
        };
        let y = self.0.forward(&data[start..end], batch, window);
        Ok((CpuStorage::F32(y), Shape::from(batch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm_across_the_gate_range() {
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 4e-3;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn cell_update_matches_exact_lstm_maths() {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        // Pre-activations from saturated to linear, cell states up to what 60 steps can reach.
        let n = 40;
        let mut state = 0x2545_f491_u32;
        let mut next = |scale: f32| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
        };
        for scale in [0.01f32, 1.0, 5.0, 40.0, 1e4] {
            let gates: Vec<f32> = (0..4 * n).map(|_| next(scale)).collect();
            let bias: Vec<f32> = (0..4 * n).map(|_| next(1.0)).collect();
            let c0: Vec<f32> = (0..n).map(|_| next(scale.min(60.0))).collect();
            let mut c = c0.clone();
            let mut h = vec![0f32; n];
            cell_step(&gates, 4 * n, &bias, &mut c, &mut h, n);
            for j in 0..n {
                let a = |k: usize| (gates[k * n + j] + bias[k * n + j]) as f64;
                let c_want = sig(a(1)) * c0[j] as f64 + sig(a(0)) * a(2).tanh();
                let h_want = sig(a(3)) * c_want.tanh();
                let tol = 2e-7 * (1.0 + c_want.abs());
                assert!(
                    (c[j] as f64 - c_want).abs() < tol,
                    "c, scale {scale}, unit {j}"
                );
                assert!(
                    (h[j] as f64 - h_want).abs() < 3e-7,
                    "h, scale {scale}, unit {j}"
                );
            }
        }
    }

    #[test]
    fn chunks_cover_the_batch_and_use_every_thread() {
        assert_eq!(chunk_size(1, 2), 1);
        assert_eq!(chunk_size(5, 4), 5);
        assert_eq!(chunk_size(64, 1), 16);
        assert_eq!(chunk_size(33, 1), 11);
        assert_eq!(chunk_size(64, 2), 16);
        assert_eq!(chunk_size(1024, 2), 16);
        assert_eq!(chunk_size(9, 2), 5);
        assert_eq!(chunk_size(20, 8), 3);
    }
}
