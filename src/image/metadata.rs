//! `<root>/images.json`: references → what was pulled, written atomically
//! (temp file, fsync, rename) under an exclusive lock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const DB_VERSION: &str = "v1";

/// One image known to the store, keyed by its normalized reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// `127.0.0.1:5000/nodelet/busybox:1` or `repo@sha256:…`.
    pub name: String,
    /// `registry/repository`.
    pub repository: String,
    pub tag: Option<String>,
    /// The manifest that was unpacked (the platform's, under an index).
    pub manifest_digest: Digest,
    /// The index the reference pointed at, if any (the repo digest).
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub platform: String,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// Snapshot keys, bottom first.
    pub chain_ids: Vec<Digest>,
    /// Sum of compressed layer sizes plus config.
    pub size: u64,
    /// `created` from the image config.
    pub created: Option<String>,
    /// When nodelet stored it (RFC 3339).
    pub stored_at: String,
}

impl ImageRecord {
    /// The digest a registry knows the reference by (`imageID` in pod status).
    pub fn repo_digest(&self) -> &Digest {
        self.index_digest.as_ref().unwrap_or(&self.manifest_digest)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DbFile {
    version: String,
    images: BTreeMap<String, ImageRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("image database {}: {action}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image database {} is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ImageDb {
    path: PathBuf,
    lock: PathBuf,
}

impl ImageDb {
    pub fn new(root: &Path) -> Self {
        ImageDb {
            path: root.join("images.json"),
            lock: root.join("images.lock"),
        }
    }

    fn locked(&self) -> Result<Flock<File>, MetadataError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|source| MetadataError::Io {
                action: "open lock",
                path: self.lock.clone(),
                source,
            })?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| MetadataError::Io {
            action: "lock",
            path: self.lock.clone(),
            source: e.into(),
        })
    }

    fn read(&self) -> Result<DbFile, MetadataError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| MetadataError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DbFile {
                version: DB_VERSION.into(),
                images: BTreeMap::new(),
            }),
            Err(source) => Err(MetadataError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, db: &DbFile) -> Result<(), MetadataError> {
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let io_err = |action, source| MetadataError::Io {
            action,
            path: tmp.clone(),
            source,
        };
        let data = serde_json::to_vec_pretty(db).map_err(|e| MetadataError::Corrupt {
            path: self.path.clone(),
            source: e,
        })?;
        let mut f = File::create(&tmp).map_err(|e| io_err("create temp file", e))?;
        f.write_all(&data)
            .map_err(|e| io_err("write temp file", e))?;
        f.sync_all().map_err(|e| io_err("fsync temp file", e))?;
        fs::rename(&tmp, &self.path).map_err(|source| MetadataError::Io {
            action: "rename into place",
            path: self.path.clone(),
            source,
        })
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, MetadataError> {
        let _l = self.locked()?;
        Ok(self.read()?.images.into_values().collect())
    }

    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
        let _l = self.locked()?;
        Ok(self.read()?.images.get(name).cloned())
    }

    pub fn put(&self, rec: ImageRecord) -> Result<(), MetadataError> {
        let _l = self.locked()?;
        let mut db = self.read()?;
        db.version = DB_VERSION.into();
        db.images.insert(rec.name.clone(), rec);
        self.write(&db)
    }

    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
        let _l = self.locked()?;
        let mut db = self.read()?;
        let r = db.images.remove(name);
        if r.is_some() {
            self.write(&db)?;
        }
        Ok(r)
    }
}
