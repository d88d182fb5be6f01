//! Waiting on a condition rather than on time: a wait fails only when it has seen no progress for
//! a while (or after a generous total), and its message says how far it got and what the service
//! was doing then.

use std::future::Future;
use std::time::Duration;

/// How long a wait may see no progress before it fails, and how long it may take in all.
pub const STALL: Duration = Duration::from_secs(90);
pub const PATIENCE: Duration = Duration::from_secs(600);

/// Polls `query` until `measure` of its answer reaches `want`, and returns that answer. Fails
/// after [`STALL`] without progress or [`PATIENCE`] in all, with `describe`'s report.
pub async fn wait_for<T, Q, QF, D, DF>(
    mut query: Q,
    measure: impl Fn(&T) -> usize,
    want: usize,
    what: &str,
    mut describe: D,
) -> T
where
    Q: FnMut() -> QF,
    QF: Future<Output = T>,
    D: FnMut() -> DF,
    DF: Future<Output = String>,
{
    let started = tokio::time::Instant::now();
    let mut progress = started;
    let mut best = 0;
    loop {
        let got = query().await;
        let n = measure(&got);
        if n >= want {
            return got;
        }
        let now = tokio::time::Instant::now();
        if n > best {
            best = n;
            progress = now;
        }
        if now - progress > STALL || now - started > PATIENCE {
            panic!(
                "{what}: {n} of {want} after {:.0} s, none new for {:.0} s\n{}",
                (now - started).as_secs_f64(),
                (now - progress).as_secs_f64(),
                describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`wait_for`] a list to hold `want` items.
pub async fn wait_for_len<T, Q, QF, D, DF>(query: Q, want: usize, what: &str, describe: D) -> Vec<T>
where
    Q: FnMut() -> QF,
    QF: Future<Output = Vec<T>>,
    D: FnMut() -> DF,
    DF: Future<Output = String>,
{
    wait_for(query, Vec::len, want, what, describe).await
}
