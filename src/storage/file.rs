//! `storage.kind = "file"`: objects as files under a root directory, key = relative path. Each put
//! writes a temporary file in the target directory, fsyncs it, and renames it into place, so a
//! reader never sees half an object and a crash leaves either the old object or the new one.

use super::{ObjectStore, StorageError};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(StorageError::BadKey {
                key: key.into(),
                reason: "must be a relative path without '..'",
            });
        }
        Ok(self.root.join(rel))
    }
}

impl ObjectStore for FileStorage {
    fn put(&self, key: &str, bytes: &[u8], _content_type: &str) -> Result<(), StorageError> {
        let io = |source| StorageError::Io {
            op: "writing",
            key: key.to_string(),
            source,
        };
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_data().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        std::fs::read(self.path_of(key)?).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound {
                key: key.to_string(),
            },
            _ => StorageError::Io {
                op: "reading",
                key: key.to_string(),
                source,
            },
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures a put lands whole at the key's path, overwrites on redelivery, and leaves no temp files.
    #[test]
    fn atomic_put_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path());
        s.put("a/b/c.json", b"one", "application/json").unwrap();
        s.put("a/b/c.json", b"two", "application/json").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.json")).unwrap(),
            b"two"
        );
        assert_eq!(s.get("a/b/c.json").unwrap(), b"two");
        assert!(matches!(
            s.get("a/b/nope.json"),
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(s.get("../x"), Err(StorageError::BadKey { .. })));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// Ensures a key cannot escape the root.
    #[test]
    fn keys_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path());
        assert!(matches!(
            s.put("../x", b"", ""),
            Err(StorageError::BadKey { .. })
        ));
        assert!(matches!(
            s.put("/etc/x", b"", ""),
            Err(StorageError::BadKey { .. })
        ));
    }
}
