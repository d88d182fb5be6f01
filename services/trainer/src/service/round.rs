//! One round, as steps: read history, then skip -> train -> score -> gate -> publish.
//!
//! Every challenger is published (an immutable version with its card and the gate's verdict), so a
//! rejected one stays inspectable and can still be promoted by hand; only the gate moves CURRENT,
//! through the registry's one `promote` (which also checks that ingest can serve it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use maintcast_models::pipeline::Trained;
use maintcast_models::{Forecaster, History, MachineHistory, ModelCard, artifact, pipeline};

use super::config::{HistorySource, Outcome, ServiceConfig, parse_since};
use super::gate::gate;
use super::holdout::{
    eval_machines, labelled_rows, labelled_rows_until, recent_stretch, shuffle_rows,
};
use super::report::RoundReport;
use crate::influx_history::{self, HistoryQuery};
use crate::realized::{self, RealizedReport};
use crate::registry;
use crate::tensorboard::EventWriter;
use crate::training_run::TrainingRunSink;

pub(crate) async fn round(cfg: Arc<ServiceConfig>) -> Result<RoundReport> {
    let run_id = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    if cfg.args.live_gate
        && let Some(report) = live_round(&cfg, &run_id).await?
    {
        return Ok(report);
    }
    let history = read_history(&cfg).await?;
    let realized = realized_accuracy(&cfg, &history).await;
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || steps(&c, history, run_id, realized)).await?
}

/// The live gate's part of a round: while a challenger shadows, the round is about it (promote,
/// retire or keep waiting), and no new challenger is trained, which would replace it before its
/// evidence is in. `None` when nothing shadows, or the shadow was just retired (train a new one).
async fn live_round(cfg: &ServiceConfig, run_id: &str) -> Result<Option<RoundReport>> {
    let influx = cfg.influx.as_ref().expect("validated");
    let (reg, name) = (&cfg.registry, cfg.name.as_str());
    let champion = maintcast_models::registry::current_version(reg, name)?;
    let Some(d) = crate::live_gate::review(
        &influx.client()?,
        &influx.bucket,
        reg,
        name,
        cfg.args.live_min_events,
        cfg.args.margin,
        run_id,
    )
    .await?
    else {
        return Ok(None);
    };
    tracing::info!(verdict = ?d.verdict, "live gate: {}", d.reason);
    let outcome = match d.verdict {
        crate::live_gate::Verdict::Promote => Outcome::Promoted,
        crate::live_gate::Verdict::Retire => return Ok(None),
        crate::live_gate::Verdict::Keep => Outcome::Skipped,
    };
    Ok(Some(RoundReport {
        run_id: run_id.to_string(),
        outcome,
        reason: d.reason,
        champion,
        challenger: Some(d.evidence.shadow.clone()),
        challenger_mae: d.evidence.shadow_mae(),
        champion_mae: d.evidence.champion_mae(),
        eval_windows: 0,
        machines: d.evidence.machines,
        rows: 0,
        labelled_rows: 0,
        new_labelled_rows: 0,
        train_s: 0.0,
        realized: None,
    }))
}

async fn read_history(cfg: &Arc<ServiceConfig>) -> Result<History> {
    match &cfg.source {
        HistorySource::Influx => {
            let influx = cfg.influx.as_ref().expect("validated");
            let mut q = HistoryQuery::new(influx.bucket.clone());
            q.page = cfg.args.page;
            q.machine_type = cfg.args.machine_type.clone();
            if let Some(s) = &cfg.args.since {
                q.since_ms = Some(parse_since(s, chrono::Utc::now().timestamp_millis())?);
            }
            influx_history::read_history(&influx.client()?, &q)
                .await
                .context("reading history from InfluxDB")
        }
        HistorySource::Files(_) => {
            let c = cfg.clone();
            tokio::task::spawn_blocking(move || match &c.source {
                HistorySource::Files(load) => load(),
                HistorySource::Influx => unreachable!("matched above"),
            })
            .await?
        }
    }
}

/// The serving version's forecasts scored against the maintenance that happened; `None` without
/// InfluxDB or when it cannot be read (the round goes on without it).
async fn realized_accuracy(cfg: &ServiceConfig, history: &History) -> Option<RealizedReport> {
    let influx = cfg.influx.as_ref()?;
    let machines = history
        .machines
        .iter()
        .map(|m| m.machine_id.clone())
        .collect();
    let client = match influx.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("realized accuracy unavailable: {e:#}");
            return None;
        }
    };
    match realized::score(
        &client,
        &influx.bucket,
        &cfg.name,
        cfg.recipe.data.cap as f64,
        cfg.args.warn_days,
        &machines,
    )
    .await
    {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("realized accuracy unavailable: {e:#}");
            None
        }
    }
}

fn steps(
    cfg: &ServiceConfig,
    history: History,
    run_id: String,
    realized: Option<RealizedReport>,
) -> Result<RoundReport> {
    let (reg, name) = (&cfg.registry, cfg.name.as_str());
    registry::remove_stale_staging(reg, name, Duration::from_secs(3600));
    let champion = maintcast_models::registry::current_version(reg, name)?;
    let labelled = labelled_rows(&history);
    let mut report = RoundReport {
        run_id: run_id.clone(),
        outcome: Outcome::Skipped,
        reason: String::new(),
        champion: champion.clone(),
        challenger: None,
        challenger_mae: None,
        champion_mae: None,
        eval_windows: 0,
        machines: history.machines.len(),
        rows: history.n_rows(),
        labelled_rows: labelled,
        new_labelled_rows: 0,
        train_s: 0.0,
        realized: realized.clone(),
    };

    if let Some(reason) = skip(cfg, &history, champion.as_deref(), &mut report) {
        report.reason = reason;
        return Ok(report);
    }

    let eval_idx = eval_machines(&history, cfg.args.eval_fraction);
    let eval_refs: Vec<&MachineHistory> = eval_idx.iter().map(|&i| &history.machines[i]).collect();
    let eval = recent_stretch(&eval_refs);
    let mut train_h = History {
        machines: history
            .machines
            .iter()
            .enumerate()
            .filter(|(i, _)| !eval_idx.contains(i))
            .map(|(_, m)| m.clone())
            .collect(),
    };
    if cfg.args.shuffle_labels {
        shuffle_rows(&mut train_h, cfg.recipe.train.seed ^ 0x5b0f_f1e5);
    }

    let device = maintcast_models::device::parse_device(&cfg.device)?;
    let mut tb = match &cfg.args.tensorboard {
        Some(dir) => Some(EventWriter::create(&dir.join(name).join(&run_id))?),
        None => None,
    };
    let started = Instant::now();
    let trained = train(cfg, &train_h, &device, &run_id, tb.as_mut())?;
    report.train_s = started.elapsed().as_secs_f64();

    let staged = tempfile::tempdir().context("creating a staging directory")?;
    let mut card = trained.save(staged.path())?;
    let scores = score(cfg, staged.path(), champion.as_deref(), &eval, &device)?;

    let realized_mae = realized
        .as_ref()
        .and_then(|r| r.version_mae(champion.as_deref().unwrap_or_default()));
    let (promote, reason) = gate(
        champion.as_deref(),
        scores.challenger_mae,
        scores.champion_mae,
        cfg.args.margin,
        cfg.args.realized_gate.then_some(realized_mae).flatten(),
    );

    card.parent_version = champion.clone();
    card.data["labelled_rows"] = serde_json::json!(labelled);
    card.data["eval_machines"] = serde_json::json!(
        eval.machines
            .iter()
            .map(|m| m.machine_id.clone())
            .collect::<Vec<_>>()
    );
    card.data["source"] = serde_json::json!(match cfg.source {
        HistorySource::Influx => "influxdb",
        HistorySource::Files(_) => "files",
    });
    card.training["run_id"] = serde_json::json!(run_id);
    card.training["wall_s"] = serde_json::json!(report.train_s);
    card.training["shuffled_labels"] = serde_json::json!(cfg.args.shuffle_labels);
    card.metrics["holdout"] = serde_json::json!({
        "challenger_mae": scores.challenger_mae, "champion_mae": scores.champion_mae,
        "champion_version": champion, "windows": scores.eval_windows,
        "machines": card.data["eval_machines"],
    });
    // With the live gate, passing offline earns a shadow, not a promotion (decided in `publish`).
    let shadows = promote && cfg.args.live_gate && champion.is_some();
    card.metrics["gate"] = serde_json::json!({
        "promoted": promote && !shadows, "shadow": shadows, "reason": reason,
        "margin": cfg.args.margin,
    });
    if let Some(r) = &realized {
        card.metrics["realized_at_training"] = serde_json::to_value(r)?;
    }

    let (version, promoted, reason) = publish(cfg, staged.path(), &card, &run_id, promote, reason)?;
    if let Some(tb) = tb.as_mut() {
        let _ = tb.add_text("round", &format!("{version}: {reason}"), 0);
        let _ = tb.flush();
    }
    report.outcome = if promoted {
        Outcome::Promoted
    } else {
        Outcome::NotPromoted
    };
    report.reason = reason;
    report.challenger = Some(version);
    report.challenger_mae = scores.challenger_mae;
    report.champion_mae = scores.champion_mae;
    report.eval_windows = scores.eval_windows;
    Ok(report)
}

/// Step 1: why this round trains nothing (no labels yet, or too few new ones since the serving
/// version was trained), or `None` to go on. Counts the new labelled rows into `report`.
fn skip(
    cfg: &ServiceConfig,
    history: &History,
    champion: Option<&str>,
    report: &mut RoundReport,
) -> Option<String> {
    let (reg, name) = (&cfg.registry, cfg.name.as_str());
    let champion_card = champion.and_then(|v| artifact::read_card(&reg.join(name).join(v)).ok());
    let labelled = report.labelled_rows;
    let before = match &champion_card {
        Some(c) => c
            .data
            .get("labelled_rows")
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
            .or_else(|| {
                c.data
                    .get("last_ts_ms")
                    .and_then(|v| v.as_i64())
                    .map(|t| labelled_rows_until(history, t))
            })
            .unwrap_or(0),
        None => 0,
    };
    let new_rows = labelled.saturating_sub(before);
    report.new_labelled_rows = new_rows;
    if labelled == 0 {
        return Some(format!(
            "no labelled data yet ({} machines, {} rows, no maintenance event after any row)",
            history.machines.len(),
            report.rows
        ));
    }
    if let Some(v) = champion
        && new_rows < cfg.args.min_new_rows
    {
        return Some(format!(
            "{new_rows} new labelled rows since {v} was trained ({labelled} in all); \
             --min-new-rows is {}",
            cfg.args.min_new_rows
        ));
    }
    None
}

/// Step 2: the challenger, its epochs logged to TensorBoard and InfluxDB's `training_run`.
fn train(
    cfg: &ServiceConfig,
    history: &History,
    device: &candle_core::Device,
    run_id: &str,
    mut tb: Option<&mut EventWriter>,
) -> Result<Trained> {
    let name = cfg.name.as_str();
    let sink = match &cfg.influx {
        Some(i) => Some(TrainingRunSink::new(i)?),
        None => None,
    };
    let members = cfg.recipe.train.ensemble;
    let trained = pipeline::train_model(history, &cfg.recipe, device, &mut |k, r| {
        let run = if members > 1 {
            format!("{run_id}-m{k}")
        } else {
            run_id.to_string()
        };
        if let Some(sink) = &sink {
            sink.epoch(name, &run, r);
        }
        if let Some(tb) = tb.as_deref_mut() {
            let step = (k * 100_000 + r.epoch) as i64;
            let _ = tb.add_scalars(
                step,
                &[
                    ("train_loss", r.train_loss as f32),
                    ("val_mae", r.val_mae as f32),
                    ("val_rmse", r.val_rmse as f32),
                    ("lr", r.lr as f32),
                ],
            );
        }
        tracing::debug!(
            "epoch {} train_loss {:.3} val_mae {:.3}",
            r.epoch,
            r.train_loss,
            r.val_mae
        );
    })?;
    if let Some(sink) = &sink {
        sink.finish();
    }
    Ok(trained)
}

/// Held-out MAE of both models on the same windows.
struct Scores {
    challenger_mae: Option<f64>,
    champion_mae: Option<f64>,
    eval_windows: usize,
}

/// Step 3: both models on the held-out machines' recent stretch. A model that cannot be scored
/// gets `None`; the gate decides what that means.
fn score(
    cfg: &ServiceConfig,
    staged: &Path,
    champion: Option<&str>,
    eval: &History,
    device: &candle_core::Device,
) -> Result<Scores> {
    let challenger = Forecaster::load(staged, device)?;
    let (challenger_mae, eval_windows) = match pipeline::evaluate_history(&challenger, eval) {
        Ok(r) => (Some(r.mae), r.n),
        Err(e) => {
            tracing::warn!("the challenger cannot be scored on the held-out machines: {e}");
            (None, 0)
        }
    };
    let champion_mae = champion.and_then(|v| {
        let dir = cfg.registry.join(&cfg.name).join(v);
        match Forecaster::load(&dir, device).and_then(|f| pipeline::evaluate_history(&f, eval)) {
            Ok(r) => Some(r.mae),
            Err(e) => {
                tracing::warn!(
                    "the serving version {v} cannot be scored on the held-out machines: {e}"
                );
                None
            }
        }
    });
    Ok(Scores {
        challenger_mae,
        champion_mae,
        eval_windows,
    })
}

/// Step 5: the challenger published with its card; promoted when the gate said so and the
/// registry's serving check accepts it. Returns `(version, promoted, reason)`.
fn publish(
    cfg: &ServiceConfig,
    staged: &Path,
    card: &ModelCard,
    run_id: &str,
    promote: bool,
    reason: String,
) -> Result<(String, bool, String)> {
    let (reg, name) = (&cfg.registry, cfg.name.as_str());
    // The weights are already written and hashed; only the card gains the round's facts.
    std::fs::write(
        staged.join(artifact::CARD_FILE),
        serde_json::to_string_pretty(card)?,
    )?;
    let version = maintcast_models::registry::publish(reg, name, staged)?;
    if !promote {
        return Ok((version, false, reason));
    }
    // With the live gate, a challenger that passed offline shadows first; the first version has
    // nothing to be compared with and serves at once.
    if cfg.args.live_gate && maintcast_models::registry::current_version(reg, name)?.is_some() {
        let why =
            format!("trainer round {run_id}: offline evidence: {reason}; awaiting live evidence");
        match crate::shadow::set(reg, name, &version, &why) {
            Ok(_) => {
                let reason = format!(
                    "shadowing: passed the offline gate ({reason}); promotion waits for {} live events",
                    cfg.args.live_min_events
                );
                return Ok((version, false, reason));
            }
            Err(e) => {
                tracing::warn!("{version} cannot shadow ({e:#}); the offline gate decides alone")
            }
        }
    }
    let why = format!("trainer round {run_id}: {reason}");
    match maintcast_models::registry::promote(reg, name, &version, &why) {
        Ok(_) => Ok((version, true, reason)),
        // The gate passed but the serving side could not take it: the round still ends.
        Err(e) => Ok((version, false, format!("{reason}; but not promoted: {e}"))),
    }
}
