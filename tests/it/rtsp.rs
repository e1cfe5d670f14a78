//! RTSP cameras against a real GStreamer RTSP server (`tests/rtsp_server.py`, Debian's python3-gi):
//! frame rate and sampling, a killed server, a hung server, and credentials kept out of sight.

use crate::common::*;
use framewire::config::CameraConfig;
use framewire::daemon::{self, Options};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rtsp_server.py");

/// A running RTSP test server, killed (and reaped) on drop.
pub(crate) struct Server {
    child: Child,
}

impl Server {
    /// Starts the server on `port` and waits until it prints "listening".
    pub(crate) fn start(port: u16, extra: &[&str]) -> Server {
        let mut child = Command::new("/usr/bin/python3")
            .arg(SCRIPT)
            .args(["--port", &port.to_string(), "--path", "/video"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start /usr/bin/python3 tests/rtsp_server.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let server = Server { child };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "listening" => server,
            other => panic!("RTSP server on port {port} did not start: {other:?}"),
        }
    }

    fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rtsp_camera(id: &str, port: u16) -> CameraConfig {
    let mut c = CameraConfig::synthetic(id, &format!("rtsp://127.0.0.1:{port}/video"));
    c.sample_fps = 5.0;
    c.width = 320;
    c.height = 240;
    c
}

fn metrics(addr: SocketAddr) -> String {
    get(addr, "/metrics").1
}

/// Polls `value` every 50 ms until `ok`, for at most `within`; returns how long it took.
fn within(
    what: &str,
    within: Duration,
    mut value: impl FnMut() -> f64,
    ok: impl Fn(f64) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let v = value();
        if ok(v) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?} (last value {v})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Capture times (µs) of a camera's stored frames, in order.
fn capture_times(out: &std::path::Path, camera: &str) -> Vec<i64> {
    let mut t: Vec<i64> = results(out)
        .iter()
        .filter(|r| r.camera == camera)
        .flat_map(|r| r.frames.iter())
        .map(|f| {
            chrono::DateTime::parse_from_rfc3339(&f.capture_time)
                .unwrap()
                .timestamp_micros()
        })
        .collect();
    t.sort();
    t
}

/// RTSP at 25 fps reaches storage, and sampling to 5 fps gives 5 ± 0.5 fps.
#[test]
fn rtsp_reaches_storage_sampled_to_5_fps() {
    let port = free_port();
    let _server = Server::start(port, &["--fps", "25"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let d = daemon::start(Options::new(config(
        dir.path(),
        vec![rtsp_camera("cam-rtsp", port)],
        10,
    )))
    .expect("daemon starts");
    let decoded = || {
        metric(
            &metrics(d.http),
            r#"framewire_frames_decoded_total{camera="cam-rtsp"}"#,
        )
    };
    within(
        "first decoded frame",
        Duration::from_secs(20),
        decoded,
        |n| n > 0.0,
    );
    let (t0, n0) = (Instant::now(), decoded());
    wait_until("40 stored frames", Duration::from_secs(40), || {
        capture_times(&out, "cam-rtsp").len() >= 40
    });
    let (t1, n1) = (Instant::now(), decoded());
    assert!(d.shutdown());

    let decode_fps = (n1 - n0) / (t1 - t0).as_secs_f64();
    assert!(
        (20.0..=30.0).contains(&decode_fps),
        "decoded {decode_fps:.2} fps (expected about 25)"
    );
    let t = capture_times(&out, "cam-rtsp");
    let span_s = (t[t.len() - 1] - t[0]) as f64 / 1e6;
    // n frames span n − 1 sampling periods.
    let fps = (t.len() - 1) as f64 / span_s;
    assert!(
        (4.5..=5.5).contains(&fps),
        "stored {} frames over {span_s:.2} s = {fps:.2} fps",
        t.len()
    );
    eprintln!(
        "decoded {decode_fps:.2} fps; stored {} frames at {fps:.3} fps",
        t.len()
    );
}

/// A killed server takes the camera down within 2 s; a restarted one brings frames back within 3 s.
#[test]
fn killed_server_is_noticed_and_restart_recovers() {
    let port = free_port();
    let server = Server::start(port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(Options::new(config(
        dir.path(),
        vec![rtsp_camera("cam-kill", port)],
        10,
    )))
    .expect("daemon starts");
    let http = d.http;
    let value = |series: &'static str| move || metric(&metrics(http), series);
    let up = value(r#"framewire_camera_up{camera="cam-kill"}"#);
    let decoded = value(r#"framewire_frames_decoded_total{camera="cam-kill"}"#);
    let disconnects =
        value(r#"framewire_camera_reconnects_total{camera="cam-kill",reason="disconnect"}"#);
    within("camera up", Duration::from_secs(20), up, |v| v == 1.0);

    server.kill();
    let down = within(
        "camera_up 0 after SIGKILL",
        Duration::from_secs(2),
        up,
        |v| v == 0.0,
    );
    within(
        "a disconnect counted",
        Duration::from_millis(500),
        disconnects,
        |v| v >= 1.0,
    );
    let before = decoded();

    let _server = Server::start(port, &[]);
    let back = within(
        "frames after the restart",
        Duration::from_secs(3),
        || {
            if up() == 1.0 { decoded() - before } else { 0.0 }
        },
        |v| v > 0.0,
    );
    assert!(d.shutdown());
    eprintln!("camera down {down:?} after the kill, frames back {back:?} after the restart");
}

/// A hung server (SIGSTOP) is detected as stalled within stall_timeout + 1 s and the camera reconnects after SIGCONT.
#[test]
fn hung_server_is_detected_as_stalled() {
    let port = free_port();
    let server = Server::start(port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cam = rtsp_camera("cam-hang", port);
    cam.stall_timeout = Duration::from_secs(2);
    let d = daemon::start(Options::new(config(dir.path(), vec![cam], 10))).expect("daemon starts");
    let http = d.http;
    let value = |series: &'static str| move || metric(&metrics(http), series);
    let up = value(r#"framewire_camera_up{camera="cam-hang"}"#);
    let decoded = value(r#"framewire_frames_decoded_total{camera="cam-hang"}"#);
    let stalls = value(r#"framewire_camera_reconnects_total{camera="cam-hang",reason="stall"}"#);
    within("camera up", Duration::from_secs(20), up, |v| v == 1.0);
    assert_eq!(stalls(), 0.0);

    server.signal(libc::SIGSTOP);
    let stalled = within(
        "a stall counted after SIGSTOP",
        Duration::from_secs(3),
        stalls,
        |v| v >= 1.0,
    );
    assert_eq!(up(), 0.0, "camera down while stalled");
    let before = decoded();
    server.signal(libc::SIGCONT);
    let back = within(
        "frames after SIGCONT",
        Duration::from_secs(5),
        || {
            if up() == 1.0 { decoded() - before } else { 0.0 }
        },
        |v| v > 0.0,
    );
    assert!(d.shutdown());
    eprintln!("stall counted {stalled:?} after SIGSTOP, frames back {back:?} after SIGCONT");
}

/// Passwords in RTSP URLs never appear in logs, /status, metrics or error text.
#[test]
fn rtsp_passwords_never_leak() {
    let (good_pw, bad_pw) = ("s3cr3t-pw", "wr0ng-pw");
    let port = free_port();
    let _server = Server::start(port, &["--user", "op", "--password", good_pw]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, out, log, hport) = (
        dir.path().join("framewire.toml"),
        dir.path().join("out"),
        dir.path().join("stderr.log"),
        free_port(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{hport}").parse().unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[http]\nlisten = \"127.0.0.1:{hport}\"\n[batch]\nframes = 5\nmax_wait = \"5s\"\n\
             [storage]\npath = \"{}\"\n[supervisor]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n\
             [[cameras]]\nid = \"cam-good\"\nurl = \"rtsp://op:{good_pw}@127.0.0.1:{port}/video\"\nwidth = 320\nheight = 240\n\
             [[cameras]]\nid = \"cam-bad\"\nurl = \"rtsp://127.0.0.1:{port}/video\"\nusername = \"op\"\npassword = \"${{FW_TEST_RTSP_PW}}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("FW_TEST_RTSP_PW", bad_pw)
        .env("RUST_LOG", "debug") // retina's own log lines included
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stored = || results(&out).iter().any(|r| r.camera == "cam-good");
    wait_until("cam-good stores a batch", Duration::from_secs(40), stored);
    let bad_series = r#"framewire_camera_reconnects_total{camera="cam-bad",reason="open"}"#;
    wait_until(
        "cam-bad counts a failed open",
        Duration::from_secs(20),
        || metric(&metrics(addr), bad_series) >= 1.0,
    );
    let status = get(addr, "/status").1;
    let metrics_text = metrics(addr);
    signal(&child, libc::SIGTERM);
    assert!(
        wait_exit(&mut child, Duration::from_secs(40)).success(),
        "clean exit"
    );
    let logs = std::fs::read_to_string(&log).unwrap();

    // The log does show RTSP URLs and retina's own lines (redacted), so a leak would be seen.
    let shown = format!("rtsp://op:***@127.0.0.1:{port}/video");
    assert!(
        logs.contains(&shown) && logs.contains("retina"),
        "the log was captured:\n{logs}"
    );
    for (name, text) in [
        ("stderr", &logs),
        ("/status", &status),
        ("/metrics", &metrics_text),
    ] {
        for pw in [good_pw, bad_pw] {
            assert!(!text.contains(pw), "{pw} leaked into {name}:\n{text}");
        }
    }
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let bad = st["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "source" && a["camera"] == "cam-bad");
    let err = bad
        .and_then(|a| a["last_error"].as_str())
        .unwrap_or_default();
    assert!(
        err.contains("cam-bad") && err.contains("401"),
        "last_error of cam-bad: {st}"
    );
    eprintln!("last_error of cam-bad: {err}");
    assert_eq!(
        st["cameras"]["cam-good"]["url"],
        format!("rtsp://op:***@127.0.0.1:{port}/video"),
        "{st}"
    );
}

/// RTP over UDP (`transport = "udp"`) reaches storage too.
#[test]
fn udp_transport_reaches_storage() {
    let port = free_port();
    let _server = Server::start(port, &["--fps", "25"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cam = rtsp_camera("cam-udp", port);
    cam.transport = framewire::config::Transport::Udp;
    let d = daemon::start(Options::new(config(dir.path(), vec![cam], 5))).expect("daemon starts");
    wait_until("10 stored frames over UDP", Duration::from_secs(40), || {
        capture_times(&out, "cam-udp").len() >= 10
    });
    let m = metrics(d.http);
    assert!(d.shutdown());
    assert_eq!(
        metric(
            &m,
            r#"framewire_camera_reconnects_total{camera="cam-udp",reason="open"}"#
        ),
        0.0,
        "{m}"
    );
}

/// A camera that sends another codec than H.264 gets a clear error naming the camera and the
/// codec, counted as `reason="unsupported"`, and the daemon keeps running.
#[test]
fn non_h264_camera_is_refused_clearly() {
    let port = free_port();
    let _server = Server::start(port, &["--codec", "jpeg", "--size", "320x240"]);
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::start(Options::new(config(
        dir.path(),
        vec![rtsp_camera("cam-mjpeg", port)],
        5,
    )))
    .expect("daemon starts");
    within(
        "an unsupported-codec reconnect",
        Duration::from_secs(20),
        || {
            metric(
                &metrics(d.http),
                r#"framewire_camera_reconnects_total{camera="cam-mjpeg",reason="unsupported"}"#,
            )
        },
        |n| n >= 1.0,
    );
    let st: serde_json::Value = serde_json::from_str(&get(d.http, "/status").1).unwrap();
    let err = st["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "source")
        .unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cam-mjpeg") && err.to_lowercase().contains("jpeg") && err.contains("H.264"),
        "{err}"
    );
    assert_eq!(get(d.http, "/healthz").0, 200);
    assert!(d.shutdown());
}
