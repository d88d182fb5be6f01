//! The shipped model in models/pretrained: it loads the way the ingest service and the demo load
//! it, and forecasts a fleet it never saw better than a constant would.

use std::path::{Path, PathBuf};

use candle_core::Device;
use maintcast_ingest::model::Model;
use maintcast_ingest::serving::ServingModel;
use maintcast_models::dataset::{self, WindowSpec};
use maintcast_models::history::{self, MachineHistory};
use maintcast_models::{Forecaster, metrics, registry};
use maintcast_simulator::{Fleet, FleetConfig, output};

fn pretrained() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/pretrained")
}

/// A simulated fleet's history, read back the way `maintcast train --format csv` reads it.
fn simulated_history(seed: u64, machines: usize, days: f64) -> history::History {
    let cfg = FleetConfig {
        seed,
        machines,
        ..FleetConfig::default()
    };
    let sim = Fleet::new(cfg.clone())
        .unwrap()
        .run(cfg.steps_for_days(days));
    let tmp = tempfile::tempdir().unwrap();
    output::write_csv(&sim, tmp.path()).unwrap();
    history::read_csv(
        &tmp.path().join("telemetry.csv"),
        Some(&tmp.path().join("events.csv")),
    )
    .unwrap()
}

#[test]
fn pretrained_model_forecasts_an_unseen_fleet() {
    let dir = registry::current_version_dir(&pretrained(), "maintcast").unwrap();
    let size = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(size < 1_000_000, "the shipped weights grew to {size} bytes");
    let f = Forecaster::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(f.window(), 60);
    assert_eq!(f.features().len(), 6, "{:?}", f.features());

    // Seed 42 is the demo's fleet; the model was trained on seed 7 (models/pretrained/README.md).
    let h = simulated_history(42, 8, 60.0);
    let all: Vec<&MachineHistory> = h.machines.iter().collect();
    let card = f.card();
    let spec = WindowSpec {
        window: card.window,
        step: 6,
        min_rows: card.window,
    };
    let w = dataset::training_windows(&all, &card.features, &card.scaler, spec, card.target.cap)
        .unwrap();
    assert!(w.len() > 500, "only {} windows", w.len());
    let pred: Vec<f32> = f
        .predict(&w.x, w.len())
        .unwrap()
        .iter()
        .map(|p| p.days)
        .collect();
    let mean = w.y.iter().sum::<f32>() / w.len() as f32;
    let constant = metrics::mae(&vec![mean; w.len()], &w.y);
    let mae = metrics::mae(&pred, &w.y);
    // The demo once shipped a model that forecast the same ~10 days for every machine; a model
    // that has learned anything beats the best constant (the labels' own mean) clearly.
    assert!(
        mae < 0.8 * constant,
        "MAE {mae:.2} d vs {constant:.2} d for the constant {mean:.1} d"
    );

    // The ingest service loads it from a registry by name, as the Docker image seeds it.
    let serving = ServingModel::load_current(&pretrained(), "maintcast", &Device::Cpu).unwrap();
    let per = card.window * card.features.len();
    let one = serving.predict(&w.x[..2 * per], 2).unwrap();
    assert_eq!(one.len(), 2);
    for (a, b) in one.iter().zip(&pred) {
        assert!((a.days - b).abs() < 1e-3, "{} vs {b}", a.days);
        assert!(a.p10 <= a.days && a.days <= a.p90);
    }
}

/// The card's input statistics are those of its training rows on the README's fleet (seed 7,
/// 32 machines, 120 days), so ingest judges input quality against what the model really saw.
#[test]
fn pretrained_card_carries_the_statistics_of_its_training_rows() {
    let dir = registry::current_version_dir(&pretrained(), "maintcast").unwrap();
    let card = maintcast_models::artifact::read_card(&dir).unwrap();
    assert_eq!(card.feature_stats.len(), card.features.len());
    let h = simulated_history(7, 32, 120.0);
    let train: Vec<String> = serde_json::from_value(card.data["train_machines"].clone()).unwrap();
    let machines: Vec<&MachineHistory> = h
        .machines
        .iter()
        .filter(|m| train.contains(&m.machine_id))
        .collect();
    assert_eq!(machines.len(), train.len());
    let rows = dataset::training_rows(&machines, &card.features).unwrap();
    let want = maintcast_models::artifact::FeatureStats::of_rows(&rows, card.features.len());
    assert_eq!(card.feature_stats, want);
}
