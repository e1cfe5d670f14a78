//! The oversize guard: a batch over `kafka.max_message_bytes` is never sent and never silently lost;
//! with claim-check its frames go to storage and the consumer puts the batch back together.

use crate::common::*;
use crate::wire::produce_raw;
use framewire::config::{Role, WireFormat};
use framewire::daemon::{self, Options};
use framewire::wire::{self as fw, v1};
use rdkafka::mocking::MockCluster;
use std::time::Duration;

/// A batch over the message limit is refused with a clear error and a metric, and the daemon keeps running.
#[test]
fn oversize_batch_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(
        dir.path(),
        vec![
            camera("big", 1, (640, 480), 10.0),
            camera("small", 2, (96, 64), 10.0),
        ],
        5,
    );
    cfg.kafka.max_message_bytes = 20_000;
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let m = d.metrics.clone();
    wait_until(
        "2 oversize batches refused and 3 small ones stored",
        Duration::from_secs(60),
        || {
            m.messages_rejected.with_label_values(&["oversize"]).get() >= 2
                && m.batches_stored.with_label_values(&["small"]).get() >= 3
        },
    );
    let (status, _) = get(d.http, "/healthz");
    assert_eq!(status, 200, "the daemon keeps running");
    let (status, body) = get(d.http, "/readyz");
    assert_eq!(status, 200, "still ready: {body}");
    let (_, st) = get(d.http, "/status");
    assert!(
        st.contains("over kafka.max_message_bytes = 20000") && st.contains("batch big-"),
        "the error names the limit and the batch: {st}"
    );
    let (_, text) = get(d.http, "/metrics");
    assert!(
        metric(
            &text,
            "framewire_messages_rejected_total{reason=\"oversize\"}"
        ) >= 2.0,
        "{text}"
    );
    // The small camera keeps flowing after the refusals.
    let stored = m.batches_stored.with_label_values(&["small"]).get();
    wait_until("more small batches", Duration::from_secs(30), || {
        m.batches_stored.with_label_values(&["small"]).get() > stored
    });
    // Checked before shutdown: its flush may send a partial batch small enough to fit.
    assert_eq!(
        m.batches_produced.with_label_values(&["big"]).get(),
        0,
        "nothing of the big camera sent"
    );
    let docs = results(&out);
    assert!(
        docs.iter().all(|r| r.camera == "small"),
        "nothing of the big camera stored"
    );
    assert!(d.shutdown());
    assert!(
        !out.join("claims").exists(),
        "no claim-check without kafka.claim_check"
    );
}

/// With claim-check, an oversize batch arrives whole.
#[test]
fn claim_check_delivers_oversize_batches_whole() {
    for format in [WireFormat::FramewireV1, WireFormat::SeedJson] {
        claim_check_round_trip(format);
    }
}

fn claim_check_round_trip(format: WireFormat) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(dir.path(), vec![camera("big", 1, (640, 480), 10.0)], 5);
    cfg.kafka.wire_format = format;
    cfg.kafka.max_message_bytes = 20_000;
    cfg.kafka.claim_check = true;
    cfg.storage.prefix = "site-a".into();
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let m = d.metrics.clone();
    wait_until("3 batches stored", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_stored) >= 3
    });
    assert!(d.shutdown(), "shutdown drains");

    assert_eq!(
        m.messages_rejected.with_label_values(&["oversize"]).get(),
        0
    );
    assert_eq!(
        m.messages_rejected
            .with_label_values(&["claim_missing"])
            .get(),
        0
    );
    let produced = framewire::metrics::total(&m.batches_produced);
    let docs = results(&out.join("site-a"));
    assert_eq!(
        docs.len() as u64,
        produced,
        "every produced batch is stored"
    );
    let claims = files(&out.join("site-a/claims/camera=big"), "jpg");
    assert!(docs.len() >= 3);
    for (n, doc) in docs.iter().enumerate() {
        // Every full batch (5 frames of 640x480, ~100 kB) is over the limit; the partial batch the
        // shutdown flushes may be small enough to travel inline.
        let claimed: Vec<_> = claims
            .iter()
            .filter(|p| p.parent().unwrap().ends_with(&doc.batch_id))
            .collect();
        if n + 1 < docs.len() {
            assert_eq!(
                doc.frames.len(),
                5,
                "{format:?}: batch {} arrived whole",
                doc.batch_id
            );
        }
        if n + 1 < docs.len() || !claimed.is_empty() {
            assert_eq!(
                claimed.len(),
                doc.frames.len(),
                "{format:?}: batch {}: every frame claim-checked",
                doc.batch_id
            );
        }
        for f in &doc.frames {
            assert_eq!((f.width, f.height), (640, 480));
            assert!(
                out.join(&f.annotated_key).is_file(),
                "{} annotated",
                f.annotated_key
            );
        }
        for c in &claimed {
            assert_eq!(&std::fs::read(c).unwrap()[..2], &[0xFF, 0xD8]);
        }
        if format == WireFormat::FramewireV1 {
            assert!(
                doc.frames.iter().any(|f| !f.truth.is_empty()),
                "ground truth survives the claim-check"
            );
        }
    }
}

/// A claim-checked batch whose claim objects are missing is skipped, counted as
/// `reason="claim_missing"` and committed past; the next batch is stored.
#[test]
fn missing_claim_is_counted_and_skipped() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.claims", 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let t0 = 1_767_225_600_000_000;
    let jpeg = framewire::media::jpeg::encode_rgb(64, 64, &[90u8; 64 * 64 * 3], 80).unwrap();
    let batch = |seq: u64, claimed: bool| {
        let id = fw::batch_id("cam-c", t0 + seq as i64 * 1_000_000, seq);
        v1::FrameBatch {
            camera_id: "cam-c".into(),
            batch_id: id.clone(),
            sequence: seq,
            frames: (0..3)
                .map(|i| v1::Frame {
                    seq: seq * 3 + i,
                    capture_time_us: t0 + seq as i64 * 1_000_000 + i as i64 * 100_000,
                    width: 64,
                    height: 64,
                    jpeg: if claimed { Vec::new() } else { jpeg.clone() },
                    truth: vec![],
                    claim_key: if claimed {
                        framewire::storage::keys::claim_key("", "cam-c", t0, &id, seq * 3 + i)
                    } else {
                        String::new()
                    },
                })
                .collect(),
            created_time_us: t0,
            source_type: "rtsp".into(),
            jpeg_quality: 80,
        }
    };
    let messages: Vec<_> = [batch(0, true), batch(1, false)]
        .iter()
        .map(|b| {
            let (payload, headers) = fw::encode(b);
            (Some("cam-c"), payload, headers)
        })
        .collect();
    produce_raw(&cluster.bootstrap_servers(), "frames.claims", &messages);
    let mut cfg = config(dir.path(), vec![], 5);
    mock_kafka(&mut cfg, &cluster, "frames.claims");
    let mut opts = Options::new(cfg);
    opts.role = Role::Process;
    let d = daemon::start(opts).expect("process daemon starts");
    let m = d.metrics.clone();
    wait_until("the good batch stored", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_stored) >= 1
    });
    wait_until(
        "offsets committed past both",
        Duration::from_secs(30),
        || m.committed_offset.with_label_values(&["0"]).get() == 2,
    );
    assert!(d.shutdown());
    assert_eq!(
        m.messages_rejected
            .with_label_values(&["claim_missing"])
            .get(),
        1
    );
    let docs = results(&out);
    assert_eq!(docs.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![1]);
}
