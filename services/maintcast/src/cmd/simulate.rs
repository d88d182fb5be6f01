//! `maintcast simulate`: a simulated fleet (or a replayed history) to files or to Kafka.
//!
//! Where the fleet sits in time: `--start` fixes its first row (default 2026-01-01, so a seed
//! alone reproduces a fleet) or, with `now`, ends its history at the wall clock; `--realtime`
//! then sends each row when its timestamp comes due, after the history before now went out at
//! once (the compose `demo` profile runs this way).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use maintcast_models::history::{self, History};
use maintcast_simulator::kafka::{Encoding, KafkaSink, Message, Pace, Pacer, Topics};
use maintcast_simulator::{Fleet, FleetConfig, Start, clock, output};

use super::train::Format;

#[derive(clap::Args)]
pub struct Args {
    /// Seed: the same seed and fleet flags give the same fleet.
    #[arg(long, env = "MAINTCAST_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Number of machines (pumps, presses and compressors).
    #[arg(long, env = "MAINTCAST_MACHINES", default_value_t = 30)]
    pub machines: usize,
    /// Simulated days. Files: default 120. Kafka: stop after this many days (default: run until Ctrl-C).
    #[arg(long, env = "MAINTCAST_DAYS")]
    pub days: Option<f64>,
    /// First row's time: `now` (the history ends at the wall clock: Kafka backfills
    /// --backfill-days, files hold --days) or a time (2026-01-01T00:00:00Z, 2026-01-01).
    /// Default 2026-01-01, so that a seed alone reproduces a fleet.
    #[arg(long, env = "MAINTCAST_START")]
    pub start: Option<Start>,
    /// Kafka: send each row when its timestamp comes due on the wall clock (rows before now go
    /// at once). The default with --start now; never runs into the future.
    #[arg(long, env = "MAINTCAST_REALTIME", conflicts_with_all = ["rate", "speedup"])]
    pub realtime: bool,
    /// Sampling interval: one row per machine per interval.
    #[arg(long, env = "MAINTCAST_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Write files here (telemetry.csv, events.csv, truth.csv) instead of sending to Kafka.
    #[arg(long, env = "MAINTCAST_OUT")]
    pub out: Option<PathBuf>,
    /// With --out: also write telemetry.jsonl and events.jsonl (the Kafka message forms).
    #[arg(long, env = "MAINTCAST_JSONL")]
    pub jsonl: bool,
    /// Kafka bootstrap servers (client properties pass through as MAINTCAST_KAFKA_<PROP>).
    #[arg(long, env = "MAINTCAST_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    #[arg(long, env = "MAINTCAST_TELEMETRY_TOPIC", default_value = "telemetry")]
    pub telemetry_topic: String,
    #[arg(
        long,
        env = "MAINTCAST_EVENTS_TOPIC",
        default_value = "maintenance-events"
    )]
    pub events_topic: String,
    /// Wire encoding: json or protobuf.
    #[arg(long, env = "MAINTCAST_ENCODING", default_value = "json")]
    pub encoding: Encoding,
    /// Messages per second once the backfill is done (default: one sampling interval per second).
    #[arg(long, env = "MAINTCAST_RATE")]
    pub rate: Option<f64>,
    /// Send this many days of history as fast as possible before pacing.
    #[arg(long, env = "MAINTCAST_BACKFILL_DAYS", default_value_t = 0.0)]
    pub backfill_days: f64,
    /// Replay a history (CSV directory/file or C-MAPSS directory, see --format) instead of simulating.
    #[arg(long, env = "MAINTCAST_REPLAY")]
    pub replay: Option<PathBuf>,
    /// Format of --replay.
    #[arg(long, env = "MAINTCAST_FORMAT", value_enum, default_value = "csv")]
    pub format: Format,
    /// C-MAPSS subset for --replay.
    #[arg(long, env = "MAINTCAST_SUBSET", default_value = "FD001")]
    pub subset: String,
    /// Replay in scaled real time: history time runs this many times faster than the clock
    /// (3600: an hour per second). Without it, --rate paces the replay.
    #[arg(long, env = "MAINTCAST_SPEEDUP")]
    pub speedup: Option<f64>,
}

impl Args {
    /// The fleet, its first row placed by --start; `history_days` is how much of it lies
    /// before now when that is `now`.
    fn fleet_config(&self, history_days: f64, now_ms: i64) -> anyhow::Result<FleetConfig> {
        let interval_ms =
            i64::try_from(self.interval.as_millis()).context("--interval is too long")?;
        let start = self.start.unwrap_or_default();
        Ok(FleetConfig {
            seed: self.seed,
            machines: self.machines,
            interval_ms,
            start_ms: start.resolve(now_ms, (history_days * 86_400_000.0) as i64, interval_ms),
            ..FleetConfig::default()
        })
    }

    /// On the wall clock: asked for, or implied by `--start now` with no other pace.
    fn wall_clock(&self) -> bool {
        self.realtime
            || (self.start == Some(Start::Now) && self.rate.is_none() && self.speedup.is_none())
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(x) = args.speedup
        && !(x > 0.0 && x.is_finite())
    {
        bail!("--speedup must be a positive number, got {x}");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number of messages per second, got {r}");
    }
    if let Some(d) = args.days
        && !(d > 0.0 && d.is_finite())
    {
        bail!("--days must be positive, got {d}");
    }
    if !(args.backfill_days >= 0.0 && args.backfill_days.is_finite()) {
        bail!(
            "--backfill-days must be zero or more, got {}",
            args.backfill_days
        );
    }
    if args.replay.is_some() && (args.start.is_some() || args.realtime) {
        bail!("--start and --realtime place a simulated fleet; a replay keeps its own timestamps");
    }
    if let Some(out) = &args.out {
        if args.replay.is_some() {
            bail!("--replay sends a history to Kafka; it cannot be combined with --out");
        }
        if args.realtime {
            bail!("--realtime paces messages to Kafka; files are written at once");
        }
        return write_files(&args, out);
    }
    let Some(brokers) = args.brokers.clone() else {
        bail!(
            "nowhere to send: give --out DIR for files, or --brokers (MAINTCAST_KAFKA_BROKERS) for Kafka"
        );
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(to_kafka(args, brokers))
}

fn write_files(args: &Args, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let days = args.days.unwrap_or(120.0);
    let cfg = args.fleet_config(days, clock::now_ms())?;
    let steps = cfg.steps_for_days(days);
    let started = Instant::now();
    let mut fleet = Fleet::new(cfg)?;
    let h = fleet.run(steps);
    output::write_csv(&h, out)?;
    if args.jsonl {
        output::write_jsonl(&h, out)?;
    }
    eprintln!(
        "{} machines, {days} days: {} rows, {} maintenance events -> {} ({:.1} s)",
        h.machines.len(),
        h.readings.len(),
        h.events.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn to_kafka(args: Args, brokers: String) -> anyhow::Result<ExitCode> {
    let shutdown = maintcast_common::shutdown::Shutdown::new();
    {
        let s = shutdown.clone();
        tokio::spawn(async move { s.trigger_on_signals().await });
    }
    let topics = Topics {
        telemetry: args.telemetry_topic.clone(),
        events: args.events_topic.clone(),
    };
    let mut sink = KafkaSink::new(
        maintcast_common::kafka::client_config(&brokers),
        topics,
        args.encoding,
    )?;

    let (messages, first_ts, default_rate): (Box<dyn Iterator<Item = Message> + Send>, i64, f64) =
        match &args.replay {
            Some(path) => {
                let h = load_replay(&args, path)?;
                let first = h.time_range().map(|(a, _)| a).unwrap_or(0);
                let n = h.machines.len().max(1) as f64;
                (Box::new(replay_messages(h).into_iter()), first, n)
            }
            None => {
                let cfg = args.fleet_config(args.backfill_days, clock::now_ms())?;
                let start = cfg.start_ms;
                let steps = args.days.map(|d| cfg.steps_for_days(d));
                let fleet = Fleet::new(cfg)?;
                let n = fleet.machines().len() as f64;
                (Box::new(fleet_messages(fleet, steps)), start, n)
            }
        };
    let pace = match (args.speedup, args.rate) {
        _ if args.wall_clock() => Pace::wall_clock(),
        (Some(x), _) => Pace::Speedup(x),
        (None, Some(r)) => Pace::Rate(r),
        (None, None) => Pace::Rate(default_rate),
    };
    let backfill_until = first_ts + (args.backfill_days * 86_400_000.0) as i64;
    let mut pacer = Pacer::new(pace, backfill_until);
    let started = Instant::now();
    let mut last_log = Instant::now();
    tracing::info!(
        ?pace,
        backfill_days = args.backfill_days,
        first = %output::rfc3339(first_ts),
        "sending to Kafka at {brokers}"
    );
    for m in messages {
        if shutdown.is_triggered() {
            break;
        }
        let wait = pacer.delay(m.ts_ms(), Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => break,
            }
        }
        sink.send(&m).await?;
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(sent = sink.sent, at = %output::rfc3339(m.ts_ms()), "progress");
        }
    }
    sink.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sent {} messages in {secs:.1} s ({:.0} msgs/s)",
        sink.sent,
        sink.sent as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// The fleet's ticks as messages, events of a tick before its rows; `steps = None` never ends.
fn fleet_messages(mut fleet: Fleet, steps: Option<usize>) -> impl Iterator<Item = Message> {
    let machines = fleet.machines().to_vec();
    (0..steps.unwrap_or(usize::MAX)).flat_map(move |_| {
        let tick = fleet.step();
        let events = tick
            .events
            .into_iter()
            .map(|e| Message::Event(output::maintenance_event(&machines[e.machine as usize], &e)));
        let rows = tick
            .readings
            .iter()
            .map(|r| Message::Telemetry(output::telemetry(&machines[r.machine as usize], r)))
            .collect::<Vec<_>>();
        events.collect::<Vec<_>>().into_iter().chain(rows)
    })
}

fn load_replay(args: &Args, path: &std::path::Path) -> anyhow::Result<History> {
    Ok(match args.format {
        Format::Csv => {
            let (tel, ev) = history::csv_paths(path, None);
            history::read_csv(&tel, ev.as_deref())?
        }
        // Training units run to failure, so their failures become maintenance events on replay.
        Format::Cmapss => history::read_cmapss(path, &args.subset)?.train,
        Format::Influx => anyhow::bail!("--replay reads files: use --format csv or cmapss"),
    })
}

/// Every row and event of a history in time order (an event sorts after rows of the same time,
/// as a failure ends the cycle whose last row it labels).
fn replay_messages(h: History) -> Vec<Message> {
    let mut out = Vec::with_capacity(h.n_rows());
    for m in &h.machines {
        for i in 0..m.n_rows() {
            out.push(Message::Telemetry(maintcast_proto::Telemetry {
                machine_id: m.machine_id.clone(),
                ts_ms: m.ts[i],
                sensors: m
                    .sensors
                    .iter()
                    .cloned()
                    .zip(m.row(i).iter().map(|&v| f64::from(v)))
                    .collect(),
                machine_type: m.machine_type.clone(),
                site: m.site.clone(),
            }));
        }
        for &ts_ms in &m.events {
            out.push(Message::Event(maintcast_proto::MaintenanceEvent {
                machine_id: m.machine_id.clone(),
                ts_ms,
                kind: maintcast_proto::MaintenanceKind::Repair,
                note: "replayed".into(),
            }));
        }
    }
    out.sort_by_key(|m| (m.ts_ms(), matches!(m, Message::Event(_))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_messages_put_events_before_rows_and_stop() {
        let cfg = FleetConfig {
            machines: 4,
            ..FleetConfig::default()
        };
        let steps = cfg.steps_for_days(20.0);
        let msgs: Vec<Message> =
            fleet_messages(Fleet::new(cfg.clone()).unwrap(), Some(steps)).collect();
        let h = Fleet::new(cfg).unwrap().run(steps);
        let rows = msgs
            .iter()
            .filter(|m| matches!(m, Message::Telemetry(_)))
            .count();
        assert_eq!(rows, h.readings.len());
        assert_eq!(msgs.len(), h.readings.len() + h.events.len());
        // Per machine, message times never go backwards.
        for id in h.machines.iter().map(|m| &m.id) {
            let ts: Vec<i64> = msgs
                .iter()
                .filter(|m| m.machine_id() == id)
                .map(Message::ts_ms)
                .collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{id}");
        }
    }

    fn parse(args: &[&str]) -> Args {
        <Args as clap::FromArgMatches>::from_arg_matches(
            &<Args as clap::Args>::augment_args(clap::Command::new("t"))
                .try_get_matches_from(["t"].iter().chain(args))
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn start_now_backfills_up_to_the_clock_then_follows_it() {
        const DAY: i64 = 86_400_000;
        let now = maintcast_simulator::DEFAULT_START_MS + 100 * DAY + 1_000;
        let a = parse(&["--start", "now", "--backfill-days", "8"]);
        assert!(a.wall_clock(), "--start now streams on the wall clock");
        let cfg = a.fleet_config(a.backfill_days, now).unwrap();
        assert!(cfg.start_ms <= now - 8 * DAY && cfg.start_ms > now - 8 * DAY - cfg.interval_ms);
        // An explicit pace keeps the old behaviour; a fixed start stays reproducible.
        assert!(!parse(&["--start", "now", "--rate", "5"]).wall_clock());
        let fixed = parse(&["--start", "2026-03-01"]);
        assert!(!fixed.wall_clock());
        assert_eq!(
            fixed.fleet_config(0.0, now).unwrap().start_ms,
            maintcast_simulator::DEFAULT_START_MS + 59 * DAY
        );
        assert!(parse(&["--realtime"]).wall_clock());
        assert_eq!(
            parse(&[]).fleet_config(30.0, now).unwrap().start_ms,
            maintcast_simulator::DEFAULT_START_MS
        );
    }

    #[test]
    fn realtime_refuses_other_paces_and_files() {
        let cmd = || <Args as clap::Args>::augment_args(clap::Command::new("t"));
        assert!(
            cmd()
                .try_get_matches_from(["t", "--realtime", "--rate", "3"])
                .is_err()
        );
        let err = run(parse(&["--realtime", "--out", "/nonexistent/x"])).unwrap_err();
        assert!(err.to_string().contains("--realtime"), "{err}");
        let err = cmd()
            .try_get_matches_from(["t", "--start", "yesterday"])
            .unwrap_err();
        assert!(err.to_string().contains("`now`"), "{err}");
    }

    #[test]
    fn simulated_files_train_through_the_models_crate() {
        let dir = tempfile::tempdir().unwrap();
        let args = <Args as clap::FromArgMatches>::from_arg_matches(
            &<Args as clap::Args>::augment_args(clap::Command::new("t")).get_matches_from(
                ["t", "--machines", "6", "--days", "40", "--out"]
                    .into_iter()
                    .chain([dir.path().to_str().unwrap()]),
            ),
        )
        .unwrap();
        write_files(&args, dir.path()).unwrap();
        let h = history::read_csv(
            &dir.path().join("telemetry.csv"),
            Some(&dir.path().join("events.csv")),
        )
        .unwrap();
        assert_eq!(h.machines.len(), 6);
        assert!(h.machines.iter().any(|m| !m.events.is_empty()));
        let mut cfg = maintcast_models::config::Config::default();
        cfg.data.step = 8;
        cfg.model.hidden = vec![8];
        cfg.train.epochs = 1;
        let trained = maintcast_models::pipeline::train_model(
            &h,
            &cfg,
            &candle_core::Device::Cpu,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(
            trained.card.features.len(),
            maintcast_simulator::SENSORS.len()
        );
        let mae = trained.card.metrics["val"]["mae"].as_f64().unwrap();
        assert!(mae.is_finite() && mae > 0.0, "val MAE {mae}");
    }
}
