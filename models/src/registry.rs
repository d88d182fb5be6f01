//! The model registry on disk: `<registry>/<name>/<version>/` holds one immutable model,
//! `<registry>/<name>/CURRENT` names the serving version and `<registry>/<name>/PROMOTIONS` logs
//! every change of CURRENT. `docs/registry.md` describes the layout.
//!
//! CURRENT moves only through [`promote`] and [`rollback`] (in `promotion`), which first check that
//! the serving side can take the version (`servable`) and then log the change. A pointer file
//! (CURRENT, and any other that names a version) is written by [`write_pointer`].
//!
//! Both changes are atomic renames within the model's directory: a version is assembled in a hidden
//! staging directory and renamed into place (a reader never sees half a model), and CURRENT is
//! written to a temporary file, flushed, and renamed over the old one (a reader sees the old name or
//! the new one, never a torn file).

use std::path::{Path, PathBuf};

use crate::artifact::{self, CARD_FILE, WEIGHTS_FILE};
use crate::error::{ModelError, Result};

mod promotion;
mod servable;
mod stats;

pub use promotion::{
    Action, LogEntry, PROMOTIONS, log, promote, promote_with, read_log, rollback, serving_stack,
};
pub use servable::{Servable, check_servable};
pub use stats::fill_feature_stats;

pub const CURRENT: &str = "CURRENT";

/// The directory of the version CURRENT names.
pub fn current_version_dir(registry: &Path, name: &str) -> Result<PathBuf> {
    let version = current_version(registry, name)?.ok_or_else(|| {
        ModelError::Registry(format!(
            "{}: no CURRENT version yet",
            registry.join(name).display()
        ))
    })?;
    Ok(registry.join(name).join(version))
}

/// The version CURRENT names, or `None` before the first promotion.
pub fn current_version(registry: &Path, name: &str) -> Result<Option<String>> {
    let p = registry.join(name).join(CURRENT);
    match std::fs::read_to_string(&p) {
        Ok(s) => {
            let v = s.trim().to_string();
            check_name(&v, "version")?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::Io { path: p, error: e }),
    }
}

/// Published versions, oldest first.
pub fn versions(registry: &Path, name: &str) -> Result<Vec<String>> {
    let dir = registry.join(name);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ModelError::Io {
                path: dir,
                error: e,
            });
        }
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| parse_version(n).is_some())
        .collect();
    out.sort_by_key(|n| parse_version(n));
    Ok(out)
}

fn parse_version(s: &str) -> Option<u32> {
    s.strip_prefix('v')?.parse().ok()
}

fn check_name(s: &str, what: &str) -> Result<()> {
    if s.is_empty() || s.starts_with('.') || s.contains(['/', '\\']) {
        return Err(ModelError::Registry(format!("invalid {what} {s:?}")));
    }
    Ok(())
}

/// Copies the model staged in `staged_dir` into the registry as the next version (`v0001`, ...)
/// and returns that version. The card's `name` and `version` are set on the way; CURRENT is not
/// touched (see [`promote`]).
pub fn publish(registry: &Path, name: &str, staged_dir: &Path) -> Result<String> {
    check_name(name, "model name")?;
    let mut card = artifact::read_card(staged_dir)?;
    let weights = staged_dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).map_err(ModelError::io(&weights))?;
    if artifact::sha256_hex(&bytes) != card.weights_sha256 {
        return Err(ModelError::Integrity(format!(
            "{}: weights do not match the card's sha256",
            staged_dir.display()
        )));
    }
    let model_dir = registry.join(name);
    std::fs::create_dir_all(&model_dir).map_err(ModelError::io(&model_dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&model_dir)
        .map_err(ModelError::io(&model_dir))?;
    artifact::write_synced(&staging.path().join(WEIGHTS_FILE), &bytes)?;
    // Another publisher may take a number first; renaming onto its (non-empty) directory fails,
    // so try the next one. A version directory is never replaced.
    for _ in 0..1000 {
        let next = versions(registry, name)?
            .last()
            .and_then(|v| parse_version(v))
            .unwrap_or(0)
            + 1;
        let version = format!("v{next:04}");
        card.name = name.to_string();
        card.version = version.clone();
        artifact::write_synced(
            &staging.path().join(CARD_FILE),
            serde_json::to_string_pretty(&card)?.as_bytes(),
        )?;
        let target = model_dir.join(&version);
        if target.exists() {
            continue;
        }
        match std::fs::rename(staging.path(), &target) {
            Ok(()) => {
                sync_dir(&model_dir)?;
                // The staging directory is gone (renamed); keep TempDir from deleting the target.
                let _ = staging.keep();
                return Ok(version);
            }
            Err(_) if target.exists() => continue,
            Err(e) => {
                return Err(ModelError::Io {
                    path: target,
                    error: e,
                });
            }
        }
    }
    Err(ModelError::Registry(format!(
        "{}: could not claim a version number",
        model_dir.display()
    )))
}

/// Names `version` in CURRENT, unchecked and unlogged: only `promotion` calls it.
fn set_current(registry: &Path, name: &str, version: &str) -> Result<()> {
    // A version that cannot be read should never be named CURRENT.
    artifact::read_card(&registry.join(name).join(version))?;
    write_pointer(registry, name, CURRENT, version)
}

/// Writes the pointer file `pointer` of model `name` to name `version`, atomically: a temporary
/// file, flushed, renamed over the old one (a reader sees the old name or the new one, never a
/// torn file).
pub fn write_pointer(registry: &Path, name: &str, pointer: &str, version: &str) -> Result<()> {
    check_name(name, "model name")?;
    check_name(version, "version")?;
    check_name(pointer, "pointer")?;
    let model_dir = registry.join(name);
    let tmp = model_dir.join(format!(".{pointer}.{}.tmp", std::process::id()));
    artifact::write_synced(&tmp, format!("{version}\n").as_bytes())?;
    let target = model_dir.join(pointer);
    std::fs::rename(&tmp, &target).map_err(ModelError::io(&target))?;
    sync_dir(&model_dir)
}

/// Makes a rename durable: on Linux the new directory entry is only on disk once the directory is.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(ModelError::io(dir))
}

// ------------------------------------------------------------------------------------------------
// SHADOW: a challenger the ingest service runs beside CURRENT on the same windows, whose forecasts
// are scored but never served (docs/LIVE_EVALUATION.md). Written and cleared like CURRENT: a
// reader sees the old name, the new one, or none, never a torn file.

const SHADOW: &str = "SHADOW";

/// The version SHADOW names, or `None` when no challenger is shadowing.
pub fn shadow_version(registry: &Path, name: &str) -> Result<Option<String>> {
    let p = registry.join(name).join(SHADOW);
    match std::fs::read_to_string(&p) {
        Ok(s) => {
            let v = s.trim().to_string();
            check_name(&v, "shadow version")?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::Io { path: p, error: e }),
    }
}

/// The directory of the version SHADOW names, or `None` when there is none.
pub fn shadow_version_dir(registry: &Path, name: &str) -> Result<Option<PathBuf>> {
    Ok(shadow_version(registry, name)?.map(|v| registry.join(name).join(v)))
}

/// Names `version` the shadow: writes SHADOW atomically. The version must have a readable card;
/// whether it fits the serving model's windows is the ingest service's check, which refuses it
/// without touching what serves.
pub fn set_shadow(registry: &Path, name: &str, version: &str) -> Result<()> {
    check_name(name, "model name")?;
    check_name(version, "version")?;
    let model_dir = registry.join(name);
    artifact::read_card(&model_dir.join(version))?;
    let tmp = model_dir.join(format!(".SHADOW.{}.tmp", std::process::id()));
    artifact::write_synced(&tmp, format!("{version}\n").as_bytes())?;
    let target = model_dir.join(SHADOW);
    std::fs::rename(&tmp, &target).map_err(ModelError::io(&target))?;
    sync_dir(&model_dir)
}

/// Stops shadowing. Returns the version that was shadowing, if any.
pub fn clear_shadow(registry: &Path, name: &str) -> Result<Option<String>> {
    check_name(name, "model name")?;
    let was = shadow_version(registry, name)?;
    let model_dir = registry.join(name);
    let target = model_dir.join(SHADOW);
    match std::fs::remove_file(&target) {
        Ok(()) => sync_dir(&model_dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ModelError::Io {
                path: target,
                error: e,
            });
        }
    }
    Ok(was)
}

#[cfg(test)]
mod shadow_tests {
    use super::*;

    /// A card that parses; `set_shadow` reads the card only (ingest loads the weights).
    fn card_json(version: &str) -> String {
        serde_json::json!({
            "name": "m", "version": version, "features": ["a"], "window": 4, "min_rows": 1,
            "target": {"name": "days_to_maintenance", "cap": 30.0},
            "scaler": {"kind": "min-max", "offset": [0.0], "scale": [1.0]},
            "arch": {"n_features": 1, "hidden": [2], "dropout": 0.0},
            "interval": {"lower_quantile": 0.1, "upper_quantile": 0.9, "lower_offset": 0.0,
                         "upper_offset": 0.0, "n_calibration": 0},
            "training": {}, "data": {}, "metrics": {}, "weights_sha256": "",
            "parent_version": null, "created_at": ""
        })
        .to_string()
    }

    fn registry_with(versions: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for v in versions {
            let d = dir.path().join("m").join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(CARD_FILE), card_json(v)).unwrap();
        }
        dir
    }

    #[test]
    fn shadow_is_set_replaced_and_cleared_beside_current() {
        let reg = registry_with(&["v0001", "v0002", "v0003"]);
        let r = reg.path();
        assert_eq!(shadow_version(r, "m").unwrap(), None);
        set_current(r, "m", "v0001").unwrap();
        set_shadow(r, "m", "v0002").unwrap();
        assert_eq!(shadow_version(r, "m").unwrap().as_deref(), Some("v0002"));
        assert_eq!(
            shadow_version_dir(r, "m").unwrap(),
            Some(r.join("m").join("v0002"))
        );
        set_shadow(r, "m", "v0003").unwrap();
        assert_eq!(shadow_version(r, "m").unwrap().as_deref(), Some("v0003"));
        // CURRENT is another file: shadowing never changes what serves.
        assert_eq!(current_version(r, "m").unwrap().as_deref(), Some("v0001"));
        assert_eq!(clear_shadow(r, "m").unwrap().as_deref(), Some("v0003"));
        assert_eq!(shadow_version(r, "m").unwrap(), None);
        assert_eq!(clear_shadow(r, "m").unwrap(), None);
        // No temporary file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(r.join("m"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_missing_or_unreadable_version_is_not_shadowed() {
        let reg = registry_with(&["v0001"]);
        let r = reg.path();
        assert!(set_shadow(r, "m", "v0009").is_err());
        assert!(set_shadow(r, "m", "../v0001").is_err());
        std::fs::create_dir_all(r.join("m").join("v0002")).unwrap();
        std::fs::write(r.join("m").join("v0002").join(CARD_FILE), "{").unwrap();
        assert!(set_shadow(r, "m", "v0002").is_err());
        assert_eq!(shadow_version(r, "m").unwrap(), None);
        // A hand-edited SHADOW naming a path is an error, not a directory outside the registry.
        std::fs::write(r.join("m").join(SHADOW), "../../etc\n").unwrap();
        assert!(shadow_version(r, "m").is_err());
    }
}
