//! Inference: what a detector returns, and the detectors framewire runs itself.
//!
//! `motion` is the built-in detector (protocol `builtin`): a real motion detector over the frames
//! of one batch. `optifye` (the Python prototype's API) and `oip` (Open Inference Protocol v2) are
//! the remote protocols' wire shapes, both sides; `client` speaks them over HTTP.

pub mod breaker;
pub mod client;
pub mod motion;
pub mod oip;
pub mod optifye;
pub mod postprocess;

use serde::{Deserialize, Serialize};

/// One detected object in one frame, in the pixel coordinates of that frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Class name, e.g. `"red"` for a red moving object.
    pub label: String,
    /// 0.0 ..= 1.0.
    pub confidence: f32,
    /// `[x1, y1, x2, y2]` in pixels, x2/y2 exclusive.
    pub bbox: [f32; 4],
}
