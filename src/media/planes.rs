//! Decoded JPEG frames as the process side keeps them: JFIF (full-range BT.601) YCbCr 4:2:0
//! planes, the JPEG's own representation. The detector reads them, the annotator draws on them
//! and the codec encodes them again, so no frame goes through RGB on the process side: decoding
//! skips chroma upsampling and colour conversion, encoding skips the reverse, and a frame takes
//! half the memory of RGB (1.5 bytes per pixel). Conversions to and from RGB are here for the
//! rare paths (JPEGs that are not 4:2:0, the built-in codec's decoder, tests).

use std::sync::{Mutex, PoisonError};

/// Y at full size, Cb and Cr at `ceil(w/2) x ceil(h/2)`, tightly packed, JFIF full range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planes {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub cb: Vec<u8>,
    pub cr: Vec<u8>,
}

/// Decoded frames' buffers kept for reuse. The process side decodes each batch (25 frames,
/// 345 KB each at 640×360) and frees the frames once they are annotated; allocated afresh, every
/// frame cost page faults and zeroing (glibc returns the freed batch to the kernel before the next
/// one). At most `max_bytes` are kept; the oldest buffer goes first when a new one needs room.
pub struct PlanesPool {
    free: Mutex<Vec<Planes>>,
    max_bytes: usize,
}

impl PlanesPool {
    pub const fn new(max_bytes: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Planes>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Planes of `width`×`height` for a caller that overwrites every byte: a kept buffer of
    /// that size (holding an earlier frame), or new grey planes.
    pub fn take(&self, width: u32, height: u32) -> Planes {
        let kept = {
            let mut free = self.free();
            free.iter()
                .rposition(|p| (p.width, p.height) == (width, height))
                .map(|i| free.swap_remove(i))
        };
        kept.unwrap_or_else(|| Planes::grey(width, height, 0))
    }

    /// Keeps `planes` for a later [`Self::take`] (dropped if inconsistent or too large).
    pub fn give(&self, planes: Planes) {
        let size = planes.bytes();
        if !planes.is_consistent() || size > self.max_bytes {
            return;
        }
        let mut free = self.free();
        let mut kept: usize = free.iter().map(Planes::bytes).sum();
        while kept + size > self.max_bytes && !free.is_empty() {
            kept -= free.remove(0).bytes();
        }
        free.push(planes);
    }

    /// Buffers and bytes kept now.
    pub fn kept(&self) -> (usize, usize) {
        let free = self.free();
        (free.len(), free.iter().map(Planes::bytes).sum())
    }
}

/// The process side's pool: room for both inference workers' batches at 640×360.
pub static DECODED: PlanesPool = PlanesPool::new(24 << 20);

/// JFIF's RGB → YCbCr, fixed point (16 fractional bits), rounded.
fn ycbcr(r: i32, g: i32, b: i32) -> [u8; 3] {
    let y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16;
    let cb = ((-11056 * r - 21712 * g + 32768 * b + 32768) >> 16) + 128;
    let cr = ((32768 * r - 27440 * g - 5328 * b + 32768) >> 16) + 128;
    [y, cb, cr].map(|v| v.clamp(0, 255) as u8)
}

/// JFIF's YCbCr → RGB, fixed point (16 fractional bits), rounded and clamped.
#[inline(always)]
pub fn rgb_of(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (i32::from(y) << 16, i32::from(cb) - 128, i32::from(cr) - 128);
    let half = 1 << 15;
    let r = (y + 91881 * cr + half) >> 16;
    let g = (y - 22554 * cb - 46802 * cr + half) >> 16;
    let b = (y + 116130 * cb + half) >> 16;
    [r, g, b].map(|v| v.clamp(0, 255) as u8)
}

/// The YCbCr of an RGB colour (drawing colours).
pub fn ycbcr_of(rgb: [u8; 3]) -> [u8; 3] {
    ycbcr(i32::from(rgb[0]), i32::from(rgb[1]), i32::from(rgb[2]))
}

impl Planes {
    /// Chroma plane width and height.
    pub fn chroma_size(&self) -> (usize, usize) {
        (
            (self.width as usize).div_ceil(2),
            (self.height as usize).div_ceil(2),
        )
    }

    /// Grey planes of the given size (mid-grey, neutral chroma).
    pub fn grey(width: u32, height: u32, luma: u8) -> Self {
        let (w, h) = (width as usize, height as usize);
        let c = w.div_ceil(2) * h.div_ceil(2);
        Self {
            width,
            height,
            y: vec![luma; w * h],
            cb: vec![128; c],
            cr: vec![128; c],
        }
    }

    /// Bytes held by the three planes.
    pub fn bytes(&self) -> usize {
        self.y.len() + self.cb.len() + self.cr.len()
    }

    /// True when the planes have the lengths the size requires.
    pub fn is_consistent(&self) -> bool {
        let (cw, ch) = self.chroma_size();
        self.y.len() == self.width as usize * self.height as usize
            && self.cb.len() == cw * ch
            && self.cr.len() == cw * ch
    }

    /// From packed RGB8 (`width * height * 3` bytes, checked by the caller): luma per pixel,
    /// chroma from the mean colour of each 2×2 block (partial blocks at odd edges).
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Self {
        Self::from_pixels(width, height, rgb, |[r, g, b]| ycbcr(r, g, b))
    }

    /// From interleaved full-resolution YCbCr (3 bytes per pixel): chroma averaged per 2×2.
    /// Even sizes (every frame framewire makes) take a row-pair pass; odd ones the general one.
    pub fn from_ycbcr444(width: u32, height: u32, ycc: &[u8]) -> Self {
        let (w, h) = (width as usize, height as usize);
        if w % 2 == 1 || h % 2 == 1 {
            return Self::from_pixels(width, height, ycc, |p| p.map(|v| v as u8));
        }
        let mut out = Self::grey(width, height, 0);
        for (o, px) in out.y.iter_mut().zip(ycc.chunks_exact(3)) {
            *o = px[0];
        }
        let cw = w / 2;
        for (cy, pair) in ycc.chunks_exact(6 * w).enumerate() {
            let (top, bottom) = pair.split_at(3 * w);
            let row = cy * cw..(cy + 1) * cw;
            let (cb, cr) = (&mut out.cb[row.clone()], &mut out.cr[row]);
            for (((t, b), ob), or) in top
                .chunks_exact(6)
                .zip(bottom.chunks_exact(6))
                .zip(cb.iter_mut())
                .zip(cr.iter_mut())
            {
                let mean = |k: usize| {
                    let sum = u16::from(t[k])
                        + u16::from(t[k + 3])
                        + u16::from(b[k])
                        + u16::from(b[k + 3]);
                    ((sum + 2) >> 2) as u8
                };
                (*ob, *or) = (mean(1), mean(2));
            }
        }
        out
    }

    /// From three bytes per pixel, turned into Y, Cb, Cr by `convert` (linear, so converting a
    /// block's mean gives its mean chroma): luma per pixel, chroma per 2×2 block.
    fn from_pixels(
        width: u32,
        height: u32,
        px: &[u8],
        convert: impl Fn([i32; 3]) -> [u8; 3],
    ) -> Self {
        let (w, h) = (width as usize, height as usize);
        let at = |x: usize, y: usize| {
            let p = &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
            [p[0], p[1], p[2]].map(i32::from)
        };
        let mut out = Self::grey(width, height, 0);
        for (i, o) in out.y.iter_mut().enumerate() {
            *o = convert(at(i % w, i / w))[0];
        }
        let cw = w.div_ceil(2);
        for cy in 0..h.div_ceil(2) {
            for cx in 0..cw {
                let (mut sum, mut n) = ([0i32; 3], 0);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        let p = at(x, y);
                        (0..3).for_each(|k| sum[k] += p[k]);
                        n += 1;
                    }
                }
                let [_, cb, cr] = convert(sum.map(|s| (s + n / 2) / n));
                out.cb[cy * cw + cx] = cb;
                out.cr[cy * cw + cx] = cr;
            }
        }
        out
    }

    /// Packed RGB8, chroma repeated over its 2×2 block (tests, and callers that need RGB).
    pub fn to_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = w.div_ceil(2);
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let c = (y / 2) * cw + x / 2;
                out.extend_from_slice(&rgb_of(self.y[y * w + x], self.cb[c], self.cr[c]));
            }
        }
        out
    }

    /// The RGB of pixel `(x, y)` (tests and checks).
    pub fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        let w = self.width as usize;
        let c = (y / 2) * w.div_ceil(2) + x / 2;
        rgb_of(self.y[y * w + x], self.cb[c], self.cr[c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A given buffer comes back for the same size (not for another), the pool keeps at most its
    /// byte budget by dropping the oldest, and inconsistent planes are not kept.
    #[test]
    fn pool_reuses_by_size_within_its_budget() {
        let one = Planes::grey(8, 4, 0).bytes();
        assert_eq!(one, 32 + 8 + 8);
        let pool = PlanesPool::new(2 * one);
        let a = Planes::grey(8, 4, 7);
        let a_ptr = a.y.as_ptr();
        pool.give(a);
        assert_eq!(pool.kept(), (1, one));
        let other = pool.take(6, 4);
        assert_eq!(
            other,
            Planes::grey(6, 4, 0),
            "a new buffer for another size"
        );
        let again = pool.take(8, 4);
        assert_eq!(
            (again.y.as_ptr(), again.y[0]),
            (a_ptr, 7),
            "the same buffer back"
        );
        assert_eq!(pool.kept(), (0, 0));
        for luma in [1, 2, 3] {
            pool.give(Planes::grey(8, 4, luma));
        }
        assert_eq!(pool.kept(), (2, 2 * one));
        let lumas = [pool.take(8, 4).y[0], pool.take(8, 4).y[0]];
        assert_eq!(lumas, [3, 2], "the oldest (1) was dropped for the newest");
        let mut broken = Planes::grey(8, 4, 0);
        broken.cb.pop();
        pool.give(broken);
        pool.give(Planes::grey(16, 16, 0));
        assert_eq!(pool.kept(), (0, 0), "inconsistent or over budget: not kept");
    }

    /// The two conversions invert each other within rounding over the whole RGB cube (sampled).
    #[test]
    fn conversions_round_trip() {
        for r in (0..=255).step_by(15) {
            for g in (0..=255).step_by(15) {
                for b in (0..=255).step_by(15) {
                    let [y, cb, cr] = ycbcr_of([r as u8, g as u8, b as u8]);
                    let back = rgb_of(y, cb, cr);
                    for (c, o) in back.iter().zip([r, g, b]) {
                        assert!(c.abs_diff(o as u8) <= 2, "{r},{g},{b} → {back:?}");
                    }
                }
            }
        }
        assert_eq!(ycbcr_of([128, 128, 128]), [128, 128, 128]);
        assert_eq!(ycbcr_of([255, 255, 255]), [255, 128, 128]);
    }

    /// RGB → planes keeps per-pixel luma and per-block mean chroma, also at odd sizes.
    #[test]
    fn from_rgb_subsamples_by_block_means() {
        // 5×3: columns 0–1 red, 2–3 blue, 4 red; the last row and column are partial blocks.
        let (w, h) = (5usize, 3usize);
        let colour = |x: usize| {
            if (2..4).contains(&x) {
                [40, 60, 220]
            } else {
                [200, 40, 40]
            }
        };
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| colour(i % w)).collect();
        let p = Planes::from_rgb(w as u32, h as u32, &rgb);
        assert!(p.is_consistent());
        assert_eq!((p.cb.len(), p.cr.len()), (6, 6));
        for y in 0..h {
            for x in 0..w {
                let (got, want) = (p.rgb_at(x, y), colour(x));
                assert!(
                    got.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 2),
                    "({x},{y}) {got:?}"
                );
            }
        }
        // A block mixing both colours gets their mean chroma.
        let mixed: Vec<u8> = (0..4).flat_map(|i| colour(i + 1)).collect();
        let m = Planes::from_rgb(2, 2, &mixed);
        let mean = ycbcr_of([120, 50, 130]);
        assert!(
            m.cb[0].abs_diff(mean[1]) <= 1 && m.cr[0].abs_diff(mean[2]) <= 1,
            "{m:?}"
        );
        let ycc: Vec<u8> = (0..w * h).flat_map(|_| [90u8, 100, 150]).collect();
        let q = Planes::from_ycbcr444(w as u32, h as u32, &ycc);
        assert!(q.y.iter().all(|&v| v == 90) && q.cb.iter().all(|&v| v == 100));
        assert!(q.cr.iter().all(|&v| v == 150));
        assert_eq!(q.to_rgb().len(), w * h * 3);
        // The even-size fast path equals the general block means.
        let ycc: Vec<u8> = (0..8 * 6 * 3).map(|i| (i * 37 % 251) as u8).collect();
        assert_eq!(
            Planes::from_ycbcr444(8, 6, &ycc),
            Planes::from_pixels(8, 6, &ycc, |p| p.map(|v| v as u8))
        );
    }
}
