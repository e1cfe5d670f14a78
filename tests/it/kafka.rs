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

fn sequences_by_camera(docs: &[framewire::storage::results::BatchResults], cam: &str) -> Vec<u64> {
    let mut s: Vec<u64> = docs
        .iter()
        .filter(|r| r.camera == cam)
        .map(|r| r.sequence)
        .collect();
    s.sort();
    s
}

/// Ensures that with every broker down for 10 s at 2 cameras × 25 fps, the cameras drop (and
/// count) their oldest frames, every batch handed to the producer is stored, and flow resumes.
#[test]
fn broker_outage_drops_frames_not_batches() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("frames.outage", 3, 3).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cams = vec![
        camera("cam-1", 1, (320, 240), 25.0),
        camera("cam-2", 2, (320, 240), 25.0),
    ];
    for c in &mut cams {
        c.queue_frames = 25;
    }
    let mut cfg = config(dir.path(), cams, 25);
    mock_kafka(&mut cfg, &cluster, "frames.outage");
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let m = d.metrics.clone();
    wait_until("batches flowing", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_stored) >= 2
    });
    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    let stored_at_outage = framewire::metrics::total(&m.batches_stored);
    std::thread::sleep(Duration::from_secs(10));
    let dropped = framewire::metrics::total(&m.frames_dropped);
    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    assert!(
        dropped > 100,
        "only {dropped} frames dropped in a 10 s outage at 50 frames/s"
    );
    for cam in ["cam-1", "cam-2"] {
        assert!(
            m.frames_dropped
                .with_label_values(&[cam, "queue_full"])
                .get()
                > 0,
            "{cam} dropped nothing"
        );
    }
    wait_until("flow resumes", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_stored) >= stored_at_outage + 6
    });
    assert!(d.shutdown(), "drains after the outage");

    // The consumer's session expires during the outage; after the rebalance, batches in flight
    // are delivered again (at-least-once) and overwrite the same objects (effectively once).
    let produced = framewire::metrics::total(&m.batches_produced);
    assert!(framewire::metrics::total(&m.batches_stored) >= produced);
    let docs = results(&out);
    assert_eq!(
        docs.len() as u64,
        produced,
        "one results object per produced batch"
    );
    for cam in ["cam-1", "cam-2"] {
        let seqs = sequences_by_camera(&docs, cam);
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{cam}: a batch handed to the producer went missing"
        );
    }
}

/// Ensures `--role ingest` and `--role process` daemons work together through a real broker: the
/// ingest side never stores, the process side never captures, and every batch arrives once.
#[test]
fn split_roles_through_kafka() {
    use framewire::config::Role;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.roles", 2, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut ingest_cfg = config(
        dir.path(),
        vec![
            camera("cam-1", 1, (320, 240), 5.0),
            camera("cam-2", 2, (320, 240), 5.0),
        ],
        5,
    );
    mock_kafka(&mut ingest_cfg, &cluster, "frames.roles");
    let mut process_cfg = config(dir.path(), vec![], 5);
    mock_kafka(&mut process_cfg, &cluster, "frames.roles");
    let mut opts = Options::new(ingest_cfg);
    opts.role = Role::Ingest;
    let ingest = daemon::start(opts).unwrap();
    let mut opts = Options::new(process_cfg);
    opts.role = Role::Process;
    let process = daemon::start(opts).unwrap();
    wait_until(
        "8 batches stored by the process daemon",
        Duration::from_secs(60),
        || framewire::metrics::total(&process.metrics.batches_stored) >= 8,
    );
    let (im, pm) = (ingest.metrics.clone(), process.metrics.clone());
    assert!(ingest.shutdown());
    let produced = framewire::metrics::total(&im.batches_produced);
    wait_until(
        "the process side catches up",
        Duration::from_secs(30),
        || framewire::metrics::total(&pm.batches_stored) >= produced,
    );
    wait_until(
        "the group's lag reported as zero",
        Duration::from_secs(30),
        || {
            let lags: Vec<i64> = (0..2)
                .map(|p| pm.consumer_lag.with_label_values(&[&p.to_string()]).get())
                .collect();
            pm.render().contains("framewire_consumer_lag{") && lags.iter().all(|l| *l == 0)
        },
    );
    assert!(process.shutdown());
    assert_eq!(
        framewire::metrics::total(&im.batches_stored),
        0,
        "ingest never stores"
    );
    assert_eq!(
        framewire::metrics::total(&pm.frames_captured),
        0,
        "process never captures"
    );
    assert_eq!(framewire::metrics::total(&pm.batches_stored), produced);
    let docs = results(&out);
    assert_eq!(docs.len() as u64, produced);
}

/// Ensures `Consumer::committed_past`, which a `role = "all"` daemon's shutdown waits on, and
/// `Consumer::commits_stored`, which the consumer's re-commit check uses, follow the group's
/// commits on the real protocol: false before a commit, true once the commit passes
/// the offset (not at it).
#[test]
fn committed_past_follows_the_group_commit() {
    use framewire::bus::kafka::{KafkaConsumer, KafkaProducer};
    use framewire::bus::{Consumer, OutMessage};
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("frames.cp", 2, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Vec::new(), 25);
    mock_kafka(&mut cfg, &cluster, "frames.cp");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The consumer's stream needs a Tokio runtime to exist in.
    let _rt = rt.enter();
    let producer = KafkaProducer::new(&cfg.kafka).expect("producer");
    let produced: Vec<(i32, i64)> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..8 {
            let key = format!("cam-{i}");
            let msg = OutMessage {
                payload: key.as_bytes().to_vec(),
                key,
                headers: Vec::new(),
            };
            out.push(producer.send(&msg).await.expect("produced"));
        }
        out
    });
    // The highest offset per partition, as `ProducedOffsets` keeps them.
    let highest = framewire::bus::ProducedOffsets::default();
    for (p, o) in &produced {
        highest.record(*p, *o);
    }
    let highest = highest.snapshot();
    assert_eq!(
        highest.len(),
        2,
        "the keys land on both partitions: {produced:?}"
    );
    for (p, o) in &highest {
        let most = produced
            .iter()
            .filter(|(q, _)| q == p)
            .map(|(_, o)| *o)
            .max();
        assert_eq!(Some(*o), most, "partition {p}");
    }
    let consumer = Consumer::Kafka(KafkaConsumer::new(&cfg.kafka).expect("consumer"));
    assert!(
        !consumer
            .committed_past(&highest)
            .expect("asks the coordinator"),
        "nothing is committed yet"
    );
    // Take everything (this joins the group), then commit up to, not past, the last offsets.
    rt.block_on(async {
        for _ in 0..produced.len() {
            tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .expect("delivered in time")
                .expect("delivered");
        }
    });
    // The commits are asynchronous: wait until the coordinator has them, asking with rdkafka's
    // own client in the same group (not the code under test).
    let raw: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", &cfg.kafka.group_id)
        .create()
        .unwrap();
    let wait_committed = |p: i32, next: i64| {
        use rdkafka::consumer::Consumer as _;
        wait_until("commit stored", Duration::from_secs(30), || {
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition("frames.cp", p);
            raw.committed_offsets(tpl, Duration::from_secs(5))
                .ok()
                .and_then(|t| t.find_partition("frames.cp", p).map(|e| e.offset()))
                == Some(rdkafka::Offset::Offset(next))
        })
    };
    for (p, o) in &highest {
        consumer.commit(*p, *o).unwrap();
        wait_committed(*p, *o);
    }
    assert!(
        !consumer.committed_past(&highest).unwrap(),
        "a commit at the last offset leaves that message to be redelivered"
    );
    // The consumer actor's re-commit check asks the same question per commit.
    let (p0, o0) = highest[0];
    assert_eq!(
        consumer
            .commits_stored(&[(p0, o0), (p0, o0 + 1), (p0, o0 - 1)])
            .unwrap(),
        vec![true, false, true]
    );
    let (first, rest) = highest.split_first().unwrap();
    consumer.commit(first.0, first.1 + 1).unwrap();
    wait_committed(first.0, first.1 + 1);
    assert!(consumer.committed_past(&[*first]).unwrap());
    assert!(
        !consumer.committed_past(&highest).unwrap(),
        "one partition committed past is not all"
    );
    for (p, o) in rest {
        consumer.commit(*p, *o + 1).unwrap();
        wait_committed(*p, *o + 1);
    }
    assert!(consumer.committed_past(&highest).unwrap());
    assert!(!consumer.committed_past(&[(first.0, first.1 + 1)]).unwrap());
}
