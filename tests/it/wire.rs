//! The wire formats: framewire.v1 and the prototype's seed JSON round-trip; the decoder is total
//! (any bytes give a batch or an error, never a panic); seed JSON is interchangeable with the Python
//! prototype through a real Kafka protocol (librdkafka's mock cluster).

use crate::common::*;
use base64::Engine as _;
use framewire::config::{Role, WireFormat};
use framewire::daemon::{self, Options};
use framewire::wire::{self, v1};
use rand::{Rng, SeedableRng};
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use std::time::Duration;

fn sample() -> v1::FrameBatch {
    v1::FrameBatch {
        camera_id: "cam-1".into(),
        batch_id: wire::batch_id("cam-1", 1_767_225_600_000_000, 3),
        sequence: 3,
        frames: (0..4)
            .map(|i| v1::Frame {
                seq: i,
                capture_time_us: 1_767_225_600_000_000 + i as i64 * 200_000,
                width: 64,
                height: 48,
                jpeg: vec![0xFF, 0xD8, i as u8, 0xFF, 0xD9],
                claim_key: String::new(),
                truth: vec![v1::TruthBox {
                    label: "red".into(),
                    bbox: Some(v1::Box {
                        x1: 1.0,
                        y1: 2.0,
                        x2: 3.0,
                        y2: 4.0,
                    }),
                    fully_visible: true,
                }],
            })
            .collect(),
        created_time_us: 1,
        source_type: "synthetic".into(),
        jpeg_quality: 80,
    }
}

/// Ensures a batch survives encode → decode unchanged, with the documented headers.
#[test]
fn round_trip() {
    let b = sample();
    let (bytes, headers) = wire::encode(&b);
    assert_eq!(wire::decode(&bytes, &headers).unwrap(), b);
    let h = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(h("camera-id").as_deref(), Some("cam-1"));
    assert_eq!(h("batch-seq").as_deref(), Some("3"));
    assert_eq!(h("content-type").as_deref(), Some(wire::CONTENT_TYPE_V1));
}

/// Ensures random, truncated and bit-flipped bytes never panic the decoder, and that a wrong
/// content type or an empty batch is an error.
#[test]
fn garbage_never_panics() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let (good, headers) = wire::encode(&sample());
    let mut errors = 0;
    for i in 0..20_000 {
        let bytes: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect(),
            1 => good[..rng.random_range(0..good.len())].to_vec(),
            _ => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                b
            }
        };
        if wire::decode(&bytes, &[]).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > 10_000,
        "most garbage must be rejected, {errors} were"
    );
    let bad_ct = vec![("content-type".to_string(), b"application/json".to_vec())];
    assert!(wire::decode(&good, &bad_ct).is_err());
    assert!(
        wire::decode(&[], &headers).is_err(),
        "an empty batch is invalid"
    );
}

/// Ensures a batch survives encode → decode as seed JSON with everything the prototype's format
/// carries, found by first byte alone (no headers) and by content type.
#[test]
fn seed_json_round_trip() {
    let b = sample();
    let (bytes, headers) = wire::encode_as(&b, WireFormat::SeedJson);
    assert_eq!(bytes[0], b'{');
    let h = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    for (headers, key) in [(&headers[..], None), (&[][..], Some("cam-1"))] {
        let got = wire::decode_keyed(&bytes, headers, key).unwrap();
        assert_eq!(got.camera_id, "cam-1");
        assert_eq!(got.batch_id, b.batch_id, "the deterministic id is rebuilt");
        assert_eq!(got.sequence, b.sequence);
        assert_eq!(got.jpeg_quality, 80);
        assert_eq!(
            got.source_type, "file",
            "synthetic is written as the prototype's \"file\""
        );
        assert_eq!(got.frames.len(), b.frames.len());
        for (g, w) in got.frames.iter().zip(&b.frames) {
            assert_eq!(
                (g.seq, g.capture_time_us, g.width, g.height),
                (w.seq, w.capture_time_us, w.width, w.height)
            );
            assert_eq!(g.jpeg, w.jpeg);
            assert!(
                g.truth.is_empty(),
                "ground truth is not part of the prototype's format"
            );
        }
    }
    // No key and no header: the camera is "seed"; a key wins over the header.
    assert_eq!(wire::decode(&bytes, &[]).unwrap().camera_id, "seed");
    assert_eq!(
        wire::decode_keyed(&bytes, &headers, Some("lobby"))
            .unwrap()
            .camera_id,
        "lobby"
    );
    // A content type with parameters is still JSON; protobuf bytes labelled JSON are an error.
    let ct = vec![(
        "content-type".to_string(),
        b"application/json; charset=utf-8".to_vec(),
    )];
    assert!(wire::decode(&bytes, &ct).is_ok());
    assert!(wire::decode(&wire::encode(&b).0, &ct).is_err());
}

/// Ensures claim-checked frames (claim key, no JPEG) pass validation only when the key points at the
/// batch's own camera's claim objects.
#[test]
fn claim_keys_are_validated() {
    let mut b = sample();
    for f in &mut b.frames {
        f.jpeg.clear();
        f.claim_key = format!(
            "p/claims/camera=cam-1/date=2026-01-01/hour=00/{}/{:06}.jpg",
            b.batch_id, f.seq
        );
    }
    for format in [WireFormat::FramewireV1, WireFormat::SeedJson] {
        let (bytes, headers) = wire::encode_as(&b, format);
        let got = wire::decode(&bytes, &headers).unwrap();
        assert_eq!(got.frames[2].claim_key, b.frames[2].claim_key, "{format:?}");
    }
    for bad in [
        "p/claims/camera=cam-2/x/000001.jpg",
        "p/results/camera=cam-1/x.json",
        "claims/camera=cam-1/../../etc/000001.jpg",
        "p/frames/camera=cam-1/000001.jpg",
    ] {
        let mut c = b.clone();
        c.frames[1].claim_key = bad.into();
        let (bytes, headers) = wire::encode(&c);
        assert!(wire::decode(&bytes, &headers).is_err(), "{bad} accepted");
    }
    let mut both = b.clone();
    both.frames[0].jpeg = vec![1];
    let (bytes, headers) = wire::encode(&both);
    assert!(
        wire::decode(&bytes, &headers).is_err(),
        "a frame with both an image and a claim key"
    );
}

/// Ensures malformed JSON, wrong types, bad base64 and mangled seed messages never panic the decoder.
#[test]
fn json_garbage_never_panics() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (good, _) = wire::encode_as(&sample(), WireFormat::SeedJson);
    let fixed: Vec<Vec<u8>> = [
        "{",
        "{}",
        "{\"batch_id\": \"seven\"}",
        "{\"batch_id\": -1, \"frame_count\": 0, \"frames\": [], \"timestamp\": \"\", \"source_type\": \"rtsp\", \"extractor_info\": {}}",
        "{\"batch_id\": 1, \"frame_count\": 1, \"frames\": [{\"frame_id\": 1, \"data\": \"!!not base64!!\", \"timestamp\": 1.0}], \"timestamp\": \"2026-01-01T00:00:00\", \"source_type\": \"rtsp\", \"extractor_info\": {\"frame_width\": 8, \"frame_height\": 8, \"jpeg_quality\": 80}}",
        "{\"batch_id\": 1, \"frame_count\": 2, \"frames\": [{\"frame_id\": 1, \"data\": \"/9j/\", \"timestamp\": 1.0}], \"timestamp\": \"2026-01-01T00:00:00\", \"source_type\": \"rtsp\", \"extractor_info\": {\"frame_width\": 8, \"frame_height\": 8, \"jpeg_quality\": 80}}",
        "{\"batch_id\": 1, \"frame_count\": 1, \"frames\": [{\"frame_id\": 1, \"data\": \"/9j/\", \"timestamp\": 1e308}], \"timestamp\": \"2026-01-01T00:00:00\", \"source_type\": \"rtsp\", \"extractor_info\": {\"frame_width\": 8, \"frame_height\": 8, \"jpeg_quality\": 80}}",
        "{\"batch_id\": 1, \"frame_count\": 1, \"frames\": [{\"frame_id\": 1, \"data\": \"/9j/\", \"timestamp\": 1.0}], \"timestamp\": \"not a time\", \"source_type\": \"rtsp\", \"extractor_info\": {\"frame_width\": 8, \"frame_height\": 8, \"jpeg_quality\": 80}}",
        "{\"batch_id\": 1, \"frame_count\": 1, \"frames\": [{\"frame_id\": 1, \"data\": \"/9j/\", \"timestamp\": 1.0}], \"timestamp\": \"2026-01-01T00:00:00\", \"source_type\": \"rtsp\", \"extractor_info\": {\"frame_width\": 0, \"frame_height\": 8, \"jpeg_quality\": 80}}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([format!("{}{}", "{\"a\":[".repeat(10_000), "1").into_bytes()])
    .collect();
    for (i, bytes) in fixed.iter().enumerate() {
        assert!(wire::decode(bytes, &[]).is_err(), "fixed case {i} accepted");
    }
    let mut errors = 0;
    for i in 0..20_000 {
        let mut bytes: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..512))
                .map(|_| {
                    *b"{}[]\":,0123456789.eE-+ truefalsnul\\/abc="
                        .get(rng.random_range(0..40))
                        .unwrap()
                })
                .collect(),
            1 => good[..rng.random_range(0..good.len())].to_vec(),
            _ => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(1..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                b
            }
        };
        if let Some(first) = bytes.first_mut() {
            *first = b'{';
        }
        if wire::decode(&bytes, &[]).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > 10_000,
        "most JSON garbage must be rejected, {errors} were"
    );
}

/// Produces `(key, payload, headers)` messages with a plain rdkafka producer, as a foreign client would.
pub fn produce_raw(
    bootstrap: &str,
    topic: &str,
    messages: &[(Option<&str>, Vec<u8>, wire::Headers)],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (key, payload, headers) in messages {
            let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(*k);
            }
            if !headers.is_empty() {
                let mut h = OwnedHeaders::new();
                for (k, v) in headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    });
}

/// A JPEG of a dark frame with a bright square at `x`.
pub fn jpeg_with_square(x: usize) -> Vec<u8> {
    let (w, h) = (160usize, 120usize);
    let mut rgb = vec![20u8; w * h * 3];
    for y in 40..70 {
        for xx in x..x + 30 {
            rgb[(y * w + xx) * 3..(y * w + xx) * 3 + 3].copy_from_slice(&[230, 40, 40]);
        }
    }
    framewire::media::jpeg::encode_rgb(w as u32, h as u32, &rgb, 85).unwrap()
}

/// The message exactly as the prototype's Python builds it: a dict with these keys,
/// `base64.b64encode(jpeg).decode()`, `time.time()` floats, `datetime.now().isoformat()` (naive
/// local time, microseconds), serialised with `json.dumps` (", " and ": " separators).
pub fn prototype_message(batch_id: u64, jpegs: &[Vec<u8>]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let frames: Vec<String> = jpegs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            format!(
                "{{\"frame_id\": {}, \"data\": \"{}\", \"timestamp\": {}}}",
                batch_id * 10 + i as u64,
                base64::engine::general_purpose::STANDARD.encode(j),
                now - 1.0 + i as f64 * 0.2
            )
        })
        .collect();
    format!(
        "{{\"batch_id\": {batch_id}, \"frame_count\": {}, \"frames\": [{}], \"timestamp\": \"{}\", \"source_type\": \"rtsp\", \"extractor_info\": {{\"frame_width\": 160, \"frame_height\": 120, \"jpeg_quality\": 85}}}}",
        jpegs.len(),
        frames.join(", "),
        chrono::Local::now()
            .naive_local()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
    )
}

/// A seed-JSON message built exactly as the prototype builds it is consumed and stored.
#[test]
fn prototype_message_is_consumed_and_stored() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.seed", 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let jpegs: Vec<Vec<u8>> = (0..5).map(|i| jpeg_with_square(10 + i * 20)).collect();
    // The prototype's producer: no headers; once without a key, once keyed by a camera name.
    let messages: Vec<_> = [(3u64, None), (4, Some("lobby cam/1"))]
        .into_iter()
        .map(|(batch_id, key)| {
            (
                key,
                prototype_message(batch_id, &jpegs).into_bytes(),
                vec![],
            )
        })
        .collect();
    produce_raw(&cluster.bootstrap_servers(), "frames.seed", &messages);
    let mut cfg = config(dir.path(), vec![], 5);
    mock_kafka(&mut cfg, &cluster, "frames.seed");
    let mut opts = Options::new(cfg);
    opts.role = Role::Process;
    let d = daemon::start(opts).expect("process daemon starts");
    let m = d.metrics.clone();
    wait_until(
        "both prototype batches stored",
        Duration::from_secs(60),
        || framewire::metrics::total(&m.batches_stored) >= 2,
    );
    assert!(d.shutdown());
    assert_eq!(
        m.messages_rejected
            .with_label_values(&["undecodable"])
            .get(),
        0
    );
    let docs = results(&out);
    let cams: Vec<&str> = docs.iter().map(|r| r.camera.as_str()).collect();
    assert_eq!(
        cams,
        vec!["lobby_cam_1", "seed"],
        "camera from the key (made storage-safe), else \"seed\""
    );
    for doc in &docs {
        assert_eq!(doc.frames.len(), 5);
        assert_eq!(doc.source_type, "rtsp");
        assert_eq!(
            doc.frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
            (0..5).map(|i| doc.sequence * 10 + i).collect::<Vec<_>>()
        );
        assert!(doc.frames.iter().all(|f| (f.width, f.height) == (160, 120)));
    }
    // The stored documents, read raw: every frame has a detections list and an annotated image.
    for path in files(&out.join("results"), "json") {
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for f in v["frames"].as_array().unwrap() {
            assert!(f["detections"].is_array(), "{}: {f}", path.display());
            assert!(out.join(f["annotated_key"].as_str().unwrap()).is_file());
        }
    }
}

/// framewire's seed-JSON output decodes with a plain JSON parser to the prototype's fields.
#[test]
fn seed_json_output_is_the_prototypes() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::message::Headers as _;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.seedout", 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), vec![camera("cam-1", 1, (320, 240), 10.0)], 5);
    mock_kafka(&mut cfg, &cluster, "frames.seedout");
    cfg.kafka.wire_format = WireFormat::SeedJson;
    let mut opts = Options::new(cfg);
    opts.role = Role::Ingest;
    let d = daemon::start(opts).expect("ingest daemon starts");
    let m = d.metrics.clone();
    wait_until("2 batches produced", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_produced) >= 2
    });
    assert!(d.shutdown());

    // A plain consumer, as a Python consumer would read the topic.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let messages: Vec<(Vec<u8>, Option<String>)> = rt.block_on(async {
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "plain-reader")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        consumer.subscribe(&["frames.seedout"]).unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .expect("a message")
                .expect("no error");
            let ct = msg.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "content-type")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            });
            got.push((msg.payload().unwrap().to_vec(), ct));
        }
        got
    });
    for (n, (payload, ct)) in messages.iter().enumerate() {
        assert_eq!(ct.as_deref(), Some("application/json"));
        let v: Value = serde_json::from_slice(payload).expect("plain JSON");
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "batch_id",
                "extractor_info",
                "frame_count",
                "frames",
                "source_type",
                "timestamp"
            ]
        );
        assert_eq!(
            v["batch_id"].as_u64(),
            Some(n as u64),
            "batch_id is the batch's sequence, an int"
        );
        let frames = v["frames"].as_array().unwrap();
        assert_eq!(v["frame_count"].as_u64(), Some(frames.len() as u64));
        assert_eq!(frames.len(), 5);
        for f in frames {
            let mut fk: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
            fk.sort();
            assert_eq!(fk, ["data", "frame_id", "timestamp"]);
            assert!(f["frame_id"].is_u64());
            assert!(
                f["timestamp"].is_f64(),
                "seconds as a float: {}",
                f["timestamp"]
            );
            let ts = f["timestamp"].as_f64().unwrap();
            assert!(ts > 1.7e9 && ts < 4e9, "seconds since the epoch: {ts}");
            let jpeg = base64::engine::general_purpose::STANDARD
                .decode(f["data"].as_str().unwrap())
                .expect("base64");
            assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
        }
        let stamp = v["timestamp"].as_str().expect("ISO 8601 string");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "ISO 8601 with offset: {stamp}"
        );
        assert_eq!(
            v["source_type"], "file",
            "a synthetic camera is a \"file\" source to the prototype"
        );
        let info = &v["extractor_info"];
        assert_eq!(info["frame_width"].as_u64(), Some(320));
        assert_eq!(info["frame_height"].as_u64(), Some(240));
        assert!(info["jpeg_quality"].is_u64());
    }
}
