//! Promotion and rollback, each logged: the one way CURRENT moves.
//!
//! The promotion log (`<registry>/<name>/PROMOTIONS`, JSON lines) is what makes "rollback" mean
//! "undo the last promotion" rather than "go to the parent": a promotion pushes a version, a
//! rollback pops one. CURRENT stays the single source of truth for what serves. The log is
//! appended after CURRENT is renamed, so a crash in between leaves the log one entry behind; replay
//! notices (the stack's top is not CURRENT) and treats CURRENT as pushed. A torn last line from a
//! crash mid-append is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::servable::{Servable, check_servable};
use crate::artifact;
use crate::error::{ModelError, Result};

pub const PROMOTIONS: &str = "PROMOTIONS";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Promote,
    Rollback,
    /// `version` started shadowing (`from`: what served then); CURRENT did not move.
    Shadow,
    /// `version` stopped shadowing without being promoted; CURRENT did not move.
    Retire,
}

/// One line of the promotion log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: String,
    pub action: Action,
    /// The version that serves after this entry; for `shadow` and `retire`, the challenger.
    pub version: String,
    /// The version that served before it (for `shadow` and `retire`: that serves meanwhile).
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
        Err(e) => return Err(ModelError::Io { path: p, error: e }),
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
        .map_err(ModelError::io(&p))?;
    // One write per line: an append this small lands whole or, after a crash, torn at the end.
    let mut line = serde_json::to_string(entry)?;
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(ModelError::io(&p))
}

/// Checks that the serving side can take `version` ([`check_servable`], same layout as what
/// serves), makes it CURRENT and logs why. Returns the version that served before.
pub fn promote(registry: &Path, name: &str, version: &str, reason: &str) -> Result<Option<String>> {
    promote_with(registry, name, version, reason, &Servable::default())
}

/// [`promote`] with the serving check relaxed as `how` says.
pub fn promote_with(
    registry: &Path,
    name: &str,
    version: &str,
    reason: &str,
    how: &Servable,
) -> Result<Option<String>> {
    super::check_name(name, "model name")?;
    super::check_name(version, "version")?;
    check_servable(registry, name, version, how)?;
    let from = super::current_version(registry, name)?;
    super::set_current(registry, name, version)?;
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

/// Appends an entry that does not move CURRENT (shadowing, retiring): `version` is the one it
/// concerns, `from` what served at the time.
pub fn log(
    registry: &Path,
    name: &str,
    action: Action,
    version: &str,
    from: Option<String>,
    reason: &str,
) -> Result<()> {
    append_log(
        registry,
        name,
        &LogEntry {
            at: now(),
            action,
            version: version.to_string(),
            from,
            reason: reason.to_string(),
        },
    )
}

/// Versions in the order they became CURRENT, the serving one last, as the log replays.
pub fn serving_stack(registry: &Path, name: &str) -> Result<Vec<String>> {
    let mut stack: Vec<String> = Vec::new();
    for e in read_log(registry, name)? {
        match e.action {
            Action::Promote => {
                // The version it replaced may have been promoted without the log (a registry
                // copied by hand, or one older than the log): it served all the same.
                if let Some(from) = e.from
                    && stack.last() != Some(&from)
                {
                    stack.push(from);
                }
                stack.push(e.version);
            }
            // A challenger's story beside the serving one: CURRENT did not move.
            Action::Shadow | Action::Retire => {}
            Action::Rollback => {
                stack.pop();
                // A rollback may land on a version the log never saw promoted (hand-copied
                // registries, or a crash between CURRENT and the log).
                if stack.last() != Some(&e.version) {
                    stack.push(e.version);
                }
            }
        }
    }
    if let Some(cur) = super::current_version(registry, name)?
        && stack.last() != Some(&cur)
    {
        stack.push(cur);
    }
    Ok(stack)
}

/// Undoes the last promotion: the version that served before the current one serves again (or,
/// without a log, the current version's parent). Returns `(from, to)`. The target served before,
/// so its layout may differ from the current one's; it must still load and forecast.
pub fn rollback(registry: &Path, name: &str) -> Result<(String, String)> {
    let Some(current) = super::current_version(registry, name)? else {
        return Err(ModelError::Registry(format!(
            "{}: nothing serves yet, nothing to roll back",
            registry.join(name).display()
        )));
    };
    let stack = serving_stack(registry, name)?;
    let target = match stack.len().checked_sub(2).map(|i| stack[i].clone()) {
        Some(v) => v,
        None => {
            let card = artifact::read_card(&registry.join(name).join(&current))?;
            card.parent_version.ok_or_else(|| {
                ModelError::Registry(format!(
                    "{current} is the first version that served and has no parent; nothing to roll back to"
                ))
            })?
        }
    };
    let how = Servable {
        allow_layout_change: true,
    };
    check_servable(registry, name, &target, &how)?;
    super::set_current(registry, name, &target)?;
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
