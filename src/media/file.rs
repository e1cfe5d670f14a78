//! STUB (being written): MP4 / Annex B file source.
use super::source::{EncodedUnit, FrameSource, SourceError};
use crate::config::CameraConfig;

pub struct FileSource;

impl FileSource {
    pub fn open(camera: &CameraConfig, _path: &std::path::Path) -> Result<Self, SourceError> {
        Err(SourceError::Unsupported { camera: camera.id.clone(), reason: "files not built yet".into() })
    }
}

impl FrameSource for FileSource {
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        Ok(None)
    }
}
