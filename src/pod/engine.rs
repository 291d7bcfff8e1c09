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
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Runtime(String),
    /// The pod is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// The pod's record could not be saved: it was not created.
    #[error("cannot save the pod record, so the pod was not created: {0}")]
    Storage(String),
}

/// Output kept per stream of an API exec.
pub const EXEC_MAX_OUTPUT: usize = 1 << 20;

struct Entry {
    handle: Arc<PodHandle>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Engine<R: Runtime, I: ImageService> {
    deps: Arc<Deps<R, I>>,
    pods: Mutex<BTreeMap<(String, String), Entry>>,
    /// Deleted pods leave once stopped (the daemon); `nodelet run` keeps
    /// them to print.
    forget_deleted: std::sync::atomic::AtomicBool,
    /// What the manifest sources last read (`get sources`).
    sources: Mutex<Vec<SourceStatus>>,
    /// Previous CPU samples, for usage rates.
    sampler: super::stats::Sampler,
    /// `maxPods`: active pods beyond it are rejected (OutOfpods).
    max_pods: std::sync::atomic::AtomicU32,
    /// Pods whose record could not be read at start-up, by UID: their
    /// sandboxes are left running untracked, and no new pod may take the
    /// UID (a second sandbox would be made beside the first).
    unreadable: Mutex<BTreeMap<String, super::store::Unreadable>>,
}

/// One manifest file a source read, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub source: String,
    pub path: String,
    /// `namespace/name` of the pod it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// kubelet's rejection reason for a pod over `maxPods` ("OutOf" + the
/// resource name).
pub const OUT_OF_PODS: &str = "OutOfpods";

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What a rejected pod starts (and stays) as: kubelet's rejectPod status,
/// phase Failed with the reason and "Pod was rejected: " + the message;
/// nothing of it ever runs.
fn rejected(pod: &Pod, reason: &str, message: &str) -> super::store::Saved {
    super::store::Saved {
        pod: pod.clone(),
        state: super::state::PodState {
            terminated: true,
            ..Default::default()
        },
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".into()),
            reason: Some(reason.into()),
            message: Some(format!("Pod was rejected: {message}")),
            ..Default::default()
        }),
    }
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
            forget_deleted: std::sync::atomic::AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            sampler: super::stats::Sampler::default(),
            max_pods: std::sync::atomic::AtomicU32::new(u32::MAX),
            unreadable: Mutex::new(BTreeMap::new()),
        })
    }

    /// Remembers a pod whose record could not be read (see
    /// `store::load_all`): its UID is refused to new pods from now on.
    pub fn keep_unreadable(&self, u: super::store::Unreadable) {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(u.uid.clone(), u);
    }

    /// Sets the node's pod capacity (`maxPods`).
    pub fn set_max_pods(&self, n: u32) {
        self.max_pods.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Usage of the node, its pods and their running containers.
    pub async fn summary(&self) -> super::stats::Summary {
        let pods = self.list();
        super::stats::summary(
            self.deps.runtime.as_ref(),
            &self.sampler,
            &self.deps.downward.node_name,
            &pods,
        )
        .await
    }

    /// Pods with a live sandbox and containers by state, for
    /// `kubelet_running_pods` and `kubelet_running_containers`.
    pub fn counts(&self) -> crate::metrics::Counts {
        let mut c = crate::metrics::Counts::default();
        for p in self.list() {
            let Some(st) = p.status else { continue };
            let sandbox = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "PodReadyToStartContainers" && c.status == "True");
            c.running_pods += u64::from(sandbox);
            let all = st
                .init_container_statuses
                .iter()
                .flatten()
                .chain(st.container_statuses.iter().flatten());
            for cs in all {
                let state = cs.state.clone().unwrap_or_default();
                let name = if state.running.is_some() {
                    "running"
                } else if state.terminated.is_some() {
                    "exited"
                } else {
                    continue;
                };
                *c.containers.entry(name.to_string()).or_default() += 1;
            }
        }
        c
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
    pub fn add(&self, pod: Pod) -> Result<Arc<PodHandle>, EngineError> {
        self.add_restored(pod, None)
    }

    /// Starts a worker for `pod`, re-adopting what a previous daemon saved.
    pub fn add_restored(
        &self,
        mut pod: Pod,
        restored: Option<super::store::Saved>,
    ) -> Result<Arc<PodHandle>, EngineError> {
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
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let held = self
            .unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .find(|u| u.uid == uid || u.named.as_ref() == Some(&(ns.clone(), name.clone())))
            .cloned();
        if let Some(u) = held {
            return Err(EngineError::Conflict(format!(
                "pod UID {}: {}",
                u.uid,
                unreadable_message(&u)
            )));
        }
        pod.metadata.namespace = Some(ns.clone());
        // Set on creation, as the API server does.
        if pod.metadata.creation_timestamp.is_none() {
            pod.metadata.creation_timestamp =
                Some(super::status::time(std::time::SystemTime::now()));
        }
        // Bound to this node, as a scheduler (or kubelet for static pods)
        // would have done.
        if let Some(spec) = pod.spec.as_mut() {
            if spec.node_name.as_deref().unwrap_or_default().is_empty() {
                spec.node_name = Some(self.deps.downward.node_name.clone());
            }
        }
        // Admission, as kubelet's canAdmitPod: a new pod beyond the
        // node's pod capacity is rejected for good (phase Failed, reason
        // OutOfpods); pods in a terminal phase do not count.
        let capacity = self.max_pods.load(std::sync::atomic::Ordering::Relaxed);
        let used = pods
            .values()
            .filter(|e| !is_terminal(&e.handle.pod()))
            .count();
        let rejection = (restored.is_none() && used >= capacity as usize).then(|| {
            format!("Node didn't have enough resource: pods, requested: 1, used: {used}, capacity: {capacity}")
        });
        // A new pod is saved before it starts (a rejected one as it will
        // stay): one the daemon cannot keep across a restart (the state
        // disk is full) is refused whole.
        let restored = match restored {
            Some(r) => Some(r),
            None => {
                let first = match &rejection {
                    Some(message) => rejected(&pod, OUT_OF_PODS, message),
                    None => super::store::Saved {
                        pod: pod.clone(),
                        state: super::state::PodState::default(),
                        status: None,
                    },
                };
                if let Some(dir) = &self.deps.state_dir {
                    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                    super::store::save(dir, uid, &first).map_err(EngineError::Storage)?;
                }
                rejection.is_some().then_some(first)
            }
        };
        let (handle, task) = worker::spawn(self.deps.clone(), pod, restored);
        if let Some(message) = rejection {
            tracing::warn!(pod = %name, namespace = %ns, %message, "pod rejected");
            self.deps.events.record(
                &handle.pod_ref,
                super::events::EventType::Warning,
                OUT_OF_PODS,
                "",
                message,
                std::time::SystemTime::now(),
            );
        }
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

    /// What the API lists: every pod, and a line for each pod whose record
    /// could not be read and that runs on untracked (phase `Unknown`,
    /// reason `UnreadableRecord`, what is known of it), so no running pod
    /// is ever out of sight.
    pub fn api_list(&self) -> Vec<Pod> {
        let mut pods = self.list();
        let unreadable = self
            .unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(unreadable_pod)
            .collect::<Vec<_>>();
        pods.extend(unreadable);
        pods
    }

    pub fn set_sources(&self, list: Vec<SourceStatus>) {
        *self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = list;
    }

    pub fn sources(&self) -> Vec<SourceStatus> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn forget_deleted(&self, on: bool) {
        self.forget_deleted
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Asks a pod's worker to stop it gracefully.
    pub fn delete(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        grace_seconds: Option<i64>,
    ) -> Result<(), EngineError> {
        let h = self.handle_or_404(namespace, name)?;
        h.send(Command::Delete { grace_seconds });
        if self
            .forget_deleted
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.forget_when_done(namespace, name);
        }
        Ok(())
    }

    /// Freezes (`pause`) or thaws one container of a pod, or all its
    /// running ones; returns the containers that changed.
    pub async fn pause(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        pause: bool,
    ) -> Result<Vec<String>, EngineError> {
        let h = self.handle_or_404(namespace, name)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        h.send(Command::Pause {
            container: container.map(str::to_string),
            pause,
            reply,
        });
        match rx.await {
            Ok(r) => r.map_err(EngineError::Conflict),
            Err(_) => Err(EngineError::Conflict(format!("pod {name} is not running"))),
        }
    }

    /// Asks every pod to stop.
    pub fn delete_all(&self, grace_seconds: Option<i64>) {
        for e in self.lock().values() {
            e.handle.send(Command::Delete { grace_seconds });
        }
    }

    pub fn node_name(&self) -> &str {
        &self.deps.downward.node_name
    }

    fn handle_or_404(&self, namespace: &str, name: &str) -> Result<Arc<PodHandle>, EngineError> {
        self.get(namespace, name)
            .ok_or_else(|| EngineError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    fn pod_or_404(&self, namespace: &str, name: &str) -> Result<Pod, EngineError> {
        self.handle_or_404(namespace, name).map(|h| h.pod())
    }

    /// The container a request is about: the named one, else the pod's
    /// first app container (kubectl's default).
    fn container_status(
        pod: &Pod,
        container: Option<&str>,
    ) -> Result<k8s_openapi::api::core::v1::ContainerStatus, EngineError> {
        let status = pod.status.clone().unwrap_or_default();
        let all: Vec<_> = status
            .init_container_statuses
            .into_iter()
            .flatten()
            .chain(status.container_statuses.into_iter().flatten())
            .collect();
        let want = match container {
            Some(c) => c.to_string(),
            None => super::state::spec(pod)
                .containers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        };
        all.into_iter().find(|c| c.name == want).ok_or_else(|| {
            EngineError::BadRequest(format!(
                "container {want} is not valid for pod {}",
                pod.metadata.name.as_deref().unwrap_or_default()
            ))
        })
    }

    /// The id of a container's current instance and whether it runs.
    pub fn instance(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Option<(String, bool)> {
        let pod = self.pod_or_404(namespace, name).ok()?;
        let c = Self::container_status(&pod, container).ok()?;
        let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
        Some((c.container_id.unwrap_or_default(), running))
    }

    /// A container's CRI log files, oldest first: rotated ones, then the
    /// live one, of the current instance or (`previous`) the one before.
    pub fn log_files(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<Vec<std::path::PathBuf>, EngineError> {
        let pod = self.pod_or_404(namespace, name)?;
        let c = Self::container_status(&pod, container)?;
        let n = if previous {
            let last = c.last_state.and_then(|l| l.terminated);
            if last.is_none() || c.restart_count == 0 {
                return Err(EngineError::BadRequest(format!(
                    "previous terminated container \"{}\" in pod \"{name}\" not found",
                    c.name
                )));
            }
            c.restart_count - 1
        } else {
            c.restart_count
        };
        let dir = super::logs::pod_log_dir(
            &self.deps.log_dir,
            &super::events::PodRef {
                namespace: namespace.into(),
                name: name.into(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            },
        )
        .join(&c.name);
        let live = format!("{n}.log");
        let mut rotated: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&format!("{live}.")) && !f.ends_with(".gz"))
            })
            .collect();
        rotated.sort();
        rotated.push(dir.join(live));
        Ok(rotated)
    }

    /// Runs `args` in a running container of a pod.
    pub async fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        args: &[String],
        timeout: std::time::Duration,
    ) -> Result<crate::runtime::api::ExecResult, EngineError> {
        let pod = self.pod_or_404(namespace, name)?;
        let c = Self::container_status(&pod, container)?;
        if c.state.as_ref().and_then(|s| s.running.as_ref()).is_none() {
            return Err(EngineError::BadRequest(format!(
                "container {} is not running",
                c.name
            )));
        }
        let id = c
            .container_id
            .unwrap_or_default()
            .trim_start_matches(super::status::CONTAINER_ID_SCHEME)
            .to_string();
        let uid = pod.metadata.uid.unwrap_or_default();
        self.deps
            .runtime
            .exec(&uid, &id, args, timeout, EXEC_MAX_OUTPUT)
            .await
            .map_err(|e| EngineError::Runtime(crate::error_chain(&e)))
    }

    /// Forgets a pod once its worker has finished (deleted pods leave the
    /// API then, and their saved record goes).
    pub fn forget_when_done(self: &Arc<Self>, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        // Only the first request waits for the worker; later ones (a
        // repeated delete) have nothing to add.
        let Some(task) = self.lock().get_mut(&key).and_then(|e| e.task.take()) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _ = task.await;
            let gone = me.lock().remove(&key);
            if let Some(e) = gone {
                me.deps.events.forget(&e.handle.pod_ref.uid);
                // A deleted pod's logs go with it (kubelet's
                // evictPodLogsDirectories).
                super::logs::remove_pod_logs(&me.deps.log_dir, &e.handle.pod_ref);
                if let Some(dir) = &me.deps.state_dir {
                    super::store::remove(dir, &e.handle.pod_ref.uid);
                }
            }
        });
    }

    /// Pods by namespace and name with their UIDs.
    pub fn uids(&self) -> Vec<(String, String, String)> {
        self.lock()
            .iter()
            .map(|((ns, n), e)| (ns.clone(), n.clone(), e.handle.pod_ref.uid.clone()))
            .collect()
    }

    pub fn images(&self) -> &Arc<I> {
        &self.deps.images
    }

    /// The ConfigMaps and Secrets this node's pods may reference.
    pub fn objects(&self) -> &super::objects::Objects {
        &self.deps.objects
    }

    pub fn runtime(&self) -> &Arc<R> {
        &self.deps.runtime
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

/// The API's view of a pod known only by its unreadable record.
fn unreadable_pod(u: &super::store::Unreadable) -> Pod {
    let (ns, name) = u.named.clone().unwrap_or_else(|| {
        let short: String = u.uid.chars().take(8).collect();
        ("default".into(), format!("unreadable-{short}"))
    });
    let mut pod = Pod::default();
    pod.metadata.namespace = Some(ns);
    pod.metadata.name = Some(name);
    pod.metadata.uid = Some(u.uid.clone());
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Unknown".into()),
        reason: Some("UnreadableRecord".into()),
        message: Some(unreadable_message(u)),
        ..Default::default()
    });
    pod
}

/// What is said of a pod whose record could not be read.
pub fn unreadable_message(u: &super::store::Unreadable) -> String {
    format!(
        "its record could not be read ({}; kept at {}): its sandbox is left running, untracked. Remove that file and restart the daemon to have the sandbox removed and the pod made again",
        u.error,
        u.kept_at.display()
    )
}
