//! Batched inference of the default model shape (2 × LSTM(64), window 60, 14 features, dense
//! head): the fused CPU kernel (`Network::predict`) against the composed Candle ops
//! (`Network::forward`). Throughput is reported in windows per second.
//!
//! cargo bench -p maintcast-models --bench inference
//!
//! On a machine shared with other work, wall-clock figures swing by 2x. For CPU time per window,
//! `INFERENCE_ITERS=N INFERENCE_BATCH=B` makes the binary run the fused path N times and exit,
//! to be timed with `perf stat -e task-clock` (see BENCHMARKS.md).

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use maintcast_models::network::{ArchConfig, Network};

const WINDOW: usize = 60;
const FEATURES: usize = 14;

fn default_network() -> (VarMap, Network) {
    let cfg = ArchConfig {
        n_features: FEATURES,
        hidden: vec![64, 64],
        dropout: 0.0,
        pooling: Default::default(),
    };
    let varmap = VarMap::new();
    let net = Network::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .expect("network builds");
    (varmap, net)
}

fn inference(c: &mut Criterion) {
    let (_varmap, net) = default_network();
    let mut group = c.benchmark_group("inference");
    for batch in [1usize, 64, 1024] {
        let x = Tensor::rand(0f32, 1.0, (batch, WINDOW, FEATURES), &Device::Cpu).unwrap();
        let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("fused", batch), &flat, |b, flat| {
            b.iter(|| net.predict(flat, batch).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("composed", batch), &x, |b, x| {
            b.iter(|| net.forward(x, false).unwrap().to_vec1::<f32>().unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is small and shared; the figures in BENCHMARKS.md are medians.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = inference
}
fn main() {
    if let Ok(iters) = std::env::var("INFERENCE_ITERS") {
        let iters: usize = iters.parse().expect("INFERENCE_ITERS is a count");
        let batch: usize = std::env::var("INFERENCE_BATCH")
            .ok()
            .and_then(|b| b.parse().ok())
            .expect("INFERENCE_BATCH is a batch size");
        let (_varmap, net) = default_network();
        let x = vec![0.3f32; batch * WINDOW * FEATURES];
        for _ in 0..iters {
            std::hint::black_box(net.predict(&x, batch).unwrap());
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
