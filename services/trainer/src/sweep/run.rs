//! Running a sweep: every unfinished run trained (in parallel up to `jobs`), logged to TensorBoard
//! and InfluxDB, its result written last by rename; then the leaderboard and the chart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use maintcast_models::pipeline;
use maintcast_models::train::EpochReport;
use maintcast_models::{Forecaster, History};

use super::grid::{Grid, PairAxis, RunSpec, short_hash};
use super::leaderboard;
use super::result::{EpochPoint, MODEL_DIR, RESULT_FILE, RunResult, read_result, run_dir};
use crate::tensorboard::EventWriter;
use crate::training_run::TrainingRunSink;

pub struct SweepOptions {
    pub out: PathBuf,
    /// Runs trained at once.
    pub jobs: usize,
    pub device: Device,
    /// Names the data source (format, path, subset); part of every run id.
    pub data_id: String,
    /// The `model` tag of `training_run` points.
    pub model_name: String,
    pub influx: Option<TrainingRunSink>,
    /// Train nothing: rank the runs that already finished (the report of an interrupted sweep).
    pub report_only: bool,
    /// Compare runs that differ only on this axis in the leaderboard.
    pub paired: Option<PairAxis>,
}

#[derive(Debug)]
pub struct SweepOutcome {
    pub sweep_id: String,
    /// Every finished run of this sweep (trained now or earlier), in leaderboard order.
    pub results: Vec<RunResult>,
    pub trained: usize,
    pub skipped: usize,
    /// `(run id, error)` of runs that failed; they have no `result.json` and run again next time.
    pub failed: Vec<(String, String)>,
}

/// The sweep's id: a hash of its runs' ids, so the same grid sample on the same data has the same
/// id wherever it runs.
pub fn sweep_id(runs: &[RunSpec]) -> String {
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    short_hash(ids.join(",").as_bytes())
}

/// Trains every run of `runs` that has no `result.json` yet, then writes the leaderboard (Markdown
/// and CSV) and the chart into `opts.out`.
pub fn run(
    grid: &Grid,
    runs: &[RunSpec],
    history: &History,
    opts: &SweepOptions,
) -> anyhow::Result<SweepOutcome> {
    let out = &opts.out;
    std::fs::create_dir_all(out.join("runs"))
        .with_context(|| format!("creating {}", out.display()))?;
    let sweep_id = sweep_id(runs);
    let manifest = serde_json::json!({
        "sweep_id": sweep_id, "name": grid.name, "data": opts.data_id,
        "runs": runs.iter().map(|r| serde_json::json!({"id": r.id, "label": r.label})).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("sweep.json"),
        serde_json::to_string_pretty(&manifest)?,
    )
    .with_context(|| format!("writing {}", out.join("sweep.json").display()))?;

    let mut done: Vec<RunResult> = Vec::new();
    let mut pending: Vec<&RunSpec> = Vec::new();
    for r in runs {
        match read_result(&run_dir(out, &r.id)) {
            Some(res) => done.push(res),
            None => pending.push(r),
        }
    }
    let skipped = done.len();
    if skipped > 0 {
        tracing::info!(
            "{skipped} of {} runs already finished; skipping them",
            runs.len()
        );
    }
    if opts.report_only {
        pending.clear();
    }
    let total = pending.len();
    let next = AtomicUsize::new(0);
    let finished = Mutex::new(done);
    let failed = Mutex::new(Vec::new());
    let trained = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, total.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(spec) = pending.get(i) else { break };
                    tracing::info!("run {}/{total} {} [{}]", i + 1, spec.id, spec.label);
                    match train_run(spec, history, opts) {
                        Ok(res) => {
                            tracing::info!(
                                "run {} done: val MAE {:.3}, RMSE {:.3}, {} epochs (best {}), {:.1}s",
                                spec.id,
                                res.val_mae,
                                res.val_rmse,
                                res.epochs_run,
                                res.best_epoch,
                                res.train_s
                            );
                            trained.fetch_add(1, Ordering::SeqCst);
                            finished.lock().unwrap_or_else(|e| e.into_inner()).push(res);
                        }
                        Err(e) => {
                            tracing::error!("run {} [{}] failed: {e:#}", spec.id, spec.label);
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((spec.id.clone(), format!("{e:#}")));
                        }
                    }
                }
            });
        }
    });
    let mut results = finished.into_inner().unwrap_or_else(|e| e.into_inner());
    leaderboard::sort(&mut results);
    leaderboard::write(out, &results, opts.paired)?;
    if let Err(e) = super::chart::render(&out.join("chart.png"), &results) {
        tracing::warn!("no chart: {e:#}");
    }
    Ok(SweepOutcome {
        sweep_id,
        results,
        trained: trained.into_inner(),
        skipped,
        failed: failed.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

fn settings_markdown(spec: &RunSpec) -> String {
    let toml = toml::to_string(&spec.config).unwrap_or_else(|e| format!("(unprintable: {e})"));
    // Indented by four spaces so TensorBoard's Markdown renders it as a code block.
    let body: String = toml.lines().map(|l| format!("    {l}\n")).collect();
    format!("run `{}`: **{}**\n\n{body}", spec.id, spec.label)
}

fn train_run(spec: &RunSpec, history: &History, opts: &SweepOptions) -> anyhow::Result<RunResult> {
    let dir = run_dir(&opts.out, &spec.id);
    // Leftovers of an interrupted attempt would show as a second curve in TensorBoard.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let mut tb = EventWriter::create(&dir)?;
    tb.add_text("settings", &settings_markdown(spec), 0)?;
    tb.flush()?;
    let mut curve = Vec::new();
    let mut tb_error: Option<anyhow::Error> = None;
    let started = Instant::now();
    let trained = pipeline::train_model(
        history,
        &spec.config,
        &opts.device,
        &mut |member, r: &EpochReport| {
            if member == 0 {
                curve.push(EpochPoint {
                    epoch: r.epoch,
                    train_loss: r.train_loss,
                    val_mae: r.val_mae,
                    val_rmse: r.val_rmse,
                    lr: r.lr,
                    elapsed_s: r.elapsed_s,
                });
            }
            if let Some(sink) = &opts.influx {
                sink.epoch(&opts.model_name, &spec.id, r);
            }
            let prefix = if member == 0 {
                String::new()
            } else {
                format!("member{member}/")
            };
            let tags = ["train/loss", "val/mae", "val/rmse", "lr", "elapsed_s"]
                .map(|t| format!("{prefix}{t}"));
            let values = [r.train_loss, r.val_mae, r.val_rmse, r.lr, r.elapsed_s];
            let pairs: Vec<(&str, f32)> = tags
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(|&v| v as f32))
                .collect();
            let written = tb
                .add_scalars(r.epoch as i64, &pairs)
                .and_then(|()| tb.flush());
            if let Err(e) = written {
                tb_error.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = tb_error {
        return Err(e.context("writing the TensorBoard event file"));
    }
    let wall_s = started.elapsed().as_secs_f64();
    let model_dir = dir.join(MODEL_DIR);
    let card = trained.save(&model_dir)?;

    let members = card.training["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = members.first();
    let get = |k: &str| first.and_then(|m| m[k].as_u64()).unwrap_or(0) as usize;
    let train_s: f64 = members
        .iter()
        .filter_map(|m| m["train_s"].as_f64())
        .sum::<f64>();
    let val = &card.metrics["val"];
    let result = RunResult {
        id: spec.id.clone(),
        label: spec.label.clone(),
        config: spec.config.clone(),
        val_mae: val["mae"]
            .as_f64()
            .context("validation MAE is not finite: did training diverge?")?,
        val_rmse: val["rmse"]
            .as_f64()
            .context("validation RMSE is not finite: did training diverge?")?,
        params: card
            .arch
            .weight_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum::<usize>()
            * card.members,
        epochs_run: get("epochs"),
        best_epoch: get("best_epoch"),
        train_s: if train_s > 0.0 { train_s } else { wall_s },
        infer_windows_per_s: inference_rate(&model_dir, &trained.val.x, &opts.device)?,
        val_windows: trained.val.len(),
        curve,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let tmp = dir.join(format!("{RESULT_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(RESULT_FILE))
        .with_context(|| format!("writing {}", dir.join(RESULT_FILE).display()))?;
    Ok(result)
}

/// Windows per second through the saved model as the ingest service would run it: loaded from
/// disk, batches of 256, at least 2048 windows (the validation set repeated if smaller).
fn inference_rate(model_dir: &Path, x: &[f32], device: &Device) -> anyhow::Result<f64> {
    const BATCH: usize = 256;
    const AT_LEAST: usize = 2048;
    let f = Forecaster::load(model_dir, device)?;
    let per = f.window() * f.features().len();
    let n = x.len() / per.max(1);
    if n == 0 {
        return Ok(0.0);
    }
    let mut batch = Vec::with_capacity(BATCH * per);
    let mut make = |start: usize| {
        batch.clear();
        for k in 0..BATCH.min(AT_LEAST) {
            let i = (start + k) % n;
            batch.extend_from_slice(&x[i * per..(i + 1) * per]);
        }
        batch.clone()
    };
    f.predict(&make(0), BATCH)?; // warm-up: first-call allocations are not the steady state
    let started = Instant::now();
    let mut done = 0;
    while done < AT_LEAST {
        f.predict(&make(done), BATCH)?;
        done += BATCH;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
