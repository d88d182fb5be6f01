//! The network against PyTorch: outputs and gradients from `reference/gen_lstm.py`
//! (values in `reference/lstm.json`), and the weight names a saved model must carry.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use maintcast_models::network::{ArchConfig, Network, Pooling};
use maintcast_models::{CpuKernel, Precision};
use serde::Deserialize;

const TOL: f32 = 1e-5;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    /// Absent in cases that predate attention pooling: they read the last state.
    #[serde(default)]
    pooling: Pooling,
    n_features: usize,
    hidden: Vec<usize>,
    batch: usize,
    steps: usize,
    weights: HashMap<String, Weight>,
    x: Vec<f32>,
    target: Vec<f32>,
    y: Vec<f32>,
    loss: f32,
    grads: HashMap<String, Vec<f32>>,
}

#[derive(Deserialize)]
struct Weight {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn reference() -> Reference {
    let text = include_str!("reference/lstm.json");
    serde_json::from_str(text).expect("reference/lstm.json parses")
}

impl Case {
    fn arch(&self) -> ArchConfig {
        ArchConfig {
            n_features: self.n_features,
            hidden: self.hidden.clone(),
            dropout: 0.0,
            pooling: self.pooling,
        }
    }

    fn tensors(&self) -> HashMap<String, Tensor> {
        self.weights
            .iter()
            .map(|(name, w)| {
                let t = Tensor::from_slice(&w.data, w.shape.as_slice(), &Device::Cpu).unwrap();
                (name.clone(), t)
            })
            .collect()
    }

    fn input(&self) -> Tensor {
        Tensor::from_slice(
            &self.x,
            (self.batch, self.steps, self.n_features),
            &Device::Cpu,
        )
        .unwrap()
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL,
            "{what}[{k}]: got {g}, PyTorch {w} (diff {})",
            (g - w).abs()
        );
    }
}

/// The variables a fresh network of `cfg` creates, with their shapes, sorted by name.
fn created_weights(cfg: &ArchConfig) -> Vec<(String, Vec<usize>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Network::new(vb, cfg).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    got.sort();
    got
}

#[test]
fn weight_names_and_shapes_follow_pytorch_layout() {
    let cfg = ArchConfig {
        n_features: 14,
        hidden: vec![64, 32],
        dropout: 0.2,
        pooling: Default::default(),
    };
    let got = created_weights(&cfg);
    // Spelled out rather than derived: renaming a weight must fail here, not when a saved
    // model refuses to load.
    let mut want: Vec<(String, Vec<usize>)> = [
        ("head.bias", vec![1]),
        ("head.weight", vec![1, 32]),
        ("lstm.0.bias_hh", vec![256]),
        ("lstm.0.bias_ih", vec![256]),
        ("lstm.0.weight_hh", vec![256, 64]),
        ("lstm.0.weight_ih", vec![256, 14]),
        ("lstm.1.bias_hh", vec![128]),
        ("lstm.1.bias_ih", vec![128]),
        ("lstm.1.weight_hh", vec![128, 32]),
        ("lstm.1.weight_ih", vec![128, 64]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    want.sort();
    assert_eq!(got, want);
    let mut declared = cfg.weight_shapes();
    declared.sort();
    assert_eq!(declared, want);

    // Attention pooling adds the score weights and doubles the head's input.
    let cfg = ArchConfig {
        pooling: Pooling::Attention,
        ..cfg
    };
    let got = created_weights(&cfg);
    for (name, shape) in want.iter_mut() {
        if name == "head.weight" {
            *shape = vec![1, 64];
        }
    }
    want.push(("attn.weight".to_string(), vec![1, 32]));
    want.sort();
    assert_eq!(got, want);
    let mut declared = cfg.weight_shapes();
    declared.sort();
    assert_eq!(declared, want);
}

#[test]
fn outputs_match_pytorch() {
    for case in reference().cases {
        let vb = VarBuilder::from_tensors(case.tensors(), DType::F32, &Device::Cpu);
        let net = Network::new(vb, &case.arch()).unwrap();
        let x = case.input();

        let composed: Vec<f32> = net.forward(&x, false).unwrap().to_vec1().unwrap();
        assert_close(&format!("{} composed", case.name), &composed, &case.y);

        let fused = net.predict(&case.x, case.batch).unwrap();
        assert_close(&format!("{} fused", case.name), &fused, &case.y);

        let op: Vec<f32> = net.forward_inference(&x).unwrap().to_vec1().unwrap();
        assert_close(&format!("{} custom op", case.name), &op, &case.y);
    }
}

/// Where `MAINTCAST_TEST_DEVICE=cuda` (scripts/gpu-check.sh), the GPU; else the CPU.
fn test_device() -> Device {
    match std::env::var("MAINTCAST_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0).expect("MAINTCAST_TEST_DEVICE=cuda needs a GPU build"),
        _ => Device::Cpu,
    }
}

/// bf16 products keep ~3 significant digits; over these small cases the output moves by at most
/// a few 1e-3 (the FD001 and end-to-end guards in BENCHMARKS.md bound it on real models).
const BF16_TOL: f32 = 1e-2;

#[test]
fn every_inference_path_matches_pytorch() {
    for case in reference().cases {
        let vb = VarBuilder::from_tensors(case.tensors(), DType::F32, &Device::Cpu);
        let net = Network::new(vb, &case.arch()).unwrap();
        // The portable kernel is what a CPU without AVX-512 runs: forced here on one that has it.
        for kernel in [
            CpuKernel::Portable,
            CpuKernel::Avx512,
            CpuKernel::Avx512Bf16,
        ] {
            if !kernel.is_supported() {
                eprintln!("{}: not supported on this CPU, skipped", kernel.name());
                continue;
            }
            net.set_cpu_kernel(kernel).unwrap();
            assert_eq!(net.cpu_kernel(), kernel);
            let got = net.predict(&case.x, case.batch).unwrap();
            let what = format!("{} {}", case.name, kernel.name());
            if kernel.precision() == Precision::Bf16 {
                for (k, (g, w)) in got.iter().zip(&case.y).enumerate() {
                    assert!(
                        (g - w).abs() <= BF16_TOL,
                        "{what}[{k}]: got {g}, PyTorch {w}"
                    );
                }
            } else {
                assert_close(&what, &got, &case.y);
            }
        }
        let stepwise: Vec<f32> = net
            .forward_stepwise(&case.input())
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_close(&format!("{} stepwise", case.name), &stepwise, &case.y);

        let device = test_device();
        if !device.is_cpu() {
            let tensors = case
                .tensors()
                .into_iter()
                .map(|(n, t)| (n, t.to_device(&device).unwrap()))
                .collect();
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            let net = Network::new(vb, &case.arch()).unwrap();
            let got = net.predict(&case.x, case.batch).unwrap();
            assert_close(&format!("{} on {device:?}", case.name), &got, &case.y);
        }
    }
}

#[test]
fn gradients_match_pytorch() {
    for case in reference().cases {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Network::new(vb, &case.arch()).unwrap();
        // Overwrite the freshly initialised variables with PyTorch's weights.
        let vars = varmap.data().lock().unwrap().clone();
        for (name, t) in case.tensors() {
            vars[&name].set(&t).unwrap();
        }

        let target = Tensor::from_slice(&case.target, case.batch, &Device::Cpu).unwrap();
        let y = net.forward(&case.input(), false).unwrap();
        let loss = (y - target).unwrap().sqr().unwrap().mean_all().unwrap();
        let loss_value: f32 = loss.to_scalar().unwrap();
        assert!(
            (loss_value - case.loss).abs() <= TOL,
            "{}: loss {loss_value} vs {}",
            case.name,
            case.loss
        );
        let grads = loss.backward().unwrap();
        assert!(!case.grads.is_empty());
        for (name, want) in &case.grads {
            let got: Vec<f32> = grads
                .get(vars[name].as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", case.name))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_close(&format!("{} d loss / d {name}", case.name), &got, want);
        }
    }
}

#[test]
fn saved_weights_load_through_mmaped_safetensors() {
    let case = reference().cases.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&case.tensors(), &path).unwrap();
    // SAFETY: the file is ours and nothing modifies it while mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }.unwrap();
    let net = Network::new(vb, &case.arch()).unwrap();
    assert_close(
        "mmaped",
        &net.predict(&case.x, case.batch).unwrap(),
        &case.y,
    );
}

#[test]
fn a_missing_or_misshapen_weight_is_refused() {
    let case = reference().cases.into_iter().next().unwrap();
    let mut tensors = case.tensors();
    tensors.remove("lstm.1.bias_hh");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = Network::new(vb, &case.arch())
        .err()
        .expect("missing weight");
    assert!(err.to_string().contains("lstm.1.bias_hh"), "{err}");

    let mut wider = case.arch();
    wider.hidden[0] += 1;
    let vb = VarBuilder::from_tensors(case.tensors(), DType::F32, &Device::Cpu);
    assert!(Network::new(vb, &wider).is_err());
}

#[test]
fn bad_inputs_get_clear_errors() {
    let case = reference().cases.into_iter().next().unwrap();
    let vb = VarBuilder::from_tensors(case.tensors(), DType::F32, &Device::Cpu);
    let net = Network::new(vb, &case.arch()).unwrap();

    let err = net.predict(&case.x[1..], case.batch).unwrap_err();
    assert!(err.to_string().contains("whole number of windows"), "{err}");
    let err = net.predict(&case.x, 0).unwrap_err();
    assert!(err.to_string().contains("at least one window"), "{err}");
    let x = Tensor::zeros((1, 4, case.n_features + 1), DType::F32, &Device::Cpu).unwrap();
    let err = net.forward(&x, false).unwrap_err();
    assert!(err.to_string().contains("features per timestep"), "{err}");
    assert!(net.forward_inference(&x).is_err());

    for (bad, field) in [
        (
            ArchConfig {
                n_features: 0,
                hidden: vec![4],
                dropout: 0.0,
                pooling: Default::default(),
            },
            "n_features",
        ),
        (
            ArchConfig {
                n_features: 3,
                hidden: vec![],
                dropout: 0.0,
                pooling: Default::default(),
            },
            "hidden",
        ),
        (
            ArchConfig {
                n_features: 3,
                hidden: vec![4, 0],
                dropout: 0.0,
                pooling: Default::default(),
            },
            "hidden[1]",
        ),
        (
            ArchConfig {
                n_features: 3,
                hidden: vec![4],
                dropout: 1.0,
                pooling: Default::default(),
            },
            "dropout",
        ),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn dropout_acts_in_training_only() {
    let cfg = ArchConfig {
        n_features: 3,
        hidden: vec![8, 8],
        dropout: 0.5,
        pooling: Default::default(),
    };
    let varmap = VarMap::new();
    let net = Network::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (16, 5, 3), &Device::Cpu).unwrap();
    let eval_a: Vec<f32> = net.forward(&x, false).unwrap().to_vec1().unwrap();
    let eval_b: Vec<f32> = net.forward(&x, false).unwrap().to_vec1().unwrap();
    assert_eq!(eval_a, eval_b);
    let train: Vec<f32> = net.forward(&x, true).unwrap().to_vec1().unwrap();
    assert_ne!(train, eval_a);
}
