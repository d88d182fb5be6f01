//! `--promote`: the sweep's best run published as a new version, promoted through the registry's
//! one `promote` when it beats the serving version on the same validation machines.

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use maintcast_models::{Forecaster, History, pipeline};

use super::result::{MODEL_DIR, run_dir};
use super::run::SweepOutcome;

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
/// serving one on the same validation machines (docs/registry.md: a version is promoted only then).
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
        reg::promote(
            registry,
            name,
            &version,
            &format!("sweep {} run {}: {reason}", outcome.sweep_id, best.id),
        )?;
    }
    Ok(Promotion {
        run_id: best.id.clone(),
        version,
        promoted,
        reason,
    })
}
