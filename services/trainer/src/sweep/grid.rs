//! The grid: a TOML file of a base training config and axes, expanded into runs with stable ids,
//! and sampled (plainly, or in matched pairs along one axis).

use std::path::Path;

use anyhow::{Context, bail};
use maintcast_models::config::Config;
use maintcast_models::optim::{LossKind, OptimizerKind, Schedule};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A grid file.
///
/// ```toml
/// name = "seed-study"
/// seed = 0          # seeds `--sample`; training seeds come from base.train.seed
/// [base]            # a full training config (models/configs/*.toml); every run starts from it
/// data = { window = 30, cap = 125.0 }
/// [grid]            # each axis a list; absent axes keep the base value
/// layers = [1, 2]   # with `units`: hidden = [units; layers]
/// units = [32, 64]
/// optimizer = ["adam", "nadam"]
/// schedule = [{ kind = "constant" }, { kind = "exponential", gamma = 0.95 }]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub base: Config,
    #[serde(default)]
    pub grid: Axes,
}

fn default_name() -> String {
    "sweep".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    pub layers: Option<Vec<usize>>,
    pub units: Option<Vec<usize>>,
    pub dropout: Option<Vec<f32>>,
    pub batch_size: Option<Vec<usize>>,
    pub optimizer: Option<Vec<OptimizerKind>>,
    pub lr: Option<Vec<f64>>,
    pub schedule: Option<Vec<Schedule>>,
    pub loss: Option<Vec<LossKind>>,
    pub window: Option<Vec<usize>>,
    pub step: Option<Vec<usize>>,
}

/// One combination of the grid.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub id: String,
    pub label: String,
    pub config: Config,
}

impl Grid {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let grid: Grid = toml::from_str(text)?;
        grid.base
            .validate()
            .context("[base] is not a valid training config")?;
        if grid.base.data.val_fraction <= 0.0 || grid.base.data.val_fraction.is_nan() {
            bail!("a sweep ranks runs by validation MAE: base.data.val_fraction must be above 0");
        }
        let a = &grid.grid;
        let empty = [
            ("layers", a.layers.as_ref().map(Vec::len)),
            ("units", a.units.as_ref().map(Vec::len)),
            ("dropout", a.dropout.as_ref().map(Vec::len)),
            ("batch_size", a.batch_size.as_ref().map(Vec::len)),
            ("optimizer", a.optimizer.as_ref().map(Vec::len)),
            ("lr", a.lr.as_ref().map(Vec::len)),
            ("schedule", a.schedule.as_ref().map(Vec::len)),
            ("loss", a.loss.as_ref().map(Vec::len)),
            ("window", a.window.as_ref().map(Vec::len)),
            ("step", a.step.as_ref().map(Vec::len)),
        ];
        if let Some((axis, _)) = empty.iter().find(|(_, n)| *n == Some(0)) {
            bail!("grid.{axis} is empty: leave it out to keep the base value");
        }
        Ok(grid)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("grid {}", path.display()))
    }

    /// Every combination, in a fixed order (the axes nest in field order, last fastest). `data_id`
    /// names the data source; it enters the run ids so another data set never reuses a run.
    pub fn expand(&self, data_id: &str) -> anyhow::Result<Vec<RunSpec>> {
        let b = &self.base;
        let a = &self.grid;
        let or = |v: &Option<Vec<usize>>, d: usize| v.clone().unwrap_or_else(|| vec![d]);
        let base_units = b.model.hidden[0];
        let uniform = b.model.hidden.iter().all(|&h| h == base_units);
        let hidden: Vec<Vec<usize>> = if a.layers.is_none() && a.units.is_none() {
            vec![b.model.hidden.clone()]
        } else {
            if !uniform && (a.layers.is_none() || a.units.is_none()) {
                bail!(
                    "grid.layers and grid.units go together when base.model.hidden ({:?}) is not uniform",
                    b.model.hidden
                );
            }
            let layers = or(&a.layers, b.model.hidden.len());
            let units = or(&a.units, base_units);
            if layers.contains(&0) || units.contains(&0) {
                bail!("grid.layers and grid.units must be at least 1");
            }
            layers
                .iter()
                .flat_map(|&l| units.iter().map(move |&u| vec![u; l]))
                .collect()
        };
        let dropout = a.dropout.clone().unwrap_or_else(|| vec![b.model.dropout]);
        let batch = or(&a.batch_size, b.train.batch_size);
        let opt = a
            .optimizer
            .clone()
            .unwrap_or_else(|| vec![b.train.optimizer.kind]);
        let lr = a.lr.clone().unwrap_or_else(|| vec![b.train.lr]);
        let sched = a
            .schedule
            .clone()
            .unwrap_or_else(|| vec![b.train.schedule.clone()]);
        let loss = a.loss.clone().unwrap_or_else(|| vec![b.train.loss]);
        let window = or(&a.window, b.data.window);
        let step = or(&a.step, b.data.step);

        let mut out: Vec<RunSpec> = Vec::new();
        for h in &hidden {
            for &d in &dropout {
                for &bs in &batch {
                    for &o in &opt {
                        for &r in &lr {
                            for s in &sched {
                                for &l in &loss {
                                    for &w in &window {
                                        for &st in &step {
                                            let mut c = b.clone();
                                            c.model.hidden = h.clone();
                                            c.model.dropout = d;
                                            c.train.batch_size = bs;
                                            c.train.optimizer.kind = o;
                                            c.train.lr = r;
                                            c.train.schedule = s.clone();
                                            c.train.loss = l;
                                            c.data.window = w;
                                            c.data.step = st;
                                            // A shorter window than the base's must still admit
                                            // its own full windows.
                                            c.data.min_rows = b.data.min_rows.map(|m| m.min(w));
                                            c.validate().with_context(|| {
                                                format!("grid combination {}", label(&c))
                                            })?;
                                            let id = run_id(&c, data_id);
                                            if !out.iter().any(|r| r.id == id) {
                                                out.push(RunSpec {
                                                    id,
                                                    label: label(&c),
                                                    config: c,
                                                });
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `n` distinct runs drawn with the grid's seed, kept in grid order so a larger sample of the same
/// seed is not a reshuffle of a smaller one's runs.
pub fn sample(runs: Vec<RunSpec>, n: usize, seed: u64) -> Vec<RunSpec> {
    if n >= runs.len() {
        return runs;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, runs.len(), n).into_vec();
    picked.sort_unstable();
    let mut keep = vec![false; runs.len()];
    for i in picked {
        keep[i] = true;
    }
    runs.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// An axis whose values a sample keeps together, so each drawn setting is trained with every value
/// of it: `--paired schedule` draws matched pairs with and without learning-rate decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairAxis {
    Schedule,
    Optimizer,
    BatchSize,
    Lr,
    Loss,
    Dropout,
}

impl PairAxis {
    /// The config with this axis set to a fixed value: runs that differ only on it share the key.
    pub fn key(self, c: &Config) -> String {
        let mut c = c.clone();
        match self {
            PairAxis::Schedule => c.train.schedule = Schedule::default(),
            PairAxis::Optimizer => c.train.optimizer.kind = OptimizerKind::default(),
            PairAxis::BatchSize => c.train.batch_size = 0,
            PairAxis::Lr => c.train.lr = 0.0,
            PairAxis::Loss => c.train.loss = LossKind::default(),
            PairAxis::Dropout => c.model.dropout = 0.0,
        }
        serde_json::to_string(&c).expect("a config serializes")
    }

    /// The axis's value in `c` as the run labels write it.
    pub fn value(self, c: &Config) -> String {
        match self {
            PairAxis::Schedule => schedule_label(&c.train.schedule),
            PairAxis::Optimizer => kebab(c.train.optimizer.kind),
            PairAxis::BatchSize => format!("bs{}", c.train.batch_size),
            PairAxis::Lr => format!("lr{}", c.train.lr),
            PairAxis::Loss => kebab(c.train.loss),
            PairAxis::Dropout => format!("do{}", c.model.dropout),
        }
    }

    pub const ALL: [PairAxis; 6] = [
        PairAxis::Schedule,
        PairAxis::Optimizer,
        PairAxis::BatchSize,
        PairAxis::Lr,
        PairAxis::Loss,
        PairAxis::Dropout,
    ];

    /// The name on the command line (`--paired batch-size`).
    pub fn flag(self) -> &'static str {
        match self {
            PairAxis::Schedule => "schedule",
            PairAxis::Optimizer => "optimizer",
            PairAxis::BatchSize => "batch-size",
            PairAxis::Lr => "lr",
            PairAxis::Loss => "loss",
            PairAxis::Dropout => "dropout",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PairAxis::Schedule => "schedule",
            PairAxis::Optimizer => "optimizer",
            PairAxis::BatchSize => "batch size",
            PairAxis::Lr => "learning rate",
            PairAxis::Loss => "loss",
            PairAxis::Dropout => "dropout",
        }
    }
}

impl std::str::FromStr for PairAxis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PairAxis::ALL
            .into_iter()
            .find(|a| a.flag() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PairAxis::ALL.iter().map(|a| a.flag()).collect();
                format!("unknown axis {s:?}: want one of {}", names.join(", "))
            })
    }
}

/// Like [`sample`], but draws `n` settings of every axis except `axis` and keeps each with all of
/// its values of `axis`, so the sample holds matched comparisons (up to `n` x the axis's length
/// runs).
pub fn sample_paired(runs: Vec<RunSpec>, n: usize, seed: u64, axis: PairAxis) -> Vec<RunSpec> {
    let keys: Vec<String> = runs.iter().map(|r| axis.key(&r.config)).collect();
    let mut groups: Vec<&str> = Vec::new();
    for k in &keys {
        if !groups.contains(&k.as_str()) {
            groups.push(k);
        }
    }
    if n >= groups.len() {
        return runs;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let picked: std::collections::HashSet<&str> =
        rand::seq::index::sample(&mut rng, groups.len(), n)
            .into_iter()
            .map(|i| groups[i])
            .collect();
    let keep: Vec<bool> = keys.iter().map(|k| picked.contains(k.as_str())).collect();
    runs.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

pub(crate) fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// A short hash of the contents of `paths`, to name a data source by what it holds.
pub fn data_digest(paths: &[&Path]) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// The settings hash that names a run's directory.
pub fn run_id(cfg: &Config, data_id: &str) -> String {
    let key = serde_json::json!({ "config": cfg, "data": data_id });
    short_hash(key.to_string().as_bytes())
}

/// A short human-readable name for a run's settings.
pub fn label(c: &Config) -> String {
    let hidden = c
        .model
        .hidden
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join("-");
    let opt = kebab(c.train.optimizer.kind);
    let sched = schedule_label(&c.train.schedule);
    let loss = kebab(c.train.loss);
    format!(
        "lstm{hidden} do{} {opt} bs{} lr{} {sched} {loss} w{}s{}",
        c.model.dropout, c.train.batch_size, c.train.lr, c.data.window, c.data.step
    )
}

fn schedule_label(s: &Schedule) -> String {
    match s {
        Schedule::Constant => "const".to_string(),
        Schedule::Step { every, gamma } => format!("step{every}x{gamma}"),
        Schedule::Exponential { gamma } => format!("exp{gamma}"),
        Schedule::Cosine { .. } => "cosine".to_string(),
        Schedule::Plateau { factor, .. } => format!("plateau{factor}"),
    }
}

/// A unit enum's serde name (`nadam`, `mse`).
fn kebab(v: impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_axes_parse_from_their_flag_names() {
        for a in PairAxis::ALL {
            assert_eq!(a.flag().parse::<PairAxis>().unwrap(), a);
        }
        let e = "batch_size".parse::<PairAxis>().unwrap_err();
        assert!(e.contains("batch-size"), "{e}");
    }
}
