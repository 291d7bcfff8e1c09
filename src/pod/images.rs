//! The image service the pod worker uses: what is stored locally, and
//! pulls (serialized node-wide unless configured otherwise). A trait so the
//! worker can be unit-tested without a registry.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;

use crate::image::reference::Reference;
use crate::image::registry::Credentials;
use crate::image::store::{ImageStore, PullOptions};

/// A stored image as a container needs it.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Normalized reference (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// `repository@sha256:…`, for `imageID`.
    pub image_id: String,
    pub config: ImageConfiguration,
    /// Overlay lower dirs, top-most first.
    pub lower: Vec<PathBuf>,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageServiceError {
    /// The reference does not parse: `InvalidImageName`.
    #[error("{0}")]
    InvalidName(String),
    /// The store could not read the image: `ImageInspectError`.
    #[error("{0}")]
    Inspect(String),
    /// A pull failed: `ErrImagePull`.
    #[error("{0}")]
    Pull(String),
}

pub trait ImageService: Send + Sync + 'static {
    /// The stored image `reference` names, if any.
    fn local(&self, reference: &str) -> Result<Option<LocalImage>, ImageServiceError>;
    /// Pulls `reference`; returns the image and the time spent waiting for
    /// a pull slot.
    fn pull(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<(LocalImage, std::time::Duration), ImageServiceError>> + Send;
}

/// Credentials for a registry host.
pub type CredentialSource = Box<dyn Fn(&str) -> Option<Credentials> + Send + Sync>;

/// [`ImageService`] over the content store.
pub struct StoreImages {
    store: Arc<ImageStore>,
    options: PullOptions,
    creds: CredentialSource,
    /// Pull slots: 1 when pulls are serialized.
    slots: tokio::sync::Semaphore,
}

impl StoreImages {
    pub fn new(
        store: Arc<ImageStore>,
        options: PullOptions,
        creds: CredentialSource,
        parallel: usize,
    ) -> Self {
        StoreImages {
            store,
            options,
            creds,
            slots: tokio::sync::Semaphore::new(parallel.max(1)),
        }
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// The configured pull options (no credentials).
    pub fn options(&self) -> &PullOptions {
        &self.options
    }

    fn to_local(
        &self,
        rec: &crate::image::metadata::ImageRecord,
    ) -> Result<LocalImage, ImageServiceError> {
        let config = self
            .store
            .config(rec)
            .map_err(|e| ImageServiceError::Inspect(e.to_string()))?;
        Ok(LocalImage {
            name: rec.name.clone(),
            image_id: format!("{}@{}", rec.repository, rec.repo_digest()),
            config,
            lower: self.store.lower_dirs(rec),
            size: rec.size,
        })
    }
}

impl ImageService for StoreImages {
    fn local(&self, reference: &str) -> Result<Option<LocalImage>, ImageServiceError> {
        Reference::parse(reference).map_err(|e| ImageServiceError::InvalidName(e.to_string()))?;
        match self.store.resolve(reference) {
            Ok(Some(rec)) => self.to_local(&rec).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(ImageServiceError::Inspect(e.to_string())),
        }
    }

    async fn pull(
        &self,
        reference: &str,
    ) -> Result<(LocalImage, std::time::Duration), ImageServiceError> {
        let r = Reference::parse(reference)
            .map_err(|e| ImageServiceError::InvalidName(e.to_string()))?;
        let queued = std::time::Instant::now();
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| ImageServiceError::Pull(e.to_string()))?;
        let waited = queued.elapsed();
        let mut opts = self.options.clone();
        opts.creds = (self.creds)(&r.registry);
        let report = self
            .store
            .pull(reference, &opts, &|_| {})
            .await
            .map_err(|e| ImageServiceError::Pull(crate::error_chain(&e)))?;
        crate::metrics::record_image_pull(report.record.size, report.elapsed.as_secs_f64());
        Ok((self.to_local(&report.record)?, waited))
    }
}

/// Stored images that pods which have not finished use: image name →
/// `namespace/name` of each such pod. Image GC and `image rm` never take
/// these.
pub fn in_use(
    pods: &[k8s_openapi::api::core::v1::Pod],
    store: &ImageStore,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let who = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        );
        for (_, c) in super::state::all_containers(p) {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            if let Ok(Some(rec)) = store.resolve(image) {
                let users = out.entry(rec.name).or_default();
                if !users.contains(&who) {
                    users.push(who.clone());
                }
            }
        }
    }
    out
}
