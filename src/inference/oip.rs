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

/// The outputs of the boxes convention, in this order: `boxes` `[N, K, 4]`, `scores` `[N, K]`,
/// `classes` `[N, K]`, `num_detections` `[N]`.
pub const BOX_OUTPUTS: [&str; 4] = ["boxes", "scores", "classes", "num_detections"];

/// A batch's frames as the model's input tensor.
pub enum Input<'a> {
    /// BYTES `[N]`, one JPEG per element.
    Jpegs(&'a [&'a [u8]]),
    /// UINT8 `[N, H, W, 3]`: RGB rows, every frame `width`×`height`, frames one after another.
    Rgb {
        width: u32,
        height: u32,
        data: &'a [u8],
    },
}

/// What a request carried in its `images` input.
#[derive(Debug, PartialEq)]
pub enum Images {
    Jpegs(Vec<Vec<u8>>),
    Rgb {
        width: u32,
        height: u32,
        frames: Vec<Vec<u8>>,
    },
}

impl Images {
    pub fn len(&self) -> usize {
        match self {
            Images::Jpegs(j) => j.len(),
            Images::Rgb { frames, .. } => frames.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request for a batch's JPEGs in framewire's convention (input `images`, output
/// `detections`); `binary` selects the binary tensor extension for input and output.
pub fn request(id: &str, jpegs: &[&[u8]], binary: bool) -> Body {
    request_with(id, INPUT, Input::Jpegs(jpegs), binary, &[OUTPUT])
}

/// A request with input `input_name` and the named `outputs` (each asked for in binary when
/// `binary`).
pub fn request_with(
    id: &str,
    input_name: &str,
    input: Input<'_>,
    binary: bool,
    outputs: &[&str],
) -> Body {
    let mut tensor = Tensor {
        name: input_name.into(),
        ..Tensor::default()
    };
    let tail = match input {
        Input::Jpegs(jpegs) => {
            tensor.shape = vec![jpegs.len() as i64];
            tensor.datatype = "BYTES".into();
            if binary {
                pack_bytes(jpegs)
            } else {
                let b64 = base64::engine::general_purpose::STANDARD;
                tensor
                    .parameters
                    .insert("content_type".into(), "base64".into());
                tensor.data = Some(jpegs.iter().map(|j| Value::from(b64.encode(j))).collect());
                Vec::new()
            }
        }
        Input::Rgb {
            width,
            height,
            data,
        } => {
            let frame = width as usize * height as usize * 3;
            let n = data.len().checked_div(frame).unwrap_or(0);
            tensor.shape = vec![n as i64, height as i64, width as i64, 3];
            tensor.datatype = "UINT8".into();
            if binary {
                data.to_vec()
            } else {
                tensor.data = Some(data.iter().map(|v| Value::from(*v)).collect());
                Vec::new()
            }
        }
    };
    if binary {
        tensor.parameters = binary_params(tail.len());
    }
    let outputs = outputs
        .iter()
        .map(|name| {
            let mut o = RequestedOutput {
                name: (*name).into(),
                ..RequestedOutput::default()
            };
            if binary {
                o.parameters.insert("binary_data".into(), true.into());
            }
            o
        })
        .collect();
    let req = InferRequest {
        id: Some(id.into()),
        inputs: vec![tensor],
        outputs,
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

/// Parses a request body and returns it with its frames: the `images` input as BYTES of JPEG or
/// UINT8 `[N, H, W, 3]`, in JSON or binary.
pub fn parse_request(
    bytes: &[u8],
    header_length: Option<usize>,
) -> Result<(InferRequest, Images), String> {
    let (json, mut tail) = split(bytes, header_length)?;
    let req: InferRequest =
        serde_json::from_slice(json).map_err(|e| format!("request is not OIP v2 JSON: {e}"))?;
    let mut images = None;
    for t in &req.inputs {
        // Binary inputs follow in the order of `inputs`.
        let raw = t.take_binary(&mut tail)?;
        if t.name != INPUT {
            continue;
        }
        images = Some(match t.datatype.as_str() {
            "BYTES" => Images::Jpegs(bytes_elements(t, raw)?),
            "UINT8" => rgb_frames(t, raw)?,
            other => {
                return Err(format!(
                    "input {INPUT}: datatype {other} (expected BYTES of JPEG or UINT8 [N,H,W,3])"
                ));
            }
        });
    }
    let images = images.ok_or(format!("request has no input named {INPUT:?}"))?;
    Ok((req, images))
}

fn bytes_elements(t: &Tensor, raw: Option<&[u8]>) -> Result<Vec<Vec<u8>>, String> {
    let elements: Vec<Vec<u8>> = match (raw, &t.data) {
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
    Ok(elements)
}

fn rgb_frames(t: &Tensor, raw: Option<&[u8]>) -> Result<Images, String> {
    let &[n, h, w, 3] = t.shape.as_slice() else {
        return Err(format!(
            "input {INPUT}: UINT8 shape {:?} (expected [N, H, W, 3])",
            t.shape
        ));
    };
    if n < 0 || h <= 0 || w <= 0 || h > 16_384 || w > 16_384 {
        return Err(format!(
            "input {INPUT}: UINT8 shape {:?} out of range",
            t.shape
        ));
    }
    let data: Vec<u8> = match (raw, &t.data) {
        (Some(raw), _) => raw.to_vec(),
        (None, Some(v)) => {
            let mut out = Vec::new();
            flatten_u8(v, &mut out)?;
            out
        }
        _ => return Err(format!("input {INPUT}: no data")),
    };
    let frame = (h * w * 3) as usize;
    if data.len() != frame * n as usize {
        return Err(format!(
            "input {INPUT}: shape {:?} but {} values",
            t.shape,
            data.len()
        ));
    }
    Ok(Images::Rgb {
        width: w as u32,
        height: h as u32,
        frames: data.chunks_exact(frame).map(<[u8]>::to_vec).collect(),
    })
}

/// UINT8 values of a JSON tensor, flat or nested row by row.
fn flatten_u8(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|x| flatten_u8(x, out)),
        Value::Number(n) => match n.as_u64() {
            Some(x) if x <= 255 => {
                out.push(x as u8);
                Ok(())
            }
            _ => Err(format!("input {INPUT}: {n} is not a UINT8")),
        },
        other => Err(format!("input {INPUT}: {other} is not a UINT8")),
    }
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

/// One output tensor of a response, as numbers (`datatype` FP32 or INT32).
pub struct OutTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: &'static str,
    pub values: Vec<f32>,
}

/// The boxes convention for one batch's detections: `boxes` `[N, K, 4]` (x1, y1, x2, y2 pixels),
/// `scores` and `classes` `[N, K]` FP32, `num_detections` `[N]` INT32; padding rows are zero.
pub fn box_outputs(dets: &[Vec<Detection>], class: impl Fn(&str) -> i64) -> Vec<OutTensor> {
    let (n, k) = (dets.len(), dets.iter().map(Vec::len).max().unwrap_or(0));
    let (mut boxes, mut scores, mut classes) =
        (vec![0f32; n * k * 4], vec![0f32; n * k], vec![0f32; n * k]);
    for (f, frame) in dets.iter().enumerate() {
        for (j, d) in frame.iter().enumerate() {
            let i = f * k + j;
            boxes[i * 4..i * 4 + 4].copy_from_slice(&d.bbox);
            scores[i] = d.confidence;
            classes[i] = class(&d.label) as f32;
        }
    }
    let (n, k) = (n as i64, k as i64);
    let t = |name: &str, shape: Vec<i64>, datatype, values| OutTensor {
        name: name.into(),
        shape,
        datatype,
        values,
    };
    vec![
        t(BOX_OUTPUTS[0], vec![n, k, 4], "FP32", boxes),
        t(BOX_OUTPUTS[1], vec![n, k], "FP32", scores),
        t(BOX_OUTPUTS[2], vec![n, k], "FP32", classes),
        t(
            BOX_OUTPUTS[3],
            vec![n],
            "INT32",
            dets.iter().map(|d| d.len() as f32).collect(),
        ),
    ]
}

/// The response body for `req` with the `detections` output.
pub fn response(model: &str, req: &InferRequest, shape: Vec<i64>, rows: &[f32]) -> Body {
    let out = OutTensor {
        name: OUTPUT.into(),
        shape,
        datatype: "FP32",
        values: rows.to_vec(),
    };
    response_with(model, req, vec![out])
}

/// The response body for `req` with `outputs`; each is binary when the request asked for it so.
pub fn response_with(model: &str, req: &InferRequest, outputs: Vec<OutTensor>) -> Body {
    let mut tail = Vec::new();
    let tensors = outputs
        .into_iter()
        .map(|o| {
            let binary = req.outputs.iter().any(|r| {
                r.name == o.name
                    && r.parameters.get("binary_data").and_then(Value::as_bool) == Some(true)
            });
            let mut t = Tensor {
                name: o.name,
                shape: o.shape,
                datatype: o.datatype.into(),
                ..Tensor::default()
            };
            let int = o.datatype == "INT32";
            if binary {
                let before = tail.len();
                for v in &o.values {
                    if int {
                        tail.extend_from_slice(&(*v as i32).to_le_bytes());
                    } else {
                        tail.extend_from_slice(&v.to_le_bytes());
                    }
                }
                t.parameters = binary_params(tail.len() - before);
            } else if int {
                t.data = Some(o.values.iter().map(|v| Value::from(*v as i64)).collect());
            } else {
                t.data = Some(o.values.iter().map(|v| Value::from(*v as f64)).collect());
            }
            t
        })
        .collect();
    let resp = InferResponse {
        model_name: model.into(),
        model_version: Some("1".into()),
        id: req.id.clone(),
        outputs: tensors,
    };
    let mut bytes = serde_json::to_vec(&resp).expect("response serialises");
    let header_length = (!tail.is_empty()).then_some(bytes.len());
    bytes.extend_from_slice(&tail);
    Body {
        bytes,
        header_length,
    }
}

/// A response's outputs by name: (shape, values).
pub type Outputs = std::collections::HashMap<String, (Vec<i64>, Vec<f32>)>;

/// Every output of a response as numbers, by name: (shape, values). FP32, FP64, INT32, INT64 and
/// UINT8 are read, in JSON or binary; the value count must match the shape.
pub fn parse_outputs(bytes: &[u8], header_length: Option<usize>) -> Result<Outputs, String> {
    let (json, mut tail) = split(bytes, header_length)?;
    let resp: InferResponse =
        serde_json::from_slice(json).map_err(|e| format!("answer is not OIP v2 JSON: {e}"))?;
    let mut out = std::collections::HashMap::new();
    for t in &resp.outputs {
        let raw = t.take_binary(&mut tail)?;
        let v = numbers(t, raw)?;
        if t.shape.iter().any(|d| *d < 0) || v.len() as i64 != t.shape.iter().product::<i64>() {
            return Err(format!(
                "output {}: shape {:?} with {} values",
                t.name,
                t.shape,
                v.len()
            ));
        }
        out.insert(t.name.clone(), (t.shape.clone(), v));
    }
    Ok(out)
}

fn numbers(t: &Tensor, raw: Option<&[u8]>) -> Result<Vec<f32>, String> {
    let width = match t.datatype.as_str() {
        "FP32" | "INT32" => 4,
        "FP64" | "INT64" => 8,
        "UINT8" => 1,
        other => {
            return Err(format!(
                "output {}: datatype {other} is not numeric",
                t.name
            ));
        }
    };
    match (raw, &t.data) {
        (Some(raw), _) if raw.len() % width == 0 => Ok(raw
            .chunks_exact(width)
            .map(|c| match t.datatype.as_str() {
                "FP32" => f32::from_le_bytes(c.try_into().expect("4 bytes")),
                "INT32" => i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
                "FP64" => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
                "INT64" => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
                _ => f32::from(c[0]),
            })
            .collect()),
        (Some(raw), _) => Err(format!(
            "output {}: {} bytes is not {}",
            t.name,
            raw.len(),
            t.datatype
        )),
        (None, Some(Value::Array(items))) => items
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<_>>()
            .ok_or(format!("output {}: a value is not a number", t.name)),
        _ => Err(format!("output {}: no data", t.name)),
    }
}

fn label_of(labels: &[String], class: usize) -> String {
    labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| class.to_string())
}

/// Detections per frame from a response's `output` tensor (`[N, K, 6]`, JSON or binary): rows
/// with a negative class or a score below `threshold` are dropped, class indices are named from
/// `labels` (else the index itself).
pub fn parse_detections(
    bytes: &[u8],
    header_length: Option<usize>,
    output: &str,
    frames: usize,
    threshold: f32,
    labels: &[String],
) -> Result<Vec<Vec<Detection>>, String> {
    let outputs = parse_outputs(bytes, header_length)?;
    let (shape, v) = outputs
        .get(output)
        .ok_or(format!("answer has no output named {output:?}"))?;
    if shape.len() != 3 || shape[0] != frames as i64 || shape[2] != 6 {
        return Err(format!(
            "output {output}: shape {shape:?} (expected [{frames}, K, 6])"
        ));
    }
    let k = shape[1] as usize;
    Ok((0..frames)
        .map(|f| {
            v[f * k * 6..(f + 1) * k * 6]
                .chunks_exact(6)
                .filter(|r| r[5] >= 0.0 && r[4] >= threshold && r.iter().all(|x| x.is_finite()))
                .map(|r| Detection {
                    label: label_of(labels, r[5] as usize),
                    confidence: r[4],
                    bbox: [r[0], r[1], r[2], r[3]],
                })
                .collect()
        })
        .collect())
}

/// How an answer in the boxes convention is read: the boxes, scores, classes and
/// num_detections output names (num_detections may be absent), the box layout, the score
/// threshold and the class labels.
pub struct BoxesAnswer<'a> {
    pub names: &'a [String],
    pub layout: super::postprocess::BoxLayout,
    pub threshold: f32,
    pub labels: &'a [String],
}

/// Detections per frame from the boxes convention (read as `how` says), in the pixels of an
/// input of size `input` (normalized boxes are scaled to it).
pub fn parse_boxes(
    bytes: &[u8],
    header_length: Option<usize>,
    frames: usize,
    input: (u32, u32),
    how: &BoxesAnswer<'_>,
) -> Result<Vec<Vec<Detection>>, String> {
    let names = how.names;
    let outputs = parse_outputs(bytes, header_length)?;
    let get = |i: usize| {
        let name = names.get(i).map(String::as_str).unwrap_or(BOX_OUTPUTS[i]);
        outputs
            .get(name)
            .ok_or(format!("answer has no output named {name:?}"))
    };
    let (bshape, boxes) = get(0)?;
    let (_, scores) = get(1)?;
    let (_, classes) = get(2)?;
    let num = get(3).ok().map(|(_, v)| v.as_slice());
    if bshape.len() != 3 || bshape[0] != frames as i64 || bshape[2] != 4 {
        return Err(format!(
            "output {}: shape {bshape:?} (expected [{frames}, K, 4])",
            names.first().map(String::as_str).unwrap_or(BOX_OUTPUTS[0])
        ));
    }
    let t = super::postprocess::BoxTensors {
        boxes,
        scores,
        classes,
        num_detections: num,
    };
    super::postprocess::from_boxes(
        &t,
        frames,
        bshape[1] as usize,
        how.layout,
        input,
        how.threshold,
        |c| label_of(how.labels, c),
    )
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
            assert_eq!(
                jpegs,
                Images::Jpegs(vec![b"j0".to_vec(), b"j11".to_vec(), vec![]])
            );
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

    /// Ensures UINT8 `[N, H, W, 3]` inputs and the boxes outputs round-trip in JSON and binary.
    #[test]
    fn rgb_input_and_box_outputs_round_trip() {
        let labels: Vec<String> = vec!["red".into(), "blue".into()];
        let class = |l: &str| labels.iter().position(|x| x == l).unwrap() as i64;
        let data: Vec<u8> = (0..2 * 3 * 4 * 3).map(|i| i as u8).collect();
        for binary in [false, true] {
            let input = Input::Rgb {
                width: 4,
                height: 3,
                data: &data,
            };
            let body = request_with("r", INPUT, input, binary, &BOX_OUTPUTS);
            let (req, images) = parse_request(&body.bytes, body.header_length).unwrap();
            assert_eq!(
                images,
                Images::Rgb {
                    width: 4,
                    height: 3,
                    frames: vec![data[..36].to_vec(), data[36..].to_vec()],
                }
            );
            let resp = response_with("motion", &req, box_outputs(&dets(), class));
            let names: Vec<String> = BOX_OUTPUTS.iter().map(|s| s.to_string()).collect();
            let layout = crate::inference::postprocess::BoxLayout::default();
            let how = BoxesAnswer {
                names: &names,
                layout,
                threshold: 0.0,
                labels: &labels,
            };
            let back = parse_boxes(&resp.bytes, resp.header_length, 3, (4, 3), &how).unwrap();
            assert_eq!(back, dets());
        }
        let bad = request_with(
            "r",
            INPUT,
            Input::Rgb {
                width: 4,
                height: 3,
                data: &data[..35],
            },
            true,
            &[OUTPUT],
        );
        assert!(parse_request(&bad.bytes, bad.header_length).is_err());
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
