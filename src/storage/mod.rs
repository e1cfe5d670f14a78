//! Storage of a processed batch: annotated frames first, then the results JSON, which marks the
//! batch complete. Keys are a pure function of the batch's identity (`keys`), so a redelivered batch
//! overwrites the same objects: at-least-once delivery, effectively-once results. The ingest side
//! uses the same store for claim-checked frames of batches too large for the bus (written by the
//! batcher, read back by the consumer). Backends: a local directory (`file`) and S3 (`s3`).

pub mod file;
pub mod keys;
pub mod results;
pub mod s3;

pub use file::FileStorage;

use crate::config::{StorageConfig, StorageKind};
use std::sync::Arc;

/// The store `[storage]` describes.
pub fn open(cfg: &StorageConfig) -> Arc<dyn ObjectStore> {
    match cfg.kind {
        StorageKind::File => Arc::new(FileStorage::new(&cfg.path)),
        StorageKind::S3 => Arc::new(s3::S3Storage::new(cfg)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        source: std::io::Error,
    },
    #[error("{op} {key}: {message}")]
    Remote {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("{key}: no such object")]
    NotFound { key: String },
    #[error("invalid storage key {key:?}: {reason}")]
    BadKey { key: String, reason: &'static str },
}

/// A place objects can be put durably. Blocking; callers run it off the async threads.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`; when this returns Ok the object is durable and whole.
    fn put(&self, key: &str, bytes: &[u8], content_type: &str) -> Result<(), StorageError>;
    /// Stores every object (key, bytes, content type); Ok once all are durable. Stores that can
    /// write several at once do (S3: `upload_concurrency`); the order among them is not kept.
    fn put_all(&self, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StorageError> {
        for (key, bytes, content_type) in &objects {
            self.put(key, bytes, content_type)?;
        }
        Ok(())
    }
    /// The whole object under `key`; `NotFound` when there is none.
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    /// Where this store lives, for logs and `/status` (never with credentials).
    fn describe(&self) -> String;
}
