//! The label policy: which maintenance events end a cycle. "Days to the next maintenance of any
//! kind", "days to the next failure" and "days to the next unplanned repair" are different
//! questions with different answers; the recipe says which one a model answers (`data.ends_on`),
//! and the model card records it.

use std::borrow::Cow;

use crate::error::{ModelError, Result};
use crate::history::History;

/// The target's name in the model card for a policy.
pub fn target_name(ends_on: &[String]) -> String {
    match ends_on {
        [] => "days_to_maintenance".into(),
        [one] => format!("days_to_{one}"),
        many => format!("days_to_{}", many.join("_or_")),
    }
}

/// `history` with only the events that end a cycle under `ends_on` in `events` (every event when
/// empty). Rows before a dropped event keep counting down to the next kept one: a scheduled service
/// does not change how far a machine is from failing, as far as the label is concerned. Dropped
/// events stay in `event_kinds`, so windows still break at them as the serving windows do
/// (`dataset::labelled_segments`).
pub fn apply<'a>(history: &'a History, ends_on: &[String]) -> Result<Cow<'a, History>> {
    if ends_on.is_empty() {
        return Ok(Cow::Borrowed(history));
    }
    let mut out = history.clone();
    for m in &mut out.machines {
        if let Some(t) = m.events.iter().find(|t| !m.event_kinds.contains_key(t)) {
            return Err(ModelError::Data(format!(
                "label policy ends_on = {ends_on:?} needs event kinds, but machine {}'s event at \
                 {t} ms has none (events files need a `kind` column)",
                m.machine_id
            )));
        }
        let kinds = &m.event_kinds;
        m.events.retain(|t| ends_on.contains(&kinds[t]));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset;
    use crate::history::{DAY_MS, MachineHistory};

    fn machine() -> MachineHistory {
        let mut m = MachineHistory {
            machine_id: "m".into(),
            ts: (0..8).map(|d| d * DAY_MS).collect(),
            sensors: vec!["a".into()],
            values: vec![0.0; 8],
            events: vec![2 * DAY_MS, 5 * DAY_MS],
            ..Default::default()
        };
        m.event_kinds.insert(2 * DAY_MS, "scheduled".into());
        m.event_kinds.insert(5 * DAY_MS, "failure".into());
        m
    }

    #[test]
    fn failures_only_count_down_through_scheduled_service() {
        let h = History {
            machines: vec![machine()],
        };
        let any = apply(&h, &[]).unwrap();
        assert_eq!(
            dataset::labels(&any.machines[0], 10.0)[..6],
            [2.0, 1.0, 0.0, 2.0, 1.0, 0.0].map(Some)
        );
        let fail = apply(&h, &["failure".into()]).unwrap();
        assert_eq!(
            dataset::labels(&fail.machines[0], 10.0)[..6],
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0].map(Some)
        );
        assert_eq!(fail.machines[0].events, [5 * DAY_MS]);
        // the scheduled service still ends a window segment, as it resets serving windows
        assert_eq!(
            dataset::labelled_segments(&fail.machines[0]),
            [(0, 3), (3, 6)]
        );
        assert_eq!(target_name(&["failure".into()]), "days_to_failure");
        assert_eq!(target_name(&[]), "days_to_maintenance");
    }

    #[test]
    fn events_without_a_kind_are_refused_under_a_policy() {
        let mut m = machine();
        m.event_kinds.clear();
        let h = History { machines: vec![m] };
        assert!(apply(&h, &[]).is_ok());
        let e = apply(&h, &["failure".into()]).unwrap_err();
        assert!(e.to_string().contains("kind"), "{e}");
    }
}
