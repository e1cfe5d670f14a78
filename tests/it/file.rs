//! File cameras: MP4 and raw H.264 clips with B-frames, made here with ffmpeg (libx264), played
//! through `FileSource` + `H264Decoder` directly and through the whole daemon (end of file,
//! `loop`, `pace`).

use crate::common::*;
use framewire::config::{CameraConfig, Pace};
use framewire::daemon::{self, Options};
use framewire::media::file::FileSource;
use framewire::media::h264::{H264Decoder, YuvFrame};
use framewire::media::source::FrameSource;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FRAMES: u32 = 250;

/// RGB 320×240 of frame `i`: bit `b` of `i` is a black or white 64×120 block (column `b % 5`,
/// row `b / 5`), over a faint moving texture so the encoder sees real motion.
fn picture(i: u32) -> Vec<u8> {
    let mut rgb = vec![0u8; 320 * 240 * 3];
    for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p % 320, p / 320);
        let on = (i >> ((y / 120) * 5 + x / 64)) & 1 == 1;
        px.fill(if on { 230 } else { 25 } + ((x + y + 3 * i as usize) % 16) as u8);
    }
    rgb
}

/// The index a decoded picture shows, from the mean luma at each block's centre.
fn index_of(pic: &YuvFrame) -> Option<u32> {
    let mut i = 0;
    for bit in 0..10 {
        let (cx, cy) = ((bit % 5) * 64 + 32, (bit / 5) * 120 + 60);
        let mut sum = 0u32;
        for y in cy - 8..cy + 8 {
            for x in cx - 8..cx + 8 {
                sum += u32::from(*pic.y.get(y * pic.width as usize + x)?);
            }
        }
        match sum / 256 {
            0..=80 => {}
            170.. => i |= 1 << bit,
            _ => return None,
        }
    }
    Some(i)
}

/// A 250-frame High-profile clip with 2 B-frames (GOP 50) at 25 fps, as `dir/name`; `.h264`
/// makes raw Annex B. Checks with ffprobe that B-frames are really there.
pub(crate) fn clip(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        "320x240",
        "-r",
        "25",
        "-i",
        "-",
    ])
    .args([
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-bf",
        "2",
        "-g",
        "50",
        "-pix_fmt",
        "yuv420p",
    ]);
    if name.ends_with(".h264") {
        cmd.args(["-f", "h264"]);
    }
    let mut child = cmd
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ffmpeg (apt-get install ffmpeg): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..FRAMES {
        stdin.write_all(&picture(i)).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "ffmpeg failed for {name}");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    let types: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(types.len(), FRAMES as usize, "{name}: ffprobe frames");
    assert!(types.contains(&"B"), "{name} has no B-frames");
    out
}

fn file_camera(id: &str, path: &Path, pace: Pace, looping: bool) -> CameraConfig {
    let url = format!("file://{}", path.display());
    let parsed = framewire::config::SourceUrl::parse(&url);
    assert!(
        matches!(parsed, Ok(framewire::config::SourceUrl::File(_))),
        "config rejects {url}: {parsed:?}"
    );
    let mut c = CameraConfig::synthetic(id, &url);
    c.pace = pace;
    c.loop_file = looping;
    // Above any rate fast playback reaches: the sampler keeps every decoded frame.
    c.sample_fps = 1e6;
    c.queue_frames = 1000;
    c.width = 320;
    c.height = 240;
    c
}

/// The `/status` entry of the camera's source actor (`null` before the actor registered).
fn source_status(d: &daemon::Handle, camera: &str) -> serde_json::Value {
    let (_, body) = get(d.http, "/status");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    st["actors"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["actor"] == "source" && a["camera"] == camera)
        })
        .cloned()
        .unwrap_or_default()
}

fn decoded(d: &daemon::Handle, camera: &str) -> u64 {
    d.metrics.frames_decoded.with_label_values(&[camera]).get()
}

/// No restart and no reconnect of the camera's source, by metrics and by /status.
fn assert_never_restarted(d: &daemon::Handle, camera: &str) {
    let (_, text) = get(d.http, "/metrics");
    let series = format!("framewire_actor_restarts_total{{actor=\"source\",camera=\"{camera}\"}}");
    assert_eq!(metric(&text, &series), 0.0, "{series}");
    assert_eq!(
        d.metrics
            .actor_restarts
            .with_label_values(&["source", camera])
            .get(),
        0
    );
    assert_eq!(framewire::metrics::total(&d.metrics.camera_reconnects), 0);
    assert_eq!(source_status(d, camera)["restarts"], 0);
}

/// An MP4 with B-frames (High, -bf 2, 250 frames): all 250 frames decoded, in order.
/// The same for the raw Annex B (`.h264`) version of the clip.
#[test]
fn b_frame_clips_decode_every_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bframes.mp4", "bframes.h264"] {
        let path = clip(dir.path(), name);
        let mut cam = CameraConfig::synthetic("direct", "synthetic://");
        cam.pace = Pace::Fast;
        let mut src = FileSource::open(&cam, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut dec = H264Decoder::new().unwrap();
        let (mut shown, mut units) = (Vec::new(), 0);
        while let Some(unit) = src.next_unit().unwrap_or_else(|e| panic!("{name}: {e}")) {
            units += 1;
            if let Some(pic) = dec
                .decode(&unit.annexb)
                .unwrap_or_else(|e| panic!("{name} unit {units}: {e}"))
            {
                shown.push(index_of(&pic));
            }
        }
        shown.extend(dec.flush().unwrap().iter().map(index_of));
        assert_eq!(units, FRAMES, "{name}: one access unit per frame");
        let want: Vec<Option<u32>> = (0..FRAMES).map(Some).collect();
        assert_eq!(shown, want, "{name}: every frame, in presentation order");
    }
}

/// A non-looping file flushes its last batch and reports the camera finished, not failed.
#[test]
fn file_end_flushes_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "end.mp4");
    let out = dir.path().join("out");
    let mut cfg = config(
        dir.path(),
        vec![file_camera("file-end", &path, Pace::Fast, false)],
        25,
    );
    cfg.batch.max_wait = Duration::from_secs(1);
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until("the source to finish", Duration::from_secs(60), || {
        source_status(&d, "file-end")["state"] == "finished"
    });
    let stored = || results(&out).iter().map(|r| r.frames.len()).sum::<usize>();
    // The tail batch (250 = 10 × 25, or a partial one) is stored within max_wait.
    let mut last = (stored(), Instant::now());
    wait_until("stored frames to settle", Duration::from_secs(30), || {
        let now = stored();
        if now != last.0 {
            last = (now, Instant::now());
        }
        now >= FRAMES as usize && last.1.elapsed() > Duration::from_secs(2)
            || last.1.elapsed() > Duration::from_secs(5)
    });
    let all = results(&out);
    let mut seqs: Vec<u64> = all
        .iter()
        .flat_map(|r| r.frames.iter().map(|f| f.seq))
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..u64::from(FRAMES)).collect::<Vec<_>>(),
        "every frame stored exactly once"
    );
    assert!(all.iter().all(|r| r.source_type == "file"));
    assert_eq!(decoded(&d, "file-end"), u64::from(FRAMES));
    assert_eq!(
        d.metrics
            .decode_errors
            .with_label_values(&["file-end"])
            .get(),
        0
    );
    let st = source_status(&d, "file-end");
    assert_eq!(st["state"], "finished", "{st}");
    assert!(st["last_error"].is_null(), "{st}");
    assert_never_restarted(&d, "file-end");
    assert!(d.shutdown());
}

/// A looping file starts again at its end.
#[test]
fn looping_file_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "loop.mp4");
    let cfg = config(
        dir.path(),
        vec![file_camera("file-loop", &path, Pace::Fast, true)],
        25,
    );
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until(
        "more than one pass of the file",
        Duration::from_secs(20),
        || decoded(&d, "file-loop") > u64::from(FRAMES) + 50,
    );
    assert_eq!(source_status(&d, "file-loop")["state"], "running");
    assert_eq!(
        d.metrics
            .decode_errors
            .with_label_values(&["file-loop"])
            .get(),
        0
    );
    assert_never_restarted(&d, "file-loop");
    assert!(d.shutdown());
}

/// pace = "realtime" plays at the file's rate.
#[test]
fn realtime_pace_plays_at_file_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "live.mp4");
    let cfg = config(
        dir.path(),
        vec![file_camera("file-rt", &path, Pace::Realtime, false)],
        25,
    );
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until("the first frames", Duration::from_secs(20), || {
        decoded(&d, "file-rt") >= 5
    });
    let (n0, t0) = (decoded(&d, "file-rt"), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let fps = (decoded(&d, "file-rt") - n0) as f64 / t0.elapsed().as_secs_f64();
    assert!(
        (20.0..30.0).contains(&fps),
        "decoded {fps:.1} fps, the file has 25"
    );
    assert!(d.shutdown());
}

/// Three cameras share one decoder (`media.decoders = 1`), a keyframe interval at a time: every
/// frame of every camera is decoded and stored exactly once, with no decode error and one decoder
/// alive (`framewire_h264_decoders`), where each camera would otherwise have its own.
#[test]
fn cameras_share_one_decoder_and_lose_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "shared.mp4");
    let out = dir.path().join("out");
    let ids = ["shared-1", "shared-2", "shared-3"];
    let mut cfg = config(
        dir.path(),
        ids.iter()
            .map(|id| file_camera(id, &path, Pace::Fast, false))
            .collect(),
        25,
    );
    cfg.batch.max_wait = Duration::from_secs(1);
    cfg.media.decoders = 1;
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until("every source to finish", Duration::from_secs(90), || {
        ids.iter()
            .all(|id| source_status(&d, id)["state"] == "finished")
    });
    let (_, text) = get(d.http, "/metrics");
    assert_eq!(metric(&text, "framewire_h264_decoders"), 1.0);
    let m = &d.metrics;
    let counts = || {
        ids.map(|id| {
            (
                m.frames_decoded.with_label_values(&[id]).get(),
                m.frames_sampled.with_label_values(&[id]).get(),
                m.frames_dropped
                    .with_label_values(&[id, "queue_full"])
                    .get(),
                results(&out)
                    .iter()
                    .filter(|r| r.camera == id)
                    .map(|r| r.frames.len())
                    .sum::<usize>(),
            )
        })
    };
    eprintln!(
        "(decoded, sampled, dropped, stored) at the end of the files: {:?}",
        counts()
    );
    // The process side takes its time when the whole suite runs at once on two cores.
    wait_until("every frame stored", Duration::from_secs(120), || {
        results(&out).iter().map(|r| r.frames.len()).sum::<usize>() >= 3 * FRAMES as usize
    });
    let all = results(&out);
    for id in ids {
        let mut seqs: Vec<u64> = all
            .iter()
            .filter(|r| r.camera == id)
            .flat_map(|r| r.frames.iter().map(|f| f.seq))
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..u64::from(FRAMES)).collect::<Vec<_>>(), "{id}");
        assert_eq!(decoded(&d, id), u64::from(FRAMES), "{id}");
        assert_eq!(
            d.metrics.decode_errors.with_label_values(&[id]).get(),
            0,
            "{id}"
        );
        assert_never_restarted(&d, id);
    }
    assert!(d.shutdown());
}
