//! How consumption turns into commits: sealing an epoch, settling it (scores, checkpoints, the
//! commit or the revoke's answer), and taking partitions on and off. `offsets` keeps the counts;
//! this is where the loop acts on them.

use std::collections::{HashMap, HashSet};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::CommitMode;

use super::Loop;
use crate::accuracy::ScoreJob;
use crate::checkpoint;
use crate::offsets::Epoch;
use crate::source::Partition;

/// A revoke waiting for the drain: its partitions and where to send the offsets to commit.
pub(super) type Revoking = (
    Vec<Partition>,
    std::sync::mpsc::SyncSender<TopicPartitionList>,
);

/// A sealed epoch: what it commits once every record derived from it is acknowledged.
pub(super) struct Sealed {
    epoch: Epoch,
    /// Consumed positions of the owned partitions where it ended.
    positions: HashMap<Partition, i64>,
    /// Its changed windows as they were at those positions, by machine; taken by their delivery.
    checkpoints: Vec<(String, Vec<u8>)>,
    /// The machines whose windows it checkpoints, marked changed again if delivery fails.
    machines: Vec<String>,
    /// The checkpoints' delivery, once everything else derived from the epoch is acknowledged.
    delivery: Option<tokio::task::JoinHandle<bool>>,
    /// Its maintenance events, scored once its forecasts are all written.
    scores: Vec<ScoreJob>,
    /// Sealed by a drain (revoke or shutdown), which consumption waits for.
    drain: Option<Option<Revoking>>,
}

/// How long an epoch's checkpoints may take to deliver before it settles without a commit. A
/// revoke waits for the epoch before it and then delivers its own, so two of these fit in the
/// time the poll thread holds the rebalance for the drain.
fn checkpoint_timeout(config: &crate::config::Config) -> std::time::Duration {
    config.drain_timeout / 3
}

impl Loop {
    /// Closes the current epoch: notes its positions and changed windows, and hands its
    /// maintenance events to it for scoring. `drain` is `Some` when consumption waits for it.
    pub(super) fn seal(&mut self, drain: Option<Option<Revoking>>) {
        let checkpoints = checkpoint::snapshot(&self.config, &mut self.pipeline, &self.ledger);
        let (epoch, positions) = self.ledger.seal();
        let machines = checkpoints.iter().map(|(id, _)| id.clone()).collect();
        self.sealed = Some(Sealed {
            epoch,
            positions,
            checkpoints,
            machines,
            delivery: None,
            scores: std::mem::take(&mut self.score_jobs),
            drain,
        });
    }

    /// Once everything derived from the sealed epoch is acknowledged: releases its events for
    /// scoring (their jobs count in it, so the commit past an event waits for its score and a
    /// crash before replays and scores it again, which is idempotent), then checkpoints its
    /// windows and commits its positions, or answers the revoke that sealed it. Returns whether
    /// the epoch was a drain's, when it was settled.
    pub(super) async fn settle(&mut self) -> Option<bool> {
        let s = self.sealed.as_mut()?;
        if !self.ledger.settled(s.epoch) {
            return None;
        }
        if !s.scores.is_empty() {
            let mut released = 0;
            for mut job in s.scores.drain(..) {
                job.epoch = s.epoch;
                if self.score_tx.send(job).is_ok() {
                    released += 1;
                }
            }
            self.ledger.expect_in(s.epoch, released);
            if released > 0 {
                return None;
            }
        }
        // Checkpoints first: a committed offset must never be ahead of the windows. They are
        // delivered beside the loop, so a broker that stops answering holds back commits while
        // acknowledgements, consumption and a revoke go on.
        let delivery = s.delivery.get_or_insert_with(|| {
            let done = self.checkpoints_done.clone();
            let job = checkpoint::deliver(
                self.config.topics.checkpoint.clone(),
                self.producer.clone(),
                std::mem::take(&mut s.checkpoints),
                checkpoint_timeout(&self.config),
            );
            tokio::spawn(async move {
                let delivered = job.await;
                done.notify_one();
                delivered
            })
        });
        if !delivery.is_finished() {
            return None;
        }
        let s = self.sealed.take()?;
        let checkpointed = s.delivery.expect("started above").await.unwrap_or(false);
        if !checkpointed {
            self.pipeline.mark_dirty(s.machines);
        }
        let drained = s.drain.is_some();
        let mode = if drained {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match s.drain {
            Some(Some((partitions, reply))) => {
                let offsets = if checkpointed {
                    self.ledger
                        .uncommitted(&s.positions, |tp| partitions.contains(tp))
                } else {
                    TopicPartitionList::new()
                };
                // The poll thread commits these before the partitions go.
                let _ = reply.send(offsets);
                self.revoke(partitions);
            }
            _ if checkpointed => self.ledger.commit(&self.consumer, &s.positions, mode),
            _ => {}
        }
        Some(drained)
    }

    /// Forgets revoked partitions: their windows belong to their next owner, which restores them
    /// from the checkpoints just written.
    fn revoke(&mut self, revoked: Vec<Partition>) {
        let mut gone = HashSet::new();
        for tp in revoked {
            tracing::info!(topic = tp.0, partition = tp.1, "partition revoked");
            if tp.0 == self.config.topics.telemetry {
                gone.insert(tp.1);
            }
            self.ledger.revoke(&tp);
        }
        self.pipeline.drop_partitions(&gone);
    }

    /// Takes on newly assigned partitions with their windows from the checkpoint topic, which
    /// match the committed offset consumption starts from.
    pub(super) async fn assign(&mut self, newly: Vec<Partition>) -> anyhow::Result<()> {
        let mut fresh = HashSet::new();
        for tp in newly {
            tracing::info!(topic = tp.0, partition = tp.1, "partition assigned");
            if tp.0 == self.config.topics.telemetry {
                fresh.insert(tp.1);
            }
            self.ledger.assign(tp);
        }
        // Windows still held for these partitions (a revoke that timed out) may be ahead of the
        // committed offset; the checkpoint is not.
        self.pipeline.drop_partitions(&fresh);
        if fresh.is_empty() {
            return Ok(());
        }
        checkpoint::restore(&self.config, &fresh, &mut self.pipeline, &self.shutdown).await
    }
}
