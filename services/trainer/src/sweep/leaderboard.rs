//! The sweep's leaderboard: runs sorted by validation MAE, the Pareto front of accuracy against
//! training time marked, written as Markdown (for people and BENCHMARKS.md) and CSV (for tools).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::grid::PairAxis;
use super::result::RunResult;

pub const MARKDOWN_FILE: &str = "leaderboard.md";
pub const CSV_FILE: &str = "leaderboard.csv";

/// Best (lowest) validation MAE first; ties go to the faster run.
pub fn sort(results: &mut [RunResult]) {
    results.sort_by(|a, b| {
        a.val_mae
            .total_cmp(&b.val_mae)
            .then(a.train_s.total_cmp(&b.train_s))
            .then(a.id.cmp(&b.id))
    });
}

/// Whether each run is on the Pareto front: no other run is at least as accurate and at least as
/// fast while strictly better in one of the two.
pub fn pareto_front(results: &[RunResult]) -> Vec<bool> {
    results
        .iter()
        .map(|r| {
            !results.iter().any(|o| {
                o.val_mae <= r.val_mae
                    && o.train_s <= r.train_s
                    && (o.val_mae < r.val_mae || o.train_s < r.train_s)
            })
        })
        .collect()
}

const HEADER: [&str; 11] = [
    "rank",
    "pareto",
    "run",
    "settings",
    "val_mae",
    "val_rmse",
    "params",
    "epochs",
    "best_epoch",
    "train_s",
    "infer_windows_per_s",
];

/// A Markdown table of `results` (already sorted).
pub fn markdown(results: &[RunResult]) -> String {
    let front = pareto_front(results);
    let mut s = String::new();
    s.push_str(
        "| # | Pareto | run | settings | val MAE | val RMSE | params | epochs | best epoch | train s | windows/s |\n",
    );
    s.push_str("|--:|:-:|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (i, (r, f)) in results.iter().zip(&front).enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {:.3} | {:.3} | {} | {} | {} | {:.1} | {:.0} |",
            i + 1,
            if *f { "*" } else { "" },
            r.id,
            r.label,
            r.val_mae,
            r.val_rmse,
            r.params,
            r.epochs_run,
            r.best_epoch,
            r.train_s,
            r.infer_windows_per_s
        );
    }
    s.push_str("\n`*`: on the Pareto front of validation MAE against training time.\n");
    s
}

/// Runs that differ only on `axis`, side by side: one row per setting of the other axes, the MAE
/// under each value of `axis` (best in bold), and for a two-valued axis how often and by how much
/// the second value changed the MAE. Settings with a single finished run are left out.
pub fn paired(results: &[RunResult], axis: PairAxis) -> String {
    let mut values: Vec<String> = Vec::new();
    // (key, the other axes' label, [(value, MAE)])
    type Group = (String, String, Vec<(String, f64)>);
    let mut groups: Vec<Group> = Vec::new();
    for r in results {
        let v = axis.value(&r.config);
        if !values.contains(&v) {
            values.push(v.clone());
        }
        let key = axis.key(&r.config);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.2.push((v, r.val_mae)),
            None => {
                let setting = r.label.split(' ').filter(|w| *w != v).collect::<Vec<_>>();
                groups.push((key, setting.join(" "), vec![(v, r.val_mae)]));
            }
        }
    }
    groups.retain(|g| g.2.len() > 1);
    values.sort();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Runs that differ only in {} ({} settings), validation MAE:\n",
        axis.name(),
        groups.len()
    );
    let _ = writeln!(s, "| settings | {} |", values.join(" | "));
    let _ = writeln!(s, "|---|{}", "--:|".repeat(values.len()));
    for (_, setting, maes) in &groups {
        let best = maes.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
        let cells: Vec<String> = values
            .iter()
            .map(|v| match maes.iter().find(|m| &m.0 == v) {
                Some(&(_, mae)) if mae == best => format!("**{mae:.3}**"),
                Some(&(_, mae)) => format!("{mae:.3}"),
                None => String::new(),
            })
            .collect();
        let _ = writeln!(s, "| {setting} | {} |", cells.join(" | "));
    }
    if let [a, b] = values.as_slice() {
        let mut deltas: Vec<f64> = groups
            .iter()
            .filter_map(|(_, _, m)| {
                let x = m.iter().find(|m| &m.0 == a)?.1;
                let y = m.iter().find(|m| &m.0 == b)?.1;
                Some(y - x)
            })
            .collect();
        if !deltas.is_empty() {
            deltas.sort_by(f64::total_cmp);
            let n = deltas.len();
            let median = if n % 2 == 1 {
                deltas[n / 2]
            } else {
                (deltas[n / 2 - 1] + deltas[n / 2]) / 2.0
            };
            let lower = deltas.iter().filter(|d| **d < 0.0).count();
            let _ = writeln!(
                s,
                "\n`{b}` had a lower MAE than `{a}` in {lower} of {n} pairs; median change \
                 {median:+.3} (`{b}` minus `{a}`), range {:+.3} to {:+.3}.",
                deltas[0],
                deltas[n - 1]
            );
        }
    }
    s
}

/// Writes `leaderboard.md` (with the paired comparison when `paired` is set) and
/// `leaderboard.csv` into `dir`.
pub fn write(dir: &Path, results: &[RunResult], paired: Option<PairAxis>) -> anyhow::Result<()> {
    let md = dir.join(MARKDOWN_FILE);
    let mut text = markdown(results);
    if let Some(axis) = paired {
        text.push('\n');
        text.push_str(&self::paired(results, axis));
    }
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    let path = dir.join(CSV_FILE);
    let front = pareto_front(results);
    let mut w =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record(HEADER)?;
    for (i, (r, f)) in results.iter().zip(&front).enumerate() {
        w.write_record([
            (i + 1).to_string(),
            u8::from(*f).to_string(),
            r.id.clone(),
            r.label.clone(),
            format!("{:.4}", r.val_mae),
            format!("{:.4}", r.val_rmse),
            r.params.to_string(),
            r.epochs_run.to_string(),
            r.best_epoch.to_string(),
            format!("{:.2}", r.train_s),
            format!("{:.0}", r.infer_windows_per_s),
        ])?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, mae: f64, train_s: f64) -> RunResult {
        RunResult {
            id: id.into(),
            label: format!("label {id}"),
            config: Default::default(),
            val_mae: mae,
            val_rmse: mae * 1.3,
            params: 100,
            epochs_run: 12,
            best_epoch: 2,
            train_s,
            infer_windows_per_s: 1000.0,
            val_windows: 10,
            curve: Vec::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn sorted_by_mae_with_the_pareto_front_marked() {
        // c is slower and less accurate than a: dominated. d ties a's MAE but is slower: dominated.
        let mut rs = vec![
            run("c", 15.0, 30.0),
            run("b", 20.0, 5.0),
            run("a", 12.0, 10.0),
            run("d", 12.0, 11.0),
        ];
        sort(&mut rs);
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "d", "c", "b"]);
        assert_eq!(pareto_front(&rs), [true, false, false, true]);
        let md = markdown(&rs);
        assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 5);
        assert!(md.contains("| 1 | * | `a` |"), "{md}");
        assert!(md.contains("| 2 |  | `d` |"), "{md}");
    }

    #[test]
    fn paired_runs_side_by_side() {
        use maintcast_models::optim::Schedule;
        let with = |id: &str, mae: f64, hidden: usize, decay: bool| {
            let mut r = run(id, mae, 1.0);
            r.config.model.hidden = vec![hidden];
            if decay {
                r.config.train.schedule = Schedule::Exponential { gamma: 0.9 };
            }
            r.label = crate::sweep::grid::label(&r.config);
            r
        };
        let rs = vec![
            with("a", 10.0, 32, false),
            with("b", 9.0, 32, true),
            with("c", 12.0, 64, false),
            with("d", 12.5, 64, true),
            with("e", 11.0, 128, true),
        ];
        let md = paired(&rs, PairAxis::Schedule);
        assert!(md.contains("(2 settings)"), "{md}");
        assert!(md.contains("| const | exp0.9 |"), "{md}");
        assert!(md.contains("| 10.000 | **9.000** |"), "{md}");
        assert!(md.contains("| **12.000** | 12.500 |"), "{md}");
        assert!(
            !md.contains("11.000"),
            "a setting without its pair is left out: {md}"
        );
        assert!(
            md.contains(
                "`exp0.9` had a lower MAE than `const` in 1 of 2 pairs; median change -0.250"
            ),
            "{md}"
        );
    }

    #[test]
    fn csv_has_one_row_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let rs = vec![run("a", 1.0, 1.0), run("b, with comma", 2.0, 2.0)];
        write(dir.path(), &rs, None).unwrap();
        let mut r = csv::Reader::from_path(dir.path().join(CSV_FILE)).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][2], "b, with comma");
        assert_eq!(&rows[0][4], "1.0000");
    }
}
