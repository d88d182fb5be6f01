//! The offset ledger: which partitions this instance owns, how far it consumed each, what is
//! committed, and how many records derived from consumed messages still await acknowledgement.
//!
//! Records are counted by epoch. Every `commit_interval` the loop seals the current epoch: it
//! notes the consumed positions and goes on consuming into the next epoch while the sealed one's
//! records (every forecast, raw point, DLQ record and alert derived from it) are acknowledged by
//! their sinks. Only then are its windows checkpointed and its positions committed, so a
//! committed offset never runs ahead of what was delivered, and consumption never waits for a
//! commit.

use std::collections::{BTreeMap, HashMap, HashSet};

use maintcast_proto::Forecast;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::source::{KafkaConsumer, Partition};

/// A span of consumption whose records are settled, and its offsets committed, together.
pub type Epoch = u64;

/// Acknowledgements flowing back to the service loop, each settling records in flight in the
/// epoch the message they derive from was consumed in.
#[derive(Debug)]
pub enum Ack {
    /// InfluxDB accepted the points of a batch, or refused some that then reached the DLQ;
    /// `items` counts them by epoch, oldest first; `forecasts` are the ones written, which may
    /// raise alerts.
    Written {
        items: Vec<(Epoch, usize)>,
        forecasts: Vec<Forecast>,
    },
    /// A dead letter reached the DLQ.
    Delivered(Epoch),
    /// An alert reached its topic: only now does the machine's alert state change.
    AlertDelivered {
        machine_id: String,
        due: bool,
        epoch: Epoch,
    },
    /// A forecast request inference dropped (the model returned a non-finite value).
    Dropped(Epoch),
    /// A maintenance event's forecasts were scored and `forecast_accuracy` written.
    Scored(Epoch),
}

/// Counts a batch's items by epoch, oldest first: what its [`Ack::Written`] carries. Forecasts
/// trail the raw points queued beside them, so a batch may hold epochs in any order; it rarely
/// holds more than two.
pub fn by_epoch(epochs: impl IntoIterator<Item = Epoch>) -> Vec<(Epoch, usize)> {
    let mut runs: Vec<(Epoch, usize)> = Vec::new();
    for e in epochs {
        match runs.iter_mut().find(|(r, _)| *r == e) {
            Some((_, n)) => *n += 1,
            None => runs.push((e, 1)),
        }
    }
    runs.sort_unstable_by_key(|r| r.0);
    runs
}

#[derive(Debug, Default)]
pub struct Ledger {
    assigned: HashSet<Partition>,
    /// Next offset to consume, by partition.
    positions: HashMap<Partition, i64>,
    committed: HashMap<Partition, i64>,
    /// The epoch what is consumed now belongs to.
    epoch: Epoch,
    /// Records derived from consumed messages whose delivery is not yet acknowledged, by epoch
    /// (an epoch leaves the map when nothing of it is in flight).
    in_flight: BTreeMap<Epoch, usize>,
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

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// `acks` records derived from what is consumed now will be acknowledged.
    pub fn expect(&mut self, acks: usize) {
        self.expect_in(self.epoch, acks);
    }

    pub fn expect_in(&mut self, epoch: Epoch, acks: usize) {
        if acks > 0 {
            *self.in_flight.entry(epoch).or_default() += acks;
        }
    }

    pub fn acknowledged(&mut self, epoch: Epoch, acks: usize) {
        let Some(n) = self.in_flight.get_mut(&epoch) else {
            debug_assert!(acks == 0, "an ack for an epoch with nothing in flight");
            return;
        };
        debug_assert!(acks <= *n, "more acks than records in flight");
        *n = n.saturating_sub(acks);
        if *n == 0 {
            self.in_flight.remove(&epoch);
        }
    }

    /// Records in flight, all epochs together.
    pub fn in_flight(&self) -> usize {
        self.in_flight.values().sum()
    }

    /// Whether every record of `epoch` and of the epochs before it is acknowledged.
    pub fn settled(&self, epoch: Epoch) -> bool {
        self.in_flight
            .first_key_value()
            .is_none_or(|(&oldest, _)| oldest > epoch)
    }

    /// Closes the current epoch: returns it with the consumed positions of the owned partitions
    /// it ends at, and starts the next.
    pub fn seal(&mut self) -> (Epoch, HashMap<Partition, i64>) {
        let positions = self
            .positions
            .iter()
            .filter(|(tp, _)| self.assigned.contains(*tp))
            .map(|(tp, &o)| (tp.clone(), o))
            .collect();
        let sealed = self.epoch;
        self.epoch += 1;
        (sealed, positions)
    }

    /// The positions of the partitions `include` picks that are still owned and not committed
    /// yet: `positions` is what a sealed epoch noted.
    pub fn uncommitted(
        &self,
        positions: &HashMap<Partition, i64>,
        include: impl Fn(&Partition) -> bool,
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (tp, &offset) in positions {
            if include(tp) && self.assigned.contains(tp) && self.committed.get(tp) != Some(&offset)
            {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
            }
        }
        tpl
    }

    /// Records offsets the broker accepted (the consumer's commit callback reports them); a
    /// partition the broker refused stays uncommitted and is offered again.
    pub fn mark_committed(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let (Offset::Offset(o), Ok(())) = (e.offset(), e.error()) {
                self.committed
                    .insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }

    /// Takes the broker's answer to a commit, as the consumer's commit callback reports it.
    pub fn answered(&mut self, answer: Result<TopicPartitionList, KafkaError>) {
        match answer {
            Ok(offsets) => self.mark_committed(&offsets),
            Err(e) => commit_failed(&e),
        }
    }

    /// Commits the positions a settled epoch noted, for the partitions still owned.
    ///
    /// While running this is asynchronous: a synchronous commit waits for the group
    /// coordinator, and after a broker restart that took over 30 s, during which the loop took
    /// no acknowledgement and no revoke (so the group's rebalance waited on it too). The outcome
    /// comes back through the consumer's commit callback ([`crate::source::Polled::Committed`]);
    /// until it does, the same positions are offered again, which the broker takes as a no-op.
    /// The last commit before exit is synchronous, since nothing is left to serve after it.
    pub fn commit(
        &mut self,
        consumer: &KafkaConsumer,
        positions: &HashMap<Partition, i64>,
        mode: CommitMode,
    ) {
        let tpl = self.uncommitted(positions, |_| true);
        if tpl.count() == 0 {
            return;
        }
        match (consumer.commit(&tpl, mode), mode) {
            (Ok(()), CommitMode::Sync) => {
                self.mark_committed(&tpl);
                tracing::debug!(partitions = tpl.count(), "offsets committed");
            }
            (Ok(()), CommitMode::Async) => {}
            (Err(e), _) => commit_failed(&e),
        }
    }
}

fn commit_failed(e: &KafkaError) {
    tracing::warn!(error = %e, "offset commit failed; retrying at the next epoch");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Partition {
        ("telemetry".into(), p)
    }

    /// A ledger owning partitions 0 and 1, consumed up to offsets 9 and 4.
    fn two_partitions() -> Ledger {
        let mut l = Ledger::default();
        for (p, offset) in [(0, 9), (1, 4)] {
            l.assign(tp(p));
            l.consumed(&tp(p), offset);
        }
        l
    }

    #[test]
    fn a_partition_the_broker_refused_is_offered_again() {
        let mut l = two_partitions();
        let (_, noted) = l.seal();
        let answer = l.uncommitted(&noted, |_| true);
        // The commit callback's list carries an error per partition; librdkafka sets it, the
        // crate offers no setter, so the test writes the field as librdkafka would.
        let refused = answer
            .elements()
            .iter()
            .position(|e| e.partition() == 1)
            .unwrap();
        unsafe {
            (*(*answer.ptr()).elems.add(refused)).err =
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR;
        }
        l.answered(Ok(answer));
        let again = l.uncommitted(&noted, |_| true);
        assert_eq!(again.count(), 1);
        assert_eq!(again.elements()[0].partition(), 1);
    }

    #[test]
    fn only_owned_uncommitted_positions_are_offered() {
        let mut l = two_partitions();
        l.consumed(&tp(2), 7); // not ours (a message polled after a revoke)
        let (_, noted) = l.seal();
        assert_eq!(noted.len(), 2, "a seal notes owned partitions only");
        let tpl = l.uncommitted(&noted, |_| true);
        assert_eq!(tpl.count(), 2);
        l.mark_committed(&tpl);
        assert_eq!(l.uncommitted(&noted, |_| true).count(), 0, "nothing new");
        l.consumed(&tp(1), 5);
        let (_, noted) = l.seal();
        let tpl = l.uncommitted(&noted, |t| t.1 == 1);
        assert_eq!(
            tpl.find_partition("telemetry", 1).unwrap().offset(),
            Offset::Offset(6)
        );
        l.revoke(&tp(1));
        assert_eq!(l.uncommitted(&noted, |_| true).count(), 0);
        assert!(!l.owns(&tp(1)));
    }

    #[test]
    fn a_sealed_epoch_settles_on_its_own_acks_only() {
        let mut l = Ledger::default();
        l.assign(tp(0));
        l.consumed(&tp(0), 9);
        l.expect(3);
        let (sealed, noted) = l.seal();
        assert_eq!(noted[&tp(0)], 10);
        // Consumption goes on into the next epoch while the sealed one is in flight.
        l.consumed(&tp(0), 20);
        l.expect(2);
        assert_ne!(l.epoch(), sealed);
        l.acknowledged(l.epoch(), 2);
        assert!(
            !l.settled(sealed),
            "the next epoch's acks must not settle the sealed one"
        );
        assert_eq!(l.in_flight(), 3);
        l.acknowledged(sealed, 2);
        assert!(!l.settled(sealed));
        l.expect_in(sealed, 1); // an alert raised by one of the sealed epoch's forecasts
        l.acknowledged(sealed, 1);
        assert!(!l.settled(sealed));
        l.acknowledged(sealed, 1);
        assert!(l.settled(sealed));
        assert_eq!(l.in_flight(), 0);
        // What the sealed epoch commits is where it ended, not where consumption is now.
        let tpl = l.uncommitted(&noted, |_| true);
        assert_eq!(
            tpl.find_partition("telemetry", 0).unwrap().offset(),
            Offset::Offset(10)
        );
    }

    #[test]
    fn an_older_epoch_in_flight_keeps_a_newer_one_unsettled() {
        let mut l = Ledger::default();
        let (first, _) = l.seal();
        l.expect(1);
        let (second, _) = l.seal();
        l.expect_in(first, 1);
        assert!(!l.settled(second));
        l.acknowledged(second, 1);
        assert!(!l.settled(second), "an epoch before it is still in flight");
        l.acknowledged(first, 1);
        assert!(l.settled(second));
    }

    #[test]
    fn batches_are_counted_by_epoch_oldest_first() {
        assert_eq!(by_epoch([4, 4, 3, 4, 3]), vec![(3, 2), (4, 3)]);
        assert_eq!(by_epoch([]), vec![]);
    }
}
