mod common;

use candle_core::Device;
use maintcast_models::{Forecaster, ModelError, artifact, pipeline, registry};

fn trained_model(dir: &std::path::Path) -> maintcast_models::ModelCard {
    let history = common::fleet(8, 3);
    let mut cfg = common::small_config(1);
    cfg.train.ensemble = 2;
    let trained = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    trained.save(dir).unwrap()
}

#[test]
fn saved_model_loads_and_predicts_with_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let card = trained_model(dir.path());
    assert_eq!(card.members, 2);
    let f = Forecaster::load(dir.path(), &Device::Cpu).unwrap();
    // (metrics are JSON floats, which serde_json may round by an ulp on reading; compare the rest)
    assert_eq!(f.card().weights_sha256, card.weights_sha256);
    assert_eq!(f.card().scaler, card.scaler);
    assert_eq!(f.features(), ["wear", "temp"]);
    assert_eq!(f.window(), 10);
    let mut scaled = vec![0.0; 2];
    f.scale_row(&[10.0, 60.0], &mut scaled);
    let windows: Vec<f32> = (0..3 * 10).flat_map(|_| scaled.clone()).collect();
    let out = f.predict(&windows, 3).unwrap();
    assert_eq!(out.len(), 3);
    for fc in &out {
        assert!(
            fc.days >= 0.0 && fc.p10 <= fc.days + 1e-6 && fc.days <= fc.p90 + 1e-6,
            "{fc:?}"
        );
    }
    assert!(matches!(f.predict(&windows, 2), Err(ModelError::Data(_))));
}

#[test]
fn tampered_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    trained_model(dir.path());
    let p = dir.path().join(artifact::WEIGHTS_FILE);
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let err = Forecaster::load(dir.path(), &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::Integrity(_)), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn card_that_disagrees_with_tensor_shapes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut card = trained_model(dir.path());
    card.arch.hidden = vec![13];
    let p = dir.path().join(artifact::CARD_FILE);
    std::fs::write(&p, serde_json::to_string(&card).unwrap()).unwrap();
    let err = Forecaster::load(dir.path(), &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("shape"), "{err}");
    // and a card whose features disagree with its network
    card.arch.hidden = vec![12];
    card.features.push("extra".into());
    std::fs::write(&p, serde_json::to_string(&card).unwrap()).unwrap();
    let err = Forecaster::load(dir.path(), &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::Integrity(_)), "{err}");
}

#[test]
fn registry_publishes_immutable_versions_and_promotes_atomically() {
    let staged = tempfile::tempdir().unwrap();
    trained_model(staged.path());
    let reg = tempfile::tempdir().unwrap();
    let r = reg.path();
    assert!(registry::current_version_dir(r, "pump").is_err());
    let v1 = registry::publish(r, "pump", staged.path()).unwrap();
    let v2 = registry::publish(r, "pump", staged.path()).unwrap();
    assert_eq!((v1.as_str(), v2.as_str()), ("v0001", "v0002"));
    assert_eq!(registry::versions(r, "pump").unwrap(), ["v0001", "v0002"]);
    let card = artifact::read_card(&r.join("pump").join(&v2)).unwrap();
    assert_eq!(
        (card.name.as_str(), card.version.as_str()),
        ("pump", "v0002")
    );
    registry::promote(r, "pump", &v1, "first").unwrap();
    assert_eq!(
        registry::current_version_dir(r, "pump").unwrap(),
        r.join("pump/v0001")
    );
    registry::promote(r, "pump", &v2, "second").unwrap();
    assert_eq!(
        registry::current_version(r, "pump").unwrap().as_deref(),
        Some("v0002")
    );
    Forecaster::load(
        &registry::current_version_dir(r, "pump").unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    assert!(registry::promote(r, "pump", "v0009", "x").is_err());
    assert!(registry::promote(r, "pump", "../x", "x").is_err());
    // no staging leftovers beside the versions
    let names: Vec<String> = std::fs::read_dir(r.join("pump"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn members_read_the_newest_rows_their_card_gives_them() {
    let history = common::fleet(8, 3);
    let mut cfg = common::small_config(1);
    cfg.train.ensemble = 2;
    cfg.model.member_windows = vec![10, 4];
    let dir = tempfile::tempdir().unwrap();
    let trained = pipeline::train_model(&history, &cfg, &Device::Cpu, &mut |_, _| {}).unwrap();
    let card = trained.save(dir.path()).unwrap();
    assert_eq!(card.member_windows, [10, 4]);
    let f = Forecaster::load(dir.path(), &Device::Cpu).unwrap();
    let row = |wear: f32| {
        let mut scaled = vec![0.0; 2];
        f.scale_row(&[wear, 60.0], &mut scaled);
        scaled
    };
    // Two windows that differ only in their oldest six rows, and a third that differs in its
    // newest row.
    let older = |wear: f32| (0..6).flat_map(move |_| row(wear)).collect::<Vec<_>>();
    let newest: Vec<f32> = (0..4).flat_map(|_| row(20.0)).collect();
    let windows = [older(5.0), newest.clone(), older(15.0), newest.clone()].concat();
    let both = f.predict(&windows, 2).unwrap();
    assert_ne!(
        both[0].days, both[1].days,
        "the whole-window member sees the older rows"
    );

    // The same model with every member reading the last four rows cannot tell them apart.
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(artifact::CARD_FILE)).unwrap())
            .unwrap();
    card["member_windows"] = serde_json::json!([4, 4]);
    std::fs::write(dir.path().join(artifact::CARD_FILE), card.to_string()).unwrap();
    let tails = Forecaster::load(dir.path(), &Device::Cpu).unwrap();
    let same = tails.predict(&windows, 2).unwrap();
    assert_eq!(same[0].days, same[1].days);

    card["member_windows"] = serde_json::json!([4]);
    std::fs::write(dir.path().join(artifact::CARD_FILE), card.to_string()).unwrap();
    let err = Forecaster::load(dir.path(), &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("one per member"), "{err}");
}
