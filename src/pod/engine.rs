//! The engine: every pod on the node, each with its worker. Adding a pod
//! whose name is taken is refused; deleting one asks its worker to stop it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use super::events::Recorder;
use super::images::ImageService;
use super::worker::{self, Command, Deps, PodHandle};
use crate::runtime::api::Runtime;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("pods \"{name}\" already exists in namespace {namespace:?}")]
    AlreadyExists { namespace: String, name: String },
    #[error("pods \"{name}\" not found in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },
}

struct Entry {
    handle: Arc<PodHandle>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Engine<R: Runtime, I: ImageService> {
    deps: Arc<Deps<R, I>>,
    pods: Mutex<BTreeMap<(String, String), Entry>>,
}

/// A fresh UID in the kernel's UUID form.
pub fn new_uid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            format!("{:032x}", n)
        })
}

impl<R: Runtime, I: ImageService> Engine<R, I> {
    pub fn new(deps: Deps<R, I>) -> Arc<Self> {
        Arc::new(Engine {
            deps: Arc::new(deps),
            pods: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn events(&self) -> &Arc<Recorder> {
        &self.deps.events
    }

    /// Starts `pod` (defaulted and valid); a missing UID is generated.
    pub fn add(&self, mut pod: Pod) -> Result<Arc<PodHandle>, EngineError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut pods = self.lock();
        if pods.contains_key(&(ns.clone(), name.clone())) {
            return Err(EngineError::AlreadyExists {
                namespace: ns,
                name,
            });
        }
        if pod.metadata.uid.as_deref().unwrap_or_default().is_empty() {
            pod.metadata.uid = Some(new_uid());
        }
        pod.metadata.namespace = Some(ns.clone());
        let (handle, task) = worker::spawn(self.deps.clone(), pod);
        pods.insert(
            (ns, name),
            Entry {
                handle: handle.clone(),
                task: Some(task),
            },
        );
        Ok(handle)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodHandle>> {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| e.handle.clone())
    }

    /// Every pod with its status, by namespace and name.
    pub fn list(&self) -> Vec<Pod> {
        self.lock().values().map(|e| e.handle.pod()).collect()
    }

    /// Asks a pod's worker to stop it gracefully.
    pub fn delete(
        &self,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<(), EngineError> {
        let h = self
            .get(namespace, name)
            .ok_or_else(|| EngineError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        h.send(Command::Delete { grace_seconds });
        Ok(())
    }

    /// Asks every pod to stop.
    pub fn delete_all(&self, grace_seconds: Option<i64>) {
        for e in self.lock().values() {
            e.handle.send(Command::Delete { grace_seconds });
        }
    }

    /// Waits until every worker has finished (each pod terminal or
    /// stopped).
    pub async fn wait_all(&self) {
        let tasks: Vec<_> = self
            .lock()
            .values_mut()
            .filter_map(|e| e.task.take())
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "pod worker failed");
            }
        }
    }
}
