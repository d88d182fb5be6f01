//! The demo's live phase: the fleet keeps running and its telemetry goes through the ingest
//! service's own pipeline, batcher and model wrapper; forecasts land in a line-protocol file
//! and the summary compares them with the simulator's truth and the baseline.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Args;
use super::baseline::Ridge;
use anyhow::Context;
use maintcast_common::points;
use maintcast_ingest::batch::Batcher;
use maintcast_ingest::forecast;
use maintcast_ingest::model::Model;
use maintcast_ingest::pipeline::{ForecastRequest, Pipeline};
use maintcast_ingest::quality::{QualityConfig, flag};
use maintcast_ingest::serving::ServingModel;
use maintcast_ingest::window::WindowStore;
use maintcast_models::accuracy::{EventScore, PastForecast, Role, Tally};
use maintcast_models::{artifact, prep};
use maintcast_proto::Forecast;
use maintcast_simulator::{Fleet, MachineInfo, Truth, output};

/// A window waiting for inference, with what the summary compares it against.
struct Pending {
    machine: u32,
    truth: Truth,
    x: Vec<f32>,
    req: ForecastRequest,
}

#[derive(Clone)]
struct Latest {
    ts_ms: i64,
    days: f32,
    p10: f32,
    p90: f32,
    baseline: f32,
    truth: Truth,
    flags: String,
}

#[derive(Default)]
struct Stats {
    n: usize,
    abs_err: f64,
    abs_err_baseline: f64,
    covered: usize,
    infer: Duration,
    batches: usize,
    /// Forecasts made while a sensor was stuck (the simulator's truth), and those flagged stuck.
    stuck: usize,
    flagged_stuck: usize,
    stuck_and_flagged: usize,
    low_confidence: usize,
    /// Realized accuracy: forecasts scored when their machine's maintenance came, as the ingest
    /// service scores them into `forecast_accuracy`.
    realized: Tally,
    events_scored: usize,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn stream(
    args: &Args,
    fleet: &mut Fleet,
    machines: &[MachineInfo],
    model: &ServingModel,
    card: &artifact::ModelCard,
    baseline: &Ridge,
    interval_ms: i64,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    if args.follow {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(tokio::signal::ctrl_c()).ok()?;
            stop.store(true, Ordering::SeqCst);
            Some(())
        });
    }
    let (window, nf) = (model.window(), model.features().len());
    let store = WindowStore::new(model.features().to_vec(), window, model.neutral_raw());
    // The ingest service's own pipeline (window update, forecast schedule, forecast requests);
    // only the source (the simulator) and the sink (a file) differ.
    let mut pipeline = Pipeline::new(store, model.min_rows(), 1);
    let quality = QualityConfig::default();
    let features = model.features().to_vec();
    let feature_stats = forecast::window_stats(&features, model);
    let mut batcher: Batcher<Pending> = Batcher::new(args.batch, Duration::from_millis(5));
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut sink = BufWriter::new(file);
    let mut latest: HashMap<u32, Latest> = HashMap::new();
    let mut stats = Stats::default();
    // Each machine's forecasts since its last maintenance, scored when the next one comes.
    let mut life: HashMap<u32, Vec<PastForecast>> = HashMap::new();
    let cap = f64::from(card.target.cap);
    let mut last_event_line = String::new();
    let live_steps = (args.live_days * 86_400_000.0 / interval_ms as f64).round() as usize;
    let tty = std::io::stdout().is_terminal();
    let stream_started = Instant::now();
    let mut rows = 0usize;
    let mut step = 0usize;
    eprintln!("streaming live telemetry through the ingest window store and batcher ...");

    let infer = |batch: Vec<Pending>,
                 stats: &mut Stats,
                 latest: &mut HashMap<u32, Latest>,
                 life: &mut HashMap<u32, Vec<PastForecast>>,
                 sink: &mut BufWriter<std::fs::File>|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let xs: Vec<f32> = batch.iter().flat_map(|p| p.x.iter().copied()).collect();
        let t = Instant::now();
        let preds = model.predict(&xs, batch.len())?;
        stats.infer += t.elapsed();
        stats.batches += 1;
        for (p, pred) in batch.into_iter().zip(preds) {
            let base = baseline.predict(&p.x);
            let truth = p.truth.days_to_maintenance;
            let q = p.req.evidence.assess(&p.req.raw, &feature_stats, &quality);
            let f = forecast::forecast(model, &p.req, pred, (&q, &features), &quality).map_err(
                |r| {
                    anyhow::anyhow!(
                        "the model returned a non-finite forecast for {}",
                        r.machine_id
                    )
                },
            )?;
            stats.n += 1;
            stats.abs_err += (f.days_to_maintenance - f64::from(truth)).abs();
            stats.abs_err_baseline += f64::from((base - truth).abs());
            stats.covered +=
                usize::from(f.days_p10 <= f64::from(truth) && f64::from(truth) <= f.days_p90);
            let stuck = p.truth.sensor_faults.stuck != 0;
            let flagged = q.flags.iter().any(|b| b & flag::STUCK != 0);
            stats.stuck += usize::from(stuck);
            stats.flagged_stuck += usize::from(flagged);
            stats.stuck_and_flagged += usize::from(stuck && flagged);
            stats.low_confidence += usize::from(f.low_confidence);
            sink.write_all(line_protocol(&f)?.as_bytes())?;
            life.entry(p.machine).or_default().push(PastForecast {
                ts_ms: f.ts_ms,
                model: f.model.clone(),
                version: f.model_version.clone(),
                role: Role::Champion,
                days: f.days_to_maintenance,
                p10: f.days_p10,
                p90: f.days_p90,
            });
            latest.insert(
                p.machine,
                Latest {
                    ts_ms: f.ts_ms,
                    days: f.days_to_maintenance as f32,
                    p10: f.days_p10 as f32,
                    p90: f.days_p90 as f32,
                    baseline: base,
                    truth: p.truth,
                    flags: f.quality_flags,
                },
            );
        }
        Ok(())
    };

    while (args.follow || step < live_steps) && !stop.load(Ordering::SeqCst) {
        let tick_started = Instant::now();
        let tick = fleet.step();
        step += 1;
        for e in &tick.events {
            let ev = output::maintenance_event(&machines[e.machine as usize], e);
            let step = pipeline.on_event(&ev, 0);
            let forecasts = life.remove(&e.machine).unwrap_or_default();
            if !step.reset || forecasts.is_empty() {
                continue;
            }
            let mut score = EventScore::new(step.previous_reset_ms, ev.ts_ms);
            for f in &forecasts {
                score.add(f, cap);
            }
            let t = score.total(&card.name, &card.version, Role::Champion);
            stats.realized.merge(&t);
            stats.events_scored += 1;
            last_event_line = format!(
                "{} {} ({}): realized MAE {:.2} d over {} forecasts, p10-p90 held {:.0}%; \
                 all events so far: MAE {:.2} d, {:.0}%",
                output::rfc3339(ev.ts_ms),
                ev.machine_id,
                ev.kind.as_str(),
                t.mae().unwrap_or(0.0),
                t.n,
                100.0 * t.coverage().unwrap_or(0.0),
                stats.realized.mae().unwrap_or(0.0),
                100.0 * stats.realized.coverage().unwrap_or(0.0),
            );
            if !tty {
                eprintln!("  maintenance {last_event_line}");
            }
        }
        for r in &tick.readings {
            rows += 1;
            let t = output::telemetry(&machines[r.machine as usize], r);
            let Some(req) = pipeline.on_telemetry(&t, 0, rows as i64).forecast else {
                continue;
            };
            let mut x = vec![0f32; window * nf];
            prep::scale_window(&card.scaler, &prep::Columns::Same, &req.raw, &mut x);
            let p = Pending {
                machine: r.machine,
                truth: r.truth,
                x,
                req,
            };
            if let Some(batch) = batcher.push(p, Instant::now()) {
                infer(batch, &mut stats, &mut latest, &mut life, &mut sink)?;
            }
        }
        // The in-process source has nothing more until the next tick, so lingering would only delay.
        infer(
            batcher.take(),
            &mut stats,
            &mut latest,
            &mut life,
            &mut sink,
        )?;
        if tty && step.is_multiple_of(4) {
            print!(
                "\x1b[2J\x1b[H{}\nlast maintenance: {}\n",
                table(machines, &latest, &stats, tick.ts_ms, args.top),
                if last_event_line.is_empty() {
                    "none yet"
                } else {
                    &last_event_line
                }
            );
            std::io::stdout().flush()?;
        } else if !tty && step.is_multiple_of(24) {
            eprintln!(
                "  {}  {} forecasts, MAE {:.2} d",
                output::rfc3339(tick.ts_ms),
                stats.n,
                mae(&stats)
            );
        }
        if let Some(rest) = args.tick.checked_sub(tick_started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    sink.flush()?;
    let now_ms = fleet.next_ts_ms() - interval_ms;
    println!("{}", table(machines, &latest, &stats, now_ms, args.top));
    anyhow::ensure!(
        stats.n > 0,
        "no forecasts were made: stream longer (--live-days) than the model's {} rows",
        model.min_rows()
    );
    let wall = stream_started.elapsed().as_secs_f64();
    println!("summary");
    println!(
        "  model {} ({}), window {} rows, features {:?}",
        card.name, card.version, window, card.features
    );
    println!(
        "  live: {} machines x {:.1} days, {} rows, {} forecasts",
        machines.len(),
        step as f64 * interval_ms as f64 / 86_400_000.0,
        rows,
        stats.n
    );
    println!(
        "  MAE vs truth:           {:.2} days  (p10-p90 covers {:.0}% of true values)",
        mae(&stats),
        100.0 * stats.covered as f64 / stats.n as f64
    );
    println!(
        "  realized at maintenance: {} events, MAE {:.2} days over {} forecasts, p10-p90 held {:.0}% \
         (each forecast against the day its machine's maintenance really came)",
        stats.events_scored,
        stats.realized.mae().unwrap_or(f64::NAN),
        stats.realized.n,
        100.0 * stats.realized.coverage().unwrap_or(f64::NAN)
    );
    println!(
        "  linear baseline MAE:    {:.2} days  (ridge regression on the same scaled windows)",
        stats.abs_err_baseline / stats.n as f64
    );
    println!(
        "  input quality: {} forecasts low-confidence ({:.1}%); stuck sensors (simulator truth): \
         {} forecasts, {:.0}% flagged stuck; precision of the stuck flag {:.0}%",
        stats.low_confidence,
        100.0 * stats.low_confidence as f64 / stats.n as f64,
        stats.stuck,
        100.0 * stats.stuck_and_flagged as f64 / stats.stuck.max(1) as f64,
        100.0 * stats.stuck_and_flagged as f64 / stats.flagged_stuck.max(1) as f64,
    );
    println!(
        "  inference: {:.0} forecasts/s in {} batches (mean {:.1}); pipeline {:.0} rows/s; total {:.0} s",
        stats.n as f64 / stats.infer.as_secs_f64().max(1e-9),
        stats.batches,
        stats.n as f64 / stats.batches.max(1) as f64,
        rows as f64 / wall.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  forecasts: {} (line protocol: influx write --bucket B --file {0})",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn mae(s: &Stats) -> f64 {
    s.abs_err / s.n.max(1) as f64
}

fn table(
    machines: &[MachineInfo],
    latest: &HashMap<u32, Latest>,
    stats: &Stats,
    now_ms: i64,
    top: usize,
) -> String {
    let mut rows: Vec<(&u32, &Latest)> = latest.iter().collect();
    rows.sort_by(|a, b| a.1.days.total_cmp(&b.1.days).then(a.0.cmp(b.0)));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "maintcast demo  {}  forecasts {}  MAE {:.2} d  (baseline {:.2} d)\n",
        output::rfc3339(now_ms),
        stats.n,
        mae(stats),
        stats.abs_err_baseline / stats.n.max(1) as f64
    );
    let _ = writeln!(
        s,
        "{:<16} {:<11} {:>9} {:>15} {:>9} {:>9}  {:<10} {:>7}  inputs",
        "machine", "type", "predicted", "p10..p90", "true", "baseline", "next", "wear"
    );
    for (m, l) in rows.into_iter().take(top) {
        let info = &machines[*m as usize];
        let _ = writeln!(
            s,
            "{:<16} {:<11} {:>7.1} d {:>6.1}..{:<6.1} {:>7.1} d {:>7.1} d  {:<10} {:>3.0}/{:<3.0}  {}{}",
            info.id,
            info.machine_type.as_str(),
            l.days,
            l.p10,
            l.p90,
            l.truth.days_to_maintenance,
            l.baseline,
            l.truth.next_event.as_str(),
            100.0 * l.truth.bearing_wear,
            100.0 * l.truth.seal_wear,
            if l.flags.is_empty() { "ok" } else { &l.flags },
            if l.ts_ms < now_ms { "  (no row)" } else { "" }
        );
    }
    s
}

/// One `maintenance_forecast` point as line protocol, through the schema ingest writes with.
fn line_protocol(f: &Forecast) -> anyhow::Result<String> {
    Ok(points::Point::forecast(f)?.line_protocol()?)
}
