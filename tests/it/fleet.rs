//! Many cameras of every kind in one daemon, reloaded live.

use crate::common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn camera_toml(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\nsample_fps = 2.0\nwidth = 320\nheight = 240\n{extra}"
    )
}

fn write(path: &Path, port: u16, out: &Path, cams: &[String]) {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[batch]\nframes = 5\nmax_wait = \"5s\"\n[storage]\npath = \"{}\"\n\
         [supervisor]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\n[annotator]\nworkers = 1\n{}",
        out.display(),
        cams.concat()
    );
    std::fs::write(path, text).unwrap();
}

/// Stored batch sequences per camera.
fn sequences(out: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in results(out) {
        m.entry(r.camera.clone()).or_default().push(r.sequence);
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn source_restarts(addr: SocketAddr, camera: &str) -> Option<u64> {
    let st: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).ok()?;
    st["actors"]
        .as_array()?
        .iter()
        .find(|a| a["actor"] == "source" && a["camera"] == camera)?["restarts"]
        .as_u64()
}

/// Ensures ten cameras (8 synthetic, 1 RTSP, 1 file) run in one daemon, and a SIGHUP that removes
/// the RTSP camera and adds another file camera touches none of the others.
#[test]
fn ten_cameras_reload_without_touching_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let clip = crate::file::clip(dir.path(), "clip.mp4");
    let rtsp_port = free_port();
    let _server = crate::rtsp::Server::start(rtsp_port, &["--size", "320x240"]);
    let (cfg, out, port) = (
        dir.path().join("framewire.toml"),
        dir.path().join("out"),
        free_port(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let file_url = format!("file://{}", clip.display());
    let mut cams: Vec<String> = (1..=8)
        .map(|i| {
            camera_toml(
                &format!("syn-{i}"),
                &format!("synthetic://?size=320x240&fps=10&seed={i}"),
                "",
            )
        })
        .collect();
    cams.push(camera_toml(
        "rtsp-1",
        &format!("rtsp://127.0.0.1:{rtsp_port}/video"),
        "",
    ));
    cams.push(camera_toml("file-1", &file_url, "loop = true\n"));
    write(&cfg, port, &out, &cams);
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let all: Vec<String> = (1..=8)
        .map(|i| format!("syn-{i}"))
        .chain(["rtsp-1".into(), "file-1".into()])
        .collect();
    wait_until(
        "every camera stores a batch",
        Duration::from_secs(90),
        || {
            let s = sequences(&out);
            all.iter().all(|c| s.get(c).is_some_and(|v| !v.is_empty()))
        },
    );

    // Remove the RTSP camera, add a second file camera.
    cams.retain(|c| !c.contains("rtsp-1"));
    cams.push(camera_toml("file-2", &file_url, "loop = true\n"));
    write(&cfg, port, &out, &cams);
    signal(&child, libc::SIGHUP);
    wait_until("file-2 stores a batch", Duration::from_secs(60), || {
        sequences(&out).get("file-2").is_some_and(|v| !v.is_empty())
    });
    let st: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).unwrap();
    assert_eq!(st["config_generation"], 2);
    let cameras = st["cameras"].as_object().unwrap();
    assert!(
        !cameras.contains_key("rtsp-1"),
        "removed camera still listed"
    );
    assert_eq!(cameras.len(), 10);
    let rtsp_after = sequences(&out).get("rtsp-1").map(Vec::len).unwrap_or(0);

    // The others were never restarted: no restarts counted and their sequences never reset.
    let before = sequences(&out);
    wait_until(
        "the untouched cameras keep storing",
        Duration::from_secs(60),
        || {
            let now = sequences(&out);
            all.iter()
                .filter(|c| *c != "rtsp-1")
                .all(|c| now[c].len() > before[c].len())
        },
    );
    for c in all.iter().filter(|c| *c != "rtsp-1") {
        assert_eq!(source_restarts(addr, c), Some(0), "{c} restarted");
        let seqs = &sequences(&out)[c];
        assert_eq!(
            *seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{c}'s batch sequence was reset"
        );
    }
    // The removed camera's partial batch may be flushed on removal; nothing after that.
    assert!(sequences(&out).get("rtsp-1").map(Vec::len).unwrap_or(0) <= rtsp_after + 1);

    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
}
