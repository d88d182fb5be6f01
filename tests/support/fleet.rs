//! A small synthetic fleet for the trainer tests: each machine wears out over runs of 30-60 days
//! (one row per 6 hours), a maintenance event ends each run. `wear` rises towards the event, so a
//! model can learn days-to-maintenance from it; `noise` carries nothing. Also the ways the tests
//! run `maintcast train` on it and read what it published.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::InfluxEnv;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

pub struct Row {
    pub machine: String,
    pub ts_ms: i64,
    pub wear: f64,
    pub noise: f64,
}

pub struct Fleet {
    pub rows: Vec<Row>,
    pub events: Vec<(String, i64)>,
}

/// `machines` machines with `runs` runs each, starting at `t0_ms`; deterministic from `seed`.
pub fn fleet(prefix: &str, machines: usize, runs: usize, t0_ms: i64, seed: u64) -> Fleet {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut rand = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Fleet {
        rows: Vec::new(),
        events: Vec::new(),
    };
    for m in 0..machines {
        let id = format!("{prefix}-{m:02}");
        let mut t = t0_ms;
        for _ in 0..runs {
            let life_days = 30.0 + 30.0 * rand();
            let steps = (life_days * 4.0) as i64;
            for k in 1..=steps {
                let frac = k as f64 / steps as f64;
                out.rows.push(Row {
                    machine: id.clone(),
                    ts_ms: t + k * 6 * HOUR_MS,
                    wear: 10.0 + 40.0 * frac * frac + 0.5 * (rand() - 0.5),
                    noise: rand(),
                });
            }
            t += steps * 6 * HOUR_MS;
            out.events.push((id.clone(), t));
        }
    }
    out
}

impl Fleet {
    /// `telemetry.csv` and `events.csv` in `dir`, as `maintcast train --format csv` reads them.
    pub fn write_csv(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        // Sensors in name order, as the InfluxDB history orders them: a model trained from either
        // source then has the same feature order, which the ingest service's hot reload requires.
        let mut t = String::from("machine_id,ts,noise,wear\n");
        for r in &self.rows {
            t.push_str(&format!(
                "{},{},{},{}\n",
                r.machine, r.ts_ms, r.noise, r.wear
            ));
        }
        std::fs::write(dir.join("telemetry.csv"), t).unwrap();
        let mut e = String::from("machine_id,ts,kind,note\n");
        for (m, ts) in &self.events {
            e.push_str(&format!("{m},{ts},repair,\n"));
        }
        std::fs::write(dir.join("events.csv"), e).unwrap();
        dir.to_path_buf()
    }
}

/// A recipe small enough for a test on two shared cores.
pub const TINY_RECIPE: &str = r#"
[data]
window = 12
step = 2
cap = 60.0
val_fraction = 0.25
[model]
hidden = [16]
dropout = 0.0
[train]
epochs = 40
batch_size = 32
lr = 0.01
patience = 8
seed = 1
"#;

/// The `maintcast` binary beside this test binary (`cargo build -p maintcast` builds it).
pub fn maintcast_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("maintcast");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p maintcast` first",
        bin.display()
    );
    bin
}

/// `maintcast train --once --format influx` for the machines tagged `machine_type`, with the
/// recipe `root/tiny.toml`, the registry `root/registry` and TensorBoard files under `root/tb`.
pub fn train_once(
    env: &InfluxEnv,
    root: &Path,
    name: &str,
    machine_type: &str,
    extra: &[&str],
) -> Output {
    let r = root.join("registry");
    let cfg = root.join("tiny.toml");
    let tb = root.join("tb");
    let mut args = vec![
        "train",
        "--once",
        "--format",
        "influx",
        "--machine-type",
        machine_type,
        "--config",
        cfg.to_str().unwrap(),
        "--registry",
        r.to_str().unwrap(),
        "--name",
        name,
        "--tensorboard",
        tb.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(maintcast_bin())
        .args(&args)
        .env("MAINTCAST_INFLUX_URL", &env.url)
        .env("MAINTCAST_INFLUX_ORG", &env.org)
        .env("MAINTCAST_INFLUX_BUCKET", &env.bucket)
        .env("MAINTCAST_INFLUX_TOKEN", &env.token)
        .output()
        .unwrap();
    eprintln!(
        "--- train {extra:?}: exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The card of `name`/`version` in `root/registry`.
pub fn card(root: &Path, name: &str, version: &str) -> serde_json::Value {
    let p = root
        .join("registry")
        .join(name)
        .join(version)
        .join("model.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
