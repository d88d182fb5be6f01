//! Maintenance decided outside the simulator: a policy ends a machine's cycle early.
//!
//! A cycle is simulated whole when it starts (every row knows its true time to the cycle's end),
//! so maintaining a machine cuts the pending cycle at the service: later rows and the event that
//! would have ended it are discarded, and rows still pending before the service learn their new
//! end. Rows already handed out keep the truth they were given (the time to the cycle's end had
//! nobody intervened). The same seed and the same interventions give the same fleet.

use crate::FleetConfig;
use crate::machine::{DAY_MS, EventKind, Item, MachineSim, MaintenanceEvent};

impl MachineSim {
    pub(crate) fn maintain(
        &mut self,
        at_ms: i64,
        note: &str,
        cfg: &FleetConfig,
    ) -> Option<EventKind> {
        if self.cycle_start_ms > at_ms {
            return None; // down: the last cycle ended and the next has not started
        }
        let cut = self.pending.partition_point(|i| i.ts_ms() < at_ms);
        if self
            .pending
            .iter()
            .take(cut)
            .any(|i| matches!(i, Item::Event(_)))
        {
            return None; // its cycle ends (it fails) before the service
        }
        let dropped: Vec<Item> = self.pending.drain(cut..).collect();
        // Damage at the service: the first row it prevented (a dropped row leaves the cycle's
        // state unknown, read as a light service).
        let damage = dropped
            .iter()
            .find_map(|i| match i {
                Item::Reading(r) => Some(r.truth.bearing_wear.max(r.truth.seal_wear)),
                Item::Event(_) => None,
            })
            .unwrap_or(0.0);
        let kind = if f64::from(damage) >= cfg.repair_threshold {
            EventKind::Repair
        } else {
            EventKind::Scheduled
        };
        for item in self.pending.iter_mut() {
            if let Item::Reading(r) = item {
                r.truth.days_to_maintenance = ((at_ms - r.ts_ms) as f64 / DAY_MS) as f32;
                r.truth.next_event = kind;
            }
        }
        if at_ms >= self.visible_from_ms {
            self.pending.push_back(Item::Event(MaintenanceEvent {
                machine: self.index,
                ts_ms: at_ms,
                kind,
                note: format!("{note} (damage {damage:.2})"),
            }));
        }
        self.restart_after(kind, at_ms, cfg);
        Some(kind)
    }
}
