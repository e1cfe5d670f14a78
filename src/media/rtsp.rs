//! STUB (being written): RTSP source over retina.
use super::source::{EncodedUnit, FrameSource, SourceError};
use crate::config::CameraConfig;

pub struct RtspSource;

impl RtspSource {
    pub fn open(camera: &CameraConfig, _url: &url::Url) -> Result<Self, SourceError> {
        Err(SourceError::Unsupported { camera: camera.id.clone(), reason: "RTSP not built yet".into() })
    }
}

impl FrameSource for RtspSource {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        Ok(None)
    }
}
