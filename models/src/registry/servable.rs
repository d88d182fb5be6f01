//! Whether the serving side can take a version: the check every promotion runs first.
//!
//! The ingest service loads the whole artifact (card, sha256, every tensor's shape), keeps its
//! windows shaped for the model it started with, and refuses on hot reload a model whose features
//! (in any order) or window differ. A promotion that ingest would refuse leaves the old model
//! serving while the registry says otherwise, so it is refused here, before CURRENT moves.

use std::collections::HashSet;
use std::path::Path;

use candle_core::Device;

use crate::artifact::{self, ModelCard};
use crate::error::{ModelError, Result};
use crate::scaler::ScalerKind;

/// How a promotion may differ from what serves.
#[derive(Clone, Debug, Default)]
pub struct Servable {
    /// Accept other features or another window than the serving version's. Running ingest
    /// instances keep the old model until restarted, and drop their windows' checkpoints.
    pub allow_layout_change: bool,
}

/// Loads `version` as ingest would and runs one forecast; then compares its layout with the
/// serving version's. Returns its card.
pub fn check_servable(
    registry: &Path,
    name: &str,
    version: &str,
    how: &Servable,
) -> Result<ModelCard> {
    let refuse =
        |why: String| ModelError::Registry(format!("refusing to serve {name} {version}: {why}"));
    let dir = registry.join(name).join(version);
    if !dir.is_dir() {
        let known = super::versions(registry, name)?;
        return Err(refuse(format!(
            "{}: no such version (known: {})",
            dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let (card, members) =
        artifact::load(&dir, &Device::Cpu).map_err(|e| refuse(format!("it does not load: {e}")))?;
    let mut seen = HashSet::new();
    if let Some(dup) = card.features.iter().find(|f| !seen.insert(f.as_str())) {
        // Windows are laid out by feature name; a name twice cannot be placed.
        return Err(refuse(format!("feature {dup:?} is listed twice")));
    }
    let centre = match card.scaler.kind {
        ScalerKind::MinMax => 0.5,
        ScalerKind::ZScore => 0.0,
    };
    let window = vec![centre; card.window * card.features.len()];
    // Each member's raw output: the forecaster floors days at 0, which would hide a NaN.
    for (k, net) in members.iter().enumerate() {
        let days = net
            .predict(&window, 1)
            .map_err(|e| refuse(format!("a forecast fails: {e}")))?;
        if let Some(d) = days.iter().find(|d| !d.is_finite()) {
            return Err(refuse(format!(
                "member {k}'s forecast of a neutral window is {d}, not a finite number"
            )));
        }
    }
    if !how.allow_layout_change
        && let Some(serving) = super::current_version(registry, name)?
        && serving != version
        && let Ok(current) = artifact::read_card(&registry.join(name).join(&serving))
    {
        let same_features = current.features.len() == card.features.len()
            && current.features.iter().all(|f| card.features.contains(f));
        if !same_features || current.window != card.window {
            return Err(refuse(format!(
                "its features {:?} and window {} differ from the serving {serving}'s ({:?}, {}); \
                 running ingest instances would refuse it until restarted and drop their windows. \
                 Promote with the layout change allowed (`--allow-layout-change`) and restart \
                 ingest if that is intended",
                card.features, card.window, current.features, current.window
            )));
        }
    }
    Ok(card)
}
