//! Test clips made with ffmpeg (libx264): frame `i` shows the bits of `i` as ten black/white
//! blocks, so decoded pictures can be put back in order.

use crate::media::h264::YuvFrame;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const W: usize = 320;
pub const H: usize = 240;

/// RGB of frame `i`: bit `b` of `i` is the block at column `b % 5`, row `b / 5` (64×120).
pub fn frame(i: u32) -> Vec<u8> {
    let mut rgb = vec![0u8; W * H * 3];
    for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p % W, p / W);
        let bit = (y / 120) * 5 + x / 64;
        // A little moving texture keeps the encoder honest (real motion, real B-frames).
        let v = if (i >> bit) & 1 == 1 { 230 } else { 25 } + ((x + y + 3 * i as usize) % 16) as u8;
        px.fill(v);
    }
    rgb
}

/// The index a decoded picture shows (`None` if a block is neither black nor white).
pub fn index_of(pic: &YuvFrame) -> Option<u32> {
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

/// Encodes `n` frames at 25 fps with `extra` ffmpeg output arguments into `dir/name`.
pub fn make(dir: &Path, name: &str, n: u32, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut child = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            "320x240",
        ])
        .args(["-r", "25", "-i", "-"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args(extra)
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ffmpeg (apt-get install ffmpeg): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..n {
        stdin.write_all(&frame(i)).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "ffmpeg failed for {name}");
    out
}

/// A raw clip made with `-x264-params aud=1`, split at its access unit delimiters.
pub fn access_units(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for nal in super::super::h264::nal_payloads(&data) {
        if nal[0] & 0x1f == 9 || out.is_empty() {
            out.push(Vec::new());
        }
        let au = out.last_mut().unwrap();
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(nal);
    }
    out
}

/// Picture types (`I`, `P`, `B`) of a clip as ffprobe reports them.
pub fn pict_types(path: &Path) -> String {
    let out = Command::new("ffprobe")
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
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect()
}
