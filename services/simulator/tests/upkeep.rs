//! A policy outside the simulator maintains the machines (`Upkeep::External`, `Fleet::maintain`).

use maintcast_simulator::{EventKind, Fleet, FleetConfig, Upkeep};

const HOUR_MS: i64 = 3_600_000;

fn external(machines: usize) -> FleetConfig {
    FleetConfig {
        machines,
        upkeep: Upkeep::External,
        ..FleetConfig::default()
    }
}

#[test]
fn left_alone_an_externally_kept_machine_only_fails() {
    let cfg = external(12);
    let steps = cfg.steps_for_days(150.0);
    let h = Fleet::new(cfg).unwrap().run(steps);
    assert!(h.events.len() >= 12, "{} events", h.events.len());
    assert!(h.events.iter().all(|e| e.kind == EventKind::Failure));
    // The built-in crew would have repaired most of them before they broke.
    let builtin = Fleet::new(FleetConfig {
        machines: 12,
        ..FleetConfig::default()
    })
    .unwrap()
    .run(steps);
    let failures = builtin
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Failure)
        .count();
    assert!(
        failures * 3 < h.events.len(),
        "{failures} of {}",
        builtin.events.len()
    );
}

#[test]
fn maintaining_ends_the_cycle_there_and_restarts_after_the_downtime() {
    let mut fleet = Fleet::new(external(4)).unwrap();
    let mut now = 0;
    for _ in 0..48 {
        now = fleet.step().ts_ms;
    }
    // Machine 2 serviced just after this hour's sample.
    let at = now + 1;
    let running = fleet.running_since_ms(2).unwrap();
    assert!(running <= now);
    let kind = fleet.maintain(2, at, "planned").expect("running machine");
    assert_eq!(
        kind,
        EventKind::Scheduled,
        "a young cycle is a light service"
    );
    let tick = fleet.step();
    let e: Vec<_> = tick.events.iter().filter(|e| e.machine == 2).collect();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].ts_ms, e[0].kind), (at, EventKind::Scheduled));
    assert!(e[0].note.starts_with("planned (damage "), "{}", e[0].note);
    let back = fleet.running_since_ms(2).unwrap();
    assert!(
        (at + 3 * HOUR_MS..=at + 9 * HOUR_MS).contains(&back),
        "{}",
        back - at
    );
    // Down until then: no rows, and a second service is refused.
    assert_eq!(fleet.maintain(2, tick.ts_ms + 1, "again"), None);
    let mut seen_again = None;
    for _ in 0..12 {
        let t = fleet.step();
        assert!(t.events.iter().all(|e| e.machine != 2));
        if let Some(r) = t.readings.iter().find(|r| r.machine == 2) {
            seen_again.get_or_insert(r.ts_ms);
        }
    }
    assert_eq!(seen_again, Some(back));
}

#[test]
fn the_same_interventions_give_the_same_fleet() {
    let run = |every: usize| {
        let mut fleet = Fleet::new(external(5)).unwrap();
        let mut out = Vec::new();
        for i in 0..24 * 60 {
            let t = fleet.step();
            if i % every == 0 {
                fleet.maintain((i / every % 5) as u32, t.ts_ms + 1, "p");
            }
            out.push(t);
        }
        out
    };
    assert_eq!(run(97), run(97));
    assert_ne!(run(97), run(89));
}
