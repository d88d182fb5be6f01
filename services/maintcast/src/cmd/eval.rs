//! `maintcast eval`: scores a model on a data set and prints one JSON line.

use std::path::PathBuf;
use std::process::ExitCode;

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
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = maintcast_models::device::parse_device(&args.device)?;
    let forecaster = Forecaster::load(&args.model, &device)?;
    let report = match args.data.load()? {
        // C-MAPSS: the standard protocol on the test units.
        Loaded::Cmapss(c) => pipeline::evaluate_cmapss(&forecaster, &c)?,
        // CSV: every labelled window of every machine in the file.
        Loaded::Csv(h) => pipeline::evaluate_history(&forecaster, &h)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}
