//! Remote inference: framewire's `serve-inference` binary over real HTTP, spoken to by the
//! `optifye` and `oip-v2` clients and by hand-built requests in the prototype's and the protocol's
//! documented shapes; fault classification against a small misbehaving server; and the daemon's
//! pipeline running its inference through `serve-inference`.

use crate::common::*;
use framewire::config::{InferenceConfig, InferenceProtocol};
use framewire::daemon::{self, Options};
use framewire::inference::client::{ClientError, RemoteClient};
use framewire::inference::motion::{MotionConfig, MotionDetector};
use framewire::media::synthetic::{SceneConfig, SyntheticCamera};
use framewire::wire::{FrameBatch, v1};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `framewire serve-inference`, killed on drop.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
}

impl Served {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }
    pub fn start_on(listen: &str) -> Self {
        let mut child = Command::new(bin())
            .args(["serve-inference", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve-inference starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 25 frames of the synthetic scene as a batch of 640×480 JPEGs.
fn batch() -> FrameBatch {
    let cam = SyntheticCamera::new(SceneConfig::default()).unwrap();
    let frames = (0..25u64)
        .map(|i| {
            let (rgb, _) = cam.render_rgb(i * 5);
            v1::Frame {
                seq: 100 + i,
                width: 640,
                height: 480,
                jpeg: framewire::media::jpeg::encode_rgb(640, 480, &rgb, 80).unwrap(),
                ..Default::default()
            }
        })
        .collect();
    FrameBatch {
        camera_id: "cam-1".into(),
        batch_id: "cam-1-20261201T000000.000000Z-000004".into(),
        sequence: 4,
        frames,
        ..Default::default()
    }
}

/// What the in-process detector finds in `b`.
fn builtin(b: &FrameBatch) -> Vec<Vec<framewire::inference::Detection>> {
    let jpegs: Vec<&[u8]> = b.frames.iter().map(|f| f.jpeg.as_slice()).collect();
    MotionDetector::new(MotionConfig::default())
        .detect_jpegs(&jpegs)
        .unwrap()
}

/// The same objects in every frame: equal labels and boxes, confidences within 0.02 (the RGB
/// tensor path decodes with chroma upsampling, the in-process detector reads the JPEG's own 4:2:0
/// planes, so the evidence behind a confidence differs by a few levels).
fn assert_same_objects(
    got: &[Vec<framewire::inference::Detection>],
    want: &[Vec<framewire::inference::Detection>],
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: frames");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let key =
            |d: &&framewire::inference::Detection| (d.label.clone(), d.bbox.map(f32::to_bits));
        let (mut g, mut w): (Vec<_>, Vec<_>) = (g.iter().collect(), w.iter().collect());
        g.sort_by_key(key);
        w.sort_by_key(key);
        assert_eq!(g.len(), w.len(), "{what}: frame {i}: {g:?} vs {w:?}");
        for (a, b) in g.iter().zip(&w) {
            assert!(
                a.label == b.label
                    && a.bbox == b.bbox
                    && (a.confidence - b.confidence).abs() <= 0.02,
                "{what}: frame {i}: {a:?} vs {b:?}"
            );
        }
    }
}

fn client(protocol: InferenceProtocol, url: &str, binary: bool) -> RemoteClient {
    RemoteClient::new(&InferenceConfig {
        protocol,
        url: url.into(),
        binary,
        timeout: Duration::from_secs(10),
        ..InferenceConfig::default()
    })
    .unwrap()
}

fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Vec<u8>, Option<String>) {
    let mut req = ureq::post(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let hl = resp
        .header("Inference-Header-Content-Length")
        .map(String::from);
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).unwrap();
    (status, bytes, hl)
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(k: &[&'a str]) -> BTreeSet<&'a str> {
    k.iter().copied().collect()
}

/// Ensures the `optifye` client and the `oip-v2` client (JSON and binary tensors), talking to
/// `serve-inference` over HTTP, return exactly the detections the in-process detector finds.
#[test]
fn remote_protocols_agree_with_builtin() {
    let served = Served::start();
    let b = batch();
    let expected = builtin(&b);
    let found: usize = expected.iter().map(Vec::len).sum();
    assert!(
        found >= 50,
        "the scene's 3 objects are found ({found} boxes)"
    );
    for (protocol, binary) in [
        (InferenceProtocol::Optifye, false),
        (InferenceProtocol::OipV2, false),
        (InferenceProtocol::OipV2, true),
    ] {
        let c = client(protocol, &served.url(), binary);
        c.ready().unwrap();
        let got = c.infer(&b).unwrap();
        assert_eq!(got, expected, "{protocol:?} binary={binary}");
    }
    // Split into requests of 10 frames: still one list per frame, in order (the detector's
    // background is per request, so only the shape is compared).
    let mut cfg = InferenceConfig {
        protocol: InferenceProtocol::Optifye,
        url: served.url(),
        ..InferenceConfig::default()
    };
    cfg.max_batch = 10;
    let got = RemoteClient::new(&cfg).unwrap().infer(&b).unwrap();
    assert_eq!(got.len(), 25);
    let (_, stats) = get(served.addr, "/stats");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["batches_processed"], 3 + 3);
    assert_eq!(stats["frames_processed"], 25 * 4);
}

/// Ensures the `oip-v2` client's other conventions against `serve-inference`: RGB UINT8
/// `[N, H, W, 3]` input with the boxes/scores/classes/num_detections outputs finds the in-process
/// detections' objects (binary and JSON agree); resized to a smaller model input, the boxes come
/// back scaled to frame pixels, each near the full-size one.
#[test]
fn oip_rgb_input_and_box_outputs() {
    use framewire::config::{InputFormat, OutputFormat};
    let served = Served::start();
    let b = batch();
    let expected = builtin(&b);
    let rgb = |binary: bool, size: &str| {
        RemoteClient::new(&InferenceConfig {
            protocol: InferenceProtocol::OipV2,
            url: served.url(),
            binary,
            input_format: InputFormat::Rgb,
            input_size: size.into(),
            output_format: OutputFormat::Boxes,
            timeout: Duration::from_secs(30),
            ..InferenceConfig::default()
        })
        .unwrap()
    };
    assert_same_objects(
        &rgb(true, "").infer(&b).unwrap(),
        &expected,
        "full-size RGB, binary",
    );

    // Half size: JSON (25 × 320×240×3 numbers) and binary agree, boxes are in frame pixels.
    let half = rgb(true, "320x240").infer(&b).unwrap();
    let mut small = b.clone();
    small.frames.truncate(5);
    assert_eq!(
        rgb(false, "320x240").infer(&small).unwrap(),
        rgb(true, "320x240").infer(&small).unwrap(),
        "JSON and binary RGB agree"
    );
    let (mut matched, mut total) = (0, 0);
    for (want, got) in expected.iter().zip(&half) {
        for w in want {
            total += 1;
            let best = got
                .iter()
                .filter(|g| g.label == w.label)
                .map(|g| framewire::inference::postprocess::iou(&w.bbox, &g.bbox))
                .fold(0.0f32, f32::max);
            matched += usize::from(best > 0.7);
        }
        for g in got {
            assert!(
                g.bbox[2] <= 640.0 && g.bbox[3] <= 480.0 && g.bbox[2] > g.bbox[0],
                "{g:?} in frame pixels"
            );
        }
    }
    assert!(
        matched * 10 >= total * 9,
        "{matched} of {total} boxes found again at half size (IoU > 0.7)"
    );
}

/// Ensures `serve-inference` answers the prototype's own request (its whole Kafka batch JSON) and
/// the OIP v2 endpoints with the documented fields, no more and no fewer.
#[test]
fn wire_shapes_match_the_prototype_and_the_protocol() {
    let served = Served::start();
    let b = batch();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    // As the prototype's extractor builds a batch and its consumer posts it with requests.post(json=…).
    let prototype = json!({
        "batch_id": 7,
        "frame_count": 25,
        "frames": b.frames.iter().enumerate().map(|(i, f)| json!({
            "frame_id": i, "data": b64.encode(&f.jpeg), "timestamp": 1764547200.04 * (i as f64 + 1.0),
        })).collect::<Vec<_>>(),
        "timestamp": "2026-12-01T00:00:00.000000",
        "source_type": "rtsp",
        "extractor_info": {"frame_width": 640, "frame_height": 480, "jpeg_quality": 80},
    });
    let (status, body, _) = post(
        &format!("{}/infer", served.url()),
        prototype.to_string().as_bytes(),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(status, 200);
    let r: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        keys(&r),
        set(&[
            "batch_id",
            "total_frames",
            "total_detections",
            "processing_time",
            "results",
            "timestamp"
        ])
    );
    assert_eq!(r["batch_id"], 7);
    assert_eq!(r["total_frames"], 25);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 25);
    let mut total = 0;
    for (i, f) in results.iter().enumerate() {
        assert_eq!(keys(f), set(&["frame_id", "detections", "detection_count"]));
        assert_eq!(f["frame_id"], i);
        let dets = f["detections"].as_array().unwrap();
        assert_eq!(f["detection_count"], dets.len());
        total += dets.len();
        for d in dets {
            assert_eq!(keys(d), set(&["class", "confidence", "bbox"]));
            assert_eq!(d["bbox"].as_array().unwrap().len(), 4);
        }
    }
    assert!(total > 0 && r["total_detections"] == total);
    let (s, h) = get(served.addr, "/health");
    assert_eq!(
        (
            s,
            serde_json::from_str::<Value>(&h).unwrap()["status"].clone()
        ),
        (200, json!("healthy"))
    );
    assert_eq!(get(served.addr, "/info").0, 200);

    // OIP v2: health, metadata, and a JSON inference request as the protocol documents it.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/motion/ready",
        "/v2",
    ] {
        assert_eq!(get(served.addr, path).0, 200, "{path}");
    }
    let (_, meta) = get(served.addr, "/v2/models/motion");
    let meta: Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(
        keys(&meta),
        set(&[
            "name",
            "versions",
            "platform",
            "inputs",
            "outputs",
            "parameters"
        ])
    );
    assert_eq!(
        keys(&meta["inputs"][0]),
        set(&["name", "datatype", "shape"])
    );
    let req = json!({
        "id": "req-1",
        "inputs": [{"name": "images", "shape": [3], "datatype": "BYTES",
                    "data": b.frames[..3].iter().map(|f| b64.encode(&f.jpeg)).collect::<Vec<_>>()}],
    });
    let (status, body, hl) = post(
        &format!("{}/v2/models/motion/infer", served.url()),
        req.to_string().as_bytes(),
        &[("Content-Type", "application/json")],
    );
    assert_eq!((status, hl), (200, None));
    let r: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        keys(&r),
        set(&["model_name", "model_version", "id", "outputs"])
    );
    assert_eq!(
        (r["model_name"].clone(), r["id"].clone()),
        (json!("motion"), json!("req-1"))
    );
    let out = &r["outputs"][0];
    assert_eq!(keys(out), set(&["name", "shape", "datatype", "data"]));
    let shape: Vec<i64> = serde_json::from_value(out["shape"].clone()).unwrap();
    assert_eq!(
        (shape[0], shape[2], out["datatype"].clone()),
        (3, 6, json!("FP32"))
    );
    assert_eq!(
        out["data"].as_array().unwrap().len() as i64,
        shape.iter().product::<i64>()
    );

    // Binary tensor extension: header length given, binary_data_size matches what follows.
    let body = framewire::inference::oip::request(
        "req-2",
        &[&b.frames[0].jpeg, &b.frames[1].jpeg, &b.frames[2].jpeg],
        true,
    );
    let n = body.header_length.unwrap().to_string();
    let (status, bytes, hl) = post(
        &format!("{}/v2/models/motion/infer", served.url()),
        &body.bytes,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", &n),
        ],
    );
    assert_eq!(status, 200);
    let hl: usize = hl
        .expect("binary answer has a header length")
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&bytes[..hl]).unwrap();
    let out = &head["outputs"][0];
    assert!(out.get("data").is_none());
    assert_eq!(out["parameters"]["binary_data_size"], bytes.len() - hl);
}

/// Ensures bad requests get 400 (or 404 for an unknown model) with a JSON error, and the server
/// keeps serving.
#[test]
fn bad_requests_are_refused_and_the_server_survives() {
    let served = Served::start();
    let u = served.url();
    let b = batch();
    let good = framewire::inference::oip::request("x", &[&b.frames[0].jpeg], true);
    let n = good.header_length.unwrap().to_string();
    // (url, body, headers, expected status)
    type Case<'a> = (String, Vec<u8>, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        (
            format!("{u}/infer"),
            b"\x00\xffgarbage".to_vec(),
            vec![],
            400,
        ),
        (
            format!("{u}/infer"),
            br#"{"batch_id":1,"frames":[{"frame_id":0,"data":"%%%"}]}"#.to_vec(),
            vec![],
            400,
        ),
        (
            format!("{u}/infer"),
            br#"{"batch_id":1,"frames":[{"frame_id":0,"data":"AAAA"}]}"#.to_vec(),
            vec![],
            400,
        ),
        (
            format!("{u}/infer"),
            br#"{"batch_id":1,"frames":[]}"#.to_vec(),
            vec![],
            400,
        ),
        (
            format!("{u}/v2/models/motion/infer"),
            b"{".to_vec(),
            vec![],
            400,
        ),
        (
            format!("{u}/v2/models/motion/infer"),
            good.bytes[..good.bytes.len() - 3].to_vec(),
            vec![("Inference-Header-Content-Length", n.as_str())],
            400,
        ),
        (
            format!("{u}/v2/models/motion/infer"),
            good.bytes.clone(),
            vec![("Inference-Header-Content-Length", "999999")],
            400,
        ),
        (
            format!("{u}/v2/models/yolo/infer"),
            good.bytes.clone(),
            vec![],
            404,
        ),
    ];
    for (url, body, headers, want) in cases {
        let (status, body, _) = post(&url, &body, &headers);
        assert_eq!(status, want, "{url}");
        let doc: Value = serde_json::from_slice(&body).expect("a JSON error");
        assert!(
            doc["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{doc}"
        );
    }
    assert_eq!(get(served.addr, "/v2/models/yolo").0, 404);
    assert_eq!(get(served.addr, "/health").0, 200);
    let (_, stats) = get(served.addr, "/stats");
    assert_eq!(serde_json::from_str::<Value>(&stats).unwrap()["errors"], 7);
}

/// A server that answers every request with `status` and `body`.
fn misbehaving(status: u16, body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = BufReader::new(s);
            // Read the whole request (headers, then Content-Length bytes) before answering.
            let mut length = 0usize;
            let mut line = String::new();
            while s.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut request = vec![0u8; length];
            let _ = s.read_exact(&mut request);
            let mut s = s.into_inner();
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Ensures remote failures are classified for the retry loop: unreachable, 503 and 429 are
/// transient (retried, nothing dropped); 400 and an unparseable or incomplete answer are permanent.
#[test]
fn remote_failures_are_transient_or_permanent() {
    let b = batch();
    let infer = |addr: String| client(InferenceProtocol::Optifye, &addr, false).infer(&b);
    let dead = format!("http://127.0.0.1:{}", free_port());
    assert!(matches!(infer(dead), Err(ClientError::Transient(_))));
    for (status, body, permanent) in [
        (503, r#"{"error":"overloaded"}"#, false),
        (429, "{}", false),
        (400, r#"{"error":"bad"}"#, true),
        (200, "not json", true),
        (
            200,
            r#"{"batch_id":4,"total_frames":0,"total_detections":0,"processing_time":0,"results":[],"timestamp":"t"}"#,
            true,
        ),
    ] {
        let addr = misbehaving(status, body);
        let e = infer(format!("http://{addr}")).unwrap_err();
        assert_eq!(e.is_permanent(), permanent, "HTTP {status} {body}: {e}");
        assert!(
            e.to_string().contains(&addr.to_string()),
            "names the service: {e}"
        );
    }
    let addr = misbehaving(
        200,
        r#"{"model_name":"motion","outputs":[{"name":"detections","shape":[1,1,6],"datatype":"FP32","data":[1]}]}"#,
    );
    let e = client(InferenceProtocol::OipV2, &format!("http://{addr}"), false)
        .infer(&b)
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
}

/// Ensures the pipeline with its inference in `serve-inference` (prototype API, then OIP v2 with
/// binary tensors) stores results that match the synthetic ground truth, marked with the protocol.
#[test]
fn pipeline_through_serve_inference() {
    let served = Served::start();
    for (protocol, name) in [
        (InferenceProtocol::Optifye, "optifye"),
        (InferenceProtocol::OipV2, "oip-v2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut cfg = config(dir.path(), vec![camera("cam-1", 1, (640, 480), 10.0)], 25);
        cfg.inference.protocol = protocol;
        cfg.inference.url = served.url();
        cfg.inference.binary = true;
        let d = daemon::start(Options::new(cfg)).expect("daemon starts");
        wait_until("100 stored frames", Duration::from_secs(60), || {
            results(&out).iter().map(|r| r.frames.len()).sum::<usize>() >= 100
        });
        let text = d.metrics.render();
        assert!(d.shutdown());
        let all = results(&out);
        assert!(all.iter().all(|r| r.model.protocol == name));
        let (frames, recall, precision) = crate::pipeline::accuracy(&all);
        assert!(frames >= 100);
        assert!(
            recall >= 0.9 && precision >= 0.9,
            "{name}: recall {recall}, precision {precision}"
        );
        let ok = metric(
            &text,
            &format!("framewire_inference_requests_total{{outcome=\"ok\",protocol=\"{name}\"}}"),
        );
        assert!(ok >= 4.0, "{name}: {ok} ok requests counted");
    }
}

/// Ensures `/readyz` says the inference service is not ready while its health endpoint does not
/// answer (naming it), and turns ready once the service is up; the batches held meanwhile are
/// stored.
#[test]
fn readyz_follows_the_inference_service() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(dir.path(), vec![camera("cam-1", 1, (320, 240), 10.0)], 10);
    cfg.inference.protocol = InferenceProtocol::OipV2;
    cfg.inference.url = format!("http://127.0.0.1:{port}");
    cfg.inference.timeout = Duration::from_secs(1);
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until(
        "/readyz names the inference service",
        Duration::from_secs(20),
        || {
            let (code, body) = get(d.http, "/readyz");
            code == 503 && body.contains("inference service not ready")
        },
    );
    let _served = Served::start_on(&format!("127.0.0.1:{port}"));
    wait_until("/readyz ready", Duration::from_secs(30), || {
        get(d.http, "/readyz").0 == 200
    });
    wait_until("batches stored", Duration::from_secs(30), || {
        results(&out).len() >= 2
    });
    assert!(d.shutdown());
}
