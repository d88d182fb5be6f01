//! Writes a simulated history as CSV: `cargo run -p maintcast-simulator --example dump -- DIR [DAYS] [MACHINES] [SEED]`.
use maintcast_simulator::{Fleet, FleetConfig, output};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let dir = a.get(1).map(String::as_str).unwrap_or("/tmp/sim");
    let days: f64 = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(120.0);
    let machines: usize = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let seed: u64 = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(42);
    let cfg = FleetConfig { machines, seed, ..FleetConfig::default() };
    let steps = cfg.steps_for_days(days);
    let mut fleet = Fleet::new(cfg)?;
    let h = fleet.run(steps);
    output::write_csv(&h, dir.as_ref())?;
    eprintln!("{} rows, {} events", h.readings.len(), h.events.len());
    Ok(())
}
