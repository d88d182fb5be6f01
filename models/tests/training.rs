mod common;

use candle_core::Device;
use maintcast_models::pipeline;
use rand::{Rng, SeedableRng};

#[test]
fn validation_loss_falls_and_best_weights_are_kept() {
    let history = common::fleet(16, 1);
    let cfg = common::small_config(8);
    let mut reports = Vec::new();
    let trained = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, r| {
        reports.push(r.clone())
    })
    .unwrap();
    assert_eq!(reports.len(), 8);
    let first = reports[0].val_loss;
    let best = reports
        .iter()
        .map(|r| r.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(
        best < 0.5 * first,
        "val loss {first} -> best {best}: {reports:?}"
    );
    assert!(reports.windows(2).all(|w| w[1].elapsed_s >= w[0].elapsed_s));
    // the constant sensor is dropped automatically
    assert_eq!(trained.card.features, ["wear", "temp"]);
    // the kept weights are the best epoch's: their validation RMSE is that epoch's
    let best_rmse = reports
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap()
        .val_rmse;
    let rmse = trained.card.metrics["val"]["rmse"].as_f64().unwrap();
    assert!(
        (rmse - best_rmse).abs() < 1e-3 * best_rmse.max(1.0),
        "{rmse} vs {best_rmse}"
    );
}

#[test]
fn early_stopping_stops_after_patience() {
    let history = common::fleet(8, 2);
    let mut cfg = common::small_config(40);
    // a learning rate this small cannot improve the loss beyond min_delta
    cfg.train.lr = 1e-9;
    cfg.train.min_delta = 1e3;
    cfg.train.patience = 3;
    let mut n = 0;
    pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| n += 1).unwrap();
    assert_eq!(n, 4, "best at epoch 1, then 3 epochs without improvement");
}

/// A fleet that runs at two operating settings, row by row: `load` is 0 or 50 and shifts `wear`
/// by 30 at 50. Trained with `load` as a setting column, the model scales `wear` per regime, so
/// the same wear reads the same at either load, and the saved card keeps the regimes.
#[test]
fn operating_settings_scale_each_regime_and_survive_the_card() {
    let mut history = common::fleet(16, 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for m in &mut history.machines {
        m.sensors.push("load".into());
        let (n, w) = (m.n_rows(), m.sensors.len() - 1);
        let mut values = Vec::with_capacity(n * (w + 1));
        for r in 0..n {
            let load = if rng.random::<bool>() { 50.0 } else { 0.0 };
            let mut row = m.values[r * w..(r + 1) * w].to_vec();
            row[0] += 0.6 * load;
            row.push(load + rng.random_range(-0.01..0.01));
            values.extend(row);
        }
        m.values = values;
    }
    let mut cfg = common::small_config(2);
    cfg.data.regime_columns = vec!["load".into()];
    let trained = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    assert_eq!(trained.card.features, ["wear", "temp", "load"]);
    let dir = tempfile::tempdir().unwrap();
    trained.save(dir.path()).unwrap();
    let (card, _) = maintcast_models::artifact::load(dir.path(), &Device::Cpu).unwrap();
    let regimes = card.scaler.regimes.as_ref().expect("two regimes");
    assert_eq!(regimes.centres.len(), 2);
    let (mut low, mut high) = ([0.0; 3], [0.0; 3]);
    card.scaler.transform_row(&[8.0, 60.0, 0.0], &mut low);
    card.scaler.transform_row(&[38.0, 60.0, 50.0], &mut high);
    assert!((low[0] - high[0]).abs() < 0.1, "{low:?} {high:?}");
    assert_eq!((low[2], high[2]), (0.0, 0.0));

    // Without the setting column, wear's scale spans both regimes.
    cfg.data.regime_columns.clear();
    let global = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    assert!(global.card.scaler.regimes.is_none());
    global
        .card
        .scaler
        .transform_row(&[8.0, 60.0, 0.0], &mut low);
    global
        .card
        .scaler
        .transform_row(&[38.0, 60.0, 50.0], &mut high);
    assert!((low[0] - high[0]).abs() > 0.3, "{low:?} {high:?}");
}
