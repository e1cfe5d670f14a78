//! JPEG: decoded frames in, resized JPEG bytes out; and JPEG bytes back to RGB for later stages.
//!
//! It owns [`Codec`], the choice between libjpeg-turbo (loaded at run time by `media::turbo`,
//! about 3× faster) and the pure-Rust pair jpeg-encoder + zune-jpeg (always built in), and
//! [`FrameEncoder`], which the frame sampler keeps per camera so its resizer and scratch buffers
//! are reused between frames. Decoded frames never go through RGB: the I420 planes are resized
//! each on its own (an exact 2:1 by a 2×2 average, other ratios by fast_image_resize convolution,
//! one byte per sample; `media::resize`) and expanded from video range to JPEG's full range in
//! the same pass, then encoded as YCbCr 4:2:0
//! (libjpeg-turbo from the planes, jpeg-encoder through its `ImageBuffer` trait), so the
//! full-size YUV→RGB conversion and the encoder's RGB→YCbCr conversion are both gone. [`Codec::decode_rgb`] serves the annotator and detectors,
//! [`Codec::encode_rgb`] re-encodes annotated frames, and [`scale_box`] maps ground truth from
//! camera to output coordinates. Every failure is a [`JpegError`], never a panic: bad settings at
//! construction, mismatched buffers or corrupt JPEG bytes at call time.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::h264::{YuvFrame, YuvView};
use super::planes::{DECODED, Planes};
use super::resize;
use super::turbo::TurboJpeg;

/// Largest width or height this module encodes or decodes.
pub const MAX_DIMENSION: u32 = 8192;

/// Which JPEG implementation to use (`[media] jpeg_codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecChoice {
    /// libjpeg-turbo when the machine has it, else the built-in Rust codecs.
    #[default]
    Auto,
    /// libjpeg-turbo, required: a machine without it fails validation.
    LibjpegTurbo,
    /// jpeg-encoder and zune-jpeg, even where libjpeg-turbo is installed.
    Rust,
}

/// The JPEG implementation in use: cheap to copy, the same for every thread.
#[derive(Clone, Copy)]
pub enum Codec {
    /// jpeg-encoder (SIMD) to encode, zune-jpeg to decode.
    Rust,
    /// libjpeg-turbo's TurboJPEG API, loaded at run time.
    Turbo(&'static TurboJpeg),
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Default for Codec {
    /// The `auto` choice: libjpeg-turbo if loadable.
    fn default() -> Self {
        TurboJpeg::get().map_or(Codec::Rust, Codec::Turbo)
    }
}

impl Codec {
    /// Resolves a configured choice; `Err` (the reason) when libjpeg-turbo is required but absent.
    pub fn select(choice: CodecChoice) -> Result<Codec, String> {
        match choice {
            CodecChoice::Auto => Ok(Codec::default()),
            CodecChoice::LibjpegTurbo => TurboJpeg::get().map(Codec::Turbo),
            CodecChoice::Rust => Ok(Codec::Rust),
        }
    }

    /// `"libjpeg-turbo"` or `"rust"` (logs, `/status`, bench reports).
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Rust => "rust",
            Codec::Turbo(_) => "libjpeg-turbo",
        }
    }

    /// Decodes a JPEG to RGB8; returns `(width, height, rgb)`.
    pub fn decode_rgb(self, jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), JpegError> {
        match self {
            Codec::Rust => zune_decode(jpeg, ColorSpace::RGB),
            Codec::Turbo(t) => t.decode_rgb(jpeg),
        }
    }

    /// Decodes a JPEG to YCbCr 4:2:0 planes (no colour conversion with libjpeg-turbo when the
    /// JPEG is 4:2:0, as every frame framewire makes is).
    pub fn decode_planes(self, jpeg: &[u8]) -> Result<Planes, JpegError> {
        match self {
            Codec::Rust => {
                let (w, h, ycc) = zune_decode(jpeg, ColorSpace::YCbCr)?;
                Ok(Planes::from_ycbcr444(w, h, &ycc))
            }
            Codec::Turbo(t) => t.decode_planes(jpeg),
        }
    }

    /// Encodes YCbCr 4:2:0 planes to a JPEG at `quality` (1 ..= 100).
    pub fn encode_planes(self, planes: &Planes, quality: u8) -> Result<Vec<u8>, JpegError> {
        check_quality(quality)?;
        let (w, h) = (planes.width, planes.height);
        if !planes.is_consistent() || w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION {
            return Err(JpegError::Input(format!(
                "planes of {}, {}, {} bytes for {w}x{h}",
                planes.y.len(),
                planes.cb.len(),
                planes.cr.len()
            )));
        }
        let (cw, _) = planes.chroma_size();
        match self {
            // TurboJPEG's 4:2:0 planes are padded to even sizes; an odd frame goes through RGB.
            Codec::Turbo(t) if w % 2 == 1 || h % 2 == 1 => {
                t.encode_rgb(w, h, &planes.to_rgb(), quality)
            }
            Codec::Turbo(t) => t.encode_yuv420(
                [&planes.y, &planes.cb, &planes.cr],
                [w as usize, cw, cw],
                w,
                h,
                quality,
            ),
            Codec::Rust => encode_planar(&planes.y, &planes.cb, &planes.cr, w, h, quality),
        }
    }

    /// Encodes RGB8 (row-major, stride `width * 3`) to a 4:2:0 JPEG at `quality` (1 ..= 100).
    pub fn encode_rgb(
        self,
        width: u32,
        height: u32,
        rgb: &[u8],
        quality: u8,
    ) -> Result<Vec<u8>, JpegError> {
        check_quality(quality)?;
        check_rgb(width, height, rgb)?;
        match self {
            Codec::Rust => encode_as(width, height, rgb, quality, ColorType::Rgb),
            Codec::Turbo(t) => t.encode_rgb(width, height, rgb, quality),
        }
    }
}

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
    codec: Codec,
    resizer: Resizer,
    options: ResizeOptions,
    /// Resized RGB at the output size (`encode_rgb`), made on first use: cameras never need it.
    resized: Option<Image<'static>>,
    /// Y, Cb, Cr planes at the output size, full range (`encode`).
    planes: [Image<'static>; 3],
}

/// Full-range I420 planes at the output size as jpeg-encoder's input: each row's Y, and Cb/Cr
/// repeated to full width (the encoder subsamples 4:2:0 itself).
struct Planar420<'a> {
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
    width: u16,
    height: u16,
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
        let cw = w.div_ceil(2);
        buffers[0].extend_from_slice(&self.y[row * w..(row + 1) * w]);
        let c = (row / 2) * cw;
        for (plane, buf) in [(self.u, 1), (self.v, 2)] {
            for &x in &plane[c..c + w / 2] {
                buffers[buf].extend_from_slice(&[x, x]);
            }
            if w % 2 == 1 {
                buffers[buf].push(plane[c + w / 2]);
            }
        }
    }
}

impl FrameEncoder {
    /// Creates an encoder producing `out_width` x `out_height` JPEGs at `quality` (1 ..= 100)
    /// with the default codec ([`Codec::default`]). Sizes must be even, at least 16 and at most
    /// [`MAX_DIMENSION`].
    pub fn new(out_width: u32, out_height: u32, quality: u8) -> Result<Self, JpegError> {
        Self::with_codec(out_width, out_height, quality, Codec::default())
    }

    /// Like [`new`](Self::new), encoding with `codec`.
    pub fn with_codec(
        out_width: u32,
        out_height: u32,
        quality: u8,
        codec: Codec,
    ) -> Result<Self, JpegError> {
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
            codec,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: None,
            planes: [
                Image::new(out_width, out_height, PixelType::U8),
                Image::new(out_width / 2, out_height / 2, PixelType::U8),
                Image::new(out_width / 2, out_height / 2, PixelType::U8),
            ],
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
        self.encode_view(frame.view())
    }

    /// [`encode`](Self::encode) from borrowed, possibly strided planes (a decoder's picture).
    pub fn encode_view(&mut self, frame: YuvView<'_>) -> Result<Vec<u8>, JpegError> {
        frame.check().map_err(JpegError::Input)?;
        let (ow, oh) = (self.out_width as usize, self.out_height as usize);
        for (i, (dst, map)) in self
            .planes
            .iter_mut()
            .zip([resize::LUMA, resize::CHROMA, resize::CHROMA])
            .enumerate()
        {
            let (w, h) = frame.plane_sizes()[i];
            let (dw, dh) = (dst.width() as usize, dst.height() as usize);
            let stride = frame.strides[i];
            if (w, h) == (dw, dh) {
                for (r, out) in dst.buffer_mut().chunks_exact_mut(dw).enumerate() {
                    for (o, &v) in out.iter_mut().zip(frame.row(i, r)) {
                        *o = map.apply(v);
                    }
                }
            } else if (w, h) == (dw * 2, dh * 2) {
                resize::halve(frame.planes[i], w, stride, dst.buffer_mut(), map);
            } else {
                // Any other ratio: fast_image_resize convolution over a packed copy.
                let packed: Vec<u8> = (0..h).flat_map(|r| frame.row(i, r)).copied().collect();
                let from = ImageRef::new(w as u32, h as u32, &packed, PixelType::U8)
                    .map_err(|e| JpegError::Input(e.to_string()))?;
                self.resizer
                    .resize(&from, dst, &self.options)
                    .map_err(|e| JpegError::Encode(format!("resize plane {i} {w}x{h}: {e}")))?;
                for o in dst.buffer_mut() {
                    *o = map.apply(*o);
                }
            }
        }
        let [y, u, v] = [0, 1, 2].map(|i| self.planes[i].buffer());
        let (w, h) = (ow as u32, oh as u32);
        match self.codec {
            Codec::Turbo(t) => t.encode_yuv420([y, u, v], [ow, ow / 2, ow / 2], w, h, self.quality),
            Codec::Rust => encode_planar(y, u, v, w, h, self.quality),
        }
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
            return self.codec.encode_rgb(width, height, rgb, self.quality);
        }
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3)
            .map_err(|e| JpegError::Input(e.to_string()))?;
        let (ow, oh) = (self.out_width, self.out_height);
        let resized = self
            .resized
            .get_or_insert_with(|| Image::new(ow, oh, PixelType::U8x3));
        self.resizer
            .resize(&src, resized, &self.options)
            .map_err(|e| JpegError::Encode(format!("resize {width}x{height}: {e}")))?;
        self.codec
            .encode_rgb(ow, oh, resized.buffer(), self.quality)
    }
}

/// Frames one stage decoded, handed to the next, each taken at most once: the taker owns the
/// pixels (and may draw on them in place, no copy); a later taker, such as a retry of that
/// stage, gets `None` and decodes the JPEG again. It can hold a guard (a worker permit) that is
/// released with the frames, so the decoded frames alive at once stay bounded.
#[derive(Default)]
pub struct DecodedFrames {
    frames: Vec<parking_lot::Mutex<Option<Planes>>>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for DecodedFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedFrames")
            .field("frames", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl DecodedFrames {
    pub fn new(frames: Vec<Planes>) -> Self {
        Self {
            frames: frames
                .into_iter()
                .map(|f| parking_lot::Mutex::new(Some(f)))
                .collect(),
            _guard: None,
        }
    }

    /// The same frames, keeping `guard` alive until they are dropped.
    pub fn holding(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// Frame `index`, if it is there and nobody took it yet.
    pub fn take(&self, index: usize) -> Option<Planes> {
        self.frames.get(index).and_then(|m| m.lock().take())
    }
}

impl Drop for DecodedFrames {
    /// Frames nobody took (nothing drawn on them) go back to the pool, before the guard (the
    /// inference worker's slot) is released.
    fn drop(&mut self) {
        for m in &mut self.frames {
            if let Some(p) = m.get_mut().take() {
                DECODED.give(p);
            }
        }
    }
}

/// Decodes a JPEG to RGB8 with the default codec; returns `(width, height, rgb)`.
pub fn decode_rgb(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), JpegError> {
    Codec::default().decode_rgb(jpeg)
}

/// Full-range 4:2:0 planes (tight strides: `width`, `ceil(width/2)`) to JPEG with jpeg-encoder.
fn encode_planar(
    y: &[u8],
    u: &[u8],
    v: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, JpegError> {
    let (Ok(w16), Ok(h16)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(JpegError::Input(format!(
            "size {width}x{height} too large for JPEG"
        )));
    };
    let planar = Planar420 {
        y,
        u,
        v,
        width: w16,
        height: h16,
    };
    let mut out = Vec::with_capacity(y.len() / 4);
    let mut encoder = Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(SamplingFactor::R_4_2_0);
    encoder
        .encode_image(planar)
        .map_err(|e| JpegError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a JPEG with zune-jpeg to three bytes per pixel in `colour` (RGB or YCbCr).
fn zune_decode(jpeg: &[u8], colour: ColorSpace) -> Result<(u32, u32, Vec<u8>), JpegError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(colour)
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
            "{} bytes decoded for a {w}x{h} image of 3 bytes per pixel",
            rgb.len()
        )));
    }
    Ok((w, h, rgb))
}

/// Encodes RGB8 (row-major, stride `width * 3`) to a 4:2:0 JPEG at `quality` (1 ..= 100) with
/// the default codec.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, JpegError> {
    Codec::default().encode_rgb(width, height, rgb, quality)
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

/// Encodes three interleaved bytes per pixel (`color`: RGB or full-range YCbCr) at 4:2:0 with
/// jpeg-encoder.
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
    /// converting to RGB first and resizing that, for the 2:1 halving and for other ratios.
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

    /// Both codecs, or only the built-in one when libjpeg-turbo is not installed; with
    /// `FRAMEWIRE_REQUIRE_TURBOJPEG=1` (set by `scripts/test`) a missing library fails the test.
    fn codecs() -> Vec<Codec> {
        match crate::media::turbo::TurboJpeg::get() {
            Ok(t) => vec![Codec::Rust, Codec::Turbo(t)],
            Err(e) if std::env::var_os("FRAMEWIRE_REQUIRE_TURBOJPEG").is_some() => {
                panic!("libjpeg-turbo required by FRAMEWIRE_REQUIRE_TURBOJPEG: {e}")
            }
            Err(_) => vec![Codec::Rust],
        }
    }

    /// A JPEG decoded into a reused buffer (holding another frame's bytes) equals one decoded
    /// into a fresh buffer: the decoder writes every byte. 200×120 (not a multiple of the 16-row
    /// MCU) is a size no other test decodes, so the buffers given here are the ones taken.
    #[test]
    fn decoding_into_reused_buffers_leaves_nothing_behind() {
        let rgb = scene_rgb(200, 120, 4);
        for codec in codecs() {
            let jpeg = codec.encode_rgb(200, 120, &rgb, 80).unwrap();
            let decode = |fill: u8| {
                let given = Planes::grey(200, 120, fill);
                let at = given.y.as_ptr();
                DECODED.give(given);
                let out = codec.decode_planes(&jpeg).unwrap();
                if matches!(codec, Codec::Turbo(_)) {
                    assert_eq!(out.y.as_ptr(), at, "decoded into the buffer given");
                }
                out
            };
            let (a, b) = (decode(0x00), decode(0xff));
            assert_eq!(a, b, "{}", codec.name());
            DECODED.give(a);
            DECODED.give(b);
        }
    }

    /// Every codec encodes the camera's YUV frame and RGB to JPEGs that every codec decodes to
    /// the same picture (PSNR > 35 dB between decoders, > 30 dB against the source), so frames
    /// from one daemon are read alike by another with the other codec.
    #[test]
    fn codecs_agree() {
        let src = scene_rgb(640, 480, 9);
        let yuv = YuvFrame::from_rgb8(640, 480, &src);
        let reference = resized(640, 480, &yuv.to_rgb8(), 320, 240);
        for enc in codecs() {
            let from_yuv = FrameEncoder::with_codec(320, 240, 80, enc)
                .and_then(|mut e| e.encode(&yuv))
                .unwrap_or_else(|e| panic!("{enc:?}: {e}"));
            let from_rgb = enc
                .encode_rgb(320, 240, &reference, 80)
                .unwrap_or_else(|e| panic!("{enc:?}: {e}"));
            for jpeg in [&from_yuv, &from_rgb] {
                let decoded: Vec<Vec<u8>> = codecs()
                    .into_iter()
                    .map(|dec| {
                        let (w, h, rgb) = dec.decode_rgb(jpeg).unwrap_or_else(|e| panic!("{e}"));
                        assert_eq!((w, h), (320, 240));
                        let planes = dec.decode_planes(jpeg).unwrap_or_else(|e| panic!("{e}"));
                        let p = psnr(&planes.to_rgb(), &rgb);
                        assert!(p > 35.0, "{dec:?}: planes vs RGB decode {p:.1} dB");
                        rgb
                    })
                    .collect();
                for d in &decoded {
                    assert!(psnr(d, &decoded[0]) > 35.0, "decoders disagree ({enc:?})");
                    assert!(
                        psnr(d, &reference) > 30.0,
                        "{enc:?}: {:.1} dB",
                        psnr(d, &reference)
                    );
                }
            }
        }
    }

    /// Planes of odd sizes, and JPEGs that are not 4:2:0 (4:4:4 from another encoder), round-trip
    /// through every codec's plane path.
    #[test]
    fn planes_round_trip_odd_sizes_and_other_subsampling() {
        let src = scene_rgb(64, 64, 2);
        let odd: Vec<u8> = (0..37)
            .flat_map(|y| src[y * 64 * 3..y * 64 * 3 + 51 * 3].to_vec())
            .collect();
        let planes = Planes::from_rgb(51, 37, &odd);
        let mut full = Vec::new();
        jpeg_encoder::Encoder::new(&mut full, 90)
            .encode(&odd, 51, 37, ColorType::Rgb)
            .unwrap_or_else(|e| panic!("{e}"));
        for codec in codecs() {
            let jpeg = codec
                .encode_planes(&planes, 90)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            for bytes in [&jpeg, &full] {
                let back = codec.decode_planes(bytes).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!((back.width, back.height), (51, 37));
                assert!(back.is_consistent());
                let p = psnr(&back.to_rgb(), &planes.to_rgb());
                assert!(p > 30.0, "{codec:?}: {p:.1} dB");
            }
            let bad = Planes {
                y: vec![0; 3],
                ..planes.clone()
            };
            assert!(matches!(
                codec.encode_planes(&bad, 80),
                Err(JpegError::Input(_))
            ));
            assert!(matches!(
                codec.encode_planes(&planes, 0),
                Err(JpegError::Config(_))
            ));
        }
    }

    /// libjpeg-turbo, fed random bytes, truncations and bit flips of a valid JPEG, answers with
    /// errors or pixels, never a crash; garbage is always an error; and a header claiming a
    /// huge size is refused before any allocation.
    #[test]
    fn turbo_decode_garbage_never_crashes() {
        let Some(codec) = codecs().into_iter().find(|c| matches!(c, Codec::Turbo(_))) else {
            return; // not installed here (and not required)
        };
        let valid = codec
            .encode_rgb(64, 48, &scene_rgb(64, 64, 0)[..64 * 48 * 3], 80)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for _ in 0..500 {
            let len = rng.random_range(0..4096);
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            assert!(codec.decode_rgb(&junk).is_err());
            assert!(codec.decode_planes(&junk).is_err());
            let cut = rng.random_range(0..valid.len());
            let _ = codec.decode_rgb(&valid[..cut]);
            let _ = codec.decode_planes(&valid[..cut]);
            let mut flipped = valid.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..flipped.len());
                flipped[i] ^= 1 << rng.random_range(0..8);
            }
            let _ = codec.decode_rgb(&flipped);
            let _ = codec.decode_planes(&flipped);
        }
        // SOF0 height/width fields (big-endian) set to 60000 × 60000.
        let sof = valid
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap_or_else(|| panic!("no SOF0"));
        let mut huge = valid.clone();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        for r in [
            codec.decode_rgb(&huge).map(|_| ()),
            codec.decode_planes(&huge).map(|_| ()),
        ] {
            assert!(
                matches!(&r, Err(JpegError::Decode(m)) if m.contains("60000x60000")),
                "{r:?}"
            );
        }
        assert!(codec.decode_rgb(&valid).is_ok());
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
