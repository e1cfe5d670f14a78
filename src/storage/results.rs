//! The results document written per batch; its schema is `docs/results.schema.json` (keep both in
//! step: `tests/it` validates written documents against the schema).

use crate::inference::Detection;
use crate::media::TruthBox;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "framewire.results.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResults {
    pub schema: String,
    pub camera: String,
    pub batch_id: String,
    pub sequence: u64,
    pub source_type: String,
    pub model: Model,
    pub frames: Vec<FrameResults>,
    pub timings_ms: Timings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub protocol: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameResults {
    pub seq: u64,
    /// RFC 3339, UTC, microseconds.
    pub capture_time: String,
    pub width: u32,
    pub height: u32,
    pub annotated_key: String,
    pub detections: Vec<Detection>,
    /// Ground truth of synthetic frames; absent for real cameras.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truth: Vec<TruthBox>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub inference: f64,
    pub annotate: f64,
    pub store: f64,
}

pub fn rfc3339_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
