//! What people and the trainer do with the registry beyond `maintcast_models::registry`'s
//! publish/promote: verified promotion with a promotion log, rollback, and a listing with lineage.
//!
//! The promotion log (`<registry>/<name>/PROMOTIONS`, JSON lines) is what makes "rollback" mean
//! "undo the last promotion" rather than "go to the parent": a promotion pushes a version, a
//! rollback pops one. CURRENT stays the single source of truth for what serves. The log is
//! appended after CURRENT is renamed, so a crash in between leaves the log one entry behind; replay
//! notices (the stack's top is not CURRENT) and treats CURRENT as pushed. A torn last line from a
//! crash mid-append is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use maintcast_models::ModelCard;
use maintcast_models::artifact;
use maintcast_models::registry as reg;
use serde::{Deserialize, Serialize};

pub const PROMOTIONS: &str = "PROMOTIONS";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Promote,
    Rollback,
}

/// One line of the promotion log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: String,
    pub action: Action,
    /// The version that serves after this entry.
    pub version: String,
    /// The version that served before it.
    pub from: Option<String>,
    pub reason: String,
}

fn log_path(registry: &Path, name: &str) -> PathBuf {
    registry.join(name).join(PROMOTIONS)
}

pub fn read_log(registry: &Path, name: &str) -> Result<Vec<LogEntry>> {
    let p = log_path(registry, name);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn append_log(registry: &Path, name: &str, entry: &LogEntry) -> Result<()> {
    let p = log_path(registry, name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    // One write per line: an append this small lands whole or, after a crash, torn at the end.
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("appending to {}", p.display()))
}

/// Loads the whole artifact (card, sha256, every tensor's shape): what ingest will do with it.
pub fn verify(registry: &Path, name: &str, version: &str) -> Result<ModelCard> {
    let dir = registry.join(name).join(version);
    if !dir.is_dir() {
        let known = reg::versions(registry, name)?;
        bail!(
            "{}: no such version (known: {})",
            dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let (card, _) = artifact::load(&dir, &Device::Cpu)
        .with_context(|| format!("version {version} does not load; refusing to serve it"))?;
    Ok(card)
}

/// Verifies `version`, makes it CURRENT and logs why. Returns the version that served before.
pub fn promote(registry: &Path, name: &str, version: &str, reason: &str) -> Result<Option<String>> {
    verify(registry, name, version)?;
    let from = reg::current_version(registry, name)?;
    reg::promote(registry, name, version)?;
    append_log(
        registry,
        name,
        &LogEntry {
            at: now(),
            action: Action::Promote,
            version: version.to_string(),
            from: from.clone(),
            reason: reason.to_string(),
        },
    )?;
    Ok(from)
}

/// Versions in the order they became CURRENT, the serving one last, as the log replays.
pub fn serving_stack(registry: &Path, name: &str) -> Result<Vec<String>> {
    let mut stack: Vec<String> = Vec::new();
    for e in read_log(registry, name)? {
        match e.action {
            Action::Promote => {
                // The version it replaced may have been promoted without the log (the one-shot
                // `maintcast train`, a registry copied by hand): it served all the same.
                if let Some(from) = e.from
                    && stack.last() != Some(&from)
                {
                    stack.push(from);
                }
                stack.push(e.version);
            }
            Action::Rollback => {
                stack.pop();
                // A rollback may land on a version the log never saw promoted (log written by
                // hand-copied registries, or a crash between CURRENT and the log).
                if stack.last() != Some(&e.version) {
                    stack.push(e.version);
                }
            }
        }
    }
    if let Some(cur) = reg::current_version(registry, name)?
        && stack.last() != Some(&cur)
    {
        stack.push(cur);
    }
    Ok(stack)
}

/// Undoes the last promotion: the version that served before the current one serves again (or,
/// without a log, the current version's parent). Returns `(from, to)`.
pub fn rollback(registry: &Path, name: &str) -> Result<(String, String)> {
    let Some(current) = reg::current_version(registry, name)? else {
        bail!(
            "{}: nothing serves yet, nothing to roll back",
            registry.join(name).display()
        );
    };
    let stack = serving_stack(registry, name)?;
    let target = match stack.len().checked_sub(2).map(|i| stack[i].clone()) {
        Some(v) => v,
        None => {
            let card = artifact::read_card(&registry.join(name).join(&current))?;
            card.parent_version.with_context(|| {
                format!("{current} is the first version that served and has no parent; nothing to roll back to")
            })?
        }
    };
    verify(registry, name, &target)?;
    reg::promote(registry, name, &target)?;
    append_log(
        registry,
        name,
        &LogEntry {
            at: now(),
            action: Action::Rollback,
            version: target.clone(),
            from: Some(current.clone()),
            reason: format!("rollback from {current}"),
        },
    )?;
    Ok((current, target))
}

/// One row of `maintcast models list`.
#[derive(Clone, Debug, Serialize)]
pub struct VersionSummary {
    pub version: String,
    pub current: bool,
    pub created_at: String,
    pub parent_version: Option<String>,
    pub val_mae: Option<f64>,
    pub rows: Option<u64>,
    pub machines: Option<usize>,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
    /// Set when the card cannot be read: the version is listed, never served.
    pub error: Option<String>,
}

pub fn list(registry: &Path, name: &str) -> Result<Vec<VersionSummary>> {
    let current = reg::current_version(registry, name)?;
    let mut out = Vec::new();
    for v in reg::versions(registry, name)? {
        let is_current = current.as_deref() == Some(v.as_str());
        match artifact::read_card(&registry.join(name).join(&v)) {
            Ok(card) => out.push(summary(&card, &v, is_current)),
            Err(e) => out.push(VersionSummary {
                version: v,
                current: is_current,
                created_at: String::new(),
                parent_version: None,
                val_mae: None,
                rows: None,
                machines: None,
                first_ts_ms: None,
                last_ts_ms: None,
                error: Some(e.to_string()),
            }),
        }
    }
    Ok(out)
}

fn summary(card: &ModelCard, version: &str, current: bool) -> VersionSummary {
    let d = &card.data;
    let machines = |k: &str| d.get(k).and_then(|v| v.as_array()).map(Vec::len);
    VersionSummary {
        version: version.to_string(),
        current,
        created_at: card.created_at.clone(),
        parent_version: card.parent_version.clone(),
        val_mae: card.metrics.pointer("/val/mae").and_then(|v| v.as_f64()),
        rows: d.get("rows").and_then(|v| v.as_u64()),
        machines: match (machines("train_machines"), machines("val_machines")) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        },
        first_ts_ms: d.get("first_ts_ms").and_then(|v| v.as_i64()),
        last_ts_ms: d.get("last_ts_ms").and_then(|v| v.as_i64()),
        error: None,
    }
}

/// `version`, its parent, its parent's parent, ... as far as the cards go.
pub fn lineage(registry: &Path, name: &str, version: &str) -> Result<Vec<String>> {
    let mut chain = vec![version.to_string()];
    let mut at = version.to_string();
    while let Some(parent) = artifact::read_card(&registry.join(name).join(&at))
        .ok()
        .and_then(|c| c.parent_version)
    {
        // A hand-edited card could loop; lineage is short, so a membership test is enough.
        if chain.contains(&parent) {
            break;
        }
        chain.push(parent.clone());
        at = parent;
    }
    Ok(chain)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Removes what killed publishers left behind: hidden `.staging-*` directories and
/// `.CURRENT.*.tmp` files older than `age` (a younger one may belong to a publisher still at work).
/// Best effort: leftovers are invisible to readers, only disk space is at stake.
pub fn remove_stale_staging(registry: &Path, name: &str, age: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(registry.join(name)) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().into_owned();
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|el| el > age);
        if !stale {
            continue;
        }
        let removed = if n.starts_with(".staging-") {
            std::fs::remove_dir_all(e.path())
        } else if n.starts_with(".CURRENT.") && n.ends_with(".tmp") {
            std::fs::remove_file(e.path())
        } else {
            continue;
        };
        if removed.is_ok() {
            tracing::info!(
                "removed {} left by an interrupted publisher",
                e.path().display()
            );
        }
    }
}
