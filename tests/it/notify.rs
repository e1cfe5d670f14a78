//! systemd notify protocol, observed on a real Unix datagram socket.

use crate::common::*;
use framewire::config::{CameraConfig, SourceUrl};
use framewire::daemon::{self, Options};
use framewire::media::source::{
    DefaultOpener, EncodedUnit, FrameSource, SourceError, SourceOpener,
};
use framewire::notify::Notifier;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Ensures the binary sends READY=1 once up, WATCHDOG=1 while healthy, RELOADING=1 then READY=1
/// around a SIGHUP reload, and STOPPING=1 on SIGTERM.
#[test]
fn binary_speaks_sd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut child = Command::new(bin())
        .arg("run")
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "900000")
        .env("FRAMEWIRE__HTTP__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&sock, "READY=1", Duration::from_secs(30));
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(3));
    signal(&child, libc::SIGHUP);
    let seen = wait_for(&sock, "READY=1", Duration::from_secs(10));
    let reloading = seen
        .iter()
        .position(|m| m.contains("RELOADING=1"))
        .expect("RELOADING=1 before READY=1");
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:?}");
    signal(&child, libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(wait_exit(&mut child, Duration::from_secs(40)).success());
}

/// A source that hangs (no heartbeat, no error) after 10 frames until released.
struct HangingOpener {
    release: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
}

struct Hanging {
    inner: Box<dyn FrameSource>,
    n: u32,
    release: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
}

impl FrameSource for Hanging {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        self.n += 1;
        if self.n == 10 {
            self.hung.store(true, Ordering::SeqCst);
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.inner.next_unit()
    }
}

impl SourceOpener for HangingOpener {
    fn open(
        &self,
        camera: &CameraConfig,
        url: &SourceUrl,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        let inner = DefaultOpener.open(camera, url)?;
        Ok(Box::new(Hanging {
            inner,
            n: 0,
            release: self.release.clone(),
            hung: self.hung.clone(),
        }))
    }
}

/// Ensures watchdog pings stop while an actor stops heartbeating (a hung capture), and resume
/// when it heartbeats again.
#[test]
fn watchdog_stops_when_an_actor_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cfg = config(dir.path(), vec![camera("cam-h", 1, (320, 240), 5.0)], 5);
    let (release, hung) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut opts = Options::new(cfg);
    opts.opener = Arc::new(HangingOpener {
        release: release.clone(),
        hung: hung.clone(),
    });
    opts.notifier = Notifier::new(Some(sock_path), Some(Duration::from_millis(900)));
    let d = daemon::start(opts).unwrap();
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(10));
    wait_until("the capture hangs", Duration::from_secs(10), || {
        hung.load(Ordering::SeqCst)
    });
    // Heartbeats older than half the interval withhold the ping: give it that long, throw away
    // what was sent before, then listen.
    std::thread::sleep(Duration::from_millis(700));
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let during = collect(&sock, Duration::from_millis(2000));
    assert!(
        !during.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged while hung: {during:?}"
    );
    release.store(true, Ordering::SeqCst);
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(d.shutdown());
}
