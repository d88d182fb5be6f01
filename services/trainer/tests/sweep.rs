//! A two-run sweep on a tiny synthetic fleet: event files parse (with our own reader of the
//! TFRecord framing and checksums, as CI has no TensorBoard), the leaderboard has two rows, a second
//! invocation skips both runs, and promotion publishes the winner with the sweep's id in its card.

use std::path::Path;

use candle_core::Device;
use maintcast_models::{History, MachineHistory};
use maintcast_trainer::sweep::{self, Grid, SweepOptions};
use maintcast_trainer::{chart, leaderboard, tensorboard};

const DAY_MS: i64 = 86_400_000;

/// Machines whose first sensor drifts towards failure, so there is something to learn.
fn fleet() -> History {
    let machines = (0..10)
        .map(|m| {
            let n = 30 + 2 * m;
            let ts: Vec<i64> = (0..n as i64)
                .map(|i| 1_700_000_000_000 + i * DAY_MS)
                .collect();
            let values = (0..n)
                .flat_map(|i| {
                    let wear = i as f32 / n as f32;
                    [wear + 0.05 * ((i * 7 + m) % 5) as f32, ((i + m) % 3) as f32]
                })
                .collect();
            MachineHistory {
                machine_id: format!("m{m:02}"),
                ts: ts.clone(),
                sensors: vec!["wear".into(), "noise".into()],
                values,
                events: vec![*ts.last().unwrap()],
                ..Default::default()
            }
        })
        .collect();
    History { machines }
}

const GRID: &str = r#"
name = "tiny"
[base.data]
window = 5
cap = 50.0
val_fraction = 0.3
[base.model]
hidden = [4]
dropout = 0.0
[base.train]
epochs = 3
batch_size = 16
lr = 0.01
[grid]
optimizer = ["adam", "nadam"]
"#;

fn options(out: &Path) -> SweepOptions {
    SweepOptions {
        out: out.to_path_buf(),
        jobs: 2,
        device: Device::Cpu,
        data_id: "synthetic".into(),
        model_name: "tiny".into(),
        influx: None,
        report_only: false,
        paired: None,
    }
}

#[test]
fn two_run_sweep_logs_ranks_resumes_and_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let grid = Grid::from_toml(GRID).unwrap();
    let runs = grid.expand("synthetic").unwrap();
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0].id, runs[1].id);
    let history = fleet();

    let first = sweep::run(&grid, &runs, &history, &options(&out)).unwrap();
    assert_eq!((first.trained, first.skipped), (2, 0), "{:?}", first.failed);
    assert!(first.failed.is_empty());
    assert_eq!(first.results.len(), 2);
    assert!(first.results[0].val_mae <= first.results[1].val_mae);

    for r in &runs {
        let run_dir = sweep::run_dir(&out, &r.id);
        let files = tensorboard::event_files(&run_dir).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        let events = tensorboard::read_events(&files[0]).unwrap();
        let result = sweep::read_result(&run_dir).expect("result.json");
        let epochs = result.epochs_run;
        assert!((1..=3).contains(&epochs));
        for tag in ["train/loss", "val/mae", "val/rmse", "lr", "elapsed_s"] {
            let s = tensorboard::scalars(&events, tag);
            let steps: Vec<i64> = s.iter().map(|p| p.0).collect();
            assert_eq!(steps, (1..=epochs as i64).collect::<Vec<_>>(), "{tag}");
            assert!(s.iter().all(|p| p.1.is_finite()), "{tag}: {s:?}");
        }
        let lr = tensorboard::scalars(&events, "lr");
        assert!((lr[0].1 - 0.01).abs() < 1e-6);
        let mae = tensorboard::scalars(&events, "val/mae");
        assert_eq!(mae.len(), result.curve.len());
        assert!((mae[0].1 as f64 - result.curve[0].val_mae).abs() < 1e-3);
        let settings = tensorboard::texts(&events, "settings");
        assert_eq!(settings.len(), 1);
        assert!(settings[0].contains(&r.id) && settings[0].contains("optimizer"));
        assert!(result.params > 0 && result.infer_windows_per_s > 0.0);
        assert!(result.best_epoch >= 1 && result.best_epoch <= epochs);
    }

    let csv = std::fs::read_to_string(out.join(leaderboard::CSV_FILE)).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains(&first.results[0].id));
    let md = std::fs::read_to_string(out.join(leaderboard::MARKDOWN_FILE)).unwrap();
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
            .count(),
        2
    );
    // The chart needs a TrueType font on the machine; say so rather than fail where there is none.
    match chart::png_size(&out.join("chart.png")) {
        Ok(size) => assert_eq!(size, (1400, 600)),
        Err(e) => eprintln!("no chart checked: {e}"),
    }

    let mtime = |id: &str| {
        std::fs::metadata(sweep::run_dir(&out, id).join(sweep::RESULT_FILE))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = runs.iter().map(|r| mtime(&r.id)).collect();
    let again = sweep::run(&grid, &runs, &history, &options(&out)).unwrap();
    assert_eq!((again.trained, again.skipped), (0, 2));
    assert_eq!(again.results.len(), 2);
    assert_eq!(again.sweep_id, first.sweep_id);
    let after: Vec<_> = runs.iter().map(|r| mtime(&r.id)).collect();
    assert_eq!(before, after);

    let registry = dir.path().join("registry");
    let p = sweep::promote_best(&out, &again, &history, &registry, "tiny", &Device::Cpu).unwrap();
    assert!(p.promoted, "{}", p.reason);
    assert_eq!(p.run_id, again.results[0].id);
    let current = maintcast_models::registry::current_version_dir(&registry, "tiny").unwrap();
    let card = maintcast_models::artifact::read_card(&current).unwrap();
    assert_eq!(card.training["sweep"]["sweep_id"], first.sweep_id.as_str());
    assert_eq!(card.training["sweep"]["run_id"], p.run_id.as_str());
    // promoted through the registry's one promote: logged, with the sweep and run named
    let log = maintcast_models::registry::read_log(&registry, "tiny").unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].version, p.version);
    assert!(
        log[0].reason.contains(&first.sweep_id) && log[0].reason.contains(&p.run_id),
        "{}",
        log[0].reason
    );
    // The same model again does not beat itself: published, but CURRENT stays.
    let p2 = sweep::promote_best(&out, &again, &history, &registry, "tiny", &Device::Cpu).unwrap();
    assert!(!p2.promoted, "{}", p2.reason);
    assert_eq!(
        maintcast_models::registry::current_version(&registry, "tiny").unwrap(),
        Some(p.version)
    );
    assert_eq!(
        maintcast_models::registry::read_log(&registry, "tiny")
            .unwrap()
            .len(),
        1,
        "a sweep that did not promote logged a promotion"
    );
}

#[test]
fn an_interrupted_run_is_trained_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let grid = Grid::from_toml(GRID).unwrap();
    let runs: Vec<_> = grid
        .expand("synthetic")
        .unwrap()
        .into_iter()
        .take(1)
        .collect();
    // What a kill mid-run leaves: an event file and no result.json.
    let run_dir = sweep::run_dir(&out, &runs[0].id);
    tensorboard::EventWriter::create(&run_dir).unwrap();
    let report = SweepOptions {
        report_only: true,
        paired: None,
        ..options(&out)
    };
    let o = sweep::run(&grid, &runs, &fleet(), &report).unwrap();
    assert_eq!((o.trained, o.skipped, o.results.len()), (0, 0, 0));
    let o = sweep::run(&grid, &runs, &fleet(), &options(&out)).unwrap();
    assert_eq!((o.trained, o.skipped), (1, 0));
    assert_eq!(tensorboard::event_files(&run_dir).unwrap().len(), 1);
}

#[test]
fn grids_expand_sample_and_refuse_typos() {
    let g = Grid::from_toml(
        "[grid]\nlayers = [1, 2, 3]\nunits = [32, 64]\nbatch_size = [1, 32]\n\
         schedule = [{ kind = \"constant\" }, { kind = \"exponential\", gamma = 0.9 }]\n",
    )
    .unwrap();
    let all = g.expand("d").unwrap();
    assert_eq!(all.len(), 3 * 2 * 2 * 2);
    assert_eq!(all[0].config.model.hidden, vec![32]);
    assert_eq!(all.last().unwrap().config.model.hidden, vec![64, 64, 64]);
    let a = sweep::sample(all.clone(), 5, 7);
    let b = sweep::sample(all.clone(), 5, 7);
    let c = sweep::sample(all.clone(), 5, 8);
    let ids = |v: &[sweep::RunSpec]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a), ids(&c));
    assert_eq!(a.len(), 5);
    // Other data, other runs.
    assert_ne!(all[0].id, g.expand("other").unwrap()[0].id);

    // Paired on the schedule: 4 of the 12 settings, each with and without decay.
    let p = sweep::sample_paired(all.clone(), 4, 7, sweep::PairAxis::Schedule);
    assert_eq!(p.len(), 8);
    for r in &p {
        let twin = p.iter().filter(|o| {
            o.id != r.id
                && o.config.model.hidden == r.config.model.hidden
                && o.config.train.batch_size == r.config.train.batch_size
                && o.config.train.schedule != r.config.train.schedule
        });
        assert_eq!(twin.count(), 1, "{} has no matched run", r.label);
    }
    assert_ne!(
        ids(&p),
        ids(&sweep::sample_paired(
            all.clone(),
            4,
            8,
            sweep::PairAxis::Schedule
        ))
    );

    let e = Grid::from_toml("[grid]\nunit = [32]\n").unwrap_err();
    assert!(format!("{e:#}").contains("unit"), "{e:#}");
    let e = Grid::from_toml("[grid]\noptimizer = []\n").unwrap_err();
    assert!(format!("{e:#}").contains("optimizer"), "{e:#}");
    let e = Grid::from_toml("[base.data]\nval_fraction = 0.0\n").unwrap_err();
    assert!(format!("{e:#}").contains("val_fraction"), "{e:#}");
    let e = Grid::from_toml("[grid]\noptimizer = [\"lbfgs\"]\n").unwrap_err();
    assert!(format!("{e:#}").contains("lbfgs"), "{e:#}");
}
