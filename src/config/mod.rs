//! Configuration: the schema (this file), loading and validation (`load`), and the difference
//! between two generations (`diff`), which the supervisor uses on `SIGHUP` to restart only what changed.
//!
//! Every key and its default is documented in `etc/framewire.toml`; the names are a contract with
//! operators and tests. Secrets come in through `${VAR}` interpolation and never leave the process
//! unredacted.

mod diff;
mod load;

pub use diff::ConfigDiff;
pub use load::{ConfigError, Problem, load, load_str};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Which half of the pipeline this daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Cameras → bus.
    Ingest,
    /// Bus → inference → storage.
    Process,
    /// Both halves in one process.
    All,
}

impl Role {
    pub fn ingest(self) -> bool {
        matches!(self, Role::Ingest | Role::All)
    }
    pub fn process(self) -> bool {
        matches!(self, Role::Process | Role::All)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub cameras: Vec<CameraConfig>,
    pub batch: BatchConfig,
    pub kafka: KafkaConfig,
    pub inference: InferenceConfig,
    pub annotator: AnnotatorConfig,
    pub storage: StorageConfig,
    pub supervisor: SupervisorConfig,
    pub media: MediaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            cameras: vec![
                CameraConfig::synthetic(
                    "cam-1",
                    "synthetic://?size=640x480&fps=25&objects=3&seed=1",
                ),
                CameraConfig::synthetic(
                    "cam-2",
                    "synthetic://?size=640x480&fps=25&objects=3&seed=2",
                ),
            ],
            batch: BatchConfig::default(),
            kafka: KafkaConfig::default(),
            inference: InferenceConfig::default(),
            annotator: AnnotatorConfig::default(),
            storage: StorageConfig::default(),
            supervisor: SupervisorConfig::default(),
            media: MediaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address of the health/metrics/status server. Loopback by default.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraConfig {
    /// Unique, `[A-Za-z0-9._-]`, ≤ 64 characters; used in storage keys, metric labels and Kafka keys.
    pub id: String,
    /// `synthetic://?size=WxH&fps=N&objects=N&seed=N` (later `rtsp://`, `file://`).
    pub url: String,
    /// Frames per second kept after decoding (every decoded frame when ≥ the camera's rate).
    #[serde(default = "defaults::sample_fps")]
    pub sample_fps: f64,
    /// Output frame size after resize.
    #[serde(default = "defaults::width")]
    pub width: u32,
    #[serde(default = "defaults::height")]
    pub height: u32,
    #[serde(default = "defaults::jpeg_quality")]
    pub jpeg_quality: u8,
    /// RTSP: `"tcp"` (interleaved, default) or `"udp"`.
    #[serde(default)]
    pub transport: Transport,
    /// RTSP credentials, when not in the URL (use `${VAR}`). Never logged or shown.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// RTSP: no frame for this long counts as a stalled stream (reconnect).
    #[serde(default = "defaults::stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// File: start again at the end.
    #[serde(default, rename = "loop")]
    pub loop_file: bool,
    /// File: `"realtime"` (the file's own frame rate, default) or `"fast"` (as fast as decoding goes).
    #[serde(default)]
    pub pace: Pace,
    /// Sampled frames waiting for the batcher; when full, the oldest is dropped and counted.
    #[serde(default = "defaults::queue_frames")]
    pub queue_frames: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    #[default]
    Realtime,
    Fast,
}

impl CameraConfig {
    pub fn synthetic(id: &str, url: &str) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            sample_fps: defaults::sample_fps(),
            width: defaults::width(),
            height: defaults::height(),
            jpeg_quality: defaults::jpeg_quality(),
            transport: Transport::default(),
            username: None,
            password: None,
            stall_timeout: defaults::stall_timeout(),
            loop_file: false,
            pace: Pace::default(),
            queue_frames: defaults::queue_frames(),
        }
    }

    /// The camera's secrets (password in the URL or the `password` key), for scrubbing free text.
    pub fn secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .password
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        if let Ok(u) = url::Url::parse(&self.url)
            && let Some(p) = u.password()
        {
            v.push(p.to_string());
            if let Ok(decoded) = urlencoding_decode(p) {
                v.push(decoded);
            }
        }
        v
    }
}

fn urlencoding_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    std::str::from_utf8(&bytes).map(str::to_string)
}

mod defaults {
    pub fn sample_fps() -> f64 {
        5.0
    }
    pub fn width() -> u32 {
        640
    }
    pub fn height() -> u32 {
        480
    }
    pub fn jpeg_quality() -> u8 {
        80
    }
    pub fn stall_timeout() -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
    pub fn queue_frames() -> usize {
        50
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// A batch closes when it holds this many frames …
    pub frames: usize,
    /// … or this long after its first frame, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            frames: 25,
            max_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// `"embedded"`: an in-process bounded queue (role `all` only); otherwise `host:port,…`.
    pub brokers: String,
    pub topic: String,
    /// Partitions of the embedded bus, and of the topic when framewire creates it.
    pub partitions: i32,
    pub group_id: String,
    /// Batches the process side works on at once.
    pub max_in_flight: usize,
    /// Capacity of each embedded partition, in batches (the producer waits when full).
    pub embedded_capacity: usize,
    /// Format of produced messages; the consumer accepts both on one topic.
    pub wire_format: WireFormat,
    /// Largest message the producer sends (librdkafka `message.max.bytes`, and the embedded bus's
    /// limit). A larger batch is refused with an error and counted, or with `claim_check` its frames
    /// go to storage first and the message carries their keys.
    pub max_message_bytes: usize,
    pub claim_check: bool,
    /// librdkafka `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// Create the topic (`partitions`, `max.message.bytes`) when it does not exist.
    pub create_topic: bool,
    /// Any librdkafka property, passed through as is (e.g. `"security.protocol" = "SASL_SSL"`).
    pub librdkafka: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// `framewire.v1.FrameBatch` in Protocol Buffers.
    #[default]
    FramewireV1,
    /// The Python prototype's JSON (base64 JPEGs).
    SeedJson,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "embedded".into(),
            topic: "framewire.frames".into(),
            partitions: 3,
            group_id: "framewire".into(),
            max_in_flight: 4,
            embedded_capacity: 64,
            wire_format: WireFormat::default(),
            max_message_bytes: 1_000_000,
            claim_check: false,
            compression: "none".into(),
            create_topic: true,
            librdkafka: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn embedded(&self) -> bool {
        self.brokers.trim() == "embedded"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InferenceProtocol {
    /// The in-process motion detector.
    Builtin,
    /// The Python prototype's `POST {url}/infer` (and `GET {url}/health`).
    Optifye,
    /// Open Inference Protocol v2 REST (`/v2/models/{model}/infer`), JSON or binary tensors.
    OipV2,
}

/// Parses `"WxH"` (both above zero).
pub fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

impl InferenceProtocol {
    /// The label used in metrics and results documents.
    pub fn name(self) -> &'static str {
        match self {
            InferenceProtocol::Builtin => "builtin",
            InferenceProtocol::Optifye => "optifye",
            InferenceProtocol::OipV2 => "oip-v2",
        }
    }
}

/// `oip-v2`: how frames go to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// BYTES `[N]`, one JPEG per element (the model decodes).
    #[default]
    Jpeg,
    /// UINT8 `[N, H, W, 3]` RGB, resized to the model's input size.
    Rgb,
}

/// `oip-v2`: how the model returns detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One FP32 `[N, K, 6]` tensor (`output`): x1, y1, x2, y2, score, class.
    #[default]
    Nk6,
    /// `boxes` `[N, K, 4]`, `scores` `[N, K]`, `classes` `[N, K]`, `num_detections` `[N]`.
    Boxes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InferenceConfig {
    pub protocol: InferenceProtocol,
    /// Base URL of a remote inference service (remote protocols only).
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Batches the built-in detector works on at once (threads of the blocking pool).
    pub workers: usize,
    /// Built-in detector: per-pixel difference from the background that counts as motion (0–255).
    pub motion_threshold: u8,
    /// Built-in detector: smallest object, as a fraction of the frame area.
    pub min_area_fraction: f32,
    /// Remote protocols: most frames in one request; larger batches are split (the prototype
    /// accepts at most 50).
    pub max_batch: usize,
    /// `oip-v2`: the model's name.
    pub model: String,
    /// `oip-v2`: send the JPEGs and receive the detections with the binary tensor extension.
    pub binary: bool,
    /// `oip-v2`: name of the input tensor.
    pub input: String,
    /// `oip-v2`: JPEG bytes, or RGB `[N, H, W, 3]` resized to the model's input size.
    pub input_format: InputFormat,
    /// `oip-v2`, `input_format = "rgb"`: the model's input size as `"WxH"`; empty: read from the
    /// model metadata (`[N, H, W, 3]`), else the frames' own size.
    pub input_size: String,
    /// `oip-v2`: the `[N, K, 6]` tensor, or the boxes/scores/classes/num_detections convention.
    pub output_format: OutputFormat,
    /// `oip-v2`: name of the `[N, K, 6]` output (x1, y1, x2, y2, score, class).
    pub output: String,
    /// `oip-v2`, `output_format = "boxes"`: names of the boxes, scores, classes and
    /// num_detections outputs.
    pub box_outputs: Vec<String>,
    /// `oip-v2`, boxes convention: boxes are `[y1, x1, y2, x2]` (TensorFlow) not `[x1, y1, x2, y2]`.
    pub boxes_yxyx: bool,
    /// `oip-v2`, boxes convention: boxes are fractions (0–1) of the input size, not pixels.
    pub boxes_normalized: bool,
    /// Remote protocols: non-maximum suppression per class at this IoU, for models without their
    /// own; 0 turns it off.
    pub nms_iou: f32,
    /// `oip-v2`: class names, one per line (class index = line number from 0). Empty: the model
    /// metadata's `parameters.labels`, else the index itself.
    pub labels_file: String,
    /// Remote protocols: detections below this score are dropped.
    pub score_threshold: f32,
    /// Remote protocols: transient failures in a row (timeouts, refused, 5xx) that open the
    /// circuit breaker; 0 turns it off.
    pub breaker_failures: u32,
    /// Remote protocols: how long an open breaker waits before one half-open probe (doubled after a
    /// failed probe, up to 60 s).
    #[serde(with = "humantime_serde")]
    pub breaker_open: Duration,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            protocol: InferenceProtocol::Builtin,
            url: String::new(),
            timeout: Duration::from_secs(10),
            workers: 1,
            motion_threshold: 30,
            min_area_fraction: 0.001,
            max_batch: crate::inference::optifye::PROTOTYPE_MAX_BATCH,
            model: "motion".into(),
            binary: false,
            input: crate::inference::oip::INPUT.into(),
            input_format: InputFormat::Jpeg,
            input_size: String::new(),
            output_format: OutputFormat::Nk6,
            output: crate::inference::oip::OUTPUT.into(),
            box_outputs: crate::inference::oip::BOX_OUTPUTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            boxes_yxyx: false,
            boxes_normalized: false,
            nms_iou: 0.0,
            labels_file: String::new(),
            score_threshold: 0.0,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(5),
        }
    }
}

/// How frames are encoded and decoded, for every camera and the process side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    /// `auto` (libjpeg-turbo when installed, else the built-in Rust codecs), `libjpeg-turbo`
    /// (required), or `rust`.
    pub jpeg_codec: crate::media::jpeg::CodecChoice,
    /// H.264 decoders shared by all cameras (0 = one per camera). With N > 0, each camera holds
    /// its access units from one IDR to the next and decodes them on a leased decoder in one go:
    /// memory for N decoders instead of one per camera (about 15 MB each at 720p), for up to one
    /// keyframe interval more latency. A camera whose keyframe interval is longer than
    /// `media::decoders::MAX_HOLD` decodes on its own decoder.
    pub decoders: usize,
}

impl MediaConfig {
    /// The codec this config selects; the built-in one if a required libjpeg-turbo vanished
    /// after validation.
    pub fn codec(&self) -> crate::media::jpeg::Codec {
        crate::media::jpeg::Codec::select(self.jpeg_codec).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnotatorConfig {
    /// Batches annotated at once (threads of the blocking pool).
    pub workers: usize,
    pub jpeg_quality: u8,
}

impl Default for AnnotatorConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            jpeg_quality: 85,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory (`path`).
    File,
    /// An S3 bucket (`bucket`, `region`, `endpoint`, …).
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// Root directory for `kind = "file"`.
    pub path: String,
    /// Key prefix under the root (no leading or trailing `/`).
    pub prefix: String,
    /// `kind = "s3"`: the bucket.
    pub bucket: String,
    /// AWS region; empty: the default chain (`AWS_REGION`, profile, instance metadata).
    pub region: String,
    /// An S3-compatible endpoint instead of AWS's (e.g. `http://127.0.0.1:9000`).
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need.
    pub force_path_style: bool,
    /// Static credentials (use `${VAR}`); empty: the AWS default chain (env, profile, IMDSv2 role).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Server-side encryption: `""` (the bucket's default), `"AES256"` or `"aws:kms"`.
    pub sse: String,
    /// With `sse = "aws:kms"`: the key id or ARN (empty: the account's default key).
    pub kms_key_id: String,
    /// Storage class of every object, e.g. `"STANDARD_IA"`; empty: the bucket's default.
    pub storage_class: String,
    /// S3: objects larger than this many bytes go up as multipart uploads.
    pub multipart_threshold: usize,
    /// S3: size of each multipart part in bytes (at least 5 MiB, S3's minimum).
    pub part_size: usize,
    /// S3: requests in flight at once when a batch's frames are written.
    pub upload_concurrency: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::File,
            path: "./framewire-out".into(),
            prefix: String::new(),
            bucket: String::new(),
            region: String::new(),
            endpoint: String::new(),
            force_path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            sse: String::new(),
            kms_key_id: String::new(),
            storage_class: String::new(),
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisorConfig {
    /// First restart delay ceiling; doubles per failure (full jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Largest restart delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Running this long without failing resets the backoff.
    #[serde(with = "humantime_serde")]
    pub healthy_after: Duration,
    /// On SIGTERM, how long in-flight batches may take to become durable.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl SupervisorConfig {
    pub fn backoff(&self) -> crate::clock::Backoff {
        crate::clock::Backoff::new(self.backoff_initial, self.backoff_max, self.healthy_after)
    }
}

/// A camera URL, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceUrl {
    Synthetic(crate::media::synthetic::SceneConfig),
    /// `rtsp://[user:pass@]host[:port]/path` (credentials may instead come from the camera's keys).
    Rtsp(url::Url),
    /// `file:///abs/path.mp4` or `.h264` / `.264` (raw Annex B).
    File(std::path::PathBuf),
}

impl SourceUrl {
    /// Parses a camera URL; the error names what is wrong (never the URL's credentials).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let u = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        match u.scheme() {
            "synthetic" => {
                let mut scene = crate::media::synthetic::SceneConfig::default();
                for (k, v) in u.query_pairs() {
                    let bad = |what: &str| format!("synthetic parameter {k}={v}: expected {what}");
                    match k.as_ref() {
                        "size" => {
                            let (w, h) = v.split_once('x').ok_or_else(|| bad("WIDTHxHEIGHT"))?;
                            scene.width = w.parse().map_err(|_| bad("WIDTHxHEIGHT"))?;
                            scene.height = h.parse().map_err(|_| bad("WIDTHxHEIGHT"))?;
                        }
                        "fps" => scene.fps = v.parse().map_err(|_| bad("a whole number"))?,
                        "objects" => {
                            scene.objects = v.parse().map_err(|_| bad("a whole number"))?
                        }
                        "seed" => scene.seed = v.parse().map_err(|_| bad("a whole number"))?,
                        _ => {
                            return Err(format!(
                                "unknown synthetic parameter {k:?} (known: size, fps, objects, seed)"
                            ));
                        }
                    }
                }
                crate::media::synthetic::SyntheticCamera::validate(&scene)
                    .map_err(|e| e.to_string())?;
                Ok(SourceUrl::Synthetic(scene))
            }
            "rtsp" => {
                if u.host_str().is_none_or(str::is_empty) {
                    return Err("rtsp URL has no host".into());
                }
                Ok(SourceUrl::Rtsp(u))
            }
            "file" => {
                let path = u.to_file_path().map_err(|_| {
                    "file URL must be an absolute path: file:///dir/clip.mp4".to_string()
                })?;
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !["mp4", "m4v", "mov", "h264", "264"].contains(&ext.as_str()) {
                    return Err(format!(
                        "file {}: expected .mp4, .m4v, .mov, .h264 or .264",
                        path.display()
                    ));
                }
                Ok(SourceUrl::File(path))
            }
            other => Err(format!(
                "unknown scheme {other:?}: expected synthetic://, rtsp:// or file://"
            )),
        }
    }

    pub fn source_type(&self) -> &'static str {
        match self {
            SourceUrl::Synthetic(_) => "synthetic",
            SourceUrl::Rtsp(_) => "rtsp",
            SourceUrl::File(_) => "file",
        }
    }
}
