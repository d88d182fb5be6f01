//! The sweep's chart (PNG): validation MAE against training time for every run, Pareto front
//! joined, and the validation-MAE learning curves of the best runs.
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (`MAINTCAST_CHART_FONT`, else
//! DejaVu Sans or Liberation Sans from the usual system paths), so the build needs no fontconfig.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::leaderboard::pareto_front;
use super::result::RunResult;

const FONT: &str = "sans-serif";
/// Learning curves drawn: more than this is spaghetti.
const CURVES: usize = 5;

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let paths: Vec<String> = std::env::var("MAINTCAST_CHART_FONT")
            .ok()
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        let (path, bytes) = paths
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
            .ok_or_else(|| {
                format!("no TrueType font found (set MAINTCAST_CHART_FONT); looked in {paths:?}")
            })?;
        // plotters keeps fonts for the life of the process; this runs once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Renders `results` (sorted best first) to a PNG at `path`.
pub fn render(path: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    if results.is_empty() {
        bail!("no finished runs to chart");
    }
    register_font()?;
    draw(path, results).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    Ok(())
}

fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-3);
    (lo - pad).max(0.0)..hi + pad
}

fn draw(path: &Path, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(640);
    let front = pareto_front(results);
    let finite = |v: f64| v.is_finite();

    let ts: Vec<f64> = results.iter().map(|r| r.train_s).collect();
    let maes: Vec<f64> = results
        .iter()
        .map(|r| r.val_mae)
        .filter(|v| finite(*v))
        .collect();
    let (t_lo, t_hi) = min_max(&ts);
    let (m_lo, m_hi) = min_max(&maes);
    let mut c = ChartBuilder::on(&left)
        .caption(
            "Validation MAE against training time",
            (FONT, 22).into_font(),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        // Log time: runs span seconds to many minutes, and the cheap end is where the front is.
        .build_cartesian_2d(
            ((t_lo.max(1e-3)) / 1.3..t_hi.max(1e-3) * 1.3).log_scale(),
            padded(m_lo, m_hi),
        )?;
    c.configure_mesh()
        .x_desc("training time (s, log scale)")
        .y_desc("validation MAE (days)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    c.draw_series(
        results
            .iter()
            .zip(&front)
            .filter(|(_, f)| !**f)
            .map(|(r, _)| Circle::new((r.train_s, r.val_mae), 4, BLUE.mix(0.5).filled())),
    )?
    .label("run")
    .legend(|(x, y)| Circle::new((x, y), 4, BLUE.mix(0.5).filled()));
    let mut on_front: Vec<&RunResult> = results
        .iter()
        .zip(&front)
        .filter_map(|(r, f)| f.then_some(r))
        .collect();
    on_front.sort_by(|a, b| a.train_s.total_cmp(&b.train_s));
    c.draw_series(LineSeries::new(
        on_front.iter().map(|r| (r.train_s, r.val_mae)),
        RED.stroke_width(1),
    ))?;
    c.draw_series(
        on_front
            .iter()
            .map(|r| Circle::new((r.train_s, r.val_mae), 5, RED.filled())),
    )?
    .label("Pareto front")
    .legend(|(x, y)| Circle::new((x, y), 5, RED.filled()));
    c.draw_series(on_front.iter().map(|r| {
        Text::new(
            r.id[..6.min(r.id.len())].to_string(),
            (r.train_s, r.val_mae),
            (FONT, 12).into_font(),
        )
    }))?;
    c.configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let best: Vec<&RunResult> = results.iter().take(CURVES).collect();
    let max_epoch = best
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.epoch))
        .max()
        .unwrap_or(1);
    let curve_maes: Vec<f64> = best
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.val_mae))
        .filter(|v| finite(*v))
        .collect();
    let (c_lo, c_hi) = min_max(&curve_maes);
    let mut c = ChartBuilder::on(&right)
        .caption(
            format!("Learning curves of the best {}", best.len()),
            (FONT, 22).into_font(),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..max_epoch as f64 + 0.5, padded(c_lo, c_hi))?;
    c.configure_mesh()
        .x_desc("epoch")
        .y_desc("validation MAE (days)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for (i, r) in best.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(
            r.curve
                .iter()
                .filter(|p| finite(p.val_mae))
                .map(|p| (p.epoch as f64, p.val_mae)),
            color.stroke_width(2),
        ))?
        .label(format!("#{} {}", i + 1, r.label))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn min_max(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

/// Checks that a file is a PNG of the chart's size; for tests and for the sweep's own sanity.
pub fn png_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        bail!("{}: not a PNG", path.display());
    }
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
    Ok((be(16), be(20)))
}
