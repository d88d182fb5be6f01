//! Throughput of `Network::predict` for the default model shape (2 × LSTM(64), window 60, 14
//! features, random weights), timed the way ../shared/anchors/infer_anchor.py times ONNX Runtime:
//! two warm-up calls, then calls until `MIN_S` seconds have passed; one JSON line per batch with
//! wall-clock and CPU-time figures.
//! `scripts/bench-inference.sh` alternates it with the anchor and prints the ratios.
//!
//! cargo run --release -p maintcast-models --example infer_bench -- [KERNEL] [BATCHES]
//! KERNEL: avx512 | avx512-bf16 | portable (default: what the CPU picks for f32), or `cuda` for
//! the GPU path on cuda:0 (input copied in and results copied out in every call);
//! BATCHES: comma-separated (default 1,64,1024). Threads: RAYON_NUM_THREADS. `POOLING=attention`
//! times the attention-pooled head instead of the last-state one; `WINDOW=90` another window
//! length (default 60).

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use maintcast_models::CpuKernel;
use maintcast_models::network::{ArchConfig, Network, Pooling};

const FEATURES: usize = 14;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (kernel, device) = match args.next().as_deref() {
        None | Some("auto") => (None, Device::Cpu),
        Some("cuda") => (None, Device::new_cuda(0)?),
        Some(k) => (
            Some(CpuKernel::parse(k).ok_or_else(|| anyhow::anyhow!("unknown kernel {k}"))?),
            Device::Cpu,
        ),
    };
    let batches: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,64,1024".into())
        .split(',')
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let min_s: f64 = std::env::var("MIN_S").map_or(Ok(2.0), |s| s.parse())?;
    let window: usize = std::env::var("WINDOW").map_or(Ok(60), |s| s.parse())?;

    let cfg = ArchConfig {
        n_features: FEATURES,
        hidden: vec![64, 64],
        dropout: 0.0,
        pooling: match std::env::var("POOLING").as_deref() {
            Err(_) | Ok("last") => Pooling::Last,
            Ok("attention") => Pooling::Attention,
            Ok(other) => anyhow::bail!("POOLING must be last or attention, got {other}"),
        },
    };
    let varmap = VarMap::new();
    let net = Network::new(VarBuilder::from_varmap(&varmap, DType::F32, &device), &cfg)?;
    if let Some(k) = kernel {
        net.set_cpu_kernel(k)?;
    }
    let name = match (device.is_cpu(), cfg.pooling) {
        (true, Pooling::Last) => net.cpu_kernel().name().to_string(),
        (true, Pooling::Attention) => format!("{} attention", net.cpu_kernel().name()),
        (false, _) => "cuda stepwise".to_string(),
    };
    let mut state = 0x9e37_79b9_u32;
    for batch in batches {
        let x: Vec<f32> = (0..batch * window * FEATURES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as f32 / u32::MAX as f32
            })
            .collect();
        net.predict(&x, batch)?;
        net.predict(&x, batch)?;
        let (mut n, t0, cpu0) = (0u64, Instant::now(), cpu_seconds());
        while t0.elapsed().as_secs_f64() < min_s {
            std::hint::black_box(net.predict(&x, batch)?);
            n += 1;
        }
        let s = t0.elapsed().as_secs_f64() / n as f64;
        let cpu = (cpu_seconds() - cpu0) / n as f64;
        println!(
            "{}",
            serde_json::json!({
                "runtime": format!("maintcast {name}"),
                "batch": batch,
                "window": window,
                "latency_ms": (s * 1e6).round() / 1e3,
                "windows_per_s": (batch as f64 / s).round(),
                "cpu_ms_per_call": (cpu * 1e6).round() / 1e3,
                "windows_per_cpu_s": (batch as f64 / cpu).round(),
            })
        );
    }
    Ok(())
}

/// CPU time of all this process's threads so far (Linux `schedstat`, nanoseconds): on a machine
/// shared with other work it moves far less than wall time.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}
