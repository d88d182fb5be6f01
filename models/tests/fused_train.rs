//! The fused training step against Candle autograd over the composed network (itself pinned to
//! PyTorch in lstm_reference.rs): loss and every gradient, over depths, widths, windows, batch
//! sizes that split across threads, and the three losses; with dropout, against the composed
//! ops given the same masks, and reproducible from the seed.

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use maintcast_models::fused_train::FusedTrainer;
use maintcast_models::network::{ArchConfig, Network, Pooling};
use maintcast_models::optim::{self, LossKind};
use maintcast_models::train::init_weights;

struct Setup {
    arch: ArchConfig,
    net: Network,
    names: Vec<String>,
    vars: Vec<Var>,
}

fn setup(hidden: &[usize], n_features: usize, dropout: f32, seed: u64) -> Setup {
    setup_pooled(hidden, n_features, dropout, seed, Pooling::Last)
}

fn setup_pooled(
    hidden: &[usize],
    n_features: usize,
    dropout: f32,
    seed: u64,
    pooling: Pooling,
) -> Setup {
    let arch = ArchConfig {
        n_features,
        hidden: hidden.to_vec(),
        dropout,
        pooling,
    };
    let varmap = VarMap::new();
    let net = Network::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &arch,
    )
    .unwrap();
    init_weights(&varmap, seed).unwrap();
    // Biases start at 0/1; random ones make every bias gradient path count.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.contains("bias") {
            let noise = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
    }
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    let vars = {
        let data = varmap.data().lock().unwrap();
        names.iter().map(|n| data[n].clone()).collect()
    };
    Setup {
        arch,
        net,
        names,
        vars,
    }
}

/// Inputs in [0, 1] like scaled sensors, targets around the predictions so that Huber sees both
/// its quadratic and its linear part.
fn batch(s: &Setup, b: usize, t: usize) -> (Tensor, Tensor) {
    let x = Tensor::rand(0f32, 1.0, (b, t, s.arch.n_features), &Device::Cpu).unwrap();
    let pred = s.net.forward(&x, false).unwrap().detach();
    let y = (pred + Tensor::randn(0f32, 2.0, b, &Device::Cpu).unwrap()).unwrap();
    (x, y)
}

fn autograd(s: &Setup, pred: &Tensor, y: &Tensor, kind: LossKind) -> (f64, Vec<Vec<f32>>) {
    let loss = optim::loss(kind, pred, y, 1.0).unwrap();
    let grads = loss.backward().unwrap();
    let g = s
        .vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
                .unwrap_or_else(|| vec![0.0; v.elem_count()])
        })
        .collect();
    (loss.to_scalar::<f32>().unwrap() as f64, g)
}

fn fused(s: &Setup, x: &Tensor, y: &Tensor, kind: LossKind, seed: u64) -> (f64, Vec<Vec<f32>>) {
    let mut ft = FusedTrainer::new(&s.arch, &s.names, seed).unwrap();
    ft.load(&s.vars).unwrap();
    let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let ys: Vec<f32> = y.to_vec1().unwrap();
    let loss = ft.step(&xs, &ys, kind, 1.0, true).unwrap();
    (loss, ft.grads().to_vec())
}

/// Each gradient within 1e-4 of the reference, relative to the reference tensor's largest entry.
fn assert_close(what: &str, s: &Setup, got: &(f64, Vec<Vec<f32>>), want: &(f64, Vec<Vec<f32>>)) {
    let rel = (got.0 - want.0).abs() / want.0.abs().max(1e-12);
    assert!(rel <= 1e-4, "{what}: loss {} vs {}", got.0, want.0);
    for ((name, g), w) in s.names.iter().zip(&got.1).zip(&want.1) {
        assert_eq!(g.len(), w.len(), "{what}: {name} length");
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Only W_hh over one-step windows has no path to the loss, and under MAE the head bias
        // gradient is a mean of signs, exactly 0 when a batch has as many over- as under-predictions.
        assert!(
            scale > 0.0 || name.ends_with("weight_hh") || name == "head.bias",
            "{what}: {name} has an all-zero reference gradient"
        );
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The 1e-6 floor covers sums that cancel, such as MAE's head bias gradient (a mean of
        // signs), where autograd's rounding leaves ~1e-9 and ours exactly 0.
        assert!(
            worst <= 1e-4 * scale + 1e-6,
            "{what}: {name} differs by {worst} (largest entry {scale})"
        );
    }
}

#[test]
fn gradients_match_autograd_without_dropout() {
    let cases: [(&[usize], usize); 4] =
        [(&[7], 5), (&[16, 8], 14), (&[5, 12, 6], 3), (&[64, 64], 14)];
    for (k, (hidden, n_features)) in cases.into_iter().enumerate() {
        let s = setup(hidden, n_features, 0.0, k as u64);
        for (b, t) in [(1, 1), (3, 10), (40, 7), (64, 30)] {
            let (x, y) = batch(&s, b, t);
            let pred = s.net.forward(&x, true).unwrap();
            for kind in [LossKind::Mse, LossKind::Mae, LossKind::Huber] {
                let what = format!("hidden {hidden:?} batch {b} window {t} {kind:?}");
                let want = autograd(&s, &pred, &y, kind);
                let got = fused(&s, &x, &y, kind, 0);
                assert_close(&what, &s, &got, &want);
            }
        }
    }
}

#[test]
fn attention_pooling_gradients_match_autograd() {
    let cases: [(&[usize], usize); 3] = [(&[7], 5), (&[16, 8], 14), (&[64, 64], 14)];
    for (k, (hidden, n_features)) in cases.into_iter().enumerate() {
        let s = setup_pooled(hidden, n_features, 0.0, 10 + k as u64, Pooling::Attention);
        // Scores far from uniform, so the softmax's own gradient is exercised.
        let attn = s.names.iter().position(|n| n == "attn.weight").unwrap();
        let v = &s.vars[attn];
        v.set(&(v.as_tensor() * 8.0).unwrap()).unwrap();
        // From two steps up: over one step the softmax is 1 whatever the score, and the score
        // weights have no gradient.
        for (b, t) in [(1, 2), (3, 10), (40, 7), (64, 30)] {
            let (x, y) = batch(&s, b, t);
            let pred = s.net.forward(&x, true).unwrap();
            for kind in [LossKind::Mse, LossKind::Huber] {
                let what = format!("attention, hidden {hidden:?} batch {b} window {t} {kind:?}");
                let want = autograd(&s, &pred, &y, kind);
                let got = fused(&s, &x, &y, kind, 0);
                assert_close(&what, &s, &got, &want);
            }
        }
    }
}

#[test]
fn chunked_batches_match_one_chunk() {
    let s = setup(&[16, 8], 6, 0.0, 3);
    let (x, y) = batch(&s, 100, 12);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| fused(&s, &x, &y, LossKind::Mse, 0));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(5)
        .build()
        .unwrap()
        .install(|| fused(&s, &x, &y, LossKind::Mse, 0));
    assert_close("5 chunks vs 1", &s, &many, &one);
}

/// The composed network with the given dropout masks ([b, t, H] per layer but the top) in place
/// of `candle_nn::ops::dropout`'s random ones.
fn composed_with_masks(s: &Setup, x: &Tensor, masks: &[Tensor]) -> Tensor {
    let var = |n: String| {
        s.vars[s.names.iter().position(|m| *m == n).unwrap()]
            .as_tensor()
            .clone()
    };
    let mut seq = x.clone();
    let n_layers = s.arch.hidden.len();
    for (l, &h) in s.arch.hidden.iter().enumerate() {
        let (b, t, n_in) = seq.dims3().unwrap();
        let bias = (var(format!("lstm.{l}.bias_ih")) + var(format!("lstm.{l}.bias_hh"))).unwrap();
        let proj = seq
            .reshape((b * t, n_in))
            .unwrap()
            .matmul(&var(format!("lstm.{l}.weight_ih")).t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap()
            .reshape((b, t, 4 * h))
            .unwrap();
        let w_hh_t = var(format!("lstm.{l}.weight_hh")).t().unwrap();
        let mut hs = Tensor::zeros((b, h), DType::F32, &Device::Cpu).unwrap();
        let mut cs = hs.clone();
        let mut outs = Vec::new();
        for step in 0..t {
            let gates = (proj.i((.., step, ..)).unwrap() + hs.matmul(&w_hh_t).unwrap()).unwrap();
            let part = |k: usize| gates.narrow(D::Minus1, k * h, h).unwrap();
            let sig = |k: usize| candle_nn::ops::sigmoid(&part(k)).unwrap();
            cs = ((sig(1) * &cs).unwrap() + (sig(0) * part(2).tanh().unwrap()).unwrap()).unwrap();
            hs = (sig(3) * cs.tanh().unwrap()).unwrap();
            outs.push(hs.clone());
        }
        seq = Tensor::stack(&outs, 1).unwrap();
        if l + 1 < n_layers {
            seq = (seq * &masks[l]).unwrap();
        }
    }
    let t = seq.dim(1).unwrap();
    seq.i((.., t - 1, ..))
        .unwrap()
        .matmul(&var("head.weight".into()).t().unwrap())
        .unwrap()
        .broadcast_add(&var("head.bias".into()))
        .unwrap()
        .squeeze(1)
        .unwrap()
}

#[test]
fn dropout_gradients_match_autograd_with_the_same_masks() {
    let s = setup(&[12, 10, 6], 4, 0.3, 7);
    let (b, t) = (37, 9);
    let (x, y) = batch(&s, b, t);
    let mut ft = FusedTrainer::new(&s.arch, &s.names, 11).unwrap();
    ft.load(&s.vars).unwrap();
    let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let ys: Vec<f32> = y.to_vec1().unwrap();
    let loss = ft.step(&xs, &ys, LossKind::Huber, 1.0, true).unwrap();
    let got = (loss, ft.grads().to_vec());

    let masks: Vec<Tensor> = ft
        .dropout_masks()
        .iter()
        .zip(&s.arch.hidden)
        .map(|(m, &h)| Tensor::from_slice(m, (b, t, h), &Device::Cpu).unwrap())
        .collect();
    assert_eq!(masks.len(), 2);
    // Inverted dropout: kept units scaled by 1/(1-p), and about p of them dropped.
    let scale = 1.0 / (1.0 - 0.3f32);
    let flat: Vec<f32> = ft.dropout_masks().concat();
    assert!(flat.iter().all(|&v| v == 0.0 || (v - scale).abs() < 1e-6));
    let dropped = flat.iter().filter(|&&v| v == 0.0).count() as f64 / flat.len() as f64;
    assert!((dropped - 0.3).abs() < 0.03, "dropped share {dropped}");

    let pred = composed_with_masks(&s, &x, &masks);
    let want = autograd(&s, &pred, &y, LossKind::Huber);
    assert_close("dropout 0.3", &s, &got, &want);

    // Evaluation mode: no masks, the plain network's gradients.
    let eval_loss = ft.step(&xs, &ys, LossKind::Huber, 1.0, false).unwrap();
    let eval = (eval_loss, ft.grads().to_vec());
    let want = autograd(&s, &s.net.forward(&x, false).unwrap(), &y, LossKind::Huber);
    assert_close("dropout off", &s, &eval, &want);
}

#[test]
fn dropout_is_reproducible_from_the_seed() {
    let s = setup(&[16, 8], 5, 0.25, 1);
    let (x, y) = batch(&s, 20, 6);
    let a = fused(&s, &x, &y, LossKind::Mse, 42);
    let b = fused(&s, &x, &y, LossKind::Mse, 42);
    let c = fused(&s, &x, &y, LossKind::Mse, 43);
    assert_eq!(a, b);
    assert_ne!(a.1, c.1);
}

#[test]
fn bad_inputs_are_refused() {
    let s = setup(&[4], 3, 0.0, 0);
    let mut ft = FusedTrainer::new(&s.arch, &s.names, 0).unwrap();
    assert!(
        ft.step(&[0.0; 7], &[0.0, 1.0], LossKind::Mse, 1.0, true)
            .is_err()
    );
    assert!(ft.step(&[], &[], LossKind::Mse, 1.0, true).is_err());
    let mut wrong = s.names.clone();
    wrong[0] = "lstm.1.weight_ih".into();
    assert!(FusedTrainer::new(&s.arch, &wrong, 0).is_err());
    assert!(FusedTrainer::new(&s.arch, &s.names[1..], 0).is_err());
    assert!(ft.load_one(0, &[1.0, 2.0, 3.0]).is_err());
}
