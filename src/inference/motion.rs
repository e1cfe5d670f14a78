//! The built-in motion detector (protocol `builtin`): finds solid moving objects in the frames of
//! one batch, with no state carried between batches, so a redelivered batch gives the same answer.
//! The processing stage calls [`MotionDetector::detect_jpegs`] (or `detect_rgb` on decoded frames).
//! Each frame is box-downscaled; the background is the per-pixel, per-channel temporal median of
//! the batch; a pixel is foreground when any channel differs from the background by more than the
//! threshold; the mask is opened then closed, split into 8-connected components, and every
//! component large enough becomes a [`Detection`] labelled with the nearest palette colour.
//! Bad input (garbage JPEG, frames of differing sizes, buffers of the wrong length) is an `Err`
//! naming the frame; a batch of fewer than three frames yields one empty list per frame.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::{colorspace::ColorSpace, options::DecoderOptions};

use super::Detection;

/// Named colours the synthetic camera paints objects with; detections are labelled with these.
pub const PALETTE: [(&str, [u8; 3]); 8] = [
    ("red", [220, 40, 40]),
    ("green", [40, 200, 60]),
    ("blue", [40, 80, 230]),
    ("yellow", [230, 210, 40]),
    ("magenta", [210, 50, 210]),
    ("cyan", [40, 210, 210]),
    ("orange", [240, 140, 30]),
    ("white", [240, 240, 240]),
];

/// Label of a component whose mean colour is near no palette colour.
pub const UNKNOWN_LABEL: &str = "object";
/// A component's mean colour must be closer than this (Euclidean, RGB) to get a palette name.
const LABEL_MAX_DISTANCE: f32 = 90.0;
/// Below this many frames a temporal median is no background model.
const MIN_FRAMES: usize = 3;
/// At most this many frames (evenly sampled) feed the median, so counts fit a `u8`.
const MAX_MEDIAN_FRAMES: usize = 255;

/// Tuning of [`MotionDetector`]; `Default` suits 640×480 synthetic and real cameras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotionConfig {
    /// A pixel is foreground when some channel differs from the background by more than this.
    pub threshold: u8,
    /// Components smaller than this fraction of the frame area are dropped.
    pub min_area_fraction: f32,
    /// Work at 1/`downscale` resolution (box average); 0 is treated as 1.
    pub downscale: u32,
    /// Radius (square element) of the opening and closing applied to the mask; 0 disables both.
    pub morphology_radius: u32,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            threshold: 30,
            min_area_fraction: 0.001,
            downscale: 2,
            morphology_radius: 1,
        }
    }
}

/// Why a batch could not be analysed.
#[derive(Debug, Error, PartialEq)]
pub enum MotionError {
    #[error(
        "frame size {width}x{height} is empty or too large; pass RGB8 frames of at least 1x1 pixels"
    )]
    BadDimensions { width: u32, height: u32 },
    #[error(
        "frame {index} has {got} bytes but a {width}x{height} RGB8 frame needs {expected}; pass frames of the declared size"
    )]
    FrameLength {
        index: usize,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("JPEG frame {index} could not be decoded ({reason}); drop or re-fetch that frame")]
    Decode { index: usize, reason: String },
    #[error(
        "JPEG frame {index} is {width}x{height} but frame 0 is {first_width}x{first_height}; split the batch so each holds frames of one size"
    )]
    SizeMismatch {
        index: usize,
        width: u32,
        height: u32,
        first_width: u32,
        first_height: u32,
    },
}

/// Motion detector over whole batches; cheap to construct, holds only its configuration.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    cfg: MotionConfig,
}

/// Geometry of one batch: full resolution, working resolution and scale factor.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    width: usize,
    height: usize,
    small_w: usize,
    small_h: usize,
    scale: usize,
}

impl Geometry {
    fn new(width: u32, height: u32, downscale: u32) -> Result<Self, MotionError> {
        let bad = MotionError::BadDimensions { width, height };
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 || w.checked_mul(h).and_then(|a| a.checked_mul(3)).is_none() {
            return Err(bad);
        }
        let scale = downscale.max(1) as usize;
        Ok(Self {
            width: w,
            height: h,
            small_w: w.div_ceil(scale),
            small_h: h.div_ceil(scale),
            scale,
        })
    }
    fn frame_len(&self) -> usize {
        self.width * self.height * 3
    }
    fn small_pixels(&self) -> usize {
        self.small_w * self.small_h
    }
}

impl MotionDetector {
    pub fn new(cfg: MotionConfig) -> Self {
        Self { cfg }
    }

    /// Detect moving objects in every frame of one batch. `frames` are RGB8 images all of
    /// `width`×`height`. Returns one `Vec<Detection>` per frame, boxes in full-resolution pixels.
    /// Batches of fewer than three frames return empty lists (after their sizes are checked).
    pub fn detect_rgb(
        &self,
        width: u32,
        height: u32,
        frames: &[&[u8]],
    ) -> Result<Vec<Vec<Detection>>, MotionError> {
        let geo = Geometry::new(width, height, self.cfg.downscale)?;
        for (index, frame) in frames.iter().enumerate() {
            if frame.len() != geo.frame_len() {
                return Err(MotionError::FrameLength {
                    index,
                    width,
                    height,
                    expected: geo.frame_len(),
                    got: frame.len(),
                });
            }
        }
        if frames.len() < MIN_FRAMES {
            return Ok(vec![Vec::new(); frames.len()]);
        }
        let plane = geo.small_pixels() * 3;
        let mut stack = vec![0u8; plane * frames.len()];
        let mut acc = Vec::new();
        for (frame, out) in frames.iter().zip(stack.chunks_exact_mut(plane)) {
            downscale_into(frame, &geo, &mut acc, out);
        }
        Ok(self.detect_small(&geo, &stack))
    }

    /// Same as [`Self::detect_rgb`], from JPEG bytes decoded to RGB with zune-jpeg. A frame that
    /// does not decode, or differs in size from frame 0, is an error naming its index.
    pub fn detect_jpegs(&self, jpegs: &[&[u8]]) -> Result<Vec<Vec<Detection>>, MotionError> {
        let mut geo: Option<Geometry> = None;
        let mut stack = Vec::new();
        let mut acc = Vec::new();
        for (index, jpeg) in jpegs.iter().enumerate() {
            let (w, h, rgb) =
                decode_rgb(jpeg).map_err(|reason| MotionError::Decode { index, reason })?;
            let g = match geo {
                None => *geo.insert(Geometry::new(w, h, self.cfg.downscale)?),
                Some(g) if (g.width, g.height) == (w as usize, h as usize) => g,
                Some(g) => {
                    return Err(MotionError::SizeMismatch {
                        index,
                        width: w,
                        height: h,
                        first_width: g.width as u32,
                        first_height: g.height as u32,
                    });
                }
            };
            let plane = g.small_pixels() * 3;
            let start = stack.len();
            stack.resize(start + plane, 0);
            downscale_into(&rgb, &g, &mut acc, &mut stack[start..]);
        }
        match geo {
            Some(g) if jpegs.len() >= MIN_FRAMES => Ok(self.detect_small(&g, &stack)),
            _ => Ok(vec![Vec::new(); jpegs.len()]),
        }
    }

    /// Runs the pipeline on `stack`: the downscaled frames back to back (≥ `MIN_FRAMES`).
    fn detect_small(&self, geo: &Geometry, stack: &[u8]) -> Vec<Vec<Detection>> {
        let pixels = geo.small_pixels();
        let plane = pixels * 3;
        let frames: Vec<&[u8]> = stack.chunks_exact(plane).collect();
        let sampled: Vec<&[u8]> = if frames.len() > MAX_MEDIAN_FRAMES {
            (0..MAX_MEDIAN_FRAMES)
                .map(|i| frames[i * frames.len() / MAX_MEDIAN_FRAMES])
                .collect()
        } else {
            frames.clone()
        };
        let mut background = vec![0u8; plane];
        temporal_median(&sampled, &mut background);

        let mut scratch = Scratch::new(geo);
        let min_area =
            f64::from(self.cfg.min_area_fraction.max(0.0)) * (geo.width * geo.height) as f64;
        frames
            .iter()
            .map(|frame| {
                foreground(
                    frame,
                    &background,
                    self.cfg.threshold,
                    &mut scratch.diff,
                    &mut scratch.mask,
                );
                let r = self.cfg.morphology_radius as usize;
                if r > 0 {
                    scratch.morph(geo, r, false); // opening: erode …
                    scratch.morph(geo, r, true); // … then dilate
                    scratch.morph(geo, r, true); // closing: dilate …
                    scratch.morph(geo, r, false); // … then erode
                }
                let mut found = components(geo, frame, &mut scratch, min_area);
                found.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                found
            })
            .collect()
    }
}

/// Decodes a JPEG to packed RGB8; the error is a human-readable reason.
fn decode_rgb(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(jpeg, options);
    let rgb = decoder.decode().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no image header")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 || rgb.len() != w as usize * h as usize * 3 {
        return Err(format!(
            "decoded {} bytes for a {w}x{h} RGB image",
            rgb.len()
        ));
    }
    Ok((w, h, rgb))
}

/// Box-averages `src` (full-resolution RGB8) into `dst` (working resolution; edge blocks may be
/// partial and are averaged over the pixels they hold). `acc` is a reusable row of column sums:
/// rows are summed first (vectorised), then each block of columns.
fn downscale_into(src: &[u8], geo: &Geometry, acc: &mut Vec<u32>, dst: &mut [u8]) {
    let (row_len, s) = (geo.width * 3, geo.scale);
    acc.clear();
    acc.resize(row_len, 0);
    for (by, out_row) in dst.chunks_exact_mut(geo.small_w * 3).enumerate() {
        acc.fill(0);
        let (y0, y1) = (by * s, ((by + 1) * s).min(geo.height));
        for row in src[y0 * row_len..y1 * row_len].chunks_exact(row_len) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += u32::from(v);
            }
        }
        let rows = (y1 - y0) as u32;
        for (block, out) in acc.chunks(s * 3).zip(out_row.chunks_exact_mut(3)) {
            let n = rows * (block.len() / 3) as u32;
            let mut sums = [0u32; 3];
            for px in block.chunks_exact(3) {
                sums = [sums[0] + px[0], sums[1] + px[1], sums[2] + px[2]];
            }
            for c in 0..3 {
                out[c] = ((sums[c] + n / 2) / n) as u8;
            }
        }
    }
}

/// Per-byte lower median over `frames` (1..=255 equally long planes) into `out`. Builds the answer
/// bit by bit: the k-th smallest value is the largest `v` with fewer than k values below `v`.
/// Branch-free over chunks of pixels, so it vectorises.
fn temporal_median(frames: &[&[u8]], out: &mut [u8]) {
    const CHUNK: usize = 2048;
    let k = frames.len().div_ceil(2);
    let mut counts = [0u8; CHUNK];
    for start in (0..out.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(out.len());
        let result = &mut out[start..end];
        let counts = &mut counts[..end - start];
        result.fill(0);
        for bit in (0..8).rev().map(|b| 1u8 << b) {
            counts.fill(0);
            for frame in frames {
                for ((c, &v), &r) in counts.iter_mut().zip(&frame[start..end]).zip(result.iter()) {
                    *c += u8::from(v < (r | bit));
                }
            }
            for (r, &c) in result.iter_mut().zip(counts.iter()) {
                *r |= bit * u8::from(usize::from(c) < k);
            }
        }
    }
}

/// Per pixel: `diff` = max over channels of |frame − background|, `mask` = diff > threshold.
fn foreground(frame: &[u8], background: &[u8], threshold: u8, diff: &mut [u8], mask: &mut [u8]) {
    let pixels = frame.chunks_exact(3).zip(background.chunks_exact(3));
    for (((f, b), d), m) in pixels.zip(diff.iter_mut()).zip(mask.iter_mut()) {
        let v = f[0]
            .abs_diff(b[0])
            .max(f[1].abs_diff(b[1]))
            .max(f[2].abs_diff(b[2]));
        *d = v;
        *m = u8::from(v > threshold);
    }
}

/// Buffers reused across the frames of a batch (no per-pixel allocation).
struct Scratch {
    diff: Vec<u8>,
    mask: Vec<u8>,
    tmp: Vec<u8>,
    labels: Vec<u32>,
    stack: Vec<u32>,
}

impl Scratch {
    fn new(geo: &Geometry) -> Self {
        let n = geo.small_pixels();
        Self {
            diff: vec![0; n],
            mask: vec![0; n],
            tmp: vec![0; n],
            labels: vec![0; n],
            stack: Vec::new(),
        }
    }

    /// One binary dilation (`dilate`) or erosion of `mask` by a (2r+1)² square, separable, with
    /// windows clipped at the frame border so objects touching the edge are not eaten away.
    /// Each pass ORs (dilate) or ANDs (erode) shifted copies of whole rows or planes: vectorised.
    fn morph(&mut self, geo: &Geometry, r: usize, dilate: bool) {
        let (w, h) = (geo.small_w, geo.small_h);
        let identity = u8::from(!dilate);
        let combine = |d: &mut [u8], s: &[u8]| {
            if dilate {
                d.iter_mut().zip(s).for_each(|(d, &s)| *d |= s);
            } else {
                d.iter_mut().zip(s).for_each(|(d, &s)| *d &= s);
            }
        };
        // Horizontal pass: mask → tmp, shifting within each row.
        self.tmp.fill(identity);
        for (src, dst) in self.mask.chunks_exact(w).zip(self.tmp.chunks_exact_mut(w)) {
            for k in 0..=r.min(w - 1) {
                combine(&mut dst[..w - k], &src[k..]);
                combine(&mut dst[k..], &src[..w - k]);
            }
        }
        // Vertical pass: tmp → mask, shifting whole rows.
        self.mask.fill(identity);
        for k in 0..=r.min(h - 1) {
            let n = (h - k) * w;
            combine(&mut self.mask[..n], &self.tmp[k * w..]);
            combine(&mut self.mask[k * w..], &self.tmp[..n]);
        }
    }
}

/// Evidence gathered over one connected component.
#[derive(Default)]
struct Blob {
    count: u64,
    min_x: usize,
    min_y: usize,
    max_x: usize,
    max_y: usize,
    diff_sum: u64,
    rgb_sum: [u64; 3],
    interior: u64,
    interior_rgb_sum: [u64; 3],
}

/// Labels 8-connected components of `scratch.mask` with an explicit stack and turns every one of
/// at least `min_area` full-resolution pixels into a detection.
fn components(
    geo: &Geometry,
    frame: &[u8],
    scratch: &mut Scratch,
    min_area: f64,
) -> Vec<Detection> {
    let (w, h) = (geo.small_w, geo.small_h);
    let Scratch {
        diff,
        mask,
        labels,
        stack,
        ..
    } = scratch;
    labels.fill(0);
    let mut next = 0u32;
    let mut found = Vec::new();
    for seed in 0..w * h {
        if mask[seed] == 0 || labels[seed] != 0 {
            continue;
        }
        next += 1;
        labels[seed] = next;
        stack.clear();
        stack.push(seed as u32);
        let mut blob = Blob {
            min_x: w,
            min_y: h,
            ..Blob::default()
        };
        while let Some(p) = stack.pop() {
            let p = p as usize;
            let (x, y) = (p % w, p / w);
            blob.count += 1;
            blob.min_x = blob.min_x.min(x);
            blob.max_x = blob.max_x.max(x);
            blob.min_y = blob.min_y.min(y);
            blob.max_y = blob.max_y.max(y);
            blob.diff_sum += u64::from(diff[p]);
            let px = &frame[p * 3..p * 3 + 3];
            let mut inside = true;
            for (dx, dy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (nx, ny) = (x as isize + dx, y as isize + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                if mask[q] == 0 {
                    inside &= dx != 0 && dy != 0; // only 4-neighbours decide "interior"
                } else if labels[q] == 0 {
                    labels[q] = next;
                    stack.push(q as u32);
                }
            }
            for (c, &v) in px.iter().enumerate() {
                blob.rgb_sum[c] += u64::from(v);
                blob.interior_rgb_sum[c] += u64::from(v) * u64::from(inside);
            }
            blob.interior += u64::from(inside);
        }
        if blob.count as f64 * (geo.scale as f64).powi(2) >= min_area {
            found.push(to_detection(geo, &blob));
        }
    }
    found
}

/// Scales a component back to full resolution and scores it.
///
/// Confidence = `0.6 · min(1, mean_diff / 128) + 0.4 · fill`, clamped to `0.05..=0.99`, where
/// `mean_diff` is the mean max-channel difference from the background over the component and
/// `fill` is its pixel count over its bounding-box area (1 for a rectangle, ≈0.79 for a disc).
fn to_detection(geo: &Geometry, blob: &Blob) -> Detection {
    let s = geo.scale;
    let bbox = [
        (blob.min_x * s).min(geo.width) as f32,
        (blob.min_y * s).min(geo.height) as f32,
        ((blob.max_x + 1) * s).min(geo.width) as f32,
        ((blob.max_y + 1) * s).min(geo.height) as f32,
    ];
    let count = blob.count as f32;
    let mean_diff = blob.diff_sum as f32 / count;
    let box_area = ((blob.max_x - blob.min_x + 1) * (blob.max_y - blob.min_y + 1)) as f32;
    let fill = count / box_area;
    let confidence = (0.6 * (mean_diff / 128.0).min(1.0) + 0.4 * fill).clamp(0.05, 0.99);
    let (sum, n) = if blob.interior > 0 {
        (blob.interior_rgb_sum, blob.interior)
    } else {
        (blob.rgb_sum, blob.count)
    };
    let mean = sum.map(|v| v as f32 / n as f32);
    Detection {
        label: colour_name(mean).to_string(),
        confidence,
        bbox,
    }
}

/// Nearest palette name to `rgb` if closer than `LABEL_MAX_DISTANCE`, else [`UNKNOWN_LABEL`].
fn colour_name(rgb: [f32; 3]) -> &'static str {
    let dist2 = |p: &[u8; 3]| {
        (0..3)
            .map(|c| (rgb[c] - f32::from(p[c])).powi(2))
            .sum::<f32>()
    };
    PALETTE
        .iter()
        .map(|(name, p)| (*name, dist2(p)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, d)| *d < LABEL_MAX_DISTANCE * LABEL_MAX_DISTANCE)
        .map_or(UNKNOWN_LABEL, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::time::Instant;

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

    /// Timing of `detect_rgb` on 25 frames of 640×480 (run with --release --nocapture to read it).
    #[test]
    fn timing_25_frames_640x480() {
        let (w, h) = (640, 480);
        let (frames, _) = scene(w, h, 25, &three_objects(w, h), 3);
        let det = MotionDetector::new(MotionConfig::default());
        let start = Instant::now();
        let dets = det.detect_rgb(w as u32, h as u32, &refs(&frames)).unwrap();
        let took = start.elapsed();
        println!("detect_rgb 25x640x480: {took:?}");
        assert_eq!(dets.len(), 25);
        assert!(took.as_secs_f32() < 5.0);
    }
}
