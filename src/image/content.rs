//! The content store: `<root>/content/blobs/sha256/<hex>`.
//!
//! Blobs are streamed into `ingest/` while their sha256 and size are
//! computed, checked against the expected digest, fsynced and renamed into
//! place: a blob that fails verification never enters the store. Each
//! ingest file is `flock`ed while it is written, so start-up cleaning
//! removes only interrupted ingests, never another process's live one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::digest::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store {}: {action}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {expected} failed verification: got {actual} ({size} bytes); it was not stored")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest} has the wrong size: expected {expected} bytes, got {actual}; it was not stored")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },
    #[error(
        "blob {digest} is {size} bytes, more than the {limit}-byte limit for this kind of blob"
    )]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating) the store under `<root>/content` and removes
    /// interrupted ingests.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let base = root.join("content");
        let store = ContentStore {
            blobs: base.join("blobs").join("sha256"),
            ingest: base.join("ingest"),
        };
        for d in [&store.blobs, &store.ingest] {
            fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        store.clean_ingest()?;
        Ok(store)
    }

    fn clean_ingest(&self) -> Result<(), ContentError> {
        let entries = fs::read_dir(&self.ingest).map_err(io_err("list ingest", &self.ingest))?;
        for e in entries.flatten() {
            let p = e.path();
            let Ok(f) = File::open(&p) else { continue };
            // A live ingest holds its lock; only orphans are removed.
            if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                let _ = fs::remove_file(&p);
                drop(lock);
            }
        }
        Ok(())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, d: &Digest) -> Result<u64, ContentError> {
        fs::metadata(self.blob_path(d))
            .map(|m| m.len())
            .map_err(|_| ContentError::NotFound { digest: d.clone() })
    }

    /// Reads a small blob (manifest, config) whole, refusing more than `limit` bytes.
    pub fn read(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let p = self.blob_path(d);
        let f = File::open(&p).map_err(|_| ContentError::NotFound { digest: d.clone() })?;
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("read blob", &p))?;
        if buf.len() as u64 > limit {
            return Err(ContentError::TooLarge {
                digest: d.clone(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        File::open(self.blob_path(d)).map_err(|_| ContentError::NotFound { digest: d.clone() })
    }

    /// Starts an ingest of a blob expected to have digest `expected` (and
    /// `size`, when known).
    pub fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest, ContentError> {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .ingest
            .join(format!("{}-{}-{seq}", expected.hex(), std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create ingest file", &tmp))?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            ContentError::Io {
                action: "lock ingest file",
                path: tmp.clone(),
                source: e.into(),
            }
        })?;
        Ok(Ingest {
            file: Some(file),
            tmp,
            dest: self.blob_path(expected),
            dir: self.blobs.clone(),
            hasher: Hasher::default(),
            expected: expected.clone(),
            size,
        })
    }

    /// Stores a small blob held in memory.
    pub fn put(&self, expected: &Digest, data: &[u8]) -> Result<(), ContentError> {
        if self.contains(expected) {
            return Ok(());
        }
        let mut w = self.writer(expected, Some(data.len() as u64))?;
        w.write_all(data)
            .map_err(io_err("write ingest file", &w.tmp.clone()))?;
        w.commit()
    }

    pub fn remove(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::Io {
                action: "remove blob",
                path: p,
                source: e,
            }),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let entries = fs::read_dir(&self.blobs).map_err(io_err("list blobs", &self.blobs))?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok()
            })
            .collect())
    }

    /// Files left in `ingest/` (for tests and `image prune`).
    pub fn ingest_entries(&self) -> usize {
        fs::read_dir(&self.ingest).map(|d| d.count()).unwrap_or(0)
    }
}

/// A blob being written. Dropped without [`Ingest::commit`], it leaves nothing.
pub struct Ingest {
    file: Option<Flock<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    hasher: Hasher,
    expected: Digest,
    size: Option<u64>,
}

impl Ingest {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verifies digest and size, fsyncs and renames the blob into place.
    /// On failure the partial file is removed (by `Drop`).
    pub fn commit(mut self) -> Result<(), ContentError> {
        let actual_size = self.hasher.len();
        let actual = self.hasher.clone().finish();
        if let Some(want) = self.size {
            if want != actual_size {
                return Err(ContentError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: want,
                    actual: actual_size,
                });
            }
        }
        if actual != self.expected {
            return Err(ContentError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
                size: actual_size,
            });
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        file.sync_all()
            .map_err(io_err("fsync ingest file", &self.tmp))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err("rename blob into place", &self.dest))?;
        // Renamed: nothing left for Drop to remove.
        self.file = None;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(want) = self.size {
            if self.hasher.len() + buf.len() as u64 > want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is longer than its declared {want} bytes",
                        self.expected
                    ),
                ));
            }
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_blob_enters_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        s.put(&d, b"hello").unwrap();
        assert_eq!(s.read(&d, 100).unwrap(), b"hello");
        assert_eq!(s.ingest_entries(), 0);
    }

    #[test]
    fn a_blob_with_the_wrong_digest_never_enters_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        let mut w = s.writer(&d, None).unwrap();
        w.write_all(b"jello").unwrap();
        assert!(matches!(
            w.commit(),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(!s.contains(&d));
        assert_eq!(s.ingest_entries(), 0);
    }

    #[test]
    fn a_blob_longer_than_declared_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        let mut w = s.writer(&d, Some(3)).unwrap();
        assert!(w.write_all(b"hello").is_err());
        drop(w);
        assert_eq!(s.ingest_entries(), 0);
        let mut w = s.writer(&d, Some(9)).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(
            w.commit(),
            Err(ContentError::SizeMismatch {
                expected: 9,
                actual: 5,
                ..
            })
        ));
    }

    #[test]
    fn interrupted_ingests_are_removed_at_open_but_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("content/ingest/orphan"), b"half").unwrap();
        let live = s.writer(&Digest::of(b"x"), None).unwrap();
        let _s2 = ContentStore::open(dir.path()).unwrap();
        assert_eq!(s.ingest_entries(), 1, "only the live ingest remains");
        drop(live);
        assert_eq!(s.ingest_entries(), 0);
    }

    #[test]
    fn oversized_small_blobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(&[0u8; 100]);
        s.put(&d, &[0u8; 100]).unwrap();
        assert!(matches!(s.read(&d, 99), Err(ContentError::TooLarge { .. })));
    }
}
