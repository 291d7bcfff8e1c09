//! `image import`: OCI image layouts, as a directory or a tar archive (what
//! `skopeo copy … oci:DIR` and `oci-archive:FILE` write). Blobs are copied
//! into the content store with their digests verified, then unpacked like
//! a pull.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::content::ContentError;
use super::digest::Digest;
use super::manifest::{self, Descriptor, Index, Manifest};
use super::reference::Reference;
use super::registry::{FetchedManifest, MAX_MANIFEST_BYTES};
use super::store::{
    parse_doc, ImageError, ImageStore, ProgressSink, PullOptions, PullReport, MAX_CONFIG_BYTES,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn layout_err(path: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Layout {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl ImageStore {
    /// Imports the image at `path` under `name` (or the name recorded in the layout).
    pub async fn import(
        self: &Arc<Self>,
        path: &Path,
        name: Option<&str>,
        opts: &PullOptions,
        progress: &dyn ProgressSink,
    ) -> Result<PullReport, ImageError> {
        let _writer = self.writer().await;
        let started = std::time::Instant::now();
        let meta =
            std::fs::metadata(path).map_err(|e| layout_err(path, format!("cannot read: {e}")))?;
        let index_bytes = if meta.is_dir() {
            read_capped(&path.join("index.json"), MAX_MANIFEST_BYTES)
                .map_err(|e| layout_err(path, format!("index.json: {e}")))?
        } else {
            let this = self.clone();
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || this.ingest_archive(&p))
                .await
                .map_err(|e| ImageError::Task(e.to_string()))??
        };
        let index: Index = serde_json::from_slice(&index_bytes)
            .map_err(|e| layout_err(path, format!("index.json is not an OCI index: {e}")))?;
        let entry = pick_entry(path, &index, name)?;
        let image_name = match name {
            Some(n) => n.to_string(),
            None => layout_name(&entry).ok_or_else(|| layout_err(path, "the layout names no image (no io.containerd.image.name or full org.opencontainers.image.ref.name); pass --name"))?,
        };
        let r = Reference::parse(&image_name)?;
        let from_dir = meta.is_dir();
        let fetch = |d: &Descriptor| -> Result<Vec<u8>, ImageError> {
            if from_dir {
                self.copy_blob(path, d)?;
            }
            Ok(self
                .content
                .read(&d.digest, MAX_MANIFEST_BYTES.max(MAX_CONFIG_BYTES))?)
        };
        let top_bytes = fetch(&entry)?;
        let top = FetchedManifest {
            digest: Digest::of(&top_bytes),
            bytes: top_bytes,
            media_type: entry.media_type.clone(),
        };
        let (idx_doc, manifest_doc) = if manifest::is_index(&entry.media_type) {
            let idx: Index = parse_doc(&image_name, "index", &top.digest, &top.bytes)?;
            let child = manifest::select_platform(&idx, &opts.platform).map_err(|available| {
                ImageError::PlatformNotFound {
                    reference: image_name.clone(),
                    platform: opts.platform.to_string(),
                    available,
                }
            })?;
            let bytes = fetch(child)?;
            (
                Some(top),
                FetchedManifest {
                    digest: child.digest.clone(),
                    bytes,
                    media_type: child.media_type.clone(),
                },
            )
        } else {
            (None, top)
        };
        let m: Manifest = parse_doc(
            &image_name,
            "manifest",
            &manifest_doc.digest,
            &manifest_doc.bytes,
        )?;
        let config = fetch(&m.config)?;
        if from_dir {
            for l in &m.layers {
                self.copy_blob(path, l)?;
            }
        }
        let (record, _, reused) = self
            .install(
                &r,
                idx_doc.as_ref(),
                &manifest_doc,
                &m,
                &config,
                None,
                opts,
                progress,
            )
            .await?;
        Ok(PullReport {
            record,
            downloaded: 0,
            reused_layers: reused,
            elapsed: started.elapsed(),
        })
    }

    /// Copies one blob of a layout directory into the store, verifying it.
    fn copy_blob(&self, layout: &Path, d: &Descriptor) -> Result<(), ImageError> {
        if self.content.contains(&d.digest) {
            return Ok(());
        }
        let p = layout.join("blobs").join("sha256").join(d.digest.hex());
        let mut f =
            File::open(&p).map_err(|e| layout_err(layout, format!("blob {}: {e}", d.digest)))?;
        let mut w = self.content.writer(&d.digest, Some(d.size))?;
        io::copy(&mut f, &mut w).map_err(|source| ContentError::Io {
            action: "copy blob",
            path: p.clone(),
            source,
        })?;
        w.commit()?;
        Ok(())
    }

    /// Streams an `oci-archive` tar: every blob goes into the store
    /// (verified by its name); returns index.json.
    fn ingest_archive(&self, path: &Path) -> Result<Vec<u8>, ImageError> {
        let f = File::open(path).map_err(|e| layout_err(path, format!("cannot open: {e}")))?;
        let mut archive = tar::Archive::new(io::BufReader::new(f));
        let mut index = None;
        for entry in archive
            .entries()
            .map_err(|e| layout_err(path, format!("not a tar archive: {e}")))?
        {
            let mut entry = entry.map_err(|e| layout_err(path, format!("read archive: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes())
                .trim_start_matches("./")
                .to_string();
            if name == "index.json" {
                let mut buf = Vec::new();
                (&mut entry)
                    .take(MAX_MANIFEST_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| layout_err(path, format!("index.json: {e}")))?;
                if buf.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(layout_err(path, "index.json is larger than 4 MiB"));
                }
                index = Some(buf);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let digest = Digest::parse(&format!("sha256:{hex}"))
                    .map_err(|e| layout_err(path, e.to_string()))?;
                if self.content.contains(&digest) {
                    continue;
                }
                let mut w = self.content.writer(&digest, Some(entry.size()))?;
                io::copy(&mut entry, &mut w).map_err(|source| ContentError::Io {
                    action: "copy blob",
                    path: PathBuf::from(&name),
                    source,
                })?;
                w.commit()?;
            }
        }
        index.ok_or_else(|| layout_err(path, "no index.json in archive"))
    }
}

fn read_capped(p: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(p)?.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(buf)
}

/// The entry to import: the one whose ref name matches `name`'s tag (or the
/// whole name), else the only entry.
fn pick_entry(path: &Path, index: &Index, name: Option<&str>) -> Result<Descriptor, ImageError> {
    let ref_name = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME).cloned())
    };
    if let Some(n) = name {
        let tag = Reference::parse(n).ok().and_then(|r| r.tag);
        if let Some(d) = index.manifests.iter().find(|d| {
            let rn = ref_name(d);
            rn.as_deref() == Some(n) || (tag.is_some() && rn == tag)
        }) {
            return Ok(d.clone());
        }
    }
    match index.manifests.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(layout_err(path, "index.json lists no manifests")),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|d| ref_name(d).unwrap_or_else(|| d.digest.to_string()))
                .collect();
            Err(layout_err(
                path,
                format!(
                    "index.json lists {} images ({}); pass --name with the one to import",
                    many.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

fn layout_name(d: &Descriptor) -> Option<String> {
    let a = d.annotations.as_ref()?;
    if let Some(n) = a.get(CONTAINERD_NAME) {
        return Some(n.clone());
    }
    let n = a.get(REF_NAME)?;
    // A bare tag ("1.36") is not a name; a full reference is.
    n.contains('/').then(|| n.clone())
}
