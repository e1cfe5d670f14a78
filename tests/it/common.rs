//! Helpers shared by the integration tests: configs, HTTP GET, result files, waiting, metrics text.

use framewire::config::{CameraConfig, Config};
use framewire::storage::results::BatchResults;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn camera(id: &str, seed: u64, size: (u32, u32), sample_fps: f64) -> CameraConfig {
    let mut c = CameraConfig::synthetic(
        id,
        &format!(
            "synthetic://?size={}x{}&fps=25&objects=3&seed={seed}",
            size.0, size.1
        ),
    );
    c.sample_fps = sample_fps;
    c.width = size.0;
    c.height = size.1;
    c
}

/// A config writing into `dir/out`, HTTP on an ephemeral loopback port, fast restarts.
pub fn config(dir: &Path, cameras: Vec<CameraConfig>, batch_frames: usize) -> Config {
    let mut cfg = Config::default();
    cfg.http.listen = "127.0.0.1:0".parse().unwrap();
    cfg.cameras = cameras;
    cfg.batch.frames = batch_frames;
    cfg.batch.max_wait = Duration::from_secs(10);
    cfg.storage.path = dir.join("out").display().to_string();
    cfg.supervisor.backoff_initial = Duration::from_millis(100);
    cfg.supervisor.backoff_max = Duration::from_secs(1);
    cfg.supervisor.shutdown_grace = Duration::from_secs(30);
    cfg
}

/// `GET path` over plain HTTP/1.0; returns (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    walk(dir, ext, &mut v);
    v.sort();
    v
}

/// Why a results document does not match `docs/results.schema.json` (formats such as
/// `date-time` checked too); empty when it does.
pub fn results_schema_errors(doc: &serde_json::Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = SCHEMA.get_or_init(|| {
        let text = include_str!("../../docs/results.schema.json");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::from_str(text).expect("schema is JSON"))
            .expect("schema compiles")
    });
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Checks a results document against the schema (every test that reads results through
/// `results` checks this).
pub fn assert_results_schema(doc: &[u8], name: &str) {
    let doc: serde_json::Value =
        serde_json::from_slice(doc).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
    let errors = results_schema_errors(&doc);
    assert!(
        errors.is_empty(),
        "{name} does not match docs/results.schema.json: {errors:?}"
    );
}

/// Every results document under `out/results`, sorted by camera then sequence.
pub fn results(out: &Path) -> Vec<BatchResults> {
    let mut v: Vec<BatchResults> = files(&out.join("results"), "json")
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            assert_results_schema(&bytes, &p.display().to_string());
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    v.sort_by(|a, b| {
        (
            a.camera.as_str(),
            a.frames.first().map(|f| f.capture_time.clone()),
        )
            .cmp(&(
                b.camera.as_str(),
                b.frames.first().map(|f| f.capture_time.clone()),
            ))
    });
    v
}

/// The value of one sample in Prometheus text (`name{labels}` exactly as exposed), or 0.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.rsplit_once(' ')
                .filter(|(s, _)| *s == series)
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or(0.0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_framewire")
}

pub fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill({}, {sig})", child.id());
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collects sd_notify datagrams for `window`.
pub fn collect(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let end = Instant::now() + window;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some((end - Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// Reads datagrams until one has the line `what`; returns all seen.
pub fn wait_for(sock: &UnixDatagram, what: &str, timeout: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let got = collect(sock, Duration::from_millis(200));
        let hit = got.iter().any(|m| m.lines().any(|l| l == what));
        seen.extend(got);
        if hit {
            return seen;
        }
    }
    panic!("no {what} within {timeout:?}; saw {seen:?}");
}

/// librdkafka settings for a test daemon against the mock cluster.
pub fn mock_kafka(
    cfg: &mut framewire::config::Config,
    cluster: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
) {
    cfg.kafka.brokers = cluster.bootstrap_servers();
    cfg.kafka.topic = topic.into();
    cfg.kafka.group_id = format!("{topic}-group");
    cfg.kafka.create_topic = false;
    for (k, v) in [
        ("fetch.wait.max.ms", "10"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        cfg.kafka.librdkafka.insert(k.into(), v.into());
    }
}
