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
use crate::media::jpeg::Codec;
use crate::media::planes::{DECODED, Planes, ycbcr_of};

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
    codec: Codec,
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

/// A batch's frames downscaled to the working resolution as they arrive (one decoded frame at
/// a time need exist), with the geometry of frame 0 that every later frame must match.
#[derive(Default)]
struct Downscaled {
    geo: Option<Geometry>,
    stack: Vec<u8>,
}

impl Downscaled {
    fn push(
        &mut self,
        detector: &MotionDetector,
        index: usize,
        planes: &Planes,
        frames: usize,
    ) -> Result<(), MotionError> {
        let (w, h) = (planes.width, planes.height);
        let g = match self.geo {
            None => {
                let g = Geometry::new(w, h, detector.cfg.downscale)?;
                self.stack.reserve_exact(g.small_pixels() * 3 * frames);
                *self.geo.insert(g)
            }
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
        let start = self.stack.len();
        self.stack.resize(start + g.small_pixels() * 3, 0);
        downscale_planes(planes, &g, &mut self.stack[start..]);
        Ok(())
    }
}

impl MotionDetector {
    /// A detector decoding JPEGs with the default codec.
    pub fn new(cfg: MotionConfig) -> Self {
        Self {
            cfg,
            codec: Codec::default(),
        }
    }

    /// The same detector, decoding JPEGs with `codec`.
    pub fn with_codec(self, codec: Codec) -> Self {
        Self { codec, ..self }
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
        let n = geo.small_pixels();
        let mut stack = vec![0u8; 3 * n * frames.len()];
        let (mut acc, mut small) = (Vec::new(), vec![0u8; 3 * n]);
        for (frame, out) in frames.iter().zip(stack.chunks_exact_mut(3 * n)) {
            downscale_into(frame, &geo, &mut acc, &mut small);
            let (y, chroma) = out.split_at_mut(n);
            let (cb, cr) = chroma.split_at_mut(n);
            for (i, px) in small.chunks_exact(3).enumerate() {
                [y[i], cb[i], cr[i]] = ycbcr_of([px[0], px[1], px[2]]);
            }
        }
        Ok(self.detect_small(&geo, &stack))
    }

    /// Same as [`Self::detect_rgb`], from JPEG bytes decoded (to YCbCr planes) with the
    /// detector's codec. A frame that does not decode, or differs in size from frame 0, is an
    /// error naming its index.
    pub fn detect_jpegs(&self, jpegs: &[&[u8]]) -> Result<Vec<Vec<Detection>>, MotionError> {
        self.decode_and_detect(jpegs, None)
    }

    /// [`Self::detect_jpegs`] that also returns the decoded frames (YCbCr 4:2:0 planes), for a
    /// later stage that needs them (the annotator) and would otherwise decode them again.
    pub fn detect_jpegs_keeping(
        &self,
        jpegs: &[&[u8]],
    ) -> Result<(Vec<Vec<Detection>>, Vec<Planes>), MotionError> {
        let mut kept = Vec::with_capacity(jpegs.len());
        let dets = self.decode_and_detect(jpegs, Some(&mut kept))?;
        Ok((dets, kept))
    }

    /// Same as [`Self::detect_jpegs`], on frames already decoded to YCbCr 4:2:0 planes (all of
    /// one size: a frame that differs from frame 0 is an error naming its index).
    pub fn detect_planes(&self, frames: &[Planes]) -> Result<Vec<Vec<Detection>>, MotionError> {
        let mut small = Downscaled::default();
        for (index, planes) in frames.iter().enumerate() {
            small.push(self, index, planes, frames.len())?;
        }
        Ok(self.finish(small, frames.len()))
    }

    fn decode_and_detect(
        &self,
        jpegs: &[&[u8]],
        mut keep: Option<&mut Vec<Planes>>,
    ) -> Result<Vec<Vec<Detection>>, MotionError> {
        let mut small = Downscaled::default();
        for (index, jpeg) in jpegs.iter().enumerate() {
            let planes = self
                .codec
                .decode_planes(jpeg)
                .map_err(|e| MotionError::Decode {
                    index,
                    reason: e.to_string(),
                })?;
            small.push(self, index, &planes, jpegs.len())?;
            match keep.as_deref_mut() {
                Some(kept) => kept.push(planes),
                None => DECODED.give(planes),
            }
        }
        Ok(self.finish(small, jpegs.len()))
    }

    fn finish(&self, small: Downscaled, frames: usize) -> Vec<Vec<Detection>> {
        match small.geo {
            Some(g) if frames >= MIN_FRAMES => self.detect_small(&g, &small.stack),
            _ => vec![Vec::new(); frames],
        }
    }

    /// Runs the pipeline on `stack`: the downscaled frames back to back (≥ `MIN_FRAMES`), each
    /// as three planes of the working resolution: Y, Cb, Cr (JFIF full range).
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

/// Box-averages `src` (full-resolution RGB8) into `dst` (working resolution; edge blocks may be
/// partial and are averaged over the pixels they hold). `acc` is a reusable row of column sums:
/// rows are summed first (vectorised), then each block of columns.
fn downscale_into(src: &[u8], geo: &Geometry, acc: &mut Vec<u32>, dst: &mut [u8]) {
    let (row_len, s) = (geo.width * 3, geo.scale);
    if s == 2 && geo.width.is_multiple_of(2) && geo.height.is_multiple_of(2) {
        return halve_rgb(src, row_len, acc, dst);
    }
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

/// Downscales YCbCr 4:2:0 planes to the working resolution, as the detector's three planes Y,
/// Cb, Cr in `dst`: each block's mean luma and the mean of the chroma samples covering it. At
/// scale 2 with even sizes a block is four luma samples and exactly one chroma sample (the fast
/// path: a 2×2 mean of luma, chroma rows copied).
fn downscale_planes(p: &Planes, geo: &Geometry, dst: &mut [u8]) {
    let (w, s, n) = (geo.width, geo.scale, geo.small_pixels());
    let (cw, ch) = (w.div_ceil(2), geo.height.div_ceil(2));
    let (y_out, chroma) = dst.split_at_mut(n);
    let (cb_out, cr_out) = chroma.split_at_mut(n);
    if s == 2 && w.is_multiple_of(2) && geo.height.is_multiple_of(2) {
        crate::media::resize::halve(&p.y, w, w, y_out, crate::media::resize::IDENTITY);
        cb_out.copy_from_slice(&p.cb[..n]);
        cr_out.copy_from_slice(&p.cr[..n]);
        return;
    }
    let mean = |plane: &[u8], stride: usize, xs: (usize, usize), ys: (usize, usize)| {
        let (mut sum, mut count) = (0u32, 0u32);
        for y in ys.0..ys.1 {
            for x in xs.0..xs.1 {
                sum += u32::from(plane[y * stride + x]);
                count += 1;
            }
        }
        ((sum + count / 2) / count.max(1)) as u8
    };
    for by in 0..geo.small_h {
        let (y0, y1) = (by * s, ((by + 1) * s).min(geo.height));
        for bx in 0..geo.small_w {
            let (x0, x1) = (bx * s, ((bx + 1) * s).min(w));
            let i = by * geo.small_w + bx;
            y_out[i] = mean(&p.y, w, (x0, x1), (y0, y1));
            let cx = (x0 / 2, x1.div_ceil(2).min(cw));
            let cy = (y0 / 2, y1.div_ceil(2).min(ch));
            cb_out[i] = mean(&p.cb, cw, cx, cy);
            cr_out[i] = mean(&p.cr, cw, cx, cy);
        }
    }
}

/// The common case of [`downscale_into`] (scale 2, even sizes): each output pixel is the rounded
/// mean of a 2×2 block. Rows are summed pairwise into `acc` first (vectorised), then adjacent
/// pixels of that sum.
fn halve_rgb(src: &[u8], row_len: usize, acc: &mut Vec<u32>, dst: &mut [u8]) {
    acc.clear();
    acc.resize(row_len, 0);
    let out_len = row_len / 2;
    for (pair, out_row) in src
        .chunks_exact(2 * row_len)
        .zip(dst.chunks_exact_mut(out_len))
    {
        let (top, bottom) = pair.split_at(row_len);
        for ((a, &t), &b) in acc.iter_mut().zip(top).zip(bottom) {
            *a = u32::from(t) + u32::from(b);
        }
        for (out, block) in out_row.chunks_exact_mut(3).zip(acc.chunks_exact(6)) {
            for c in 0..3 {
                out[c] = ((block[c] + block[c + 3] + 2) >> 2) as u8;
            }
        }
    }
}

crate::simd::avx2_when_available! {
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
}

crate::simd::avx2_when_available! {
/// Per pixel: `diff` = the largest RGB channel difference between frame and background (from the
/// Y, Cb, Cr differences, JFIF's inverse transform being linear), `mask` = diff > threshold. Both
/// are three planes (Y, Cb, Cr) of `diff.len()` pixels.
fn foreground(frame: &[u8], background: &[u8], threshold: u8, diff: &mut [u8], mask: &mut [u8]) {
    let n = diff.len();
    let ((fy, fb, fr), (by, bb, br)) = (split3(frame, n), split3(background, n));
    let mask = &mut mask[..n];
    let pixels = fy.iter().zip(fb).zip(fr).zip(by.iter().zip(bb).zip(br));
    for ((((&fy, &fb), &fr), ((&by, &bb), &br)), (d, m)) in pixels.zip(diff.iter_mut().zip(mask)) {
        let dy = i32::from(fy) - i32::from(by);
        let db = i32::from(fb) - i32::from(bb);
        let dr = i32::from(fr) - i32::from(br);
        let half = 1 << 15;
        let red = dy + ((91881 * dr + half) >> 16);
        let green = dy - ((22554 * db + 46802 * dr + half) >> 16);
        let blue = dy + ((116130 * db + half) >> 16);
        let v = red.abs().max(green.abs()).max(blue.abs()).min(255) as u8;
        *d = v;
        *m = u8::from(v > threshold);
    }
}
}

/// The three planes of `n` pixels each in a detector frame: Y, Cb, Cr.
fn split3(frame: &[u8], n: usize) -> (&[u8], &[u8], &[u8]) {
    let (y, c) = frame.split_at(n);
    let (cb, cr) = c.split_at(n);
    (y, cb, &cr[..n])
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

    /// One binary dilation (`dilate`) or erosion of `mask` by a (2r+1)² square (see [`morph`]).
    fn morph(&mut self, geo: &Geometry, r: usize, dilate: bool) {
        morph(
            &mut self.mask,
            &mut self.tmp,
            geo.small_w,
            geo.small_h,
            r,
            dilate,
        );
    }
}

crate::simd::avx2_when_available! {
/// One binary dilation (`dilate`) or erosion of the `w`×`h` `mask` by a (2r+1)² square,
/// separable (`tmp` holds the horizontal pass), with windows clipped at the frame border so
/// objects touching the edge are not eaten away. Each pass ORs (dilate) or ANDs (erode) shifted
/// copies of whole rows or planes: vectorised.
fn morph(mask: &mut [u8], tmp: &mut [u8], w: usize, h: usize, r: usize, dilate: bool) {
    let identity = u8::from(!dilate);
    let combine = |d: &mut [u8], s: &[u8]| {
        if dilate {
            d.iter_mut().zip(s).for_each(|(d, &s)| *d |= s);
        } else {
            d.iter_mut().zip(s).for_each(|(d, &s)| *d &= s);
        }
    };
    // Horizontal pass: mask → tmp, shifting within each row.
    tmp.fill(identity);
    for (src, dst) in mask.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
        for k in 0..=r.min(w - 1) {
            combine(&mut dst[..w - k], &src[k..]);
            combine(&mut dst[k..], &src[..w - k]);
        }
    }
    // Vertical pass: tmp → mask, shifting whole rows.
    mask.fill(identity);
    for k in 0..=r.min(h - 1) {
        let n = (h - k) * w;
        combine(&mut mask[..n], &tmp[k * w..]);
        combine(&mut mask[k * w..], &tmp[..n]);
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
    /// Sums of Y, Cb, Cr over the component (and over its interior).
    ycc_sum: [u64; 3],
    interior: u64,
    interior_ycc_sum: [u64; 3],
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
    let n = w * h;
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
            let px = [frame[p], frame[n + p], frame[2 * n + p]];
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
                blob.ycc_sum[c] += u64::from(v);
                blob.interior_ycc_sum[c] += u64::from(v) * u64::from(inside);
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
        (blob.interior_ycc_sum, blob.interior)
    } else {
        (blob.ycc_sum, blob.count)
    };
    let [y, cb, cr] = sum.map(|v| v as f32 / n as f32);
    // JFIF YCbCr → RGB of the mean colour (the transform is linear, so this is the mean RGB).
    let mean = [
        y + 1.402 * (cr - 128.0),
        y - 0.344_136 * (cb - 128.0) - 0.714_136 * (cr - 128.0),
        y + 1.772 * (cb - 128.0),
    ];
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
