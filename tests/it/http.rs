//! The operations endpoints: health, readiness with reasons, Prometheus metrics, status; secrets
//! in camera URLs never show.

use crate::common::*;
use framewire::config::{CameraConfig, SourceUrl};
use framewire::daemon::{self, Options};
use framewire::media::source::{DefaultOpener, FrameSource, SourceError, SourceOpener};
use std::sync::Arc;
use std::time::Duration;

/// Opens sources 1.5 s late, so the daemon is observably not ready at first.
struct SlowOpener;

impl SourceOpener for SlowOpener {
    fn open(
        &self,
        camera: &CameraConfig,
        url: &SourceUrl,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        std::thread::sleep(Duration::from_millis(1500));
        DefaultOpener.open(camera, url)
    }
}

/// Ensures /readyz answers 503 with reasons until the first frames, then 200; /healthz is 200;
/// /status has the documented fields; /metrics passes `promtool check metrics`; a password in a
/// camera URL appears nowhere.
#[test]
fn endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut cam = camera("cam-1", 1, (320, 240), 5.0);
    cam.url = "synthetic://operator:hunter2@lab?size=320x240&fps=25&seed=1".into();
    let cfg = config(dir.path(), vec![cam], 5);
    let mut opts = Options::new(cfg);
    opts.opener = Arc::new(SlowOpener);
    let d = daemon::start(opts).unwrap();

    let (code, body) = get(d.http, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("camera cam-1: no frame yet"), "{body}");
    assert_eq!(get(d.http, "/healthz").0, 200);
    wait_until("ready", Duration::from_secs(20), || {
        get(d.http, "/readyz").0 == 200
    });
    wait_until("a stored batch", Duration::from_secs(30), || {
        framewire::metrics::total(&d.metrics.batches_stored) >= 1
    });

    let (code, status) = get(d.http, "/status");
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["config_generation"], 1);
    assert_eq!(
        st["jpeg_codec"],
        framewire::media::jpeg::Codec::default().name(),
        "{status}"
    );
    assert!(st["uptime_seconds"].as_f64().unwrap() > 0.0);
    let fps = st["cameras"]["cam-1"]["fps"].as_f64().unwrap();
    assert!((15.0..35.0).contains(&fps), "decoded fps {fps}");
    assert!(
        st["cameras"]["cam-1"]["last_frame_age_seconds"]
            .as_f64()
            .unwrap()
            < 2.0
    );
    let actors: Vec<_> = st["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["actor"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "source",
        "batcher",
        "producer",
        "consumer",
        "inference",
        "annotator",
        "uploader",
    ] {
        assert!(actors.iter().any(|x| x == a), "{a} missing from {actors:?}");
    }

    let (code, metrics) = get(d.http, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "framewire_frames_captured_total",
        "framewire_frames_decoded_total",
        "framewire_batches_produced_total",
        "framewire_batches_stored_total",
        "framewire_capture_to_stored_seconds_bucket",
        "framewire_stage_duration_seconds_bucket",
        "framewire_build_info",
        "framewire_config_generation",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(&metrics);
    let out = promtool
        .take()
        .expect("promtool runs (Debian package `prometheus`; scripts/test installs it)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every framewire metric the Grafana dashboard and the alert rules query is exposed.
    let root = env!("CARGO_MANIFEST_DIR");
    let mut queried = std::collections::BTreeSet::new();
    for file in [
        "deploy/grafana/framewire.json",
        "deploy/prometheus/rules/framewire.rules.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for (i, _) in text.match_indices("framewire_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.len() > "framewire_".len() {
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let exposed: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &queried {
        assert!(
            exposed.contains(name.as_str()),
            "{name} is queried by the dashboard or an alert but not exposed"
        );
    }

    for text in [&status, &metrics] {
        assert!(!text.contains("hunter2"), "password leaked");
    }
    assert!(status.contains("operator:***@lab"), "{status}");
    assert!(d.shutdown());
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> Option<std::process::Output>;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &str) -> Option<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        child.wait_with_output().ok()
    }
}
