//! Storage of a processed batch: annotated frames first, then the results JSON, which marks the
//! batch complete. Keys are a pure function of the batch's identity (`keys`), so a redelivered batch
//! overwrites the same objects: at-least-once delivery, effectively-once results. Backends: a local
//! directory (`file`); S3 arrives with the processing issue.

pub mod file;
pub mod keys;
pub mod results;

pub use file::FileStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("writing {key}: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("invalid storage key {key:?}: {reason}")]
    BadKey { key: String, reason: &'static str },
}

/// A place objects can be put durably. Blocking; callers run it off the async threads.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`; when this returns Ok the object is durable and whole.
    fn put(&self, key: &str, bytes: &[u8], content_type: &str) -> Result<(), StorageError>;
    /// Where this store lives, for logs and `/status` (never with credentials).
    fn describe(&self) -> String;
}
