//! Dead letters: a message that can never be processed goes to `{topic}.dlq` (Kafka, here
//! librdkafka's mock cluster) with its origin and the error in headers, is committed past, and
//! the messages after it are processed.

use crate::common::*;
use crate::wire::{jpeg_with_square, produce_raw, prototype_message};
use framewire::config::Role;
use framewire::daemon::{self, Options};
use rand::{Rng, SeedableRng};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;
use std::time::Duration;

/// Ensures a poison message (random bytes) lands in the dead-letter topic with error, stage and
/// original partition/offset in its headers, its offset is committed, and processing continues
/// past it.
#[test]
fn poison_message_goes_to_the_dead_letter_topic() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.poison", 1, 1).expect("topic");
    cluster
        .create_topic("frames.poison.dlq", 1, 1)
        .expect("dlq topic");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut poison = vec![0u8; 4096];
    rng.fill(&mut poison[..]);
    poison[0] = 0xff; // neither `{` (JSON) nor a valid protobuf start
    let jpegs: Vec<Vec<u8>> = (0..5).map(|i| jpeg_with_square(10 + i * 20)).collect();
    let good = prototype_message(3, &jpegs).into_bytes();
    produce_raw(
        &cluster.bootstrap_servers(),
        "frames.poison",
        &[
            (
                Some("cam-9"),
                poison.clone(),
                vec![("x-origin".into(), b"test".to_vec())],
            ),
            (Some("cam-9"), good, vec![]),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(dir.path(), vec![], 5);
    mock_kafka(&mut cfg, &cluster, "frames.poison");
    let mut opts = Options::new(cfg);
    opts.role = Role::Process;
    let d = daemon::start(opts).expect("process daemon starts");
    let m = d.metrics.clone();
    wait_until(
        "the good batch stored and the poison dead-lettered",
        Duration::from_secs(60),
        || {
            framewire::metrics::total(&m.batches_stored) >= 1
                && m.dead_letters.with_label_values(&["undecodable"]).get() == 1
        },
    );
    wait_until("both offsets committed", Duration::from_secs(10), || {
        m.committed_offset.with_label_values(&["0"]).get() == 2
    });
    assert!(d.shutdown());
    assert_eq!(
        results(&out).len(),
        1,
        "the batch after the poison is stored"
    );

    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    c.subscribe(&["frames.poison.dlq"]).unwrap();
    let start = std::time::Instant::now();
    let msg = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no dead letter in frames.poison.dlq"
        );
        if let Some(r) = c.poll(Duration::from_millis(200)) {
            break r.unwrap().detach();
        }
    };
    assert_eq!(
        msg.payload().unwrap(),
        poison.as_slice(),
        "the original bytes"
    );
    assert_eq!(msg.key().unwrap(), b"cam-9");
    let headers = msg.headers().expect("headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("no {name} header"))
    };
    assert_eq!(header("x-origin"), "test", "original headers kept");
    assert_eq!(header("dlq-stage"), "undecodable");
    assert_eq!(header("dlq-topic"), "frames.poison");
    assert_eq!(header("dlq-partition"), "0");
    assert_eq!(header("dlq-offset"), "0");
    assert!(
        header("dlq-error").to_lowercase().contains("protobuf"),
        "{}",
        header("dlq-error")
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&header("dlq-time")).is_ok());
}
