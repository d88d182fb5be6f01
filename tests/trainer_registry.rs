//! The registry commands (`maintcast models list | show | promote | rollback`) and crash safety:
//! killing a process while it writes versions never leaves the registry unloadable or CURRENT
//! pointing at something incomplete.

use maintcast_e2e::fleet;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use maintcast_models::registry as reg;
use maintcast_trainer::registry;

fn maintcast(args: &[&str]) -> Output {
    Command::new(fleet::maintcast_bin())
        .args(args)
        .env_remove("MAINTCAST_INFLUX_URL")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A registry with one trained version, v0001, serving; returns the data directory.
fn trained_registry(root: &Path) -> std::path::PathBuf {
    let data = fleet::fleet("reg", 6, 2, 0, 3).write_csv(&root.join("data"));
    std::fs::write(root.join("tiny.toml"), fleet::TINY_RECIPE).unwrap();
    let r = root.join("registry");
    ok(&maintcast(&[
        "train",
        "--format",
        "csv",
        "--data",
        data.to_str().unwrap(),
        "--config",
        root.join("tiny.toml").to_str().unwrap(),
        "--registry",
        r.to_str().unwrap(),
        "--name",
        "m",
    ]));
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0001")
    );
    data
}

/// Every version loads completely and CURRENT names one of them.
fn assert_registry_valid(r: &Path) {
    let any_layout = reg::Servable {
        allow_layout_change: true,
    };
    for v in reg::versions(r, "m").unwrap() {
        reg::check_servable(r, "m", &v, &any_layout)
            .unwrap_or_else(|e| panic!("{v} does not load: {e:#}"));
    }
    let dir = reg::current_version_dir(r, "m").unwrap();
    maintcast_models::Forecaster::load(&dir, &candle_core::Device::Cpu).unwrap();
}

#[test]
fn list_show_promote_rollback() {
    let root = tempfile::tempdir().unwrap();
    trained_registry(root.path());
    let r = root.path().join("registry");
    // a second version, published next to the first (as a trainer round that did not win would)
    let staged = root.path().join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(r.join("m/v0001").join(f), staged.join(f)).unwrap();
    }
    let mut card = maintcast_models::artifact::read_card(&staged).unwrap();
    card.parent_version = Some("v0001".into());
    std::fs::write(
        staged.join("model.json"),
        serde_json::to_string(&card).unwrap(),
    )
    .unwrap();
    assert_eq!(reg::publish(&r, "m", &staged).unwrap(), "v0002");
    let rs = r.to_str().unwrap();
    let base = ["models", "--registry", rs, "--name", "m"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str]| {
        let a = with(extra);
        maintcast(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let list = ok(&run(&["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].starts_with("* v0001"), "{list}");
    assert!(
        lines[2].starts_with("  v0002") && lines[2].contains("v0001"),
        "{list}"
    );

    let show: serde_json::Value = serde_json::from_str(&ok(&run(&["show", "v0002"]))).unwrap();
    assert_eq!(show["lineage"], serde_json::json!(["v0002", "v0001"]));
    assert_eq!(show["current"], false);
    assert!(
        show["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "wear")
    );

    assert!(ok(&run(&["promote", "v0002"])).contains("v0002 now serves (was v0001)"));
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0002")
    );
    let show: serde_json::Value = serde_json::from_str(&ok(&run(&["show"]))).unwrap();
    assert_eq!(show["version"], "v0002");
    assert_eq!(show["promotions"][0]["action"], "promote");

    // a missing version and a corrupt one are refused, and CURRENT stays
    let o = run(&["promote", "v0009"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such version"),
        "{o:?}"
    );
    std::fs::create_dir_all(r.join("m/v0003")).unwrap();
    std::fs::copy(r.join("m/v0001/model.json"), r.join("m/v0003/model.json")).unwrap();
    std::fs::write(r.join("m/v0003/model.safetensors"), b"truncated").unwrap();
    let o = run(&["promote", "v0003"]);
    assert!(!o.status.success(), "a corrupt version was promoted");
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0002")
    );
    assert!(ok(&run(&["list"])).contains("v0003"));
    std::fs::remove_dir_all(r.join("m/v0003")).unwrap();

    assert!(ok(&run(&["rollback"])).contains("rolled back from v0002 to v0001"));
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0001")
    );
    // v0001 was the first to serve: nothing before it
    let o = run(&["rollback"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to roll back"),
        "{o:?}"
    );

    let json = ok(&run(&["--json", "list"]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["current"], true);
    assert!(rows[0]["val_mae"].as_f64().unwrap() > 0.0);
}

/// `maintcast train --promote` goes through the one promote (logged, serving check) and says
/// that it skips the champion/challenger gate; the first version's entry says why it serves.
#[test]
fn train_promote_says_it_bypasses_the_gate() {
    let root = tempfile::tempdir().unwrap();
    let data = trained_registry(root.path());
    let r = root.path().join("registry");
    let o = maintcast(&[
        "train",
        "--format",
        "csv",
        "--data",
        data.to_str().unwrap(),
        "--config",
        root.path().join("tiny.toml").to_str().unwrap(),
        "--registry",
        r.to_str().unwrap(),
        "--name",
        "m",
        "--promote",
    ]);
    ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("without the champion/challenger gate"),
        "{stderr}"
    );
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0002")
    );
    let log = reg::read_log(&r, "m").unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].reason, "first version of the model");
    assert!(
        log[1].reason.contains("gate bypassed") && log[1].from.as_deref() == Some("v0001"),
        "{log:?}"
    );
}

/// `maintcast models promote` refuses a version whose window differs from the serving one's,
/// saying how to do it on purpose.
#[test]
fn models_promote_refuses_a_layout_change_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    trained_registry(root.path());
    let r = root.path().join("registry");
    let staged = root.path().join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::copy(
        r.join("m/v0001/model.safetensors"),
        staged.join("model.safetensors"),
    )
    .unwrap();
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("m/v0001/model.json")).unwrap())
            .unwrap();
    card["window"] = serde_json::json!(card["window"].as_u64().unwrap() + 1);
    std::fs::write(staged.join("model.json"), card.to_string()).unwrap();
    assert_eq!(reg::publish(&r, "m", &staged).unwrap(), "v0002");
    let promote = |extra: &[&str]| {
        let mut args = vec![
            "models",
            "--registry",
            r.to_str().unwrap(),
            "--name",
            "m",
            "promote",
            "v0002",
        ];
        args.extend_from_slice(extra);
        maintcast(&args)
    };
    let o = promote(&[]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("window") && stderr.contains("--allow-layout-change"),
        "{stderr}"
    );
    assert_eq!(
        reg::current_version(&r, "m").unwrap().as_deref(),
        Some("v0001")
    );
    assert!(ok(&promote(&["--allow-layout-change"])).contains("v0002 now serves"));
}

/// Rollback undoes promotions in order (a stack), not back and forth between two versions.
#[test]
fn rollback_pops_promotions_in_order() {
    let root = tempfile::tempdir().unwrap();
    trained_registry(root.path());
    let r = root.path().join("registry");
    for _ in 0..2 {
        reg::publish(&r, "m", &r.join("m/v0001")).unwrap();
    }
    reg::promote(&r, "m", "v0002", "test").unwrap();
    reg::promote(&r, "m", "v0003", "test").unwrap();
    assert_eq!(
        reg::rollback(&r, "m").unwrap(),
        ("v0003".into(), "v0002".into())
    );
    assert_eq!(
        reg::rollback(&r, "m").unwrap(),
        ("v0002".into(), "v0001".into())
    );
    // a torn last line (a crash mid-append) is ignored
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(r.join("m/PROMOTIONS"))
        .unwrap();
    f.write_all(b"{\"at\":\"2026").unwrap();
    assert_eq!(reg::serving_stack(&r, "m").unwrap(), ["v0001"]);
}

/// Child mode of `publisher_killed_mid_write_leaves_the_registry_valid`: publish and promote in a
/// tight loop until killed.
#[test]
fn publisher_child() {
    let Ok(r) = std::env::var("MAINTCAST_TEST_PUBLISHER_REGISTRY") else {
        return;
    };
    let r = Path::new(&r);
    let source = r.join("m/v0001");
    loop {
        let v = reg::publish(r, "m", &source).unwrap();
        reg::promote(r, "m", &v, "crash test").unwrap();
    }
}

#[test]
fn publisher_killed_mid_write_leaves_the_registry_valid() {
    let root = tempfile::tempdir().unwrap();
    trained_registry(root.path());
    let r = root.path().join("registry");
    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    for k in 0..12u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "publisher_child", "--nocapture"])
            .env("MAINTCAST_TEST_PUBLISHER_REGISTRY", &r)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Staggered delays land the SIGKILL in different phases of publish and promote.
        std::thread::sleep(Duration::from_millis(40 + 17 * k));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        assert_registry_valid(&r);
    }
    let n = reg::versions(&r, "m").unwrap().len();
    assert!(
        n > kills,
        "the child published only {n} versions in {kills} lives"
    );
    // leftovers of killed publishers are hidden from readers and swept later
    registry::remove_stale_staging(&r, "m", Duration::ZERO);
    let hidden = std::fs::read_dir(r.join("m"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .count();
    assert_eq!(hidden, 0);
}

/// `maintcast train --once` killed at several points of its round: CURRENT never changes (the
/// margin makes promotion impossible) and every version loads.
#[test]
fn trainer_killed_mid_round_leaves_current_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let data = trained_registry(root.path());
    let r = root.path().join("registry");
    let cfg = root.path().join("tiny.toml");
    let args = [
        "train",
        "--once",
        "--format",
        "csv",
        "--data",
        data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--registry",
        r.to_str().unwrap(),
        "--name",
        "m",
        "--margin",
        "0.999",
        "--min-new-rows",
        "0",
    ];
    let round = |kill_after: Option<Duration>| {
        let started = Instant::now();
        let mut child = Command::new(fleet::maintcast_bin())
            .args(args)
            .env_remove("MAINTCAST_INFLUX_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut killed = false;
        if let Some(after) = kill_after {
            std::thread::sleep(after);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert_eq!(
            reg::current_version(&r, "m").unwrap().as_deref(),
            Some("v0001")
        );
        assert_registry_valid(&r);
        if !killed {
            // the round ran to its end: trained, published, not promoted
            assert_eq!(status.code(), Some(10), "after {:?}", started.elapsed());
        }
        (killed, started.elapsed())
    };
    // Kill times are fractions of a measured round, not fixed delays: a round takes anywhere
    // from a fraction of a second to several on a loaded machine, and fixed delays either miss
    // it entirely or never reach publish.
    let (_, full) = round(None);
    let mut kills = 0;
    for k in 1..10 {
        let (killed, _) = round(Some(full * k / 10));
        kills += usize::from(killed);
    }
    eprintln!("a full round took {full:?}; {kills} of 9 kills landed inside one");
    assert!(
        kills >= 2,
        "the round ended before the kills could test anything"
    );
}
