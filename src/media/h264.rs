//! H.264 decoding: Annex B access units in, owned I420 pictures out.
//!
//! It owns one openh264 decoder per stream ([`H264Decoder`]) and the owned picture type
//! [`YuvFrame`] that the rest of the media pipeline (JPEG encoding, motion detection) consumes,
//! with BT.601 limited-range conversions to and from RGB8. The camera ingest actor calls
//! [`H264Decoder::decode`] once per received access unit. Corrupt or undecodable data comes back
//! as a [`DecodeError`] (never a panic); the decoder stays usable and resumes at the next IDR, so
//! callers log, count and keep feeding.

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig};
use openh264::formats::YUVSource;

/// Why an access unit could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// openh264 could not create its decoder.
    #[error(
        "could not create the H.264 decoder: {0}; this is an openh264 build problem, not a stream problem"
    )]
    Init(String),
    /// The access unit was corrupt, incomplete, or referenced data the decoder never saw.
    #[error(
        "corrupt or undecodable H.264 access unit: {0}; drop it and keep feeding, decoding resumes at the next keyframe (IDR with SPS/PPS)"
    )]
    Corrupt(String),
}

/// Decodes one H.264 stream (Annex B framing), one access unit per call.
pub struct H264Decoder {
    inner: Decoder,
    decoded: u64,
}

impl H264Decoder {
    /// Creates a decoder for a new stream.
    pub fn new() -> Result<Self, DecodeError> {
        let inner = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| DecodeError::Init(e.to_string()))?;
        Ok(Self { inner, decoded: 0 })
    }

    /// Pictures returned so far.
    pub fn frames_decoded(&self) -> u64 {
        self.decoded
    }

    /// Feeds one access unit (Annex B; may contain SPS/PPS/SEI plus slice NALs) and returns the
    /// decoded picture if one is ready. `Ok(None)` means "nothing to show yet" (e.g. only
    /// parameter sets were fed). Errors never poison the decoder: the next IDR decodes again.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<YuvFrame>, DecodeError> {
        if annexb.is_empty() {
            return Ok(None);
        }
        if !has_start_code(annexb) {
            return Err(DecodeError::Corrupt(format!(
                "{} bytes without an Annex B start code (00 00 01)",
                annexb.len()
            )));
        }
        let picture = self
            .inner
            .decode(annexb)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let Some(picture) = picture else {
            return Ok(None);
        };
        let frame = copy_picture(&picture)?;
        self.decoded += 1;
        Ok(Some(frame))
    }

    /// End of stream: returns the pictures the decoder still holds (reordering delay), in order.
    pub fn flush(&mut self) -> Result<Vec<YuvFrame>, DecodeError> {
        let pictures = self.inner.flush_remaining().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let frames = pictures.iter().map(copy_picture).collect::<Result<Vec<_>, _>>()?;
        self.decoded += frames.len() as u64;
        Ok(frames)
    }
}

/// NAL unit types (`nal_unit_type`, 0..=31) of an Annex B buffer, in order: 5 is an IDR slice,
/// 1 a non-IDR slice, 7 SPS, 8 PPS, 6 SEI. Callers joining a stream can wait for 5.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    openh264::nal_units(annexb)
        .filter_map(|nal| {
            let start = nal.iter().position(|&b| b == 1)?;
            nal.get(start + 1).map(|header| header & 0x1f)
        })
        .collect()
}

/// True when `data` contains a `00 00 01` start code (which also covers `00 00 00 01`).
fn has_start_code(data: &[u8]) -> bool {
    data.windows(3).any(|w| w == [0, 0, 1])
}

/// Copies openh264's strided planes into a tightly packed [`YuvFrame`].
fn copy_picture(p: &impl YUVSource) -> Result<YuvFrame, DecodeError> {
    let (w, h) = p.dimensions();
    let (sy, su, sv) = p.strides();
    if w == 0 || h == 0 {
        return Err(DecodeError::Corrupt(format!(
            "decoder returned an empty {w}x{h} picture"
        )));
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let y = copy_plane(p.y(), w, h, sy, "Y")?;
    let u = copy_plane(p.u(), cw, ch, su, "U")?;
    let v = copy_plane(p.v(), cw, ch, sv, "V")?;
    let (width, height) = (u32::try_from(w), u32::try_from(h));
    match (width, height) {
        (Ok(width), Ok(height)) => Ok(YuvFrame {
            width,
            height,
            y,
            u,
            v,
        }),
        _ => Err(DecodeError::Corrupt(format!(
            "picture size {w}x{h} out of range"
        ))),
    }
}

fn copy_plane(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    name: &str,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        let line = src.get(row * stride..row * stride + w).ok_or_else(|| {
            DecodeError::Corrupt(format!(
                "{name} plane too short: {} bytes for {w}x{h} with stride {stride}",
                src.len()
            ))
        })?;
        out.extend_from_slice(line);
    }
    Ok(out)
}

/// An owned I420 picture: three tightly packed planes, `y` of `width * height` bytes, `u` and `v`
/// of `ceil(width / 2) * ceil(height / 2)` bytes (exactly `(w/2) * (h/2)` for even sizes, which
/// is all H.264 produces). Samples are BT.601 limited range (Y 16..235, U/V 16..240).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YuvFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Luma plane.
    pub y: Vec<u8>,
    /// Cb plane, quarter resolution.
    pub u: Vec<u8>,
    /// Cr plane, quarter resolution.
    pub v: Vec<u8>,
}

impl YuvFrame {
    /// Size of each chroma plane in pixels: `(ceil(w/2), ceil(h/2))`.
    pub fn chroma_size(&self) -> (usize, usize) {
        (
            (self.width as usize).div_ceil(2),
            (self.height as usize).div_ceil(2),
        )
    }

    /// True when the planes have the lengths the dimensions require.
    pub fn is_consistent(&self) -> bool {
        let (cw, ch) = self.chroma_size();
        self.y.len() == self.width as usize * self.height as usize
            && self.u.len() == cw * ch
            && self.v.len() == cw * ch
    }

    /// Converts to RGB8 (row-major, stride `width * 3`) with BT.601 limited-range coefficients,
    /// the same as openh264's `write_rgb8`. Samples missing from short planes read as black/grey
    /// instead of panicking; check [`is_consistent`](Self::is_consistent) if that matters.
    pub fn to_rgb8(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_rgb8(&mut out);
        out
    }

    /// Like [`to_rgb8`](Self::to_rgb8) but into a reusable buffer (resized to `width * height * 3`).
    pub fn write_rgb8(&self, out: &mut Vec<u8>) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, _) = self.chroma_size();
        out.clear();
        out.resize(w * h * 3, 0);
        if w == 0 {
            return;
        }
        for (row, line) in out.chunks_exact_mut(w * 3).enumerate() {
            for (col, px) in line.chunks_exact_mut(3).enumerate() {
                let c = (row / 2) * cw + col / 2;
                let y = i32::from(self.y.get(row * w + col).copied().unwrap_or(16)) - 16;
                let u = i32::from(self.u.get(c).copied().unwrap_or(128)) - 128;
                let v = i32::from(self.v.get(c).copied().unwrap_or(128)) - 128;
                let l = 298 * y + 128;
                px[0] = clamp_u8((l + 409 * v) >> 8);
                px[1] = clamp_u8((l - 100 * u - 208 * v) >> 8);
                px[2] = clamp_u8((l + 516 * u) >> 8);
            }
        }
    }

    /// Converts RGB8 (row-major, stride `width * 3`) to I420 with BT.601 limited-range
    /// coefficients (openh264's RGB→YUV), chroma from the 2x2 average. Meant for tests and
    /// synthetic input: pixels missing from a short `rgb` read as black.
    pub fn from_rgb8(width: u32, height: u32, rgb: &[u8]) -> Self {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let px = |x: usize, y: usize| -> [i32; 3] {
            let i = (y * w + x) * 3;
            match rgb.get(i..i + 3) {
                Some(p) => [i32::from(p[0]), i32::from(p[1]), i32::from(p[2])],
                None => [0, 0, 0],
            }
        };
        let mut frame = YuvFrame {
            width,
            height,
            y: Vec::with_capacity(w * h),
            u: Vec::with_capacity(cw * ch),
            v: Vec::with_capacity(cw * ch),
        };
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = px(x, y);
                frame
                    .y
                    .push(clamp_u8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16));
            }
        }
        for cy in 0..ch {
            for cx in 0..cw {
                let mut sum = [0i32; 3];
                let mut n = 0;
                for (x, y) in
                    [(0, 0), (1, 0), (0, 1), (1, 1)].map(|(dx, dy)| (2 * cx + dx, 2 * cy + dy))
                {
                    if x < w && y < h {
                        let p = px(x, y);
                        (0..3).for_each(|k| sum[k] += p[k]);
                        n += 1;
                    }
                }
                let [r, g, b] = sum.map(|s| s / n.max(1));
                frame
                    .u
                    .push(clamp_u8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128));
                frame
                    .v
                    .push(clamp_u8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128));
            }
        }
        frame
    }
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
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
        }
    }
}
