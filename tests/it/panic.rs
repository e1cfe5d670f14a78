//! Panic isolation: a panic in one camera's capture stops neither the other camera nor the rest.

use crate::common::*;
use framewire::config::{CameraConfig, SourceUrl};
use framewire::daemon::{self, Options};
use framewire::media::source::{
    DefaultOpener, EncodedUnit, FrameSource, SourceError, SourceOpener,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Opens sources normally, but camera `victim`'s source panics once, at its 40th frame.
struct PanickyOpener {
    victim: String,
    fired: Arc<AtomicBool>,
    panicked_at_us: Arc<AtomicI64>,
}

struct Panicky {
    inner: Box<dyn FrameSource>,
    frames: u32,
    fired: Arc<AtomicBool>,
    panicked_at_us: Arc<AtomicI64>,
}

impl FrameSource for Panicky {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        self.frames += 1;
        if self.frames == 40 && !self.fired.swap(true, Ordering::SeqCst) {
            self.panicked_at_us
                .store(framewire::media::source::now_us(), Ordering::SeqCst);
            panic!("injected panic in the capture of the victim camera");
        }
        self.inner.next_unit()
    }
}

impl SourceOpener for PanickyOpener {
    fn open(
        &self,
        camera: &CameraConfig,
        url: &SourceUrl,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        let inner = DefaultOpener.open(camera, url)?;
        if camera.id != self.victim {
            return Ok(inner);
        }
        Ok(Box::new(Panicky {
            inner,
            frames: 0,
            fired: self.fired.clone(),
            panicked_at_us: self.panicked_at_us.clone(),
        }))
    }
}

/// Ensures an injected panic in one camera's source is isolated: the other camera keeps producing
/// without a gap, the panicked camera comes back, and the restart is counted.
#[test]
fn panic_in_one_camera_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = config(
        dir.path(),
        vec![
            camera("cam-ok", 1, (320, 240), 5.0),
            camera("cam-victim", 2, (320, 240), 5.0),
        ],
        5,
    );
    let fired = Arc::new(AtomicBool::new(false));
    let at = Arc::new(AtomicI64::new(0));
    let mut opts = Options::new(cfg);
    opts.opener = Arc::new(PanickyOpener {
        victim: "cam-victim".into(),
        fired: fired.clone(),
        panicked_at_us: at.clone(),
    });
    let d = daemon::start(opts).expect("daemon starts");
    wait_until("the panic", Duration::from_secs(30), || {
        fired.load(Ordering::SeqCst)
    });
    let panic_us = at.load(Ordering::SeqCst);
    let after = |cam: &str| {
        results(&out)
            .iter()
            .filter(|r| r.camera == cam)
            .flat_map(|r| r.frames.iter().map(|f| f.capture_time.clone()))
            .filter(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .timestamp_micros()
                    > panic_us + 2_000_000
            })
            .count()
    };
    wait_until(
        "both cameras stored frames from 2 s after the panic",
        Duration::from_secs(60),
        || after("cam-ok") >= 5 && after("cam-victim") >= 5,
    );
    let (_, metrics) = get(d.http, "/metrics");
    let (_, status) = get(d.http, "/status");
    assert!(d.shutdown());

    assert_eq!(
        metric(
            &metrics,
            r#"framewire_actor_restarts_total{actor="source",camera="cam-victim"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"framewire_actor_restarts_total{actor="source",camera="cam-ok"}"#
        ),
        0.0
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let victim = status["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "source" && a["camera"] == "cam-victim")
        .unwrap();
    assert!(
        victim["last_error"]
            .as_str()
            .unwrap()
            .contains("injected panic"),
        "{victim}"
    );

    // The healthy camera's sampled frames are evenly spaced (200 ms) across the panic: no gap.
    let docs = results(&out);
    let mut times: Vec<i64> = docs
        .iter()
        .filter(|r| r.camera == "cam-ok")
        .flat_map(|r| {
            r.frames.iter().map(|f| {
                chrono::DateTime::parse_from_rfc3339(&f.capture_time)
                    .unwrap()
                    .timestamp_micros()
            })
        })
        .collect();
    times.sort();
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(times.first().unwrap() < &panic_us && times.last().unwrap() > &panic_us);
    assert!(
        worst < 450_000,
        "largest gap between cam-ok frames: {worst} µs"
    );
    let mut seqs: Vec<u64> = docs
        .iter()
        .filter(|r| r.camera == "cam-ok")
        .map(|r| r.sequence)
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "cam-ok's batches are contiguous"
    );
}
