//! The Python prototype's ("seed") Kafka JSON, field for field, so the prototype and framewire can
//! share a topic in both directions:
//!
//! ```json
//! {"batch_id": 7, "frame_count": 2,
//!  "frames": [{"frame_id": 140, "data": "<base64 JPEG>", "timestamp": 1767225600.2}, …],
//!  "timestamp": "2026-01-01T00:00:01.000000+00:00", "source_type": "rtsp",
//!  "extractor_info": {"frame_width": 640, "frame_height": 480, "jpeg_quality": 80}}
//! ```
//!
//! Mapping to `framewire.v1.FrameBatch`:
//! - `batch_id` ⇄ `sequence`; `frame_id` ⇄ `Frame.seq`; frame `timestamp` (float seconds) ⇄
//!   `capture_time_us`; `extractor_info` ⇄ every frame's width/height and `jpeg_quality`; the top-level
//!   `timestamp` (ISO 8601) ⇄ `created_time_us`.
//! - The prototype has no camera id in the body: on decode it is the Kafka key, else the `camera-id`
//!   header, else `"seed"` (characters outside `[A-Za-z0-9._-]` become `_`, at most 64 kept, because
//!   the id ends up in storage keys). framewire's deterministic batch id is then derived with
//!   [`super::batch_id`] from camera, first frame time and `batch_id`, so a redelivery stores the
//!   same objects.
//! - `source_type` is `"rtsp"` or `"file"` in the prototype; framewire's synthetic cameras are
//!   written as `"file"` (a recorded, non-live source as far as a prototype consumer is concerned).
//! - Not carried: ground-truth boxes of synthetic frames.
//! - Claim-check (framewire only): a frame may carry `"claim_key"` with `"data": ""`. The prototype
//!   cannot read such messages; it only happens for batches over `kafka.max_message_bytes`.

use super::{WireError, v1};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Content type of seed-JSON messages (the prototype itself sends no headers at all).
pub const CONTENT_TYPE: &str = "application/json";

/// Camera id used when neither the Kafka key nor a `camera-id` header names one.
pub const DEFAULT_CAMERA: &str = "seed";

#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    batch_id: u64,
    frame_count: u64,
    frames: Vec<Frame>,
    timestamp: String,
    source_type: String,
    extractor_info: ExtractorInfo,
}

#[derive(Debug, Serialize, Deserialize)]
struct Frame {
    frame_id: u64,
    data: String,
    timestamp: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    claim_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExtractorInfo {
    frame_width: u32,
    frame_height: u32,
    jpeg_quality: u32,
}

/// The prototype's `source_type` for a framewire source type.
pub fn source_type(framewire: &str) -> &str {
    match framewire {
        "rtsp" => "rtsp",
        _ => "file",
    }
}

/// Serialises a batch as the prototype's JSON.
pub fn encode(batch: &v1::FrameBatch) -> Vec<u8> {
    let (w, h) = batch
        .frames
        .first()
        .map(|f| (f.width, f.height))
        .unwrap_or_default();
    let doc = Batch {
        batch_id: batch.sequence,
        frame_count: batch.frames.len() as u64,
        frames: batch
            .frames
            .iter()
            .map(|f| Frame {
                frame_id: f.seq,
                data: base64::engine::general_purpose::STANDARD.encode(&f.jpeg),
                timestamp: f.capture_time_us as f64 / 1e6,
                claim_key: f.claim_key.clone(),
            })
            .collect(),
        timestamp: iso8601(batch.created_time_us),
        source_type: source_type(&batch.source_type).to_string(),
        extractor_info: ExtractorInfo {
            frame_width: w,
            frame_height: h,
            jpeg_quality: batch.jpeg_quality,
        },
    };
    serde_json::to_vec(&doc).expect("a batch always serialises")
}

/// Parses the prototype's JSON into a batch of camera `camera` (already chosen by the caller).
/// Never panics; the result is not yet `validate`d.
pub fn decode(payload: &[u8], camera: &str) -> Result<v1::FrameBatch, WireError> {
    let doc: Batch = serde_json::from_slice(payload).map_err(|e| WireError::Json(e.to_string()))?;
    if doc.frame_count != doc.frames.len() as u64 {
        return Err(WireError::Invalid(format!(
            "seed batch {}: frame_count is {} but it has {} frames",
            doc.batch_id,
            doc.frame_count,
            doc.frames.len()
        )));
    }
    let created_time_us = parse_iso8601(&doc.timestamp).ok_or_else(|| {
        WireError::Invalid(format!(
            "seed batch {}: timestamp {:?} is not ISO 8601",
            doc.batch_id, doc.timestamp
        ))
    })?;
    let mut frames = Vec::with_capacity(doc.frames.len());
    for (i, f) in doc.frames.into_iter().enumerate() {
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(f.data.as_bytes())
            .map_err(|e| {
                WireError::Invalid(format!(
                    "seed batch {} frame {i}: data is not base64: {e}",
                    doc.batch_id
                ))
            })?;
        frames.push(v1::Frame {
            seq: f.frame_id,
            capture_time_us: seconds_to_us(f.timestamp).ok_or_else(|| {
                WireError::Invalid(format!(
                    "seed batch {} frame {i}: timestamp {} is out of range",
                    doc.batch_id, f.timestamp
                ))
            })?,
            width: doc.extractor_info.frame_width,
            height: doc.extractor_info.frame_height,
            jpeg,
            truth: Vec::new(),
            claim_key: f.claim_key,
        });
    }
    let first = frames
        .first()
        .map(|f| f.capture_time_us)
        .unwrap_or_default();
    Ok(v1::FrameBatch {
        camera_id: camera.to_string(),
        batch_id: super::batch_id(camera, first, doc.batch_id),
        sequence: doc.batch_id,
        frames,
        created_time_us,
        source_type: doc.source_type,
        jpeg_quality: doc.extractor_info.jpeg_quality,
    })
}

/// A camera id usable in storage keys and metric labels, from a Kafka key or header.
pub fn camera_id(raw: &str) -> String {
    let id: String = raw
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // "." and ".." are valid characters but not valid path components.
    if id.is_empty() || id.chars().all(|c| c == '.') {
        DEFAULT_CAMERA.to_string()
    } else {
        id
    }
}

/// Float seconds since the epoch → microseconds; `None` unless within chrono's range.
fn seconds_to_us(s: f64) -> Option<i64> {
    // ±2^53 µs (about ±285 years) keeps the conversion exact enough and far from overflow.
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    let us = (s * 1e6).round();
    (us.is_finite() && us.abs() <= LIMIT).then_some(us as i64)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`: ISO 8601 that Python's `datetime.fromisoformat` reads on
/// every version.
fn iso8601(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// ISO 8601 with an offset (`…Z`, `…+02:00`), or naive as Python's `datetime.now().isoformat()`
/// writes it (local time of the producer; read as this host's local time).
fn parse_iso8601(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let naive: chrono::NaiveDateTime = s.parse().ok()?;
    let local = naive.and_local_timezone(chrono::Local).earliest();
    Some(
        local
            .map(|t| t.timestamp_micros())
            .unwrap_or_else(|| naive.and_utc().timestamp_micros()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures the prototype's timestamp forms parse: naive with and without microseconds, and with an offset.
    #[test]
    fn timestamps() {
        assert!(parse_iso8601("2026-01-01T12:34:56.123456").is_some());
        assert!(parse_iso8601("2026-01-01T12:34:56").is_some());
        assert_eq!(
            parse_iso8601("2026-01-01T00:00:00.5+00:00"),
            Some(1_767_225_600_500_000)
        );
        assert_eq!(
            parse_iso8601("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000_000)
        );
        assert!(parse_iso8601("yesterday").is_none());
        assert_eq!(
            iso8601(1_767_225_600_500_000),
            "2026-01-01T00:00:00.500000+00:00"
        );
        assert_eq!(seconds_to_us(1_767_225_600.2), Some(1_767_225_600_200_000));
        assert_eq!(seconds_to_us(1e300), None);
    }

    /// Ensures Kafka keys become ids that are safe as storage key components.
    #[test]
    fn camera_ids() {
        assert_eq!(camera_id("lobby-1"), "lobby-1");
        assert_eq!(camera_id("a/../b c"), "a_.._b_c");
        assert_eq!(camera_id(".."), DEFAULT_CAMERA);
        assert_eq!(camera_id(""), DEFAULT_CAMERA);
        assert_eq!(camera_id(&"x".repeat(100)).len(), 64);
    }
}
