//! Media: everything between pixels and bytes, with no actix types.
//!
//! - `synthetic`: a deterministic scene of moving coloured objects, encoded to H.264 (a camera).
//! - `h264`: openh264 decoding of Annex B access units into YUV frames.
//! - `decoders`: a bounded pool of decoders that cameras share one keyframe interval at a time.
//! - `jpeg`: resize + JPEG encode of decoded frames, JPEG decode for later stages; the codec choice.
//! - `planes`: decoded JPEGs as YCbCr 4:2:0 planes, what the process side works on.
//! - `resize`: the 2:1 plane downscale fused with the video→full range expansion (AVX2).
//! - `turbo`: libjpeg-turbo's TurboJPEG API, loaded at run time when installed.
//! - `annotate`: draw boxes and `label confidence` text onto a frame.

pub mod annotate;
pub mod decoders;
pub mod file;
pub mod h264;
pub mod jpeg;
pub mod planes;
pub mod resize;
pub mod rtsp;
pub mod source;
pub mod synthetic;
pub mod turbo;

use serde::{Deserialize, Serialize};

/// A ground-truth object box of a synthetic frame: what a perfect detector would report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthBox {
    /// Colour name of the object (`"red"`, `"green"`, …): the class a detector should report.
    pub label: String,
    /// `[x1, y1, x2, y2]` in pixels of the frame it belongs to, x2/y2 exclusive.
    pub bbox: [f32; 4],
    /// True when the object is wholly inside the frame.
    pub fully_visible: bool,
}
