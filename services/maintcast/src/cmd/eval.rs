//! `maintcast eval`: scores a model on a data set and prints one JSON line on stdout, and the same
//! figures as a short table on stderr for people.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use maintcast_models::evaluate::CutRule;
use maintcast_models::{Forecaster, pipeline};

use super::train::{DataArgs, Loaded};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// A model version directory (with model.json and model.safetensors).
    #[arg(long, env = "MAINTCAST_MODEL")]
    pub model: PathBuf,
    /// cpu, cuda:N or auto.
    #[arg(long, env = "MAINTCAST_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Score on the machines the model card lists as held out (`val`: the first member's
    /// validation machines, which its early stopping saw and, with per-member splits, other
    /// members trained on; `cal`: machines nothing saw, which folds do not leave) instead of the
    /// test protocol, with the test protocol's truncation: validation that looks like the test,
    /// for choosing a recipe without the test set.
    #[arg(long, value_enum)]
    pub held_out: Option<HeldOut>,
    /// With --held-out: cuts per machine.
    #[arg(long, default_value_t = 10)]
    pub cuts: usize,
    /// With --held-out: seed of the cut points.
    #[arg(long, default_value_t = 0)]
    pub cut_seed: u64,
    /// With --held-out: how the cut points are drawn.
    #[arg(long, value_enum, default_value_t = CutsBy::Length)]
    pub cuts_by: CutsBy,
}

/// How a held-out machine's cut points are drawn (`--cuts-by`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CutsBy {
    /// The number of rows kept is uniform over the machine's life: a long-lived machine is
    /// mostly cut while healthy, so much of the truth sits at the cap.
    Length,
    /// The true remaining life is uniform from 0 to the cap: every part of the forecast's range
    /// weighs the same, whatever the machines' lifetimes.
    Rul,
}

impl From<CutsBy> for CutRule {
    fn from(c: CutsBy) -> CutRule {
        match c {
            CutsBy::Length => CutRule::Length,
            CutsBy::Rul => CutRule::Rul,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum HeldOut {
    Val,
    Cal,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = maintcast_models::device::parse_device(&args.device)?;
    let forecaster = Forecaster::load(&args.model, &device)?;
    if let Some(which) = args.held_out {
        let key = match which {
            HeldOut::Val => "val_machines",
            HeldOut::Cal => "cal_machines",
        };
        let ids: Vec<String> = serde_json::from_value(forecaster.card().data[key].clone())
            .with_context(|| format!("the model card lists no {key}"))?;
        anyhow::ensure!(
            !ids.is_empty(),
            "the model card's {key} is empty: no machine was held out from every member (with \
             member_splits = \"folds\" each machine is some member's training machine); score \
             the recipe out of sample with `maintcast cv`"
        );
        let history = match args.data.load()? {
            Loaded::Cmapss(c) => c.train,
            Loaded::Csv(h) => h,
        };
        let machines: Vec<_> = history
            .machines
            .iter()
            .filter(|m| ids.contains(&m.machine_id))
            .collect();
        anyhow::ensure!(
            machines.len() == ids.len(),
            "the data holds {} of the card's {} {key}",
            machines.len(),
            ids.len()
        );
        let report = pipeline::evaluate_truncated(
            &forecaster,
            &machines,
            args.cuts,
            args.cut_seed,
            args.cuts_by.into(),
        )?;
        println!("{}", serde_json::to_string(&report)?);
        eprint!("{}", summary(&report));
        return Ok(ExitCode::SUCCESS);
    }
    let report = match args.data.load()? {
        // C-MAPSS: the standard protocol on the test units.
        Loaded::Cmapss(c) => pipeline::evaluate_cmapss(&forecaster, &c)?,
        // CSV: every labelled window of every machine in the file.
        Loaded::Csv(h) => pipeline::evaluate_history(&forecaster, &h)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    eprint!("{}", summary(&report));
    Ok(ExitCode::SUCCESS)
}

/// The report for people: the label policy, the point errors, and the interval overall and per
/// third of the true value's range.
pub fn summary(r: &pipeline::EvalReport) -> String {
    let ends = if r.target.ends_on.is_empty() {
        "any maintenance event".to_string()
    } else {
        r.target.ends_on.join(" or ")
    };
    let mut s = format!(
        "label: {} (a cycle ends at {ends}; capped at {})\n\
         n {}  rmse {:.2}  mae {:.2}  PHM08 score {:.0}\n\
         p10-p90 interval: coverage {:.1} %  mean width {:.1}\n",
        r.target.name,
        r.target.cap,
        r.n,
        r.rmse,
        r.mae,
        r.score,
        100.0 * r.coverage_p10_p90,
        r.interval_width
    );
    for t in &r.interval_by_third {
        s += &format!(
            "  truth {:>5.1}-{:<5.1}  n {:>5}  rmse {:>6.2}  coverage {:>5.1} %  mean width {:.1}\n",
            t.from,
            t.to,
            t.stats.n,
            t.rmse,
            100.0 * t.stats.coverage,
            t.stats.mean_width
        );
    }
    s
}
