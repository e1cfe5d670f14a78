//! SIGHUP reloads on the real binary: only what changed restarts; a bad file changes nothing.

use crate::common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cam(id: &str, seed: u32, sample_fps: f64) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nurl = \"synthetic://?size=320x240&fps=25&seed={seed}\"\nsample_fps = {sample_fps}\nwidth = 320\nheight = 240\n"
    )
}

fn write(path: &Path, port: u16, out: &Path, cams: &[String]) {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[batch]\nframes = 5\nmax_wait = \"5s\"\n[storage]\npath = \"{}\"\n[supervisor]\nbackoff_initial = \"100ms\"\n{}",
        out.display(),
        cams.concat()
    );
    std::fs::write(path, text).unwrap();
}

fn status(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/status").1).unwrap()
}

fn restarts(st: &serde_json::Value, actor: &str, camera: &str) -> u64 {
    st["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == actor && a["camera"] == camera)
        .map(|a| a["restarts"].as_u64().unwrap())
        .unwrap_or(99)
}

/// Sequences of one camera's stored batches, in capture order.
fn sequences(out: &Path, camera: &str) -> Vec<u64> {
    results(out)
        .iter()
        .filter(|r| r.camera == camera)
        .map(|r| r.sequence)
        .collect()
}

fn contiguous(seqs: &[u64]) -> bool {
    seqs.iter().enumerate().all(|(i, s)| *s == i as u64)
}

/// Ensures SIGHUP adds a camera without touching the others, restarts only a changed camera, and
/// keeps the running config (counting an error) when the new file is invalid.
#[test]
fn sighup_applies_only_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, out, port) = (
        dir.path().join("framewire.toml"),
        dir.path().join("out"),
        free_port(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    write(
        &cfg,
        port,
        &out,
        &[cam("cam-a", 1, 5.0), cam("cam-b", 2, 5.0)],
    );
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "2 batches from each camera",
        Duration::from_secs(60),
        || sequences(&out, "cam-a").len() >= 2 && sequences(&out, "cam-b").len() >= 2,
    );

    // 1. Add a camera.
    write(
        &cfg,
        port,
        &out,
        &[
            cam("cam-a", 1, 5.0),
            cam("cam-b", 2, 5.0),
            cam("cam-c", 3, 5.0),
        ],
    );
    signal(&child, libc::SIGHUP);
    wait_until("cam-c stores a batch", Duration::from_secs(30), || {
        !sequences(&out, "cam-c").is_empty()
    });
    let st = status(addr);
    assert_eq!(st["config_generation"], 2);
    for c in ["cam-a", "cam-b"] {
        assert_eq!(restarts(&st, "source", c), 0, "{c} untouched");
        assert_eq!(restarts(&st, "batcher", c), 0, "{c} untouched");
    }
    let a_before = sequences(&out, "cam-a").len();

    // 2. Change one camera: only it restarts (its batch sequence starts again at 0).
    write(
        &cfg,
        port,
        &out,
        &[
            cam("cam-a", 1, 5.0),
            cam("cam-b", 2, 2.5),
            cam("cam-c", 3, 5.0),
        ],
    );
    signal(&child, libc::SIGHUP);
    wait_until("generation 3", Duration::from_secs(10), || {
        status(addr)["config_generation"] == 3
    });
    wait_until(
        "cam-b restarted and stored again",
        Duration::from_secs(30),
        || sequences(&out, "cam-b").iter().filter(|s| **s == 0).count() == 2,
    );
    wait_until("cam-a keeps going", Duration::from_secs(30), || {
        sequences(&out, "cam-a").len() > a_before + 1
    });
    assert!(
        contiguous(&sequences(&out, "cam-a")),
        "cam-a never restarted: {:?}",
        sequences(&out, "cam-a")
    );
    assert!(
        contiguous(&sequences(&out, "cam-c")),
        "cam-c never restarted: {:?}",
        sequences(&out, "cam-c")
    );
    let st = status(addr);
    assert_eq!(st["cameras"].as_object().unwrap().len(), 3);

    // 3. An invalid file changes nothing and is counted.
    std::fs::write(&cfg, "[batch]\nframes = \"many\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    wait_until(
        "the invalid reload is counted",
        Duration::from_secs(10),
        || {
            metric(
                &get(addr, "/metrics").1,
                r#"framewire_config_reloads_total{result="invalid"}"#,
            ) == 1.0
        },
    );
    let st = status(addr);
    assert_eq!(st["config_generation"], 3);
    assert_eq!(st["cameras"].as_object().unwrap().len(), 3);
    let a_now = sequences(&out, "cam-a").len();
    wait_until(
        "cam-a still running on the old config",
        Duration::from_secs(20),
        || sequences(&out, "cam-a").len() > a_now,
    );
    let m = get(addr, "/metrics").1;
    assert_eq!(
        metric(&m, r#"framewire_config_reloads_total{result="applied"}"#),
        2.0
    );

    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(40)).success());
}
