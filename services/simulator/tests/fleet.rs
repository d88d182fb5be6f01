use std::collections::HashMap;

use maintcast_simulator::{
    ConfigError, EventKind, Fleet, FleetConfig, MachineType, SENSORS, SensorFaultConfig,
    SimHistory, output,
};

const DAY_MS: f64 = 86_400_000.0;

fn history(cfg: FleetConfig, days: f64) -> SimHistory {
    let steps = cfg.steps_for_days(days);
    Fleet::new(cfg).unwrap().run(steps)
}

fn sensor(name: &str) -> usize {
    SENSORS.iter().position(|s| *s == name).unwrap()
}

#[test]
fn same_seed_same_fleet_other_seed_other_fleet() {
    let cfg = FleetConfig {
        machines: 6,
        ..FleetConfig::default()
    };
    let a = history(cfg.clone(), 40.0);
    let b = history(cfg.clone(), 40.0);
    assert_eq!(a, b);
    let c = history(FleetConfig { seed: 7, ..cfg }, 40.0);
    assert_ne!(a.readings, c.readings);
}

#[test]
fn a_machine_does_not_depend_on_fleet_size_or_stepping() {
    let small = history(
        FleetConfig {
            machines: 3,
            ..FleetConfig::default()
        },
        30.0,
    );
    let cfg = FleetConfig {
        machines: 9,
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::new(cfg.clone()).unwrap();
    let mut stepped = Vec::new();
    for _ in 0..cfg.steps_for_days(30.0) {
        stepped.extend(fleet.step().readings);
    }
    assert_eq!(small.machines[..], fleet.machines()[..3]);
    let first3: Vec<_> = stepped.iter().filter(|r| r.machine < 3).cloned().collect();
    assert_eq!(small.readings, first3);
}

#[test]
fn truth_is_the_time_to_the_machines_next_event() {
    let h = history(
        FleetConfig {
            machines: 8,
            ..FleetConfig::default()
        },
        90.0,
    );
    let mut events: HashMap<u32, Vec<i64>> = HashMap::new();
    for e in &h.events {
        events.entry(e.machine).or_default().push(e.ts_ms);
    }
    let mut checked = 0;
    for r in &h.readings {
        let Some(next) = events
            .get(&r.machine)
            .and_then(|ev| ev.iter().find(|&&t| t >= r.ts_ms))
        else {
            continue;
        };
        let days = (*next - r.ts_ms) as f64 / DAY_MS;
        assert!(
            (r.truth.days_to_maintenance as f64 - days).abs() < 1e-3,
            "{r:?} next event {next}"
        );
        checked += 1;
    }
    assert!(
        checked > h.readings.len() / 2,
        "only {checked} rows had a following event"
    );
    // Cycles last weeks, not hours or years.
    let max = h
        .readings
        .iter()
        .map(|r| r.truth.days_to_maintenance)
        .fold(0.0, f32::max);
    assert!((14.0..=60.0).contains(&max), "longest horizon {max} days");
}

#[test]
fn machines_get_maintained_and_restart_healthy() {
    let cfg = FleetConfig {
        machines: 20,
        scheduled_days: 20.0,
        ..FleetConfig::default()
    };
    let interval = cfg.interval_ms;
    let h = history(cfg, 120.0);
    let kinds: Vec<EventKind> = h.events.iter().map(|e| e.kind).collect();
    for k in [EventKind::Repair, EventKind::Scheduled, EventKind::Failure] {
        assert!(kinds.contains(&k), "no {k} among {} events", kinds.len());
    }
    for e in &h.events {
        let after: Vec<_> = h
            .readings
            .iter()
            .filter(|r| r.machine == e.machine && r.ts_ms > e.ts_ms)
            .collect();
        let Some(first) = after.first() else { continue };
        // Downtime: at least a couple of hours without rows, then a machine with little wear.
        assert!(
            first.ts_ms - e.ts_ms >= 2 * interval,
            "{e:?} restarted at {}",
            first.ts_ms
        );
        assert!(
            first.truth.bearing_wear < 0.1 && first.truth.seal_wear < 0.1,
            "{e:?} -> {first:?}"
        );
        let before = h
            .readings
            .iter()
            .rfind(|r| r.machine == e.machine && r.ts_ms < e.ts_ms);
        if let (Some(b), EventKind::Repair | EventKind::Failure) = (before, e.kind) {
            assert!(
                b.truth.bearing_wear.max(b.truth.seal_wear) >= 0.8,
                "{e:?} after {b:?}"
            );
        }
    }
}

#[test]
fn fault_modes_have_their_own_signatures() {
    let h = history(
        FleetConfig {
            machines: 30,
            types: vec![MachineType::Pump],
            ..FleetConfig::default()
        },
        150.0,
    );
    let mean = |pred: &dyn Fn(&maintcast_simulator::Truth) -> bool, s: usize| {
        let v: Vec<f32> = h
            .readings
            .iter()
            .filter(|r| pred(&r.truth) && r.truth.load > 0.5 && r.truth.load < 0.9)
            .filter_map(|r| r.values[s])
            .collect();
        assert!(v.len() > 20, "too few rows");
        v.iter().sum::<f32>() / v.len() as f32
    };
    let healthy = |t: &maintcast_simulator::Truth| t.bearing_wear < 0.2 && t.seal_wear < 0.2;
    let bearing = |t: &maintcast_simulator::Truth| t.bearing_wear > 0.7 && t.seal_wear < 0.2;
    let seal = |t: &maintcast_simulator::Truth| t.seal_wear > 0.7 && t.bearing_wear < 0.2;
    let (vib, press) = (sensor("vibration_rms"), sensor("pressure_bar"));
    // Bearing wear: vibration up a lot, pressure about the same.
    assert!(mean(&bearing, vib) > 1.6 * mean(&healthy, vib));
    assert!((mean(&bearing, press) / mean(&healthy, press) - 1.0).abs() < 0.08);
    // Leak: pressure down, vibration up far less than with a worn bearing.
    assert!(mean(&seal, press) < 0.9 * mean(&healthy, press));
    assert!(mean(&seal, vib) < 1.25 * mean(&healthy, vib));
}

#[test]
fn sensor_trouble_shows_and_can_be_switched_off() {
    let clean = FleetConfig {
        machines: 5,
        sensor_faults: SensorFaultConfig::none(),
        ..FleetConfig::default()
    };
    let h = history(clean, 30.0);
    assert!(
        h.readings
            .iter()
            .all(|r| r.values.iter().all(Option::is_some))
    );

    let noisy = FleetConfig {
        machines: 5,
        sensor_faults: SensorFaultConfig {
            stuck_per_day: 0.5,
            ..SensorFaultConfig::default()
        },
        ..FleetConfig::default()
    };
    let h = history(noisy, 60.0);
    let dropped = h
        .readings
        .iter()
        .flat_map(|r| r.values)
        .filter(Option::is_none)
        .count();
    assert!(dropped > 0, "no dropped values");
    // A stuck sensor repeats a value exactly for hours; a live one never does at 1e-3 resolution.
    let mut longest = 0;
    for m in 0..5 {
        let rows: Vec<_> = h.readings.iter().filter(|r| r.machine == m).collect();
        for s in 0..SENSORS.len() {
            let mut run = 0;
            for w in rows.windows(2) {
                run = if w[0].values[s].is_some() && w[0].values[s] == w[1].values[s] {
                    run + 1
                } else {
                    0
                };
                longest = longest.max(run);
            }
        }
    }
    assert!(longest >= 5, "longest repeated run {longest}");
}

#[test]
fn bad_configs_are_refused() {
    let bad = |c: FleetConfig| Fleet::new(c).err().expect("config should be refused");
    assert_eq!(
        bad(FleetConfig {
            machines: 0,
            ..FleetConfig::default()
        }),
        ConfigError::NoMachines
    );
    assert_eq!(
        bad(FleetConfig {
            interval_ms: 10,
            ..FleetConfig::default()
        }),
        ConfigError::Interval(10)
    );
    assert_eq!(
        bad(FleetConfig {
            types: vec![],
            ..FleetConfig::default()
        }),
        ConfigError::EmptyChoice
    );
    assert!(matches!(
        bad(FleetConfig {
            repair_threshold: 1.5,
            ..FleetConfig::default()
        }),
        ConfigError::RepairThreshold(_)
    ));
    let faults = SensorFaultConfig {
        drop_row_prob: 1.0,
        ..SensorFaultConfig::default()
    };
    assert!(matches!(
        bad(FleetConfig {
            sensor_faults: faults,
            ..FleetConfig::default()
        }),
        ConfigError::Probability {
            name: "drop_row_prob",
            ..
        }
    ));
}

#[test]
fn csv_files_have_the_trainers_layout() {
    let h = history(
        FleetConfig {
            machines: 3,
            ..FleetConfig::default()
        },
        10.0,
    );
    let dir = tempfile::tempdir().unwrap();
    output::write_csv(&h, dir.path()).unwrap();
    output::write_jsonl(&h, dir.path()).unwrap();
    let tel = std::fs::read_to_string(dir.path().join("telemetry.csv")).unwrap();
    let mut lines = tel.lines();
    assert_eq!(
        lines.next().unwrap(),
        "machine_id,ts,machine_type,site,vibration_rms,bearing_temp_c,motor_current_a,pressure_bar,speed_rpm,oil_temp_c"
    );
    assert_eq!(lines.count(), h.readings.len());
    let truth = std::fs::read_to_string(dir.path().join("truth.csv")).unwrap();
    assert_eq!(truth.lines().count(), h.readings.len() + 1);
    let events = std::fs::read_to_string(dir.path().join("events.csv")).unwrap();
    assert_eq!(events.lines().next().unwrap(), "machine_id,ts,kind,note");
    let jsonl = std::fs::read_to_string(dir.path().join("telemetry.jsonl")).unwrap();
    let first = jsonl.lines().next().unwrap();
    let t = maintcast_proto::decode_telemetry(first.as_bytes(), Some("application/json")).unwrap();
    assert_eq!(t.machine_id, h.machines[h.readings[0].machine as usize].id);
    assert_eq!(t.ts_ms, h.readings[0].ts_ms);
}
