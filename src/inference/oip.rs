//! Open Inference Protocol v2 (KServe v2 / Triton REST), both sides, as pure data: inference
//! requests and responses in JSON or with the binary tensor extension, and framewire's model
//! convention. The HTTP client is `inference::client`, the server `http::serve`.
//!
//! framewire's convention (what `serve-inference` serves and what the client sends by default):
//! input `images`, BYTES, shape `[N]`, one JPEG per element (base64 strings in JSON; raw in binary,
//! each element a 4-byte little-endian length then the bytes); output `detections`, FP32, shape
//! `[N, K, 6]`, rows `x1, y1, x2, y2, score, class` in the pixels of the frame sent, padded with
//! rows whose class is −1. Class names come from a labels list (model metadata `parameters.labels`,
//! or the client's `labels_file`).
//!
//! Binary extension: the body is the JSON header followed by the tensors' bytes, the header's
//! length in `Inference-Header-Content-Length`; a tensor sent that way has
//! `parameters.binary_data_size` and no `data`.

use super::Detection;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "detections";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<RequestedOutput>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// An input or output tensor. `data` is absent when the tensor travels as binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Tensor {
    fn binary_size(&self) -> Option<usize> {
        self.parameters
            .get("binary_data_size")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
    }

    /// This tensor's bytes from the front of `tail` (binary tensors follow the JSON in order), or
    /// `None` when it travels in JSON.
    fn take_binary<'a>(&self, tail: &mut &'a [u8]) -> Result<Option<&'a [u8]>, String> {
        match self.binary_size() {
            Some(n) if n <= tail.len() => {
                let (now, rest) = tail.split_at(n);
                *tail = rest;
                Ok(Some(now))
            }
            Some(n) => Err(format!(
                "tensor {}: binary_data_size {n} exceeds the body",
                self.name
            )),
            None => Ok(None),
        }
    }
}

/// A message body: the JSON header and, with the binary extension, the bytes after it.
pub struct Body {
    pub bytes: Vec<u8>,
    /// `Some(json length)` when binary tensors follow the JSON.
    pub header_length: Option<usize>,
}

/// Splits a body into its JSON part and the binary tensors after it.
pub fn split(bytes: &[u8], header_length: Option<usize>) -> Result<(&[u8], &[u8]), String> {
    match header_length {
        None => Ok((bytes, &[])),
        Some(n) if n <= bytes.len() => Ok(bytes.split_at(n)),
        Some(n) => Err(format!(
            "{HEADER_LENGTH} is {n} but the body has only {} bytes",
            bytes.len()
        )),
    }
}

fn binary_params(size: usize) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("binary_data_size".into(), size.into());
    p
}

/// BYTES elements in the binary layout: 4-byte little-endian length, then the bytes.
pub fn pack_bytes(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

pub fn unpack_bytes(mut raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        if raw.len() < 4 {
            return Err("BYTES tensor: truncated element length".into());
        }
        let n = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes")) as usize;
        raw = &raw[4..];
        if raw.len() < n {
            return Err(format!(
                "BYTES tensor: element of {n} bytes, {} left",
                raw.len()
            ));
        }
        out.push(raw[..n].to_vec());
        raw = &raw[n..];
    }
    Ok(out)
}

/// The request for a batch's JPEGs; `binary` selects the binary tensor extension for the input
/// and asks for the output in binary too.
pub fn request(id: &str, jpegs: &[&[u8]], binary: bool) -> Body {
    let mut input = Tensor {
        name: INPUT.into(),
        shape: vec![jpegs.len() as i64],
        datatype: "BYTES".into(),
        ..Tensor::default()
    };
    let mut output = RequestedOutput {
        name: OUTPUT.into(),
        ..RequestedOutput::default()
    };
    let tail = if binary {
        let raw = pack_bytes(jpegs);
        input.parameters = binary_params(raw.len());
        output.parameters.insert("binary_data".into(), true.into());
        raw
    } else {
        let b64 = base64::engine::general_purpose::STANDARD;
        input
            .parameters
            .insert("content_type".into(), "base64".into());
        input.data = Some(jpegs.iter().map(|j| Value::from(b64.encode(j))).collect());
        Vec::new()
    };
    let req = InferRequest {
        id: Some(id.into()),
        inputs: vec![input],
        outputs: vec![output],
        parameters: Map::new(),
    };
    let mut bytes = serde_json::to_vec(&req).expect("request serialises");
    let header_length = binary.then_some(bytes.len());
    bytes.extend_from_slice(&tail);
    Body {
        bytes,
        header_length,
    }
}

/// Parses a request body and returns it with its JPEGs (from the `images` input, JSON or binary).
pub fn parse_request(
    bytes: &[u8],
    header_length: Option<usize>,
) -> Result<(InferRequest, Vec<Vec<u8>>), String> {
    let (json, mut tail) = split(bytes, header_length)?;
    let req: InferRequest =
        serde_json::from_slice(json).map_err(|e| format!("request is not OIP v2 JSON: {e}"))?;
    let mut jpegs = None;
    for t in &req.inputs {
        // Binary inputs follow in the order of `inputs`.
        let raw = t.take_binary(&mut tail)?;
        if t.name != INPUT {
            continue;
        }
        if t.datatype != "BYTES" {
            return Err(format!(
                "input {INPUT}: datatype {} (expected BYTES of JPEG)",
                t.datatype
            ));
        }
        let elements = match (raw, &t.data) {
            (Some(raw), _) => unpack_bytes(raw)?,
            (None, Some(Value::Array(items))) => {
                let b64 = base64::engine::general_purpose::STANDARD;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let s = v
                            .as_str()
                            .ok_or(format!("input {INPUT}[{i}]: not a string"))?;
                        b64.decode(s)
                            .map_err(|e| format!("input {INPUT}[{i}]: not base64: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("input {INPUT}: no data")),
        };
        if t.shape.iter().product::<i64>() != elements.len() as i64 {
            return Err(format!(
                "input {INPUT}: shape {:?} but {} elements",
                t.shape,
                elements.len()
            ));
        }
        jpegs = Some(elements);
    }
    let jpegs = jpegs.ok_or(format!("request has no input named {INPUT:?}"))?;
    Ok((req, jpegs))
}

/// The `[N, K, 6]` FP32 rows of one batch's detections, padded with class −1; `classes` maps a
/// label to its index.
pub fn detection_rows(
    dets: &[Vec<Detection>],
    class: impl Fn(&str) -> i64,
) -> (Vec<i64>, Vec<f32>) {
    let k = dets.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = Vec::with_capacity(dets.len() * k * 6);
    for frame in dets {
        for d in frame {
            let [x1, y1, x2, y2] = d.bbox;
            rows.extend_from_slice(&[x1, y1, x2, y2, d.confidence, class(&d.label) as f32]);
        }
        for _ in frame.len()..k {
            rows.extend_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
        }
    }
    (vec![dets.len() as i64, k as i64, 6], rows)
}

/// The response body for `req`: the `detections` output, binary when the request asked for it.
pub fn response(model: &str, req: &InferRequest, shape: Vec<i64>, rows: &[f32]) -> Body {
    let binary = req.outputs.iter().any(|o| {
        o.name == OUTPUT && o.parameters.get("binary_data").and_then(Value::as_bool) == Some(true)
    });
    let mut out = Tensor {
        name: OUTPUT.into(),
        shape,
        datatype: "FP32".into(),
        ..Tensor::default()
    };
    let tail: Vec<u8> = if binary {
        let raw: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.parameters = binary_params(raw.len());
        raw
    } else {
        out.data = Some(rows.iter().map(|v| Value::from(*v as f64)).collect());
        Vec::new()
    };
    let resp = InferResponse {
        model_name: model.into(),
        model_version: Some("1".into()),
        id: req.id.clone(),
        outputs: vec![out],
    };
    let mut bytes = serde_json::to_vec(&resp).expect("response serialises");
    let header_length = binary.then_some(bytes.len());
    bytes.extend_from_slice(&tail);
    Body {
        bytes,
        header_length,
    }
}

/// Detections per frame from a response's `output` tensor (`[N, K, 6]` FP32, JSON or binary):
/// rows with a negative class or a score below `threshold` are dropped, class indices are named
/// from `labels` (else the index itself).
pub fn parse_detections(
    bytes: &[u8],
    header_length: Option<usize>,
    output: &str,
    frames: usize,
    threshold: f32,
    labels: &[String],
) -> Result<Vec<Vec<Detection>>, String> {
    let (json, mut tail) = split(bytes, header_length)?;
    let resp: InferResponse =
        serde_json::from_slice(json).map_err(|e| format!("answer is not OIP v2 JSON: {e}"))?;
    let mut values: Option<(Vec<i64>, Vec<f32>)> = None;
    for t in &resp.outputs {
        let raw = t.take_binary(&mut tail)?;
        if t.name != output {
            continue;
        }
        if t.datatype != "FP32" {
            return Err(format!(
                "output {output}: datatype {} (expected FP32)",
                t.datatype
            ));
        }
        let v: Vec<f32> = match (raw, &t.data) {
            (Some(raw), _) if raw.len() % 4 == 0 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            (Some(raw), _) => {
                return Err(format!("output {output}: {} bytes is not FP32", raw.len()));
            }
            (None, Some(Value::Array(items))) => items
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or(format!("output {output}: a value is not a number"))?,
            _ => return Err(format!("output {output}: no data")),
        };
        values = Some((t.shape.clone(), v));
    }
    let (shape, v) = values.ok_or(format!("answer has no output named {output:?}"))?;
    let ok_shape = shape.len() == 3 && shape[0] == frames as i64 && shape[2] == 6 && shape[1] >= 0;
    if !ok_shape || v.len() as i64 != shape.iter().product::<i64>() {
        return Err(format!(
            "output {output}: shape {shape:?} with {} values (expected [{frames}, K, 6])",
            v.len()
        ));
    }
    let k = shape[1] as usize;
    Ok((0..frames)
        .map(|f| {
            v[f * k * 6..(f + 1) * k * 6]
                .chunks_exact(6)
                .filter(|r| r[5] >= 0.0 && r[4] >= threshold && r.iter().all(|x| x.is_finite()))
                .map(|r| {
                    let class = r[5] as usize;
                    Detection {
                        label: labels
                            .get(class)
                            .cloned()
                            .unwrap_or_else(|| class.to_string()),
                        confidence: r[4],
                        bbox: [r[0], r[1], r[2], r[3]],
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dets() -> Vec<Vec<Detection>> {
        let d = |l: &str, c| Detection {
            label: l.into(),
            confidence: c,
            bbox: [1.0, 2.0, 30.0, 40.0],
        };
        vec![
            vec![d("red", 0.9), d("blue", 0.4)],
            vec![],
            vec![d("blue", 0.7)],
        ]
    }

    #[test]
    fn json_and_binary_round_trip() {
        let labels: Vec<String> = vec!["red".into(), "blue".into()];
        let class = |l: &str| labels.iter().position(|x| x == l).unwrap() as i64;
        for binary in [false, true] {
            let body = request("b1", &[b"j0", b"j11", b""], binary);
            let (req, jpegs) = parse_request(&body.bytes, body.header_length).unwrap();
            assert_eq!(jpegs, vec![b"j0".to_vec(), b"j11".to_vec(), vec![]]);
            let (shape, rows) = detection_rows(&dets(), class);
            assert_eq!(shape, vec![3, 2, 6]);
            let resp = response("motion", &req, shape, &rows);
            assert_eq!(resp.header_length.is_some(), binary);
            let back =
                parse_detections(&resp.bytes, resp.header_length, OUTPUT, 3, 0.0, &labels).unwrap();
            assert_eq!(back, dets());
            let high =
                parse_detections(&resp.bytes, resp.header_length, OUTPUT, 3, 0.5, &labels).unwrap();
            assert_eq!(high[0].len(), 1);
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(unpack_bytes(&[5, 0, 0, 0, 1]).is_err());
        assert!(parse_request(b"{}", None).is_err());
        assert!(parse_request(b"{\"inputs\":[]}", Some(99)).is_err());
        let body = request("b", &[b"x"], true);
        assert!(parse_request(&body.bytes[..body.bytes.len() - 1], body.header_length).is_err());
        assert!(
            parse_detections(
                b"{\"model_name\":\"m\",\"outputs\":[]}",
                None,
                OUTPUT,
                1,
                0.0,
                &[]
            )
            .is_err()
        );
    }
}
