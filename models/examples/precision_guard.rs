//! The accuracy guard for reduced-precision inference: a model's forecasts under the exact f32
//! AVX-512 kernel against the bf16 one. Prints, as JSON, the FD001 test RMSE under each (the
//! standard last-window protocol) and the largest change of any forecast, in days, over every
//! window of the given data (each window the data allows, step 1).
//!
//! cargo run --release -p maintcast-models --example precision_guard -- MODEL_DIR cmapss DIR FD001
//! cargo run --release -p maintcast-models --example precision_guard -- MODEL_DIR csv TELEMETRY.csv EVENTS.csv
//! # first train a model with a config (as `maintcast train` does) into MODEL_DIR:
//! cargo run --release -p maintcast-models --example precision_guard -- train CONFIG DIR FD001 MODEL_DIR
//!
//! BENCHMARKS.md ("bf16 accuracy guard") quotes its output; a card may say
//! `"inference_precision": "bf16"` only for a model whose RMSE moves by < 0.1 and whose forecasts
//! move by < 0.05 days here.

use std::path::Path;

use candle_core::Device;
use maintcast_models::dataset::{self, WindowSpec};
use maintcast_models::{CpuKernel, Forecaster, MachineHistory, history, pipeline};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("train") {
        let [_, config, dir, subset, out] = args.as_slice() else {
            anyhow::bail!("usage: precision_guard train CONFIG DIR SUBSET MODEL_DIR");
        };
        let cfg = maintcast_models::config::Config::load(Path::new(config))?;
        let c = history::read_cmapss(Path::new(dir), subset)?;
        let trained = pipeline::train_model(&c.train, &cfg, &Device::Cpu, &mut |_, _| {})?;
        trained.save(Path::new(out))?;
        eprintln!("trained into {out}");
        return Ok(());
    }
    let [model, kind, a, b] = args.as_slice() else {
        anyhow::bail!(
            "usage: precision_guard MODEL_DIR (cmapss DIR SUBSET | csv TELEMETRY EVENTS)"
        );
    };
    let f = Forecaster::load(Path::new(model), &Device::Cpu)?;
    for k in [CpuKernel::Avx512, CpuKernel::Avx512Bf16] {
        anyhow::ensure!(k.is_supported(), "this CPU cannot run {}", k.name());
    }
    let (history, cmapss) = match kind.as_str() {
        "cmapss" => {
            let c = history::read_cmapss(Path::new(a), b)?;
            (c.train.clone(), Some(c))
        }
        "csv" => (history::read_csv(Path::new(a), Some(Path::new(b)))?, None),
        other => anyhow::bail!("unknown data kind {other}"),
    };
    let card = f.card();
    let all: Vec<&MachineHistory> = history.machines.iter().collect();
    let spec = WindowSpec {
        window: card.window,
        step: 1,
        min_rows: card.min_rows,
    };
    let w = dataset::training_windows(&all, &card.features, &card.scaler, spec, card.target.cap)?;
    let mut report = serde_json::json!({ "model": model, "windows": w.len() });
    let mut days = Vec::new();
    for k in [CpuKernel::Avx512, CpuKernel::Avx512Bf16] {
        f.set_cpu_kernel(k)?;
        let pred: Vec<f32> = f.predict(&w.x, w.len())?.iter().map(|p| p.days).collect();
        days.push(pred);
        if let Some(c) = &cmapss {
            let r = pipeline::evaluate_cmapss(&f, c)?;
            report[format!("test_rmse_{}", k.name())] = r.rmse.into();
        }
    }
    let worst = days[0]
        .iter()
        .zip(&days[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let mean = days[0]
        .iter()
        .zip(&days[1])
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / w.len().max(1) as f64;
    report["max_abs_diff_days"] = worst.into();
    report["mean_abs_diff_days"] = mean.into();
    println!("{report}");
    Ok(())
}
