//! The camera side's exact 2:1 downscale of decoded planes (e.g. 720p → 640×360), fused with the
//! expansion from H.264's video range to JPEG's full range: one pass over each plane, the
//! hottest loop of ingest after the H.264 decoder itself. The detector halves its luma with it
//! too ([`IDENTITY`] map).
//!
//! [`halve`] averages each 2×2 block and maps the average with [`RangeMap`]; on x86_64 CPUs with
//! AVX2 (checked at run time) 64 source bytes per row pair are done per step with `vpmaddubsw`
//! (pair sums) and `vpmulhrsw` (the range map), otherwise by the same arithmetic in plain Rust.
//! Both give identical bytes (tested). Called by `media::jpeg::FrameEncoder` and the detector.

/// Video range → full range as `clamp(mulhrs((v - offset) << 2, k) + centre)`, where
/// `mulhrs(a, b) = (a·b + 2^14) >> 15` (the `vpmulhrsw` instruction): the same values as the
/// rounded division `(v - offset) · 255 / span + centre` for every input (tested), in 16-bit lanes.
#[derive(Clone, Copy, Debug)]
pub struct RangeMap {
    offset: i16,
    k: i16,
    centre: i16,
}

/// Luma 16..235 → 0..255.
pub const LUMA: RangeMap = RangeMap {
    offset: 16,
    k: 9539,
    centre: 0,
};

/// Chroma 16..240 (centred on 128) → 0..255.
pub const CHROMA: RangeMap = RangeMap {
    offset: 128,
    k: 9326,
    centre: 128,
};

/// No range change (`mulhrs(v << 2, 8192) = v`): [`halve`] is then the plain 2×2 mean, as the
/// detector uses it on full-range luma.
pub const IDENTITY: RangeMap = RangeMap {
    offset: 0,
    k: 8192,
    centre: 0,
};

impl RangeMap {
    #[inline(always)]
    pub fn apply(self, v: u8) -> u8 {
        let a = (i32::from(v) - i32::from(self.offset)) << 2;
        let m = (a * i32::from(self.k) + (1 << 14)) >> 15;
        (m + i32::from(self.centre)).clamp(0, 255) as u8
    }
}

/// Halves a plane of width `w` (even; rows `stride` bytes apart; `out.len() / (w / 2)` output
/// rows, two source rows each) by averaging each 2×2 block (rounded) and mapping it with `map`.
pub fn halve(src: &[u8], w: usize, stride: usize, out: &mut [u8], map: RangeMap) {
    let ow = w / 2;
    for (row, line) in out.chunks_exact_mut(ow).enumerate() {
        let top = &src[2 * row * stride..2 * row * stride + w];
        let bottom = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + w];
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            done = unsafe { avx2::halve_row(top, bottom, line, map) };
        }
        for ((o, t), b) in line[done..]
            .iter_mut()
            .zip(top[2 * done..].chunks_exact(2))
            .zip(bottom[2 * done..].chunks_exact(2))
        {
            let sum = u16::from(t[0]) + u16::from(t[1]) + u16::from(b[0]) + u16::from(b[1]);
            *o = map.apply(((sum + 2) >> 2) as u8);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::RangeMap;
    use std::arch::x86_64::*;

    /// 32 source bytes of each row (`t`, `b`) → 16 mapped 2×2 means in i16 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn half(t: __m256i, b: __m256i, map: RangeMap) -> __m256i {
        let ones = _mm256_set1_epi8(1);
        let sum = _mm256_add_epi16(_mm256_maddubs_epi16(t, ones), _mm256_maddubs_epi16(b, ones));
        let avg = _mm256_srli_epi16::<2>(_mm256_add_epi16(sum, _mm256_set1_epi16(2)));
        let a = _mm256_slli_epi16::<2>(_mm256_sub_epi16(avg, _mm256_set1_epi16(map.offset)));
        let m = _mm256_mulhrs_epi16(a, _mm256_set1_epi16(map.k));
        _mm256_add_epi16(m, _mm256_set1_epi16(map.centre))
    }

    /// 32 bytes of `row` from `at` (the caller keeps `at + 32 <= row.len()`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(row: &[u8], at: usize) -> __m256i {
        let bytes = &row[at..at + 32];
        // SAFETY: `bytes` is 32 readable bytes; the load is unaligned.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast::<__m256i>()) }
    }

    /// Halves the row pair `top`/`bottom` into `out` in steps of 32 outputs; returns how many
    /// outputs it wrote (the rest is left to the caller).
    #[target_feature(enable = "avx2")]
    pub fn halve_row(top: &[u8], bottom: &[u8], out: &mut [u8], map: RangeMap) -> usize {
        let steps = out.len().min(top.len() / 2).min(bottom.len() / 2) / 32;
        for i in 0..steps {
            let (s, o) = (64 * i, 32 * i);
            let lo = half(load(top, s), load(bottom, s), map);
            let hi = half(load(top, s + 32), load(bottom, s + 32), map);
            // packus works within 128-bit lanes: restore the order afterwards.
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(lo, hi));
            let dst = &mut out[o..o + 32];
            // SAFETY: `dst` is 32 writable bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast::<__m256i>(), packed) };
        }
        32 * steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(v - offset) · 255 / span + centre`, rounded half away from zero, clamped: the reference.
    fn reference(v: u8, offset: i32, span: i32, centre: i32) -> u8 {
        let x = (i32::from(v) - offset) * 255 * 2;
        let scaled = if x >= 0 {
            (x + span) / (2 * span)
        } else {
            (x - span) / (2 * span)
        };
        (scaled + centre).clamp(0, 255) as u8
    }

    /// The 16-bit map gives the rounded division for every byte, and black, white and grey of
    /// video range land on full-range black, white and grey.
    #[test]
    fn range_maps_are_exact() {
        for v in 0..=255u8 {
            assert_eq!(LUMA.apply(v), reference(v, 16, 219, 0), "luma {v}");
            assert_eq!(CHROMA.apply(v), reference(v, 128, 224, 128), "chroma {v}");
            assert_eq!(IDENTITY.apply(v), v, "identity {v}");
        }
        assert_eq!(
            (LUMA.apply(16), LUMA.apply(235), LUMA.apply(126)),
            (0, 255, 128)
        );
        assert_eq!(
            (CHROMA.apply(16), CHROMA.apply(128), CHROMA.apply(240)),
            (0, 128, 255)
        );
    }

    /// The SIMD path and the plain one give the same bytes as the 2×2 mean mapped one value at a
    /// time, on random planes with strides and widths that leave a tail.
    #[test]
    fn halving_matches_the_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (w, h, stride) in [(1280, 8, 1344), (142, 6, 142), (64, 2, 80)] {
            let src: Vec<u8> = (0..stride * h).map(|_| rng.random()).collect();
            let mut out = vec![0u8; (w / 2) * (h / 2)];
            for map in [LUMA, CHROMA, IDENTITY] {
                halve(&src, w, stride, &mut out, map);
                for y in 0..h / 2 {
                    for x in 0..w / 2 {
                        let at = |dx: usize, dy: usize| {
                            u16::from(src[(2 * y + dy) * stride + 2 * x + dx])
                        };
                        let mean = ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 2) >> 2) as u8;
                        assert_eq!(
                            out[y * (w / 2) + x],
                            map.apply(mean),
                            "{w}x{h} ({x},{y}) {map:?}"
                        );
                    }
                }
            }
        }
    }
}
