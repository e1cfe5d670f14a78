//! Where a camera's encoded video comes from. `SourceOpener` hides the kind of source (synthetic
//! now; RTSP and files later) so the capture loop and its retries can be tested with any source,
//! including ones that fail or panic on purpose. `Sampler` keeps frames at `sample_fps`.

use super::TruthBox;
use super::synthetic::{SceneConfig, SyntheticCamera};
use crate::config::{CameraConfig, SourceUrl};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One H.264 access unit (Annex B) and when it was captured.
#[derive(Debug, Clone)]
pub struct EncodedUnit {
    pub annexb: Vec<u8>,
    /// Microseconds since the Unix epoch.
    pub capture_us: i64,
    /// Ground truth of synthetic frames, in the source's pixel size.
    pub truth: Vec<TruthBox>,
    /// Pixel size of the source picture (for scaling the truth).
    pub source_size: (u32, u32),
}

/// Why a source stopped delivering. Messages name the camera and never carry credentials
/// (sources build them from redacted URLs).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("camera {camera}: cannot open source: {reason}")]
    Open { camera: String, reason: String },
    #[error("camera {camera}: source failed: {reason}")]
    Read { camera: String, reason: String },
    #[error("camera {camera}: the stream ended (server closed the connection)")]
    Disconnected { camera: String },
    #[error("camera {camera}: no frame for {after:?} (stalled stream)")]
    Stalled {
        camera: String,
        after: std::time::Duration,
    },
    #[error("camera {camera}: unsupported stream: {reason}")]
    Unsupported { camera: String, reason: String },
}

impl SourceError {
    /// The `reason` label of `framewire_camera_reconnects_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Open { .. } => "open",
            SourceError::Read { .. } => "error",
            SourceError::Disconnected { .. } => "disconnect",
            SourceError::Stalled { .. } => "stall",
            SourceError::Unsupported { .. } => "unsupported",
        }
    }
}

/// A source of access units. `next_unit` blocks until the next one (pacing real time where the
/// source is live or `pace = "realtime"`) and must return within the camera's `stall_timeout`
/// (with `Err(Stalled)`) when nothing arrives; `Ok(None)` means the source has ended (end of a
/// file), after which the caller flushes the decoder.
pub trait FrameSource: Send {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError>;

    /// After the end (`Ok(None)`), starts the source again from its beginning, keeping its
    /// schedule (a looped file). `Ok(false)` when it cannot: the caller opens it anew.
    fn rewind(&mut self) -> Result<bool, SourceError> {
        Ok(false)
    }
}

/// Opens sources for cameras.
pub trait SourceOpener: Send + Sync + 'static {
    fn open(
        &self,
        camera: &CameraConfig,
        url: &SourceUrl,
    ) -> Result<Box<dyn FrameSource>, SourceError>;
}

/// The opener of the product: each URL scheme to its source.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultOpener;

impl SourceOpener for DefaultOpener {
    fn open(
        &self,
        camera: &CameraConfig,
        url: &SourceUrl,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        match url {
            SourceUrl::Synthetic(scene) => Ok(Box::new(SyntheticSource::new(&camera.id, *scene)?)),
            SourceUrl::Rtsp(u) => Ok(Box::new(super::rtsp::RtspSource::open(camera, u)?)),
            SourceUrl::File(path) => Ok(Box::new(super::file::FileSource::open(camera, path)?)),
        }
    }
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The synthetic camera as a live source: renders and encodes in real time at its fps.
pub struct SyntheticSource {
    camera: String,
    cam: SyntheticCamera,
    size: (u32, u32),
    period: Duration,
    next_due: Option<Instant>,
}

impl SyntheticSource {
    pub fn new(camera: &str, scene: SceneConfig) -> Result<Self, SourceError> {
        let size = (scene.width, scene.height);
        let period = Duration::from_secs_f64(1.0 / scene.fps.max(1) as f64);
        let cam = SyntheticCamera::new(scene).map_err(|e| SourceError::Open {
            camera: camera.into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            camera: camera.into(),
            cam,
            size,
            period,
            next_due: None,
        })
    }
}

impl FrameSource for SyntheticSource {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        let now = Instant::now();
        let due = *self.next_due.get_or_insert(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // A slow consumer of this source must not make it burst to catch up.
        self.next_due = Some((due + self.period).max(Instant::now() - self.period));
        let capture_us = now_us();
        let f = self.cam.next_frame().map_err(|e| SourceError::Read {
            camera: self.camera.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(EncodedUnit {
            annexb: f.annexb,
            capture_us,
            truth: f.truth,
            source_size: self.size,
        }))
    }
}

/// Keeps frames at a target rate by capture time: the first frame, then the first frame at or after
/// each due time. Falling behind by more than one period re-anchors instead of bursting.
#[derive(Debug, Clone)]
pub struct Sampler {
    period_us: i64,
    next_due: Option<i64>,
}

impl Sampler {
    pub fn new(sample_fps: f64) -> Self {
        Self {
            period_us: (1e6 / sample_fps.max(1e-3)) as i64,
            next_due: None,
        }
    }

    pub fn keep(&mut self, capture_us: i64) -> bool {
        match self.next_due {
            Some(due) if capture_us < due - self.period_us / 20 => false,
            Some(due) => {
                let next = due + self.period_us;
                self.next_due = Some(if capture_us >= next {
                    capture_us + self.period_us
                } else {
                    next
                });
                true
            }
            None => {
                self.next_due = Some(capture_us + self.period_us);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures sampling 25 fps down to 5 keeps every fifth frame, evenly.
    #[test]
    fn samples_to_rate() {
        let mut s = Sampler::new(5.0);
        let kept: Vec<i64> = (0..100)
            .map(|i| i * 40_000)
            .filter(|t| s.keep(*t))
            .collect();
        assert_eq!(kept.len(), 20);
        assert!(kept.windows(2).all(|w| w[1] - w[0] == 200_000), "{kept:?}");
    }

    /// Ensures a rate at or above the source's keeps every frame, even with jittered timestamps.
    #[test]
    fn keeps_all_when_rate_is_high() {
        let mut s = Sampler::new(25.0);
        let kept = (0..100)
            .map(|i| i * 40_000 + (i % 3) * 700)
            .filter(|t| s.keep(*t))
            .count();
        assert_eq!(kept, 100);
    }
}
