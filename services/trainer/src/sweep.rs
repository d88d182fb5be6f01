//! Experiment sweeps: a grid of training settings, each trained with early stopping through
//! `maintcast_models::pipeline::train_model`, each run logged to TensorBoard, ranked in a leaderboard.
//!
//! A sweep directory holds `runs/<run-id>/` per run (the id is a hash of the run's settings and the
//! data source), with its event file, the staged model and `result.json`. `result.json` is written
//! last, by rename, so a run either finished or did not: interrupting a sweep keeps finished runs,
//! and running it again skips them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Device;
use maintcast_models::config::Config;
use maintcast_models::optim::{LossKind, OptimizerKind, Schedule};
use maintcast_models::pipeline;
use maintcast_models::train::EpochReport;
use maintcast_models::{Forecaster, History};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::leaderboard;
use crate::tensorboard::EventWriter;
use crate::training_run::TrainingRunSink;

/// A grid file.
///
/// ```toml
/// name = "seed-study"
/// seed = 0          # seeds `--sample`; training seeds come from base.train.seed
/// [base]            # a full training config (models/configs/*.toml); every run starts from it
/// data = { window = 30, cap = 125.0 }
/// [grid]            # each axis a list; absent axes keep the base value
/// layers = [1, 2]   # with `units`: hidden = [units; layers]
/// units = [32, 64]
/// optimizer = ["adam", "nadam"]
/// schedule = [{ kind = "constant" }, { kind = "exponential", gamma = 0.95 }]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub base: Config,
    #[serde(default)]
    pub grid: Axes,
}

fn default_name() -> String {
    "sweep".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub layers: Option<Vec<usize>>,
    pub units: Option<Vec<usize>>,
    pub dropout: Option<Vec<f32>>,
    pub batch_size: Option<Vec<usize>>,
    pub optimizer: Option<Vec<OptimizerKind>>,
    pub lr: Option<Vec<f64>>,
    pub schedule: Option<Vec<Schedule>>,
    pub loss: Option<Vec<LossKind>>,
    pub window: Option<Vec<usize>>,
    pub step: Option<Vec<usize>>,
}

/// One combination of the grid.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub id: String,
    pub label: String,
    pub config: Config,
}

impl Grid {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let grid: Grid = toml::from_str(text)?;
        grid.base
            .validate()
            .context("[base] is not a valid training config")?;
        if grid.base.data.val_fraction <= 0.0 || grid.base.data.val_fraction.is_nan() {
            bail!("a sweep ranks runs by validation MAE: base.data.val_fraction must be above 0");
        }
        let a = &grid.grid;
        let empty = [
            ("layers", a.layers.as_ref().map(Vec::len)),
            ("units", a.units.as_ref().map(Vec::len)),
            ("dropout", a.dropout.as_ref().map(Vec::len)),
            ("batch_size", a.batch_size.as_ref().map(Vec::len)),
            ("optimizer", a.optimizer.as_ref().map(Vec::len)),
            ("lr", a.lr.as_ref().map(Vec::len)),
            ("schedule", a.schedule.as_ref().map(Vec::len)),
            ("loss", a.loss.as_ref().map(Vec::len)),
            ("window", a.window.as_ref().map(Vec::len)),
            ("step", a.step.as_ref().map(Vec::len)),
        ];
        if let Some((axis, _)) = empty.iter().find(|(_, n)| *n == Some(0)) {
            bail!("grid.{axis} is empty: leave it out to keep the base value");
        }
        Ok(grid)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("grid {}", path.display()))
    }

    /// Every combination, in a fixed order (the axes nest in field order, last fastest). `data_id`
    /// names the data source; it enters the run ids so another data set never reuses a run.
    pub fn expand(&self, data_id: &str) -> anyhow::Result<Vec<RunSpec>> {
        let b = &self.base;
        let a = &self.grid;
        let or = |v: &Option<Vec<usize>>, d: usize| v.clone().unwrap_or_else(|| vec![d]);
        let base_units = b.model.hidden[0];
        let uniform = b.model.hidden.iter().all(|&h| h == base_units);
        let hidden: Vec<Vec<usize>> = if a.layers.is_none() && a.units.is_none() {
            vec![b.model.hidden.clone()]
        } else {
            if !uniform && (a.layers.is_none() || a.units.is_none()) {
                bail!(
                    "grid.layers and grid.units go together when base.model.hidden ({:?}) is not uniform",
                    b.model.hidden
                );
            }
            let layers = or(&a.layers, b.model.hidden.len());
            let units = or(&a.units, base_units);
            if layers.contains(&0) || units.contains(&0) {
                bail!("grid.layers and grid.units must be at least 1");
            }
            layers
                .iter()
                .flat_map(|&l| units.iter().map(move |&u| vec![u; l]))
                .collect()
        };
        let dropout = a.dropout.clone().unwrap_or_else(|| vec![b.model.dropout]);
        let batch = or(&a.batch_size, b.train.batch_size);
        let opt = a
            .optimizer
            .clone()
            .unwrap_or_else(|| vec![b.train.optimizer.kind]);
        let lr = a.lr.clone().unwrap_or_else(|| vec![b.train.lr]);
        let sched = a
            .schedule
            .clone()
            .unwrap_or_else(|| vec![b.train.schedule.clone()]);
        let loss = a.loss.clone().unwrap_or_else(|| vec![b.train.loss]);
        let window = or(&a.window, b.data.window);
        let step = or(&a.step, b.data.step);

        let mut out: Vec<RunSpec> = Vec::new();
        for h in &hidden {
            for &d in &dropout {
                for &bs in &batch {
                    for &o in &opt {
                        for &r in &lr {
                            for s in &sched {
                                for &l in &loss {
                                    for &w in &window {
                                        for &st in &step {
                                            let mut c = b.clone();
                                            c.model.hidden = h.clone();
                                            c.model.dropout = d;
                                            c.train.batch_size = bs;
                                            c.train.optimizer.kind = o;
                                            c.train.lr = r;
                                            c.train.schedule = s.clone();
                                            c.train.loss = l;
                                            c.data.window = w;
                                            c.data.step = st;
                                            // A shorter window than the base's must still admit
                                            // its own full windows.
                                            c.data.min_rows = b.data.min_rows.map(|m| m.min(w));
                                            c.validate().with_context(|| {
                                                format!("grid combination {}", label(&c))
                                            })?;
                                            let id = run_id(&c, data_id);
                                            if !out.iter().any(|r| r.id == id) {
                                                out.push(RunSpec {
                                                    id,
                                                    label: label(&c),
                                                    config: c,
                                                });
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `n` distinct runs drawn with the grid's seed, kept in grid order so a larger sample of the same
/// seed is not a reshuffle of a smaller one's runs.
pub fn sample(runs: Vec<RunSpec>, n: usize, seed: u64) -> Vec<RunSpec> {
    if n >= runs.len() {
        return runs;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, runs.len(), n).into_vec();
    picked.sort_unstable();
    let mut keep = vec![false; runs.len()];
    for i in picked {
        keep[i] = true;
    }
    runs.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// An axis whose values a sample keeps together, so each drawn setting is trained with every value
/// of it: `--paired schedule` draws matched pairs with and without learning-rate decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PairAxis {
    Schedule,
    Optimizer,
    BatchSize,
    Lr,
    Loss,
    Dropout,
}

impl PairAxis {
    /// The config with this axis set to a fixed value: runs that differ only on it share the key.
    pub fn key(self, c: &Config) -> String {
        let mut c = c.clone();
        match self {
            PairAxis::Schedule => c.train.schedule = Schedule::default(),
            PairAxis::Optimizer => c.train.optimizer.kind = OptimizerKind::default(),
            PairAxis::BatchSize => c.train.batch_size = 0,
            PairAxis::Lr => c.train.lr = 0.0,
            PairAxis::Loss => c.train.loss = LossKind::default(),
            PairAxis::Dropout => c.model.dropout = 0.0,
        }
        serde_json::to_string(&c).expect("a config serializes")
    }

    /// The axis's value in `c` as the run labels write it.
    pub fn value(self, c: &Config) -> String {
        match self {
            PairAxis::Schedule => schedule_label(&c.train.schedule),
            PairAxis::Optimizer => kebab(c.train.optimizer.kind),
            PairAxis::BatchSize => format!("bs{}", c.train.batch_size),
            PairAxis::Lr => format!("lr{}", c.train.lr),
            PairAxis::Loss => kebab(c.train.loss),
            PairAxis::Dropout => format!("do{}", c.model.dropout),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PairAxis::Schedule => "schedule",
            PairAxis::Optimizer => "optimizer",
            PairAxis::BatchSize => "batch size",
            PairAxis::Lr => "learning rate",
            PairAxis::Loss => "loss",
            PairAxis::Dropout => "dropout",
        }
    }
}

/// Like [`sample`], but draws `n` settings of every axis except `axis` and keeps each with all of
/// its values of `axis`, so the sample holds matched comparisons (up to `n` x the axis's length
/// runs).
pub fn sample_paired(runs: Vec<RunSpec>, n: usize, seed: u64, axis: PairAxis) -> Vec<RunSpec> {
    let keys: Vec<String> = runs.iter().map(|r| axis.key(&r.config)).collect();
    let mut groups: Vec<&str> = Vec::new();
    for k in &keys {
        if !groups.contains(&k.as_str()) {
            groups.push(k);
        }
    }
    if n >= groups.len() {
        return runs;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let picked: std::collections::HashSet<&str> =
        rand::seq::index::sample(&mut rng, groups.len(), n)
            .into_iter()
            .map(|i| groups[i])
            .collect();
    let keep: Vec<bool> = keys.iter().map(|k| picked.contains(k.as_str())).collect();
    runs.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// A short hash of the contents of `paths`, to name a data source by what it holds.
pub fn data_digest(paths: &[&Path]) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// The settings hash that names a run's directory.
pub fn run_id(cfg: &Config, data_id: &str) -> String {
    let key = serde_json::json!({ "config": cfg, "data": data_id });
    short_hash(key.to_string().as_bytes())
}

/// A short human-readable name for a run's settings.
pub fn label(c: &Config) -> String {
    let hidden = c
        .model
        .hidden
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join("-");
    let opt = kebab(c.train.optimizer.kind);
    let sched = schedule_label(&c.train.schedule);
    let loss = kebab(c.train.loss);
    format!(
        "lstm{hidden} do{} {opt} bs{} lr{} {sched} {loss} w{}s{}",
        c.model.dropout, c.train.batch_size, c.train.lr, c.data.window, c.data.step
    )
}

fn schedule_label(s: &Schedule) -> String {
    match s {
        Schedule::Constant => "const".to_string(),
        Schedule::Step { every, gamma } => format!("step{every}x{gamma}"),
        Schedule::Exponential { gamma } => format!("exp{gamma}"),
        Schedule::Cosine { .. } => "cosine".to_string(),
        Schedule::Plateau { factor, .. } => format!("plateau{factor}"),
    }
}

/// A unit enum's serde name (`nadam`, `mse`).
fn kebab(v: impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One epoch as the leaderboard and chart keep it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub lr: f64,
    pub elapsed_s: f64,
}

/// What a finished run left in `result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub label: String,
    pub config: Config,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub params: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// Seconds inside the training loop (all ensemble members).
    pub train_s: f64,
    /// Forecasts per second of the saved model on the validation windows, batches of 256.
    pub infer_windows_per_s: f64,
    pub val_windows: usize,
    /// Validation figures per epoch of the first ensemble member.
    pub curve: Vec<EpochPoint>,
    pub finished_at: String,
}

pub const RESULT_FILE: &str = "result.json";
pub const MODEL_DIR: &str = "model";

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
    if let Err(e) = crate::chart::render(&out.join("chart.png"), &results) {
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

pub fn run_dir(out: &Path, id: &str) -> PathBuf {
    out.join("runs").join(id)
}

/// A finished run's result, or `None` when the run has not finished (or its file is unreadable,
/// in which case it is trained again).
pub fn read_result(dir: &Path) -> Option<RunResult> {
    let p = dir.join(RESULT_FILE);
    let text = std::fs::read_to_string(&p).ok()?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("{}: {e}; training this run again", p.display());
            None
        }
    }
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

/// What `--promote` did.
#[derive(Debug)]
pub struct Promotion {
    pub run_id: String,
    pub version: String,
    /// Whether CURRENT now names `version`.
    pub promoted: bool,
    pub reason: String,
}

/// Publishes the best run of `outcome` into `registry` as a new version of `name`, with the sweep's
/// id in its card, and makes it CURRENT when there is no serving version or when it beats the
/// serving one on the same validation machines (DESIGN.md: a version is promoted only then).
pub fn promote_best(
    out: &Path,
    outcome: &SweepOutcome,
    history: &History,
    registry: &Path,
    name: &str,
    device: &Device,
) -> anyhow::Result<Promotion> {
    use maintcast_models::{artifact, registry as reg};
    let best = outcome
        .results
        .first()
        .context("no finished run to promote")?;
    let src = run_dir(out, &best.id).join(MODEL_DIR);
    let mut card = artifact::read_card(&src)?;
    if let Some(t) = card.training.as_object_mut() {
        t.insert(
            "sweep".into(),
            serde_json::json!({
                "sweep_id": outcome.sweep_id, "run_id": best.id, "label": best.label,
                "rank": 1, "runs": outcome.results.len(), "dir": out.display().to_string(),
            }),
        );
    }
    // The run's own directory stays as trained; the card with the sweep's id goes to a copy.
    let staged = tempfile::tempdir().context("creating a staging directory")?;
    std::fs::copy(
        src.join(artifact::WEIGHTS_FILE),
        staged.path().join(artifact::WEIGHTS_FILE),
    )
    .with_context(|| format!("copying {}", src.display()))?;
    std::fs::write(
        staged.path().join(artifact::CARD_FILE),
        serde_json::to_string_pretty(&card)?,
    )?;
    let version = reg::publish(registry, name, staged.path())?;
    let new_dir = registry.join(name).join(&version);

    let (promoted, reason) = match reg::current_version(registry, name)? {
        None => (true, "no serving version yet".to_string()),
        Some(current) => {
            let ids: Vec<String> = card.data["val_machines"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let val = History {
                machines: history
                    .machines
                    .iter()
                    .filter(|m| ids.contains(&m.machine_id))
                    .cloned()
                    .collect(),
            };
            let score = |dir: &Path| -> anyhow::Result<f64> {
                let f = Forecaster::load(dir, device)?;
                Ok(pipeline::evaluate_history(&f, &val)?.mae)
            };
            let new_mae = score(&new_dir)?;
            match score(&registry.join(name).join(&current)) {
                Ok(old_mae) if new_mae < old_mae => (
                    true,
                    format!("validation MAE {new_mae:.3} beats {current}'s {old_mae:.3}"),
                ),
                Ok(old_mae) => (
                    false,
                    format!(
                        "validation MAE {new_mae:.3} does not beat {current}'s {old_mae:.3}; CURRENT unchanged"
                    ),
                ),
                Err(e) => (
                    false,
                    format!(
                        "{current} cannot be scored on this sweep's validation machines ({e:#}); CURRENT unchanged"
                    ),
                ),
            }
        }
    };
    if promoted {
        reg::promote(registry, name, &version)?;
    }
    Ok(Promotion {
        run_id: best.id.clone(),
        version,
        promoted,
        reason,
    })
}
