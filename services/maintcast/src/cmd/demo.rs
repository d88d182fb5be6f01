//! `maintcast demo`: the whole idea with no servers. A simulated fleet's history trains a model (or
//! the shipped one is loaded), then live telemetry streams through the ingest service's own
//! pipeline (`maintcast_ingest::pipeline`: window store, forecast schedule), micro-batcher and
//! model wrapper, with an in-process source (the simulator) and sink (a line-protocol file) in
//! place of Kafka and InfluxDB.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use maintcast_ingest::serving::ServingModel;
use maintcast_models::config::Config;
use maintcast_models::dataset::{self, WindowSpec};
use maintcast_models::device::parse_device;
use maintcast_models::history::{self, History, MachineHistory};
use maintcast_models::{artifact, pipeline, registry};
use maintcast_simulator::{EventKind, Fleet, FleetConfig, output};

mod baseline;
mod live;

use baseline::Ridge;
use live::stream;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
