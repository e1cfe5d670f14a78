//! `storage.kind = "file"`: objects as files under a root directory, key = relative path. Each put
//! writes a temporary file in the target directory, fsyncs it, renames it into place and fsyncs
//! the directory, so a reader never sees half an object, a crash leaves either the old object or
//! the new one, and an object reported stored survives a power cut. `put_all` (a batch's frames)
//! writes every temporary file first, starts their writeback together and then waits for each,
//! so the filesystem commits them in one journal transaction instead of one per frame, then
//! renames them all and fsyncs each directory once.

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

/// An I/O error while writing `key`.
fn write_error(key: &str) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        op: "writing",
        key: key.to_string(),
        source,
    }
}

/// A temporary file written next to its object's final path, not yet durable.
struct Staged {
    key: String,
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
    /// Directories whose entries changed because `stage` created a directory in them.
    new_entries_in: Vec<PathBuf>,
}

impl FileStorage {
    /// Writes `bytes` to a temporary file in `key`'s directory (created as needed).
    fn stage(&self, key: &str, bytes: &[u8]) -> Result<Staged, StorageError> {
        let io = write_error(key);
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        // The directories about to be created: each adds an entry to its parent.
        let new_entries_in: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .filter_map(|d| d.parent().map(Path::to_path_buf))
            .collect();
        std::fs::create_dir_all(dir).map_err(&io)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(&io)?;
        tmp.write_all(bytes).map_err(&io)?;
        Ok(Staged {
            key: key.to_string(),
            path,
            tmp,
            new_entries_in,
        })
    }

    /// Makes staged files durable and renames them into place: writeback of all starts at once,
    /// then each is waited for, renamed, and each directory fsynced once.
    fn commit(&self, staged: Vec<Staged>) -> Result<(), StorageError> {
        use std::os::fd::AsRawFd as _;
        for s in &staged {
            // SAFETY: a plain syscall on an open descriptor; it only starts writeback.
            unsafe {
                libc::sync_file_range(
                    s.tmp.as_file().as_raw_fd(),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        for s in &staged {
            s.tmp.as_file().sync_data().map_err(write_error(&s.key))?;
        }
        let mut dirs: Vec<(PathBuf, String)> = Vec::new();
        for s in staged {
            let Staged {
                key,
                path,
                tmp,
                new_entries_in,
            } = s;
            tmp.persist(&path).map_err(|e| write_error(&key)(e.error))?;
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            for d in std::iter::once(dir).chain(new_entries_in) {
                if !dirs.iter().any(|(seen, _)| *seen == d) {
                    dirs.push((d, key.clone()));
                }
            }
        }
        for (dir, key) in dirs {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(write_error(&key))?;
        }
        Ok(())
    }
}

impl ObjectStore for FileStorage {
    fn put(&self, key: &str, bytes: &[u8], _content_type: &str) -> Result<(), StorageError> {
        let staged = self.stage(key, bytes)?;
        self.commit(vec![staged])
    }

    fn put_all(&self, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StorageError> {
        let staged = objects
            .iter()
            .map(|(key, bytes, _)| self.stage(key, bytes))
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(staged)
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

    /// Ensures a batch put lands every object whole in its directory, overwrites on
    /// redelivery, and leaves no temporary files.
    #[test]
    fn put_all_lands_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::new(dir.path());
        let batch = |tag: &str| -> Vec<(String, Vec<u8>, &'static str)> {
            (0..30)
                .map(|i| {
                    let key = format!("frames/d{}/f{i:03}.jpg", i % 2);
                    (key, format!("{tag}{i}").into_bytes(), "image/jpeg")
                })
                .collect()
        };
        s.put_all(batch("first")).unwrap();
        s.put_all(batch("again")).unwrap();
        for i in 0..30 {
            let key = format!("frames/d{}/f{i:03}.jpg", i % 2);
            assert_eq!(
                s.get(&key).unwrap(),
                format!("again{i}").into_bytes(),
                "{key}"
            );
        }
        for d in ["d0", "d1"] {
            let names = std::fs::read_dir(dir.path().join("frames").join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<_>>();
            assert_eq!(names.len(), 15, "{d}: {names:?}");
            assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
        }
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
