//! Wire format of the bus: `framewire.v1.FrameBatch` in Protocol Buffers (the default), or the
//! Python prototype's JSON (`seed`), chosen per daemon by `kafka.wire_format`.
//!
//! `encode_as` turns a batch into bytes plus the Kafka headers that describe them; `decode` accepts
//! both formats on one topic (by `content-type` header when present, else by the first byte: `{` is
//! seed JSON) and is total: any byte string gives either a batch or a `WireError`, never a panic (the
//! fuzz-style test in `tests/it/wire.rs` feeds it random, truncated and mangled bytes and JSON).

pub mod seed;

use crate::config::WireFormat;
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
    #[error("message is not seed JSON: {0}")]
    Json(String),
    #[error("batch is invalid: {0}")]
    Invalid(String),
    #[error("unsupported content-type {0:?}: expected {CONTENT_TYPE_V1:?} or \"application/json\"")]
    ContentType(String),
}

/// Serialises a batch as framewire.v1 with the headers that go with it.
pub fn encode(batch: &FrameBatch) -> (Vec<u8>, Headers) {
    encode_as(batch, WireFormat::FramewireV1)
}

/// Serialises a batch in `format`. Every message carries `content-type`, `camera-id` and
/// `batch-seq` headers; framewire.v1 adds `schema-version`.
pub fn encode_as(batch: &FrameBatch, format: WireFormat) -> (Vec<u8>, Headers) {
    let header = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
    let (payload, mut headers) = match format {
        WireFormat::FramewireV1 => (
            batch.encode_to_vec(),
            vec![
                header("content-type", CONTENT_TYPE_V1.as_bytes()),
                header("schema-version", SCHEMA_VERSION.as_bytes()),
            ],
        ),
        WireFormat::SeedJson => (
            seed::encode(batch),
            vec![header("content-type", seed::CONTENT_TYPE.as_bytes())],
        ),
    };
    headers.push(header("camera-id", batch.camera_id.as_bytes()));
    headers.push(header("batch-seq", batch.sequence.to_string().as_bytes()));
    (payload, headers)
}

/// Parses a message without a Kafka key; see [`decode_keyed`].
pub fn decode(payload: &[u8], headers: &[(String, Vec<u8>)]) -> Result<FrameBatch, WireError> {
    decode_keyed(payload, headers, None)
}

/// Parses a message in either format. A `content-type` header, when present, decides (framewire.v1
/// or `application/json`); otherwise a payload starting with `{` is seed JSON and anything else
/// framewire.v1. Seed JSON names no camera: it is taken from `key`, else the `camera-id` header.
/// The batch is checked for the invariants later stages rely on (a camera id, a batch id, frames
/// with JPEG data or a claim key).
pub fn decode_keyed(
    payload: &[u8],
    headers: &[(String, Vec<u8>)],
    key: Option<&str>,
) -> Result<FrameBatch, WireError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let json = match header("content-type") {
        Some(ct) if ct == CONTENT_TYPE_V1 => false,
        Some(ct) if is_json(&ct) => true,
        Some(ct) => return Err(WireError::ContentType(ct)),
        None => payload.first() == Some(&b'{'),
    };
    let batch = if json {
        let camera = key
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .or_else(|| header("camera-id"));
        seed::decode(
            payload,
            &seed::camera_id(camera.as_deref().unwrap_or_default()),
        )?
    } else {
        FrameBatch::decode(payload)?
    };
    validate(&batch)?;
    Ok(batch)
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(seed::CONTENT_TYPE))
}

/// The prefix every claim key of `camera` carries (after the storage prefix).
pub fn claim_marker(camera: &str) -> String {
    format!("claims/camera={camera}/")
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
        if f.width == 0 || f.height == 0 {
            return Err(WireError::Invalid(format!(
                "batch {} frame {i} has a zero size",
                batch.batch_id
            )));
        }
        if f.claim_key.is_empty() {
            if f.jpeg.is_empty() {
                return Err(WireError::Invalid(format!(
                    "batch {} frame {i} has no image",
                    batch.batch_id
                )));
            }
        } else if !f.jpeg.is_empty() {
            return Err(WireError::Invalid(format!(
                "batch {} frame {i} has both an image and a claim key",
                batch.batch_id
            )));
        } else if !claim_key_ok(&f.claim_key, &batch.camera_id) {
            return Err(WireError::Invalid(format!(
                "batch {} frame {i}: claim key {:?} is not a .jpg under {}",
                batch.batch_id,
                f.claim_key,
                claim_marker(&batch.camera_id)
            )));
        }
    }
    Ok(())
}

/// A claim key may only point at this camera's claim objects (`[{prefix}/]claims/camera={id}/….jpg`),
/// never elsewhere in the store.
fn claim_key_ok(key: &str, camera: &str) -> bool {
    let marker = claim_marker(camera);
    key.ends_with(".jpg")
        && (key.starts_with(&marker) || key.contains(&format!("/{marker}")))
        && !key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
}

/// The deterministic batch id: camera, first frame's capture time (UTC, microseconds), sequence.
pub fn batch_id(camera: &str, first_capture_us: i64, sequence: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(first_capture_us).unwrap_or_default();
    format!("{camera}-{}-{sequence:06}", t.format("%Y%m%dT%H%M%S%.6fZ"))
}
