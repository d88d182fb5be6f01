//! A small synthetic fleet whose sensors reveal the days left, for tests that train.

use maintcast_models::config::Config;
use maintcast_models::history::{DAY_MS, History, MachineHistory};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `n` machines run to a failure after 40..80 daily rows; `wear` rises towards the failure, `temp`
/// is noise, `flat` never changes (and must be dropped).
pub fn fleet(n: usize, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let machines = (0..n)
        .map(|k| {
            let life = rng.random_range(40..80usize);
            let mut values = Vec::with_capacity(life * 3);
            for r in 0..life {
                let left = (life - 1 - r) as f32;
                values.push(10.0 - 0.1 * left + rng.random_range(-0.3..0.3));
                values.push(60.0 + rng.random_range(-2.0..2.0));
                values.push(1.0);
            }
            MachineHistory {
                machine_id: format!("m{k:02}"),
                ts: (0..life as i64)
                    .map(|d| 1_700_000_000_000 + d * DAY_MS)
                    .collect(),
                sensors: vec!["wear".into(), "temp".into(), "flat".into()],
                values,
                events: vec![1_700_000_000_000 + (life as i64 - 1) * DAY_MS],
                ..Default::default()
            }
        })
        .collect();
    History { machines }
}

pub fn small_config(epochs: usize) -> Config {
    Config::from_toml(&format!(
        "[data]\nwindow = 10\ncap = 30.0\nval_fraction = 0.25\n\
         [model]\nhidden = [12]\ndropout = 0.0\n\
         [train]\nepochs = {epochs}\nbatch_size = 32\nlr = 0.01\npatience = 50\n"
    ))
    .unwrap()
}
