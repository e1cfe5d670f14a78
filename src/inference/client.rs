//! `RemoteClient`: framewire as a client of a remote inference service, `optifye` (the prototype's
//! `/infer`) or `oip-v2` (Open Inference Protocol v2 REST), over blocking HTTP/1.1 (ureq). It is
//! called from the blocking pool by `actors::inference`, lives as long as the inference actor, and
//! keeps one connection pool.
//!
//! Failures are classified for the retry loop: no answer, a timeout, 5xx, 408 and 429 are
//! *transient* (the batch is retried with backoff, nothing is dropped); any other 4xx, or an answer
//! that does not parse or does not cover every frame, is *permanent* for that batch. Error texts
//! name the service by its redacted URL and the batch, never credentials.

use super::{Detection, oip, optifye};
use crate::config::{InferenceConfig, InferenceProtocol};
use crate::wire::FrameBatch;
use parking_lot::Mutex;
use std::io::Read;

/// Longest answer read (bytes).
const MAX_ANSWER: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl ClientError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Permanent(_))
    }
}

pub struct RemoteClient {
    protocol: InferenceProtocol,
    base: String,
    shown: String,
    agent: ureq::Agent,
    cfg: InferenceConfig,
    /// `oip-v2` class names: from `labels_file`, else fetched with the model metadata.
    labels: Mutex<Option<Vec<String>>>,
    /// `oip-v2` RGB input: the model's input size (width, height) from its metadata, if fixed.
    model_size: Mutex<Option<(u32, u32)>>,
    /// Decodes frames for `input_format = "rgb"`.
    codec: crate::media::jpeg::Codec,
}

struct Answer {
    bytes: Vec<u8>,
    header_length: Option<usize>,
}

impl RemoteClient {
    pub fn new(cfg: &InferenceConfig) -> Result<Self, String> {
        let labels = if cfg.labels_file.is_empty() {
            None
        } else {
            let text = std::fs::read_to_string(&cfg.labels_file)
                .map_err(|e| format!("inference.labels_file {}: {e}", cfg.labels_file))?;
            Some(text.lines().map(|l| l.trim().to_string()).collect())
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(cfg.timeout)
            .max_idle_connections_per_host(cfg.workers.max(1) * 2)
            .build();
        Ok(Self {
            protocol: cfg.protocol,
            base: cfg.url.trim_end_matches('/').to_string(),
            shown: crate::redact::url(&cfg.url)
                .trim_end_matches('/')
                .to_string(),
            agent,
            cfg: cfg.clone(),
            labels: Mutex::new(labels),
            model_size: Mutex::new(None),
            codec: crate::media::jpeg::Codec::default(),
        })
    }

    /// The same client, decoding frames for RGB input with `codec`.
    pub fn with_codec(self, codec: crate::media::jpeg::Codec) -> Self {
        Self { codec, ..self }
    }

    pub fn protocol(&self) -> &'static str {
        self.protocol.name()
    }

    /// The model name written into results documents.
    pub fn model(&self) -> String {
        match self.protocol {
            InferenceProtocol::OipV2 => self.cfg.model.clone(),
            _ => "optifye".into(),
        }
    }

    /// Whether the service says it is ready (`GET /health`, or `/v2/health/ready` and the model's
    /// `/ready`); also loads the model's labels for `oip-v2`.
    pub fn ready(&self) -> Result<(), ClientError> {
        match self.protocol {
            InferenceProtocol::OipV2 => {
                self.get("/v2/health/ready")?;
                let m = &self.cfg.model;
                self.get(&format!("/v2/models/{m}/ready"))?;
                let meta = self.get(&format!("/v2/models/{m}"))?;
                let doc: serde_json::Value = serde_json::from_slice(&meta.bytes).map_err(|e| {
                    ClientError::Permanent(format!("{}: model {m} metadata: {e}", self.shown))
                })?;
                // NHWC [N, H, W, 3] with a fixed height and width.
                let size = doc["inputs"]
                    .as_array()
                    .and_then(|ins| ins.iter().find(|i| i["name"] == self.cfg.input.as_str()))
                    .and_then(|i| i["shape"].as_array())
                    .and_then(|d| match d.as_slice() {
                        [_, h, w, c] if c.as_i64() == Some(3) => Some((w.as_i64()?, h.as_i64()?)),
                        _ => None,
                    })
                    .filter(|(w, h)| *w > 0 && *h > 0)
                    .map(|(w, h)| (w as u32, h as u32));
                *self.model_size.lock() = size;
                let mut labels = self.labels.lock();
                if labels.is_none() {
                    *labels = Some(
                        doc["parameters"]["labels"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    );
                }
                Ok(())
            }
            _ => {
                let a = self.get("/health")?;
                let doc: serde_json::Value = serde_json::from_slice(&a.bytes).unwrap_or_default();
                match doc["status"].as_str() {
                    Some("healthy") => Ok(()),
                    other => Err(ClientError::Transient(format!(
                        "{}/health: status {other:?}, not \"healthy\"",
                        self.shown
                    ))),
                }
            }
        }
    }

    /// One detection list per frame of `batch`, in frame order, boxes in the frames' pixels.
    /// Batches over `max_batch` frames go as several requests.
    pub fn infer(&self, batch: &FrameBatch) -> Result<Vec<Vec<Detection>>, ClientError> {
        let mut out = Vec::with_capacity(batch.frames.len());
        for part in batch.frames.chunks(self.cfg.max_batch.max(1)) {
            let dets = match self.protocol {
                InferenceProtocol::OipV2 => self.infer_oip(batch, part)?,
                _ => self.infer_optifye(batch, part)?,
            };
            out.extend(dets);
        }
        if self.cfg.nms_iou > 0.0 {
            out = out
                .into_iter()
                .map(|frame| crate::inference::postprocess::nms(frame, self.cfg.nms_iou))
                .collect();
        }
        Ok(out)
    }

    fn infer_optifye(
        &self,
        batch: &FrameBatch,
        part: &[crate::wire::v1::Frame],
    ) -> Result<Vec<Vec<Detection>>, ClientError> {
        let frames: Vec<(u64, &[u8])> = part.iter().map(|f| (f.seq, f.jpeg.as_slice())).collect();
        let body = serde_json::to_vec(&optifye::request(batch.sequence, &frames))
            .expect("request serialises");
        let a = self.post("/infer", "application/json", None, &body)?;
        let resp: optifye::InferResponse = serde_json::from_slice(&a.bytes).map_err(|e| {
            ClientError::Permanent(format!(
                "{}/infer, batch {}: answer is not the prototype's JSON: {e}",
                self.shown, batch.batch_id
            ))
        })?;
        let ids: Vec<u64> = part.iter().map(|f| f.seq).collect();
        optifye::detections(&ids, &resp).map_err(|e| {
            ClientError::Permanent(format!(
                "{}/infer, batch {}: {e}",
                self.shown, batch.batch_id
            ))
        })
    }

    fn infer_oip(
        &self,
        batch: &FrameBatch,
        part: &[crate::wire::v1::Frame],
    ) -> Result<Vec<Vec<Detection>>, ClientError> {
        use crate::config::{InputFormat, OutputFormat};
        use crate::inference::postprocess::{BoxLayout, to_frame};
        if self.labels.lock().is_none() {
            self.ready()?;
        }
        let permanent = |e: String| {
            ClientError::Permanent(format!(
                "{}/v2/models/{}/infer, batch {}: {e}",
                self.shown, self.cfg.model, batch.batch_id
            ))
        };
        let jpegs: Vec<&[u8]> = part.iter().map(|f| f.jpeg.as_slice()).collect();
        // Frame sizes (for scaling boxes back) and the size the model sees.
        let (body, frame_sizes, input_size) = match self.cfg.input_format {
            InputFormat::Jpeg => {
                let sizes: Vec<(u32, u32)> = part.iter().map(|f| (f.width, f.height)).collect();
                let first = sizes.first().copied().unwrap_or((0, 0));
                let input = crate::inference::oip::Input::Jpegs(&jpegs);
                let body = self.request(batch, input);
                (body, sizes, first)
            }
            InputFormat::Rgb => {
                let mut sizes = Vec::with_capacity(part.len());
                let mut data = Vec::new();
                let mut target =
                    crate::config::parse_size(&self.cfg.input_size).or(*self.model_size.lock());
                for (i, j) in jpegs.iter().enumerate() {
                    let (w, h, rgb) = self
                        .codec
                        .decode_rgb(j)
                        .map_err(|e| permanent(format!("frame {i}: {e}")))?;
                    let to = *target.get_or_insert((w, h));
                    let resized = crate::media::jpeg::resize_rgb(w, h, &rgb, to)
                        .map_err(|e| permanent(format!("frame {i}: {e}")))?;
                    data.extend_from_slice(&resized);
                    sizes.push((w, h));
                }
                let (width, height) = target.unwrap_or((0, 0));
                let input = crate::inference::oip::Input::Rgb {
                    width,
                    height,
                    data: &data,
                };
                let body = self.request(batch, input);
                (body, sizes, (width, height))
            }
        };
        let path = format!("/v2/models/{}/infer", self.cfg.model);
        let content_type = if body.header_length.is_some() {
            "application/octet-stream"
        } else {
            "application/json"
        };
        let a = self.post(&path, content_type, body.header_length, &body.bytes)?;
        let labels = self.labels.lock().clone().unwrap_or_default();
        let dets = match self.cfg.output_format {
            OutputFormat::Nk6 => oip::parse_detections(
                &a.bytes,
                a.header_length,
                &self.cfg.output,
                part.len(),
                self.cfg.score_threshold,
                &labels,
            ),
            OutputFormat::Boxes => oip::parse_boxes(
                &a.bytes,
                a.header_length,
                part.len(),
                input_size,
                &oip::BoxesAnswer {
                    names: &self.cfg.box_outputs,
                    layout: BoxLayout {
                        yxyx: self.cfg.boxes_yxyx,
                        normalized: self.cfg.boxes_normalized,
                    },
                    threshold: self.cfg.score_threshold,
                    labels: &labels,
                },
            ),
        }
        .map_err(permanent)?;
        // Boxes come in the pixels the model saw: back to each frame's.
        let scale_from = |i: usize| match self.cfg.input_format {
            InputFormat::Rgb => input_size,
            InputFormat::Jpeg => frame_sizes[i],
        };
        Ok(dets
            .into_iter()
            .enumerate()
            .map(|(i, frame)| {
                frame
                    .into_iter()
                    .map(|d| to_frame(d, scale_from(i), frame_sizes[i]))
                    .collect()
            })
            .collect())
    }

    /// The OIP request for `input` with the configured outputs, JSON or binary.
    fn request(&self, batch: &FrameBatch, input: oip::Input<'_>) -> oip::Body {
        let outputs: Vec<&str> = match self.cfg.output_format {
            crate::config::OutputFormat::Nk6 => vec![self.cfg.output.as_str()],
            crate::config::OutputFormat::Boxes => {
                self.cfg.box_outputs.iter().map(String::as_str).collect()
            }
        };
        oip::request_with(
            &batch.batch_id,
            &self.cfg.input,
            input,
            self.cfg.binary,
            &outputs,
        )
    }

    fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.answer(path, self.agent.get(&format!("{}{path}", self.base)).call())
    }

    fn post(
        &self,
        path: &str,
        content_type: &str,
        header_length: Option<usize>,
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", content_type);
        if let Some(n) = header_length {
            req = req.set(oip::HEADER_LENGTH, &n.to_string());
        }
        self.answer(path, req.send_bytes(body))
    }

    fn answer(
        &self,
        path: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<Answer, ClientError> {
        let at = format!("{}{path}", self.shown);
        match r {
            Ok(resp) => {
                let header_length = match resp.header(oip::HEADER_LENGTH) {
                    None => None,
                    Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                        ClientError::Permanent(format!("{at}: bad {} {v:?}", oip::HEADER_LENGTH))
                    })?),
                };
                let mut bytes = Vec::new();
                resp.into_reader()
                    .take(MAX_ANSWER)
                    .read_to_end(&mut bytes)
                    .map_err(|e| {
                        ClientError::Transient(format!("{at}: reading the answer: {e}"))
                    })?;
                Ok(Answer {
                    bytes,
                    header_length,
                })
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text: String = resp
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                let msg = format!("{at}: HTTP {code}: {}", text.trim());
                if code >= 500 || code == 408 || code == 429 {
                    Err(ClientError::Transient(msg))
                } else {
                    Err(ClientError::Permanent(msg))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                Err(ClientError::Transient(format!("{at}: {}", t.kind())))
            }
        }
    }
}
