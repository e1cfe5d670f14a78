//! H.264 decoding: Annex B access units in, owned I420 pictures out, in presentation order.
//!
//! It owns one openh264 decoder per stream ([`H264Decoder`]) and the owned picture type
//! [`YuvFrame`] that the rest of the media pipeline (JPEG encoding, motion detection) consumes,
//! with BT.601 limited-range conversions to and from RGB8, plus the little H.264 syntax the
//! ingest needs (SPS fields, slice starts: [`SpsInfo`], [`slice_start`]). The camera capture loop
//! calls [`H264Decoder::decode`] once per access unit and [`H264Decoder::flush`] at the end of a
//! file. Corrupt or undecodable data comes back as a [`DecodeError`] (never a panic); the decoder
//! stays usable and resumes at the next IDR, so callers log, count and keep feeding.
//!
//! B-frames: openh264 reorders pictures itself, but the openh264 crate's default "flush after
//! every decode" pulls the held picture out early (openh264-rs issue #50: out of order, then
//! errors, ~20 % of frames). So a stream that can reorder (its SPS allows it, or a B slice was
//! seen) is decoded without that flush: pictures come out in presentation order, about one
//! access unit late, and [`H264Decoder::flush`] returns the held ones at the end. A stream that
//! cannot reorder (Baseline, `pic_order_cnt_type` 2, or `max_num_reorder_frames` 0) keeps the
//! flush, so each picture comes out of the call that fed it (live cameras stay low-latency).

use openh264::OpenH264API;
use openh264::decoder::{DecodeOptions, Decoder, DecoderConfig, Flush};
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
    /// The last SPS allows pictures to come out in another order than they are decoded.
    sps_reorders: bool,
    /// A B slice was seen: reorder whatever the SPS says (sticky for the stream).
    seen_b: bool,
}

impl H264Decoder {
    /// Creates a decoder for a new stream.
    pub fn new() -> Result<Self, DecodeError> {
        Ok(Self {
            inner: Self::openh264()?,
            decoded: 0,
            sps_reorders: false,
            seen_b: false,
        })
    }

    fn openh264() -> Result<Decoder, DecodeError> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| DecodeError::Init(e.to_string()))
    }

    /// Pictures returned so far.
    pub fn frames_decoded(&self) -> u64 {
        self.decoded
    }

    /// True once the stream is decoded with reordering (pictures may come out one or more
    /// access units after the one that carried them; [`flush`](Self::flush) at the end).
    pub fn reordering(&self) -> bool {
        self.sps_reorders || self.seen_b
    }

    /// Feeds one access unit (Annex B; may contain SPS/PPS/SEI plus slice NALs) and returns the
    /// next picture in presentation order if one is ready. `Ok(None)` means "nothing to show
    /// yet" (only parameter sets were fed, or a reordering stream holds the picture back).
    /// Errors never poison the decoder: the next IDR decodes again.
    pub fn decode(&mut self, annexb: &[u8]) -> Result<Option<YuvFrame>, DecodeError> {
        Ok(self.decode_picture(annexb)?.map(|p| p.view().to_frame()))
    }

    /// [`decode`](Self::decode) without copying the picture: it stays in the decoder's own
    /// buffers, valid until the next call. The capture loop encodes from it directly.
    pub fn decode_picture(&mut self, annexb: &[u8]) -> Result<Option<Picture<'_>>, DecodeError> {
        if annexb.is_empty() {
            return Ok(None);
        }
        if !has_start_code(annexb) {
            return Err(DecodeError::Corrupt(format!(
                "{} bytes without an Annex B start code (00 00 01)",
                annexb.len()
            )));
        }
        let has_b = self.observe(annexb);
        // Flushing after the decode hands out the picture just decoded: right when nothing can
        // come before it, wrong (and harmful to openh264's reorder queue) when B-frames may.
        let flush = if self.reordering() {
            Flush::NoFlush
        } else {
            Flush::Flush
        };
        let picture = self
            .inner
            .decode_with_options(annexb, DecodeOptions::new().flush_after_decode(flush))
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        // Only a B slice that decoded counts (junk that parses as one must not add latency).
        self.seen_b |= has_b;
        let Some(picture) = picture else {
            return Ok(None);
        };
        view_picture(&picture)?;
        self.decoded += 1;
        Ok(Some(Picture(picture)))
    }

    /// End of stream, or of a closed keyframe interval: returns the pictures the decoder still
    /// holds (reordering delay), in order. Decoding can go on from an IDR.
    pub fn flush(&mut self) -> Result<Vec<YuvFrame>, DecodeError> {
        let pictures = self
            .inner
            .flush_remaining()
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let frames = pictures
            .iter()
            .map(|p| view_picture(p).map(|v| v.to_frame()))
            .collect::<Result<Vec<_>, _>>()?;
        self.decoded += frames.len() as u64;
        if self.reordering() {
            // openh264 takes no more of a reordering stream after its reorder queue was flushed
            // (the next pictures fail with state 0x4000), so the stream, from its next IDR, or
            // another stream goes on with a fresh one. A stream that cannot reorder has nothing
            // queued, and keeps its decoder.
            self.inner = Self::openh264()?;
        }
        Ok(frames)
    }

    /// What this decoder has learnt about the stream it decodes. A decoder shared by several
    /// cameras ([`super::decoders::DecoderPool`]) hands it back with the camera's next keyframe
    /// interval ([`resume`](Self::resume)), so a B-frame stream keeps reordering from its first
    /// picture on.
    pub fn memory(&self) -> StreamMemory {
        StreamMemory {
            sps_reorders: self.sps_reorders,
            seen_b: self.seen_b,
        }
    }

    /// Takes up a stream at its next IDR with what a decoder learnt about it before.
    pub fn resume(&mut self, memory: StreamMemory) {
        self.sps_reorders = memory.sps_reorders;
        self.seen_b = memory.seen_b;
    }

    /// Learns from an access unit's SPS whether the stream may reorder; true when it carries a
    /// B slice (`slice_type` 1 or 6).
    fn observe(&mut self, annexb: &[u8]) -> bool {
        let mut has_b = false;
        for nal in nal_payloads(annexb) {
            match nal[0] & 0x1f {
                7 => {
                    if let Some(sps) = SpsInfo::parse(nal) {
                        self.sps_reorders = sps.may_reorder();
                    }
                }
                1 | 5 => has_b |= slice_start(nal).is_some_and(|(_, t)| t % 5 == 1),
                _ => {}
            }
        }
        has_b
    }
}

/// What a decoder learnt about one stream's reordering ([`H264Decoder::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamMemory {
    sps_reorders: bool,
    seen_b: bool,
}

/// What the ingest needs from a sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpsInfo {
    /// 66 Baseline, 77 Main, 100 High, …
    pub profile_idc: u8,
    /// 0 or 1: pictures may be output in another order than decoded; 2: they may not.
    pub pic_order_cnt_type: u32,
    /// From the VUI bitstream restriction, when present.
    pub max_num_reorder_frames: Option<u32>,
    /// Frame rate from the VUI timing info (`time_scale / (2 * num_units_in_tick)`), when present.
    pub fps: Option<f64>,
}

impl SpsInfo {
    /// Parses an SPS NAL unit (starting at its header byte, no start code). `None` when it is
    /// not an SPS or is truncated/corrupt.
    pub fn parse(nal: &[u8]) -> Option<Self> {
        if nal.first()? & 0x1f != 7 {
            return None;
        }
        let rbsp = unescape(&nal[1..]);
        let mut r = Bits::new(&rbsp);
        let profile_idc = r.u(8)? as u8;
        r.u(16)?; // constraint flags, level_idc
        r.ue()?; // seq_parameter_set_id
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            if r.ue()? == 3 {
                r.u(1)?; // separate_colour_plane_flag
            }
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.u(1)?; // qpprime_y_zero_transform_bypass_flag
            if r.u(1)? == 1 {
                // seq_scaling_matrix_present: skip the scaling lists.
                for i in 0..8 {
                    if r.u(1)? == 1 {
                        let size = if i < 6 { 16 } else { 64 };
                        let (mut last, mut next) = (8i64, 8i64);
                        for _ in 0..size {
                            if next != 0 {
                                next = (last + r.se()? + 256) % 256;
                            }
                            last = if next == 0 { last } else { next };
                        }
                    }
                }
            }
        }
        r.ue()?; // log2_max_frame_num_minus4
        let pic_order_cnt_type = r.ue()?;
        match pic_order_cnt_type {
            0 => {
                r.ue()?;
            }
            1 => {
                r.u(1)?;
                r.se()?;
                r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return None;
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            2 => {}
            _ => return None,
        }
        r.ue()?; // max_num_ref_frames
        r.u(1)?; // gaps_in_frame_num_value_allowed_flag
        r.ue()?; // pic_width_in_mbs_minus1
        r.ue()?; // pic_height_in_map_units_minus1
        if r.u(1)? == 0 {
            r.u(1)?; // mb_adaptive_frame_field_flag
        }
        r.u(1)?; // direct_8x8_inference_flag
        if r.u(1)? == 1 {
            for _ in 0..4 {
                r.ue()?; // frame_crop_*_offset
            }
        }
        let mut info = SpsInfo {
            profile_idc,
            pic_order_cnt_type,
            max_num_reorder_frames: None,
            fps: None,
        };
        if r.u(1)? == 1 {
            info.parse_vui(&mut r);
        }
        Some(info)
    }

    /// Reads what it can of the VUI; stops quietly at anything truncated.
    fn parse_vui(&mut self, r: &mut Bits) -> Option<()> {
        if r.u(1)? == 1 && r.u(8)? == 255 {
            r.u(32)?; // sar_width, sar_height
        }
        if r.u(1)? == 1 {
            r.u(1)?; // overscan_appropriate_flag
        }
        if r.u(1)? == 1 {
            r.u(4)?; // video_format, video_full_range_flag
            if r.u(1)? == 1 {
                r.u(24)?; // colour description
            }
        }
        if r.u(1)? == 1 {
            r.ue()?;
            r.ue()?; // chroma sample locations
        }
        if r.u(1)? == 1 {
            let (ticks, scale) = (r.u(32)?, r.u(32)?);
            r.u(1)?; // fixed_frame_rate_flag
            let fps = f64::from(scale) / (2.0 * f64::from(ticks));
            self.fps = (ticks > 0 && (1.0..=300.0).contains(&fps)).then_some(fps);
        }
        let nal_hrd = r.u(1)? == 1;
        if nal_hrd {
            skip_hrd(r)?;
        }
        let vcl_hrd = r.u(1)? == 1;
        if vcl_hrd {
            skip_hrd(r)?;
        }
        if nal_hrd || vcl_hrd {
            r.u(1)?; // low_delay_hrd_flag
        }
        r.u(1)?; // pic_struct_present_flag
        if r.u(1)? == 1 {
            r.u(1)?; // motion_vectors_over_pic_boundaries_flag
            for _ in 0..4 {
                r.ue()?; // max_bytes_per_pic_denom .. log2_max_mv_length_vertical
            }
            self.max_num_reorder_frames = Some(r.ue()?);
        }
        Some(())
    }

    /// True when pictures may be output in another order than they are decoded.
    pub fn may_reorder(&self) -> bool {
        !(matches!(self.profile_idc, 66)
            || self.pic_order_cnt_type == 2
            || self.max_num_reorder_frames == Some(0))
    }
}

fn skip_hrd(r: &mut Bits) -> Option<()> {
    let count = r.ue()? + 1;
    if count > 32 {
        return None;
    }
    r.u(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..count {
        r.ue()?;
        r.ue()?;
        r.u(1)?;
    }
    r.u(20).map(|_| ()) // four 5-bit lengths
}

/// `(first_mb_in_slice, slice_type)` of a slice NAL unit (header byte first, no start code).
pub fn slice_start(nal: &[u8]) -> Option<(u32, u32)> {
    let head = nal.get(1..nal.len().min(17))?;
    let rbsp = unescape(head);
    let mut r = Bits::new(&rbsp);
    Some((r.ue()?, r.ue()?))
}

/// The NAL units of an Annex B buffer without their start codes (header byte first).
pub fn nal_payloads(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(annexb).filter_map(|nal| {
        let start = nal.iter().position(|&b| b == 1)?;
        nal.get(start + 1..).filter(|p| !p.is_empty())
    })
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// An MSB-first bit reader with Exp-Golomb codes; `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn u(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            v = (v << 1) | u64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        u32::try_from(v).ok()
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.u(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = u64::from(self.u(zeros)?);
        u32::try_from((1u64 << zeros) - 1 + rest).ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// NAL unit types (`nal_unit_type`, 0..=31) of an Annex B buffer, in order: 5 is an IDR slice,
/// 1 a non-IDR slice, 7 SPS, 8 PPS, 6 SEI. Callers joining a stream can wait for 5.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    nal_payloads(annexb).map(|nal| nal[0] & 0x1f).collect()
}

/// True when the access unit carries an IDR slice: decoding can start here with no picture
/// from before (closed keyframe interval), on any decoder.
/// The first slice decides (a picture's slices are all IDR or none, H.264 7.4.1.2.4), so the
/// scan stops there, a few bytes in, instead of walking the whole unit (it runs on every unit of
/// every camera sharing decoders).
pub fn is_idr(annexb: &[u8]) -> bool {
    let mut rest = annexb;
    while let Some(at) = start_code(rest) {
        let Some(&header) = rest.get(at + 3) else {
            return false;
        };
        match header & 0x1f {
            5 => return true,
            1..=4 => return false,
            _ => rest = &rest[at + 3..],
        }
    }
    false
}

/// Where the first `00 00 01` start code in `data` begins (also inside `00 00 00 01`).
fn start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1])
}

/// True when `data` contains a `00 00 01` start code (which also covers `00 00 00 01`).
fn has_start_code(data: &[u8]) -> bool {
    start_code(data).is_some()
}

/// A view of openh264's strided planes, checked to cover the picture.
fn view_picture(p: &impl YUVSource) -> Result<YuvView<'_>, DecodeError> {
    let (w, h) = p.dimensions();
    let (sy, su, sv) = p.strides();
    let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(DecodeError::Corrupt(format!(
            "picture size {w}x{h} out of range"
        )));
    };
    let view = YuvView {
        width,
        height,
        planes: [p.y(), p.u(), p.v()],
        strides: [sy, su, sv],
    };
    view.check().map_err(DecodeError::Corrupt)?;
    Ok(view)
}

/// A picture in the decoder's buffers (checked to cover its size), until the next decode.
pub struct Picture<'a>(openh264::decoder::DecodedYUV<'a>);

impl Picture<'_> {
    pub fn view(&self) -> YuvView<'_> {
        let (w, h) = self.0.dimensions();
        let (sy, su, sv) = self.0.strides();
        YuvView {
            width: w as u32,
            height: h as u32,
            planes: [self.0.y(), self.0.u(), self.0.v()],
            strides: [sy, su, sv],
        }
    }
}

/// A borrowed I420 picture: three planes with their row strides (a decoder's own buffers, or a
/// [`YuvFrame`]'s). Same sample ranges as [`YuvFrame`].
#[derive(Debug, Clone, Copy)]
pub struct YuvView<'a> {
    pub width: u32,
    pub height: u32,
    /// Y, U (Cb), V (Cr).
    pub planes: [&'a [u8]; 3],
    /// Bytes from one row to the next, per plane.
    pub strides: [usize; 3],
}

impl YuvView<'_> {
    /// Width and height of each plane: the picture's, then `ceil(w/2) x ceil(h/2)` twice.
    pub fn plane_sizes(&self) -> [(usize, usize); 3] {
        let (w, h) = (self.width as usize, self.height as usize);
        let c = (w.div_ceil(2), h.div_ceil(2));
        [(w, h), c, c]
    }

    /// `Err` (why) unless the picture is non-empty and every plane covers its rows at its stride.
    pub fn check(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("empty {}x{} picture", self.width, self.height));
        }
        for (i, (w, h)) in self.plane_sizes().into_iter().enumerate() {
            let stride = self.strides[i];
            let need = stride.checked_mul(h - 1).and_then(|n| n.checked_add(w));
            if stride < w || need.is_none_or(|n| self.planes[i].len() < n) {
                return Err(format!(
                    "{} plane too short: {} bytes for {w}x{h} with stride {stride}",
                    ["Y", "U", "V"][i],
                    self.planes[i].len()
                ));
            }
        }
        Ok(())
    }

    /// Row `row` of plane `plane` (`0..3`), without the stride padding.
    pub fn row(&self, plane: usize, row: usize) -> &[u8] {
        let (w, _) = self.plane_sizes()[plane];
        let start = row * self.strides[plane];
        &self.planes[plane][start..start + w]
    }

    /// A tightly packed copy (call [`check`](Self::check) first; short planes panic).
    pub fn to_frame(&self) -> YuvFrame {
        let sizes = self.plane_sizes();
        let plane = |i: usize| {
            let mut out = Vec::with_capacity(sizes[i].0 * sizes[i].1);
            for r in 0..sizes[i].1 {
                out.extend_from_slice(self.row(i, r));
            }
            out
        };
        YuvFrame {
            width: self.width,
            height: self.height,
            y: plane(0),
            u: plane(1),
            v: plane(2),
        }
    }
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
    /// The frame as a [`YuvView`] (tight strides).
    pub fn view(&self) -> YuvView<'_> {
        let (cw, _) = self.chroma_size();
        YuvView {
            width: self.width,
            height: self.height,
            planes: [&self.y, &self.u, &self.v],
            strides: [self.width as usize, cw, cw],
        }
    }

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
mod tests;
