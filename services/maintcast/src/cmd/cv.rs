//! `maintcast cv`: engine-level cross-validation of a training recipe. One JSON line per fold on
//! stdout as it finishes, then one with the spread across folds; a table on stderr for people.

use std::path::PathBuf;
use std::process::ExitCode;

use maintcast_models::cv::{self, CvSettings, CvSummary, Spread};
use maintcast_models::train;

use super::eval::CutsBy;
use super::train::{DataArgs, Loaded};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Training configuration (TOML), as for `train`.
    #[arg(long, env = "MAINTCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folds of whole machines; each is held out once while the recipe trains on the rest.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold assignment (apart from the training seed, so that a recipe change is
    /// judged on the same folds).
    #[arg(long, default_value_t = 0)]
    pub fold_seed: u64,
    /// Overrides train.seed of the config.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Cuts per held-out machine: each is scored on the last window before `cuts` random points,
    /// as C-MAPSS test units are (see `eval --held-out`).
    #[arg(long, default_value_t = 10)]
    pub cuts: usize,
    /// Seed of the cut points.
    #[arg(long, default_value_t = 0)]
    pub cut_seed: u64,
    /// How the cut points are drawn (see `eval --cuts-by`).
    #[arg(long, value_enum, default_value_t = CutsBy::Length)]
    pub cuts_by: CutsBy,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = "cpu")]
    pub device: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = super::train::recipe(args.config.as_deref(), args.seed)?;
    let device = maintcast_models::device::parse_device(&args.device)?;
    // C-MAPSS test units are not run to failure; the folds come from the training units.
    let history = match args.data.load()? {
        Loaded::Csv(h) => h,
        Loaded::Cmapss(c) => c.train,
    };
    let settings = CvSettings {
        folds: args.folds,
        fold_seed: args.fold_seed,
        cuts: args.cuts,
        cut_seed: args.cut_seed,
        cut_rule: args.cuts_by.into(),
    };
    let k = args.folds;
    let mut print_err = None;
    let folds = cv::cross_validate(
        &history,
        &cfg,
        settings,
        &device,
        &mut |f, m, r| {
            if r.epoch == 1 {
                tracing::info!("fold {}/{k}, member {}", f + 1, m + 1);
            }
            train::log_epoch(r);
        },
        &mut |fold| {
            let r = &fold.report;
            tracing::info!(
                "fold {}/{k}: {} machines held out, rmse {:.2} mae {:.2} coverage {:.2} \
                 width {:.1} ({:.0} s)",
                fold.fold,
                fold.held_out.len(),
                r.rmse,
                r.mae,
                r.coverage_p10_p90,
                r.interval_width,
                fold.train_s
            );
            if let Err(e) = serde_json::to_string(fold).map(|s| println!("{s}")) {
                print_err.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = print_err {
        return Err(e.into());
    }
    let summary = CvSummary::of(&folds);
    println!("{}", serde_json::to_string(&summary)?);
    eprint!("{}", table(&summary));
    Ok(ExitCode::SUCCESS)
}

fn table(s: &CvSummary) -> String {
    let row = |name: &str, v: &Spread| {
        format!(
            "{name:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
            v.mean, v.std, v.min, v.max
        )
    };
    format!(
        "{} folds                   mean      std      min      max\n",
        s.folds
    ) + &row("rmse", &s.rmse)
        + &row("mae", &s.mae)
        + &row("PHM08 score / example", &s.score_per_example)
        + &row("p10-p90 coverage", &s.coverage_p10_p90)
        + &row("p10-p90 width", &s.interval_width)
        + &thirds("rmse", &s.rmse_by_third)
        + &thirds("coverage", &s.coverage_by_third)
}

/// One row per third of the true value's range, near failure first.
fn thirds(name: &str, v: &[Spread]) -> String {
    let labels = ["near", "middle", "far"];
    v.iter()
        .zip(labels)
        .map(|(s, third)| {
            format!(
                "{:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
                format!("{name}, {third} third"),
                s.mean,
                s.std,
                s.min,
                s.max
            )
        })
        .collect()
}
