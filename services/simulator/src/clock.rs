//! Where a simulated fleet sits on the calendar: a fixed start (reproducible files and tests) or
//! "now" (a live demo whose history ends at the wall clock, so dashboards looking at the last
//! days see it and the stream never runs into the future).

use chrono::{DateTime, Utc};

use crate::DEFAULT_START_MS;

/// `--start`: a fixed time, or the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The history ends at the wall clock: it begins the given history length before now.
    Now,
    /// Epoch ms of the first row.
    At(i64),
}

impl Default for Start {
    fn default() -> Self {
        Start::At(DEFAULT_START_MS)
    }
}

impl std::str::FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("now") {
            return Ok(Start::Now);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Start::At(t.timestamp_millis()));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(Start::At(
                d.and_hms_opt(0, 0, 0)
                    .expect("midnight")
                    .and_utc()
                    .timestamp_millis(),
            ));
        }
        Err(format!(
            "{s:?} is neither `now` nor a time (RFC 3339 like 2026-01-01T00:00:00Z, or 2026-01-01)"
        ))
    }
}

impl Start {
    /// Epoch ms of the first row. `Now` starts `history_ms` before `now_ms`, rounded down to a
    /// whole sampling interval so that rows land on round times (whole hours for `1h`).
    pub fn resolve(self, now_ms: i64, history_ms: i64, interval_ms: i64) -> i64 {
        match self {
            Start::At(ms) => ms,
            Start::Now => {
                let t = now_ms - history_ms.max(0);
                t - t.rem_euclid(interval_ms.max(1))
            }
        }
    }
}

/// The wall clock in epoch ms.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn parses_now_and_times() {
        assert_eq!("now".parse::<Start>(), Ok(Start::Now));
        assert_eq!(" NOW ".parse::<Start>(), Ok(Start::Now));
        assert_eq!(
            "2026-01-01T00:00:00Z".parse::<Start>(),
            Ok(Start::At(DEFAULT_START_MS))
        );
        assert_eq!(
            "2026-01-01T01:00:00+01:00".parse::<Start>(),
            Ok(Start::At(DEFAULT_START_MS))
        );
        assert_eq!(
            "2026-01-01".parse::<Start>(),
            Ok(Start::At(DEFAULT_START_MS))
        );
        assert!("yesterday".parse::<Start>().is_err());
        assert_eq!(Start::default(), Start::At(DEFAULT_START_MS));
    }

    #[test]
    fn now_ends_the_history_at_the_clock_on_whole_intervals() {
        let now = DEFAULT_START_MS + 40 * DAY + 5 * HOUR + 1_234;
        let start = Start::Now.resolve(now, 30 * DAY, HOUR);
        assert_eq!(start % HOUR, 0);
        assert!(start <= now - 30 * DAY && start > now - 30 * DAY - HOUR);
        assert_eq!(start, DEFAULT_START_MS + 10 * DAY + 5 * HOUR);
        // No history: the first row is the current interval's.
        assert_eq!(
            Start::Now.resolve(now, 0, HOUR),
            DEFAULT_START_MS + 40 * DAY + 5 * HOUR
        );
        // A fixed start ignores the clock.
        assert_eq!(Start::At(7).resolve(now, 30 * DAY, HOUR), 7);
    }
}
