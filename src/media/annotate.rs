//! Annotation: draws detection boxes and `label confidence` tags onto frames, in place on RGB8
//! buffers ([`Annotator::draw`]) or JPEG to JPEG ([`Annotator::annotate_jpeg`], with the
//! configured [`Codec`]). The output stage calls it before uploading annotated frames; colours
//! come from [`class_colour`] so a class looks the same in every frame and camera. Text uses the
//! bundled DejaVu Sans through ab_glyph. Boxes partly or wholly outside the frame are clamped or
//! skipped, never a panic; a buffer of the wrong length or an undecodable JPEG is an `Err`.

use ab_glyph::{Font, FontArc, Glyph, PxScale, ScaleFont, point};
use thiserror::Error;

use crate::inference::Detection;
use crate::inference::motion::PALETTE;
use crate::media::jpeg::Codec;
use crate::media::planes::{Planes, ycbcr_of};

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Colours for labels outside the palette, picked by an FNV-1a hash of the label.
const HASH_COLOURS: [[u8; 3]; 12] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [0, 128, 128],
    [170, 110, 40],
    [128, 0, 0],
];

/// Why a frame could not be annotated.
#[derive(Debug, Error)]
pub enum AnnotateError {
    #[error(
        "bundled font could not be parsed ({0}); rebuild with a valid assets/fonts/DejaVuSans.ttf"
    )]
    Font(String),
    #[error(
        "image size {width}x{height} is empty or too large; pass a frame of at least 1x1 pixels"
    )]
    BadDimensions { width: u32, height: u32 },
    #[error(
        "RGB buffer has {got} bytes but a {width}x{height} RGB8 image needs {expected}; pass the matching size"
    )]
    BufferLength {
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("JPEG could not be decoded ({0}); skip annotating this frame")]
    Decode(String),
    #[error("JPEG could not be encoded ({0}); check the frame size (at most 65535x65535)")]
    Encode(String),
}

thread_local! {
    /// [`PlanesCanvas`]'s per-sample shares and their list, kept per thread (all zero between
    /// drawings: every tag ends with a flush) so a frame's drawing neither allocates nor zeroes
    /// a chroma plane's worth.
    static SHARES: std::cell::RefCell<(Vec<f32>, Vec<usize>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// Draws detections; holds the parsed font and the JPEG codec, cheap to clone (shared).
#[derive(Clone)]
pub struct Annotator {
    font: FontArc,
    codec: Codec,
}

impl std::fmt::Debug for Annotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Annotator").finish_non_exhaustive()
    }
}

/// What the drawing needs from an image: solid fills and coverage blends, clipped to it. Every
/// drawn pixel's final colour depends only on what is drawn (fills are opaque, text is blended
/// over its filled tag), so drawing on RGB and on YCbCr planes give the same picture.
trait Canvas {
    /// Width and height in pixels.
    fn size(&self) -> (i64, i64);
    /// Fills `[x1, x2) × [y1, y2)` clipped to the image.
    fn fill(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, colour: [u8; 3]);
    /// Blends `colour` over pixel `(x, y)` with weight `coverage`, if the pixel is in the image.
    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], coverage: f32);
    /// Ends a run of blends (one tag's text); canvases that defer work apply it here.
    fn flush(&mut self) {}
}

/// An RGB8 image (stride `w * 3`).
struct RgbCanvas<'a> {
    w: i64,
    h: i64,
    rgb: &'a mut [u8],
}

/// `[a1, a2) ∩ [b1, b2)` clipped to `[0, len)`, or None when empty.
fn span(a1: i64, a2: i64, len: i64) -> Option<(usize, usize)> {
    let (a1, a2) = (a1.clamp(0, len), a2.clamp(0, len));
    (a1 < a2).then_some((a1 as usize, a2 as usize))
}

impl Canvas for RgbCanvas<'_> {
    fn size(&self) -> (i64, i64) {
        (self.w, self.h)
    }

    fn fill(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, colour: [u8; 3]) {
        let (Some((x1, x2)), Some((y1, y2))) = (span(x1, x2, self.w), span(y1, y2, self.h)) else {
            return;
        };
        let w = self.w as usize;
        for y in y1..y2 {
            for px in self.rgb[(y * w + x1) * 3..(y * w + x2) * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&colour);
            }
        }
    }

    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], coverage: f32) {
        if x < 0 || y < 0 || x >= self.w || y >= self.h {
            return;
        }
        let i = (y * self.w + x) as usize * 3;
        for (dst, &ink) in self.rgb[i..i + 3].iter_mut().zip(&colour) {
            *dst = mix(*dst, ink, coverage);
        }
    }
}

/// `old` moved towards `ink` by `weight` (clamped to 0..=1), rounded.
fn mix(old: u8, ink: u8, weight: f32) -> u8 {
    let old = f32::from(old);
    (old + (f32::from(ink) - old) * weight.clamp(0.0, 1.0)).round() as u8
}

/// YCbCr 4:2:0 planes: luma is drawn per pixel; a chroma sample is moved towards the drawn
/// colour by the share of its 2×2 block that was drawn (exactly what subsampling the drawn RGB
/// picture would give). Blended text accumulates that share per sample and applies it at
/// `flush`, so four fully covered pixels move the sample all the way.
struct PlanesCanvas<'a> {
    p: &'a mut Planes,
    /// Share drawn per chroma sample by the blends since the last flush (dense over the chroma
    /// plane, zero elsewhere; with a hash map here the drawing took 23–26 % longer, criterion
    /// `process_batch_25x640x360/draw`).
    shares: &'a mut [f32],
    /// The samples given a share since the last flush, each once (listed when its share leaves 0).
    pending: &'a mut Vec<usize>,
    /// The (Cb, Cr) those blends draw.
    pending_ink: [u8; 2],
}

impl PlanesCanvas<'_> {
    /// Luma pixels of chroma sample `(cx, cy)` that lie inside the image (4, or fewer at odd
    /// right and bottom edges).
    fn block_pixels(&self, cx: usize, cy: usize) -> f32 {
        let (w, h) = (self.p.width as usize, self.p.height as usize);
        ((w - 2 * cx).min(2) * (h - 2 * cy).min(2)) as f32
    }
}

impl Canvas for PlanesCanvas<'_> {
    fn size(&self) -> (i64, i64) {
        (i64::from(self.p.width), i64::from(self.p.height))
    }

    fn fill(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, colour: [u8; 3]) {
        let (w, h) = self.size();
        let (Some((x1, x2)), Some((y1, y2))) = (span(x1, x2, w), span(y1, y2, h)) else {
            return;
        };
        let [yc, cb, cr] = ycbcr_of(colour);
        let width = w as usize;
        for y in y1..y2 {
            self.p.y[y * width + x1..y * width + x2].fill(yc);
        }
        let (cw, _) = self.p.chroma_size();
        for cy in y1 / 2..y2.div_ceil(2) {
            let rows = (y2.min(2 * cy + 2) - y1.max(2 * cy)) as f32;
            for cx in x1 / 2..x2.div_ceil(2) {
                let cols = (x2.min(2 * cx + 2) - x1.max(2 * cx)) as f32;
                let share = rows * cols / self.block_pixels(cx, cy);
                let i = cy * cw + cx;
                self.p.cb[i] = mix(self.p.cb[i], cb, share);
                self.p.cr[i] = mix(self.p.cr[i], cr, share);
            }
        }
    }

    fn blend(&mut self, x: i64, y: i64, colour: [u8; 3], coverage: f32) {
        let (w, h) = self.size();
        if x < 0 || y < 0 || x >= w || y >= h {
            return;
        }
        let [yc, cb, cr] = ycbcr_of(colour);
        if !self.pending.is_empty() && self.pending_ink != [cb, cr] {
            self.flush();
        }
        self.pending_ink = [cb, cr];
        let (x, y) = (x as usize, y as usize);
        let i = y * w as usize + x;
        self.p.y[i] = mix(self.p.y[i], yc, coverage);
        let (cx, cy) = (x / 2, y / 2);
        let share = coverage.clamp(0.0, 1.0) / self.block_pixels(cx, cy);
        let c = cy * self.p.chroma_size().0 + cx;
        if share > 0.0 {
            if self.shares[c] == 0.0 {
                self.pending.push(c);
            }
            self.shares[c] += share;
        }
    }

    fn flush(&mut self) {
        let [cb, cr] = self.pending_ink;
        for i in self.pending.drain(..) {
            let share = std::mem::take(&mut self.shares[i]);
            self.p.cb[i] = mix(self.p.cb[i], cb, share);
            self.p.cr[i] = mix(self.p.cr[i], cr, share);
        }
    }
}

impl Annotator {
    /// Loads the bundled DejaVu Sans font; JPEGs with the default codec.
    pub fn new() -> Result<Self, AnnotateError> {
        Self::with_codec(Codec::default())
    }

    /// Like [`new`](Self::new), decoding and encoding JPEGs with `codec`.
    pub fn with_codec(codec: Codec) -> Result<Self, AnnotateError> {
        let font =
            FontArc::try_from_slice(FONT_BYTES).map_err(|e| AnnotateError::Font(e.to_string()))?;
        Ok(Self { font, codec })
    }

    /// Draws each detection onto the RGB8 image in place: a box outline in the class colour,
    /// `max(2, min(w,h)/240)` px thick, drawn just outside the box edges (so it stands against the
    /// background even when the object has the class colour itself); and the text
    /// `"{label} {confidence:.2}"` (font size `max(12, min(w,h)/30)` px) in black or white on a
    /// filled class-colour tag above the box, or inside its top if there is no room above.
    /// Boxes are clamped to the image; boxes wholly outside it or with non-finite coordinates are
    /// skipped.
    pub fn draw(
        &self,
        width: u32,
        height: u32,
        rgb: &mut [u8],
        detections: &[Detection],
    ) -> Result<(), AnnotateError> {
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3))
            .filter(|&n| n > 0)
            .ok_or(AnnotateError::BadDimensions { width, height })?;
        if rgb.len() != expected {
            return Err(AnnotateError::BufferLength {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        let mut canvas = RgbCanvas {
            w: i64::from(width),
            h: i64::from(height),
            rgb,
        };
        self.draw_on(&mut canvas, detections);
        Ok(())
    }

    /// [`draw`](Self::draw) on YCbCr 4:2:0 planes (a decoded frame), in place.
    pub fn draw_planes(
        &self,
        planes: &mut Planes,
        detections: &[Detection],
    ) -> Result<(), AnnotateError> {
        let (width, height) = (planes.width, planes.height);
        if width == 0 || height == 0 {
            return Err(AnnotateError::BadDimensions { width, height });
        }
        if !planes.is_consistent() {
            let (cw, ch) = planes.chroma_size();
            return Err(AnnotateError::BufferLength {
                width,
                height,
                expected: width as usize * height as usize + 2 * cw * ch,
                got: planes.y.len() + planes.cb.len() + planes.cr.len(),
            });
        }
        let (cw, ch) = planes.chroma_size();
        SHARES.with_borrow_mut(|(shares, pending)| {
            // All zero but for what a drawing that panicked left pending.
            for i in pending.drain(..) {
                shares[i] = 0.0;
            }
            if shares.len() < cw * ch {
                shares.resize(cw * ch, 0.0);
            }
            let mut canvas = PlanesCanvas {
                p: planes,
                shares,
                pending,
                pending_ink: [128, 128],
            };
            self.draw_on(&mut canvas, detections);
            canvas.flush();
        });
        Ok(())
    }

    fn draw_on(&self, canvas: &mut impl Canvas, detections: &[Detection]) {
        let (w, h) = canvas.size();
        let short_side = w.min(h);
        let thickness = (short_side / 240).max(2);
        let font_px = (short_side / 30).max(12) as f32;

        let boxes: Vec<([i64; 4], &Detection)> = detections
            .iter()
            .filter_map(|d| clamp_box(d.bbox, w, h).map(|b| (b, d)))
            .collect();
        // Outlines first, then tags, so no outline crosses another box's text.
        let t = thickness;
        for ([x1, y1, x2, y2], d) in &boxes {
            let colour = class_colour(&d.label);
            // The ring's outer rectangle, kept inside the frame: at a frame edge the outline
            // falls inside the box rather than off the picture.
            let (ox1, oy1) = ((x1 - t).max(0), (y1 - t).max(0));
            let (ox2, oy2) = ((x2 + t).min(w), (y2 + t).min(h));
            canvas.fill(ox1, oy1, ox2, oy1 + t, colour);
            canvas.fill(ox1, oy2 - t, ox2, oy2, colour);
            canvas.fill(ox1, oy1, ox1 + t, oy2, colour);
            canvas.fill(ox2 - t, oy1, ox2, oy2, colour);
        }
        for ([x1, y1, _, _], d) in &boxes {
            self.draw_tag(canvas, (x1 - t).max(0), (y1 - t).max(0), d, font_px);
        }
    }

    /// Draws the `label confidence` tag for a box whose top-left corner is `(x1, y1)`.
    fn draw_tag(&self, canvas: &mut impl Canvas, x1: i64, y1: i64, d: &Detection, font_px: f32) {
        let text = format!("{} {:.2}", d.label, d.confidence);
        let scale = PxScale::from(font_px);
        let font = self.font.as_scaled(scale);
        let mut glyphs: Vec<Glyph> = Vec::new();
        let mut caret = 0.0f32;
        for c in text.chars().filter(|c| !c.is_control()) {
            let id = font.glyph_id(c);
            if let Some(prev) = glyphs.last() {
                caret += font.kern(prev.id, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, 0.0)));
            caret += font.h_advance(id);
        }
        let pad = (font_px / 6.0).ceil() as i64;
        let tag_w = caret.ceil() as i64 + 2 * pad;
        let tag_h = (font.ascent() - font.descent()).ceil() as i64 + 2 * pad;
        let tx = x1.min(canvas.size().0 - tag_w).max(0);
        let ty = if y1 >= tag_h { y1 - tag_h } else { y1 };

        let background = class_colour(&d.label);
        canvas.fill(tx, ty, tx + tag_w, ty + tag_h, background);
        let ink = contrasting_ink(background);
        let origin = point((tx + pad) as f32, (ty + pad) as f32 + font.ascent());
        for mut glyph in glyphs {
            glyph.position = point(origin.x + glyph.position.x, origin.y);
            if let Some(outlined) = self.font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                let (bx, by) = (bounds.min.x as i64, bounds.min.y as i64);
                outlined.draw(|gx, gy, coverage| {
                    canvas.blend(bx + i64::from(gx), by + i64::from(gy), ink, coverage);
                });
            }
        }
        canvas.flush();
    }

    /// Decodes `jpeg` to YCbCr planes, draws `detections`, re-encodes at `quality` (1..=100).
    pub fn annotate_jpeg(
        &self,
        jpeg: &[u8],
        detections: &[Detection],
        quality: u8,
    ) -> Result<Vec<u8>, AnnotateError> {
        let mut planes = self
            .codec
            .decode_planes(jpeg)
            .map_err(|e| AnnotateError::Decode(e.to_string()))?;
        self.annotate_planes(&mut planes, detections, quality)
    }

    /// Draws `detections` on a decoded frame's planes (in place) and encodes it at `quality`
    /// (4:2:0, like the frame it came from).
    pub fn annotate_planes(
        &self,
        planes: &mut Planes,
        detections: &[Detection],
        quality: u8,
    ) -> Result<Vec<u8>, AnnotateError> {
        self.draw_planes(planes, detections)?;
        self.codec
            .encode_planes(planes, quality.clamp(1, 100))
            .map_err(|e| AnnotateError::Encode(e.to_string()))
    }
}

/// Rounds a detection box to pixels and clamps it to the image; `None` if nothing is visible.
fn clamp_box(bbox: [f32; 4], w: i64, h: i64) -> Option<[i64; 4]> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let [a, b, c, d] = bbox.map(|v| v.round() as i64);
    let (x1, x2) = (a.min(c).clamp(0, w), a.max(c).clamp(0, w));
    let (y1, y2) = (b.min(d).clamp(0, h), b.max(d).clamp(0, h));
    (x1 < x2 && y1 < y2).then_some([x1, y1, x2, y2])
}

/// Black on light backgrounds, white on dark ones (Rec. 601 luma).
fn contrasting_ink(background: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = background.map(f32::from);
    if 0.299 * r + 0.587 * g + 0.114 * b > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// Stable colour per class label: palette names (`"red"`, `"green"`, …, case-insensitive) map to
/// their palette RGB; any other label gets one of 12 saturated colours by FNV-1a hash of its bytes.
pub fn class_colour(label: &str) -> [u8; 3] {
    if let Some((_, rgb)) = PALETTE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(label))
    {
        return *rgb;
    }
    let hash = label.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    HASH_COLOURS[hash as usize % HASH_COLOURS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: [u8; 3] = [128, 128, 128];
    const RED: [u8; 3] = [220, 40, 40];

    fn grey(w: usize, h: usize) -> Vec<u8> {
        GREY.repeat(w * h)
    }

    fn px(rgb: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * w + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    fn det(label: &str, bbox: [f32; 4]) -> Detection {
        Detection {
            label: label.into(),
            confidence: 0.87,
            bbox,
        }
    }

    /// The outline covers exactly `thickness` pixels just outside all four edges; the box's inside
    /// and everything beyond the outline stay untouched.
    #[test]
    fn outline_has_class_colour_and_thickness() {
        let (w, h) = (320, 240); // thickness max(2, 240/240) = 2
        let mut rgb = grey(w, h);
        Annotator::new()
            .unwrap()
            .draw(
                w as u32,
                h as u32,
                &mut rgb,
                &[det("red", [100.0, 80.0, 260.0, 200.0])],
            )
            .unwrap();
        for x in 98..262 {
            for y in [78, 79, 200, 201] {
                assert_eq!(px(&rgb, w, x, y), RED, "outline pixel ({x},{y})");
            }
            assert_eq!(px(&rgb, w, x, 202), GREY, "beyond the bottom outline ({x})");
            if (100..260).contains(&x) {
                assert_eq!(px(&rgb, w, x, 80), GREY, "inside top ({x})");
                assert_eq!(px(&rgb, w, x, 199), GREY, "inside bottom ({x})");
            }
        }
        for y in 78..202 {
            for x in [98, 99, 260, 261] {
                assert_eq!(px(&rgb, w, x, y), RED, "outline pixel ({x},{y})");
            }
            assert_eq!(px(&rgb, w, 97, y), GREY, "beyond the left outline ({y})");
            assert_eq!(px(&rgb, w, 262, y), GREY, "beyond the right outline ({y})");
            if (80..200).contains(&y) {
                assert_eq!(px(&rgb, w, 100, y), GREY, "inside left ({y})");
                assert_eq!(px(&rgb, w, 259, y), GREY, "inside right ({y})");
            }
        }
        assert_eq!(
            px(&rgb, w, 250, 77),
            GREY,
            "above the outline, right of the tag"
        );
    }

    /// The tag sits above the box in the class colour and holds rendered (white) text.
    #[test]
    fn tag_above_box_with_text() {
        let (w, h) = (320, 240);
        let mut rgb = grey(w, h);
        Annotator::new()
            .unwrap()
            .draw(
                w as u32,
                h as u32,
                &mut rgb,
                &[det("red", [100.0, 80.0, 260.0, 200.0])],
            )
            .unwrap();
        // Font 12 px: the tag is ~16 px tall and ~60 px wide, directly above the outline (98, 78).
        assert_eq!(px(&rgb, w, 100, 79), RED);
        assert_eq!(px(&rgb, w, 100, 66), RED);
        assert_eq!(px(&rgb, w, 100, 53), GREY, "tag too tall");
        let tag: Vec<[u8; 3]> = (62..78)
            .flat_map(|y| (98..168).map(move |x| (x, y)))
            .map(|(x, y)| px(&rgb, w, x, y))
            .collect();
        let red = tag.iter().filter(|&&p| p == RED).count();
        let ink = tag.iter().filter(|p| p.iter().all(|&c| c > 200)).count();
        assert!(red > 300, "tag background pixels: {red}");
        assert!(ink > 30, "white text pixels: {ink}");
    }

    /// A box at the top edge gets its tag inside the box; light colours get black text.
    #[test]
    fn tag_goes_inside_when_no_room_and_ink_contrasts() {
        let (w, h) = (320, 240);
        let mut rgb = grey(w, h);
        Annotator::new()
            .unwrap()
            .draw(
                w as u32,
                h as u32,
                &mut rgb,
                &[det("yellow", [10.0, 0.0, 200.0, 100.0])],
            )
            .unwrap();
        assert_eq!(
            px(&rgb, w, 40, 15),
            [230, 210, 40],
            "tag (bottom padding) inside the box top"
        );
        assert_eq!(px(&rgb, w, 40, 30), GREY, "below the tag, inside the box");
        let dark = (0..18)
            .flat_map(|y| (10..90).map(move |x| (x, y)))
            .filter(|&(x, y)| px(&rgb, w, x, y).iter().all(|&c| c < 50))
            .count();
        assert!(dark > 30, "black text pixels: {dark}");
        assert_eq!(contrasting_ink(RED), [255, 255, 255]);
    }

    /// Class colours are stable, palette names keep their palette RGB, others are distinct.
    #[test]
    fn class_colours_stable_and_distinct() {
        assert_eq!(class_colour("red"), RED);
        assert_eq!(class_colour("Cyan"), [40, 210, 210]);
        let (person, car) = (class_colour("person"), class_colour("car"));
        assert_eq!(person, class_colour("person"));
        assert!(
            person != car && person != RED && car != RED,
            "{person:?} {car:?}"
        );
        assert!(HASH_COLOURS.contains(&person) && HASH_COLOURS.contains(&car));
    }

    /// Boxes partly or wholly outside the frame, reversed or NaN, are clamped or skipped, no panic.
    #[test]
    fn off_frame_boxes_are_clamped() {
        let (w, h) = (200, 150);
        let mut rgb = grey(w, h);
        let dets = [
            det("green", [-50.0, -50.0, 30.0, 60.0]),
            det("person", [150.0, 100.0, 400.0, 300.0]),
            det("car", [500.0, 500.0, 600.0, 600.0]),
            det("blue", [f32::NAN, 0.0, 10.0, 10.0]),
            det("white", [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30]),
            det("magenta", [60.0, 70.0, 40.0, 50.0]),
        ];
        Annotator::new()
            .unwrap()
            .draw(w as u32, h as u32, &mut rgb, &dets)
            .unwrap();
        assert_eq!(
            px(&rgb, w, 0, 45),
            [40, 200, 60],
            "clamped left edge of green"
        );
        assert_eq!(
            px(&rgb, w, 199, 140),
            class_colour("person"),
            "clamped right edge of person"
        );
        assert_eq!(
            px(&rgb, w, 61, 60),
            [210, 50, 210],
            "reversed box drawn normalised"
        );
        assert_eq!(
            px(&rgb, w, 100, 140),
            GREY,
            "nothing drawn for off-frame and NaN boxes"
        );
    }

    /// A buffer of the wrong length or a zero-sized image is an error, not a panic.
    #[test]
    fn bad_buffers_are_errors() {
        let a = Annotator::new().unwrap();
        let mut rgb = grey(10, 10);
        assert!(matches!(
            a.draw(10, 11, &mut rgb, &[]),
            Err(AnnotateError::BufferLength {
                expected: 330,
                got: 300,
                ..
            })
        ));
        assert!(matches!(
            a.draw(0, 10, &mut [], &[]),
            Err(AnnotateError::BadDimensions { .. })
        ));
    }

    /// Drawing on YCbCr 4:2:0 planes gives the RGB drawing's picture: every pixel of the box
    /// outline's inner half (away from chroma-block edges) has the class colour, text luma matches,
    /// and over the whole frame the two differ by under 2 levels on average.
    #[test]
    fn planes_drawing_matches_rgb_drawing() {
        let (w, h) = (320, 240);
        let dets = [
            det("red", [100.0, 80.0, 260.0, 200.0]),
            det("person", [11.0, 151.0, 77.0, 219.0]),
        ];
        let a = Annotator::new().unwrap();
        let mut rgb = grey(w, h);
        a.draw(w as u32, h as u32, &mut rgb, &dets).unwrap();
        let mut planes = Planes::from_rgb(w as u32, h as u32, &grey(w, h));
        a.draw_planes(&mut planes, &dets).unwrap();
        let drawn = planes.to_rgb();
        let near =
            |p: [u8; 3], q: [u8; 3], tol: u8| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= tol);
        // The red ring is x 98..262, y 78..202, two pixels wide: at even offsets it fills whole
        // chroma blocks.
        for x in (98..262).step_by(7) {
            assert!(
                near(px(&drawn, w, x, 78), RED, 3),
                "({x},78) {:?}",
                px(&drawn, w, x, 78)
            );
            assert!(near(px(&drawn, w, x, 200), RED, 3), "({x},200)");
        }
        assert!(near(px(&drawn, w, 160, 140), GREY, 1), "inside the box");
        let total: u64 = drawn
            .iter()
            .zip(&rgb)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = total as f64 / drawn.len() as f64;
        assert!(mean < 2.0, "mean difference {mean:.2}");
        // Text: the luma of the planes equals the luma of the RGB drawing within rounding.
        let luma_rgb = Planes::from_rgb(w as u32, h as u32, &rgb).y;
        let worst = luma_rgb
            .iter()
            .zip(&planes.y)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 2, "worst luma difference {worst}");
        let mut bad = Planes::grey(4, 4, 0);
        bad.cb.pop();
        assert!(matches!(
            a.draw_planes(&mut bad, &dets),
            Err(AnnotateError::BufferLength { .. })
        ));
    }

    /// annotate_jpeg rejects garbage and round-trips a real JPEG with the box drawn in.
    #[test]
    fn annotate_jpeg_round_trip() {
        let a = Annotator::new().unwrap();
        assert!(matches!(
            a.annotate_jpeg(b"not a jpeg", &[], 80),
            Err(AnnotateError::Decode(_))
        ));
        assert!(a.annotate_jpeg(&[], &[], 80).is_err());
        let (w, h) = (160, 120);
        let mut src = Vec::new();
        jpeg_encoder::Encoder::new(&mut src, 90)
            .encode(
                &grey(w, h),
                w as u16,
                h as u16,
                jpeg_encoder::ColorType::Rgb,
            )
            .unwrap();
        let out = a
            .annotate_jpeg(&src, &[det("blue", [20.0, 40.0, 140.0, 110.0])], 90)
            .unwrap();
        let (dw, dh, rgb) = crate::media::jpeg::decode_rgb(&out).unwrap();
        assert_eq!((dw, dh), (160, 120));
        let near = |p: [u8; 3], q: [u8; 3]| p.iter().zip(q).all(|(&a, b)| a.abs_diff(b) < 40);
        assert!(
            near(px(&rgb, w, 80, 111), [40, 80, 230]),
            "bottom edge {:?}",
            px(&rgb, w, 80, 111)
        );
        assert!(
            near(px(&rgb, w, 80, 80), GREY),
            "inside {:?}",
            px(&rgb, w, 80, 80)
        );
    }

    /// The per-thread shares start every drawing at zero: the same detections on the same
    /// planes give the same pixels whatever was drawn before on this thread (a larger frame,
    /// other text), and text moves chroma as much as on a first drawing.
    #[test]
    fn planes_drawings_do_not_leak_into_each_other() {
        let a = Annotator::new().unwrap();
        let dets = [
            det("red", [30.0, 60.0, 150.0, 150.0]),
            det("person", [160.0, 90.0, 300.0, 200.0]),
        ];
        let fresh = Planes::from_rgb(320, 240, &grey(320, 240));
        let mut first = fresh.clone();
        a.draw_planes(&mut first, &dets).unwrap();
        let mut big = Planes::from_rgb(640, 480, &grey(640, 480));
        a.draw_planes(&mut big, &[det("blue", [10.0, 40.0, 600.0, 400.0])])
            .unwrap();
        let mut again = fresh.clone();
        a.draw_planes(&mut again, &dets).unwrap();
        assert_eq!(first, again);
        assert_ne!(first.cb, fresh.cb, "the drawing moved chroma");
    }
}
