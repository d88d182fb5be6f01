//! What people do with the registry beyond `maintcast_models::registry` (publish, the checked and
//! logged promote and rollback): a listing with lineage, and cleaning up after killed publishers.

use std::path::Path;

use anyhow::Result;
use maintcast_models::ModelCard;
use maintcast_models::artifact;
use maintcast_models::registry as reg;
use serde::Serialize;

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

/// Removes what killed publishers left behind: hidden `.staging-*` directories and
/// `.<pointer>.*.tmp` files (CURRENT and other pointers) older than `age` (a younger one may belong to a publisher still at work).
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
        } else if n.starts_with('.') && n.ends_with(".tmp") {
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
