//! Sweep epochs reach InfluxDB's `training_run` measurement (against the InfluxDB that
//! `deploy/infra.sh` starts; `deploy/test.sh` exports where it is).

use influxdb2::models::Query;
use maintcast_common::influx::InfluxConfig;
use maintcast_models::train::EpochReport;
use maintcast_trainer::training_run::TrainingRunSink;

#[test]
fn epochs_are_written_to_training_run() {
    let config = InfluxConfig::from_env().expect("InfluxDB settings (run deploy/infra.sh start)");
    let sink = TrainingRunSink::new(&config).unwrap();
    let model = format!("sweep-test-{}", std::process::id());
    for epoch in 1..=3 {
        let r = EpochReport {
            epoch,
            train_loss: 10.0 / epoch as f64,
            val_loss: 9.0,
            val_mae: 5.0 - epoch as f64,
            val_rmse: 6.0,
            lr: 1e-3,
            elapsed_s: epoch as f64,
            best: true,
        };
        sink.epoch(&model, "run0", &r);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sink.finish();

    let flux = format!(
        "from(bucket: \"{}\") |> range(start: -1h) \
         |> filter(fn: (r) => r._measurement == \"training_run\" and r.model == \"{model}\" \
                              and r.run_id == \"run0\" and r._field == \"val_mae\")",
        config.bucket
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = rt
        .block_on(config.client().unwrap().query_raw(Some(Query::new(flux))))
        .unwrap();
    let mut values: Vec<f64> = records
        .iter()
        .filter_map(|r| maintcast_common::flux::number(r.values.get("_value")))
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![2.0, 3.0, 4.0], "{records:?}");
}
