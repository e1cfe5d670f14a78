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

use super::Detection;
use crate::media::jpeg::RgbImage;

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

/// Every label the detector can give, in a fixed order (class index = position): the palette's
/// names, then [`UNKNOWN_LABEL`].
pub fn labels() -> Vec<&'static str> {
    PALETTE
        .iter()
        .map(|(name, _)| *name)
        .chain([UNKNOWN_LABEL])
        .collect()
}
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
        self.decode_and_detect(jpegs, None)
    }

    /// [`Self::detect_jpegs`] that also returns the decoded frames, for a later stage that needs
    /// them (the annotator) and would otherwise decode them again.
    pub fn detect_jpegs_keeping(
        &self,
        jpegs: &[&[u8]],
    ) -> Result<(Vec<Vec<Detection>>, Vec<RgbImage>), MotionError> {
        let mut kept = Vec::with_capacity(jpegs.len());
        let dets = self.decode_and_detect(jpegs, Some(&mut kept))?;
        Ok((dets, kept))
    }

    fn decode_and_detect(
        &self,
        jpegs: &[&[u8]],
        mut keep: Option<&mut Vec<RgbImage>>,
    ) -> Result<Vec<Vec<Detection>>, MotionError> {
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
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(RgbImage {
                    width: w,
                    height: h,
                    data: rgb,
                });
            }
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

/// Decodes a JPEG to packed RGB8 (`media::jpeg`); the error is a human-readable reason.
fn decode_rgb(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    crate::media::jpeg::decode_rgb(jpeg).map_err(|e| e.to_string())
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
mod tests;
