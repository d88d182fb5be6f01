//! What one prediction becomes: the window's input quality judged against the model's training
//! statistics, the interval widened when that quality is low, and the `Forecast` record that the
//! sink writes and alerts are raised from. Shared by the service's inference task and the demo.

use maintcast_proto::Forecast;

use crate::model::{Model, Prediction};
use crate::pipeline::ForecastRequest;
use crate::quality::{Quality, QualityConfig};

/// The model's training statistics in the windows' feature order (the model may list the same
/// features in another order); empty when its card has none.
pub fn window_stats(
    window_features: &[String],
    model: &dyn Model,
) -> Vec<maintcast_models::artifact::FeatureStats> {
    let stats = model.feature_stats();
    if stats.len() != model.features().len() {
        return Vec::new();
    }
    window_features
        .iter()
        .map_while(|name| {
            let i = model.features().iter().position(|f| f == name)?;
            Some(stats[i].clone())
        })
        .collect()
}

/// A model output that is not a number: which window it was for.
#[derive(Debug)]
pub struct NonFinite {
    pub machine_id: String,
    pub ts_ms: i64,
}

/// The forecast for a request (the service's and the demo's), with its input quality (a low-confidence forecast gets a wider
/// interval), or which window it was when the model's output is not finite.
pub fn forecast(
    model: &dyn Model,
    r: &ForecastRequest,
    p: Prediction,
    (q, features): (&Quality, &[String]),
    cfg: &QualityConfig,
) -> Result<Forecast, NonFinite> {
    if !(p.days.is_finite() && p.p10.is_finite() && p.p90.is_finite()) {
        return Err(NonFinite {
            machine_id: r.machine_id.clone(),
            ts_ms: r.ts_ms,
        });
    }
    let days = p.days as f64;
    let (p10, p90) = q.widen(cfg, p.days, p.p10, p.p90);
    let low_confidence = q.low_confidence(cfg);
    Ok(Forecast {
        machine_id: r.machine_id.clone(),
        ts_ms: r.ts_ms,
        model: model.name().to_string(),
        model_version: model.version().to_string(),
        days_to_maintenance: days,
        due_at: maintcast_common::points::due_at(r.ts_ms, days),
        days_p10: p10 as f64,
        days_p90: p90 as f64,
        window_rows: r.window_rows as u32,
        quality_flags: q.describe(features),
        machine_type: r.machine_type.clone(),
        site: r.site.clone(),
        quality_score: f64::from(q.score),
        low_confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Model for Fixed {
        fn name(&self) -> &str {
            "m"
        }
        fn version(&self) -> &str {
            "v1"
        }
        fn features(&self) -> &[String] {
            &[]
        }
        fn window(&self) -> usize {
            1
        }
        fn min_rows(&self) -> usize {
            1
        }
        fn neutral_raw(&self) -> Vec<f32> {
            vec![]
        }
        fn scale_row(&self, _: &[f32], _: &mut [f32]) {}
        fn predict(&self, _: &[f32], _: usize) -> anyhow::Result<Vec<Prediction>> {
            unreachable!()
        }
    }

    fn request() -> ForecastRequest {
        ForecastRequest {
            machine_id: "m1".into(),
            ts_ms: 86_400_000,
            window_rows: 1,
            raw: vec![],
            evidence: Default::default(),
            machine_type: None,
            site: None,
            epoch: 0,
        }
    }

    #[test]
    fn non_finite_output_is_never_a_forecast() {
        let cfg = QualityConfig::default();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for p in [
                Prediction {
                    days: bad,
                    p10: 1.0,
                    p90: 2.0,
                },
                Prediction {
                    days: 1.5,
                    p10: bad,
                    p90: 2.0,
                },
                Prediction {
                    days: 1.5,
                    p10: 1.0,
                    p90: bad,
                },
            ] {
                assert!(
                    forecast(&Fixed, &request(), p, (&clean(), &[]), &cfg).is_err(),
                    "{p:?}"
                );
            }
        }
        let p = Prediction {
            days: 1.5,
            p10: 1.0,
            p90: 2.0,
        };
        let f = forecast(&Fixed, &request(), p, (&clean(), &[]), &cfg).unwrap();
        assert_eq!(f.due_at, 86_400 + 129_600);
        assert_eq!(f.model_version, "v1");
        assert_eq!((f.quality_score, f.low_confidence), (1.0, false));
        assert!(f.quality_flags.is_empty());
    }

    fn clean() -> Quality {
        Quality {
            flags: vec![0, 0],
            score: 1.0,
        }
    }

    /// One stuck sensor of two: score 0.5, low confidence, both half-widths doubled, and the
    /// flag named after the window's sensor.
    #[test]
    fn poor_inputs_widen_the_interval_and_say_why() {
        let cfg = QualityConfig::default();
        let q = Quality {
            flags: vec![0, crate::quality::flag::STUCK],
            score: 0.5,
        };
        let names = ["vibration".to_string(), "temp".to_string()];
        let p = Prediction {
            days: 5.0,
            p10: 4.0,
            p90: 7.0,
        };
        let f = forecast(&Fixed, &request(), p, (&q, &names), &cfg).unwrap();
        assert_eq!((f.days_p10, f.days_p90), (3.0, 9.0));
        assert_eq!(f.days_to_maintenance, 5.0);
        assert_eq!((f.quality_score, f.low_confidence), (0.5, true));
        assert_eq!(f.quality_flags, "temp:stuck");
    }
}
