//! The synthetic camera: a deterministic scene of moving coloured objects, encoded to H.264.
//!
//! It owns the scene (a static, low-contrast textured background plus `objects` solid shapes that
//! bounce around the frame) and an openh264 encoder. The camera source actor calls
//! [`SyntheticCamera::next_frame`] once per frame interval and ships the Annex B bytes as if they
//! came off the wire; tests and benches call [`SyntheticCamera::render_rgb`] to get pixels and
//! ground truth for any frame index without encoding. Rendering is a pure function of
//! `(SceneConfig, index)`: positions are closed-form triangle waves, so frame N never needs
//! frames 0..N. Bad configuration is rejected by [`SyntheticCamera::new`] with a
//! [`SyntheticError`] naming the field to fix; encoder failures surface from `next_frame`.

use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, QpRange, RateControlMode,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::TruthBox;

/// The fixed object palette: label (the class a detector should report) and RGB colour.
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

/// Largest number of objects a scene may hold.
pub const MAX_OBJECTS: u32 = 16;

/// What the synthetic camera films.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SceneConfig {
    /// Frame width in pixels: even, 64 ..= 3840.
    pub width: u32,
    /// Frame height in pixels: even, 64 ..= 2160.
    pub height: u32,
    /// Frames per second: 1 ..= 120. Also the keyframe interval (one IDR per second).
    pub fps: u32,
    /// Number of moving objects: 0 ..= 16.
    pub objects: u32,
    /// Seed for background texture, object sizes, start positions and velocities.
    pub seed: u64,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 25,
            objects: 3,
            seed: 1,
        }
    }
}

/// Why the synthetic camera could not be built or could not produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// The scene configuration is out of range.
    #[error("invalid synthetic scene: {0}; fix the synthetic camera settings")]
    Config(String),
    /// openh264 refused to create the encoder or to encode a frame.
    #[error(
        "H.264 encoding of synthetic frame {index} failed: {reason}; this is an encoder bug or an unsupported size, try a smaller resolution"
    )]
    Encode {
        /// Frame index that failed.
        index: u64,
        /// openh264's description.
        reason: String,
    },
}

/// One encoded frame of the synthetic camera and what it shows.
#[derive(Debug, Clone)]
pub struct SyntheticFrame {
    /// Frame number, 0-based; frame `i` is shown at `i / fps` seconds.
    pub index: u64,
    /// Annex B access unit (start codes; SPS and PPS precede every IDR).
    pub annexb: Vec<u8>,
    /// Ground truth: one box per object, in object order.
    pub truth: Vec<TruthBox>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Rect,
    Circle,
}

/// Immutable description of one object; its position is derived from the frame index.
#[derive(Debug, Clone)]
struct Object {
    label: &'static str,
    colour: [u8; 3],
    shape: Shape,
    /// Drawn size in pixels (for circles both equal the diameter).
    w: u32,
    h: u32,
    /// Start position of the top-left corner, in pixels.
    x0: f64,
    y0: f64,
    /// Velocity in pixels per frame.
    vx: f64,
    vy: f64,
}

impl Object {
    /// Top-left corner at frame `index`: straight-line motion folded into `[0, W - w]` (bouncing).
    fn position(&self, index: u64, width: u32, height: u32) -> (i64, i64) {
        let t = index as f64;
        let x = bounce(
            self.x0 + self.vx * t,
            f64::from(width.saturating_sub(self.w)),
        );
        let y = bounce(
            self.y0 + self.vy * t,
            f64::from(height.saturating_sub(self.h)),
        );
        (x.round() as i64, y.round() as i64)
    }
}

/// Triangle wave: reflects `p` into `[0, range]` as if it bounced off both ends.
fn bounce(p: f64, range: f64) -> f64 {
    if range <= 0.0 {
        return 0.0;
    }
    let m = p.rem_euclid(2.0 * range);
    if m > range { 2.0 * range - m } else { m }
}

/// A deterministic moving-object scene plus an H.264 encoder: a camera without hardware.
pub struct SyntheticCamera {
    cfg: SceneConfig,
    background: Vec<u8>,
    objects: Vec<Object>,
    encoder: Encoder,
    next_index: u64,
}

impl SyntheticCamera {
    /// Validates `cfg`, lays out the scene and creates the encoder.
    pub fn new(cfg: SceneConfig) -> Result<Self, SyntheticError> {
        Self::validate(&cfg)?;
        let background = render_background(&cfg);
        let objects = layout_objects(&cfg);
        let bits = (f64::from(cfg.width) * f64::from(cfg.height) * f64::from(cfg.fps) * 0.2)
            .clamp(500_000.0, 40_000_000.0) as u32;
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .bitrate(BitRate::from_bps(bits))
            .max_frame_rate(FrameRate::from_hz(cfg.fps as f32))
            // Constant QP (26, openh264's base): clean, predictable frames and no frame skipping.
            // The bitrate modes warn on stderr when skipping is off, and would drop frames if on.
            .rate_control_mode(RateControlMode::Off)
            .skip_frames(false)
            .qp(QpRange::new(8, 36))
            .intra_frame_period(IntraFramePeriod::from_num_frames(cfg.fps))
            .num_threads(1);
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(encode_err(0))?;
        Ok(Self {
            cfg,
            background,
            objects,
            encoder,
            next_index: 0,
        })
    }

    /// Checks `cfg` without building anything (config parsing calls this); the error names the
    /// field to fix.
    pub fn validate(cfg: &SceneConfig) -> Result<(), SyntheticError> {
        let (w, h) = (cfg.width, cfg.height);
        let problem = if !w.is_multiple_of(2) || !h.is_multiple_of(2) || w < 64 || h < 64 {
            format!("size {w}x{h} must be even and at least 64x64")
        } else if w > 3840 || h > 2160 {
            format!("size {w}x{h} exceeds 3840x2160, the encoder's limit")
        } else if !(1..=120).contains(&cfg.fps) {
            format!("fps {} must be 1 ..= 120", cfg.fps)
        } else if cfg.objects > MAX_OBJECTS {
            format!("objects {} must be 0 ..= {MAX_OBJECTS}", cfg.objects)
        } else {
            return Ok(());
        };
        Err(SyntheticError::Config(problem))
    }

    /// The configuration this camera was built with.
    pub fn config(&self) -> &SceneConfig {
        &self.cfg
    }

    /// Index the next call to [`next_frame`](Self::next_frame) will produce.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Renders the next frame, encodes it to H.264 (baseline, an IDR with SPS/PPS every `fps`
    /// frames so a decoder joining late recovers within a second) and returns the Annex B bytes
    /// with the frame's ground truth.
    pub fn next_frame(&mut self) -> Result<SyntheticFrame, SyntheticError> {
        let index = self.next_index;
        let (rgb, truth) = self.render_rgb(index);
        let dims = (self.cfg.width as usize, self.cfg.height as usize);
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, dims));
        if index > 0 && index.is_multiple_of(u64::from(self.cfg.fps)) {
            self.encoder.force_intra_frame();
        }
        let millis = index.saturating_mul(1000) / u64::from(self.cfg.fps);
        let annexb = self
            .encoder
            .encode_at(&yuv, Timestamp::from_millis(millis))
            .map_err(encode_err(index))?
            .to_vec();
        if annexb.is_empty() {
            return Err(SyntheticError::Encode {
                index,
                reason: "encoder produced no output (frame skipped)".into(),
            });
        }
        self.next_index += 1;
        Ok(SyntheticFrame {
            index,
            annexb,
            truth,
        })
    }

    /// Renders frame `index` without encoding: RGB8, row-major, stride `width * 3`, plus the
    /// ground truth. Deterministic in `(config, index)`.
    pub fn render_rgb(&self, index: u64) -> (Vec<u8>, Vec<TruthBox>) {
        let mut rgb = self.background.clone();
        let (w, h) = (self.cfg.width, self.cfg.height);
        let truth = self
            .objects
            .iter()
            .map(|o| {
                let (x, y) = o.position(index, w, h);
                let extent = draw(&mut rgb, w, h, o, x, y);
                truth_box(o, (x, y), extent, w, h)
            })
            .collect();
        (rgb, truth)
    }
}

fn encode_err(index: u64) -> impl Fn(openh264::Error) -> SyntheticError {
    move |e| SyntheticError::Encode {
        index,
        reason: e.to_string(),
    }
}

/// SplitMix64 finaliser: a cheap, well-mixed hash for texture values and seed derivation.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Smooth gradient plus a fixed 8x8-block texture of at most ±10 levels.
fn render_background(cfg: &SceneConfig) -> Vec<u8> {
    let (w, h) = (cfg.width as usize, cfg.height as usize);
    let mut out = vec![0u8; w * h * 3];
    let blocks_per_row = w.div_ceil(8);
    for y in 0..h {
        for x in 0..w {
            let fx = x as f32 / w as f32;
            let fy = y as f32 / h as f32;
            let block = ((y / 8) * blocks_per_row + x / 8) as u64;
            let noise = (mix(cfg.seed ^ mix(block)) % 21) as f32 - 10.0;
            let base = [
                70.0 + 40.0 * fx,
                80.0 + 30.0 * fy,
                95.0 + 20.0 * (fx + fy) * 0.5,
            ];
            let px = &mut out[(y * w + x) * 3..][..3];
            for (c, b) in px.iter_mut().zip(base) {
                *c = (b + noise).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

fn layout_objects(cfg: &SceneConfig) -> Vec<Object> {
    let min_dim = f64::from(cfg.width.min(cfg.height));
    (0..cfg.objects)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed) ^ mix(u64::from(i) + 1));
            let (label, colour) = PALETTE[i as usize % PALETTE.len()];
            let shape = if i % 2 == 0 {
                Shape::Rect
            } else {
                Shape::Circle
            };
            let size = (min_dim * rng.random_range(0.08..=0.14)).round().max(2.0);
            let (w, h) = match shape {
                Shape::Circle => (size as u32, size as u32),
                Shape::Rect => {
                    let aspect: f64 = rng.random_range(0.8..=1.25);
                    let h = (size * aspect)
                        .clamp(min_dim * 0.08, min_dim * 0.14)
                        .round();
                    (size as u32, h.max(2.0) as u32)
                }
            };
            let x0 = rng.random_range(0.0..=f64::from(cfg.width - w));
            let y0 = rng.random_range(0.0..=f64::from(cfg.height - h));
            let speed = min_dim * rng.random_range(0.6..=1.0) / f64::from(cfg.fps);
            let angle = rng.random_range(0.0..std::f64::consts::TAU);
            Object {
                label,
                colour,
                shape,
                w,
                h,
                x0,
                y0,
                vx: speed * angle.cos(),
                vy: speed * angle.sin(),
            }
        })
        .collect()
}

/// Pixel extent `[x1, y1, x2, y2)` actually written; `None` when nothing landed in the frame.
type Extent = Option<[i64; 4]>;

/// Draws `o` with its top-left corner at `(x, y)`, clipped to the frame; returns what was drawn.
fn draw(rgb: &mut [u8], width: u32, height: u32, o: &Object, x: i64, y: i64) -> Extent {
    let (fw, fh) = (i64::from(width), i64::from(height));
    let (ow, oh) = (i64::from(o.w), i64::from(o.h));
    let mut ext: Extent = None;
    for py in y.max(0)..(y + oh).min(fh) {
        // Horizontal span of this row, in absolute pixels.
        let (sx, ex) = match o.shape {
            Shape::Rect => (x, x + ow),
            Shape::Circle => {
                let r = ow as f64 / 2.0;
                let dy = (py - y) as f64 + 0.5 - r;
                let half2 = r * r - dy * dy;
                if half2 < 0.0 {
                    continue;
                }
                // Pixel centres px + 0.5 with |px + 0.5 - cx| <= half are inside the disc.
                let half = half2.sqrt();
                let cx = x as f64 + r;
                (
                    (cx - half - 0.5).ceil() as i64,
                    (cx + half - 0.5).floor() as i64 + 1,
                )
            }
        };
        let (sx, ex) = (sx.max(0), ex.min(fw));
        if sx >= ex {
            continue;
        }
        let row = (py * fw) as usize * 3;
        for px in rgb[row + sx as usize * 3..row + ex as usize * 3].chunks_exact_mut(3) {
            px.copy_from_slice(&o.colour);
        }
        ext = Some(match ext {
            None => [sx, py, ex, py + 1],
            Some([x1, y1, x2, _]) => [x1.min(sx), y1, x2.max(ex), py + 1],
        });
    }
    ext
}

fn truth_box(o: &Object, (x, y): (i64, i64), extent: Extent, width: u32, height: u32) -> TruthBox {
    let ext = extent.unwrap_or([0, 0, 0, 0]);
    let [x1, y1, x2, y2] = ext.map(|v| v as f32);
    // Wholly visible when the unclipped shape lies inside the frame and something was drawn.
    let full = extent.is_some()
        && x >= 0
        && y >= 0
        && x + i64::from(o.w) <= i64::from(width)
        && y + i64::from(o.h) <= i64::from(height);
    TruthBox {
        label: o.label.to_string(),
        bbox: [x1, y1, x2, y2],
        fully_visible: full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(width: u32, height: u32, objects: u32, seed: u64) -> SyntheticCamera {
        let cfg = SceneConfig {
            width,
            height,
            fps: 25,
            objects,
            seed,
        };
        match SyntheticCamera::new(cfg) {
            Ok(c) => c,
            Err(e) => panic!("camera: {e}"),
        }
    }

    fn centre(b: &TruthBox) -> (f32, f32) {
        ((b.bbox[0] + b.bbox[2]) / 2.0, (b.bbox[1] + b.bbox[3]) / 2.0)
    }

    fn colour_of(label: &str) -> [u8; 3] {
        PALETTE
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, c)| *c)
            .unwrap_or([0, 0, 0])
    }

    /// The same seed renders byte-identical frames and truth (also out of order); another seed
    /// renders different pictures and positions.
    #[test]
    fn deterministic_per_seed() {
        let a = camera(320, 240, 5, 7);
        let b = camera(320, 240, 5, 7);
        let later = a.render_rgb(37);
        for i in [0u64, 1, 12, 37, 400] {
            assert_eq!(a.render_rgb(i), b.render_rgb(i), "frame {i}");
        }
        assert_eq!(a.render_rgb(37), later);
        let (rgb_c, truth_c) = camera(320, 240, 5, 8).render_rgb(37);
        assert_ne!(later.0, rgb_c);
        assert_ne!(later.1, truth_c);
    }

    /// Over 500 frames every truth box stays inside the frame, is fully visible and has the
    /// configured size range (8 % ..= 14 % of the short side, ±1 px of rounding).
    #[test]
    fn truth_stays_inside_frame() {
        let (w, h) = (320u32, 240u32);
        let cam = camera(w, h, 16, 3);
        for i in 0..500 {
            let (_, truth) = cam.render_rgb(i);
            assert_eq!(truth.len(), 16);
            for t in &truth {
                let [x1, y1, x2, y2] = t.bbox;
                assert!(x1 >= 0.0 && y1 >= 0.0, "frame {i}: {t:?}");
                assert!(x2 <= w as f32 && y2 <= h as f32, "frame {i}: {t:?}");
                assert!(t.fully_visible, "frame {i}: {t:?}");
                for side in [x2 - x1, y2 - y1] {
                    assert!(
                        (0.08 * 240.0 - 1.0..=0.14 * 240.0 + 1.0).contains(&side),
                        "{t:?}"
                    );
                }
            }
        }
    }

    /// Every object travels at least half the short side per second of video (bounces included).
    #[test]
    fn objects_move() {
        let cam = camera(640, 480, 8, 11);
        let fps = cam.config().fps as u64;
        let mut path = [0f32; 8];
        let mut prev = cam.render_rgb(100).1;
        for i in 101..=100 + fps {
            let now = cam.render_rgb(i).1;
            for (k, (a, b)) in prev.iter().zip(&now).enumerate() {
                let ((ax, ay), (bx, by)) = (centre(a), centre(b));
                path[k] += ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
            }
            prev = now;
        }
        for (k, p) in path.iter().enumerate() {
            assert!(
                *p >= 0.5 * 480.0,
                "object {k} moved only {p} px in one second"
            );
            assert!(
                *p <= 1.05 * 480.0,
                "object {k} moved {p} px, faster than configured"
            );
        }
    }

    /// The pixel at each truth box centre has the object's palette colour (unless a later object
    /// covers it), and a background pixel is not a palette colour.
    #[test]
    fn centre_pixel_has_object_colour() {
        let (w, h) = (640usize, 480usize);
        let cam = camera(w as u32, h as u32, 8, 5);
        for i in [0u64, 33, 250] {
            let (rgb, truth) = cam.render_rgb(i);
            for (k, t) in truth.iter().enumerate() {
                let (cx, cy) = centre(t);
                let covered = truth[k + 1..].iter().any(|o| {
                    cx >= o.bbox[0] && cx < o.bbox[2] && cy >= o.bbox[1] && cy < o.bbox[3]
                });
                if covered {
                    continue;
                }
                let at = (cy as usize * w + cx as usize) * 3;
                assert_eq!(rgb[at..at + 3], colour_of(&t.label), "frame {i} {t:?}");
            }
        }
        let empty = camera(w as u32, h as u32, 0, 5).render_rgb(0).0;
        let px = &empty[(h / 2 * w + w / 2) * 3..][..3];
        assert!(PALETTE.iter().all(|(_, c)| c != px));
    }

    /// Invalid configurations are rejected by `validate` and `new` with an error, not a panic.
    #[test]
    fn invalid_config_rejected() {
        let ok = SceneConfig::default();
        for bad in [
            SceneConfig { width: 641, ..ok },
            SceneConfig { height: 62, ..ok },
            SceneConfig { width: 3842, ..ok },
            SceneConfig { fps: 0, ..ok },
            SceneConfig { fps: 121, ..ok },
            SceneConfig { objects: 17, ..ok },
        ] {
            assert!(SyntheticCamera::validate(&bad).is_err(), "{bad:?}");
            assert!(
                matches!(SyntheticCamera::new(bad), Err(SyntheticError::Config(_))),
                "{bad:?}"
            );
        }
        assert!(SyntheticCamera::validate(&ok).is_ok());
        assert!(SyntheticCamera::new(ok).is_ok());
    }
}
