//! The trainer service: rounds of "read history, train a challenger, compare it with the serving
//! champion on held-out machines, promote only if it is better by a margin", once (`--once`) or
//! every DURATION until SIGTERM.
//!
//! Laid out as a round flows: `config` (what the service is told), `round` (skip -> train -> score
//! -> gate -> publish), `holdout` (which machines are held out and what of them is scored), `gate`
//! (the promotion rule), `report` (what a round did), `metrics`. The command-line flags that fill
//! `config` live in the `maintcast` binary.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use maintcast_common::shutdown::Shutdown;

mod config;
mod gate;
mod holdout;
mod metrics;
mod report;
mod round;

pub use config::{
    EXIT_CODES_HELP, EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_PROMOTED, EXIT_SKIPPED, HistorySource,
    Outcome, ServiceConfig, ServiceSettings, influx_from_env, parse_since, validate,
};
pub use gate::gate;
pub use holdout::{eval_machines, labelled_rows, recent_stretch};
pub use report::RoundReport;

pub use metrics::Metrics;
use round::round;

/// Runs the service until `shutdown` (with `--every`) or for one round (`--once`, the round's
/// outcome is returned).
pub async fn run(cfg: ServiceConfig, shutdown: Shutdown) -> Result<Outcome> {
    validate(&cfg)?;
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let _server = match cfg.args.http_addr {
        Some(addr) => {
            let mut reg = prometheus_client::registry::Registry::default();
            metrics.register(&mut reg);
            let (bound, handle) =
                maintcast_common::http::serve(addr, Arc::new(reg), ready.clone(), shutdown.clone())
                    .await?;
            tracing::info!("serving /metrics, /healthz and /readyz on http://{bound}");
            Some(handle)
        }
        None => None,
    };
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let Some(every) = cfg.args.every else {
        let started = Instant::now();
        let result = round(cfg.clone()).await;
        let secs = started.elapsed().as_secs_f64();
        return match result {
            Ok(r) => {
                metrics.observe(r.outcome.name(), Some(&r), secs);
                tracing::info!("{}", r.line());
                Ok(r.outcome)
            }
            Err(e) => {
                metrics.observe("failed", None, secs);
                Err(e)
            }
        };
    };
    let mut last = Outcome::Skipped;
    loop {
        let started = Instant::now();
        // A failed round is logged and retried at the next tick: a service that dies because
        // InfluxDB blinked would need a babysitter.
        tokio::select! {
            result = round(cfg.clone()) => {
                let secs = started.elapsed().as_secs_f64();
                match result {
                    Ok(r) => {
                        metrics.observe(r.outcome.name(), Some(&r), secs);
                        tracing::info!("{}", r.line());
                        last = r.outcome;
                    }
                    Err(e) => {
                        metrics.observe("failed", None, secs);
                        tracing::error!("round failed: {e:#}");
                    }
                }
            }
            _ = shutdown.wait() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(started.elapsed())) => {}
            _ = shutdown.wait() => break,
        }
    }
    tracing::info!("trainer stopped");
    Ok(last)
}

/// For `maintcast train`: runs the service on its own runtime, stopping on SIGTERM or Ctrl-C, and
/// returns the exit code (the round's outcome with `--once`, 0 after a clean stop with `--every`).
pub fn run_blocking(cfg: ServiceConfig) -> Result<u8> {
    let once = cfg.args.every.is_none();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async {
        let shutdown = Shutdown::new();
        let signals = shutdown.clone();
        tokio::spawn(async move { signals.trigger_on_signals().await });
        run(cfg, shutdown).await
    })?;
    Ok(if once {
        outcome.exit_code()
    } else {
        EXIT_PROMOTED
    })
}
