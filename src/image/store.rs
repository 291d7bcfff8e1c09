//! The image service: pull (registry → content store → snapshots), list,
//! inspect, remove, import, prune. Knows nothing of pods: callers say which
//! images are in use.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::content::{ContentError, ContentStore};
use super::digest::Digest;
use super::layer::{self, Compression, LayerError};
use super::manifest::{self, Descriptor, Index, Manifest};
use super::metadata::{ImageDb, ImageRecord, MetadataError};
use super::platform::Platform;
use super::reference::{Reference, ReferenceError};
use super::registry::{Credentials, FetchedManifest, Registry, RegistryError};
use super::snapshot::{chain_ids, PreparedSnapshot, SnapshotError, SnapshotStore};
use super::unpack::LayerApplier;

/// Image configs are small JSON documents; refuse absurd ones.
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// Chunks in flight between the network and an unpacking thread.
const CHANNEL_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("manifest of {reference} has digest {actual}, not the {expected} asked for")]
    ManifestDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {digest} of {reference} is not valid: {detail}")]
    BadDocument {
        reference: String,
        what: &'static str,
        digest: Digest,
        detail: String,
    },
    #[error("no manifest for platform {platform} in {reference} (available: {})", available.join(", "))]
    PlatformNotFound {
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    #[error("layer {digest} of {reference} has unsupported media type {media_type:?} (supported: OCI tar, tar+gzip, tar+zstd and Docker rootfs.diff.tar.gzip)")]
    UnsupportedLayer {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    #[error("image {reference} lists {layers} layers but its config has {diff_ids} diff_ids")]
    LayerCount {
        reference: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {digest} of {reference}")]
    Layer {
        reference: String,
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("download layer {digest} of {reference}")]
    Download {
        reference: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("image {name:?} not found in the store")]
    NotFound { name: String },
    #[error("image {name} is used by {users}; use --force to remove it anyway")]
    InUse { name: String, users: String },
    #[error("OCI layout {}: {detail}", path.display())]
    Layout { path: PathBuf, detail: String },
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("{0} pull(s) or import(s) in progress: prune again once they finish")]
    Busy(u32),
}

/// Pull parameters.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    pub creds: Option<Credentials>,
    pub insecure: Vec<String>,
    pub max_concurrent_downloads: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            creds: None,
            insecure: Vec::new(),
            max_concurrent_downloads: 3,
        }
    }
}

/// What a pull reports while it runs.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolved {
        reference: String,
        manifest: Digest,
        layers: Vec<(Digest, u64)>,
    },
    LayerReused {
        digest: Digest,
    },
    LayerBytes {
        digest: Digest,
        done: u64,
    },
    LayerDone {
        digest: Digest,
    },
}

pub trait ProgressSink: Send + Sync {
    fn event(&self, p: Progress);
}

impl<F: Fn(Progress) + Send + Sync> ProgressSink for F {
    fn event(&self, p: Progress) {
        self(p);
    }
}

#[derive(Debug, Clone)]
pub struct PullReport {
    pub record: ImageRecord,
    /// Compressed bytes fetched from the registry.
    pub downloaded: u64,
    pub reused_layers: usize,
    pub elapsed: Duration,
}

pub struct ImageStore {
    root: PathBuf,
    pub content: ContentStore,
    pub snapshots: SnapshotStore,
    pub db: ImageDb,
    /// One builder per snapshot at a time within this process.
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls and imports in flight. Prune never runs beside one: what they
    /// have written is referenced by no record until they finish.
    writers: Mutex<u32>,
}

/// Counts a pull or import as in flight while it lives.
pub(crate) struct WriterGuard<'a>(&'a Mutex<u32>);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
    }
}

/// A layer unpacked but not yet committed (its lower layers may still be
/// in flight).
struct Pending {
    applier: LayerApplier,
    prepared: PreparedSnapshot,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl ImageStore {
    /// Opens (creating) the store under `root`, cleaning what interrupted
    /// pulls left behind.
    pub fn open(root: &Path) -> Result<Arc<ImageStore>, ImageError> {
        std::fs::create_dir_all(root).map_err(|source| ContentError::Io {
            action: "create root",
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Arc::new(ImageStore {
            root: root.to_path_buf(),
            content: ContentStore::open(root)?,
            snapshots: SnapshotStore::open(root)?,
            db: ImageDb::new(root),
            inflight: Mutex::new(HashMap::new()),
            writers: Mutex::new(0),
        }))
    }

    /// Registers a pull or import; waits while a prune runs.
    pub(crate) async fn writer(&self) -> WriterGuard<'_> {
        loop {
            if let Ok(mut n) = self.writers.try_lock() {
                *n += 1;
                return WriterGuard(&self.writers);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshot_lock(&self, chain: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(chain.clone()).or_default().clone()
    }

    /// Finds a stored image by any spelling of its reference.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let r = Reference::parse(name)?;
        Ok(self.db.get(&r.to_string())?)
    }

    /// Pulls `reference` and unpacks it into snapshots.
    pub async fn pull(
        self: &Arc<Self>,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn ProgressSink,
    ) -> Result<PullReport, ImageError> {
        let _writer = self.writer().await;
        let started = Instant::now();
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        let registry = Arc::new(Registry::connect(&r, opts.creds.as_ref(), &opts.insecure).await?);
        let target = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_default();
        let top = registry.manifest(&target).await?;
        if let Some(want) = &r.digest {
            if top.digest.to_string() != *want {
                return Err(ImageError::ManifestDigest {
                    reference: name,
                    expected: Digest::parse(want).map_err(|e| ImageError::Task(e.to_string()))?,
                    actual: top.digest,
                });
            }
        }
        let (index, manifest_doc) = if manifest::is_index(&top.media_type) {
            let idx: Index = parse_doc(&name, "index", &top.digest, &top.bytes)?;
            let entry = manifest::select_platform(&idx, &opts.platform).map_err(|available| {
                ImageError::PlatformNotFound {
                    reference: name.clone(),
                    platform: opts.platform.to_string(),
                    available,
                }
            })?;
            let child = registry.manifest(&entry.digest.to_string()).await?;
            if child.digest != entry.digest {
                return Err(ImageError::ManifestDigest {
                    reference: name,
                    expected: entry.digest.clone(),
                    actual: child.digest,
                });
            }
            (Some(top), child)
        } else {
            (None, top)
        };
        let manifest: Manifest =
            parse_doc(&name, "manifest", &manifest_doc.digest, &manifest_doc.bytes)?;
        let config_bytes = self
            .fetch_config(&registry, &name, &manifest.config)
            .await?;
        let (record, downloaded, reused) = self
            .install(
                &r,
                index.as_ref(),
                &manifest_doc,
                &manifest,
                &config_bytes,
                Some(registry),
                opts,
                progress,
            )
            .await?;
        Ok(PullReport {
            record,
            downloaded,
            reused_layers: reused,
            elapsed: started.elapsed(),
        })
    }

    /// Unpacks the layers of `manifest` (from the registry, or from the
    /// content store when `registry` is None) and records the image.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn install(
        self: &Arc<Self>,
        r: &Reference,
        index: Option<&FetchedManifest>,
        manifest_doc: &FetchedManifest,
        manifest: &Manifest,
        config_bytes: &[u8],
        registry: Option<Arc<Registry>>,
        opts: &PullOptions,
        progress: &dyn ProgressSink,
    ) -> Result<(ImageRecord, u64, usize), ImageError> {
        let name = r.to_string();
        let config: oci_spec::image::ImageConfiguration =
            parse_doc(&name, "image config", &manifest.config.digest, config_bytes)?;
        // A single-platform image must be for the platform asked for, as
        // containerd checks ("no match for platform in manifest").
        let have = platform_of(&config);
        let (os, arch) = (config.os().to_string(), config.architecture().to_string());
        if !opts
            .platform
            .matches(&os, &arch, config.variant().as_deref())
        {
            return Err(ImageError::PlatformNotFound {
                reference: name,
                platform: opts.platform.to_string(),
                available: vec![have],
            });
        }
        let diff_ids: Vec<Digest> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|e| ImageError::BadDocument {
                    reference: name.clone(),
                    what: "image config",
                    digest: manifest.config.digest.clone(),
                    detail: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::LayerCount {
                reference: name,
                layers: manifest.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        for l in &manifest.layers {
            if Compression::of_media_type(&l.media_type).is_none() {
                return Err(ImageError::UnsupportedLayer {
                    reference: name,
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                });
            }
        }
        progress.event(Progress::Resolved {
            reference: name.clone(),
            manifest: manifest_doc.digest.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect(),
        });
        let chains = chain_ids(&diff_ids);
        let (downloaded, reused) = self
            .fetch_layers(
                registry.as_ref(),
                &name,
                &manifest.layers,
                &diff_ids,
                &chains,
                opts,
                progress,
            )
            .await?;

        // Documents go in last: a listed image is always complete.
        self.content.put(&manifest.config.digest, config_bytes)?;
        self.content
            .put(&manifest_doc.digest, &manifest_doc.bytes)?;
        if let Some(idx) = index {
            self.content.put(&idx.digest, &idx.bytes)?;
        }
        let record = ImageRecord {
            name: name.clone(),
            repository: r.name(),
            tag: r.tag.clone(),
            manifest_digest: manifest_doc.digest.clone(),
            index_digest: index.as_ref().map(|i| i.digest.clone()),
            config_digest: manifest.config.digest.clone(),
            platform: platform_of(&config),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids,
            chain_ids: chains,
            size: manifest.layers.iter().map(|l| l.size).sum::<u64>() + manifest.config.size,
            created: config.created().clone(),
            stored_at: crate::time::rfc3339(SystemTime::now()),
        };
        self.db.put(record.clone())?;
        Ok((record, downloaded, reused))
    }

    async fn fetch_config(
        &self,
        registry: &Registry,
        name: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, ImageError> {
        if self.content.contains(&desc.digest) {
            return Ok(self.content.read(&desc.digest, MAX_CONFIG_BYTES)?);
        }
        if desc.size > MAX_CONFIG_BYTES {
            return Err(ContentError::TooLarge {
                digest: desc.digest.clone(),
                size: desc.size,
                limit: MAX_CONFIG_BYTES,
            }
            .into());
        }
        let mut resp = registry.blob(&desc.digest).await?;
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Download {
            reference: name.to_string(),
            digest: desc.digest.clone(),
            source: std::io::Error::other(e),
        })? {
            if (buf.len() + chunk.len()) as u64 > desc.size {
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&buf);
        if actual != desc.digest {
            return Err(ContentError::DigestMismatch {
                expected: desc.digest.clone(),
                actual,
                size: buf.len() as u64,
            }
            .into());
        }
        Ok(buf)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_layers(
        self: &Arc<Self>,
        registry: Option<&Arc<Registry>>,
        name: &str,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        chains: &[Digest],
        opts: &PullOptions,
        progress: &dyn ProgressSink,
    ) -> Result<(u64, usize), ImageError> {
        let permits = Arc::new(Semaphore::new(opts.max_concurrent_downloads.max(1)));
        let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
        let mut handles = Vec::new();
        for (i, desc) in layers.iter().enumerate() {
            let task = LayerTask {
                store: self.clone(),
                registry: registry.cloned(),
                reference: name.to_string(),
                desc: desc.clone(),
                diff_id: diff_ids[i].clone(),
                chain: chains[i].clone(),
                permits: permits.clone(),
                progress: ptx.clone(),
            };
            handles.push(tokio::spawn(task.run()));
        }
        drop(ptx);
        // Commit in order: a layer's fix-ups need the layers below it.
        let mut downloaded = 0;
        let mut reused = 0;
        let mut result = Ok(());
        let mut handles = handles.into_iter().enumerate();
        for (i, mut h) in handles.by_ref() {
            let joined = loop {
                tokio::select! {
                    j = &mut h => break j,
                    Some(p) = prx.recv() => progress.event(p),
                }
            };
            while let Ok(p) = prx.try_recv() {
                progress.event(p);
            }
            match joined {
                Ok(Ok((None, bytes))) => {
                    downloaded += bytes;
                    reused += 1;
                }
                Ok(Ok((Some(pending), bytes))) => {
                    downloaded += bytes;
                    let lowers: Vec<PathBuf> = chains[..i]
                        .iter()
                        .rev()
                        .map(|c| self.snapshots.fs_path(c))
                        .collect();
                    let digest = layers[i].digest.clone();
                    let reference = name.to_string();
                    let committed = tokio::task::spawn_blocking(move || {
                        let Pending {
                            applier,
                            prepared,
                            _guard,
                        } = pending;
                        applier.finish(&lowers).map_err(|e| ImageError::Layer {
                            reference,
                            digest,
                            source: LayerError::Unpack(e),
                        })?;
                        prepared.commit().map_err(ImageError::from)
                    })
                    .await
                    .map_err(|e| ImageError::Task(e.to_string()))
                    .and_then(|r| r);
                    if let Err(e) = committed {
                        result = Err(e);
                        break;
                    }
                }
                Ok(Err(e)) => {
                    result = Err(e);
                    break;
                }
                Err(e) => {
                    result = Err(ImageError::Task(e.to_string()));
                    break;
                }
            }
        }
        // On failure, wait for every other layer task so their temp files
        // are gone before we return: nothing partial is left behind.
        for (_, h) in handles {
            h.abort();
            let _ = h.await;
        }
        while let Some(p) = prx.recv().await {
            progress.event(p);
        }
        result.map(|()| (downloaded, reused))
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.db.list()?)
    }

    /// Manifest and config of a stored image, as JSON values.
    pub fn inspect(
        &self,
        name: &str,
    ) -> Result<(ImageRecord, serde_json::Value, serde_json::Value), ImageError> {
        let rec = self.resolve(name)?.ok_or_else(|| ImageError::NotFound {
            name: name.to_string(),
        })?;
        let m = self
            .content
            .read(&rec.manifest_digest, super::registry::MAX_MANIFEST_BYTES)?;
        let c = self.content.read(&rec.config_digest, MAX_CONFIG_BYTES)?;
        let parse = |what, d: &Digest, b: &[u8]| {
            serde_json::from_slice(b).map_err(|e| ImageError::BadDocument {
                reference: rec.name.clone(),
                what,
                digest: d.clone(),
                detail: e.to_string(),
            })
        };
        let mv = parse("manifest", &rec.manifest_digest, &m)?;
        let cv = parse("image config", &rec.config_digest, &c)?;
        Ok((rec, mv, cv))
    }

    /// The parsed image config of a stored image.
    pub fn config(
        &self,
        rec: &ImageRecord,
    ) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let c = self.content.read(&rec.config_digest, MAX_CONFIG_BYTES)?;
        parse_doc(&rec.name, "image config", &rec.config_digest, &c)
    }

    /// Removes an image record; `users` names the pods using it (refused
    /// unless `force`). Blobs and snapshots go with `prune`.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        users: &[String],
    ) -> Result<ImageRecord, ImageError> {
        let rec = self.resolve(name)?.ok_or_else(|| ImageError::NotFound {
            name: name.to_string(),
        })?;
        if !users.is_empty() && !force {
            return Err(ImageError::InUse {
                name: rec.name,
                users: users.join(", "),
            });
        }
        self.db.remove(&rec.name)?;
        Ok(rec)
    }

    /// Removes blobs and snapshots no image refers to. Returns how many of each.
    /// Refused while a pull or import runs (their content is not referenced
    /// yet).
    pub fn prune(&self) -> Result<(usize, usize), ImageError> {
        let writers = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *writers > 0 {
            return Err(ImageError::Busy(*writers));
        }
        let images = self.db.list()?;
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut snaps: HashSet<Digest> = HashSet::new();
        for i in &images {
            blobs.extend(i.layers.iter().cloned());
            blobs.insert(i.config_digest.clone());
            blobs.insert(i.manifest_digest.clone());
            if let Some(x) = &i.index_digest {
                blobs.insert(x.clone());
            }
            snaps.extend(i.chain_ids.iter().cloned());
        }
        let mut removed = (0, 0);
        for b in self.content.list()? {
            if !blobs.contains(&b) {
                self.content.remove(&b)?;
                removed.0 += 1;
            }
        }
        for s in self.snapshots.list()? {
            if !snaps.contains(&s) {
                self.snapshots.remove(&s)?;
                removed.1 += 1;
            }
        }
        Ok(removed)
    }

    /// Overlay lower dirs of an image, top-most first.
    pub fn lower_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.chain_ids
            .iter()
            .rev()
            .map(|c| self.snapshots.fs_path(c))
            .collect()
    }
}

fn platform_of(config: &oci_spec::image::ImageConfiguration) -> String {
    let mut s = format!("{}/{}", config.os(), config.architecture());
    if let Some(v) = config.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}

pub(crate) fn parse_doc<T: serde::de::DeserializeOwned>(
    reference: &str,
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadDocument {
        reference: reference.to_string(),
        what,
        digest: digest.clone(),
        detail: e.to_string(),
    })
}

struct LayerTask {
    store: Arc<ImageStore>,
    /// None when importing: every blob is already in the content store.
    registry: Option<Arc<Registry>>,
    reference: String,
    desc: Descriptor,
    diff_id: Digest,
    chain: Digest,
    permits: Arc<Semaphore>,
    progress: mpsc::UnboundedSender<Progress>,
}

impl LayerTask {
    /// Returns the pending snapshot (None when it already existed) and the
    /// bytes downloaded.
    async fn run(self) -> Result<(Option<Pending>, u64), ImageError> {
        let guard = self.store.snapshot_lock(&self.chain).lock_owned().await;
        let digest = self.desc.digest.clone();
        if self.store.snapshots.exists(&self.chain) {
            let _ = self.progress.send(Progress::LayerReused { digest });
            return Ok((None, 0));
        }
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        let compression =
            Compression::of_media_type(&self.desc.media_type).unwrap_or(Compression::None);
        let prepared = self.store.snapshots.prepare(&self.chain)?;
        let applier = LayerApplier::new(&prepared.fs_path()).map_err(|e| ImageError::Layer {
            reference: self.reference.clone(),
            digest: digest.clone(),
            source: LayerError::Unpack(e),
        })?;
        let layer_err = |source: LayerError| ImageError::Layer {
            reference: self.reference.clone(),
            digest: digest.clone(),
            source,
        };

        if self.store.content.contains(&digest) {
            // Blob already here (an earlier pull stopped after the download).
            let file = self.store.content.open_blob(&digest)?;
            let diff_id = self.diff_id.clone();
            let applied = tokio::task::spawn_blocking(move || {
                layer::apply(
                    std::io::BufReader::new(file),
                    compression,
                    None,
                    applier,
                    &diff_id,
                )
            })
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?
            .map_err(layer_err)?;
            let _ = self.progress.send(Progress::LayerDone { digest });
            return Ok((
                Some(Pending {
                    applier: applied.applier,
                    prepared,
                    _guard: guard,
                }),
                0,
            ));
        }

        let Some(registry) = &self.registry else {
            return Err(ContentError::NotFound { digest }.into());
        };
        let ingest = self.store.content.writer(&digest, Some(self.desc.size))?;
        let mut resp = registry.blob(&digest).await?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
        let diff_id = self.diff_id.clone();
        let unpack = tokio::task::spawn_blocking(move || {
            layer::apply(
                layer::ChannelReader::new(rx),
                compression,
                Some(ingest),
                applier,
                &diff_id,
            )
        });
        let mut done: u64 = 0;
        let mut net_err = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    done += chunk.len() as u64;
                    let _ = self.progress.send(Progress::LayerBytes {
                        digest: digest.clone(),
                        done,
                    });
                    if tx.send(Ok(chunk)).await.is_err() {
                        break; // the unpacker stopped; its error tells why
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                    net_err = Some(msg);
                    break;
                }
            }
        }
        drop(tx);
        let applied = unpack.await.map_err(|e| ImageError::Task(e.to_string()))?;
        let applied = match (applied, net_err) {
            (Ok(a), _) => a,
            (Err(_), Some(msg)) => {
                return Err(ImageError::Download {
                    reference: self.reference.clone(),
                    digest,
                    source: std::io::Error::other(msg),
                });
            }
            (Err(e), None) => return Err(layer_err(e)),
        };
        let _ = self.progress.send(Progress::LayerDone { digest });
        Ok((
            Some(Pending {
                applier: applied.applier,
                prepared,
                _guard: guard,
            }),
            done,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    // The gate is held on purpose while a pull tries to start.
    #[allow(clippy::await_holding_lock)]
    async fn prune_waits_for_no_pull_and_pulls_wait_for_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let pull = store.writer().await;
        assert!(matches!(store.prune(), Err(ImageError::Busy(1))));
        let second = store.writer().await;
        assert!(matches!(store.prune(), Err(ImageError::Busy(2))));
        drop((pull, second));
        assert_eq!(store.prune().unwrap(), (0, 0));
        // While a prune holds the gate, a new pull waits.
        let held = store.writers.lock().unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), store.writer()).await;
        assert!(waiting.is_err(), "a pull started during a prune");
        drop(held);
        let _w = store.writer().await;
    }
}
