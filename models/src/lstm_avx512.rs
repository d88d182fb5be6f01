//! AVX-512 inference kernel for the stacked LSTM: every layer and timestep of a chunk of windows
//! runs in one register-blocked microkernel (tiles of up to six windows), with no GEMM library and
//! no gate buffer.
//!
//! Each layer's weights are packed once into `[unit block][k][gate][16 lanes]`, where a unit
//! block is 16 hidden units and k runs over the concatenated input `z = [x_t ; h_{t-1}]`. For a
//! tile of M windows and UB unit blocks the microkernel holds all 4·M·UB gate pre-activations in
//! zmm registers, streams the packed weights once per step (they stay in L2: 208 KB for the default
//! shape) and applies the gate nonlinearities and the c/h update before the accumulators leave the
//! registers. The input projection is part of the same k loop, so layers run in lockstep per
//! timestep and nothing of size `[batch, window, 4H]` is ever written.
//!
//! Two precisions: exact f32 (FMA), and bf16 weights and inputs with f32 accumulation
//! (`vdpbf16ps`; half the weight bytes, see `Precision::Bf16` for when that pays). The cell state
//! and every nonlinearity stay f32 in both. bf16 is only used when asked for.
//!
//! Hidden sizes that are not a multiple of 16 are padded with units whose weights and bias are
//! zero: such a unit's c stays 0 and its h stays tanh(0)·½ = 0, so it never feeds anything.
//!
//! Over 400 lines because the packing, the microkernel and the tile dispatch share one weight
//! layout: a change to it changes all three together.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use crate::fused::{FusedLayer, FusedLstm};

/// Rows of a tile: 6 windows × 4 gates = 24 accumulators, leaving registers for the weights.
const MAX_TILE: usize = 6;
/// Windows one rayon task runs (five or six tiles that share each weight block's trip from L2 to
/// L1): a batch of 64 is one task per core. Chunks of 16 (four tasks, kinder to a core slowed by
/// other processes) made 8 % fewer windows/s at batch 64 on a quiet machine and the same at 1,024
/// (BENCHMARKS.md, "Inference").
const CHUNK: usize = 32;
/// Below this many windows the batch runs on the calling thread.
const MIN_PARALLEL_BATCH: usize = 4;
const LANES: usize = 16;
/// Bound on the exponents of the gate functions, as in `fused::cell_step_body`.
const CLAMP: f32 = 20.0;
/// What each gate's pre-activation is multiplied by to give the base-2 exponent of its
/// exponential: e^-x = 2^(-x·log2 e) for the sigmoids (i, f, o), e^-2x for tanh (g). Packing
/// multiplies the weights and bias by it, so the accumulators hold those exponents and the cell
/// update starts at the power of two. Scaling a weight rounds it once (half an ulp), far below
/// what the dot product's own rounding leaves in its sum.
const GATE_SCALE: [f32; 4] = [
    -std::f32::consts::LOG2_E,
    -std::f32::consts::LOG2_E,
    -2.0 * std::f32::consts::LOG2_E,
    -std::f32::consts::LOG2_E,
];
/// `CLAMP` in those base-2 units.
const CLAMP2: f32 = CLAMP * std::f32::consts::LOG2_E;

/// Runs `$step::<M, UB>` for a tile of `$rows` windows (M = rows, UB = 1; a single window takes
/// four blocks at once when `$blocks_left` allows) and evaluates to how many blocks it did. One
/// table for both precisions, so the tile shapes they compile cannot drift apart.
macro_rules! tile {
    ($step:ident, $rows:expr, $blocks_left:expr, ($($arg:expr),*)) => {
        match $rows {
            1 if $blocks_left >= 4 => {
                $step::<1, 4>($($arg),*);
                4
            }
            1 => { $step::<1, 1>($($arg),*); 1 }
            2 => { $step::<2, 1>($($arg),*); 1 }
            3 => { $step::<3, 1>($($arg),*); 1 }
            4 => { $step::<4, 1>($($arg),*); 1 }
            5 => { $step::<5, 1>($($arg),*); 1 }
            6 => { $step::<6, 1>($($arg),*); 1 }
            _ => unreachable!("tiles hold 1 to {MAX_TILE} windows"),
        }
    };
}

/// The packed weights of one layer.
struct PackedLayer {
    /// Width of the x part of `z` (the previous layer's padded hidden size, or the features).
    n_in: usize,
    /// Hidden size rounded up to a multiple of 16.
    hp: usize,
    /// Length of a `z` row, `n_in + hp` rounded up to even (bf16 takes k in pairs).
    kp: usize,
    /// f32: `[hp/16][kp][4][16]`; bf16: `[hp/16][kp/2][4][16][2]` as raw bits.
    w32: Vec<f32>,
    w16: Vec<u16>,
    /// `bias_ih + bias_hh`: `[hp/16][4][16]`.
    bias: Vec<f32>,
}

pub(crate) struct Avx512Lstm {
    n_features: usize,
    layers: Vec<PackedLayer>,
    /// Padded to the last layer's `hp`; with attention `[last ; pooled]`, each padded to `hp`.
    head_weight: Vec<f32>,
    /// `attn.weight` padded to the last layer's `hp`, with attention pooling.
    attn_weight: Option<Vec<f32>>,
    head_bias: f32,
    bf16: bool,
}

/// Whether this CPU runs the kernel; `bf16` adds the AVX-512 BF16 instructions.
pub(crate) fn supported(bf16: bool) -> bool {
    is_x86_feature_detected!("avx512f") && (!bf16 || is_x86_feature_detected!("avx512bf16"))
}

/// Round to nearest even, as `vcvtneps2bf16` does (the inputs are finite).
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

impl Avx512Lstm {
    pub fn pack(src: &FusedLstm, bf16: bool) -> Self {
        let mut layers = Vec::with_capacity(src.layers.len());
        let mut n_in = src.n_features;
        for layer in &src.layers {
            let packed = pack_layer(layer, n_in, bf16);
            n_in = packed.hp;
            layers.push(packed);
        }
        let h = src.layers.last().map_or(src.n_features, |l| l.hidden);
        let padded = |w: &[f32]| {
            let mut w = w.to_vec();
            w.resize(n_in, 0.0);
            w
        };
        let mut head_weight = padded(&src.head_weight[..h]);
        if src.attn_weight.is_some() {
            head_weight.extend(padded(&src.head_weight[h..2 * h]));
        }
        Self {
            n_features: src.n_features,
            layers,
            head_weight,
            attn_weight: src.attn_weight.as_deref().map(padded),
            head_bias: src.head_bias,
            bf16,
        }
    }

    /// Same contract as `FusedLstm::forward`; the caller has checked `supported(self.bf16)`.
    pub fn forward(&self, x: &[f32], batch: usize, window: usize) -> Vec<f32> {
        assert_eq!(x.len(), batch * window * self.n_features);
        let mut out = vec![0f32; batch];
        if window == 0 {
            return out;
        }
        let per_window = window * self.n_features;
        let threads = rayon::current_num_threads();
        if threads <= 1 || batch < MIN_PARALLEL_BATCH {
            self.forward_chunk(x, window, &mut out);
        } else {
            let chunks = threads.max(batch.div_ceil(CHUNK));
            let chunk = batch.div_ceil(chunks);
            out.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk * per_window))
                .for_each(|(out, x)| self.forward_chunk(x, window, out));
        }
        out
    }

    fn forward_chunk(&self, x: &[f32], window: usize, out: &mut [f32]) {
        // SAFETY: `supported(self.bf16)` was checked by the caller (`FusedLstm::forward`).
        unsafe {
            if self.bf16 {
                self.chunk_bf16(x, window, out)
            } else {
                self.chunk_f32(x, window, out)
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn chunk_f32(&self, x: &[f32], window: usize, out: &mut [f32]) {
        self.chunk(x, window, out, |layer, b, rows, k_len, z, _z16, c, h| {
            let w = layer.w32[b * layer.kp * 4 * LANES..].as_ptr();
            let bias = layer.bias[b * 4 * LANES..].as_ptr();
            let (kp, hp) = (layer.kp, layer.hp);
            // SAFETY: block b's weights and bias lie in the packed buffers; `chunk` passes
            // pointers to `rows` rows of z (stride kp), c (stride hp) and h (stride kp), each
            // offset to block b's units, with UB blocks of them left when UB > 1.
            unsafe {
                tile!(
                    step_f32,
                    rows,
                    layer.hp / LANES - b,
                    (w, kp * 64, k_len, bias, z, kp, c, hp, h, kp)
                )
            }
        })
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn chunk_bf16(&self, x: &[f32], window: usize, out: &mut [f32]) {
        self.chunk(x, window, out, |layer, b, rows, k_len, _z, z16, c, h| {
            let w = layer.w16[b * layer.kp * 4 * LANES..].as_ptr();
            let bias = layer.bias[b * 4 * LANES..].as_ptr();
            let (kp, hp) = (layer.kp, layer.hp);
            // SAFETY: as in `chunk_f32`, with z16 in place of z.
            unsafe {
                tile!(
                    step_bf16,
                    rows,
                    layer.hp / LANES - b,
                    (w, kp * 64, k_len, bias, z16, kp, c, hp, h, kp)
                )
            }
        })
    }

    /// Runs all layers over all timesteps of the chunk's windows in lockstep. Per layer the
    /// scratch holds two `z` buffers `[rows][kp]` (step t reads `z[t % 2]` and writes `h_t` into
    /// the h part of the other), a bf16 copy of the one being read, and the cell state
    /// `[rows][hp]`. Within a step the outer loop runs over unit blocks and the inner one over
    /// tiles of at most `MAX_TILE` windows, so a block's weights (20–32 KB) come from L2 once and
    /// from L1 for the chunk's other tiles. `step(layer, block, rows, k_len, z, z16, c, h)` runs
    /// one tile for one block over the first `k_len` values of z (pointers already at the tile's
    /// first row and the block's units) and returns how many blocks it did.
    #[inline(always)]
    fn chunk(
        &self,
        x: &[f32],
        window: usize,
        out: &mut [f32],
        step: impl Fn(
            &PackedLayer,
            usize,
            usize,
            usize,
            *const f32,
            *const u16,
            *mut f32,
            *mut f32,
        ) -> usize,
    ) {
        let f = self.n_features;
        let n = out.len();
        assert!(x.len() >= n * window * f && n > 0);
        // Tiles as even as possible: 16 windows run as 6 + 5 + 5, not 6 + 6 + 4.
        let n_tiles = n.div_ceil(MAX_TILE);
        let tiles: Vec<(usize, usize)> = (0..n_tiles)
            .map(|t| (t * n / n_tiles, (t + 1) * n / n_tiles - t * n / n_tiles))
            .collect();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { z, z16, cell, top } = &mut *scratch;
            let mut z_off = Vec::with_capacity(self.layers.len());
            let mut c_off = Vec::with_capacity(self.layers.len());
            let (mut z_len, mut c_len, mut z16_len) = (0, 0, 0);
            for l in &self.layers {
                z_off.push(z_len);
                c_off.push(c_len);
                z_len += 2 * n * l.kp;
                c_len += n * l.hp;
                z16_len = z16_len.max(n * l.kp);
            }
            // h_{-1} = 0 and c_{-1} = 0; the padding columns of z must stay 0 throughout.
            z.clear();
            z.resize(z_len, 0.0);
            cell.clear();
            cell.resize(c_len, 0.0);
            if z16.len() < z16_len {
                z16.resize(z16_len, 0);
            }
            // Attention pooling reads every step of the top layer: `[n][window][hp]`.
            let top_layer = &self.layers[self.layers.len() - 1];
            let top_hp = top_layer.hp;
            if self.attn_weight.is_some() && top.len() < n * window * top_hp {
                top.resize(n * window * top_hp, 0.0);
            }
            for t in 0..window {
                let (cur, nxt) = (t % 2, 1 - t % 2);
                for (l, layer) in self.layers.iter().enumerate() {
                    let kp = layer.kp;
                    let zl = z_off[l];
                    // This layer's input at t: the features, or the layer below's h_t.
                    for m in 0..n {
                        let dst = zl + (cur * n + m) * kp;
                        if l == 0 {
                            let src = &x[(m * window + t) * f..][..f];
                            z[dst..dst + f].copy_from_slice(src);
                        } else {
                            let below = &self.layers[l - 1];
                            let src = z_off[l - 1] + (nxt * n + m) * below.kp + below.n_in;
                            z.copy_within(src..src + below.hp, dst);
                        }
                    }
                    let z_cur = zl + cur * n * kp;
                    if self.bf16 {
                        let (src, dst) = (&z[z_cur..z_cur + n * kp], &mut z16[..n * kp]);
                        // SAFETY: `bf16` kernels are only built where `supported(true)` holds.
                        unsafe { to_bf16_rows(src, dst) };
                    }
                    let h_nxt = zl + nxt * n * kp + layer.n_in;
                    // At t = 0, h_{-1} = 0: the recurrent part of z adds nothing, so the k loop
                    // stops after the input part (kept even for bf16's pairs).
                    let k_len = if t == 0 {
                        layer.n_in.next_multiple_of(2).min(kp)
                    } else {
                        kp
                    };
                    let mut b = 0;
                    while b < layer.hp / LANES {
                        let mut done = 1;
                        for &(first, rows) in &tiles {
                            let unit = b * LANES;
                            done = step(
                                layer,
                                b,
                                rows,
                                k_len,
                                z[z_cur + first * kp..].as_ptr(),
                                z16[first * kp..].as_ptr(),
                                cell[c_off[l] + first * layer.hp + unit..].as_mut_ptr(),
                                z[h_nxt + first * kp + unit..].as_mut_ptr(),
                            );
                        }
                        b += done;
                    }
                }
                if self.attn_weight.is_some() {
                    let l = self.layers.len() - 1;
                    for m in 0..n {
                        let src = z_off[l] + (nxt * n + m) * top_layer.kp + top_layer.n_in;
                        top[(m * window + t) * top_hp..][..top_hp]
                            .copy_from_slice(&z[src..src + top_hp]);
                    }
                }
            }
            let l = self.layers.len() - 1;
            for (m, y) in out.iter_mut().enumerate() {
                *y = match &self.attn_weight {
                    Some(attn) => crate::pooling::head(
                        &top[m * window * top_hp..][..window * top_hp],
                        top_hp,
                        Some(attn),
                        &self.head_weight,
                        self.head_bias,
                    ),
                    // After the last step, h_{window-1} sits in z[window % 2] of the top layer.
                    None => {
                        let row = z_off[l] + ((window % 2) * n + m) * top_layer.kp;
                        let h = &z[row + top_layer.n_in..][..top_hp];
                        crate::pooling::head(h, top_hp, None, &self.head_weight, self.head_bias)
                    }
                };
            }
        });
    }
}

#[derive(Default)]
struct Scratch {
    z: Vec<f32>,
    z16: Vec<u16>,
    cell: Vec<f32>,
    top: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn pack_layer(layer: &FusedLayer, n_in: usize, bf16: bool) -> PackedLayer {
    let h = layer.hidden;
    let g4 = 4 * h;
    let hp = h.next_multiple_of(LANES);
    let kp = (n_in + hp).next_multiple_of(2);
    let nblk = hp / LANES;
    // W_ihᵀ rows for k < layer.n_in, zero rows for the padded inputs, then W_hhᵀ rows.
    let weight = |k: usize, g: usize, unit: usize| -> f32 {
        GATE_SCALE[g]
            * if unit >= h {
                0.0
            } else if k < layer.n_in {
                layer.w_ih_t[k * g4 + g * h + unit]
            } else if k >= n_in && k - n_in < h {
                layer.w_hh_t[(k - n_in) * g4 + g * h + unit]
            } else {
                0.0
            }
    };
    let mut bias = vec![0f32; nblk * 4 * LANES];
    for b in 0..nblk {
        for g in 0..4 {
            for lane in 0..LANES {
                let unit = b * LANES + lane;
                if unit < h {
                    bias[(b * 4 + g) * LANES + lane] = GATE_SCALE[g] * layer.bias[g * h + unit];
                }
            }
        }
    }
    let (mut w32, mut w16) = (Vec::new(), Vec::new());
    if bf16 {
        w16 = vec![0u16; nblk * kp * 4 * LANES];
        for b in 0..nblk {
            for k in 0..kp {
                for g in 0..4 {
                    for lane in 0..LANES {
                        let at = (((b * kp / 2 + k / 2) * 4 + g) * LANES + lane) * 2 + k % 2;
                        w16[at] = to_bf16(weight(k, g, b * LANES + lane));
                    }
                }
            }
        }
    } else {
        w32 = vec![0f32; nblk * kp * 4 * LANES];
        for b in 0..nblk {
            for k in 0..kp {
                for g in 0..4 {
                    for lane in 0..LANES {
                        w32[((b * kp + k) * 4 + g) * LANES + lane] = weight(k, g, b * LANES + lane);
                    }
                }
            }
        }
    }
    PackedLayer {
        n_in,
        hp,
        kp,
        w32,
        w16,
        bias,
    }
}

/// One timestep of one layer for M windows and UB unit blocks: gates = bias + z·W, then the
/// cell update, all in registers. `w` points at the first block's packed weights (`wblk` values
/// per block), `z` at M rows of `zs` values, `c` at M rows of `cs` cell values and `h` at M rows
/// of `hs` outputs, each already offset to the first block's units.
///
/// # Safety
/// The pointers must cover what is described above; the CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn step_f32<const M: usize, const UB: usize>(
    w: *const f32,
    wblk: usize,
    kp: usize,
    bias: *const f32,
    z: *const f32,
    zs: usize,
    c: *mut f32,
    cs: usize,
    h: *mut f32,
    hs: usize,
) {
    unsafe {
        let mut acc = [[[_mm512_setzero_ps(); 4]; UB]; M];
        for row in acc.iter_mut() {
            for (u, blk) in row.iter_mut().enumerate() {
                for (g, a) in blk.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(bias.add((u * 4 + g) * LANES));
                }
            }
        }
        for k in 0..kp {
            let mut wv = [[_mm512_setzero_ps(); 4]; UB];
            for (u, blk) in wv.iter_mut().enumerate() {
                for (g, v) in blk.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(w.add(u * wblk + (k * 4 + g) * LANES));
                }
            }
            for (m, row) in acc.iter_mut().enumerate() {
                let zb = _mm512_set1_ps(*z.add(m * zs + k));
                for (u, blk) in row.iter_mut().enumerate() {
                    for (g, a) in blk.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(zb, wv[u][g], *a);
                    }
                }
            }
        }
        cell_update(&mut acc, c, cs, h, hs);
    }
}

/// `step_f32` with bf16 weights and inputs: `z16` holds M rows of `zs` bf16 values and `w` the
/// pair-interleaved weights; `vdpbf16ps` adds two k per instruction in f32.
///
/// # Safety
/// As `step_f32`; the CPU must have AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn step_bf16<const M: usize, const UB: usize>(
    w: *const u16,
    wblk: usize,
    kp: usize,
    bias: *const f32,
    z16: *const u16,
    zs: usize,
    c: *mut f32,
    cs: usize,
    h: *mut f32,
    hs: usize,
) {
    unsafe {
        let mut acc = [[[_mm512_setzero_ps(); 4]; UB]; M];
        for row in acc.iter_mut() {
            for (u, blk) in row.iter_mut().enumerate() {
                for (g, a) in blk.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(bias.add((u * 4 + g) * LANES));
                }
            }
        }
        let zero: __m512bh = std::mem::transmute(_mm512_setzero_si512());
        for kk in 0..kp / 2 {
            let mut wv = [[zero; 4]; UB];
            for (u, blk) in wv.iter_mut().enumerate() {
                for (g, v) in blk.iter_mut().enumerate() {
                    let p = w.add(u * wblk + (kk * 4 + g) * 2 * LANES);
                    *v = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()));
                }
            }
            for (m, row) in acc.iter_mut().enumerate() {
                let pair = z16.add(m * zs + 2 * kk).cast::<i32>().read_unaligned();
                let zb: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (u, blk) in row.iter_mut().enumerate() {
                    for (g, a) in blk.iter_mut().enumerate() {
                        *a = _mm512_dpbf16_ps(*a, zb, wv[u][g]);
                    }
                }
            }
        }
        cell_update(&mut acc, c, cs, h, hs);
    }
}

/// f32 values to bf16 (round to nearest even); `dst` as long as `src`.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn to_bf16_rows(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    let mut src = src.chunks_exact(LANES);
    let mut dst = dst.chunks_exact_mut(LANES);
    for (s, d) in src.by_ref().zip(dst.by_ref()) {
        // SAFETY: both chunks hold 16 values.
        unsafe {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.as_ptr()));
            _mm256_storeu_si256(
                d.as_mut_ptr().cast(),
                std::mem::transmute::<__m256bh, __m256i>(v),
            );
        }
    }
    for (s, d) in src.remainder().iter().zip(dst.into_remainder()) {
        *d = to_bf16(*s);
    }
}

/// The gate nonlinearities and c/h update for a whole tile (M rows of UB blocks of 16 units),
/// from the base-2 exponents the accumulators hold (pre-activations times `GATE_SCALE`, in the
/// order i, f, g, o). Same formulation as `fused::cell_step_body` (clamped exponents), except that its
/// two divisions are reciprocals refined by one Newton step: `vdivps` issues once per 16 cycles on
/// one port, and two of them per 16 units cost as much as a sixth of the step's multiply-adds.
///
/// It runs phase by phase over the tile (every gate's exponential, then every cell, then every
/// output) rather than one block after another: one block's update is a chain of dependent
/// operations (exponential, cell, exponential of the cell, output) too long for the core to
/// overlap with the next block's, and the tile's 4·M·UB independent exponentials keep both FMA
/// pipes busy where one block's four left them waiting on latency.
///
/// # Safety
/// `c` and `h` must cover M rows (strides `cs`, `hs`) of UB·16 values; the CPU must have AVX-512F.
// No `#[target_feature]`: Rust refuses it beside `inline(always)`, and inlined into the step
// functions it takes theirs. As a call, the accumulators went through the stack, and batch 1
// made 10 % fewer windows/s (one thread, alternated; batches 64 and 1,024 level).
#[inline(always)]
unsafe fn cell_update<const M: usize, const UB: usize>(
    acc: &mut [[[__m512; 4]; UB]; M],
    c: *mut f32,
    cs: usize,
    h: *mut f32,
    hs: usize,
) {
    unsafe {
        let one = _mm512_set1_ps(1.0);
        let lo = _mm512_set1_ps(-CLAMP2);
        let hi = _mm512_set1_ps(CLAMP2);
        let clamp = |v: __m512| _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        for row in acc.iter_mut() {
            for blk in row.iter_mut() {
                for e in blk.iter_mut() {
                    *e = exp2_in_range(clamp(*e));
                }
            }
        }
        // e_c for every block, then h: the cell's exponential waits on its c_next.
        let mut e_c = [[_mm512_setzero_ps(); UB]; M];
        for (m, row) in acc.iter().enumerate() {
            for (u, e) in row.iter().enumerate() {
                let [e_i, e_f, e_g, _] = *e;
                let c = c.add(m * cs + u * LANES);
                let c_prev = _mm512_loadu_ps(c);
                let ig = _mm512_mul_ps(_mm512_add_ps(one, e_i), _mm512_add_ps(one, e_g));
                let one_f = _mm512_add_ps(one, e_f);
                let num =
                    _mm512_fmadd_ps(c_prev, ig, _mm512_mul_ps(_mm512_sub_ps(one, e_g), one_f));
                let c_next = _mm512_mul_ps(num, recip(_mm512_mul_ps(one_f, ig)));
                _mm512_storeu_ps(c, c_next);
                let to_exp2 = _mm512_set1_ps(-2.0 * std::f32::consts::LOG2_E);
                e_c[m][u] = exp2_in_range(clamp(_mm512_mul_ps(c_next, to_exp2)));
            }
        }
        for (m, row) in acc.iter().enumerate() {
            for (u, e) in row.iter().enumerate() {
                let (e_o, e_c) = (e[3], e_c[m][u]);
                let den = _mm512_mul_ps(_mm512_add_ps(one, e_o), _mm512_add_ps(one, e_c));
                let h = h.add(m * hs + u * LANES);
                _mm512_storeu_ps(h, _mm512_mul_ps(_mm512_sub_ps(one, e_c), recip(den)));
            }
        }
    }
}

/// 1/d for the denominators of `cell_update`: products of at most three factors `1 + e^x` with
/// x ≤ `CLAMP`, so between 1 and 1.2e26, where `vrcp14ps` is accurate to 14 bits and 1/d is a
/// normal number. One Newton step takes the estimate to within about 2 ulp of `1/d`.
#[target_feature(enable = "avx512f")]
#[inline]
fn recip(d: __m512) -> __m512 {
    let r = _mm512_rcp14_ps(d);
    let e = _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0));
    _mm512_fmadd_ps(r, e, r)
}

/// 2^t for t within ±`CLAMP2`: t = k + f with k an integer and |f| <= 1/2 (the subtraction is
/// exact), 2^f by a degree-6 polynomial (minimax in relative error, 1.9e-9; about 1.3 ulp once
/// evaluated in f32, `models/tests/reference/gen_exp2_poly.py` fits it) and 2^k applied by
/// `vscalefps`. Nine operations where e^x by Cody-Waite reduction took twelve, because the
/// multiplication by log2 e happened when the weights were packed.
#[target_feature(enable = "avx512f")]
#[inline]
fn exp2_in_range(t: __m512) -> __m512 {
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, k);
    let mut p = _mm512_set1_ps(EXP2_POLY[6]);
    for coef in EXP2_POLY[..6].iter().rev() {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*coef));
    }
    _mm512_scalef_ps(p, k)
}

/// 2^f on [-1/2, 1/2], lowest power first.
const EXP2_POLY: [f32; 7] = [
    1.0,
    // The fit lands on ln 2 itself, as the Taylor series says it should.
    std::f32::consts::LN_2,
    0.240_226_46,
    0.055_503_286,
    0.009_618_489,
    0.001_339_993_1,
    0.000_153_458_12,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_exp2_is_within_two_ulp() {
        if !supported(false) {
            return;
        }
        #[target_feature(enable = "avx512f")]
        fn run(t: &[f32; 16]) -> [f32; 16] {
            let mut y = [0f32; 16];
            // SAFETY: both arrays hold 16 values.
            unsafe { _mm512_storeu_ps(y.as_mut_ptr(), exp2_in_range(_mm512_loadu_ps(t.as_ptr()))) };
            y
        }
        // Every exponent the cell can ask for, in steps that land between the integers.
        let n = (2.0 * CLAMP2 / 1.7e-4) as i32;
        for i in (0..n).step_by(16) {
            let t: [f32; 16] = std::array::from_fn(|l| -CLAMP2 + (i + l as i32) as f32 * 1.7e-4);
            // SAFETY: checked by `supported`.
            let y = unsafe { run(&t) };
            for l in 0..16 {
                let want = (t[l] as f64).exp2();
                let err = (y[l] as f64 - want).abs() / want;
                assert!(
                    err <= 2.0 * f32::EPSILON as f64,
                    "2^{} = {} ({err:e})",
                    t[l],
                    y[l]
                );
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even mantissa.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
    }
}
