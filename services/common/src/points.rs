//! Every InfluxDB point maintcast writes, defined once: measurement, tags, fields and timestamp.
//! The ingest service, the trainer, the demo's line-protocol file and the tests' expectations all
//! build (and read back) points through here, so a renamed tag or field changes in one place.
//! `docs/influxdb.md` describes the same schema for people; `tests/deploy_grafana_queries.rs`
//! checks the dashboards against it.
//!
//! Timestamps are epoch milliseconds (the writers use millisecond precision); the line-protocol
//! file is written in nanoseconds, line protocol's default, so `influx write` needs no flag.
//!
//! A point that cannot be written is an error, never a panic: no field at all, a non-finite
//! value in a field that must hold one, an empty tag value, or a timestamp out of range.
//!
//! Over 400 lines on purpose: every measurement in one file is what lets a renamed field change
//! in one place; about a third of it is the tests that pin each point's line protocol.

use std::collections::HashMap;

use influxdb2::models::{DataPoint, FieldValue, WriteDataPoint};
use maintcast_proto::{Forecast, MaintenanceEvent, Telemetry};

/// Why a point cannot be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PointError {
    #[error("{measurement} point for {series:?} has no field to write")]
    NoFields {
        measurement: &'static str,
        series: String,
    },
    #[error("{measurement} field {field} of {series:?} is {value}, which InfluxDB cannot store")]
    NotFinite {
        measurement: &'static str,
        field: String,
        series: String,
        value: f64,
    },
    #[error("{measurement} tag {tag} is empty")]
    EmptyTag {
        measurement: &'static str,
        tag: &'static str,
    },
    /// Line protocol has no escape for them: one would end the line, and InfluxDB would refuse
    /// the whole batch it came in.
    #[error("{measurement} {what} {value:?} contains control characters")]
    ControlChars {
        measurement: &'static str,
        what: String,
        value: String,
    },
    #[error("{measurement} timestamp {ts_ms} ms is out of range")]
    Timestamp {
        measurement: &'static str,
        ts_ms: i64,
    },
    #[error("reading a {measurement} row: {reason}")]
    Row {
        measurement: &'static str,
        reason: String,
    },
}

/// `maintenance_forecast`: one point per forecast the ingest service (or the demo) makes.
/// Realized accuracy, scored by ingest at each maintenance event (built in
/// `maintcast_ingest::accuracy`, read by the trainer's live gate); docs/influxdb.md lists its tags
/// and fields.
pub mod forecast_accuracy {
    pub const MEASUREMENT: &str = "forecast_accuracy";
}

pub mod forecast {
    pub const MEASUREMENT: &str = "maintenance_forecast";
    /// A shadow model's forecasts: the same tags and fields in a measurement of their own, so no
    /// query of served forecasts (dashboards, alert rules) can take them in by mistake.
    pub const SHADOW_MEASUREMENT: &str = "shadow_forecast";
    pub mod tag {
        pub const MACHINE_ID: &str = "machine_id";
        pub const MODEL: &str = "model";
        pub const MODEL_VERSION: &str = "model_version";
        /// Optional: absent when the telemetry did not say.
        pub const MACHINE_TYPE: &str = "machine_type";
        /// Optional: absent when the telemetry did not say.
        pub const SITE: &str = "site";
    }
    pub mod field {
        /// Float, days from the point's time to the next maintenance.
        pub const DAYS: &str = "days_to_maintenance";
        /// Integer, epoch seconds: the point's time plus `days_to_maintenance`.
        pub const DUE_AT: &str = "due_at";
        /// Float, days: the lower end of the 80 % prediction interval.
        pub const P10: &str = "days_p10";
        /// Float, days: the upper end of the 80 % prediction interval.
        pub const P90: &str = "days_p90";
        /// Integer: the machine's rows in the window (less than the window when left-padded).
        pub const WINDOW_ROWS: &str = "window_rows";
        /// Float 0..1: the share of the model's sensors whose inputs passed every quality check.
        pub const QUALITY_SCORE: &str = "quality_score";
        /// String, only when some check failed: `sensor:flag` pairs, comma-separated.
        pub const QUALITY_FLAGS: &str = "quality_flags";
        /// Boolean: the score is below the service's threshold and the interval was widened.
        pub const LOW_CONFIDENCE: &str = "low_confidence";
    }
}

/// `telemetry`: the raw rows, written by ingest when `write_raw` is on (the trainer's history).
pub mod telemetry {
    pub const MEASUREMENT: &str = "telemetry";
    pub mod tag {
        pub const MACHINE_ID: &str = "machine_id";
        pub const MACHINE_TYPE: &str = "machine_type";
        pub const SITE: &str = "site";
    }
    // Fields: one float per sensor, named as the producer named it. A missing or non-finite
    // reading has no field: absence is how InfluxDB says "no value".
}

/// `maintenance_event`: maintenance done on a machine, written by ingest when `write_raw` is on.
pub mod maintenance_event {
    pub const MEASUREMENT: &str = "maintenance_event";
    pub mod tag {
        pub const MACHINE_ID: &str = "machine_id";
        /// `repair`, `scheduled` or `failure`.
        pub const KIND: &str = "kind";
    }
    pub mod field {
        /// String, possibly empty; InfluxDB needs one field per point.
        pub const NOTE: &str = "note";
    }
}

/// `training_run`: one point per training epoch, written by the trainer and sweeps.
pub mod training_run {
    pub const MEASUREMENT: &str = "training_run";
    pub mod tag {
        pub const MODEL: &str = "model";
        pub const RUN_ID: &str = "run_id";
    }
    pub mod field {
        /// Integer, from 1.
        pub const EPOCH: &str = "epoch";
        pub const TRAIN_LOSS: &str = "train_loss";
        /// Absent when the run has no validation set.
        pub const VAL_MAE: &str = "val_mae";
        /// Absent when the run has no validation set.
        pub const VAL_RMSE: &str = "val_rmse";
        pub const ELAPSED_S: &str = "elapsed_s";
        pub const LR: &str = "lr";
    }
}

/// A point about to be written. Built by the constructors below, which enforce the schema;
/// turned into an `influxdb2` point or a line of line protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    measurement: &'static str,
    tags: Vec<(&'static str, String)>,
    fields: Vec<(String, FieldValue)>,
    ts_ms: i64,
}

impl Point {
    fn new(measurement: &'static str, ts_ms: i64) -> Self {
        Point {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            ts_ms,
        }
    }

    fn tag(mut self, name: &'static str, value: &str) -> Result<Self, PointError> {
        if value.is_empty() {
            return Err(PointError::EmptyTag {
                measurement: self.measurement,
                tag: name,
            });
        }
        self.check_text(&format!("tag {name}"), value)?;
        self.tags.push((name, value.to_string()));
        Ok(self)
    }

    /// An optional tag: absent rather than empty.
    fn tag_opt(self, name: &'static str, value: Option<&str>) -> Result<Self, PointError> {
        match value.filter(|v| !v.is_empty()) {
            Some(v) => self.tag(name, v),
            None => Ok(self),
        }
    }

    fn check_text(&self, what: &str, value: &str) -> Result<(), PointError> {
        if value.chars().any(char::is_control) {
            return Err(PointError::ControlChars {
                measurement: self.measurement,
                what: what.to_string(),
                value: value.to_string(),
            });
        }
        Ok(())
    }

    fn float(mut self, name: &str, value: f64) -> Result<Self, PointError> {
        self.check_text("field name", name)?;
        if !value.is_finite() {
            return Err(PointError::NotFinite {
                measurement: self.measurement,
                field: name.to_string(),
                series: self.series(),
                value,
            });
        }
        self.fields.push((name.to_string(), FieldValue::F64(value)));
        Ok(self)
    }

    fn int(mut self, name: &str, value: i64) -> Self {
        self.fields.push((name.to_string(), FieldValue::I64(value)));
        self
    }

    fn bool(mut self, name: &str, value: bool) -> Self {
        self.fields
            .push((name.to_string(), FieldValue::Bool(value)));
        self
    }

    fn string(mut self, name: &str, value: &str) -> Self {
        self.fields
            .push((name.to_string(), FieldValue::String(value.to_string())));
        self
    }

    fn finish(self) -> Result<Self, PointError> {
        if self.fields.is_empty() {
            return Err(PointError::NoFields {
                measurement: self.measurement,
                series: self.series(),
            });
        }
        Ok(self)
    }

    /// The tag values, for error messages.
    fn series(&self) -> String {
        self.tags
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A forecast. Every value must be finite.
    pub fn forecast(f: &Forecast) -> Result<Self, PointError> {
        Self::forecast_in(forecast::MEASUREMENT, f)
    }

    /// A shadow model's forecast (never served): `shadow_forecast`, otherwise as [`Point::forecast`].
    pub fn shadow_forecast(f: &Forecast) -> Result<Self, PointError> {
        Self::forecast_in(forecast::SHADOW_MEASUREMENT, f)
    }

    fn forecast_in(measurement: &'static str, f: &Forecast) -> Result<Self, PointError> {
        use forecast::{field, tag};
        let mut p = Point::new(measurement, f.ts_ms)
            .tag(tag::MACHINE_ID, &f.machine_id)?
            .tag(tag::MODEL, &f.model)?
            .tag(tag::MODEL_VERSION, &f.model_version)?
            .tag_opt(tag::MACHINE_TYPE, f.machine_type.as_deref())?
            .tag_opt(tag::SITE, f.site.as_deref())?
            .float(field::DAYS, f.days_to_maintenance)?
            .int(field::DUE_AT, f.due_at)
            .float(field::P10, f.days_p10)?
            .float(field::P90, f.days_p90)?
            .int(field::WINDOW_ROWS, i64::from(f.window_rows))
            .float(field::QUALITY_SCORE, f.quality_score)?
            .bool(field::LOW_CONFIDENCE, f.low_confidence);
        if !f.quality_flags.is_empty() {
            p = p.string(field::QUALITY_FLAGS, &f.quality_flags);
        }
        p.finish()
    }

    /// A raw telemetry row: one field per finite sensor value. A row with none is an error
    /// ([`PointError::NoFields`]) the caller decides about; the forecast path does not need it.
    pub fn telemetry(t: &Telemetry) -> Result<Self, PointError> {
        use telemetry::tag;
        let mut p = Point::new(telemetry::MEASUREMENT, t.ts_ms)
            .tag(tag::MACHINE_ID, &t.machine_id)?
            .tag_opt(tag::MACHINE_TYPE, t.machine_type.as_deref())?
            .tag_opt(tag::SITE, t.site.as_deref())?;
        for (name, v) in &t.sensors {
            if v.is_finite() {
                p = p.float(name, *v)?;
            }
        }
        p.finish()
    }

    /// A maintenance event.
    pub fn maintenance_event(e: &MaintenanceEvent) -> Result<Self, PointError> {
        use maintenance_event::{field, tag};
        Ok(Point::new(maintenance_event::MEASUREMENT, e.ts_ms)
            .tag(tag::MACHINE_ID, &e.machine_id)?
            .tag(tag::KIND, e.kind.as_str())?
            .string(field::NOTE, &e.note))
    }

    /// One training epoch. Non-finite metrics (no validation set, a diverged loss) are left out
    /// rather than refused: the epoch number is always written, so the point is never empty.
    pub fn training_epoch(
        model: &str,
        run_id: &str,
        e: &TrainingEpoch,
        ts_ms: i64,
    ) -> Result<Self, PointError> {
        use training_run::{field, tag};
        let mut p = Point::new(training_run::MEASUREMENT, ts_ms)
            .tag(tag::MODEL, model)?
            .tag(tag::RUN_ID, run_id)?
            .int(field::EPOCH, e.epoch as i64);
        for (name, v) in [
            (field::TRAIN_LOSS, e.train_loss),
            (field::VAL_MAE, e.val_mae),
            (field::VAL_RMSE, e.val_rmse),
            (field::ELAPSED_S, e.elapsed_s),
            (field::LR, e.lr),
        ] {
            if v.is_finite() {
                p = p.float(name, v)?;
            }
        }
        p.finish()
    }

    pub fn measurement(&self) -> &'static str {
        self.measurement
    }

    pub fn ts_ms(&self) -> i64 {
        self.ts_ms
    }

    fn build(&self, ts: i64) -> DataPoint {
        let mut b = DataPoint::builder(self.measurement);
        for (k, v) in &self.tags {
            b = b.tag(*k, v.as_str());
        }
        for (k, v) in &self.fields {
            b = b.field(k.as_str(), v.clone());
        }
        b.timestamp(ts)
            .build()
            .expect("constructors refuse points without fields")
    }

    /// The point for a writer using millisecond precision (`maintcast_common::influx::Writer`).
    pub fn data_point(&self) -> DataPoint {
        self.build(self.ts_ms)
    }

    /// One line of line protocol with a nanosecond timestamp, newline included.
    pub fn line_protocol(&self) -> Result<String, PointError> {
        let ns = self
            .ts_ms
            .checked_mul(1_000_000)
            .ok_or(PointError::Timestamp {
                measurement: self.measurement,
                ts_ms: self.ts_ms,
            })?;
        let mut buf = Vec::new();
        self.build(ns)
            .write_data_point_to(&mut buf)
            .expect("writing to a Vec cannot fail");
        Ok(String::from_utf8(buf).expect("line protocol from UTF-8 strings is UTF-8"))
    }
}

/// What the trainer reports of one epoch (`maintcast_models::train::EpochReport` has more).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_mae: f64,
    pub val_rmse: f64,
    pub elapsed_s: f64,
    pub lr: f64,
}

/// `due_at` of a forecast made at `ts_ms` for `days` from then: epoch seconds, rounded to the
/// second. The one rule for ingest, the demo and the tests.
pub fn due_at(ts_ms: i64, days: f64) -> i64 {
    ts_ms.div_euclid(1000) + (days * 86_400.0).round() as i64
}

/// A Flux query for the `maintenance_forecast` points of `model` in `bucket`, one row per point
/// with the fields pivoted into columns: what [`forecast_from_row`] reads.
pub fn forecasts_flux(bucket: &str, model: &str, range: &str) -> String {
    forecasts_flux_in(bucket, forecast::MEASUREMENT, model, range)
}

/// As [`forecasts_flux`], for the forecasts in `measurement` (`shadow_forecast`, say).
pub fn forecasts_flux_in(bucket: &str, measurement: &str, model: &str, range: &str) -> String {
    format!(
        r#"from(bucket: "{bucket}") |> range({range})
  |> filter(fn: (r) => r._measurement == "{m}" and r.{t} == "{model}")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")"#,
        m = measurement,
        t = forecast::tag::MODEL,
    )
}

/// Reads a forecast back from one pivoted Flux row (column -> value, as the annotated-CSV
/// reader of the tests returns it), so an expectation is compared with what was stored.
pub fn forecast_from_row(row: &HashMap<String, String>) -> Result<Forecast, PointError> {
    use forecast::{field, tag};
    let err = |reason: String| PointError::Row {
        measurement: forecast::MEASUREMENT,
        reason,
    };
    let get = |k: &str| {
        row.get(k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| err(format!("no {k} column in {row:?}")))
    };
    let num = |k: &str| -> Result<f64, PointError> {
        get(k)?.parse::<f64>().map_err(|e| err(format!("{k}: {e}")))
    };
    let int = |k: &str| -> Result<i64, PointError> {
        get(k)?.parse::<i64>().map_err(|e| err(format!("{k}: {e}")))
    };
    let time = get("_time")?;
    let ts_ms = chrono::DateTime::parse_from_rfc3339(time)
        .map_err(|e| err(format!("_time {time:?}: {e}")))?
        .timestamp_millis();
    let opt = |k: &str| row.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(Forecast {
        machine_id: get(tag::MACHINE_ID)?.clone(),
        ts_ms,
        model: get(tag::MODEL)?.clone(),
        model_version: get(tag::MODEL_VERSION)?.clone(),
        days_to_maintenance: num(field::DAYS)?,
        due_at: int(field::DUE_AT)?,
        days_p10: num(field::P10)?,
        days_p90: num(field::P90)?,
        window_rows: u32::try_from(int(field::WINDOW_ROWS)?)
            .map_err(|e| err(format!("{}: {e}", field::WINDOW_ROWS)))?,
        machine_type: opt(tag::MACHINE_TYPE),
        site: opt(tag::SITE),
        // Points written before input quality existed have none of these: clean.
        quality_score: match opt(field::QUALITY_SCORE) {
            Some(_) => num(field::QUALITY_SCORE)?,
            None => 1.0,
        },
        quality_flags: opt(field::QUALITY_FLAGS).unwrap_or_default(),
        low_confidence: opt(field::LOW_CONFIDENCE).is_some_and(|v| v == "true"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintcast_proto::MaintenanceKind;

    fn forecast() -> Forecast {
        Forecast {
            machine_id: "press-017".into(),
            ts_ms: 1_767_225_600_000,
            model: "demo".into(),
            model_version: "v1".into(),
            days_to_maintenance: 2.5,
            due_at: due_at(1_767_225_600_000, 2.5),
            days_p10: 1.0,
            days_p90: 4.0,
            window_rows: 60,
            machine_type: Some("press".into()),
            site: Some("new york".into()),
            quality_score: 1.0,
            quality_flags: String::new(),
            low_confidence: false,
        }
    }

    #[test]
    fn a_forecast_is_one_line_of_line_protocol() {
        let line = Point::forecast(&forecast())
            .unwrap()
            .line_protocol()
            .unwrap();
        assert_eq!(
            line,
            "maintenance_forecast,machine_id=press-017,machine_type=press,model=demo,\
             model_version=v1,site=new\\ york days_p10=1,days_p90=4,days_to_maintenance=2.5,\
             due_at=1767441600i,low_confidence=f,quality_score=1,window_rows=60i \
             1767225600000000000\n"
        );
        let mut doubtful = forecast();
        doubtful.quality_score = 0.5;
        doubtful.quality_flags = "vibration_mm_s:stuck,oil_pressure_bar:drift".into();
        doubtful.low_confidence = true;
        let line = Point::forecast(&doubtful).unwrap().line_protocol().unwrap();
        assert!(
            line.contains(
                "low_confidence=t,quality_flags=\"vibration_mm_s:stuck,oil_pressure_bar:drift\",quality_score=0.5"
            ),
            "{line}"
        );
        let mut buf = Vec::new();
        Point::forecast(&forecast())
            .unwrap()
            .data_point()
            .write_data_point_to(&mut buf)
            .unwrap();
        assert!(
            String::from_utf8(buf)
                .unwrap()
                .ends_with(" 1767225600000\n"),
            "the writers' points are in milliseconds"
        );
    }

    #[test]
    fn optional_tags_are_left_out_not_empty() {
        let mut f = forecast();
        f.machine_type = None;
        f.site = Some(String::new());
        let line = Point::forecast(&f).unwrap().line_protocol().unwrap();
        assert!(
            !line.contains("machine_type") && !line.contains("site"),
            "{line}"
        );
    }

    #[test]
    fn unwritable_forecasts_are_errors() {
        let mut f = forecast();
        f.days_p90 = f64::INFINITY;
        let e = Point::forecast(&f).unwrap_err();
        assert!(
            matches!(&e, PointError::NotFinite { field, .. } if field == "days_p90"),
            "{e}"
        );
        assert!(e.to_string().contains("press-017"), "{e}");
        let mut f = forecast();
        f.days_to_maintenance = f64::NAN;
        assert!(Point::forecast(&f).is_err());
        let mut f = forecast();
        f.model_version.clear();
        assert_eq!(
            Point::forecast(&f).unwrap_err(),
            PointError::EmptyTag {
                measurement: forecast::MEASUREMENT,
                tag: forecast::tag::MODEL_VERSION
            }
        );
        let mut f = forecast();
        f.site = Some("hall 3\nrow 2".into());
        let e = Point::forecast(&f).unwrap_err();
        assert!(matches!(e, PointError::ControlChars { .. }), "{e}");
        let mut f = forecast();
        f.ts_ms = i64::MAX / 10;
        let p = Point::forecast(&f).unwrap();
        assert!(matches!(
            p.line_protocol(),
            Err(PointError::Timestamp { .. })
        ));
    }

    #[test]
    fn telemetry_skips_missing_values_and_refuses_a_row_without_any() {
        let mut t = Telemetry {
            machine_id: "m1".into(),
            ts_ms: 5,
            sensors: vec![
                ("a".into(), 1.5),
                ("b".into(), f64::NAN),
                ("c".into(), -2.0),
            ],
            machine_type: None,
            site: Some("s".into()),
        };
        let line = Point::telemetry(&t).unwrap().line_protocol().unwrap();
        assert_eq!(line, "telemetry,machine_id=m1,site=s a=1.5,c=-2 5000000\n");
        t.sensors = vec![("a\tb".into(), 1.0)];
        assert!(matches!(
            Point::telemetry(&t),
            Err(PointError::ControlChars { .. })
        ));
        t.sensors = vec![("b".into(), f64::NAN)];
        let e = Point::telemetry(&t).unwrap_err();
        assert!(matches!(e, PointError::NoFields { .. }), "{e}");
        assert!(e.to_string().contains("m1"), "{e}");
    }

    #[test]
    fn an_event_always_has_its_note_field() {
        let e = MaintenanceEvent {
            machine_id: "m1".into(),
            ts_ms: 7,
            kind: MaintenanceKind::Repair,
            note: String::new(),
        };
        let line = Point::maintenance_event(&e)
            .unwrap()
            .line_protocol()
            .unwrap();
        assert_eq!(
            line,
            "maintenance_event,kind=repair,machine_id=m1 note=\"\" 7000000\n"
        );
    }

    #[test]
    fn an_epoch_leaves_out_what_it_did_not_measure() {
        let e = TrainingEpoch {
            epoch: 3,
            train_loss: 2.5,
            val_mae: 1.5,
            val_rmse: f64::NAN,
            elapsed_s: 4.0,
            lr: 0.001,
        };
        let line = Point::training_epoch("cmapss", "abc123", &e, 1_700_000_000_000)
            .unwrap()
            .line_protocol()
            .unwrap();
        assert_eq!(
            line,
            "training_run,model=cmapss,run_id=abc123 elapsed_s=4,epoch=3i,lr=0.001,\
             train_loss=2.5,val_mae=1.5 1700000000000000000\n"
        );
        assert!(Point::training_epoch("", "r", &e, 0).is_err());
    }

    #[test]
    fn due_at_rounds_to_the_second_and_floors_negative_times() {
        assert_eq!(due_at(1_000_999, 0.0), 1_000);
        assert_eq!(due_at(-1, 0.0), -1);
        assert_eq!(due_at(0, 1.0), 86_400);
        assert_eq!(due_at(0, 0.5 / 86_400.0), 1);
    }

    #[test]
    fn a_forecast_reads_back_from_a_flux_row() {
        let f = forecast();
        let row: HashMap<String, String> = [
            ("_time", "2026-01-01T00:00:00Z"),
            ("machine_id", "press-017"),
            ("model", "demo"),
            ("model_version", "v1"),
            ("machine_type", "press"),
            ("site", "new york"),
            ("days_to_maintenance", "2.5"),
            ("due_at", "1767441600"),
            ("days_p10", "1"),
            ("days_p90", "4"),
            ("window_rows", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(forecast_from_row(&row).unwrap(), f);
        let mut broken = row.clone();
        broken.remove("days_p10");
        let e = forecast_from_row(&broken).unwrap_err().to_string();
        assert!(e.contains("days_p10"), "{e}");
        broken = row;
        broken.insert("window_rows".into(), "-1".into());
        assert!(forecast_from_row(&broken).is_err());
        assert!(forecasts_flux("b", "demo", "start: 0").contains(r#"r.model == "demo""#));
    }

    #[test]
    fn docs_name_every_measurement_tag_and_field() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/influxdb.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let names = [
            forecast::MEASUREMENT,
            forecast::tag::MACHINE_ID,
            forecast::tag::MODEL,
            forecast::tag::MODEL_VERSION,
            forecast::tag::MACHINE_TYPE,
            forecast::tag::SITE,
            forecast::field::DAYS,
            forecast::field::DUE_AT,
            forecast::field::P10,
            forecast::field::P90,
            forecast::field::WINDOW_ROWS,
            forecast::SHADOW_MEASUREMENT,
            forecast_accuracy::MEASUREMENT,
            telemetry::MEASUREMENT,
            telemetry::tag::MACHINE_ID,
            telemetry::tag::MACHINE_TYPE,
            telemetry::tag::SITE,
            maintenance_event::MEASUREMENT,
            maintenance_event::tag::MACHINE_ID,
            maintenance_event::tag::KIND,
            maintenance_event::field::NOTE,
            training_run::MEASUREMENT,
            training_run::tag::MODEL,
            training_run::tag::RUN_ID,
            training_run::field::EPOCH,
            training_run::field::TRAIN_LOSS,
            training_run::field::VAL_MAE,
            training_run::field::VAL_RMSE,
            training_run::field::ELAPSED_S,
            training_run::field::LR,
        ];
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/influxdb.md does not name `{name}`"
            );
        }
    }
}
