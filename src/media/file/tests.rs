//! Tests of `media::file`.
use super::*;
use crate::media::h264::nal_types;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn camera(pace: Pace) -> CameraConfig {
    let mut c = CameraConfig::synthetic("file-cam", "file:///clip.mp4");
    c.pace = pace;
    c
}

fn open(path: &Path) -> Result<FileSource, SourceError> {
    FileSource::open(&camera(Pace::Fast), path)
}

/// Every unit of a source until the end (or the first error).
fn drain(src: &mut FileSource) -> Result<Vec<EncodedUnit>, SourceError> {
    let mut units = Vec::new();
    while let Some(u) = src.next_unit()? {
        units.push(u);
    }
    Ok(units)
}

/// MP4 and raw Annex B give one unit per frame; every keyframe unit starts with SPS and PPS;
/// capture times strictly increase even in fast mode.
#[test]
fn mp4_and_raw_give_one_unit_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["-profile:v", "high", "-bf", "2", "-g", "25"];
    let mp4 = clips::make(dir.path(), "c.mp4", 60, &args);
    let raw = clips::make(
        dir.path(),
        "c.h264",
        60,
        &[&args[..], &["-f", "h264"]].concat(),
    );
    for path in [mp4, raw] {
        let units = drain(&mut open(&path).unwrap()).unwrap();
        assert_eq!(units.len(), 60, "{}", path.display());
        let keyframes: Vec<_> = units
            .iter()
            .filter(|u| nal_types(&u.annexb).contains(&5))
            .collect();
        assert!(
            keyframes.len() >= 3,
            "{}: {} IDRs",
            path.display(),
            keyframes.len()
        );
        for u in keyframes {
            assert_eq!(
                &nal_types(&u.annexb)[..2],
                &[7, 8][..],
                "{}",
                path.display()
            );
        }
        assert!(units.windows(2).all(|w| w[1].capture_us > w[0].capture_us));
        assert!(
            units
                .iter()
                .all(|u| u.truth.is_empty() && u.source_size == (0, 0))
        );
    }
}

/// `pace = "realtime"` emits at the file's rate (25 fps: 13 units ≈ 0.48 s); fast does not wait.
#[test]
fn realtime_pace_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = clips::make(dir.path(), "p.mp4", 13, &[]);
    let raw = clips::make(dir.path(), "p.264", 13, &["-f", "h264"]);
    for path in [&mp4, &raw] {
        let mut src = FileSource::open(&camera(Pace::Realtime), path).unwrap();
        let t = Instant::now();
        let units = drain(&mut src).unwrap();
        assert_eq!(units.len(), 13);
        let took = t.elapsed().as_secs_f64();
        assert!(
            (0.40..0.75).contains(&took),
            "{}: {took:.3} s",
            path.display()
        );
        // Stamped when due (one frame interval apart), however long each sleep overran.
        for w in units.windows(2) {
            let gap = w[1].capture_us - w[0].capture_us;
            assert!(
                (39_800..40_200).contains(&gap),
                "{}: {gap} µs",
                path.display()
            );
        }
        // Looped (the reader took 10 ms to get there): the file goes on one frame interval
        // after its last unit, not at once.
        std::thread::sleep(Duration::from_millis(10));
        assert!(src.rewind().unwrap());
        let again = drain(&mut src).unwrap();
        assert_eq!(again.len(), 13);
        let gap = again[0].capture_us - units[12].capture_us;
        assert!(
            (39_000..41_000).contains(&gap),
            "{}: {gap} µs",
            path.display()
        );
    }
    let t = Instant::now();
    drain(&mut open(&mp4).unwrap()).unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

/// A reader late by less than `MAX_GAP` keeps the file's schedule (units due at once, stamped
/// when due, as a live camera's buffered stream); later than that, the schedule restarts at now;
/// gaps in the timestamps are waited out for at most `MAX_GAP`.
#[test]
fn realtime_pace_keeps_the_schedule_of_a_late_reader() {
    // Timestamps 1/16 s apart (exact in binary).
    let t0 = Instant::now();
    let us = |n: u64| t0 + Duration::from_micros(n);
    let mut p = Pacer::default();
    assert_eq!(p.due(8.0, us(0)), us(0));
    assert_eq!(p.due(8.0625, us(1_000)), us(62_500));
    // 150 ms late: still due at 125 ms, and the next at 187.5 ms.
    assert_eq!(p.due(8.125, us(275_000)), us(125_000));
    assert_eq!(p.due(8.1875, us(276_000)), us(187_500));
    // More than MAX_GAP late: the schedule restarts from now.
    assert_eq!(p.due(8.25, us(1_500_000)), us(1_500_000));
    assert_eq!(p.due(8.3125, us(1_501_000)), us(1_562_500));
    // A 5 s hole in the timestamps is waited out for 1 s; backwards timestamps are due at once.
    assert_eq!(p.due(13.3125, us(1_563_000)), us(2_562_500));
    assert_eq!(p.due(3.0, us(2_563_000)), us(2_562_500));
    // Started again from its first timestamp: one interval (the last positive gap) later.
    p.rewind();
    assert_eq!(p.due(0.0, us(2_563_000)), us(3_562_500));
    assert_eq!(p.due(0.0625, us(2_564_000)), us(3_625_000));
}

/// Missing, empty, foreign and truncated files are errors naming the file or the codec.
#[test]
fn bad_files_are_source_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let missing = open(&p("missing.mp4")).err().unwrap();
    assert!(
        matches!(&missing, SourceError::Open { .. }) && missing.to_string().contains("missing.mp4"),
        "{missing}"
    );
    std::fs::write(p("empty.h264"), b"").unwrap();
    assert!(matches!(
        open(&p("empty.h264")),
        Err(SourceError::Open { .. })
    ));
    std::fs::write(p("text.h264"), b"not video at all").unwrap();
    assert!(matches!(
        open(&p("text.h264")),
        Err(SourceError::Open { .. })
    ));
    std::fs::write(p("text.mp4"), b"not video at all").unwrap();
    assert!(matches!(
        open(&p("text.mp4")),
        Err(SourceError::Open { .. })
    ));
    assert!(matches!(
        open(&p("clip.avi")),
        Err(SourceError::Unsupported { .. })
    ));

    let x265 = [
        "-c:v",
        "libx265",
        "-tag:v",
        "hvc1",
        "-x265-params",
        "log-level=error",
    ];
    let hevc = clips::make(dir.path(), "hevc.mp4", 5, &x265);
    let e = open(&hevc).err().unwrap();
    assert!(
        matches!(&e, SourceError::Unsupported { .. }) && e.to_string().contains("codec hvc1"),
        "{e}"
    );
    let mpeg4 = clips::make(dir.path(), "mpeg4.mp4", 5, &["-c:v", "mpeg4"]);
    let e = open(&mpeg4).err().unwrap();
    assert!(e.to_string().contains("codec mp4v"), "{e}");

    // moov at the end (ffmpeg's default): cut in half, there is no index at all.
    let whole = std::fs::read(clips::make(dir.path(), "whole.mp4", 50, &[])).unwrap();
    std::fs::write(p("cut.mp4"), &whole[..whole.len() / 2]).unwrap();
    assert!(matches!(open(&p("cut.mp4")), Err(SourceError::Open { .. })));
    // moov first, cut: the mp4 crate refuses the short mdat box.
    let fast = clips::make(dir.path(), "fast.mp4", 50, &["-movflags", "+faststart"]);
    let bytes = std::fs::read(&fast).unwrap();
    std::fs::write(p("cutfast.mp4"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert!(matches!(
        open(&p("cutfast.mp4")),
        Err(SourceError::Open { .. })
    ));
    // Cut while playing: the samples that are gone are read errors.
    let mut src = open(&fast).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fast)
        .unwrap()
        .set_len(bytes.len() as u64 / 2)
        .unwrap();
    let e = drain(&mut src).err().unwrap();
    assert!(
        matches!(&e, SourceError::Read { .. }) && e.to_string().contains("fast.mp4"),
        "{e}"
    );
}

/// Random damage to an MP4's index or a raw stream never panics: opening and reading end in
/// units or `SourceError`s.
#[test]
fn corrupt_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = std::fs::read(clips::make(
        dir.path(),
        "f.mp4",
        30,
        &["-movflags", "+faststart", "-bf", "2"],
    ))
    .unwrap();
    let raw = std::fs::read(clips::make(dir.path(), "f.h264", 30, &["-f", "h264"])).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for round in 0..300 {
        let (name, mut data) = if round % 3 == 0 {
            ("x.h264", raw.clone())
        } else {
            ("x.mp4", mp4.clone())
        };
        // Mostly hit the index (the first ~2 KB of a faststart file), sometimes anywhere.
        let span = if round % 2 == 0 {
            2048.min(data.len())
        } else {
            data.len()
        };
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..span);
            data[i] = rng.random();
        }
        if round % 5 == 0 {
            data.truncate(rng.random_range(0..data.len()));
        }
        let path = dir.path().join(name);
        std::fs::write(&path, &data).unwrap();
        if let Ok(mut src) = open(&path) {
            let _ = drain(&mut src);
        }
    }
}
