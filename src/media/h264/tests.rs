//! Tests of `media::h264`.
use super::*;
use crate::media::synthetic::{PALETTE, SceneConfig, SyntheticCamera, SyntheticFrame};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn frames(cfg: SceneConfig, n: usize) -> Vec<SyntheticFrame> {
    let mut cam = SyntheticCamera::new(cfg).unwrap_or_else(|e| panic!("camera: {e}"));
    (0..n)
        .map(|i| {
            cam.next_frame()
                .unwrap_or_else(|e| panic!("frame {i}: {e}"))
        })
        .collect()
}

fn decoder() -> H264Decoder {
    H264Decoder::new().unwrap_or_else(|e| panic!("decoder: {e}"))
}

fn cfg320() -> SceneConfig {
    SceneConfig {
        width: 320,
        height: 240,
        fps: 25,
        objects: 6,
        seed: 4,
    }
}

/// RGB → YUV → RGB keeps saturated palette colours within a few levels.
#[test]
fn yuv_rgb_conversion_round_trips() {
    // One 2x2 block per palette colour, side by side, so chroma samples never mix colours.
    let mut img = vec![0u8; 16 * 2 * 3];
    for (k, (_, c)) in PALETTE.iter().enumerate() {
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let i = (y * 16 + 2 * k + x) * 3;
            img[i..i + 3].copy_from_slice(c);
        }
    }
    let yuv = YuvFrame::from_rgb8(16, 2, &img);
    assert!(yuv.is_consistent());
    let back = yuv.to_rgb8();
    for (a, b) in img.iter().zip(&back) {
        assert!((i32::from(*a) - i32::from(*b)).abs() <= 4, "{a} vs {b}");
    }
}

/// Every frame fed yields a picture of the camera size, and the pixel at each truth box centre
/// is within ±40 per channel of the object's palette colour.
#[test]
fn synthetic_round_trip() {
    let cfg = cfg320();
    let mut dec = decoder();
    let stream = frames(cfg, 60);
    let mut count = 0;
    for f in &stream {
        let pic = dec
            .decode(&f.annexb)
            .unwrap_or_else(|e| panic!("frame {}: {e}", f.index));
        let Some(pic) = pic else {
            panic!("frame {} produced no picture", f.index)
        };
        count += 1;
        assert_eq!((pic.width, pic.height), (cfg.width, cfg.height));
        assert!(pic.is_consistent());
        let rgb = pic.to_rgb8();
        for (k, t) in f.truth.iter().enumerate() {
            let (cx, cy) = ((t.bbox[0] + t.bbox[2]) / 2.0, (t.bbox[1] + t.bbox[3]) / 2.0);
            let covered = f.truth[k + 1..].iter().any(|o| {
                cx >= o.bbox[0] - 2.0
                    && cx < o.bbox[2] + 2.0
                    && cy >= o.bbox[1] - 2.0
                    && cy < o.bbox[3] + 2.0
            });
            if covered {
                continue;
            }
            let want = PALETTE.iter().find(|(l, _)| *l == t.label).map(|(_, c)| *c);
            let Some(want) = want else {
                panic!("unknown label {}", t.label)
            };
            let i = (cy as usize * cfg.width as usize + cx as usize) * 3;
            for ch in 0..3 {
                let d = (i32::from(rgb[i + ch]) - i32::from(want[ch])).abs();
                assert!(
                    d <= 40,
                    "frame {} {}: got {:?} want {want:?}",
                    f.index,
                    t.label,
                    &rgb[i..i + 3]
                );
            }
        }
    }
    assert_eq!(count, 60);
    assert_eq!(dec.frames_decoded(), 60);
}

/// A decoder joining mid-stream fails (without panicking) until the next IDR, then decodes
/// every frame from there on.
#[test]
fn join_at_later_idr() {
    let stream = frames(cfg320(), 60);
    let mut dec = decoder();
    for f in &stream[10..25] {
        // P frames without their references: an error or nothing, never a picture of garbage.
        let _ = dec.decode(&f.annexb);
    }
    let mut count = 0;
    for f in &stream[25..] {
        match dec.decode(&f.annexb) {
            Ok(Some(pic)) => {
                assert_eq!((pic.width, pic.height), (320, 240));
                count += 1;
            }
            other => panic!("frame {}: {:?}", f.index, other.map(|p| p.is_some())),
        }
    }
    assert_eq!(count, 35);
}

/// Garbage (random bytes, fake slices, truncated units) returns Err or Ok(None) and does not
/// poison the decoder: the next IDR still decodes.
#[test]
fn garbage_does_not_poison() {
    let stream = frames(cfg320(), 30);
    let mut dec = decoder();
    assert!(matches!(dec.decode(&stream[0].annexb), Ok(Some(_))));
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut bad_results = 0;
    for i in 0..100 {
        let len = rng.random_range(0..2000);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 {
            // Give half of them a start code and a plausible slice header byte.
            junk.splice(0..0, [0, 0, 0, 1, if i % 4 == 0 { 0x65 } else { 0x41 }]);
        }
        match dec.decode(&junk) {
            Err(DecodeError::Corrupt(_)) | Ok(None) => bad_results += 1,
            Ok(Some(_)) => {} // concealment may still emit a picture; not a failure
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    assert!(
        bad_results >= 50,
        "only {bad_results} of 100 junk inputs were rejected"
    );
    let truncated = &stream[3].annexb[..stream[3].annexb.len() / 3];
    let _ = dec.decode(truncated);
    assert!(matches!(
        dec.decode(b"no start code here"),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(dec.decode(&[]), Ok(None)));
    // Recovery at the next IDR (frame 25), and the P frames after it.
    for f in &stream[25..30] {
        match dec.decode(&f.annexb) {
            Ok(Some(pic)) => assert_eq!(pic.width, 320),
            other => panic!(
                "frame {} after garbage: {:?}",
                f.index,
                other.map(|p| p.is_some())
            ),
        }
    }
}

use crate::media::file::clips;

/// Decodes a whole clip: (index shown by each picture in output order, pictures that came
/// out of the call that fed their own access unit, pictures returned by the final flush).
fn decode_clip(aus: &[Vec<u8>]) -> (Vec<Option<u32>>, usize, usize) {
    let mut dec = decoder();
    let (mut shown, mut on_time) = (Vec::new(), 0);
    for (k, au) in aus.iter().enumerate() {
        match dec.decode(au) {
            Ok(Some(pic)) => {
                let i = clips::index_of(&pic);
                on_time += usize::from(i == Some(k as u32));
                shown.push(i);
            }
            Ok(None) => {}
            Err(e) => panic!("access unit {k}: {e}"),
        }
    }
    let flushed = dec.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    shown.extend(flushed.iter().map(clips::index_of));
    assert_eq!(dec.frames_decoded(), shown.len() as u64);
    (shown, on_time, flushed.len())
}

/// Main and High streams with B-frames (x264 `-bf 2` and `-bf 3`, B-pyramid, scene-cut IDRs)
/// decode every frame, in presentation order, the last ones from `flush`.
#[test]
fn b_frames_decode_in_presentation_order() {
    let dir = tempfile::tempdir().unwrap();
    for (name, profile, bf) in [
        ("high-bf2.h264", "high", "2"),
        ("main-bf3.h264", "main", "3"),
    ] {
        let path = clips::make(
            dir.path(),
            name,
            120,
            &[
                "-profile:v",
                profile,
                "-bf",
                bf,
                "-g",
                "50",
                "-x264-params",
                "aud=1",
                "-f",
                "h264",
            ],
        );
        assert!(
            clips::pict_types(&path).contains('B'),
            "{name} has no B-frames"
        );
        let aus = clips::access_units(&path);
        assert_eq!(aus.len(), 120);
        let (shown, _, flushed) = decode_clip(&aus);
        let want: Vec<Option<u32>> = (0..120).map(Some).collect();
        assert_eq!(shown, want, "{name}");
        assert!(
            flushed >= 1,
            "{name}: the held-back pictures come from flush"
        );
    }
}

/// Streams that cannot reorder stay low-latency: every picture of a High-profile stream
/// without B-frames comes out of the call that fed it, and nothing is left for flush.
#[test]
fn no_b_frames_no_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = clips::make(
        dir.path(),
        "high-bf0.h264",
        60,
        &[
            "-profile:v",
            "high",
            "-bf",
            "0",
            "-x264-params",
            "aud=1",
            "-f",
            "h264",
        ],
    );
    let aus = clips::access_units(&path);
    let (shown, on_time, flushed) = decode_clip(&aus);
    assert_eq!(shown.len(), 60);
    assert_eq!((on_time, flushed), (60, 0));
    let mut dec = decoder();
    let _ = dec.decode(&aus[0]);
    assert!(!dec.reordering());
}

/// The SPS fields the ingest relies on are read from real x264 streams, and truncated or
/// random SPS / slice bytes give `None` instead of a panic.
#[test]
fn sps_fields_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    for (bf, reorders) in [("2", true), ("0", false)] {
        let path = clips::make(
            dir.path(),
            &format!("bf{bf}.h264"),
            5,
            &["-profile:v", "high", "-bf", bf, "-f", "h264"],
        );
        let data = std::fs::read(&path).unwrap();
        let sps = nal_payloads(&data).find(|n| n[0] & 0x1f == 7).unwrap();
        let info = SpsInfo::parse(sps).unwrap_or_else(|| panic!("bf {bf}: SPS not parsed"));
        assert_eq!(info.profile_idc, 100);
        assert_eq!(info.fps, Some(25.0));
        assert_eq!(info.may_reorder(), reorders, "bf {bf}: {info:?}");
        for cut in 0..sps.len() {
            let _ = SpsInfo::parse(&sps[..cut]);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..2000 {
        let len = rng.random_range(0..40);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(h) = junk.first_mut() {
            *h = (*h & 0xe0) | [7, 1, 5][rng.random_range(0..3)];
        }
        let _ = SpsInfo::parse(&junk);
        let _ = slice_start(&junk);
    }
}

/// The synthetic camera yields one access unit per frame; frames at multiples of fps are IDRs preceded by
/// SPS and PPS, the others are not IDRs.
#[test]
fn idr_every_second() {
    let cfg = SceneConfig {
        width: 160,
        height: 120,
        fps: 25,
        objects: 3,
        seed: 9,
    };
    let mut cam = SyntheticCamera::new(cfg).unwrap_or_else(|e| panic!("camera: {e}"));
    for i in 0..60u64 {
        let f = match cam.next_frame() {
            Ok(f) => f,
            Err(e) => panic!("frame {i}: {e}"),
        };
        assert_eq!(f.index, i);
        assert_eq!(f.truth.len(), 3);
        let types = nal_types(&f.annexb);
        if i % 25 == 0 {
            for t in [7, 8, 5] {
                assert!(types.contains(&t), "frame {i} lacks NAL {t}: {types:?}");
            }
        } else {
            assert!(
                !types.contains(&5),
                "frame {i} is an unexpected IDR: {types:?}"
            );
            assert!(types.contains(&1), "frame {i} has no slice: {types:?}");
        }
        assert_eq!(is_idr(&f.annexb), i % 25 == 0, "frame {i}: {types:?}");
    }
    // The first slice decides; parameter sets, SEI and AUDs before it are skipped; a start
    // code with nothing after it, or no slice at all, is not an IDR.
    let nal = |t: u8, body: &[u8]| [&[0u8, 0, 0, 1, t][..], body].concat();
    let unit = |nals: &[Vec<u8>]| nals.concat();
    assert!(is_idr(&unit(&[
        nal(9, &[0xf0]),
        nal(6, &[5, 1, 0]),
        nal(0x65, &[0x88])
    ])));
    assert!(is_idr(&unit(&[
        nal(0x67, &[0x42, 0, 0x1e]),
        nal(0x68, &[0xce]),
        nal(0x25, &[1])
    ])));
    assert!(!is_idr(&unit(&[nal(9, &[0x30]), nal(0x41, &[0x9a])])));
    assert!(!is_idr(&unit(&[nal(0x67, &[0x42]), nal(0x68, &[0xce])])));
    assert!(!is_idr(&[0, 0, 1]));
    assert!(!is_idr(&[]));
    assert!(!is_idr(&[0x65, 0x88, 0x84]));
}
