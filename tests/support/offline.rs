//! The offline forecaster: what the ingest service should forecast for a stream of telemetry and
//! maintenance events, computed from whole histories by the models crate's data path
//! (`maintcast_models::prep`, `dataset::current_window`), the way training and evaluation prepare
//! windows, not by the service's incremental window store.

use maintcast_models::dataset;
use maintcast_models::history::MachineHistory;
use maintcast_models::prep::{self, Arrival, FeatureIndex};
use maintcast_models::{Forecaster, ModelCard};
use maintcast_proto::Telemetry;

/// One machine's history as the service has received it so far.
pub struct OfflineMachine {
    pub history: MachineHistory,
    index: FeatureIndex,
    scratch: Vec<f32>,
}

impl OfflineMachine {
    /// A machine whose history is kept in `features` order.
    pub fn new(machine_id: &str, features: &[String]) -> Self {
        OfflineMachine {
            history: MachineHistory {
                machine_id: machine_id.into(),
                sensors: features.to_vec(),
                ..Default::default()
            },
            index: FeatureIndex::new(features),
            scratch: vec![0.0; features.len()],
        }
    }

    /// Offers a telemetry row through the arrival rule.
    pub fn row(&mut self, t: &Telemetry) -> Arrival {
        self.index.read(
            t.sensors.iter().map(|(n, v)| (n.as_str(), *v)),
            &mut self.scratch,
        );
        self.history.offer_row(t.ts_ms, &self.scratch)
    }

    /// Offers a maintenance event; false when it is stale.
    pub fn event(&mut self, ts_ms: i64) -> bool {
        self.history.offer_event(ts_ms)
    }

    /// Rows since the last maintenance.
    pub fn rows_since_reset(&self) -> usize {
        let (a, b) = dataset::current_segment(&self.history);
        b - a
    }

    /// Whether the newest row gets a forecast: from `min_rows` rows since the last maintenance
    /// on, every `stride`-th row.
    pub fn due(&self, min_rows: usize, stride: usize) -> bool {
        let (n, min) = (self.rows_since_reset(), min_rows.max(1));
        n >= min && (n - min).is_multiple_of(stride.max(1))
    }

    /// The newest window in `card`'s feature order, filled and padded but not scaled, with its
    /// number of real rows; `None` below `card.min_rows`.
    pub fn window(&self, card: &ModelCard) -> Option<(Vec<f32>, usize)> {
        dataset::current_window(
            &self.history,
            &card.features,
            &prep::neutral(&card.scaler),
            card.window,
            card.min_rows,
        )
        .expect("the history holds the model's features")
    }
}

/// The forecast (days) `f` makes for one filled window in its feature order.
pub fn forecast(f: &Forecaster, window: &[f32]) -> f32 {
    let mut scaled = vec![0.0; window.len()];
    prep::scale_window(&f.card().scaler, &prep::Columns::Same, window, &mut scaled);
    f.predict(&scaled, 1).expect("offline forecast")[0].days
}
