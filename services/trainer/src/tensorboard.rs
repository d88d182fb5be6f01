//! TensorBoard event files: scalars per epoch and a run's settings as text.
//!
//! `tensorboard-rs` was the candidate crate, but it has no text summaries, panics on I/O errors and
//! pulls in `protobuf` 2 and `image` 0.23; the format is small enough to write here. A file is a
//! sequence of TFRecords (`u64` length, masked CRC-32C of the length, the bytes, masked CRC-32C of
//! the bytes), each holding one `tensorflow.Event` protobuf. The messages below are the subset of
//! `tensorflow/core/util/event.proto` and `summary.proto` that we write, with the same field
//! numbers, so TensorBoard's own reader decodes them (`scripts/check_tensorboard.py` checks that).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of every file: "brain.Event:2".
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Value", tags = "2, 8")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `tensorflow.DataType`; 7 is `DT_STRING`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// No dimensions: a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {}

const DT_STRING: i32 = 7;
const FILE_VERSION: &str = "brain.Event:2";

/// The checksum TFRecord stores: CRC-32C rotated and offset, because a CRC of data that itself
/// contains CRCs is weak.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends events to one `events.out.tfevents.*` file. Each `flush` leaves a file TensorBoard can
/// read, so a run killed mid-way still shows its finished epochs.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if needed).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // TensorBoard finds files by the "tfevents" in their name; the rest only has to be unique.
        let path = dir.join(format!(
            "events.out.tfevents.{secs}.maintcast.{}",
            std::process::id()
        ));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        w.write_event(&Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.into())),
        })?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> anyhow::Result<()> {
        self.add_values(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(Value::SimpleValue(value)),
            }],
        )
    }

    /// Several scalars of one step in a single event.
    pub fn add_scalars(&mut self, step: i64, values: &[(&str, f32)]) -> anyhow::Result<()> {
        let values = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: (*tag).into(),
                metadata: None,
                value: Some(Value::SimpleValue(*v)),
            })
            .collect();
        self.add_values(step, values)
    }

    /// A text summary (rendered as Markdown by TensorBoard's Text tab).
    pub fn add_text(&mut self, tag: &str, text: &str, step: i64) -> anyhow::Result<()> {
        self.add_values(
            step,
            vec![SummaryValue {
                tag: tag.into(),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                        // TextPluginData { version: 0 } encodes to nothing.
                        content: Vec::new(),
                    }),
                }),
                value: Some(Value::Tensor(TensorProto {
                    dtype: DT_STRING,
                    tensor_shape: Some(TensorShapeProto {}),
                    string_val: vec![text.as_bytes().to_vec()],
                })),
            }],
        )
    }

    fn add_values(&mut self, step: i64, value: Vec<SummaryValue>) -> anyhow::Result<()> {
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(What::Summary(Summary { value })),
        })
    }

    fn write_event(&mut self, event: &Event) -> anyhow::Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let w = &mut self.out;
        w.write_all(&len)
            .and_then(|_| w.write_all(&masked_crc32c(&len).to_le_bytes()))
            .and_then(|_| w.write_all(&data))
            .and_then(|_| w.write_all(&masked_crc32c(&data).to_le_bytes()))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads every event of a file, checking both checksums of every record. Used by the tests (CI has
/// no TensorBoard) and by anyone who wants the numbers back without Python.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        if rest.len() < 12 {
            bail!("{}: truncated record header at byte {at}", path.display());
        }
        let (len_bytes, crc) = (&rest[..8], u32::from_le_bytes(rest[8..12].try_into()?));
        if masked_crc32c(len_bytes) != crc {
            bail!("{}: bad length checksum at byte {at}", path.display());
        }
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into()?))?;
        let end = 12usize
            .checked_add(len)
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= rest.len())
            .with_context(|| format!("{}: truncated record at byte {at}", path.display()))?;
        let data = &rest[12..12 + len];
        let crc = u32::from_le_bytes(rest[12 + len..end].try_into()?);
        if masked_crc32c(data) != crc {
            bail!("{}: bad data checksum at byte {at}", path.display());
        }
        events.push(
            Event::decode(data)
                .with_context(|| format!("{}: undecodable event at byte {at}", path.display()))?,
        );
        rest = &rest[end..];
    }
    Ok(events)
}

/// The event files in `dir`, oldest name first.
pub fn event_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `(step, value)` of every scalar named `tag` in `events`.
pub fn scalars(events: &[Event], tag: &str) -> Vec<(i64, f32)> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some((e.step, s)),
            _ => None,
        })
        .flat_map(|(step, s)| {
            s.value.iter().filter_map(move |v| match v.value {
                Some(Value::SimpleValue(x)) if v.tag == tag => Some((step, x)),
                _ => None,
            })
        })
        .collect()
}

/// The texts named `tag` in `events`.
pub fn texts(events: &[Event], tag: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some(s),
            _ => None,
        })
        .flat_map(|s| s.value.iter())
        .filter(|v| v.tag == tag)
        .filter_map(|v| match &v.value {
            Some(Value::Tensor(t)) => t
                .string_val
                .first()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        // The standard check value of CRC-32C (RFC 3720, B.4) tells it apart from zlib's CRC-32.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // Masked values from TensorBoard's own implementation:
        //   from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
        //   hex(masked_crc32c(b"123456789")), hex(masked_crc32c(struct.pack("<Q", 42)))
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(&42u64.to_le_bytes()), 0xf591_8dae);
    }

    #[test]
    fn events_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.add_text("settings", "| a | b |", 0).unwrap();
        w.add_scalars(1, &[("train/loss", 2.5), ("val/mae", 1.25)])
            .unwrap();
        w.add_scalar("train/loss", 1.5, 2).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        assert_eq!(event_files(dir.path()).unwrap(), vec![path.clone()]);
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        assert_eq!(scalars(&events, "train/loss"), vec![(1, 2.5), (2, 1.5)]);
        assert_eq!(scalars(&events, "val/mae"), vec![(1, 1.25)]);
        assert_eq!(texts(&events, "settings"), vec!["| a | b |".to_string()]);

        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(e.contains("bad data checksum"), "{e}");
        std::fs::write(&path, &bytes[..n - 2]).unwrap();
        let e = read_events(&path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
