//! Wire format of the bus: `framewire.v1.FrameBatch` in Protocol Buffers.
//!
//! `encode` turns a batch into bytes plus the Kafka headers that describe them; `decode` is total:
//! any byte string gives either a batch or a `WireError`, never a panic (the fuzz-style test in
//! `tests/it/wire.rs` feeds it random and truncated bytes). The seed's JSON format joins here with the
//! ingest issue.

use prost::Message as _;

/// Generated from `proto/framewire/v1/batch.proto` by `build.rs`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/framewire.v1.rs"));
}

pub use v1::FrameBatch;

/// Content type carried in the `content-type` header of framewire.v1 messages.
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf; proto=framewire.v1.FrameBatch";
pub const SCHEMA_VERSION: &str = "1";

/// Headers of a bus message, as (name, value) pairs.
pub type Headers = Vec<(String, Vec<u8>)>;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message is not a framewire.v1 FrameBatch: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("framewire.v1 FrameBatch is invalid: {0}")]
    Invalid(String),
    #[error("unsupported content-type {0:?}: expected {CONTENT_TYPE_V1:?}")]
    ContentType(String),
}

/// Serialises a batch and the headers that go with it.
pub fn encode(batch: &FrameBatch) -> (Vec<u8>, Headers) {
    let headers = vec![
        (
            "content-type".to_string(),
            CONTENT_TYPE_V1.as_bytes().to_vec(),
        ),
        (
            "schema-version".to_string(),
            SCHEMA_VERSION.as_bytes().to_vec(),
        ),
        ("camera-id".to_string(), batch.camera_id.as_bytes().to_vec()),
        (
            "batch-seq".to_string(),
            batch.sequence.to_string().into_bytes(),
        ),
    ];
    (batch.encode_to_vec(), headers)
}

/// Parses a message. A present `content-type` header must name framewire.v1; the decoded batch is
/// checked for the invariants later stages rely on (a camera id, a batch id, frames with JPEG data).
pub fn decode(payload: &[u8], headers: &[(String, Vec<u8>)]) -> Result<FrameBatch, WireError> {
    if let Some((_, ct)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        let ct = String::from_utf8_lossy(ct);
        if ct != CONTENT_TYPE_V1 {
            return Err(WireError::ContentType(ct.into_owned()));
        }
    }
    let batch = FrameBatch::decode(payload)?;
    validate(&batch)?;
    Ok(batch)
}

fn validate(batch: &FrameBatch) -> Result<(), WireError> {
    if batch.camera_id.is_empty() {
        return Err(WireError::Invalid("camera_id is empty".into()));
    }
    if batch.batch_id.is_empty() {
        return Err(WireError::Invalid("batch_id is empty".into()));
    }
    if batch.frames.is_empty() {
        return Err(WireError::Invalid(format!(
            "batch {} has no frames",
            batch.batch_id
        )));
    }
    for (i, f) in batch.frames.iter().enumerate() {
        if f.jpeg.is_empty() || f.width == 0 || f.height == 0 {
            return Err(WireError::Invalid(format!(
                "batch {} frame {i} has no image or a zero size",
                batch.batch_id
            )));
        }
    }
    Ok(())
}

/// The deterministic batch id: camera, first frame's capture time (UTC, microseconds), sequence.
pub fn batch_id(camera: &str, first_capture_us: i64, sequence: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(first_capture_us).unwrap_or_default();
    format!("{camera}-{}-{sequence:06}", t.format("%Y%m%dT%H%M%S%.6fZ"))
}
