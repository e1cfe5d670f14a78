//! The stage limits, measured by W1 itself: each stage alone on this thread (one core),
//! on the clip the cameras replay, at W1's sizes, codec and quality, in CPU time of the thread
//! (`CLOCK_THREAD_CPUTIME_ID`, the same kind of time as W1's CPU per frame). W1 measures them
//! just before its pipeline starts and again after it stops, so "CPU per frame within 1.3× of the
//! stage sum" compares figures from the same host in the same minutes (this host's speed moves by
//! 1.5× over a day; a criterion run from another hour does not compare).
//!
//! Stages (ms per frame, median of the rounds):
//! - `decode`: openh264, one stream, the input size (no picture copied out);
//! - `resize_encode`: the camera side's encoder, decoded planes → output-size JPEG;
//! - `jpeg_decode`: that JPEG → YCbCr planes (the process side's decode for annotation);
//! - `draw_encode`: the built-in detector's boxes drawn on the planes, encoded;
//! - `detector`: the built-in detector on the decoded planes, per frame of a batch of 25 (not
//!   one of the stages; reported so its share can be seen).

use crate::config::{CameraConfig, Pace};
use crate::inference::motion::{MotionConfig, MotionDetector};
use crate::media::annotate::Annotator;
use crate::media::file::FileSource;
use crate::media::h264::H264Decoder;
use crate::media::jpeg::{Codec, FrameEncoder};
use crate::media::planes::DECODED;
use crate::media::source::FrameSource as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// Frames per batch on the process side, as W1 runs it.
const BATCH: usize = 25;

/// Stage costs in ms of CPU per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageLimits {
    pub decode: f64,
    pub resize_encode: f64,
    pub jpeg_decode: f64,
    pub draw_encode: f64,
    pub detector: f64,
    /// Boxes the detector found per frame (drawn in `draw_encode`).
    pub boxes: f64,
}

impl StageLimits {
    /// The sum: decode + resize + encode + decode for annotation + draw + encode.
    pub fn sum(&self) -> f64 {
        self.decode + self.resize_encode + self.jpeg_decode + self.draw_encode
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "decode": self.decode,
            "resize_encode": self.resize_encode,
            "jpeg_decode": self.jpeg_decode,
            "draw_encode": self.draw_encode,
            "detector": self.detector,
            "boxes_per_frame": self.boxes,
            "sum": self.sum(),
        })
    }

    /// Field by field, the median of `rounds` (the upper middle one for an even count).
    fn median(rounds: &[StageLimits]) -> StageLimits {
        let pick = |f: fn(&StageLimits) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        StageLimits {
            decode: pick(|s| s.decode),
            resize_encode: pick(|s| s.resize_encode),
            jpeg_decode: pick(|s| s.jpeg_decode),
            draw_encode: pick(|s| s.draw_encode),
            detector: pick(|s| s.detector),
            boxes: pick(|s| s.boxes),
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; this clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`, adding its CPU time to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = thread_cpu();
    let out = f();
    *total += thread_cpu().saturating_sub(t);
    out
}

/// What W1's cameras and process side are set to, and the clip's access units (read once).
pub struct Setup {
    pub units: Vec<Vec<u8>>,
    pub out_width: u32,
    pub out_height: u32,
    pub quality: u8,
    pub codec: Codec,
}

/// Measures every stage `rounds` times over the whole clip and returns the medians.
pub fn measure(setup: &Setup, rounds: usize) -> anyhow::Result<StageLimits> {
    anyhow::ensure!(!setup.units.is_empty(), "the clip has no video");
    let measured = (0..rounds.max(1))
        .map(|_| round(setup, &setup.units))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(StageLimits::median(&measured))
}

/// The clip's access units, in decode order.
pub fn read_units(clip: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut camera = CameraConfig::synthetic("stage-limits", &format!("file://{}", clip.display()));
    camera.pace = Pace::Fast;
    let mut source = FileSource::open(&camera, clip)?;
    let mut units = Vec::new();
    while let Some(u) = source.next_unit()? {
        units.push(u.annexb);
    }
    Ok(units)
}

fn per_frame(total: Duration, frames: usize) -> f64 {
    total.as_secs_f64() * 1e3 / frames.max(1) as f64
}

/// One round: decode alone, then the camera side's encoder on freshly decoded pictures, then the
/// process side batch by batch on the JPEGs it made.
fn round(setup: &Setup, units: &[Vec<u8>]) -> anyhow::Result<StageLimits> {
    let (mut decode, mut decoded) = (Duration::ZERO, 0usize);
    let mut dec = H264Decoder::new()?;
    for u in units {
        if let Some(p) = timed(&mut decode, || dec.decode_picture(u))? {
            black_box(p.view().row(0, 0)[0]);
            decoded += 1;
        }
    }

    let mut encoder = FrameEncoder::with_codec(
        setup.out_width,
        setup.out_height,
        setup.quality,
        setup.codec,
    )?;
    let mut dec = H264Decoder::new()?;
    let (mut resize_encode, mut jpegs) = (Duration::ZERO, Vec::with_capacity(units.len()));
    for u in units {
        if let Some(p) = dec.decode_picture(u)? {
            jpegs.push(timed(&mut resize_encode, || encoder.encode_view(p.view()))?);
        }
    }
    anyhow::ensure!(
        decoded > 0 && jpegs.len() == decoded,
        "{} pictures decoded, {} encoded",
        decoded,
        jpegs.len()
    );

    let detector = MotionDetector::new(MotionConfig::default()).with_codec(setup.codec);
    let annotator = Annotator::with_codec(setup.codec)?;
    let (mut jpeg_decode, mut detect, mut draw_encode) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut boxes = 0usize;
    for batch in jpegs.chunks(BATCH) {
        let planes = batch
            .iter()
            .map(|j| timed(&mut jpeg_decode, || setup.codec.decode_planes(j)))
            .collect::<Result<Vec<_>, _>>()?;
        let found = timed(&mut detect, || detector.detect_planes(&planes))?;
        boxes += found.iter().map(Vec::len).sum::<usize>();
        for (mut p, d) in planes.into_iter().zip(&found) {
            black_box(timed(&mut draw_encode, || {
                annotator.annotate_planes(&mut p, d, setup.quality)
            })?);
            // As the annotator does: the buffer goes back for the next batch's decode.
            DECODED.give(p);
        }
    }
    let n = jpegs.len();
    Ok(StageLimits {
        decode: per_frame(decode, decoded),
        resize_encode: per_frame(resize_encode, n),
        jpeg_decode: per_frame(jpeg_decode, n),
        draw_encode: per_frame(draw_encode, n),
        detector: per_frame(detect, n),
        boxes: boxes as f64 / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_taken_field_by_field() {
        let s = |d, r| StageLimits {
            decode: d,
            resize_encode: r,
            ..Default::default()
        };
        let m = StageLimits::median(&[s(3.0, 1.0), s(1.0, 3.0), s(2.0, 2.5)]);
        assert_eq!((m.decode, m.resize_encode), (2.0, 2.5));
        assert_eq!(m.sum(), 4.5);
    }

    /// Every stage runs on a real clip and takes time; the detector finds the scene's moving
    /// objects (so draw + encode drew boxes, not an empty list).
    #[test]
    fn stages_are_measured_on_a_clip() {
        use crate::media::synthetic::{SceneConfig, SyntheticCamera};
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("clip.h264");
        let mut cam = SyntheticCamera::new(SceneConfig {
            width: 320,
            height: 180,
            fps: 25,
            objects: 3,
            seed: 7,
        })
        .unwrap();
        let mut f = std::fs::File::create(&clip).unwrap();
        for _ in 0..50 {
            f.write_all(&cam.next_frame().unwrap().annexb).unwrap();
        }
        drop(f);
        let units = read_units(&clip).unwrap();
        assert_eq!(units.len(), 50);
        let setup = Setup {
            units,
            out_width: 160,
            out_height: 90,
            quality: 80,
            codec: Codec::default(),
        };
        let l = measure(&setup, 1).unwrap();
        for (name, v) in [
            ("decode", l.decode),
            ("resize_encode", l.resize_encode),
            ("jpeg_decode", l.jpeg_decode),
            ("draw_encode", l.draw_encode),
            ("detector", l.detector),
        ] {
            assert!(v > 0.0 && v < 1e3, "{name}: {v} ms");
        }
        // Three objects move through the scene: most frames have boxes to draw.
        assert!(l.boxes > 1.0, "{} boxes per frame", l.boxes);
        assert!(
            (l.sum() - (l.decode + l.resize_encode + l.jpeg_decode + l.draw_encode)).abs() < 1e-9
        );
    }
}
