//! Machine histories: the trainer's input, whatever the source (CSV files, NASA C-MAPSS, InfluxDB,
//! the simulator).
//!
//! # CSV format
//! Telemetry is one CSV file with a header row:
//! - `machine_id` (required): the machine the row belongs to;
//! - `ts` (required): RFC 3339 (`2026-11-29T06:00:00Z`) or integer epoch milliseconds;
//! - `machine_type`, `site` (optional): taken from a machine's first row;
//! - every other column is a sensor, one number per cell. An empty, non-numeric or non-finite cell
//!   is kept as missing (NaN): histories hold rows as they were received, and the data path
//!   (`crate::prep`) fills gaps when it builds windows, with the rule the ingest service applies.
//!
//! Rows may come in any order; each machine's rows are sorted by `ts` and a repeated `ts` keeps the
//! first row (the arrival rule of `crate::prep` applied to rows read whole).
//!
//! Maintenance events live in a second CSV file with header `machine_id,ts,kind,note` (`kind` and
//! `note` optional and unused for training: every event resets the machine). When `--data` names a
//! directory, the files are `telemetry.csv` and, if present, `events.csv` in it.
//!
//! # C-MAPSS
//! `train_FDxxx.txt`, `test_FDxxx.txt` and `RUL_FDxxx.txt` as NASA distributes them. Each unit is a
//! machine (`unit-001`, ...), one cycle is one day (`ts` = cycle days after the epoch), sensors are
//! `op_setting_1..3` and `sensor_1..21`. A training unit's last cycle is its failure, recorded as a
//! maintenance event at that row's `ts` (so that row's label is 0 days). Test units have no events;
//! their true remaining life after the last row comes from `RUL_FDxxx.txt`.
//!
//! Over 400 lines only by its inline tests: the CSV and C-MAPSS readers share the row type and
//! the arrival rule, and their tests sit beside them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::prep::{self, Arrival};

pub const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug, Default)]
pub struct History {
    pub machines: Vec<MachineHistory>,
}

#[derive(Clone, Debug, Default)]
pub struct MachineHistory {
    pub machine_id: String,
    pub machine_type: Option<String>,
    pub site: Option<String>,
    /// Epoch milliseconds, strictly increasing.
    pub ts: Vec<i64>,
    pub sensors: Vec<String>,
    /// Row-major `ts.len() x sensors.len()`, as received: NaN where a value was missing or not
    /// finite (the data path fills it when it builds windows).
    pub values: Vec<f32>,
    /// Maintenance event times, epoch ms, sorted.
    pub events: Vec<i64>,
    /// The kind of each event that has one (`failure`, `repair`, `scheduled`, ...), by time; the
    /// label policy (`data.ends_on`) chooses which kinds end a cycle.
    pub event_kinds: BTreeMap<i64, String>,
}

impl MachineHistory {
    /// Offers a row as a stream receives it, through the arrival rule ([`prep::arrival`]):
    /// accepted rows are appended, duplicates and late rows are not. `values` are in `sensors`
    /// order. What the ingest service holds of a machine, built offline.
    pub fn offer_row(&mut self, ts: i64, values: &[f32]) -> Arrival {
        let a = prep::arrival(self.ts.last().copied(), self.events.last().copied(), ts);
        if a == Arrival::Accept {
            self.ts.push(ts);
            self.values.extend_from_slice(values);
        }
        a
    }

    /// Offers a maintenance event as a stream receives it: applied (recorded) unless it is at or
    /// before the last applied one ([`prep::event_applies`]).
    pub fn offer_event(&mut self, ts: i64) -> bool {
        let applies = prep::event_applies(self.events.last().copied(), ts);
        if applies {
            self.events.push(ts);
        }
        applies
    }

    pub fn n_rows(&self) -> usize {
        self.ts.len()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let n = self.sensors.len();
        &self.values[i * n..(i + 1) * n]
    }

    /// Positions of `features` among this machine's sensors, or an error naming the missing one.
    pub fn columns(&self, features: &[String]) -> Result<Vec<usize>> {
        features
            .iter()
            .map(|f| {
                self.sensors.iter().position(|s| s == f).ok_or_else(|| {
                    ModelError::Data(format!(
                        "machine {} has no sensor {f:?} (it has {:?})",
                        self.machine_id, self.sensors
                    ))
                })
            })
            .collect()
    }
}

impl History {
    /// Sensor names present in every machine, in the first machine's order.
    pub fn common_sensors(&self) -> Vec<String> {
        let Some(first) = self.machines.first() else {
            return Vec::new();
        };
        first
            .sensors
            .iter()
            .filter(|s| self.machines.iter().all(|m| m.sensors.contains(s)))
            .cloned()
            .collect()
    }

    /// First and last row time over all machines, epoch ms.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let lo = self.machines.iter().filter_map(|m| m.ts.first()).min()?;
        let hi = self.machines.iter().filter_map(|m| m.ts.last()).max()?;
        Some((*lo, *hi))
    }

    pub fn n_rows(&self) -> usize {
        self.machines.iter().map(|m| m.n_rows()).sum()
    }
}

/// Parses `ts` as integer epoch milliseconds or RFC 3339.
pub fn parse_ts(s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ModelError::Data(format!("bad ts {s:?}: {e} (want RFC 3339 or epoch ms)")))
}

/// Where the CSV files of a history are: `data` is the telemetry file or a directory holding
/// `telemetry.csv` (and maybe `events.csv`); an explicit `events` path wins.
pub fn csv_paths(data: &Path, events: Option<&Path>) -> (PathBuf, Option<PathBuf>) {
    if data.is_dir() {
        let ev = data.join("events.csv");
        let ev = events
            .map(Path::to_path_buf)
            .or_else(|| ev.exists().then_some(ev));
        (data.join("telemetry.csv"), ev)
    } else {
        (data.to_path_buf(), events.map(Path::to_path_buf))
    }
}

pub fn read_csv(telemetry: &Path, events: Option<&Path>) -> Result<History> {
    let file = std::fs::File::open(telemetry).map_err(ModelError::io(telemetry))?;
    let mut history = read_csv_from(file, &telemetry.display().to_string())?;
    if let Some(ev) = events {
        let file = std::fs::File::open(ev).map_err(ModelError::io(ev))?;
        attach_events(&mut history, file, &ev.display().to_string())?;
    }
    Ok(history)
}

struct Builder {
    machine_type: Option<String>,
    site: Option<String>,
    rows: Vec<(i64, Vec<f32>)>,
}

/// Reads telemetry rows; `origin` names the source in error messages.
pub fn read_csv_from<R: std::io::Read>(reader: R, origin: &str) -> Result<History> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = rdr
        .headers()
        .map_err(|e| ModelError::Data(format!("{origin}: {e}")))?
        .clone();
    let find = |name: &str| header.iter().position(|h| h == name);
    let id_col = find("machine_id")
        .ok_or_else(|| ModelError::Data(format!("{origin}: no `machine_id` column")))?;
    let ts_col = find("ts").ok_or_else(|| ModelError::Data(format!("{origin}: no `ts` column")))?;
    let type_col = find("machine_type");
    let site_col = find("site");
    let sensor_cols: Vec<usize> = (0..header.len())
        .filter(|&c| c != id_col && c != ts_col && Some(c) != type_col && Some(c) != site_col)
        .collect();
    if sensor_cols.is_empty() {
        return Err(ModelError::Data(format!("{origin}: no sensor columns")));
    }
    let sensors: Vec<String> = sensor_cols.iter().map(|&c| header[c].to_string()).collect();

    // BTreeMap keeps machines in a stable order, so splits by seed are reproducible.
    let mut machines: BTreeMap<String, Builder> = BTreeMap::new();
    for (line, rec) in rdr.records().enumerate() {
        let at = || format!("{origin}: data row {}", line + 1);
        let rec = rec.map_err(|e| ModelError::Data(format!("{}: {e}", at())))?;
        let id = rec.get(id_col).unwrap_or_default();
        if id.is_empty() {
            return Err(ModelError::Data(format!("{}: empty machine_id", at())));
        }
        let ts = parse_ts(rec.get(ts_col).unwrap_or_default())
            .map_err(|e| ModelError::Data(format!("{}: {e}", at())))?;
        let values = sensor_cols
            .iter()
            .map(|&c| {
                rec.get(c)
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|v| v.is_finite())
                    .unwrap_or(f32::NAN)
            })
            .collect();
        let opt = |c: Option<usize>| c.and_then(|c| rec.get(c)).filter(|s| !s.is_empty());
        let b = machines.entry(id.to_string()).or_insert_with(|| Builder {
            machine_type: opt(type_col).map(str::to_string),
            site: opt(site_col).map(str::to_string),
            rows: Vec::new(),
        });
        b.rows.push((ts, values));
    }
    let mut out = Vec::with_capacity(machines.len());
    for (machine_id, mut b) in machines {
        // A stable sort, so the first of rows sharing a ts is the one the arrival rule keeps.
        b.rows.sort_by_key(|r| r.0);
        let mut m = MachineHistory {
            machine_id,
            machine_type: b.machine_type,
            site: b.site,
            sensors: sensors.clone(),
            ..Default::default()
        };
        for (ts, values) in &b.rows {
            m.offer_row(*ts, values);
        }
        out.push(m);
    }
    Ok(History { machines: out })
}

/// Adds events (`machine_id,ts[,kind][,note]`) to the machines they name; events of unknown
/// machines are ignored because a machine without telemetry has nothing to learn from.
pub fn attach_events<R: std::io::Read>(
    history: &mut History,
    reader: R,
    origin: &str,
) -> Result<()> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(reader);
    let header = rdr
        .headers()
        .map_err(|e| ModelError::Data(format!("{origin}: {e}")))?
        .clone();
    let kind_col = header.iter().position(|h| h == "kind");
    let (Some(id_col), Some(ts_col)) = (
        header.iter().position(|h| h == "machine_id"),
        header.iter().position(|h| h == "ts"),
    ) else {
        return Err(ModelError::Data(format!(
            "{origin}: events need `machine_id` and `ts` columns"
        )));
    };
    let index: HashMap<String, usize> = history
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| (m.machine_id.clone(), i))
        .collect();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| ModelError::Data(format!("{origin}: row {}: {e}", line + 1)))?;
        let ts = parse_ts(rec.get(ts_col).unwrap_or_default())
            .map_err(|e| ModelError::Data(format!("{origin}: row {}: {e}", line + 1)))?;
        if let Some(&i) = rec.get(id_col).and_then(|id| index.get(id)) {
            history.machines[i].events.push(ts);
            if let Some(kind) = kind_col.and_then(|c| rec.get(c)).filter(|k| !k.is_empty()) {
                history.machines[i].event_kinds.insert(ts, kind.to_string());
            }
        }
    }
    for m in &mut history.machines {
        m.events.sort_unstable();
        m.events.dedup();
    }
    Ok(())
}

/// One C-MAPSS subset: run-to-failure training units, truncated test units and their true RUL.
pub struct Cmapss {
    pub train: History,
    pub test: History,
    /// True remaining cycles (days) after each test unit's last row, in `test.machines` order.
    pub test_rul: Vec<f32>,
}

pub fn cmapss_sensor_names() -> Vec<String> {
    (1..=3)
        .map(|i| format!("op_setting_{i}"))
        .chain((1..=21).map(|i| format!("sensor_{i}")))
        .collect()
}

/// Reads `train_<subset>.txt`, `test_<subset>.txt` and `RUL_<subset>.txt` from `dir`.
pub fn read_cmapss(dir: &Path, subset: &str) -> Result<Cmapss> {
    let read = |kind: &str| -> Result<(PathBuf, String)> {
        let p = dir.join(format!("{kind}_{subset}.txt"));
        let text = std::fs::read_to_string(&p).map_err(ModelError::io(&p))?;
        Ok((p, text))
    };
    let (p, text) = read("train")?;
    let mut train = parse_cmapss(&text, &p)?;
    for m in &mut train.machines {
        // The last training cycle is the failure: that is the maintenance event.
        let last = *m.ts.last().expect("parse_cmapss never yields empty units");
        m.events = vec![last];
        m.event_kinds.insert(last, "failure".into());
    }
    let (p, text) = read("test")?;
    let test = parse_cmapss(&text, &p)?;
    let (p, text) = read("RUL")?;
    let test_rul = text
        .split_whitespace()
        .map(|t| {
            t.parse::<f32>()
                .map_err(|e| ModelError::Data(format!("{}: {t:?}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    if test_rul.len() != test.machines.len() {
        return Err(ModelError::Data(format!(
            "{}: {} values for {} test units",
            p.display(),
            test_rul.len(),
            test.machines.len()
        )));
    }
    Ok(Cmapss {
        train,
        test,
        test_rul,
    })
}

fn parse_cmapss(text: &str, path: &Path) -> Result<History> {
    let names = cmapss_sensor_names();
    let mut units: BTreeMap<u32, MachineHistory> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| ModelError::Data(format!("{}:{}: {what}", path.display(), i + 1));
        let cols: Vec<f64> = line
            .split_whitespace()
            .map(|t| t.parse::<f64>().map_err(|e| bad(format!("{t:?}: {e}"))))
            .collect::<Result<_>>()?;
        if cols.len() != 2 + names.len() {
            return Err(bad(format!(
                "{} columns, want {}",
                cols.len(),
                2 + names.len()
            )));
        }
        let unit = cols[0] as u32;
        let m = units.entry(unit).or_insert_with(|| MachineHistory {
            machine_id: format!("unit-{unit:03}"),
            sensors: names.clone(),
            ..Default::default()
        });
        let ts = cols[1] as i64 * DAY_MS;
        if m.ts.last().is_some_and(|&last| last >= ts) {
            return Err(bad(format!(
                "cycle {} of unit {unit} is out of order",
                cols[1]
            )));
        }
        m.ts.push(ts);
        m.values.extend(cols[2..].iter().map(|&v| v as f32));
    }
    Ok(History {
        machines: units.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_sorts_rows_fills_gaps_and_reads_both_ts_forms() {
        let text = "machine_id,ts,machine_type,temp,vib\n\
                    m2,2026-01-01T00:00:00Z,press,1.0,2.0\n\
                    m1,2000,lathe,5.0,\n\
                    m1,1000,lathe,,7.0\n\
                    m1,3000,lathe,6.0,8.0\n\
                    m1,3000,lathe,99.0,99.0\n";
        let h = read_csv_from(text.as_bytes(), "t").unwrap();
        assert_eq!(h.machines.len(), 2);
        let m1 = &h.machines[0];
        assert_eq!(m1.machine_id, "m1");
        assert_eq!(m1.machine_type.as_deref(), Some("lathe"));
        assert_eq!(m1.sensors, ["temp", "vib"]);
        assert_eq!(m1.ts, [1000, 2000, 3000]);
        // gaps stay missing (the data path fills them); a repeated ts keeps the first row
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&m1.values),
            bits(&[f32::NAN, 7.0, 5.0, f32::NAN, 6.0, 8.0])
        );
        assert_eq!(h.machines[1].ts, [1_767_225_600_000]);
    }

    #[test]
    fn csv_errors_name_the_problem() {
        let e = read_csv_from("id,ts,a\nx,1,2\n".as_bytes(), "f.csv").unwrap_err();
        assert!(e.to_string().contains("machine_id"), "{e}");
        let e = read_csv_from("machine_id,ts,a\nx,yesterday,2\n".as_bytes(), "f.csv").unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
    }

    #[test]
    fn offered_rows_and_events_follow_the_arrival_rule() {
        let mut m = MachineHistory {
            sensors: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(m.offer_row(10, &[1.0]), Arrival::Accept);
        assert_eq!(m.offer_row(10, &[2.0]), Arrival::Duplicate);
        assert_eq!(m.offer_row(5, &[3.0]), Arrival::Late);
        assert!(m.offer_event(8));
        assert!(!m.offer_event(7), "stale event");
        assert_eq!(m.offer_row(8, &[4.0]), Arrival::Late);
        assert_eq!(m.offer_row(12, &[5.0]), Arrival::Accept);
        assert_eq!(
            (m.ts, m.values, m.events),
            (vec![10, 12], vec![1.0, 5.0], vec![8])
        );
    }

    #[test]
    fn events_attach_sorted_and_unknown_machines_are_ignored() {
        let mut h = read_csv_from("machine_id,ts,a\nm,1,1\nm,2,2\n".as_bytes(), "t").unwrap();
        attach_events(
            &mut h,
            "machine_id,ts,kind,note\nm,5,repair,x\nq,1,failure,\nm,3,scheduled\n".as_bytes(),
            "e",
        )
        .unwrap();
        assert_eq!(h.machines[0].events, [3, 5]);
        let kinds: Vec<(i64, &str)> = h.machines[0]
            .event_kinds
            .iter()
            .map(|(t, k)| (*t, k.as_str()))
            .collect();
        assert_eq!(kinds, [(3, "scheduled"), (5, "repair")]);
    }

    #[test]
    fn cmapss_last_training_cycle_is_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let row = |u: u32, c: u32| {
            let mut s = format!("{u} {c}");
            for k in 0..24 {
                s.push_str(&format!(" {}", k as f32 + c as f32 * 0.5));
            }
            s + "\n"
        };
        let train: String = [row(1, 1), row(1, 2), row(1, 3), row(2, 1), row(2, 2)].concat();
        let test: String = [row(1, 1), row(2, 1), row(2, 2)].concat();
        std::fs::write(dir.path().join("train_FD009.txt"), train).unwrap();
        std::fs::write(dir.path().join("test_FD009.txt"), test).unwrap();
        std::fs::write(dir.path().join("RUL_FD009.txt"), "10\n20\n").unwrap();
        let c = read_cmapss(dir.path(), "FD009").unwrap();
        assert_eq!(c.train.machines.len(), 2);
        assert_eq!(c.train.machines[0].events, [3 * DAY_MS]);
        assert_eq!(c.train.machines[1].events, [2 * DAY_MS]);
        assert_eq!(c.train.machines[0].sensors.len(), 24);
        assert_eq!(c.train.machines[0].row(1)[3], 3.0 + 1.0);
        assert!(c.test.machines.iter().all(|m| m.events.is_empty()));
        assert_eq!(c.test_rul, [10.0, 20.0]);
        std::fs::write(dir.path().join("RUL_FD009.txt"), "10\n").unwrap();
        assert!(read_cmapss(dir.path(), "FD009").is_err());
    }
}
