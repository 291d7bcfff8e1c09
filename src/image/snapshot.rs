//! Snapshots: `<root>/snapshots/<chainID>/fs`, one per layer, each built in
//! a locked temp dir and renamed in, so a snapshot either exists whole or
//! not at all. Used read-only as overlay lower dirs.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::digest::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {}: {action}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The OCI chain IDs of a layer stack: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])` (image-spec config.md).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Hasher::default();
                h.update(format!("{prev} {d}").as_bytes());
                h.finish()
            }
        };
        out.push(next);
    }
    out
}

#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);
const TMP_PREFIX: &str = ".tmp-";

impl SnapshotStore {
    /// Opens (creating) `<root>/snapshots`, removing unfinished builds of
    /// processes that are gone.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let store = SnapshotStore { dir };
        store.clean()?;
        Ok(store)
    }

    fn clean(&self) -> Result<(), SnapshotError> {
        for e in fs::read_dir(&self.dir)
            .map_err(io_err("list snapshots", &self.dir))?
            .flatten()
        {
            if !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let p = e.path();
            let lock = File::open(p.join("lock"))
                .ok()
                .map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock));
            match lock {
                Some(Err(_)) => {} // a live build
                _ => {
                    let _ = fs::remove_dir_all(&p);
                }
            }
        }
        Ok(())
    }

    /// The directory to use as an overlay lower dir.
    pub fn fs_path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex()).join("fs")
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.fs_path(chain).is_dir()
    }

    /// Starts building the snapshot for `chain`.
    pub fn prepare(&self, chain: &Digest) -> Result<PreparedSnapshot, SnapshotError> {
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            chain.hex(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(io_err("create snapshot build directory", &tmp))?;
        let lock_path = tmp.join("lock");
        let lock = File::create(&lock_path)
            .map_err(io_err("create lock", &lock_path))
            .and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                    SnapshotError::Io {
                        action: "lock",
                        path: lock_path.clone(),
                        source: e.into(),
                    }
                })
            });
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let fs_dir = tmp.join("fs");
        if let Err(e) = fs::create_dir(&fs_dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(SnapshotError::Io {
                action: "create snapshot fs directory",
                path: fs_dir,
                source: e,
            });
        }
        Ok(PreparedSnapshot {
            tmp: Some(tmp),
            dest: self.dir.join(chain.hex()),
            _lock: Some(lock),
        })
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        Ok(fs::read_dir(&self.dir)
            .map_err(io_err("list snapshots", &self.dir))?
            .flatten()
            .filter_map(|e| {
                Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok()
            })
            .collect())
    }

    pub fn remove(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let p = self.dir.join(chain.hex());
        // Rename first so a half-removed snapshot is never taken for a whole one.
        let doomed = self.dir.join(format!(
            "{TMP_PREFIX}rm-{}-{}",
            chain.hex(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&p, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed).map_err(io_err("remove snapshot", &doomed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::Io {
                action: "remove snapshot",
                path: p,
                source: e,
            }),
        }
    }

    /// Number of unfinished builds (tests).
    pub fn pending_builds(&self) -> usize {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A snapshot being built; dropped without [`PreparedSnapshot::commit`] it
/// is removed.
pub struct PreparedSnapshot {
    tmp: Option<PathBuf>,
    dest: PathBuf,
    _lock: Option<Flock<File>>,
}

impl PreparedSnapshot {
    /// Where the layer is unpacked.
    pub fn fs_path(&self) -> PathBuf {
        self.tmp.as_ref().map(|t| t.join("fs")).unwrap_or_default()
    }

    pub fn commit(mut self) -> Result<(), SnapshotError> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let _ = fs::remove_file(tmp.join("lock"));
        match fs::rename(&tmp, &self.dest) {
            Ok(()) => Ok(()),
            // Someone else committed the same chain first: theirs is identical.
            Err(e)
                if self.dest.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(SnapshotError::Io {
                    action: "rename snapshot into place",
                    path: self.dest.clone(),
                    source: e,
                })
            }
        }
    }
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn an_uncommitted_snapshot_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        let d = Digest::of(b"x");
        let p = s.prepare(&d).unwrap();
        std::fs::write(p.fs_path().join("f"), b"1").unwrap();
        assert_eq!(s.pending_builds(), 1);
        drop(p);
        assert_eq!(s.pending_builds(), 0);
        assert!(!s.exists(&d));
        let p = s.prepare(&d).unwrap();
        p.commit().unwrap();
        assert!(s.exists(&d));
        s.remove(&d).unwrap();
        assert!(!s.exists(&d));
        assert_eq!(s.pending_builds(), 0);
    }

    #[test]
    fn builds_of_dead_processes_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots/.tmp-dead/fs")).unwrap();
        let live = s.prepare(&Digest::of(b"y")).unwrap();
        let _again = SnapshotStore::open(dir.path()).unwrap();
        assert_eq!(s.pending_builds(), 1, "the live build survives");
        drop(live);
    }
}
