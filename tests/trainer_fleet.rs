//! A small synthetic fleet for the trainer tests: each machine wears out over runs of 30-60 days
//! (one row per 6 hours), a maintenance event ends each run. `wear` rises towards the event, so a
//! model can learn days-to-maintenance from it; `noise` carries nothing.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};

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
        let mut t = String::from("machine_id,ts,wear,noise\n");
        for r in &self.rows {
            t.push_str(&format!(
                "{},{},{},{}\n",
                r.machine, r.ts_ms, r.wear, r.noise
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
