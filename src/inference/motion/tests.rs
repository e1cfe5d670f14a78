//! Tests of the motion detector on synthetic batches drawn here.
use super::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A solid object of the synthetic scene: top-left `(x, y)` moves by `v` per frame and
/// bounces inside `x_range`/`y_range` (ranges of the top-left corner).
struct Obj {
    name: &'static str,
    disc: bool,
    size: usize,
    start: (f32, f32),
    v: (f32, f32),
    x_range: (f32, f32),
    y_range: (f32, f32),
}

fn bounce(p: f32, (lo, hi): (f32, f32)) -> f32 {
    let len = (hi - lo).max(1.0);
    let q = (p - lo).rem_euclid(2.0 * len);
    lo + if q > len { 2.0 * len - q } else { q }
}

fn colour(name: &str) -> [u8; 3] {
    PALETTE.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Gradient + static ±12 texture + per-frame ±`noise` sensor noise, objects drawn on top.
/// Returns the frames and, per frame, `(label, truth box)` of every object.
type Truth = Vec<Vec<(&'static str, [f32; 4])>>;
fn scene(w: usize, h: usize, n: usize, objs: &[Obj], noise: i32) -> (Vec<Vec<u8>>, Truth) {
    let mut rng = StdRng::seed_from_u64(7);
    let texture: Vec<i32> = (0..w * h).map(|_| rng.random_range(-12..=12)).collect();
    let (mut frames, mut truth) = (Vec::new(), Vec::new());
    for t in 0..n {
        let mut f = vec![0u8; w * h * 3];
        for (i, px) in f.chunks_exact_mut(3).enumerate() {
            let (x, y) = ((i % w) as i32, (i / w) as i32);
            let base = [
                70 + 60 * x / w as i32,
                95 + 50 * y / h as i32,
                130 - 30 * x / w as i32,
            ];
            for c in 0..3 {
                let v = base[c] + texture[i] + rng.random_range(-noise..=noise);
                px[c] = v.clamp(0, 255) as u8;
            }
        }
        let mut boxes = Vec::new();
        for o in objs {
            let x = bounce(o.start.0 + o.v.0 * t as f32, o.x_range).round() as usize;
            let y = bounce(o.start.1 + o.v.1 * t as f32, o.y_range).round() as usize;
            let (r, col) = (o.size as f32 / 2.0, colour(o.name));
            let mut b = [usize::MAX, usize::MAX, 0, 0];
            for py in y..(y + o.size).min(h) {
                for px in x..(x + o.size).min(w) {
                    let (dx, dy) = (
                        px as f32 + 0.5 - x as f32 - r,
                        py as f32 + 0.5 - y as f32 - r,
                    );
                    if o.disc && dx * dx + dy * dy > r * r {
                        continue;
                    }
                    f[(py * w + px) * 3..(py * w + px) * 3 + 3].copy_from_slice(&col);
                    b = [
                        b[0].min(px),
                        b[1].min(py),
                        b[2].max(px + 1),
                        b[3].max(py + 1),
                    ];
                }
            }
            boxes.push((o.name, b.map(|v| v as f32)));
        }
        frames.push(f);
        truth.push(boxes);
    }
    (frames, truth)
}

/// Three objects in separate horizontal bands at the given speeds (fractions of min(w,h)).
fn three_objects(w: usize, h: usize) -> Vec<Obj> {
    let m = w.min(h) as f32;
    let band = |top: f32, size: usize| {
        (
            top * h as f32,
            top * h as f32 + 0.12 * h as f32 - size as f32 * 0.3,
        )
    };
    let obj = |name, disc, size: f32, x0: f32, vx: f32, top: f32| {
        let size = (size * m) as usize;
        let y_range = band(top, size);
        Obj {
            name,
            disc,
            size,
            start: (x0 * w as f32, y_range.0),
            v: (vx * m / 5.0, 0.01 * m),
            x_range: (0.0, (w - size) as f32),
            y_range,
        }
    };
    vec![
        obj("red", false, 0.12, 0.1, 0.8, 0.03),
        obj("green", true, 0.14, 0.7, -0.6, 0.38),
        obj("blue", false, 0.09, 0.4, 1.0, 0.72),
    ]
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

/// Per object: frames in which a detection with its label has IoU ≥ 0.5; plus unmatched count.
fn score(dets: &[Vec<Detection>], truth: &Truth) -> (Vec<usize>, usize) {
    let mut hits = vec![0; truth[0].len()];
    let mut unmatched = 0;
    for (frame_dets, boxes) in dets.iter().zip(truth) {
        for (i, (name, b)) in boxes.iter().enumerate() {
            hits[i] += usize::from(
                frame_dets
                    .iter()
                    .any(|d| d.label == *name && iou(d.bbox, *b) >= 0.5),
            );
        }
        unmatched += frame_dets
            .iter()
            .filter(|d| boxes.iter().all(|(_, b)| iou(d.bbox, *b) < 0.5))
            .count();
    }
    (hits, unmatched)
}

fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames.iter().map(Vec::as_slice).collect()
}

fn encode(w: usize, h: usize, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 80);
    enc.encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

/// Every moving object is found, with its colour label, at IoU ≥ 0.5 in ≥ 90 % of frames.
#[test]
fn finds_moving_objects_with_labels() {
    let (w, h) = (640, 480);
    let (frames, truth) = scene(w, h, 25, &three_objects(w, h), 3);
    let dets = MotionDetector::new(MotionConfig::default())
        .detect_rgb(w as u32, h as u32, &refs(&frames))
        .unwrap();
    assert_eq!(dets.len(), 25);
    let (hits, unmatched) = score(&dets, &truth);
    assert!(hits.iter().all(|&n| n >= 23), "hits per object {hits:?}");
    assert!(unmatched <= 2, "{unmatched} detections match no object");
    let d = &dets[0][0];
    assert!(
        (0.05..=0.99).contains(&d.confidence) && d.confidence > 0.5,
        "confidence {}",
        d.confidence
    );
}

/// Same recall after a JPEG q80 round trip through `detect_jpegs` (640×360).
#[test]
fn jpeg_round_trip_keeps_recall() {
    let (w, h) = (640, 360);
    let (frames, truth) = scene(w, h, 25, &three_objects(w, h), 2);
    let jpegs: Vec<Vec<u8>> = frames.iter().map(|f| encode(w, h, f)).collect();
    let dets = MotionDetector::new(MotionConfig::default())
        .detect_jpegs(&refs(&jpegs))
        .unwrap();
    let (hits, unmatched) = score(&dets, &truth);
    assert!(hits.iter().all(|&n| n >= 23), "hits per object {hits:?}");
    assert!(unmatched <= 2, "{unmatched} detections match no object");
    // The same frames decoded first: the same detections, and a frame of another size is an
    // error naming its index.
    let (by_planes, mut planes) = MotionDetector::new(MotionConfig::default())
        .detect_jpegs_keeping(&refs(&jpegs))
        .unwrap();
    assert_eq!(by_planes, dets);
    let det = MotionDetector::new(MotionConfig::default());
    assert_eq!(det.detect_planes(&planes).unwrap(), dets);
    planes[3] = crate::media::planes::Planes::grey(320, 180, 0);
    match det.detect_planes(&planes) {
        Err(MotionError::SizeMismatch { index: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// A static scene (still objects, sensor noise only) yields no detections at all.
#[test]
fn static_scene_yields_nothing() {
    let mut objs = three_objects(320, 240);
    objs.iter_mut().for_each(|o| o.v = (0.0, 0.0));
    let (frames, _) = scene(320, 240, 25, &objs, 4);
    let dets = MotionDetector::new(MotionConfig::default())
        .detect_rgb(320, 240, &refs(&frames))
        .unwrap();
    assert_eq!(dets.len(), 25);
    assert!(dets.iter().all(Vec::is_empty), "{dets:?}");
}

/// Batches of fewer than three frames give one empty list per frame; no frames, no lists.
#[test]
fn short_batches_are_empty() {
    let (frames, _) = scene(64, 48, 2, &[], 0);
    let det = MotionDetector::new(MotionConfig::default());
    assert_eq!(
        det.detect_rgb(64, 48, &refs(&frames)).unwrap(),
        vec![Vec::new(), Vec::new()]
    );
    assert_eq!(
        det.detect_rgb(64, 48, &[]).unwrap(),
        Vec::<Vec<Detection>>::new()
    );
}

/// Bad input is an error naming the frame: wrong buffer length, zero size, garbage or mixed-size JPEGs.
#[test]
fn bad_input_is_an_error() {
    let det = MotionDetector::new(MotionConfig::default());
    let good = vec![0u8; 64 * 48 * 3];
    let short = vec![0u8; 10];
    let err = det.detect_rgb(64, 48, &[&good, &good, &short]).unwrap_err();
    assert!(
        matches!(
            err,
            MotionError::FrameLength {
                index: 2,
                got: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        det.detect_rgb(0, 48, &[]),
        Err(MotionError::BadDimensions { .. })
    ));
    let a = encode(64, 48, &good);
    let b = encode(32, 48, &good[..32 * 48 * 3]);
    let err = det
        .detect_jpegs(&[&a, &a, b"\xff\xd8garbage", &a])
        .unwrap_err();
    assert!(matches!(err, MotionError::Decode { index: 2, .. }), "{err}");
    let err = det.detect_jpegs(&[&a, &b, &a]).unwrap_err();
    assert!(
        matches!(
            err,
            MotionError::SizeMismatch {
                index: 1,
                width: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(det.detect_jpegs(&[&[][..], &a, &a]).is_err());
}

/// Boxes of objects bouncing off the edges of an odd-sized frame stay inside the frame.
#[test]
fn boxes_clamp_inside_frame() {
    let (w, h) = (321, 243);
    let objs = vec![Obj {
        name: "yellow",
        disc: false,
        size: 30,
        start: (0.0, 0.0),
        v: (67.0, 53.0),
        x_range: (0.0, 291.0),
        y_range: (0.0, 213.0),
    }];
    let (frames, truth) = scene(w, h, 25, &objs, 2);
    let cfg = MotionConfig {
        downscale: 4,
        ..MotionConfig::default()
    };
    let dets = MotionDetector::new(cfg)
        .detect_rgb(w as u32, h as u32, &refs(&frames))
        .unwrap();
    let all: Vec<&Detection> = dets.iter().flatten().collect();
    assert!(
        all.iter()
            .any(|d| d.bbox[2] == w as f32 || d.bbox[3] == h as f32),
        "no box reached the edge"
    );
    for d in &all {
        let [x1, y1, x2, y2] = d.bbox;
        assert!(
            0.0 <= x1 && x1 < x2 && x2 <= w as f32 && 0.0 <= y1 && y1 < y2 && y2 <= h as f32,
            "{d:?}"
        );
    }
    assert!(score(&dets, &truth).0[0] >= 23);
}

/// The bitwise temporal median equals a sort-based lower median, for odd and even counts.
#[test]
fn median_matches_sorting() {
    let mut rng = StdRng::seed_from_u64(1);
    for n in [3, 4, 25, 64] {
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|_| (0..5000).map(|_| rng.random()).collect())
            .collect();
        let mut out = vec![0u8; 5000];
        temporal_median(&refs(&frames), &mut out);
        for (i, &m) in out.iter().enumerate() {
            let mut v: Vec<u8> = frames.iter().map(|f| f[i]).collect();
            v.sort_unstable();
            assert_eq!(m, v[(n - 1) / 2], "pixel {i}, n {n}");
        }
    }
}

/// Colour naming: palette colours map to their names, far colours to "object".
#[test]
fn colour_names() {
    assert_eq!(colour_name([225.0, 50.0, 45.0]), "red");
    assert_eq!(colour_name([232.0, 200.0, 50.0]), "yellow");
    assert_eq!(colour_name([100.0, 100.0, 100.0]), UNKNOWN_LABEL);
}

/// The 2×2 fast path of the downscale gives exactly the general box average it replaces.
#[test]
fn halving_matches_the_general_box_average() {
    let mut rng = StdRng::seed_from_u64(3);
    let (w, h) = (64, 36);
    let src: Vec<u8> = (0..w * h * 3).map(|_| rng.random()).collect();
    let geo = Geometry::new(w as u32, h as u32, 2).unwrap();
    let mut fast = vec![0u8; geo.small_pixels() * 3];
    downscale_into(&src, &geo, &mut Vec::new(), &mut fast);
    // The general path, with the block loop written out.
    for by in 0..h / 2 {
        for bx in 0..w / 2 {
            for c in 0..3 {
                let at = |x: usize, y: usize| u32::from(src[(y * w + x) * 3 + c]);
                let sum = at(2 * bx, 2 * by)
                    + at(2 * bx + 1, 2 * by)
                    + at(2 * bx, 2 * by + 1)
                    + at(2 * bx + 1, 2 * by + 1);
                assert_eq!(
                    u32::from(fast[(by * (w / 2) + bx) * 3 + c]),
                    (sum + 2) / 4,
                    "block ({bx},{by}) channel {c}"
                );
            }
        }
    }
}
