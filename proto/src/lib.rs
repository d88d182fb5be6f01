//! The maintcast wire schema (`maintcast/v1`; docs/messages.md, and JSON Schemas beside the .proto)
//! and its Rust forms.
//!
//! [`pb`] holds the prost-generated Protobuf types. The domain types ([`Telemetry`],
//! [`MaintenanceEvent`], [`Forecast`], [`Alert`]) are what the services use; they convert to and
//! from both wire forms. Untrusted bytes enter only through [`Decoder`], which validates and
//! returns a typed [`DecodeError`] saying what is wrong.

mod decode;
mod messages;
mod wire;

pub use decode::{
    ContentType, DecodeError, Decoder, Limits, MIN_PLAUSIBLE_TS_MS, decode_maintenance_event,
    decode_telemetry,
};
pub use messages::{Alert, AlertState, Forecast, MaintenanceEvent, MaintenanceKind, Telemetry};

/// Prost-generated types for `maintcast.v1`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/maintcast.v1.rs"));
}

/// Kafka header naming the payload's encoding.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
