//! What the dense head reads from the top LSTM layer: its last state, or that and an
//! attention-weighted mean of every step (see `crate::network` for the weights). The Candle form
//! is what autograd trains and the GPU path runs; the slice form ends both CPU kernels.

use candle_core::{IndexOp, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What the dense head reads from the top LSTM layer's outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last hidden state `h_T`.
    #[default]
    Last,
    /// `h_T` and the attention-weighted mean of every step's output (`crate::network` has the
    /// formula).
    Attention,
}

impl Pooling {
    /// Width of the head's input for a top layer of `h` units.
    pub fn head_width(self, h: usize) -> usize {
        match self {
            Pooling::Last => h,
            Pooling::Attention => 2 * h,
        }
    }
}

/// The attention head on the top layer's outputs `seq` [b, t, H]: [b]. Composed of Candle ops,
/// so autograd trains it; `head` is the same arithmetic for the CPU kernels.
pub(crate) fn attention_head(
    seq: &Tensor,
    attn: &Tensor,
    head_weight: &Tensor,
    head_bias: &Tensor,
) -> Result<Tensor> {
    let (b, t, h) = seq.dims3()?;
    let scores = seq
        .reshape((b * t, h))?
        .matmul(&attn.t()?)?
        .reshape((b, t, 1))?;
    let alpha = candle_nn::ops::softmax(&scores, 1)?;
    let pooled = seq.broadcast_mul(&alpha)?.sum(1)?;
    let last = seq.i((.., t - 1, ..))?.contiguous()?;
    Tensor::cat(&[&last, &pooled], 1)?
        .matmul(&head_weight.t()?)?
        .broadcast_add(head_bias)?
        .squeeze(1)
}

/// The dense head on one window's top-layer outputs `seq` ([window][h] row-major): the last
/// state, or with `attn` the last state and the attention-pooled one ([`attention_head`]).
/// Both CPU kernels end in this.
pub(crate) fn head(seq: &[f32], h: usize, attn: Option<&[f32]>, weight: &[f32], bias: f32) -> f32 {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let steps = seq.len() / h;
    let last = &seq[(steps - 1) * h..][..h];
    let mut y = dot(last, &weight[..h]) + bias;
    if let Some(attn) = attn {
        // The head is linear, so it can read each step before pooling: its share of the pooled
        // state is sum_t alpha_t (w2 . h_t). One pass with a running maximum (the online
        // softmax) keeps that free of allocation in the kernels' per-window loop.
        let w2 = &weight[h..2 * h];
        let (mut max, mut total, mut acc) = (f32::NEG_INFINITY, 0.0f32, 0.0f32);
        for s in seq.chunks_exact(h) {
            let score = dot(s, attn);
            if score > max {
                let rescale = (max - score).exp();
                total *= rescale;
                acc *= rescale;
                max = score;
            }
            let e = (score - max).exp();
            total += e;
            acc += e * dot(s, w2);
        }
        y += acc / total;
    }
    y
}

#[cfg(test)]
mod tests {
    use crate::network::{ArchConfig, Pooling};

    #[test]
    fn cards_written_before_pooling_read_as_last_state() {
        let old = r#"{"n_features": 3, "hidden": [4], "dropout": 0.0}"#;
        let arch: ArchConfig = serde_json::from_str(old).unwrap();
        assert_eq!(arch.pooling, Pooling::Last);
        let new = r#"{"n_features": 3, "hidden": [4], "dropout": 0.0, "pooling": "attention"}"#;
        let arch: ArchConfig = serde_json::from_str(new).unwrap();
        assert_eq!(arch.pooling, Pooling::Attention);
        assert_eq!(serde_json::to_value(&arch).unwrap()["pooling"], "attention");
    }
}
