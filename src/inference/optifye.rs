//! The Python prototype's inference API (`optifye`), both sides: the request framewire sends to
//! `POST {url}/infer`, the answer it expects, and the conversions to and from framewire's
//! [`Detection`]s. Pure data; the HTTP client is `inference::client`, the server `http::serve`.
//!
//! Request (the prototype posts its whole Kafka batch JSON; only these fields are read):
//! `{"batch_id": int, "frames": [{"frame_id": int, "data": base64 JPEG}]}`.
//! Answer: `{"batch_id", "total_frames", "total_detections", "processing_time", "results":
//! [{"frame_id", "detections": [{"class", "confidence", "bbox": [x1,y1,x2,y2]}],
//! "detection_count"}], "timestamp"}`; `GET {url}/health` answers `{"status": "healthy"}`.

use super::Detection;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The largest batch the prototype's service accepts; bigger batches are split.
pub const PROTOTYPE_MAX_BATCH: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferRequest {
    /// An integer in the prototype; echoed back as given.
    pub batch_id: serde_json::Value,
    pub frames: Vec<RequestFrame>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestFrame {
    pub frame_id: serde_json::Value,
    /// Base64 (standard alphabet, padded) JPEG.
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    pub batch_id: serde_json::Value,
    pub total_frames: usize,
    pub total_detections: usize,
    /// Seconds the service spent on the batch.
    pub processing_time: f64,
    pub results: Vec<FrameResult>,
    /// ISO 8601.
    pub timestamp: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameResult {
    pub frame_id: serde_json::Value,
    pub detections: Vec<WireDetection>,
    pub detection_count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDetection {
    pub class: String,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

impl From<&Detection> for WireDetection {
    fn from(d: &Detection) -> Self {
        Self {
            class: d.label.clone(),
            confidence: d.confidence,
            bbox: d.bbox,
        }
    }
}

/// The request for frames `jpegs` (frame ids are the frames' sequence numbers).
pub fn request(batch_id: u64, frames: &[(u64, &[u8])]) -> InferRequest {
    let b64 = base64::engine::general_purpose::STANDARD;
    InferRequest {
        batch_id: batch_id.into(),
        frames: frames
            .iter()
            .map(|(id, jpeg)| RequestFrame {
                frame_id: (*id).into(),
                data: b64.encode(jpeg),
            })
            .collect(),
    }
}

/// Decodes every frame's JPEG of a request; the error names the frame.
pub fn request_jpegs(req: &InferRequest) -> Result<Vec<Vec<u8>>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    req.frames
        .iter()
        .map(|f| {
            b64.decode(f.data.trim())
                .map_err(|e| format!("frame_id {}: data is not base64: {e}", f.frame_id))
        })
        .collect()
}

/// The answer to `req` given one detection list per frame, in request order.
pub fn response(req: &InferRequest, dets: &[Vec<Detection>], seconds: f64) -> InferResponse {
    let results: Vec<FrameResult> = req
        .frames
        .iter()
        .zip(dets)
        .map(|(f, d)| FrameResult {
            frame_id: f.frame_id.clone(),
            detections: d.iter().map(WireDetection::from).collect(),
            detection_count: d.len(),
        })
        .collect();
    InferResponse {
        batch_id: req.batch_id.clone(),
        total_frames: req.frames.len(),
        total_detections: results.iter().map(|r| r.detection_count).sum(),
        processing_time: seconds,
        results,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

/// One detection list per frame id in `ids` (request order), from an answer. A frame missing from
/// the answer, or a box that is not finite, is an error naming the frame.
pub fn detections(ids: &[u64], resp: &InferResponse) -> Result<Vec<Vec<Detection>>, String> {
    ids.iter()
        .map(|id| {
            let r = resp
                .results
                .iter()
                .find(|r| r.frame_id.as_u64() == Some(*id))
                .ok_or_else(|| format!("answer has no result for frame_id {id}"))?;
            r.detections
                .iter()
                .map(|d| {
                    if d.bbox.iter().all(|v| v.is_finite()) && d.confidence.is_finite() {
                        Ok(Detection {
                            label: d.class.clone(),
                            confidence: d.confidence,
                            bbox: d.bbox,
                        })
                    } else {
                        Err(format!("frame_id {id}: detection with a non-finite value"))
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_wire_shapes() {
        let jpegs: Vec<(u64, &[u8])> = vec![(7, b"abc"), (8, b"defg")];
        let req = request(3, &jpegs);
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["batch_id"], 3);
        assert_eq!(json["frames"][1]["frame_id"], 8);
        assert_eq!(json["frames"][0]["data"], "YWJj");
        assert_eq!(request_jpegs(&req).unwrap()[1], b"defg");
        let d = Detection {
            label: "red".into(),
            confidence: 0.5,
            bbox: [1.0, 2.0, 3.0, 4.0],
        };
        let resp = response(&req, &[vec![d.clone()], vec![]], 0.01);
        assert_eq!(resp.total_detections, 1);
        let back: InferResponse =
            serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
        assert_eq!(detections(&[8, 7], &back).unwrap(), vec![vec![], vec![d]]);
        assert!(detections(&[9], &back).unwrap_err().contains("frame_id 9"));
    }
}
