//! The one promote: it checks that the serving side can take a version (it loads, forecasts, and
//! has the serving version's features and window), refuses with a message that says why, and logs
//! every change of CURRENT.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use maintcast_models::registry::{self, Action, Servable};
use maintcast_models::{ModelCard, artifact, pipeline};

fn trained_model(dir: &Path) -> ModelCard {
    let history = common::fleet(8, 3);
    let cfg = common::small_config(1);
    let trained = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    trained.save(dir).unwrap()
}

/// A registry with one trained version serving, and the staged model it came from.
fn serving_registry() -> (tempfile::TempDir, tempfile::TempDir) {
    let staged = tempfile::tempdir().unwrap();
    trained_model(staged.path());
    let reg = tempfile::tempdir().unwrap();
    let v = registry::publish(reg.path(), "pump", staged.path()).unwrap();
    registry::promote(reg.path(), "pump", &v, "first").unwrap();
    (reg, staged)
}

/// Publishes a copy of `staged` whose card is changed by `edit`.
fn publish_edited(reg: &Path, staged: &Path, edit: impl FnOnce(&mut ModelCard)) -> String {
    let copy = tempfile::tempdir().unwrap();
    let mut card = artifact::read_card(staged).unwrap();
    edit(&mut card);
    std::fs::copy(
        staged.join(artifact::WEIGHTS_FILE),
        copy.path().join(artifact::WEIGHTS_FILE),
    )
    .unwrap();
    std::fs::write(
        copy.path().join(artifact::CARD_FILE),
        serde_json::to_string(&card).unwrap(),
    )
    .unwrap();
    registry::publish(reg, "pump", copy.path()).unwrap()
}

fn current(reg: &Path) -> String {
    registry::current_version(reg, "pump").unwrap().unwrap()
}

#[test]
fn every_promotion_is_checked_and_logged() {
    let (reg, staged) = serving_registry();
    let r = reg.path();
    let v2 = registry::publish(r, "pump", staged.path()).unwrap();
    assert_eq!(
        registry::promote(r, "pump", &v2, "better")
            .unwrap()
            .as_deref(),
        Some("v0001")
    );
    let log = registry::read_log(r, "pump").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].version.as_str(), log[0].from.as_deref()),
        ("v0001", None)
    );
    assert_eq!(
        (
            log[1].action.clone(),
            log[1].version.as_str(),
            log[1].from.as_deref(),
            log[1].reason.as_str()
        ),
        (Action::Promote, "v0002", Some("v0001"), "better")
    );
    let err = registry::promote(r, "pump", "v0009", "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no such version") && err.contains("v0001, v0002"),
        "{err}"
    );
    assert!(registry::promote(r, "pump", "../x", "x").is_err());
    assert_eq!(
        registry::rollback(r, "pump").unwrap(),
        ("v0002".into(), "v0001".into())
    );
    assert_eq!(
        registry::read_log(r, "pump").unwrap()[2].action,
        Action::Rollback
    );
}

#[test]
fn another_window_or_other_features_are_refused_unless_allowed() {
    let (reg, staged) = serving_registry();
    let r = reg.path();

    let reordered = publish_edited(r, staged.path(), |c| {
        // Same sensors in another order: ingest reorders its windows by name.
        c.features.reverse();
        c.scaler.offset.reverse();
        c.scaler.scale.reverse();
    });
    registry::promote(r, "pump", &reordered, "reordered").unwrap();
    assert_eq!(current(r), reordered);

    let wider = publish_edited(r, staged.path(), |c| c.window += 5);
    let err = registry::promote(r, "pump", &wider, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve pump v0003")
            && err.contains("window 15")
            && err.contains("--allow-layout-change"),
        "{err}"
    );
    assert_eq!(current(r), reordered, "CURRENT moved on a refusal");
    assert_eq!(
        registry::read_log(r, "pump").unwrap().len(),
        2,
        "a refusal was logged"
    );

    let renamed = publish_edited(r, staged.path(), |c| c.features[1] = "pressure".into());
    let err = registry::promote(r, "pump", &renamed, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pressure") && err.contains("features"),
        "{err}"
    );

    let how = Servable {
        allow_layout_change: true,
    };
    registry::promote_with(r, "pump", &wider, "new window, ingest restarted", &how).unwrap();
    assert_eq!(current(r), wider);
}

#[test]
fn a_model_the_serving_side_cannot_use_is_refused() {
    let (reg, staged) = serving_registry();
    let r = reg.path();
    let any = Servable {
        allow_layout_change: true,
    };

    let twice = publish_edited(r, staged.path(), |c| c.features[1] = c.features[0].clone());
    let err = registry::promote_with(r, "pump", &twice, "x", &any)
        .unwrap_err()
        .to_string();
    assert!(err.contains("listed twice"), "{err}");

    let misshapen = publish_edited(r, staged.path(), |c| c.arch.hidden = vec![13]);
    let err = registry::promote_with(r, "pump", &misshapen, "x", &any)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not load") && err.contains("shape"),
        "{err}"
    );

    // Weights that load but forecast NaN (a diverged run).
    let nan = tempfile::tempdir().unwrap();
    let mut card = artifact::read_card(staged.path()).unwrap();
    let bytes = std::fs::read(staged.path().join(artifact::WEIGHTS_FILE)).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    for t in tensors.values_mut() {
        *t = (t.ones_like().unwrap() * f64::NAN).unwrap();
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap();
    card.weights_sha256 = artifact::sha256_hex(&bytes);
    std::fs::write(nan.path().join(artifact::WEIGHTS_FILE), &bytes).unwrap();
    std::fs::write(
        nan.path().join(artifact::CARD_FILE),
        serde_json::to_string(&card).unwrap(),
    )
    .unwrap();
    let v = registry::publish(r, "pump", nan.path()).unwrap();
    let err = registry::promote(r, "pump", &v, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a finite number"), "{err}");

    assert_eq!(current(r), "v0001");
    assert_eq!(registry::read_log(r, "pump").unwrap().len(), 1);
}
