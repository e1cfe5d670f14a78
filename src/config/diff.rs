//! The difference between the running config generation and a newly loaded one: which cameras to
//! start, stop or restart, and which shared parts changed. The supervisor applies it on `SIGHUP`.

use super::{CameraConfig, Config};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigDiff {
    pub cameras_added: Vec<CameraConfig>,
    pub cameras_removed: Vec<String>,
    pub cameras_changed: Vec<CameraConfig>,
    /// `[batch]` changed: every camera's batcher restarts.
    pub batch_changed: bool,
    /// `[kafka]` changed: producer and consumer restart.
    pub kafka_changed: bool,
    /// `[inference]`, `[annotator]` or `[storage]` changed: the process side restarts.
    pub process_changed: bool,
    /// `[supervisor]` changed: takes effect at the next restart of each actor.
    pub supervisor_changed: bool,
    /// `[http]` changed: needs a process restart (the listener is not moved live).
    pub http_changed: bool,
}

// `[media]` is used by both halves: a change restarts every camera (`batch_changed`); a change of
// `jpeg_codec` also restarts the process side (`process_changed`), `decoders` only the cameras.

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut d = ConfigDiff::default();
        for cam in &new.cameras {
            match old.cameras.iter().find(|c| c.id == cam.id) {
                None => d.cameras_added.push(cam.clone()),
                Some(prev) if prev != cam => d.cameras_changed.push(cam.clone()),
                Some(_) => {}
            }
        }
        for cam in &old.cameras {
            if !new.cameras.iter().any(|c| c.id == cam.id) {
                d.cameras_removed.push(cam.id.clone());
            }
        }
        // The batchers encode and size-check messages, and write claim-checked frames.
        let (ok, nk) = (&old.kafka, &new.kafka);
        d.batch_changed = old.batch != new.batch
            || old.media != new.media
            || ok.wire_format != nk.wire_format
            || ok.max_message_bytes != nk.max_message_bytes
            || ok.claim_check != nk.claim_check
            || (nk.claim_check && old.storage != new.storage);
        d.kafka_changed = old.kafka != new.kafka;
        d.process_changed = old.inference != new.inference
            || old.media.jpeg_codec != new.media.jpeg_codec
            || old.annotator != new.annotator
            || old.storage != new.storage;
        d.supervisor_changed = old.supervisor != new.supervisor;
        d.http_changed = old.http != new.http;
        d
    }

    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures added, removed and changed cameras are told apart and untouched ones are not listed.
    #[test]
    fn camera_changes() {
        let old = Config::default();
        let mut new = old.clone();
        new.cameras[1].sample_fps = 2.0;
        new.cameras.remove(0);
        new.cameras
            .push(CameraConfig::synthetic("cam-3", "synthetic://?seed=3"));
        let d = ConfigDiff::between(&old, &new);
        assert_eq!(d.cameras_removed, vec!["cam-1".to_string()]);
        assert_eq!(
            d.cameras_changed
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            vec!["cam-2"]
        );
        assert_eq!(
            d.cameras_added
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            vec!["cam-3"]
        );
        assert!(!d.batch_changed && !d.kafka_changed && !d.process_changed);
        assert!(ConfigDiff::between(&old, &old).is_empty());
    }
}
