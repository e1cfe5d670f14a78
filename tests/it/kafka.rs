//! The same pipeline over rdkafka, against librdkafka's mock cluster (the real Kafka protocol,
//! in-process): 3 brokers, a topic of 3 partitions.

use crate::common::*;
use framewire::daemon::{self, Options};
use rdkafka::mocking::MockCluster;
use std::collections::HashSet;
use std::time::Duration;

/// Ensures every batch produced through Kafka is stored exactly once, by key, and the shutdown
/// drains what was produced.
#[test]
fn mock_cluster_every_batch_stored_once() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("frames.it", 3, 3).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(
        dir.path(),
        vec![
            camera("cam-1", 1, (320, 240), 5.0),
            camera("cam-2", 2, (320, 240), 5.0),
            camera("cam-3", 3, (320, 240), 5.0),
        ],
        5,
    );
    cfg.kafka.brokers = cluster.bootstrap_servers();
    cfg.kafka.topic = "frames.it".into();
    cfg.kafka.group_id = "it-group".into();
    for (k, v) in [
        ("fetch.wait.max.ms", "10"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        cfg.kafka.librdkafka.insert(k.into(), v.into());
    }
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let metrics = d.metrics.clone();
    wait_until("12 batches stored", Duration::from_secs(90), || {
        framewire::metrics::total(&metrics.batches_stored) >= 12
    });
    let (_, body) = get(d.http, "/metrics");
    assert!(d.shutdown(), "shutdown drains");

    let produced = framewire::metrics::total(&metrics.batches_produced);
    let stored = framewire::metrics::total(&metrics.batches_stored);
    let docs = results(&out);
    let ids: HashSet<_> = docs.iter().map(|r| r.batch_id.clone()).collect();
    assert_eq!(stored, produced, "stored {stored} of {produced} produced");
    assert_eq!(
        docs.len() as u64,
        produced,
        "one results object per produced batch"
    );
    assert_eq!(ids.len(), docs.len(), "batch ids are unique");
    for cam in ["cam-1", "cam-2", "cam-3"] {
        let mut seqs: Vec<u64> = docs
            .iter()
            .filter(|r| r.camera == cam)
            .map(|r| r.sequence)
            .collect();
        seqs.sort();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{cam}: every sequence stored once"
        );
    }
    // Offsets were committed on every partition that carried batches.
    let committed: f64 = (0..3)
        .map(|p| {
            metric(
                &body,
                &format!("framewire_committed_offset{{partition=\"{p}\"}}"),
            )
        })
        .sum();
    assert!(committed > 0.0, "no offsets committed:\n{body}");
}
