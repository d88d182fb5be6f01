//! Filling in the input statistics (`feature_stats`) of a version whose card was written before
//! cards carried them, so that ingest can judge its inputs against the training data (range and
//! drift checks) without retraining. The one change a published version takes: weights, features
//! and everything else on the card stay as they are, and a card that has statistics is refused.

use std::path::Path;

use crate::artifact::{self, CARD_FILE, FeatureStats, ModelCard};
use crate::dataset;
use crate::error::{ModelError, Result};
use crate::history::History;

/// Computes the card's statistics from the rows of its training machines (`data.train_machines`,
/// the rows training itself summarised) in `history` and writes the card back atomically.
pub fn fill_feature_stats(version_dir: &Path, history: &History) -> Result<ModelCard> {
    let mut card = artifact::read_card(version_dir)?;
    if !card.feature_stats.is_empty() {
        return Err(ModelError::Registry(format!(
            "{} already has feature statistics; a version's card is not rewritten",
            version_dir.display()
        )));
    }
    let wanted: Vec<String> = card
        .data
        .get("train_machines")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| {
            ModelError::Registry(format!(
                "{}: the card does not list its training machines (data.train_machines)",
                version_dir.display()
            ))
        })?;
    let machines: Vec<_> = history
        .machines
        .iter()
        .filter(|m| wanted.contains(&m.machine_id))
        .collect();
    if machines.len() != wanted.len() {
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|id| !machines.iter().any(|m| &&m.machine_id == id))
            .collect();
        return Err(ModelError::Data(format!(
            "the history lacks {} of the card's {} training machines (e.g. {:?}): give the data \
             the version was trained on",
            missing.len(),
            wanted.len(),
            missing.first()
        )));
    }
    let rows = dataset::training_rows(&machines, &card.features)?;
    card.feature_stats = FeatureStats::of_rows(&rows, card.features.len());
    let path = version_dir.join(CARD_FILE);
    let tmp = version_dir.join(format!(".{CARD_FILE}.{}.tmp", std::process::id()));
    artifact::write_synced(&tmp, serde_json::to_string_pretty(&card)?.as_bytes())?;
    std::fs::rename(&tmp, &path).map_err(ModelError::io(&path))?;
    Ok(card)
}
