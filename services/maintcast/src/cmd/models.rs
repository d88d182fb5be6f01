//! `maintcast models`: look at and change what serves, by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use maintcast_models::registry::{self as reg_models, Servable};
use maintcast_models::{artifact, history};
use maintcast_trainer::{registry, shadow};

#[derive(clap::Args)]
pub struct Args {
    /// Registry directory: `<registry>/<name>/<version>/` holds the models, `<name>/CURRENT` the
    /// serving version.
    #[arg(long, env = "MAINTCAST_REGISTRY")]
    registry: PathBuf,
    /// Model name inside the registry.
    #[arg(long, env = "MAINTCAST_NAME", default_value = "maintcast")]
    name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Every version, oldest first, with its parent, validation MAE and data; `*` marks CURRENT.
    List,
    /// A version's card (without the scaler's numbers), its lineage and the promotion log.
    Show {
        /// e.g. v0003; default: the CURRENT one.
        version: Option<String>,
    },
    /// Make VERSION the serving one, after loading it as ingest would and running a forecast.
    Promote {
        version: String,
        /// Why, for the promotion log.
        #[arg(long, default_value = "promoted by hand")]
        reason: String,
        /// Accept features or a window other than the serving version's (running ingest
        /// instances keep the old model until restarted).
        #[arg(long)]
        allow_layout_change: bool,
    },
    /// Undo the last promotion: the version that served before the current one serves again.
    Rollback,
    /// Fill in the input statistics of a version whose card predates them (ingest checks range
    /// and drift against them), from the history it was trained on; weights stay untouched.
    Stats {
        version: String,
        /// Telemetry CSV, or a directory holding telemetry.csv (and events.csv), as given to
        /// `maintcast train --format csv`.
        #[arg(long)]
        data: PathBuf,
        /// Maintenance events CSV (default: events.csv beside the telemetry).
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// Run VERSION beside the serving one on the same windows, scored but never served
    /// (`--clear`: stop shadowing).
    Shadow(ShadowArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["version", "clear"])))]
struct ShadowArgs {
    /// e.g. v0004: loaded and checked against the serving version's features first.
    version: Option<String>,
    /// Stop shadowing (SHADOW is removed).
    #[arg(long)]
    clear: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (reg, name) = (&args.registry, args.name.as_str());
    match args.action {
        Action::List => {
            let rows = registry::list(reg, name)?;
            if args.json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else if rows.is_empty() {
                println!("no versions of {name} in {}", reg.display());
            } else {
                println!(
                    "  {:<8} {:<20} {:<8} {:>8} {:>9} {:>8}  data",
                    "version", "created", "parent", "val_mae", "rows", "machines"
                );
                for r in &rows {
                    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    let data = match (r.first_ts_ms, r.last_ts_ms) {
                        (Some(a), Some(b)) => format!("{} .. {}", day(a), day(b)),
                        _ => "-".into(),
                    };
                    println!(
                        "{} {:<8} {:<20} {:<8} {:>8} {:>9} {:>8}  {}{}",
                        if r.current { "*" } else { " " },
                        r.version,
                        r.created_at,
                        opt(r.parent_version.clone()),
                        opt(r.val_mae.map(|m| format!("{m:.3}"))),
                        opt(r.rows.map(|n| n.to_string())),
                        opt(r.machines.map(|n| n.to_string())),
                        data,
                        r.error
                            .as_ref()
                            .map(|e| format!("  UNREADABLE: {e}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
        Action::Show { version } => {
            let version = match version {
                Some(v) => v,
                None => reg_models::current_version(reg, name)?
                    .context("no CURRENT version yet; name one")?,
            };
            let dir = reg.join(name).join(&version);
            let card = artifact::read_card(&dir)
                .with_context(|| format!("version {version} of {name}"))?;
            let mut v = serde_json::to_value(&card)?;
            if let Some(o) = v.as_object_mut() {
                // Per-feature offsets are noise to a person; the kind says what matters.
                o.insert(
                    "scaler".into(),
                    serde_json::json!({ "kind": card.scaler.kind }),
                );
                o.insert(
                    "lineage".into(),
                    serde_json::json!(registry::lineage(reg, name, &version)?),
                );
                let current = reg_models::current_version(reg, name)?;
                o.insert(
                    "current".into(),
                    serde_json::json!(current.as_deref() == Some(&version)),
                );
                let log: Vec<_> = reg_models::read_log(reg, name)?
                    .into_iter()
                    .filter(|e| e.version == version || e.from.as_deref() == Some(&version))
                    .collect();
                o.insert("promotions".into(), serde_json::to_value(log)?);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Action::Promote {
            version,
            reason,
            allow_layout_change,
        } => {
            let how = Servable {
                allow_layout_change,
            };
            let from = reg_models::promote_with(reg, name, &version, &reason, &how)?;
            println!(
                "{name}: {version} now serves (was {})",
                from.as_deref().unwrap_or("nothing")
            );
        }
        Action::Rollback => {
            let (from, to) = reg_models::rollback(reg, name)?;
            println!("{name}: rolled back from {from} to {to}");
        }
        Action::Stats {
            version,
            data,
            events,
        } => {
            let (telemetry, events) = history::csv_paths(&data, events.as_deref());
            let h = history::read_csv(&telemetry, events.as_deref())?;
            let card = reg_models::fill_feature_stats(&reg.join(name).join(&version), &h)?;
            println!(
                "{name} {version}: input statistics of {} features written",
                card.feature_stats.len()
            );
        }
        Action::Shadow(a) => shadow(reg, name, a)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn shadow(reg: &std::path::Path, name: &str, a: ShadowArgs) -> anyhow::Result<()> {
    match a.version {
        Some(version) if !a.clear => {
            let was = shadow::set(reg, name, &version, "shadowed by hand")?;
            println!(
                "{name}: {version} now shadows the serving version (was {})",
                was.as_deref().unwrap_or("nothing")
            );
        }
        _ => match shadow::clear(reg, name, "cleared by hand")? {
            Some(v) => println!("{name}: {v} no longer shadows"),
            None => println!("{name}: nothing was shadowing"),
        },
    }
    Ok(())
}

fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| ms.to_string())
}
