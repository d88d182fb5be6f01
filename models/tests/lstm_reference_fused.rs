//! The fused CPU kernel against the composed Candle ops (themselves pinned to PyTorch in
//! lstm_reference.rs), over depths, widths, windows and batch sizes that hit every way the
//! kernel splits a batch across threads, for every CPU kernel this machine runs.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use maintcast_models::network::{ArchConfig, Network};
use maintcast_models::{CpuKernel, Precision};

fn random_network(hidden: &[usize], n_features: usize) -> (VarMap, Network) {
    let cfg = ArchConfig {
        n_features,
        hidden: hidden.to_vec(),
        dropout: 0.1,
    };
    let varmap = VarMap::new();
    let net = Network::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    // Triple the default init so gates saturate as often as in a trained model.
    for var in varmap.all_vars() {
        var.set(&(var.as_tensor() * 3.0).unwrap()).unwrap();
    }
    (varmap, net)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The kernels this CPU runs; the portable one stands for a CPU without AVX-512.
fn kernels() -> Vec<CpuKernel> {
    [
        CpuKernel::Portable,
        CpuKernel::Avx512,
        CpuKernel::Avx512Bf16,
    ]
    .into_iter()
    .filter(|k| k.is_supported())
    .collect()
}

/// Exact for the f32 kernels; for bf16 products, a bound relative to the output's scale.
fn tolerance(kernel: CpuKernel, want: &[f32]) -> f32 {
    match kernel.precision() {
        Precision::F32 => 1e-5,
        Precision::Bf16 => 2e-2 * want.iter().fold(1f32, |m, v| m.max(v.abs())),
    }
}

#[test]
fn fused_matches_composed() {
    for (hidden, n_features) in [
        (&[7][..], 5),
        (&[16, 8][..], 14),
        (&[5, 12, 6][..], 3),
        (&[40, 17][..], 9),
    ] {
        let (_vars, net) = random_network(hidden, n_features);
        for window in [1, 10, 60] {
            for batch in [1, 2, 3, 8, 33, 64, 100] {
                let x =
                    Tensor::randn(0f32, 1.0, (batch, window, n_features), &Device::Cpu).unwrap();
                let composed: Vec<f32> = net.forward(&x, false).unwrap().to_vec1().unwrap();
                let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                for kernel in kernels() {
                    net.set_cpu_kernel(kernel).unwrap();
                    let fused = net.predict(&flat, batch).unwrap();
                    let d = max_diff(&fused, &composed);
                    assert!(
                        d <= tolerance(kernel, &composed),
                        "{} hidden {hidden:?} window {window} batch {batch}: max diff {d}",
                        kernel.name()
                    );
                    let op: Vec<f32> = net.forward_inference(&x).unwrap().to_vec1().unwrap();
                    assert_eq!(op, fused);
                }
            }
        }
    }
}

#[test]
fn default_shape_fused_matches_composed() {
    let (_vars, net) = random_network(&[64, 64], 14);
    let batch = 130;
    let x = Tensor::rand(0f32, 1.0, (batch, 60, 14), &Device::Cpu).unwrap();
    let composed: Vec<f32> = net.forward(&x, false).unwrap().to_vec1().unwrap();
    let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for kernel in kernels() {
        net.set_cpu_kernel(kernel).unwrap();
        let fused = net.predict(&flat, batch).unwrap();
        let d = max_diff(&fused, &composed);
        assert!(
            d <= tolerance(kernel, &composed),
            "{}: max diff {d}",
            kernel.name()
        );
    }
    let stepwise: Vec<f32> = net.forward_stepwise(&x).unwrap().to_vec1().unwrap();
    let d = max_diff(&stepwise, &composed);
    assert!(d <= 1e-5, "stepwise: max diff {d}");
}

#[test]
fn a_window_gets_the_same_forecast_alone_or_in_a_batch() {
    let (_vars, net) = random_network(&[16, 16], 4);
    let batch = 50;
    let x = Tensor::randn(0f32, 1.0, (batch, 12, 4), &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for kernel in kernels() {
        net.set_cpu_kernel(kernel).unwrap();
        let together = net.predict(&x, batch).unwrap();
        for (b, want) in together.iter().enumerate() {
            let alone = net.predict(&x[b * 48..(b + 1) * 48], 1).unwrap();
            assert!(
                (alone[0] - want).abs() <= 1e-6,
                "{} window {b}",
                kernel.name()
            );
        }
    }
}

#[test]
fn refresh_picks_up_trained_weights() {
    let (varmap, net) = random_network(&[6], 2);
    let x = vec![0.5f32; 2 * 3 * 2];
    let before = net.predict(&x, 2).unwrap();
    let bias = varmap.data().lock().unwrap()["head.bias"].clone();
    bias.set(&(bias.as_tensor() + 1.0).unwrap()).unwrap();
    net.refresh_inference_weights();
    let after = net.predict(&x, 2).unwrap();
    for (a, b) in after.iter().zip(&before) {
        assert!((a - b - 1.0).abs() < 1e-5);
    }
}
