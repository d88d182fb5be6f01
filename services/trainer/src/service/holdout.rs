//! Which machines a round holds out to compare the challenger with the champion, and what of
//! their history it scores on.
//!
//! Evaluation machines are chosen by a hash of their id, so the same machines stay held out round
//! after round and no challenger ever trains on them. Both models are scored on the most recent
//! run-to-maintenance stretch of those machines (their last labelled segment): the data that looks
//! most like what the model will see next, and that no earlier stretch leaks into.

use maintcast_models::dataset;
use maintcast_models::{History, MachineHistory};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

/// Rows that have a label (an event at or after them), over all machines.
pub fn labelled_rows(h: &History) -> usize {
    h.machines
        .iter()
        .map(|m| {
            m.events
                .last()
                .map_or(0, |&e| m.ts.partition_point(|&t| t <= e))
        })
        .sum()
}

pub(crate) fn labelled_rows_until(h: &History, until_ms: i64) -> usize {
    h.machines
        .iter()
        .map(|m| {
            m.events
                .last()
                .map_or(0, |&e| m.ts.partition_point(|&t| t <= e.min(until_ms)))
        })
        .sum()
}

/// 64-bit FNV-1a with splitmix64's finaliser: stable across builds and platforms, unlike
/// `DefaultHasher`; the finaliser spreads ids that differ only in their last digit over the whole
/// range, which plain FNV does not.
fn stable_hash(s: &str) -> u64 {
    let mut z = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Indices of the machines held out for the champion/challenger comparison: those with labels
/// whose id hashes below the fraction, at least one and never all of them.
pub fn eval_machines(h: &History, fraction: f64) -> Vec<usize> {
    let labelled: Vec<usize> = (0..h.machines.len())
        .filter(|&i| !dataset::labelled_segments(&h.machines[i]).is_empty())
        .collect();
    if labelled.len() < 2 {
        return Vec::new();
    }
    let unit = |i: usize| stable_hash(&h.machines[i].machine_id) as f64 / u64::MAX as f64;
    let mut chosen: Vec<usize> = labelled
        .iter()
        .copied()
        .filter(|&i| unit(i) < fraction)
        .collect();
    if chosen.is_empty() {
        chosen.push(
            *labelled
                .iter()
                .min_by(|&&a, &&b| unit(a).total_cmp(&unit(b)))
                .expect("at least two"),
        );
    }
    if chosen.len() == labelled.len() {
        let worst = *chosen
            .iter()
            .max_by(|&&a, &&b| unit(a).total_cmp(&unit(b)))
            .expect("non-empty");
        chosen.retain(|&i| i != worst);
    }
    chosen
}

/// The last labelled segment of each machine: rows after its previous event up to its last one.
pub fn recent_stretch(machines: &[&MachineHistory]) -> History {
    let mut out = Vec::new();
    for m in machines {
        let Some(&(a, b)) = dataset::labelled_segments(m).last() else {
            continue;
        };
        let n = m.sensors.len();
        let event = m.events[m.events.partition_point(|&e| e < m.ts[b - 1])];
        out.push(MachineHistory {
            machine_id: m.machine_id.clone(),
            machine_type: m.machine_type.clone(),
            site: m.site.clone(),
            ts: m.ts[a..b].to_vec(),
            sensors: m.sensors.clone(),
            values: m.values[a * n..b * n].to_vec(),
            events: vec![event],
            event_kinds: m
                .event_kinds
                .get(&event)
                .map(|k| (event, k.clone()))
                .into_iter()
                .collect(),
        });
    }
    History { machines: out }
}

/// Permutes each machine's rows among themselves, keeping times and events: the labels no longer
/// belong to the sensor values.
pub(crate) fn shuffle_rows(h: &mut History, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for m in &mut h.machines {
        let n = m.sensors.len();
        let mut order: Vec<usize> = (0..m.n_rows()).collect();
        order.shuffle(&mut rng);
        m.values = order
            .iter()
            .flat_map(|&r| m.values[r * n..(r + 1) * n].to_vec())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_models::history::DAY_MS;

    fn machine(id: &str, rows: usize, events_at: &[usize]) -> MachineHistory {
        MachineHistory {
            machine_id: id.into(),
            ts: (0..rows as i64).map(|d| d * DAY_MS).collect(),
            sensors: vec!["a".into()],
            values: (0..rows).map(|r| r as f32).collect(),
            events: events_at.iter().map(|&r| r as i64 * DAY_MS).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn labelled_rows_stop_at_each_machines_last_event() {
        let h = History {
            machines: vec![
                machine("a", 10, &[3, 6]),
                machine("b", 5, &[]),
                machine("c", 4, &[3]),
            ],
        };
        // a: rows 0..=6, b: no event, c: rows 0..=3
        assert_eq!(labelled_rows(&h), 11);
        assert_eq!(labelled_rows_until(&h, 2 * DAY_MS), 3 + 3);
    }

    #[test]
    fn eval_machines_are_stable_partial_and_labelled() {
        let machines: Vec<MachineHistory> = (0..50)
            .map(|i| machine(&format!("m{i:02}"), 5, if i == 7 { &[] } else { &[4] }))
            .collect();
        let h = History { machines };
        let e = eval_machines(&h, 0.2);
        assert!((3..=20).contains(&e.len()), "{}", e.len());
        assert!(!e.contains(&7));
        // the same machines whatever their order
        let mut rev = h.clone();
        rev.machines.reverse();
        let mut a: Vec<&str> = e
            .iter()
            .map(|&i| h.machines[i].machine_id.as_str())
            .collect();
        let mut b: Vec<&str> = eval_machines(&rev, 0.2)
            .iter()
            .map(|&i| rev.machines[i].machine_id.as_str())
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // two labelled machines: one held out, one left to train on
        let two = History {
            machines: vec![machine("x", 5, &[4]), machine("y", 5, &[4])],
        };
        assert_eq!(eval_machines(&two, 0.99).len(), 1);
        assert_eq!(eval_machines(&two, 0.000_001).len(), 1);
    }

    #[test]
    fn recent_stretch_is_the_last_run_to_maintenance() {
        let m = machine("a", 12, &[3, 8]);
        let h = recent_stretch(&[&m]);
        let s = &h.machines[0];
        assert_eq!(s.ts.first(), Some(&(4 * DAY_MS)));
        assert_eq!(s.ts.last(), Some(&(8 * DAY_MS)));
        assert_eq!(s.values, [4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(s.events, [8 * DAY_MS]);
        assert!(recent_stretch(&[&machine("b", 3, &[])]).machines.is_empty());
    }

    #[test]
    fn shuffled_rows_keep_times_and_the_multiset_of_values() {
        let mut h = History {
            machines: vec![machine("a", 50, &[49])],
        };
        shuffle_rows(&mut h, 1);
        let m = &h.machines[0];
        assert_ne!(m.values, (0..50).map(|r| r as f32).collect::<Vec<_>>());
        let mut v = m.values.clone();
        v.sort_by(f32::total_cmp);
        assert_eq!(v, (0..50).map(|r| r as f32).collect::<Vec<_>>());
        assert_eq!(m.ts[49], 49 * DAY_MS);
    }
}
