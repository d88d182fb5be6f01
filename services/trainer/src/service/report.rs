//! What one round did: one line in the log, and the challenger's card keeps it.

use serde::Serialize;

use super::config::Outcome;
use crate::realized::RealizedReport;

/// What one round did; logged as one line and kept in the challenger's card.
#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    pub run_id: String,
    pub outcome: Outcome,
    pub reason: String,
    pub champion: Option<String>,
    pub challenger: Option<String>,
    pub challenger_mae: Option<f64>,
    pub champion_mae: Option<f64>,
    pub eval_windows: usize,
    pub machines: usize,
    pub rows: usize,
    pub labelled_rows: usize,
    pub new_labelled_rows: usize,
    pub train_s: f64,
    pub realized: Option<RealizedReport>,
}

impl RoundReport {
    /// The one line a person reads per round.
    pub fn line(&self) -> String {
        let mae = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.2}"));
        let mut s = match self.outcome {
            Outcome::Skipped => format!("round {}: skipped: {}", self.run_id, self.reason),
            _ => format!(
                "round {}: trained {} on {} machines, {} rows ({} labelled, {} new) in {:.1}s; \
                 held-out MAE challenger {} vs champion {} ({} windows): {}",
                self.run_id,
                self.challenger.as_deref().unwrap_or("-"),
                self.machines,
                self.rows,
                self.labelled_rows,
                self.new_labelled_rows,
                self.train_s,
                mae(self.challenger_mae),
                mae(self.champion_mae),
                self.eval_windows,
                self.reason
            ),
        };
        if let Some(r) = &self.realized {
            s.push_str(&format!("; {}", r.summary()));
        }
        s
    }
}
