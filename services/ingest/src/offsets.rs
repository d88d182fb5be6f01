//! The offset ledger: which partitions this instance owns, how far it consumed each, what is
//! committed, and how many records derived from consumed messages still await acknowledgement.
//!
//! Offsets are committed at barriers: consumption stops until `in_flight` is zero (every forecast,
//! raw point, DLQ record and alert acknowledged by its sink), then the consumed positions are
//! committed. So a committed offset never runs ahead of what was delivered.

use std::collections::{HashMap, HashSet};

use maintcast_proto::Forecast;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::source::{KafkaConsumer, Partition};

/// Acknowledgements flowing back to the service loop, each settling records in flight.
#[derive(Debug)]
pub enum Ack {
    /// InfluxDB accepted `items` points, or refused some that then reached the DLQ; `forecasts`
    /// are the ones written, which may raise alerts.
    Written {
        items: usize,
        forecasts: Vec<Forecast>,
    },
    /// A dead letter reached the DLQ.
    Delivered,
    /// An alert reached its topic: only now does the machine's alert state change.
    AlertDelivered { machine_id: String, due: bool },
    /// Forecast requests inference dropped (the model returned a non-finite value).
    Dropped(usize),
    /// A maintenance event's forecasts were scored and `forecast_accuracy` written.
    Scored,
}

#[derive(Debug, Default)]
pub struct Ledger {
    assigned: HashSet<Partition>,
    /// Next offset to consume, by partition.
    positions: HashMap<Partition, i64>,
    committed: HashMap<Partition, i64>,
    /// Records derived from consumed messages whose delivery is not yet acknowledged.
    in_flight: usize,
}

impl Ledger {
    pub fn assign(&mut self, tp: Partition) {
        self.assigned.insert(tp);
    }

    /// Forgets a partition that moved to another instance.
    pub fn revoke(&mut self, tp: &Partition) {
        self.assigned.remove(tp);
        self.positions.remove(tp);
        self.committed.remove(tp);
    }

    pub fn owns(&self, tp: &Partition) -> bool {
        self.assigned.contains(tp)
    }

    /// A message at `offset` was consumed (whatever became of it).
    pub fn consumed(&mut self, tp: &Partition, offset: i64) {
        match self.positions.get_mut(tp) {
            Some(next) => *next = offset + 1,
            None => {
                self.positions.insert(tp.clone(), offset + 1);
            }
        }
    }

    pub fn position(&self, tp: &Partition) -> Option<i64> {
        self.positions.get(tp).copied()
    }

    pub fn positions(&self) -> &HashMap<Partition, i64> {
        &self.positions
    }

    pub fn expect(&mut self, acks: usize) {
        self.in_flight += acks;
    }

    pub fn acknowledged(&mut self, acks: usize) {
        debug_assert!(acks <= self.in_flight, "more acks than records in flight");
        self.in_flight = self.in_flight.saturating_sub(acks);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The consumed positions of the partitions `include` picks that are not committed yet.
    pub fn uncommitted(&self, include: impl Fn(&Partition) -> bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (tp, &offset) in &self.positions {
            if include(tp) && self.assigned.contains(tp) && self.committed.get(tp) != Some(&offset)
            {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
            }
        }
        tpl
    }

    /// Records offsets the broker accepted.
    pub fn mark_committed(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                self.committed
                    .insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }

    /// Commits every owned partition's position (at a barrier: nothing in flight).
    pub fn commit(&mut self, consumer: &KafkaConsumer) {
        debug_assert_eq!(self.in_flight, 0, "commit with records in flight");
        let tpl = self.uncommitted(|_| true);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.mark_committed(&tpl);
                tracing::debug!(partitions = tpl.count(), "offsets committed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; retrying at the next barrier")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Partition {
        ("telemetry".into(), p)
    }

    #[test]
    fn only_owned_uncommitted_positions_are_offered() {
        let mut l = Ledger::default();
        l.assign(tp(0));
        l.assign(tp(1));
        l.consumed(&tp(0), 9);
        l.consumed(&tp(1), 4);
        l.consumed(&tp(2), 7); // not ours (a message polled after a revoke)
        let tpl = l.uncommitted(|_| true);
        assert_eq!(tpl.count(), 2);
        l.mark_committed(&tpl);
        assert_eq!(l.uncommitted(|_| true).count(), 0, "nothing new");
        l.consumed(&tp(1), 5);
        let tpl = l.uncommitted(|t| t.1 == 1);
        assert_eq!(
            tpl.find_partition("telemetry", 1).unwrap().offset(),
            Offset::Offset(6)
        );
        l.revoke(&tp(1));
        assert_eq!(l.uncommitted(|_| true).count(), 0);
        assert!(!l.owns(&tp(1)));
    }

    #[test]
    fn in_flight_counts_expectations_down_to_zero() {
        let mut l = Ledger::default();
        l.expect(3);
        l.acknowledged(2);
        assert_eq!(l.in_flight(), 1);
        l.acknowledged(1);
        assert_eq!(l.in_flight(), 0);
    }
}
