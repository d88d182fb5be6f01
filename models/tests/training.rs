mod common;

use candle_core::Device;
use maintcast_models::pipeline;

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
