//! `maintcast demo`: the whole idea with no servers. A simulated fleet's history trains a model (or
//! the shipped one is loaded), then live telemetry streams through the ingest service's own
//! pipeline (`maintcast_ingest::pipeline`: window store, forecast schedule), micro-batcher and
//! model wrapper, with an in-process source (the simulator) and sink (a line-protocol file) in
//! place of Kafka and InfluxDB.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use maintcast_common::points;
use maintcast_ingest::batch::Batcher;
use maintcast_ingest::model::Model;
use maintcast_ingest::pipeline::Pipeline;
use maintcast_ingest::serving::ServingModel;
use maintcast_ingest::window::WindowStore;
use maintcast_models::config::Config;
use maintcast_models::dataset::{self, WindowSpec};
use maintcast_models::device::parse_device;
use maintcast_models::history::{self, History, MachineHistory};
use maintcast_models::{artifact, pipeline, prep, registry};
use maintcast_simulator::{EventKind, Fleet, FleetConfig, MachineInfo, Truth, output};

#[derive(clap::Args)]
pub struct Args {
    /// Fleet seed (the same seed gives the same fleet and the same demo).
    #[arg(long, env = "MAINTCAST_SEED", default_value_t = 42)]
    pub seed: u64,
    #[arg(long, env = "MAINTCAST_MACHINES", default_value_t = 32)]
    pub machines: usize,
    /// Days of history simulated for training (and for fitting the baseline).
    #[arg(long, default_value_t = 120.0)]
    pub history_days: f64,
    /// Days of live telemetry streamed after training.
    #[arg(long, default_value_t = 14.0)]
    pub live_days: f64,
    /// Keep streaming until Ctrl-C instead of stopping after --live-days.
    #[arg(long)]
    pub follow: bool,
    /// Use the shipped model (models/pretrained, or --model-dir) instead of training.
    #[arg(long)]
    pub pretrained: bool,
    /// Model for --pretrained: a model directory (model.json + model.safetensors) or a registry
    /// whose `maintcast` model has a CURRENT version, as models/pretrained is. A relative path
    /// not found from the working directory is also tried from the workspace root.
    #[arg(long, default_value = PRETRAINED)]
    pub model_dir: PathBuf,
    /// Training epochs (early stopping may end sooner).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Learning rate for the demo's training.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Epochs without a better validation loss before training stops early.
    #[arg(long, default_value_t = 6)]
    pub patience: usize,
    /// Rows between consecutive training windows (larger trains faster on fewer windows).
    #[arg(long, default_value_t = 4)]
    pub train_step: usize,
    /// Wall time per simulated sampling interval while streaming (0: as fast as possible).
    #[arg(long, default_value = "15ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Largest inference batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Forecasts are written here as InfluxDB line protocol (`influx write` can load them).
    #[arg(long, default_value = "demo-forecasts.lp")]
    pub out: PathBuf,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Machines shown in the live table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub plan: super::policies::PlanArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.history_days >= 20.0,
        "--history-days must be at least 20 (got {})",
        args.history_days
    );
    anyhow::ensure!(args.live_days > 0.0, "--live-days must be positive");
    anyhow::ensure!(
        args.batch > 0 && args.epochs > 0 && args.train_step > 0,
        "--batch, --epochs and --train-step must be at least 1"
    );
    let started = Instant::now();
    let device = parse_device(&args.device)?;
    let cfg = FleetConfig {
        seed: args.seed,
        machines: args.machines,
        ..FleetConfig::default()
    };
    let interval_ms = cfg.interval_ms;
    let mut fleet = Fleet::new(cfg.clone())?;
    let machines = fleet.machines().to_vec();

    // 1. History, through the same CSV reader the trainer uses (dropped readings are filled by the
    //    data path when windows are built, as the ingest window store fills them).
    let sim = fleet.run(cfg.steps_for_days(args.history_days));
    let tmp = tempfile::tempdir()?;
    let hist_dir = tmp.path().join("history");
    output::write_csv(&sim, &hist_dir)?;
    let history = history::read_csv(
        &hist_dir.join("telemetry.csv"),
        Some(&hist_dir.join("events.csv")),
    )?;
    eprintln!(
        "simulated {} machines x {} days: {} rows, {} maintenance events ({} failures)",
        machines.len(),
        args.history_days,
        sim.readings.len(),
        sim.events.len(),
        sim.events
            .iter()
            .filter(|e| e.kind == EventKind::Failure)
            .count()
    );

    // 2. A model: trained now, or the shipped one.
    let model_dir = if args.pretrained {
        let dir = pretrained_dir(&args.model_dir)?;
        eprintln!("using the pretrained model in {}", dir.display());
        dir
    } else {
        let dir = tmp.path().join("model");
        train(&history, &args, &device, &dir)?;
        dir
    };
    let model = ServingModel::load(&model_dir, &device)
        .with_context(|| format!("loading the model in {}", model_dir.display()))?;
    let card = artifact::read_card(&model_dir)?;

    // 3. The plain baseline the seed tried: a linear regression on the same scaled windows.
    let all: Vec<&MachineHistory> = history.machines.iter().collect();
    let spec = WindowSpec {
        window: card.window,
        step: 3,
        min_rows: card.window,
    };
    let base_w =
        dataset::training_windows(&all, &card.features, &card.scaler, spec, card.target.cap)?;
    let baseline = Ridge::fit(
        &base_w.x,
        &base_w.y,
        card.window * card.features.len(),
        1e-3,
    )
    .context("fitting the linear baseline")?;

    // 4. Live: the fleet keeps running; its telemetry goes through the ingest path.
    let history_end_ms = fleet.next_ts_ms();
    let code = stream(
        &args,
        &mut fleet,
        &machines,
        &model,
        &card,
        &baseline,
        interval_ms,
        started,
    )?;
    // 5. What a plan is worth: maintenance policies on the same fleet after the history.
    if args.plan.plan {
        super::policies::summary(&args.plan, &cfg, &sim, history_end_ms, &model)?;
    }
    Ok(code)
}

/// The shipped model, as a registry (so the Docker entrypoint can seed a registry volume with it).
const PRETRAINED: &str = "models/pretrained";
/// The model name the ingest service serves by default (`maintcast ingest --model`).
const PRETRAINED_NAME: &str = "maintcast";

/// The model directory `--model-dir` names: itself when it holds a model card, else the CURRENT
/// version of its `maintcast` model. A relative path is tried from the working directory, then
/// from the workspace root, so the demo works from anywhere in a checkout.
fn pretrained_dir(given: &Path) -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut tried = vec![given.to_path_buf()];
    if given.is_relative() {
        tried.push(workspace.join(given));
    }
    let Some(base) = tried.iter().find(|p| p.is_dir()) else {
        anyhow::bail!(
            "no pretrained model at {}: run the demo from the repository (or pass --model-dir), \
             or rebuild it with the commands in models/pretrained/README.md",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        );
    };
    if base.join(artifact::CARD_FILE).is_file() {
        return Ok(base.clone());
    }
    registry::current_version_dir(base, PRETRAINED_NAME).with_context(|| {
        format!(
            "{} holds neither a model ({}) nor a registry with a CURRENT {PRETRAINED_NAME} model",
            base.display(),
            artifact::CARD_FILE
        )
    })
}

fn train(
    history: &History,
    args: &Args,
    device: &candle_core::Device,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    // Small and quick: the demo should finish in minutes on two cores; `maintcast train` is for real.
    let mut cfg = Config::default();
    cfg.data.step = args.train_step;
    cfg.model.hidden = vec![32, 32];
    cfg.model.dropout = 0.1;
    cfg.train.epochs = args.epochs;
    cfg.train.patience = args.patience;
    cfg.train.lr = args.lr;
    // Decaying the rate settles the weights in the last epochs, where a constant rate left the
    // validation error jumping by a day from one epoch to the next.
    cfg.train.schedule = maintcast_models::optim::Schedule::Cosine {
        min_lr: args.lr / 10.0,
        epochs: None,
    };
    cfg.train.seed = args.seed;
    let bar = ProgressBar::new(args.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "training  {bar:30.cyan/blue} epoch {pos}/{len}  {msg}  [{elapsed}]",
        )
        .expect("valid template"),
    );
    // Without a terminal the bar draws nothing, so a plain line per epoch keeps logs readable.
    let plain = !std::io::stderr().is_terminal();
    if plain {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let trained = pipeline::train_model(history, &cfg, device, &mut |_, r| {
        bar.set_position(r.epoch as u64);
        bar.set_message(format!(
            "val MAE {:.2} d{}",
            r.val_mae,
            if r.best { " (best)" } else { "" }
        ));
        if plain {
            eprintln!(
                "  epoch {:>2}/{}  train loss {:>8.3}  val MAE {:>6.2} d  lr {:.1e}  {:>5.1} s{}",
                r.epoch,
                args.epochs,
                r.train_loss,
                r.val_mae,
                r.lr,
                r.elapsed_s,
                if r.best { "  (best)" } else { "" }
            );
        }
    })?;
    bar.finish();
    let mut card = trained.card.clone();
    card.name = "demo".into();
    card.version = "demo".into();
    artifact::save(dir, card, &trained.members.iter().collect::<Vec<_>>())?;
    Ok(())
}

/// A window waiting for inference, with what the summary compares it against.
struct Pending {
    machine: u32,
    ts_ms: i64,
    window_rows: usize,
    truth: Truth,
    x: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Latest {
    ts_ms: i64,
    days: f32,
    p10: f32,
    p90: f32,
    baseline: f32,
    truth: Truth,
}

#[derive(Default)]
struct Stats {
    n: usize,
    abs_err: f64,
    abs_err_baseline: f64,
    covered: usize,
    infer: Duration,
    batches: usize,
}

#[allow(clippy::too_many_arguments)]
fn stream(
    args: &Args,
    fleet: &mut Fleet,
    machines: &[MachineInfo],
    model: &ServingModel,
    card: &artifact::ModelCard,
    baseline: &Ridge,
    interval_ms: i64,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(tokio::signal::ctrl_c()).ok()?;
            stop.store(true, Ordering::SeqCst);
            Some(())
        });
    }
    let (window, nf) = (model.window(), model.features().len());
    let store = WindowStore::new(model.features().to_vec(), window, model.neutral_raw());
    // The ingest service's own pipeline (window update, forecast schedule, forecast requests);
    // only the source (the simulator) and the sink (a file) differ.
    let mut pipeline = Pipeline::new(store, model.min_rows(), 1);
    let mut batcher: Batcher<Pending> = Batcher::new(args.batch, Duration::from_millis(5));
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut sink = BufWriter::new(file);
    let mut latest: HashMap<u32, Latest> = HashMap::new();
    let mut stats = Stats::default();
    let live_steps = (args.live_days * 86_400_000.0 / interval_ms as f64).round() as usize;
    let tty = std::io::stdout().is_terminal();
    let stream_started = Instant::now();
    let mut rows = 0usize;
    let mut step = 0usize;
    eprintln!("streaming live telemetry through the ingest window store and batcher ...");

    let infer = |batch: Vec<Pending>,
                 stats: &mut Stats,
                 latest: &mut HashMap<u32, Latest>,
                 sink: &mut BufWriter<std::fs::File>|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let xs: Vec<f32> = batch.iter().flat_map(|p| p.x.iter().copied()).collect();
        let t = Instant::now();
        let preds = model.predict(&xs, batch.len())?;
        stats.infer += t.elapsed();
        stats.batches += 1;
        for (p, f) in batch.iter().zip(preds) {
            let base = baseline.predict(&p.x);
            let truth = p.truth.days_to_maintenance;
            stats.n += 1;
            stats.abs_err += f64::from((f.days - truth).abs());
            stats.abs_err_baseline += f64::from((base - truth).abs());
            stats.covered += usize::from(f.p10 <= truth && truth <= f.p90);
            let m = &machines[p.machine as usize];
            sink.write_all(
                line_protocol(
                    m,
                    &card.name,
                    &card.version,
                    p.ts_ms,
                    f.days,
                    f.p10,
                    f.p90,
                    p.window_rows,
                )?
                .as_bytes(),
            )?;
            latest.insert(
                p.machine,
                Latest {
                    ts_ms: p.ts_ms,
                    days: f.days,
                    p10: f.p10,
                    p90: f.p90,
                    baseline: base,
                    truth: p.truth,
                },
            );
        }
        Ok(())
    };

    while (args.follow || step < live_steps) && !stop.load(Ordering::SeqCst) {
        let tick_started = Instant::now();
        let tick = fleet.step();
        step += 1;
        for e in &tick.events {
            pipeline.on_event(
                &output::maintenance_event(&machines[e.machine as usize], e),
                0,
            );
        }
        for r in &tick.readings {
            rows += 1;
            let t = output::telemetry(&machines[r.machine as usize], r);
            let Some(req) = pipeline.on_telemetry(&t, 0, rows as i64).forecast else {
                continue;
            };
            let mut x = vec![0f32; window * nf];
            prep::scale_window(&card.scaler, &prep::Columns::Same, &req.raw, &mut x);
            let p = Pending {
                machine: r.machine,
                ts_ms: r.ts_ms,
                window_rows: req.window_rows,
                truth: r.truth,
                x,
            };
            if let Some(batch) = batcher.push(p, Instant::now()) {
                infer(batch, &mut stats, &mut latest, &mut sink)?;
            }
        }
        // The in-process source has nothing more until the next tick, so lingering would only delay.
        infer(batcher.take(), &mut stats, &mut latest, &mut sink)?;
        if tty && step.is_multiple_of(4) {
            print!(
                "\x1b[2J\x1b[H{}",
                table(machines, &latest, &stats, tick.ts_ms, args.top)
            );
            std::io::stdout().flush()?;
        } else if !tty && step.is_multiple_of(24) {
            eprintln!(
                "  {}  {} forecasts, MAE {:.2} d",
                output::rfc3339(tick.ts_ms),
                stats.n,
                mae(&stats)
            );
        }
        if let Some(rest) = args.tick.checked_sub(tick_started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    sink.flush()?;
    let now_ms = fleet.next_ts_ms() - interval_ms;
    println!("{}", table(machines, &latest, &stats, now_ms, args.top));
    anyhow::ensure!(
        stats.n > 0,
        "no forecasts were made: stream longer (--live-days) than the model's {} rows",
        model.min_rows()
    );
    let wall = stream_started.elapsed().as_secs_f64();
    println!("summary");
    println!(
        "  model {} ({}), window {} rows, features {:?}",
        card.name, card.version, window, card.features
    );
    println!(
        "  live: {} machines x {:.1} days, {} rows, {} forecasts",
        machines.len(),
        step as f64 * interval_ms as f64 / 86_400_000.0,
        rows,
        stats.n
    );
    println!(
        "  MAE vs truth:           {:.2} days  (p10-p90 covers {:.0}% of true values)",
        mae(&stats),
        100.0 * stats.covered as f64 / stats.n as f64
    );
    println!(
        "  linear baseline MAE:    {:.2} days  (ridge regression on the same scaled windows)",
        stats.abs_err_baseline / stats.n as f64
    );
    println!(
        "  inference: {:.0} forecasts/s in {} batches (mean {:.1}); pipeline {:.0} rows/s; total {:.0} s",
        stats.n as f64 / stats.infer.as_secs_f64().max(1e-9),
        stats.batches,
        stats.n as f64 / stats.batches.max(1) as f64,
        rows as f64 / wall.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  forecasts: {} (line protocol: influx write --bucket B --file {0})",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn mae(s: &Stats) -> f64 {
    s.abs_err / s.n.max(1) as f64
}

fn table(
    machines: &[MachineInfo],
    latest: &HashMap<u32, Latest>,
    stats: &Stats,
    now_ms: i64,
    top: usize,
) -> String {
    let mut rows: Vec<(&u32, &Latest)> = latest.iter().collect();
    rows.sort_by(|a, b| a.1.days.total_cmp(&b.1.days).then(a.0.cmp(b.0)));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "maintcast demo  {}  forecasts {}  MAE {:.2} d  (baseline {:.2} d)\n",
        output::rfc3339(now_ms),
        stats.n,
        mae(stats),
        stats.abs_err_baseline / stats.n.max(1) as f64
    );
    let _ = writeln!(
        s,
        "{:<16} {:<11} {:>9} {:>15} {:>9} {:>9}  {:<10} {:>7}",
        "machine", "type", "predicted", "p10..p90", "true", "baseline", "next", "wear"
    );
    for (m, l) in rows.into_iter().take(top) {
        let info = &machines[*m as usize];
        let _ = writeln!(
            s,
            "{:<16} {:<11} {:>7.1} d {:>6.1}..{:<6.1} {:>7.1} d {:>7.1} d  {:<10} {:>3.0}/{:<3.0}{}",
            info.id,
            info.machine_type.as_str(),
            l.days,
            l.p10,
            l.p90,
            l.truth.days_to_maintenance,
            l.baseline,
            l.truth.next_event.as_str(),
            100.0 * l.truth.bearing_wear,
            100.0 * l.truth.seal_wear,
            if l.ts_ms < now_ms { "  (no row)" } else { "" }
        );
    }
    s
}

/// One `maintenance_forecast` point as line protocol, through the schema ingest writes with.
#[allow(clippy::too_many_arguments)]
fn line_protocol(
    m: &MachineInfo,
    model: &str,
    version: &str,
    ts_ms: i64,
    days: f32,
    p10: f32,
    p90: f32,
    window_rows: usize,
) -> anyhow::Result<String> {
    let days = f64::from(days);
    let forecast = maintcast_proto::Forecast {
        machine_id: m.id.clone(),
        ts_ms,
        model: model.to_string(),
        model_version: version.to_string(),
        days_to_maintenance: days,
        due_at: points::due_at(ts_ms, days),
        days_p10: f64::from(p10),
        days_p90: f64::from(p90),
        window_rows: u32::try_from(window_rows)?,
        machine_type: Some(m.machine_type.as_str().to_string()),
        site: Some(m.site.clone()),
    };
    Ok(points::Point::forecast(&forecast)?.line_protocol()?)
}

/// Ridge regression `y ~ w.x + b` by the normal equations (intercept not penalised): the plain
/// baseline the demo prints next to the LSTM.
struct Ridge {
    w: Vec<f64>,
    b: f64,
}

impl Ridge {
    fn fit(x: &[f32], y: &[f32], d: usize, lambda: f64) -> anyhow::Result<Ridge> {
        let n = y.len();
        anyhow::ensure!(
            n > 0 && x.len() == n * d,
            "no windows to fit ({n} labels, {} values)",
            x.len()
        );
        // Centre so the intercept drops out of the system.
        let mut mean = vec![0f64; d];
        for row in x.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let ymean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let mut a = vec![0f64; d * d];
        let mut rhs = vec![0f64; d];
        let mut c = vec![0f64; d];
        for (row, &yv) in x.chunks(d).zip(y) {
            for j in 0..d {
                c[j] = f64::from(row[j]) - mean[j];
            }
            let yc = f64::from(yv) - ymean;
            for i in 0..d {
                let ci = c[i];
                rhs[i] += ci * yc;
                let ai = &mut a[i * d..i * d + i + 1];
                for (aij, &cj) in ai.iter_mut().zip(&c[..=i]) {
                    *aij += ci * cj;
                }
            }
        }
        for i in 0..d {
            a[i * d + i] += lambda * n as f64;
        }
        let w = cholesky_solve(&mut a, &rhs, d)
            .context("the baseline's normal equations are singular")?;
        let b = ymean - w.iter().zip(&mean).map(|(w, m)| w * m).sum::<f64>();
        Ok(Ridge { w, b })
    }

    fn predict(&self, x: &[f32]) -> f32 {
        (self.b
            + self
                .w
                .iter()
                .zip(x)
                .map(|(w, &v)| w * f64::from(v))
                .sum::<f64>()) as f32
    }
}

/// Solves `A w = rhs` for symmetric positive definite `A`, given its lower triangle (overwritten).
fn cholesky_solve(a: &mut [f64], rhs: &[f64], d: usize) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        if diag <= 0.0 {
            return None;
        }
        let l = diag.sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / l;
        }
    }
    let mut z = rhs.to_vec();
    for i in 0..d {
        for k in 0..i {
            z[i] -= a[i * d + k] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            z[i] -= a[k * d + i] * z[k];
        }
        z[i] /= a[i * d + i];
    }
    Some(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_an_exact_linear_law() {
        // y = 2 x0 - 3 x1 + 0.5 x2 + 7 on points in general position.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..50 {
            let r = [
                (i as f32 * 0.37).sin(),
                (i as f32 * 0.11).cos(),
                (i % 7) as f32 / 7.0,
            ];
            x.extend(r);
            y.push(2.0 * r[0] - 3.0 * r[1] + 0.5 * r[2] + 7.0);
        }
        let m = Ridge::fit(&x, &y, 3, 0.0).unwrap();
        for (w, want) in m.w.iter().zip([2.0, -3.0, 0.5]) {
            assert!((w - want).abs() < 1e-4, "{:?}", m.w);
        }
        assert!((m.b - 7.0).abs() < 1e-4);
        assert!((m.predict(&[1.0, 1.0, 1.0]) - 6.5).abs() < 1e-3);
        // Collinear columns without a penalty have no unique solution.
        let flat = vec![1.0f32; 30];
        assert!(Ridge::fit(&flat, &[1.0; 10], 3, 0.0).is_err());
    }

    #[test]
    fn pretrained_dir_takes_a_model_or_a_registry() {
        // The shipped registry, found from the workspace root whatever the working directory.
        let current = pretrained_dir(Path::new(PRETRAINED)).unwrap();
        assert!(
            current.ends_with("maintcast/v0001"),
            "{}",
            current.display()
        );
        // A model directory is used as it is.
        assert_eq!(pretrained_dir(&current).unwrap(), current);
        let empty = tempfile::tempdir().unwrap();
        let err = format!("{:#}", pretrained_dir(empty.path()).unwrap_err());
        assert!(err.contains("CURRENT"), "{err}");
        let err = format!(
            "{:#}",
            pretrained_dir(Path::new("no/such/dir")).unwrap_err()
        );
        assert!(err.contains("models/pretrained/README.md"), "{err}");
    }

    #[test]
    fn line_protocol_is_the_forecast_schema() {
        let m = MachineInfo {
            id: "press-017".into(),
            machine_type: maintcast_simulator::MachineType::Press,
            site: "new york".into(),
        };
        let line = line_protocol(&m, "demo", "v1", 1_767_225_600_000, 2.5, 1.0, 4.0, 60).unwrap();
        assert_eq!(
            line,
            "maintenance_forecast,machine_id=press-017,machine_type=press,model=demo,\
             model_version=v1,site=new\\ york days_p10=1,days_p90=4,days_to_maintenance=2.5,\
             due_at=1767441600i,window_rows=60i 1767225600000000000\n"
        );
        let err = line_protocol(&m, "demo", "v1", 0, f32::NAN, 1.0, 4.0, 60).unwrap_err();
        assert!(err.to_string().contains("days_to_maintenance"), "{err}");
    }
}
