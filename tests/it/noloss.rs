//! The delivery promise end to end, with every peer outside the daemon: librdkafka's mock cluster
//! hosted by this test process, s3s-fs, `framewire serve-inference` behind a fault-injecting HTTP
//! proxy, and process-role daemons run as the real binary (so they can be SIGKILLed). Every batch
//! that reached Kafka must end up in S3 exactly once under its deterministic key, with all its
//! frames; committed offsets must reach the log end; the dead-letter topic must stay empty.

use crate::common::*;
use crate::inference::Served;
use crate::s3::S3Server;
use crate::wire::{jpeg_with_square, prototype_message};
use framewire::config::InferenceProtocol;
use framewire::storage::ObjectStore;
use framewire::storage::results::BatchResults;
use framewire::storage::s3::S3Storage;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;
const FRAMES: usize = 5;
const BUCKET: &str = "noloss";
const PREFIX: &str = "site";

/// What the proxy does with each request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Fault {
    Pass = 0,
    Unavailable = 1,
    Hang = 2,
}

/// An HTTP/1.1 proxy in front of the inference service that forwards, answers 503, or holds the
/// request without answering until its mode changes.
struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Fault::Pass as u8));
        let m = mode.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || serve(conn, upstream, &m));
            }
        });
        Self { addr, mode }
    }
    fn set(&self, f: Fault) {
        self.mode.store(f as u8, Ordering::SeqCst);
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(conn: TcpStream, upstream: SocketAddr, mode: &AtomicU8) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("content-type")
                    || k.eq_ignore_ascii_case("inference-header-content-length")
                {
                    headers.push((k.to_string(), v.trim().to_string()));
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, ctype, answer) = match mode.load(Ordering::SeqCst) {
            1 => (
                503,
                "application/json".to_string(),
                br#"{"error": "overloaded"}"#.to_vec(),
            ),
            2 => {
                while mode.load(Ordering::SeqCst) == Fault::Hang as u8 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return; // drop the connection unanswered
            }
            _ => {
                let url = format!("http://{upstream}{path}");
                let mut req = ureq::request(&method, &url);
                for (k, v) in &headers {
                    req = req.set(k, v);
                }
                let r = if method == "GET" {
                    req.call()
                } else {
                    req.send_bytes(&body)
                };
                let r = match r {
                    Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                    Err(_) => return,
                };
                let (status, ctype) = (r.status(), r.content_type().to_string());
                let mut answer = Vec::new();
                let _ = r.into_reader().read_to_end(&mut answer);
                (status, ctype, answer)
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The peers of one test: mock cluster, S3, inference behind the proxy.
struct Rig {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: String,
    s3: S3Server,
    _inference: Served,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start(topic: &str) -> Self {
        let cluster = MockCluster::new(3).expect("mock cluster");
        cluster.create_topic(topic, PARTITIONS, 3).expect("topic");
        cluster
            .create_topic(&format!("{topic}.dlq"), 1, 3)
            .expect("dlq topic");
        let inference = Served::start();
        let proxy = FaultProxy::start(inference.addr);
        Self {
            cluster,
            topic: topic.into(),
            s3: S3Server::start(BUCKET),
            _inference: inference,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn storage(&self) -> framewire::config::StorageConfig {
        let mut s = framewire::config::StorageConfig::default();
        self.s3.storage(&mut s, BUCKET);
        s.prefix = PREFIX.into();
        s
    }

    /// Starts a process-role daemon (the real binary) as member `name` of the group.
    fn daemon(&self, name: &str) -> Daemon {
        let port = free_port();
        let mut cfg = config(self.dir.path(), vec![], FRAMES);
        mock_kafka(&mut cfg, &self.cluster, &self.topic);
        cfg.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
        cfg.storage = self.storage();
        cfg.inference.protocol = InferenceProtocol::Optifye;
        cfg.inference.url = self.proxy.url();
        cfg.inference.timeout = Duration::from_secs(1);
        cfg.inference.breaker_failures = 3;
        cfg.inference.breaker_open = Duration::from_secs(1);
        let path = self.dir.path().join(format!("{name}-{port}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let log = self.dir.path().join(format!("{name}-{port}.log"));
        let child = Command::new(bin())
            .args(["run", "--role", "process", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("framewire run");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until(
            &format!("{name} serving /metrics"),
            Duration::from_secs(30),
            || TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok(),
        );
        Daemon {
            child: Some(child),
            addr,
            log,
        }
    }

    /// Produces `n` prototype-format batches of `FRAMES` frames over eight cameras, one every
    /// `every`, from a thread; joins to the number produced.
    fn produce(&self, n: u64, every: Duration) -> std::thread::JoinHandle<u64> {
        let (bootstrap, topic) = (self.cluster.bootstrap_servers(), self.topic.clone());
        std::thread::spawn(move || {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .create()
                .unwrap();
            let jpegs: Vec<Vec<u8>> = (0..FRAMES).map(|i| jpeg_with_square(10 + i * 20)).collect();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for id in 0..n {
                    let key = format!("cam-{}", id % 8);
                    let payload = prototype_message(id, &jpegs);
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                        .expect("produced");
                    tokio::time::sleep(every).await;
                }
            });
            n
        })
    }

    /// Waits until the group has committed every partition to its log end, `n` messages in all.
    fn wait_committed(&self, n: u64) {
        let group = format!("{}-group", self.topic);
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let (c, e) = committed_and_end(&self.cluster.bootstrap_servers(), &group, &self.topic);
            if e.iter().sum::<i64>() == n as i64 && at_end(&c, &e) {
                return;
            }
            assert!(
                Instant::now() < end,
                "not all committed within 120 s: committed {c:?}, log end {e:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The no-loss check: one results object per batch under its key, all frames present, no
    /// other objects; committed offsets at the log end; the dead-letter topic empty.
    fn check(&self, n: u64) {
        let store = S3Storage::new(&self.storage());
        let all: BTreeSet<String> = store
            .list(&format!("{PREFIX}/"))
            .unwrap()
            .into_iter()
            .collect();
        let results: Vec<&String> = all.iter().filter(|k| k.contains("/results/")).collect();
        let mut batches = BTreeMap::new();
        let mut frames = BTreeSet::new();
        for key in &results {
            let bytes = store.get(key).unwrap();
            assert_results_schema(&bytes, key);
            let doc: BatchResults = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(doc.frames.len(), FRAMES, "{key}: all frames");
            for f in &doc.frames {
                assert!(
                    all.contains(&f.annotated_key),
                    "{key}: {} stored",
                    f.annotated_key
                );
                frames.insert(f.annotated_key.clone());
            }
            assert!(
                batches.insert(doc.sequence, key.to_string()).is_none(),
                "batch {} stored under two names",
                doc.sequence
            );
        }
        let want: BTreeSet<u64> = (0..n).collect();
        let got: BTreeSet<u64> = batches.keys().copied().collect();
        assert_eq!(
            got.symmetric_difference(&want).collect::<Vec<_>>(),
            Vec::<&u64>::new(),
            "every batch stored exactly once"
        );
        assert_eq!(
            all.len(),
            results.len() + frames.len(),
            "no stray objects: {:?}",
            all.iter()
                .filter(|k| !k.contains("/results/") && !frames.contains(*k))
                .take(5)
                .collect::<Vec<_>>()
        );
        let (committed, end) = committed_and_end(
            &self.cluster.bootstrap_servers(),
            &format!("{}-group", self.topic),
            &self.topic,
        );
        assert!(
            at_end(&committed, &end),
            "committed offsets {committed:?} at the log end {end:?}"
        );
        assert_eq!(end.iter().sum::<i64>(), n as i64);
        let (_, dlq) = committed_and_end(
            &self.cluster.bootstrap_servers(),
            "dlq-check",
            &format!("{}.dlq", self.topic),
        );
        assert_eq!(dlq, vec![0], "dead-letter topic empty");
    }
}

/// Whether every partition's committed offset is its log end (an empty partition has none).
fn at_end(committed: &[i64], end: &[i64]) -> bool {
    committed.len() == end.len()
        && committed
            .iter()
            .zip(end)
            .all(|(c, e)| c == e || (*e == 0 && *c < 0))
}

/// Per partition of `topic`: the group's committed offset (-1 if none) and the log end.
fn committed_and_end(bootstrap: &str, group: &str, topic: &str) -> (Vec<i64>, Vec<i64>) {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let t = Duration::from_secs(10);
    let md = c.fetch_metadata(Some(topic), t).unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, t).unwrap();
    (0..parts)
        .map(|p| {
            let o = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            (o, c.fetch_watermarks(topic, p, t).unwrap().1)
        })
        .unzip()
}

/// A process-role daemon run as the real binary; killed on drop. Its log is printed when a wait
/// on it fails.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw
    }
    fn value(&self, series: &str) -> f64 {
        metric(&self.metrics(), series)
    }
    fn kill(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            signal(&c, sig);
            wait_exit(&mut c, Duration::from_secs(60));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), tail(&self.log));
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Samples `series` of `d` every 200 ms for `span`; returns the largest value seen of each.
fn during(d: &Daemon, span: Duration, series: &[&str]) -> Vec<f64> {
    let end = Instant::now() + span;
    let mut most = vec![0f64; series.len()];
    while Instant::now() < end {
        let text = d.metrics();
        for (m, s) in most.iter_mut().zip(series) {
            *m = m.max(metric(&text, s));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    most
}

/// Ensures no batch is lost or stored twice under different names while, in turn, inference
/// answers 503 for 10 s (the breaker opens and consumption pauses), inference hangs past the
/// timeout, S3 is down for 10 s, and the process daemon is SIGKILLed and restarted; committed
/// offsets end at the log end and nothing is dead-lettered.
#[test]
fn no_loss_through_outages_and_a_crash() {
    let mut rig = Rig::start("frames.noloss");
    let mut d = rig.daemon("process");
    let producing = rig.produce(200, Duration::from_millis(150));
    std::thread::sleep(Duration::from_secs(2));

    rig.proxy.set(Fault::Unavailable);
    let seen = during(
        &d,
        Duration::from_secs(10),
        &[
            "framewire_inference_breaker_transitions_total{protocol=\"optifye\",to=\"open\"}",
            "framewire_consumer_paused",
        ],
    );
    rig.proxy.set(Fault::Pass);
    assert!(seen[0] >= 1.0, "the breaker opened during the 503s");
    assert_eq!(seen[1], 1.0, "consumption paused while it was open");
    // The breaker's open period has doubled with each failed probe (1, 2, 4, 8 s …).
    wait_until("consumption resumed", Duration::from_secs(40), || {
        d.value("framewire_consumer_paused") == 0.0
            && d.value("framewire_inference_breaker_state{protocol=\"optifye\"}") == 0.0
    });

    let before =
        d.value("framewire_inference_requests_total{outcome=\"transient\",protocol=\"optifye\"}");
    rig.proxy.set(Fault::Hang);
    std::thread::sleep(Duration::from_secs(4));
    rig.proxy.set(Fault::Pass);
    let after =
        d.value("framewire_inference_requests_total{outcome=\"transient\",protocol=\"optifye\"}");
    assert!(
        after > before,
        "hung requests timed out ({before} → {after})"
    );

    std::thread::sleep(Duration::from_secs(2));
    let errors = d.value("framewire_stage_errors_total{stage=\"store\"}");
    rig.s3.stop();
    std::thread::sleep(Duration::from_secs(10));
    rig.s3.start_again();
    assert!(
        d.value("framewire_stage_errors_total{stage=\"store\"}") > errors,
        "store failures retried"
    );

    std::thread::sleep(Duration::from_secs(2));
    d.kill(libc::SIGKILL);
    let d = rig.daemon("process-restarted");
    let n = producing.join().unwrap();
    rig.wait_committed(n);
    drop(d);
    rig.check(n);
}

/// Ensures two process daemons in one consumer group split the partitions, and stopping one
/// hands its partitions to the other; no batch lost or stored twice under different names.
#[test]
fn two_daemons_split_the_partitions_and_hand_over() {
    let rig = Rig::start("frames.handover");
    let a = rig.daemon("a");
    let producing = rig.produce(200, Duration::from_millis(60));
    std::thread::sleep(Duration::from_secs(2));
    let b = rig.daemon("b");
    let assigned = "framewire_consumer_assigned_partitions";
    wait_until(
        "both members hold partitions",
        Duration::from_secs(60),
        || {
            let (x, y) = (a.value(assigned), b.value(assigned));
            x > 0.0 && y > 0.0 && x + y == PARTITIONS as f64
        },
    );
    assert!(b.value("framewire_consumer_rebalances_total{kind=\"assigned\"}") >= 1.0);
    let mut a = a;
    a.kill(libc::SIGTERM);
    wait_until(
        "the other member took every partition",
        Duration::from_secs(60),
        || b.value(assigned) == PARTITIONS as f64,
    );
    let n = producing.join().unwrap();
    rig.wait_committed(n);
    assert!(b.value("framewire_batches_consumed_total") > 0.0);
    drop(b);
    rig.check(n);
}
