//! Experiment sweeps: a grid of training settings, each trained with early stopping through
//! `maintcast_models::pipeline::train_model`, each run logged to TensorBoard, ranked in a leaderboard.
//!
//! A sweep directory holds `runs/<run-id>/` per run (the id is a hash of the run's settings and the
//! data source), with its event file, the staged model and `result.json`. `result.json` is written
//! last, by rename, so a run either finished or did not: interrupting a sweep keeps finished runs,
//! and running it again skips them.
//!
//! Layers, each depending only on those before it: `grid` (settings and run ids) -> `result` (a
//! finished run) -> `leaderboard`, `chart` (reports of results) -> `run` (training, then the
//! reports) -> `promote` (the best run into the registry).

pub mod chart;
pub mod grid;
pub mod leaderboard;
pub mod promote;
pub mod result;
pub mod run;

pub use grid::{Axes, Grid, PairAxis, RunSpec, data_digest, label, run_id, sample, sample_paired};
pub use promote::{Promotion, promote_best};
pub use result::{EpochPoint, MODEL_DIR, RESULT_FILE, RunResult, read_result, run_dir};
pub use run::{SweepOptions, SweepOutcome, run, sweep_id};
