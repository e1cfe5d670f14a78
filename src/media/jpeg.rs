//! JPEG: decoded frames in, resized JPEG bytes out; and JPEG bytes back to RGB for later stages.
//!
//! It owns [`FrameEncoder`], which the frame sampler keeps per camera so its resizer and scratch
//! buffers are reused between frames. Decoded frames never go through RGB: the I420 planes are
//! resized each on its own (an exact 2:1 by a 2×2 average, other ratios by fast_image_resize
//! convolution, one byte per sample), expanded from video range to JPEG's full range by table and
//! fed row by row to jpeg-encoder as YCbCr (4:2:0) through its `ImageBuffer` trait, so the
//! full-size YUV→RGB conversion and the encoder's RGB→YCbCr conversion are both gone; [`decode_rgb`] (zune-jpeg) for the annotator and
//! detectors; [`encode_rgb`] for re-encoding annotated frames; and [`scale_box`] to map ground
//! truth from camera to output coordinates. Every failure is a [`JpegError`], never a panic:
//! bad settings at construction, mismatched buffers or corrupt JPEG bytes at call time.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::h264::YuvFrame;

/// Largest width or height this module encodes or decodes.
pub const MAX_DIMENSION: u32 = 8192;

/// Why a frame could not be resized, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    /// The encoder settings are out of range.
    #[error("invalid JPEG output settings: {0}; fix the frame output width/height/quality")]
    Config(String),
    /// The pixels handed in do not match their stated size.
    #[error(
        "frame cannot be encoded: {0}; the caller passed a buffer that does not match its size"
    )]
    Input(String),
    /// fast_image_resize or jpeg-encoder failed.
    #[error("JPEG encoding failed: {0}; this is a bug, report it with the frame size")]
    Encode(String),
    /// The bytes are not a decodable JPEG.
    #[error(
        "not a decodable JPEG: {0}; the stored frame is corrupt or truncated, skip or re-fetch it"
    )]
    Decode(String),
}

/// Resizes and JPEG-encodes frames to one output size and quality; reuse it across frames.
pub struct FrameEncoder {
    out_width: u32,
    out_height: u32,
    quality: u8,
    resizer: Resizer,
    options: ResizeOptions,
    /// Resized RGB at the output size (`encode_rgb`).
    resized: Image<'static>,
    /// Resized Y, Cb, Cr planes at the output size (`encode`).
    planes: [Image<'static>; 3],
    /// Video range → full range: luma 16..235, chroma 16..240 → 0..255.
    luma: [u8; 256],
    chroma: [u8; 256],
}

/// Halves a plane of width `w` (and an even height) into `out` by averaging each 2×2 block: the
/// exact 2:1 case of the resize (e.g. 720p → 640×360), several times cheaper than a convolution.
fn halve(src: &[u8], w: usize, out: &mut [u8]) {
    let ow = w / 2;
    for (row, line) in out.chunks_exact_mut(ow).enumerate() {
        let top = &src[2 * row * w..2 * row * w + w];
        let bottom = &src[(2 * row + 1) * w..(2 * row + 1) * w + w];
        for ((o, t), b) in line
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            let sum = u16::from(t[0]) + u16::from(t[1]) + u16::from(b[0]) + u16::from(b[1]);
            *o = ((sum + 2) >> 2) as u8;
        }
    }
}

/// I420 planes at the output size as jpeg-encoder's input: each row's Y, and Cb/Cr repeated to
/// full width (the encoder subsamples 4:2:0 itself), mapped to full range by table.
struct Planar420<'a> {
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
    width: u16,
    height: u16,
    luma: &'a [u8; 256],
    chroma: &'a [u8; 256],
}

impl jpeg_encoder::ImageBuffer for Planar420<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }
    fn width(&self) -> u16 {
        self.width
    }
    fn height(&self) -> u16 {
        self.height
    }
    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, row) = (usize::from(self.width), usize::from(row));
        let cw = w / 2;
        let ys = &self.y[row * w..(row + 1) * w];
        buffers[0].extend(ys.iter().map(|&v| self.luma[usize::from(v)]));
        let c = (row / 2) * cw;
        for (plane, buf) in [(self.u, 1), (self.v, 2)] {
            for &v in &plane[c..c + cw] {
                let x = self.chroma[usize::from(v)];
                buffers[buf].extend_from_slice(&[x, x]);
            }
        }
    }
}

/// BT.601 video range to JFIF full range, rounded and clamped: `(v - offset) · 255 / span + centre`.
fn range_table(offset: i32, span: i32, centre: i32) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (v, out) in t.iter_mut().enumerate() {
        let x = (v as i32 - offset) * 255 * 2;
        let scaled = if x >= 0 {
            (x + span) / (2 * span)
        } else {
            (x - span) / (2 * span)
        };
        *out = (scaled + centre).clamp(0, 255) as u8;
    }
    t
}

impl FrameEncoder {
    /// Creates an encoder producing `out_width` x `out_height` JPEGs at `quality` (1 ..= 100).
    /// Sizes must be even, at least 16 and at most [`MAX_DIMENSION`].
    pub fn new(out_width: u32, out_height: u32, quality: u8) -> Result<Self, JpegError> {
        for (name, v) in [("width", out_width), ("height", out_height)] {
            if v < 16 || !v.is_multiple_of(2) || v > MAX_DIMENSION {
                return Err(JpegError::Config(format!(
                    "output {name} {v} must be even and within 16 ..= {MAX_DIMENSION}"
                )));
            }
        }
        check_quality(quality)?;
        Ok(Self {
            out_width,
            out_height,
            quality,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: Image::new(out_width, out_height, PixelType::U8x3),
            planes: [
                Image::new(out_width, out_height, PixelType::U8),
                Image::new(out_width / 2, out_height / 2, PixelType::U8),
                Image::new(out_width / 2, out_height / 2, PixelType::U8),
            ],
            luma: range_table(16, 219, 0),
            chroma: range_table(128, 224, 128),
        })
    }

    /// The `(width, height)` of every JPEG this encoder produces.
    pub fn out_size(&self) -> (u32, u32) {
        (self.out_width, self.out_height)
    }

    /// Resizes `frame`'s planes to the output size (skipped when sizes match) and encodes a 4:2:0
    /// JPEG, without an RGB round trip.
    pub fn encode(&mut self, frame: &YuvFrame) -> Result<Vec<u8>, JpegError> {
        if !frame.is_consistent() {
            return Err(JpegError::Input(format!(
                "YUV planes ({}, {}, {} bytes) do not match {}x{}",
                frame.y.len(),
                frame.u.len(),
                frame.v.len(),
                frame.width,
                frame.height
            )));
        }
        let (ow, oh) = (self.out_width as usize, self.out_height as usize);
        let (cw, ch) = frame.chroma_size();
        let sizes = [
            (frame.width, frame.height, &frame.y),
            (cw as u32, ch as u32, &frame.u),
            (cw as u32, ch as u32, &frame.v),
        ];
        let mut resized: [&[u8]; 3] = [&[], &[], &[]];
        for (i, ((w, h, src), dst)) in sizes.into_iter().zip(self.planes.iter_mut()).enumerate() {
            resized[i] = if (w, h) == (dst.width(), dst.height()) {
                src.as_slice()
            } else if (w, h) == (dst.width() * 2, dst.height() * 2) {
                halve(src, w as usize, dst.buffer_mut());
                dst.buffer()
            } else {
                let from = ImageRef::new(w, h, src, PixelType::U8)
                    .map_err(|e| JpegError::Input(e.to_string()))?;
                self.resizer
                    .resize(&from, dst, &self.options)
                    .map_err(|e| JpegError::Encode(format!("resize plane {i} {w}x{h}: {e}")))?;
                dst.buffer()
            };
        }
        let [y, u, v] = resized;
        let (Ok(w16), Ok(h16)) = (u16::try_from(ow), u16::try_from(oh)) else {
            return Err(JpegError::Input(format!(
                "size {ow}x{oh} too large for JPEG"
            )));
        };
        let planar = Planar420 {
            y,
            u,
            v,
            width: w16,
            height: h16,
            luma: &self.luma,
            chroma: &self.chroma,
        };
        let mut out = Vec::with_capacity(ow * oh / 4);
        let mut encoder = Encoder::new(&mut out, self.quality);
        encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
        encoder
            .encode_image(planar)
            .map_err(|e| JpegError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Resizes RGB8 (row-major, stride `width * 3`) to the output size and encodes it.
    pub fn encode_rgb(
        &mut self,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> Result<Vec<u8>, JpegError> {
        check_rgb(width, height, rgb)?;
        if (width, height) == (self.out_width, self.out_height) {
            return jpeg(self.out_width, self.out_height, rgb, self.quality);
        }
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
            .map_err(|e| JpegError::Input(e.to_string()))?;
        self.resizer
            .resize(&src, &mut self.resized, &self.options)
            .map_err(|e| JpegError::Encode(format!("resize {width}x{height}: {e}")))?;
        jpeg(
            self.out_width,
            self.out_height,
            self.resized.buffer(),
            self.quality,
        )
    }
}

/// A decoded frame: RGB8, row-major, stride `width * 3`.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Decodes a JPEG to RGB8 with zune-jpeg; returns `(width, height, rgb)`.
pub fn decode_rgb(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), JpegError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_DIMENSION as usize)
        .set_max_height(MAX_DIMENSION as usize);
    let mut decoder = JpegDecoder::new_with_options(jpeg, options);
    let rgb = decoder
        .decode()
        .map_err(|e| JpegError::Decode(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| JpegError::Decode("no image header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if rgb.len() != w as usize * h as usize * 3 {
        return Err(JpegError::Decode(format!(
            "{} bytes decoded for a {w}x{h} RGB image",
            rgb.len()
        )));
    }
    Ok((w, h, rgb))
}

/// Encodes RGB8 (row-major, stride `width * 3`) to a 4:2:0 JPEG at `quality` (1 ..= 100).
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, JpegError> {
    check_quality(quality)?;
    check_rgb(width, height, rgb)?;
    jpeg(width, height, rgb, quality)
}

/// Resizes RGB8 (row-major, stride `width * 3`) to `to` (bilinear, fast_image_resize); the same
/// size returns a copy.
pub fn resize_rgb(
    width: u32,
    height: u32,
    rgb: &[u8],
    to: (u32, u32),
) -> Result<Vec<u8>, JpegError> {
    check_rgb(width, height, rgb)?;
    if (width, height) == to {
        return Ok(rgb.to_vec());
    }
    let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
        .map_err(|e| JpegError::Input(e.to_string()))?;
    let mut out = Image::new(to.0, to.1, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut out,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| JpegError::Encode(format!("resize {width}x{height}: {e}")))?;
    Ok(out.into_vec())
}

/// Maps an `[x1, y1, x2, y2]` box from an image of size `from` to one of size `to`. A `from`
/// with a zero dimension leaves that axis unscaled.
pub fn scale_box(b: [f32; 4], from: (u32, u32), to: (u32, u32)) -> [f32; 4] {
    let factor = |f: u32, t: u32| if f == 0 { 1.0 } else { t as f32 / f as f32 };
    let (sx, sy) = (factor(from.0, to.0), factor(from.1, to.1));
    [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
}

fn check_quality(quality: u8) -> Result<(), JpegError> {
    if (1..=100).contains(&quality) {
        Ok(())
    } else {
        Err(JpegError::Config(format!(
            "quality {quality} must be 1 ..= 100"
        )))
    }
}

fn check_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<(), JpegError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(JpegError::Input(format!(
            "size {width}x{height} must be within 1x1 ..= {MAX_DIMENSION}x{MAX_DIMENSION}"
        )));
    }
    let want = width as usize * height as usize * 3;
    if rgb.len() != want {
        return Err(JpegError::Input(format!(
            "{} RGB bytes for {width}x{height}, expected {want}",
            rgb.len()
        )));
    }
    Ok(())
}

/// Encodes validated RGB8; sizes are already known to fit in `u16`.
fn jpeg(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, JpegError> {
    encode_as(width, height, rgb, quality, ColorType::Rgb)
}

/// Encodes three interleaved bytes per pixel (`color`: RGB or full-range YCbCr) at 4:2:0.
fn encode_as(
    width: u32,
    height: u32,
    rgb: &[u8],
    quality: u8,
    color: ColorType,
) -> Result<Vec<u8>, JpegError> {
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(JpegError::Input(format!(
            "size {width}x{height} too large for JPEG"
        )));
    };
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut encoder = Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
    encoder
        .encode(rgb, w, h, color)
        .map_err(|e| JpegError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::synthetic::{SceneConfig, SyntheticCamera};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn scene_rgb(width: u32, height: u32, index: u64) -> Vec<u8> {
        let cfg = SceneConfig {
            width,
            height,
            fps: 25,
            objects: 6,
            seed: 21,
        };
        match SyntheticCamera::new(cfg) {
            Ok(cam) => cam.render_rgb(index).0,
            Err(e) => panic!("camera: {e}"),
        }
    }

    fn encoder(w: u32, h: u32, q: u8) -> FrameEncoder {
        FrameEncoder::new(w, h, q).unwrap_or_else(|e| panic!("encoder: {e}"))
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let mse = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0 * 255.0 / mse).log10()
        }
    }

    /// Reference resize with the same algorithm the encoder uses.
    fn resized(w: u32, h: u32, rgb: &[u8], ow: u32, oh: u32) -> Vec<u8> {
        let src = ImageRef::new(w, h, rgb, PixelType::U8x3).unwrap_or_else(|e| panic!("{e}"));
        let mut dst = Image::new(ow, oh, PixelType::U8x3);
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        Resizer::new()
            .resize(&src, &mut dst, &opts)
            .unwrap_or_else(|e| panic!("{e}"));
        dst.into_vec()
    }

    /// A resized synthetic frame decodes at the output size with PSNR above 30 dB at q80, and the
    /// encoder keeps working across frames.
    #[test]
    fn resize_encode_decode_psnr() {
        let mut enc = encoder(320, 240, 80);
        assert_eq!(enc.out_size(), (320, 240));
        for index in [0u64, 40] {
            let src = scene_rgb(640, 480, index);
            let jpg = enc
                .encode_rgb(640, 480, &src)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
            let (w, h, rgb) = decode_rgb(&jpg).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((w, h), (320, 240));
            let p = psnr(&rgb, &resized(640, 480, &src, 320, 240));
            assert!(p > 30.0, "frame {index}: PSNR {p:.1} dB");
        }
    }

    /// The YUV path (no resize when sizes match) decodes at the frame size and stays close to the
    /// frame's own RGB conversion.
    #[test]
    fn yuv_frame_same_size() {
        let src = scene_rgb(320, 240, 3);
        let yuv = YuvFrame::from_rgb8(320, 240, &src);
        let mut enc = encoder(320, 240, 80);
        let jpg = enc.encode(&yuv).unwrap_or_else(|e| panic!("{e}"));
        let (w, h, rgb) = decode_rgb(&jpg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((w, h), (320, 240));
        let p = psnr(&rgb, &yuv.to_rgb8());
        assert!(p > 30.0, "PSNR {p:.1} dB");
        // Higher quality is bigger: quality is actually applied.
        let hi = encode_rgb(320, 240, &src, 95).unwrap_or_else(|e| panic!("{e}"));
        let lo = encode_rgb(320, 240, &src, 20).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            hi.len() > lo.len(),
            "q95 {} bytes vs q20 {} bytes",
            hi.len(),
            lo.len()
        );
    }

    /// The YUV path with a resize (planes resized on their own, no RGB round trip) stays close to
    /// converting to RGB first and resizing that, and video-range black, white and grey map to
    /// full range.
    #[test]
    fn yuv_frame_resized_without_rgb() {
        let mut enc = encoder(320, 240, 90);
        for index in [0u64, 17] {
            let src = scene_rgb(640, 480, index);
            let yuv = YuvFrame::from_rgb8(640, 480, &src);
            let jpg = enc.encode(&yuv).unwrap_or_else(|e| panic!("{e}"));
            let (w, h, rgb) = decode_rgb(&jpg).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((w, h), (320, 240));
            let reference = resized(640, 480, &yuv.to_rgb8(), 320, 240);
            let p = psnr(&rgb, &reference);
            assert!(p > 30.0, "frame {index}: PSNR {p:.1} dB");
        }
        // Not a 2:1 reduction: the convolution path.
        let src = scene_rgb(640, 480, 5);
        let yuv = YuvFrame::from_rgb8(640, 480, &src);
        let jpg = encoder(480, 360, 90)
            .encode(&yuv)
            .unwrap_or_else(|e| panic!("{e}"));
        let (w, h, rgb) = decode_rgb(&jpg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((w, h), (480, 360));
        let p = psnr(&rgb, &resized(640, 480, &yuv.to_rgb8(), 480, 360));
        assert!(p > 30.0, "480x360: PSNR {p:.1} dB");
        let (luma, chroma) = (range_table(16, 219, 0), range_table(128, 224, 128));
        assert_eq!((luma[16], luma[235], luma[0], luma[255]), (0, 255, 0, 255));
        assert_eq!((chroma[16], chroma[128], chroma[240]), (0, 128, 255));
        assert_eq!(luma[126], 128);
    }

    /// Bad settings and mismatched buffers are errors, not panics.
    #[test]
    fn rejects_bad_settings_and_buffers() {
        for (w, h, q) in [
            (15, 16, 80),
            (16, 17, 80),
            (0, 0, 80),
            (16, 16, 0),
            (16, 16, 101),
            (9000, 16, 80),
        ] {
            assert!(
                matches!(FrameEncoder::new(w, h, q), Err(JpegError::Config(_))),
                "{w}x{h} q{q}"
            );
        }
        let mut enc = encoder(32, 32, 80);
        assert!(matches!(
            enc.encode_rgb(64, 64, &[0; 10]),
            Err(JpegError::Input(_))
        ));
        assert!(matches!(
            enc.encode_rgb(0, 64, &[]),
            Err(JpegError::Input(_))
        ));
        let broken = YuvFrame {
            width: 64,
            height: 64,
            y: vec![0; 10],
            u: vec![],
            v: vec![],
        };
        assert!(matches!(enc.encode(&broken), Err(JpegError::Input(_))));
        assert!(matches!(
            encode_rgb(4, 4, &[0; 48], 0),
            Err(JpegError::Config(_))
        ));
        assert!(encode_rgb(4, 4, &[0; 48], 50).is_ok());
    }

    /// Random bytes, truncations and bit flips of a valid JPEG never panic, and pure garbage is
    /// always an error.
    #[test]
    fn decode_garbage_never_panics() {
        let valid = encode_rgb(64, 48, &scene_rgb(64, 64, 0)[..64 * 48 * 3], 80)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..500 {
            let len = rng.random_range(0..4096);
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert!(decode_rgb(&junk).is_err());
            let cut = rng.random_range(0..valid.len());
            let _ = decode_rgb(&valid[..cut]);
            let mut flipped = valid.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..flipped.len());
                flipped[i] ^= 1 << rng.random_range(0..8);
            }
            let _ = decode_rgb(&flipped);
        }
        assert!(decode_rgb(&valid).is_ok());
        assert!(decode_rgb(&[]).is_err());
    }

    /// Boxes scale by the per-axis size ratio; a zero source size leaves the box unscaled.
    #[test]
    fn scale_box_maps_coordinates() {
        assert_eq!(
            scale_box([64.0, 48.0, 128.0, 96.0], (640, 480), (320, 240)),
            [32.0, 24.0, 64.0, 48.0]
        );
        assert_eq!(
            scale_box([10.0, 10.0, 20.0, 20.0], (100, 50), (200, 200)),
            [20.0, 40.0, 40.0, 80.0]
        );
        assert_eq!(
            scale_box([1.0, 2.0, 3.0, 4.0], (0, 0), (10, 10)),
            [1.0, 2.0, 3.0, 4.0]
        );
    }
}
