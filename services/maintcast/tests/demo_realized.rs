//! The demo's live stream scores forecasts the moment maintenance happens, as the ingest service
//! does (docs/LIVE_EVALUATION.md): one line per event, and a summary that pools them.

use std::path::Path;
use std::process::Command;

/// The number after `key` in `text` ("over 431 forecasts" -> 431 for key "over ").
fn number_after(text: &str, key: &str) -> f64 {
    let rest = &text[text
        .find(key)
        .unwrap_or_else(|| panic!("{key:?} in {text}"))
        + key.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {key:?} in {text}"))
}

#[test]
fn each_maintenance_event_is_scored_and_the_summary_pools_them() {
    let out = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/pretrained");
    let o = Command::new(env!("CARGO_BIN_EXE_maintcast"))
        .args(["demo", "--pretrained", "--tick", "0ms", "--machines", "8"])
        .args(["--history-days", "20", "--live-days", "10", "--model-dir"])
        .arg(&model)
        .arg("--out")
        .arg(out.path().join("f.lp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    let events: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  maintenance "))
        .collect();
    let summary = stdout
        .lines()
        .find(|l| l.contains("realized at maintenance:"))
        .unwrap_or_else(|| panic!("no realized line in\n{stdout}"));
    assert!(!events.is_empty(), "the fleet is maintained in 10 days");
    assert_eq!(
        number_after(summary, "maintenance: ") as usize,
        events.len(),
        "{summary}"
    );
    // The summary pools the events: its forecasts are theirs, its MAE their weighted mean.
    let per_event: Vec<(f64, f64)> = events
        .iter()
        .map(|l| (number_after(l, "over "), number_after(l, "realized MAE ")))
        .collect();
    let n: f64 = per_event.iter().map(|(n, _)| n).sum();
    let pooled = per_event.iter().map(|(n, m)| n * m).sum::<f64>() / n;
    assert_eq!(number_after(summary, "days over "), n, "{summary}");
    // Each event's MAE is printed to 0.01 d.
    assert!(
        (number_after(summary, "MAE ") - pooled).abs() <= 0.01,
        "{summary} against {pooled:.3} pooled from\n{}",
        events.join("\n")
    );
}
