//! The sweep's leaderboard: runs sorted by validation MAE, the Pareto front of accuracy against
//! training time marked, written as Markdown (for people and BENCHMARKS.md) and CSV (for tools).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::sweep::RunResult;

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

/// Writes `leaderboard.md` and `leaderboard.csv` into `dir`.
pub fn write(dir: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    let md = dir.join(MARKDOWN_FILE);
    std::fs::write(&md, markdown(results)).with_context(|| format!("writing {}", md.display()))?;
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
    fn csv_has_one_row_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let rs = vec![run("a", 1.0, 1.0), run("b, with comma", 2.0, 2.0)];
        write(dir.path(), &rs).unwrap();
        let mut r = csv::Reader::from_path(dir.path().join(CSV_FILE)).unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][2], "b, with comma");
        assert_eq!(&rows[0][4], "1.0000");
    }
}
