//! Naming and retiring the shadow challenger, with the checks and the log entries the registry's
//! bare `set_shadow` / `clear_shadow` leave to their callers.
//!
//! A shadow runs on the serving model's windows, so it must take the same features (in any order)
//! and the same window length; one that does not would only be refused by the ingest service, so
//! it is refused here first, by the same check a promotion runs. Setting and clearing are logged in
//! PROMOTIONS beside the promotions, so the log tells the whole story of a challenger: shadowed,
//! then promoted or retired.

use std::path::Path;

use anyhow::{Result, bail};
use maintcast_models::registry::{self as reg, Action, Servable};

/// Verifies `version` (it loads, forecasts a finite number and fits the serving model's windows),
/// names it SHADOW and logs `reason`. Returns the version that was shadowing before.
pub fn set(registry_dir: &Path, name: &str, version: &str, reason: &str) -> Result<Option<String>> {
    let current = reg::current_version(registry_dir, name)?;
    if current.as_deref() == Some(version) {
        bail!("{version} is the serving version; a shadow is a challenger to it");
    }
    reg::check_servable(registry_dir, name, version, &Servable::default())?;
    let was = reg::shadow_version(registry_dir, name)?;
    reg::set_shadow(registry_dir, name, version)?;
    reg::log(registry_dir, name, Action::Shadow, version, current, reason)?;
    Ok(was)
}

/// Stops shadowing and logs `reason` (a retirement when the live gate decided). Returns the
/// version that was shadowing, if any.
pub fn clear(registry_dir: &Path, name: &str, reason: &str) -> Result<Option<String>> {
    let was = reg::clear_shadow(registry_dir, name)?;
    if let Some(v) = &was {
        let current = reg::current_version(registry_dir, name)?;
        reg::log(registry_dir, name, Action::Retire, v, current, reason)?;
    }
    Ok(was)
}
