//! Which machines each ensemble member trains on, early-stops on, and calibrates the interval on.
//! Whole machines only: windows of one machine are too alike to sit on both sides of a split.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::{Config, MemberSplits};
use crate::dataset;
use crate::error::{ModelError, Result};

/// The seed of the calibration split, apart from the training seed's splits so that changing
/// `val_fraction` or the member split leaves the calibration machines where they are.
const CAL_SEED: u64 = 0xca1_1b7a7e;

/// One member's machines, as indices into the history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MemberSplit {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    /// Machines only this member's residuals calibrate the interval on (`folds`); empty when the
    /// ensemble calibrates on the shared split.
    pub cal: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct Splits {
    /// Held out from every member: the ensemble's residuals on them calibrate the interval.
    pub shared_cal: Vec<usize>,
    pub members: Vec<MemberSplit>,
}

pub(crate) fn splits(n: usize, cfg: &Config) -> Result<Splits> {
    if cfg.train.member_splits == MemberSplits::Folds {
        return folds(n, cfg.train.ensemble, cfg.train.seed ^ CAL_SEED);
    }
    let d = &cfg.data;
    let (fit, cal) = if d.cal_fraction > 0.0 {
        dataset::split_machines(n, d.cal_fraction, cfg.train.seed ^ CAL_SEED)
    } else {
        ((0..n).collect(), Vec::new())
    };
    // val_fraction is a share of all machines; without a calibration split this is the split
    // every earlier model was trained with.
    let val_share = d.val_fraction / (1.0 - d.cal_fraction);
    let members = (0..cfg.train.ensemble)
        .map(|k| {
            let seed = match cfg.train.member_splits {
                MemberSplits::PerMember => cfg.train.seed + k as u64,
                _ => cfg.train.seed,
            };
            let (t, v) = dataset::split_machines(fit.len(), val_share, seed);
            MemberSplit {
                train: t.into_iter().map(|i| fit[i]).collect(),
                val: v.into_iter().map(|i| fit[i]).collect(),
                cal: Vec::new(),
            }
        })
        .collect();
    Ok(Splits {
        shared_cal: cal,
        members,
    })
}

/// Cross-conformal splits: the machines are dealt into `k` folds; member f trains on the other
/// folds, early-stops on one half of fold f and calibrates on the other. Every machine outside
/// the early-stopping halves calibrates the interval, out of sample for the member that forecasts
/// it, where a shared calibration split would spend machines no member learns from.
fn folds(n: usize, k: usize, seed: u64) -> Result<Splits> {
    if n < 2 * k {
        return Err(ModelError::Data(format!(
            "member_splits = \"folds\" with {k} members needs at least {} machines (each fold \
             early-stops on one and calibrates on another), the history has {n}",
            2 * k
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed));
    let sorted = |mut v: Vec<usize>| {
        v.sort_unstable();
        v
    };
    let members = (0..k)
        .map(|f| {
            let (a, b) = (f * n / k, (f + 1) * n / k);
            let fold = &idx[a..b];
            let half = fold.len().div_ceil(2);
            MemberSplit {
                train: sorted([&idx[..a], &idx[b..]].concat()),
                val: sorted(fold[..half].to_vec()),
                cal: sorted(fold[half..].to_vec()),
            }
        })
        .collect();
    Ok(Splits {
        shared_cal: Vec::new(),
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataConfig, TrainConfig};

    fn cfg(cal: f64, member_splits: MemberSplits) -> Config {
        Config {
            data: DataConfig {
                cal_fraction: cal,
                ..Default::default()
            },
            train: TrainConfig {
                ensemble: 3,
                member_splits,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn calibration_machines_are_seen_by_no_member() {
        let sp = splits(100, &cfg(0.15, MemberSplits::PerMember)).unwrap();
        assert_eq!(sp.shared_cal.len(), 15);
        for m in &sp.members {
            assert_eq!(m.val.len(), 20, "val_fraction is a share of all machines");
            assert_eq!(m.train.len(), 65);
            assert!(m.cal.is_empty());
            let cal = &sp.shared_cal;
            assert!(
                cal.iter()
                    .all(|c| !m.train.contains(c) && !m.val.contains(c))
            );
            assert!(m.val.iter().all(|i| !m.train.contains(i)));
        }
        assert_ne!(
            sp.members[0].val, sp.members[1].val,
            "per-member validation differs"
        );
        let shared = splits(100, &cfg(0.15, MemberSplits::Shared)).unwrap();
        assert!(shared.members.iter().all(|m| m == &shared.members[0]));
        assert_eq!(
            shared.shared_cal, sp.shared_cal,
            "the calibration split ignores the member split"
        );
    }

    #[test]
    fn without_a_calibration_split_the_old_split_is_kept() {
        let sp = splits(50, &cfg(0.0, MemberSplits::Shared)).unwrap();
        assert!(sp.shared_cal.is_empty());
        let (t, v) = dataset::split_machines(50, 0.2, 0);
        assert_eq!((&sp.members[0].train, &sp.members[0].val), (&t, &v));
    }

    #[test]
    fn folds_calibrate_on_every_machine_a_member_neither_trains_nor_stops_on() {
        let sp = splits(100, &cfg(0.0, MemberSplits::Folds)).unwrap();
        assert!(sp.shared_cal.is_empty());
        let mut held: Vec<usize> = Vec::new();
        for m in &sp.members {
            assert_eq!(m.train.len() + m.val.len() + m.cal.len(), 100);
            assert!((16..=17).contains(&m.val.len()) && (16..=17).contains(&m.cal.len()));
            assert!(m.val.iter().chain(&m.cal).all(|i| !m.train.contains(i)));
            assert!(m.cal.iter().all(|i| !m.val.contains(i)));
            held.extend(m.val.iter().chain(&m.cal));
        }
        held.sort_unstable();
        assert_eq!(
            held,
            (0..100).collect::<Vec<_>>(),
            "the folds partition the machines"
        );
        assert_eq!(sp.members.iter().map(|m| m.cal.len()).sum::<usize>(), 49);
        assert!(splits(5, &cfg(0.0, MemberSplits::Folds)).is_err());
    }
}
