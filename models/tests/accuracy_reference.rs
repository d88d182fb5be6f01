//! Realized accuracy against NumPy: `reference/gen_accuracy.py` scores random forecasts (two caps,
//! both roles, exact band and interval boundaries, forecasts outside the machine's life) on its
//! own; every tally here must match it.

use std::collections::BTreeMap;

use maintcast_models::accuracy::{Band, EventScore, Key, PastForecast, Role};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    event_ms: i64,
    since_ms: Option<i64>,
    caps: BTreeMap<String, f64>,
    forecasts: Vec<F>,
    expected: Vec<Expected>,
}

#[derive(Deserialize)]
struct F {
    ts_ms: i64,
    version: String,
    role: String,
    days: f64,
    p10: f64,
    p90: f64,
}

#[derive(Deserialize)]
struct Expected {
    version: String,
    role: String,
    band: String,
    n: u64,
    error_sum: f64,
    abs_error_sum: f64,
    covered: u64,
    mae: f64,
    bias: f64,
    coverage: f64,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

#[test]
fn tallies_match_numpy() {
    let r: Reference = serde_json::from_str(include_str!("reference/accuracy.json")).unwrap();
    assert_eq!(r.cases.len(), 3);
    for c in &r.cases {
        let mut e = EventScore::new(c.since_ms, c.event_ms);
        for f in &c.forecasts {
            let pf = PastForecast {
                ts_ms: f.ts_ms,
                model: "m".into(),
                version: f.version.clone(),
                role: Role::parse(&f.role).unwrap(),
                days: f.days,
                p10: f.p10,
                p90: f.p90,
            };
            e.add(&pf, c.caps[&f.version]);
        }
        assert_eq!(
            e.tallies.len(),
            c.expected.len(),
            "{}: keys {:?}",
            c.name,
            e.tallies.keys().collect::<Vec<_>>()
        );
        for x in &c.expected {
            let key = Key {
                model: "m".into(),
                version: x.version.clone(),
                role: Role::parse(&x.role).unwrap(),
                band: Band::parse(&x.band).unwrap(),
            };
            let t = e
                .tallies
                .get(&key)
                .unwrap_or_else(|| panic!("{}: no {key:?}", c.name));
            let what = format!("{} {key:?}: {t:?}", c.name);
            assert_eq!((t.n, t.covered), (x.n, x.covered), "{what}");
            assert!(close(t.error_sum, x.error_sum), "{what}");
            assert!(close(t.abs_error_sum, x.abs_error_sum), "{what}");
            assert!(close(t.mae().unwrap(), x.mae), "{what}");
            assert!(close(t.bias().unwrap(), x.bias), "{what}");
            assert!(close(t.coverage().unwrap(), x.coverage), "{what}");
        }
    }
}
