//! The pod worker: one task per pod that runs the planner's actions against
//! the runtime and the image service, and moves through kubelet's pod-worker
//! states Sync → Terminating → Terminated (`k8s:pkg/kubelet/pod_workers.go`).
//! Pods never wait for each other: a slow pull blocks only its own pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::backoff::Backoff;
use super::container::{process, Downward};
use super::events::{EventType, PodRef, Recorder};
use super::images::{ImageService, ImageServiceError, LocalImage};
use super::objects::Objects;
use super::planner::{self, backoff_key, Action};
use super::resources;
use super::state::{
    all_containers, find_container, spec, ContainerState as Cs, Instance, Kind, Phase, PodState,
    Sandbox, Termination, Waiting,
};
use super::status::{self, NodeFacts};
use super::volumes::{self, Volumes};
use crate::probe::action::Target;
use crate::probe::{HookRan, Kind as ProbeKind, Update as ProbeUpdate, UpdateKind};
use crate::runtime::api::{
    ContainerState, CreateContainer, Runtime, RuntimeError, SandboxConfig, SandboxInfo, Status,
};
use crate::runtime::plan::{build_spec, ContainerConfig, Rootfs};

/// Fastest and slowest polling of live containers' states.
const MIN_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(500);
/// How long to wait before retrying a failed volume or sandbox set-up.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// A failed step (pull, config, create, start) is retried this much later.
/// kubelet requeues a failed sync after 10 s + jitter; the planner and the
/// pull back-off still decide whether the retry may start anything, so a
/// shorter retry only shows the next state (ImagePullBackOff,
/// CrashLoopBackOff) sooner, never restarts faster than back-off allows.
const SYNC_RETRY: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to save a pod record that failed.
const SAVE_RETRY_FIRST: Duration = Duration::from_secs(1);
const SAVE_RETRY_MAX: Duration = Duration::from_secs(30);
/// In a container instance's bundle directory: the instance as the
/// worker is about to create it (JSON `Instance`).
const INTENT_FILE: &str = "instance.json";

/// How long a postStart hook may run.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);
/// The kubelet's minimum grace once a container is being stopped.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// What every worker shares.
pub struct Deps<R: Runtime, I: ImageService> {
    pub runtime: Arc<R>,
    pub images: Arc<I>,
    pub events: Arc<Recorder>,
    pub objects: Objects,
    /// `<root>/pods`: per-pod volumes and container bundles.
    pub pods_dir: PathBuf,
    /// `/var/log/pods`.
    pub log_dir: PathBuf,
    pub node: NodeFacts,
    pub downward: Downward,
    /// Where pod records are kept across daemon restarts; none for
    /// `nodelet run` and tests.
    pub state_dir: Option<PathBuf>,
    /// Where pod cgroups go; none = no cgroups (fake runtimes).
    pub cgroups: Option<super::resources::CgroupLayout>,
    /// seccomp default and profile directory.
    pub security: super::security::SecurityDefaults,
}

#[derive(Debug)]
pub enum Command {
    /// Stop the pod; `None` = the pod's terminationGracePeriodSeconds.
    Delete { grace_seconds: Option<i64> },
    /// Freeze (`pause`) or thaw one container or, without a name, every
    /// running one; the reply names the containers that changed.
    Pause {
        container: Option<String>,
        pause: bool,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
}

/// A running pod as others see it.
#[derive(Debug)]
pub struct PodHandle {
    pub pod_ref: PodRef,
    published: Mutex<Pod>,
    version: watch::Sender<u64>,
    commands: mpsc::UnboundedSender<Command>,
}

impl PodHandle {
    /// The pod with its latest status.
    pub fn pod(&self) -> Pod {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn status(&self) -> PodStatus {
        self.pod().status.unwrap_or_default()
    }

    /// Notified on every status change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn send(&self, c: Command) {
        // A finished worker has nothing to stop.
        let _ = self.commands.send(c);
    }
}

pub struct Worker<R: Runtime, I: ImageService> {
    deps: Arc<Deps<R, I>>,
    pod: Pod,
    uid: String,
    st: PodState,
    restart_backoff: Backoff,
    pull_backoff: Backoff,
    /// Last pull error per image (shown with ImagePullBackOff).
    pull_errors: HashMap<String, String>,
    sandbox: Option<SandboxInfo>,
    volumes: Option<Volumes>,
    status: Option<PodStatus>,
    /// Extra wake-ups: pull back-off ends, set-up retries.
    wake_at: Option<SystemTime>,
    poll: Duration,
    handle: Arc<PodHandle>,
    commands: mpsc::UnboundedReceiver<Command>,
    probe_tx: mpsc::UnboundedSender<ProbeUpdate>,
    probe_rx: mpsc::UnboundedReceiver<ProbeUpdate>,
    probers: HashMap<String, Prober>,
    /// Re-adopted after a daemon restart.
    restored: bool,
    /// When this worker first saw the pod (`kubelet_pod_start_duration`).
    first_seen: Instant,
    /// The last save of its record failed.
    save_failing: bool,
    /// The wait before the next save attempt while saves fail.
    save_retry: Duration,
    /// Exit notices from the sandbox (see [`watch_changes`]).
    changes: Arc<tokio::sync::Notify>,
    /// The runtime tells of exits: state polls can be rare.
    watching: Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<AbortOnDrop>,
    /// The pod network namespace probes dial from (see [`Self::netns`]).
    netns: Mutex<Option<Arc<crate::probe::netns::NetNs>>>,
    /// Container states must be looked at before planning again (a
    /// notice, a timer, a command); probe results alone do not need it.
    dirty: bool,
    /// Moves when a ConfigMap or Secret is written.
    objects_changed: watch::Receiver<u64>,
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State polls when the runtime tells of exits itself: a safety net.
const WATCHED_POLL: Duration = Duration::from_secs(10);

/// Long-polls the runtime for exits in sandbox `uid` and wakes the worker
/// on each. A runtime that cannot (the default poll, an older shim) leaves
/// `watching` false, so the worker keeps polling states.
async fn watch_changes<R: Runtime>(
    runtime: Arc<R>,
    uid: String,
    changes: Arc<tokio::sync::Notify>,
    watching: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    // u64::MAX: "tell me where you are" (answered at once).
    let mut since = u64::MAX;
    loop {
        match runtime.wait_change(&uid, since).await {
            Ok(n) if n != since => {
                if since != u64::MAX {
                    changes.notify_one();
                }
                watching.store(true, Ordering::Relaxed);
                since = n;
            }
            Ok(_) => changes.notify_one(),
            Err(_) => {
                watching.store(false, Ordering::Relaxed);
                changes.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The probe tasks of a container's current instance.
struct Prober {
    instance: String,
    tasks: Vec<(ProbeKind, tokio::task::JoinHandle<()>)>,
    started: watch::Sender<bool>,
    /// Probes wait while this holds (the container is frozen).
    paused: watch::Sender<bool>,
}

/// Starts a worker for `pod` (defaulted, valid, with a UID).
pub fn spawn<R: Runtime, I: ImageService>(
    deps: Arc<Deps<R, I>>,
    pod: Pod,
    restored: Option<super::store::Saved>,
) -> (Arc<PodHandle>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let pod_ref = PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    };
    let (st, status, restored_flag) = match restored {
        Some(r) => (r.state, r.status, true),
        None => (PodState::default(), None, false),
    };
    let mut published = pod.clone();
    published.status.clone_from(&status);
    let handle = Arc::new(PodHandle {
        pod_ref: pod_ref.clone(),
        published: Mutex::new(published),
        version: watch::channel(0).0,
        commands: tx,
    });
    let objects_changed = deps.objects.subscribe();
    let w = Worker {
        deps,
        uid: pod_ref.uid.clone(),
        pod,
        st,
        restored: restored_flag,
        restart_backoff: Backoff::default(),
        pull_backoff: Backoff::default(),
        pull_errors: HashMap::new(),
        sandbox: None,
        volumes: None,
        status,
        wake_at: None,
        poll: MIN_POLL,
        handle: handle.clone(),
        commands: rx,
        probe_tx,
        probe_rx,
        probers: HashMap::new(),
        first_seen: Instant::now(),
        save_failing: false,
        save_retry: SAVE_RETRY_FIRST,
        changes: Arc::new(tokio::sync::Notify::new()),
        watching: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        watcher: None,
        netns: Mutex::new(None),
        dirty: true,
        objects_changed,
    };
    let span = tracing::info_span!("pod", pod = %pod_ref.name, namespace = %pod_ref.namespace);
    let task = tokio::spawn(w.run().instrument(span));
    (handle, task)
}

fn container_id(uid: &str, name: &str, restart: u32) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    hex::encode(Sha256::digest(format!("{uid}/{name}/{restart}/{now}")))
}

fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim();
    if let Ok(v) = n.parse::<i32>() {
        return Some(v);
    }
    let full = if n.starts_with("SIG") {
        n.to_string()
    } else {
        format!("SIG{n}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

impl<R: Runtime, I: ImageService> Worker<R, I> {
    fn event(&self, t: EventType, reason: &str, field_path: &str, message: String) {
        self.deps.events.record(
            &self.handle.pod_ref,
            t,
            reason,
            field_path,
            message,
            SystemTime::now(),
        );
    }

    fn pod_dir(&self) -> PathBuf {
        self.deps.pods_dir.join(&self.uid)
    }

    fn publish(&mut self) {
        let st = status::generate(
            &self.pod,
            &self.st,
            &self.deps.node,
            self.status.as_ref(),
            SystemTime::now(),
        );
        let meta_changed = self
            .handle
            .published
            .lock()
            .map(|p| p.metadata != self.pod.metadata)
            .unwrap_or(true);
        if self.status.as_ref() == Some(&st) && !meta_changed {
            // Nothing new to show, but a record that failed to save is
            // written again: a stale record must not outlive a full disk.
            if self.save_failing {
                self.persist();
            }
            return;
        }
        // kubelet observes its pod start duration on the first Pending →
        // Running transition of a pod it saw fresh.
        let was = self.status.as_ref().and_then(|s| s.phase.as_deref());
        if !self.restored
            && matches!(was, None | Some("Pending"))
            && st.phase.as_deref() == Some("Running")
        {
            crate::metrics::record_pod_start(self.first_seen.elapsed().as_secs_f64());
        }
        self.status = Some(st.clone());
        let mut pod = self.pod.clone();
        pod.status = Some(st);
        *self
            .handle
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pod;
        self.handle.version.send_modify(|v| *v += 1);
        self.persist();
    }

    fn persist(&mut self) {
        let Some(dir) = &self.deps.state_dir else {
            return;
        };
        let saved = super::store::Saved {
            pod: self.pod.clone(),
            state: self.st.clone(),
            status: self.status.clone(),
        };
        // The previous record stays whole when a save fails (written
        // aside, then renamed); a failing disk is reported once, then when
        // it recovers.
        // Until it succeeds the worker wakes to try again, 1 s, then twice
        // as long each time up to SAVE_RETRY_MAX, and the pod carries a
        // Warning event saying so.
        match super::store::save(dir, &self.uid, &saved) {
            Ok(()) if self.save_failing => {
                self.save_failing = false;
                self.save_retry = SAVE_RETRY_FIRST;
                tracing::info!("pod record saved again");
                self.event(
                    EventType::Normal,
                    "PodRecordSaved",
                    "",
                    "the pod record is saved again".into(),
                );
            }
            Ok(()) => {}
            Err(e) => {
                if !self.save_failing {
                    self.save_failing = true;
                    tracing::error!(error = %e, "cannot save pod record; the last saved one stays, retrying");
                    self.event(
                        EventType::Warning,
                        "PodRecordNotSaved",
                        "",
                        format!("cannot save the pod record, retrying until it can: {e}"),
                    );
                }
                self.wake(SystemTime::now() + self.save_retry);
                self.save_retry = (self.save_retry * 2).min(SAVE_RETRY_MAX);
            }
        }
    }

    /// Takes a pod over from a previous daemon: its sandbox if the shim
    /// still serves, its volumes, its probes. Nothing is restarted.
    async fn adopt(&mut self) {
        if self.st.terminated {
            return;
        }
        if self.st.sandbox != Sandbox::Ready {
            if self.deps.runtime.sandbox_info(&self.uid).await.is_some() {
                // A live sandbox the record never saw Ready (its save
                // failed, or the daemon died right after making it): it is
                // whole — its shim answers only once made — so it is
                // adopted with whatever runs in it (see below).
                tracing::warn!("adopting a sandbox the pod record did not know yet");
                self.st.sandbox = Sandbox::Ready;
            } else if self.pod_dir().exists() {
                // The previous daemon died while creating the sandbox:
                // what it got as far as (mounts, a cgroup, a dead shim)
                // goes, and the pod starts over from a clean slate.
                tracing::warn!("removing a half-created sandbox");
                if let Err(e) = self.deps.runtime.remove_sandbox(&self.uid).await {
                    tracing::error!(error = %crate::error_chain(&e), "half-created sandbox not removed");
                }
            }
        }
        if self.st.sandbox == Sandbox::Ready {
            match self.deps.runtime.sandbox_info(&self.uid).await {
                Some(info) => {
                    self.sandbox = Some(info);
                    self.watch_sandbox();
                }
                None => self.sandbox_lost(),
            }
        }
        if self.st.sandbox == Sandbox::Ready {
            self.volumes = volumes::setup(
                &self.pod,
                &self.deps.objects,
                &self.deps.downward,
                &self.pod_dir(),
            )
            .ok();
            self.settle_unrecorded().await;
            // A postStart cut short by the restart is not run again (nor
            // is it by a kubelet): the container counts as started.
            for cs in self.st.containers.values_mut() {
                cs.in_post_start = false;
            }
            self.observe().await;
            let running: Vec<(String, Kind, Container, Instance)> = all_containers(&self.pod)
                .filter(|(k, _)| *k != Kind::Init)
                .filter_map(|(k, c)| {
                    self.st
                        .container(&c.name)
                        .and_then(Cs::latest)
                        .filter(|i| i.phase == Phase::Running)
                        .map(|i| (c.name.clone(), k, c.clone(), i.clone()))
                })
                .collect();
            for (name, _, c, i) in running {
                self.start_probers(&name, &c, &i, true);
            }
        }
        tracing::info!(sandbox = ?self.st.sandbox, "pod re-adopted");
    }

    /// The rule after a daemon restart: the shim is the truth about what
    /// runs, the record about what the pod has. A container the shim
    /// holds that the record does not know (the previous daemon created or
    /// started it, then died before its record was saved: a `kill -9`, a
    /// full disk) is adopted when its intent (written to its bundle before
    /// the shim heard of it) shows it is the newest instance of one of
    /// the pod's containers and it has started — running or exited, it is
    /// what a kubelet would find in its runtime; anything else (a
    /// container still at its start gate, one older than the record's) is
    /// killed and removed, and the pod says so; the planner then creates
    /// what is missing, once. So no container ever has two instances, and
    /// nothing is left waiting at a start gate. (kubelet reads its
    /// runtime's list the same way, and removes containers it has no
    /// business with in its GC.)
    async fn settle_unrecorded(&mut self) {
        let held = match self.deps.runtime.list_containers(&self.uid).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot list the sandbox's containers");
                return;
            }
        };
        let known: std::collections::HashSet<String> = self
            .st
            .containers
            .values()
            .flat_map(|c| c.instances.iter().map(|i| i.id.clone()))
            .collect();
        let intents = self.intents();
        for c in held.into_iter().filter(|c| !known.contains(&c.id)) {
            let started = c.status != crate::runtime::api::Status::Created;
            if let Some((name, instance)) = intents.get(&c.id).filter(|_| started) {
                let latest = self
                    .st
                    .container(name)
                    .and_then(Cs::latest)
                    .map(|l| (l.id.clone(), l.restart_count));
                if latest
                    .as_ref()
                    .is_none_or(|(_, restart)| *restart < instance.restart_count)
                {
                    tracing::warn!(container = %name, container_id = %c.id, "adopted a container the pod record did not know yet");
                    // The instance it follows is settled first: observing
                    // reads only the newest.
                    if let Some((id, _)) = latest {
                        if let Ok(s) = self.deps.runtime.container_state(&self.uid, &id).await {
                            self.absorb(name, &s);
                        }
                    }
                    let cs = self.st.container_mut(name);
                    cs.push(instance.clone());
                    cs.waiting = None;
                    if find_container(&self.pod, name).is_some_and(|(k, _)| k == Kind::App) {
                        self.st.initialized = true;
                    }
                    // Its state comes with the observation that follows.
                    continue;
                }
            }
            let rt = self.deps.runtime.clone();
            if c.status == crate::runtime::api::Status::Running {
                let _ = rt.signal_container(&self.uid, &c.id, libc::SIGKILL).await;
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && rt
                        .container_state(&self.uid, &c.id)
                        .await
                        .is_ok_and(|s| s.status == crate::runtime::api::Status::Running)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let removed = rt.remove_container(&self.uid, &c.id).await;
            tracing::warn!(container_id = %c.id, status = ?c.status, ok = removed.is_ok(), "removed a container the pod record does not know");
            self.event(
                EventType::Warning,
                "Killing",
                "",
                format!(
                    "Removed container {} ({:?}): the pod's record does not know it (a daemon stopped before recording it); only recorded instances are kept",
                    c.id, c.status
                ),
            );
        }
    }

    /// The intents in this pod's bundles: container id → (container name,
    /// the instance as it was about to be created).
    fn intents(&self) -> HashMap<String, (String, Instance)> {
        let mut out = HashMap::new();
        let containers = self.pod_dir().join("containers");
        for name_dir in std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = name_dir.file_name().to_string_lossy().into_owned();
            for inst in std::fs::read_dir(name_dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let read = std::fs::read(inst.path().join(INTENT_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Instance>(&b).ok());
                if let Some(i) = read {
                    out.insert(i.id.clone(), (name.clone(), i));
                }
            }
        }
        out
    }

    async fn run(mut self) {
        if self.restored {
            self.adopt().await;
        } else {
            self.st.start_time = Some(SystemTime::now());
        }
        self.publish();
        if self.st.terminated {
            return;
        }
        loop {
            // A stop starts at once: its grace period runs from the request,
            // not from a state sweep of every container (each stop reads
            // its own container's state).
            let changed = self.st.terminating.is_none()
                && std::mem::take(&mut self.dirty)
                && self.observe().await;
            if let Some(t) = self.st.terminating.clone() {
                let began = Instant::now();
                // Saved first: a daemon killed mid-termination finishes it
                // after its restart (with the full grace period again).
                self.publish();
                self.terminate(&t).await;
                self.publish();
                crate::metrics::record_pod_worker("kill", began.elapsed().as_secs_f64());
                break;
            }
            let began = Instant::now();
            let first = self.st.sandbox == Sandbox::None;
            let now = SystemTime::now();
            let plan = planner::plan(&self.pod, &self.st, now, &self.restart_backoff);
            for (name, w) in &plan.backoff {
                self.hold(name, w);
            }
            let mut replan = false;
            let plan_empty = plan.actions.is_empty();
            for a in plan.actions {
                match a {
                    Action::CreateSandbox => replan |= self.create_sandbox().await,
                    Action::Start { name, kind } => {
                        self.start(&name, kind).await;
                    }
                    Action::Terminate(t) => {
                        self.st.terminating = Some(t);
                        replan = true;
                    }
                }
            }
            self.publish();
            if !plan_empty {
                let op = if first { "create" } else { "sync" };
                crate::metrics::record_pod_worker(op, began.elapsed().as_secs_f64());
            }
            if replan || self.st.terminating.is_some() {
                continue;
            }
            let live = self
                .st
                .containers
                .values()
                .any(|c| c.latest().is_some_and(|i| !i.exited()));
            let mut until = Instant::now()
                + if live {
                    self.poll
                } else {
                    Duration::from_secs(60)
                };
            for w in [plan.wake_at, self.wake_at.take()].into_iter().flatten() {
                let d = w.duration_since(SystemTime::now()).unwrap_or_default();
                until = until.min(Instant::now() + d);
            }
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => self.dirty = true,
                () = self.changes.notified() => self.dirty = true,
                cmd = self.commands.recv() => {
                    self.dirty = true;
                    self.on_command(cmd).await;
                }
                Some(u) = self.probe_rx.recv() => self.on_probe(u).await,
                Ok(()) = self.objects_changed.changed() => self.refresh_volumes(),
            }
            self.poll = if changed {
                MIN_POLL
            } else {
                (self.poll * 2).min(self.max_poll())
            };
        }
        // A finished pod's last record (its final status) is worth the
        // wait while the disk refuses it; a deleted pod's is about to go.
        while self.save_failing && self.pod.metadata.deletion_timestamp.is_none() {
            let at = self
                .wake_at
                .take()
                .unwrap_or_else(|| SystemTime::now() + SAVE_RETRY_MAX);
            tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
            self.persist();
        }
    }

    async fn on_command(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(Command::Pause {
                container,
                pause,
                reply,
            }) => {
                let _ = reply.send(self.pause(container.as_deref(), pause).await);
            }
            Some(Command::Delete { grace_seconds }) => {
                self.pod.metadata.deletion_timestamp = Some(status::time(SystemTime::now()));
                self.pod.metadata.deletion_grace_period_seconds =
                    Some(grace_seconds.unwrap_or_else(|| {
                        spec(&self.pod)
                            .termination_grace_period_seconds
                            .unwrap_or(30)
                    }));
                self.st.terminating = Some(Termination::Deleted { grace_seconds });
            }
            // Nobody can reach this pod any more: stop it.
            None => {
                self.st.terminating = Some(Termination::Deleted {
                    grace_seconds: None,
                })
            }
        }
    }

    /// A ConfigMap or Secret was written: the pod's volumes of them follow
    /// (the containers see the new files through `..data`); one whose
    /// object is gone keeps its files, and the pod says so.
    fn refresh_volumes(&mut self) {
        if self.st.sandbox != Sandbox::Ready
            || self.volumes.is_none()
            || self.st.terminating.is_some()
        {
            return;
        }
        let (changed, errors) = volumes::refresh(
            &self.pod,
            &self.deps.objects,
            &self.deps.downward,
            &self.pod_dir(),
        );
        for v in changed {
            tracing::info!(volume = %v, "volume contents updated");
        }
        for e in errors {
            self.event(EventType::Warning, "FailedMount", "", e.to_string());
        }
    }

    /// Freezes or thaws the running containers named (all when `only` is
    /// none) through their cgroups. Probes of a paused container wait, it
    /// is not ready, and the pod carries the `nodelet.dev/Paused` condition.
    async fn pause(&mut self, only: Option<&str>, pause: bool) -> Result<Vec<String>, String> {
        let pod = &self.handle.pod_ref.name;
        if self.st.terminating.is_some() {
            return Err(format!("pod {pod} is terminating"));
        }
        if let Some(n) = only.filter(|n| find_container(&self.pod, n).is_none()) {
            return Err(format!("container {n} is not valid for pod {pod}"));
        }
        let running: Vec<(String, String, bool)> = all_containers(&self.pod)
            .filter(|(_, c)| only.is_none_or(|n| n == c.name))
            .filter_map(|(_, c)| {
                let cs = self.st.container(&c.name)?;
                let i = cs.latest().filter(|i| i.phase == Phase::Running)?;
                Some((c.name.clone(), i.id.clone(), cs.paused))
            })
            .collect();
        if running.is_empty() {
            return Err(match only {
                Some(n) => format!("container {n} of pod {pod} is not running"),
                None => format!("pod {pod} is not running"),
            });
        }
        let todo: Vec<(String, String)> = running
            .into_iter()
            .filter(|(_, _, paused)| *paused != pause)
            .map(|(n, id, _)| (n, id))
            .collect();
        if todo.is_empty() {
            let what = only.map_or_else(|| format!("pod {pod}"), |n| format!("container {n}"));
            return Err(if pause {
                format!("{what} is already paused")
            } else {
                format!("{what} is not paused")
            });
        }
        let mut done = Vec::new();
        for (name, id) in todo {
            let r = if pause {
                self.deps.runtime.pause_container(&self.uid, &id).await
            } else {
                self.deps.runtime.resume_container(&self.uid, &id).await
            };
            if let Err(e) = r {
                self.publish();
                return Err(format!(
                    "{} container {name}: {}",
                    if pause { "pause" } else { "unpause" },
                    crate::error_chain(&e)
                ));
            }
            self.set_paused(&name, pause);
            let kind = find_container(&self.pod, &name).map_or(Kind::App, |(k, _)| k);
            let reason = if pause { "Paused" } else { "Resumed" };
            self.event(
                EventType::Normal,
                reason,
                &kind.field_path(&name),
                format!("{reason} container {name}"),
            );
            done.push(name);
        }
        self.publish();
        Ok(done)
    }

    /// Records `name` as paused or not and lets its probes wait or go on.
    fn set_paused(&mut self, name: &str, paused: bool) {
        self.st.container_mut(name).paused = paused;
        if let Some(p) = self.probers.get(name) {
            let _ = p.paused.send(paused);
        }
    }

    /// Shows `w` as the waiting reason of `name`, with its event the first
    /// time.
    fn hold(&mut self, name: &str, w: &Waiting) {
        let kind = find_container(&self.pod, name).map_or(Kind::App, |(k, _)| k);
        let cs = self.st.container_mut(name);
        let fresh = cs.waiting.as_ref() != Some(w);
        cs.waiting = Some(w.clone());
        if fresh && w.reason == "CrashLoopBackOff" {
            self.event(
                EventType::Warning,
                "BackOff",
                &kind.field_path(name),
                format!(
                    "Back-off restarting failed container {name} in pod {}",
                    planner::pod_full_name(&self.pod)
                ),
            );
        }
    }

    /// Reads the state of every live container; true when anything changed.
    async fn observe(&mut self) -> bool {
        if self.st.sandbox != Sandbox::Ready {
            return false;
        }
        let live: Vec<(String, String)> = self
            .st
            .containers
            .iter()
            .filter_map(|(n, c)| {
                c.latest()
                    .filter(|i| !i.exited())
                    .map(|i| (n.clone(), i.id.clone()))
            })
            .collect();
        let mut changed = false;
        for (name, id) in live {
            match self.deps.runtime.container_state(&self.uid, &id).await {
                Ok(s) => changed |= self.absorb(&name, &s),
                Err(RuntimeError::SandboxNotFound(_) | RuntimeError::Shim { .. }) => {
                    self.sandbox_lost();
                    return true;
                }
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "container state");
                    self.lost(
                        &name,
                        "The container could not be located when the pod was running",
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Marks `name`'s live instance as gone (kubelet's ContainerStatusUnknown).
    fn lost(&mut self, name: &str, message: &str) {
        let cs = self.st.container_mut(name);
        if let Some(i) = cs.instances.last_mut().filter(|i| !i.exited()) {
            i.phase = Phase::Exited;
            i.exit_code = 137;
            i.reason = "ContainerStatusUnknown".into();
            i.message = message.into();
            i.finished_at = Some(SystemTime::now());
        }
        cs.started = false;
        cs.ready = false;
    }

    /// Marks every live instance as gone.
    fn lose_all(&mut self, message: &str) {
        let names: Vec<String> = self.st.containers.keys().cloned().collect();
        for n in names {
            self.lost(&n, message);
        }
    }

    /// The sandbox's network namespace for probes and hooks: one per pod
    /// (one dialer thread), made anew with a new sandbox.
    fn netns(&self) -> Option<Arc<crate::probe::netns::NetNs>> {
        let path = self.sandbox.as_ref().and_then(|s| s.netns.clone())?;
        let mut cached = self
            .netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cached.as_ref() {
            Some(ns) if ns.path() == path => {}
            _ => *cached = Some(Arc::new(crate::probe::netns::NetNs::new(&path))),
        }
        cached.clone()
    }

    /// Starts waiting for exit notices from the (new) sandbox.
    fn watch_sandbox(&mut self) {
        self.watching
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let task = tokio::spawn(
            watch_changes(
                self.deps.runtime.clone(),
                self.uid.clone(),
                self.changes.clone(),
                self.watching.clone(),
            )
            .in_current_span(),
        );
        self.watcher = Some(AbortOnDrop(task));
    }

    /// Stops what followed the sandbox: exit notices, the netns dialer.
    fn unwatch_sandbox(&mut self) {
        self.watcher = None;
        *self
            .netns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.watching
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The slowest state poll: rare when exits are announced.
    fn max_poll(&self) -> Duration {
        if self.watching.load(std::sync::atomic::Ordering::Relaxed) {
            WATCHED_POLL
        } else {
            MAX_POLL
        }
    }

    fn sandbox_lost(&mut self) {
        self.unwatch_sandbox();
        tracing::warn!("sandbox lost");
        self.lose_all("The container could not be located when the pod was running");
        self.st.sandbox = Sandbox::Gone;
        self.sandbox = None;
    }

    /// Folds a runtime state into the instance; true when it changed.
    fn absorb(&mut self, name: &str, s: &ContainerState) -> bool {
        let probes = find_container(&self.pod, name)
            .map(|(_, c)| (c.startup_probe.is_some(), c.readiness_probe.is_some()));
        let cs = self.st.container_mut(name);
        let Some(i) = cs.instances.last_mut() else {
            return false;
        };
        let before = i.clone();
        if let Some(t) = s.started_at.as_deref().and_then(crate::time::parse_rfc3339) {
            i.started_at = Some(t);
        }
        match s.status {
            Status::Created => i.phase = Phase::Created,
            Status::Running => i.phase = Phase::Running,
            Status::Exited => {
                i.phase = Phase::Exited;
                if let Some(x) = &s.exit {
                    i.exit_code = x.exit_code;
                    i.signal = x.signal;
                    i.finished_at =
                        crate::time::parse_rfc3339(&x.finished_at).or(Some(SystemTime::now()));
                    if let Some(t) = crate::time::parse_rfc3339(&x.started_at) {
                        i.started_at = Some(t);
                    }
                    i.message = x.message.clone();
                    i.reason = if x.oom_killed {
                        "OOMKilled"
                    } else if x.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .into();
                }
            }
        }
        let running = i.phase == Phase::Running;
        let paused_changed = cs.paused != (running && s.paused);
        cs.paused = running && s.paused;
        let changed = *i != before || paused_changed;
        let exited_id = (i.phase == Phase::Exited).then(|| i.id.clone());
        // Without probes a running container is started and ready at once;
        // the prober owns these flags when probes exist.
        let (startup, readiness) = probes.unwrap_or_default();
        if !running {
            cs.started = false;
            cs.ready = false;
        } else {
            if !startup {
                cs.started = true;
            }
            if !readiness && cs.started {
                cs.ready = true;
            }
        }
        if let Some(id) = exited_id {
            if self.probers.get(name).is_some_and(|p| p.instance == id) {
                self.stop_probers(name);
            }
        }
        changed
    }

    /// Volumes, then the sandbox. True when it now exists.
    async fn create_sandbox(&mut self) -> bool {
        let retry = |w: &mut Self| w.wake(SystemTime::now() + SETUP_RETRY);
        if self.volumes.is_none() {
            match volumes::setup(
                &self.pod,
                &self.deps.objects,
                &self.deps.downward,
                &self.pod_dir(),
            ) {
                Ok(v) => self.volumes = Some(v),
                Err(e) => {
                    self.event(EventType::Warning, "FailedMount", "", e.to_string());
                    retry(self);
                    return false;
                }
            }
        }
        let hostname = spec(&self.pod)
            .hostname
            .clone()
            .unwrap_or_else(|| self.handle.pod_ref.name.clone());
        let cfg = SandboxConfig {
            id: self.uid.clone(),
            hostname,
            cgroups: self
                .deps
                .cgroups
                .as_ref()
                .map(|l| l.pod_cgroups(&self.pod, &self.uid))
                .unwrap_or_default(),
        };
        if self.st.sandbox == Sandbox::Gone {
            self.event(
                EventType::Normal,
                "SandboxChanged",
                "",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
            // Whatever is left of the old one goes first.
            let _ = self.deps.runtime.remove_sandbox(&self.uid).await;
        }
        match self.deps.runtime.create_sandbox(&cfg).await {
            Ok(info) => {
                self.sandbox = Some(info);
                self.watch_sandbox();
                if self.st.sandbox == Sandbox::Gone {
                    self.st.initialized = false;
                }
                self.st.sandbox = Sandbox::Ready;
                true
            }
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    "",
                    format!("Failed to create pod sandbox: {}", crate::error_chain(&e)),
                );
                retry(self);
                false
            }
        }
    }

    /// Waits with `reason` and records the Failed event kubelet emits.
    fn fail(&mut self, name: &str, kind: Kind, reason: &str, message: String) {
        self.event(
            EventType::Warning,
            "Failed",
            &kind.field_path(name),
            format!(
                "Error: {}",
                if reason == "CreateContainerConfigError"
                    || reason == "CreateContainerError"
                    || reason == "RunContainerError"
                {
                    message.clone()
                } else {
                    reason.to_string()
                }
            ),
        );
        self.st.container_mut(name).waiting = Some(Waiting::new(reason, message));
        self.wake(SystemTime::now() + SYNC_RETRY);
    }

    fn wake(&mut self, at: SystemTime) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// `EnsureImageExists`: the image per pull policy, with pull back-off.
    async fn ensure_image(&mut self, c: &Container, kind: Kind) -> Option<LocalImage> {
        let image = c.image.clone().unwrap_or_default();
        let fp = kind.field_path(&c.name);
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let local = match self.deps.images.local(&image) {
            Ok(l) => l,
            Err(ImageServiceError::InvalidName(e)) => {
                self.event(
                    EventType::Warning,
                    "InspectFailed",
                    &fp,
                    format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": {e}"),
                );
                self.fail(&c.name, kind, "InvalidImageName", format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": {e}"));
                return None;
            }
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "InspectFailed",
                    &fp,
                    format!("Failed to inspect image \"{image}\": {e}"),
                );
                self.fail(
                    &c.name,
                    kind,
                    "ImageInspectError",
                    format!("Failed to inspect image \"{image}\": {e}"),
                );
                return None;
            }
        };
        match (policy, local) {
            ("Never", None) => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(EventType::Warning, "ErrImageNeverPull", &fp, msg.clone());
                self.fail(&c.name, kind, "ErrImageNeverPull", msg);
                None
            }
            ("Never" | "IfNotPresent", Some(l)) => {
                self.event(
                    EventType::Normal,
                    "Pulled",
                    &fp,
                    format!("Container image \"{image}\" already present on machine"),
                );
                Some(l)
            }
            _ => self.pull(c, kind, &image).await,
        }
    }

    async fn pull(&mut self, c: &Container, kind: Kind, image: &str) -> Option<LocalImage> {
        let fp = kind.field_path(&c.name);
        let key = format!("{}_{image}", self.uid);
        let now = SystemTime::now();
        if let Some(left) = self.pull_backoff.remaining_since_update(&key, now) {
            let last = self.pull_errors.get(image).cloned().unwrap_or_default();
            let wake = self.wake_at;
            self.event(
                EventType::Normal,
                "BackOff",
                &fp,
                format!("Back-off pulling image \"{image}\""),
            );
            self.fail(
                &c.name,
                kind,
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\": {last}"),
            );
            // Nothing to retry before the back-off ends.
            self.wake_at = wake;
            self.wake(now + left);
            return None;
        }
        self.event(
            EventType::Normal,
            "Pulling",
            &fp,
            format!("Pulling image \"{image}\""),
        );
        let started = Instant::now();
        // The pull runs in its own task: a deletion meanwhile stops the pod
        // at once and the pull finishes (or fails) on its own, leaving the
        // store consistent.
        let images = self.deps.images.clone();
        let reference = image.to_string();
        let mut pull = tokio::spawn(async move { images.pull(&reference).await });
        let result = loop {
            tokio::select! {
                r = &mut pull => {
                    break r.unwrap_or_else(|e| Err(ImageServiceError::Pull(e.to_string())));
                }
                cmd = self.commands.recv() => {
                    let stop = !matches!(cmd, Some(Command::Pause { .. }));
                    self.on_command(cmd).await;
                    if stop {
                        return None;
                    }
                }
            }
        };
        match result {
            Ok((l, waited)) => {
                let total = started.elapsed();
                self.pull_backoff.reset(&key);
                self.event(
                    EventType::Normal,
                    "Pulled",
                    &fp,
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {} bytes.",
                        crate::time::go_duration(total.saturating_sub(waited)),
                        crate::time::go_duration(total),
                        l.size
                    ),
                );
                Some(l)
            }
            Err(e) => {
                let msg = e.to_string();
                self.pull_backoff.next(&key, SystemTime::now());
                self.pull_errors.insert(image.to_string(), msg.clone());
                self.event(
                    EventType::Warning,
                    "Failed",
                    &fp,
                    format!("Failed to pull image \"{image}\": {msg}"),
                );
                let reason = if matches!(e, ImageServiceError::InvalidName(_)) {
                    "InvalidImageName"
                } else {
                    "ErrImagePull"
                };
                self.fail(&c.name, kind, reason, msg);
                None
            }
        }
    }

    /// Pulls, creates and starts a new instance of `name`.
    async fn start(&mut self, name: &str, kind: Kind) {
        let Some((_, c)) = find_container(&self.pod, name) else {
            return;
        };
        let c = c.clone();
        let fp = kind.field_path(name);
        let previous = self.st.container(name).and_then(|s| s.latest()).cloned();
        if let Some(p) = previous.as_ref().filter(|p| p.exited()) {
            // doBackOff: the exit that this start answers steps the back-off.
            self.restart_backoff.next(
                &backoff_key(&self.pod, &c),
                p.finished_at.unwrap_or_else(SystemTime::now),
            );
        }
        let restart_count = previous.as_ref().map_or(0, |p| p.restart_count + 1);
        let Some(image) = self.ensure_image(&c, kind).await else {
            return;
        };
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let rootfs_files = image.lower.clone();
        let files = move |path: &str| -> Option<String> {
            let rel = path.trim_start_matches('/');
            rootfs_files
                .iter()
                .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
        };
        let proc = match process(
            &self.pod,
            &c,
            &image.config,
            &self.deps.objects,
            &self.deps.downward,
            &files,
        ) {
            Ok(p) => p,
            Err(e) => {
                self.fail(name, kind, "CreateContainerConfigError", e.0);
                return;
            }
        };
        if !proc.invalid_env_names.is_empty() {
            self.event(
                EventType::Warning,
                "InvalidEnvironmentVariableNames",
                &fp,
                format!("Keys [{}] from the EnvFrom configMap {}/… were skipped since they are invalid environment variable names.", proc.invalid_env_names.join(", "), self.handle.pod_ref.namespace),
            );
        }
        let mut mounts = sandbox.pod_mounts();
        match volumes::container_mounts(&c, self.volumes.as_ref().unwrap_or(&Volumes::new())) {
            Ok(m) => mounts.extend(m),
            Err(e) => {
                self.fail(name, kind, "CreateContainerConfigError", e);
                return;
            }
        }
        let id = container_id(&self.uid, name, restart_count);
        let bundle = self
            .pod_dir()
            .join("containers")
            .join(name)
            .join(restart_count.to_string());
        let cgroup = sandbox.cgroup.as_ref().map(|p| format!("{p}/{id}"));
        let created = self.write_bundle(&bundle, &c, &image, proc, mounts, cgroup);
        let termination_file = match created {
            Ok(f) => f,
            Err(e) => {
                self.fail(name, kind, "CreateContainerError", e);
                return;
            }
        };
        let stop_signal = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone())
            .and_then(|s| signal_number(&s))
            .unwrap_or(libc::SIGTERM);
        let instance = Instance {
            id: id.clone(),
            restart_count,
            phase: Phase::Created,
            started_at: None,
            finished_at: None,
            exit_code: 0,
            signal: None,
            reason: String::new(),
            message: String::new(),
            image: image.name.clone(),
            image_id: image.image_id.clone(),
            stop_signal,
        };
        // The intent, on disk before the shim hears of it: a daemon that
        // dies before the pod's record says so finds what it made (see
        // `settle_unrecorded`). A plain write, no fsync on the start path:
        // it guards against the daemon dying, and a power loss takes the
        // shim and its containers with it; a torn file reads as no intent.
        let intent_file = bundle.join(INTENT_FILE);
        let intent = serde_json::to_vec(&instance).unwrap_or_default();
        if let Err(e) = std::fs::write(&intent_file, intent) {
            let _ = std::fs::remove_dir_all(&bundle);
            let msg = format!("write {}: {e}", intent_file.display());
            self.fail(name, kind, "CreateContainerError", msg);
            return;
        }
        let req = CreateContainer {
            sandbox: self.uid.clone(),
            id: id.clone(),
            bundle: bundle.clone(),
            log_dir: self.container_log_dir(name),
            restart_count,
            termination_message_file: Some(termination_file),
            fallback_to_logs: c.termination_message_policy.as_deref()
                == Some("FallbackToLogsOnError"),
        };
        if let Err(e) = self.deps.runtime.create_container(&req).await {
            let _ = std::fs::remove_dir_all(&bundle);
            self.fail(name, kind, "CreateContainerError", crate::error_chain(&e));
            return;
        }
        self.event(
            EventType::Normal,
            "Created",
            &fp,
            format!("Created container: {name}"),
        );
        self.retire_previous(name, &bundle).await;
        let cs = self.st.container_mut(name);
        cs.push(instance);
        cs.started = false;
        cs.ready = false;
        if kind == Kind::App {
            self.st.initialized = true;
        }
        match self.deps.runtime.start_container(&self.uid, &id).await {
            Ok(s) => {
                self.st.container_mut(name).waiting = None;
                self.absorb(name, &s);
                self.event(
                    EventType::Normal,
                    "Started",
                    &fp,
                    format!("Started container {name}"),
                );
                self.post_start(name, kind, &c, &id).await;
            }
            Err(e) => {
                let msg = match &e {
                    RuntimeError::Start { message, .. } => message.clone(),
                    other => crate::error_chain(other),
                };
                // containerd records the instance as exited: StartError, 128.
                if let Some(i) = self.st.container_mut(name).instances.last_mut() {
                    i.phase = Phase::Exited;
                    i.exit_code = 128;
                    i.reason = "StartError".into();
                    i.message = msg.clone();
                    let now = SystemTime::now();
                    i.started_at = Some(now);
                    i.finished_at = Some(now);
                }
                self.fail(name, kind, "RunContainerError", msg);
            }
        }
        self.poll = MIN_POLL;
    }

    /// Runs postStart (the container is not `started` until it returns; on
    /// failure it is killed and restarted per policy), then the probes.
    async fn post_start(&mut self, name: &str, kind: Kind, c: &Container, id: &str) {
        let Some(instance) = self.st.container(name).and_then(|s| s.latest()).cloned() else {
            return;
        };
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            // Started waits for the hook.
            let had = self.st.container(name).is_some_and(|s| s.started);
            let cs = self.st.container_mut(name);
            cs.started = false;
            cs.in_post_start = true;
            self.publish();
            let t = self.target(name, id);
            let full = planner::pod_full_name(&self.pod);
            let r = crate::probe::run_hook(&t, &h, name, &full, POST_START_TIMEOUT).await;
            self.st.container_mut(name).in_post_start = false;
            if let Some(m) = r.as_ref().ok().and_then(HookRan::fallback_message) {
                // kubelet records it on the pod, not a container.
                self.event(EventType::Warning, "LifecycleHTTPFallback", "", m);
            }
            if let Err(m) = r {
                let fp = kind.field_path(name);
                self.event(EventType::Warning, "FailedPostStartHook", &fp, m.clone());
                let grace = spec(&self.pod)
                    .termination_grace_period_seconds
                    .unwrap_or(30);
                let ctx = self.stop_ctx(name, kind, &instance);
                stop(
                    &ctx,
                    Grace::Normal(Duration::from_secs(u64::try_from(grace).unwrap_or(0))),
                    "FailedPostStartHook".into(),
                )
                .await;
                self.observe().await;
                // The reason shows while it waits to restart; a container
                // that will not restart shows how it ended.
                let restarts = self
                    .st
                    .container(name)
                    .and_then(Cs::latest)
                    .is_some_and(|i| super::state::should_restart(&self.pod, kind, i));
                if restarts {
                    self.st.container_mut(name).waiting =
                        Some(Waiting::new("PostStartHookError", m));
                }
                self.wake(SystemTime::now() + SYNC_RETRY);
                return;
            }
            self.st.container_mut(name).started = had;
            self.observe().await;
        }
        if kind != Kind::Init && self.st.container(name).is_some_and(Cs::running) {
            self.start_probers(name, c, &instance, false);
        }
    }

    /// Removes the runtime container and bundle of the instance before the
    /// previous one: only state and lastState are kept.
    async fn retire_previous(&mut self, name: &str, _new_bundle: &std::path::Path) {
        let old = self
            .st
            .container(name)
            .filter(|c| c.instances.len() >= 2)
            .map(|c| c.instances[0].clone());
        if let Some(old) = old {
            let _ = self.deps.runtime.remove_container(&self.uid, &old.id).await;
            let _ = std::fs::remove_dir_all(
                self.pod_dir()
                    .join("containers")
                    .join(name)
                    .join(old.restart_count.to_string()),
            );
            // Its log goes with it, as kubelet's container GC removes a
            // removed container's log (rotated files included).
            super::logs::remove_instance_logs(&self.container_log_dir(name), old.restart_count);
        }
    }

    fn container_log_dir(&self, name: &str) -> PathBuf {
        super::logs::pod_log_dir(&self.deps.log_dir, &self.handle.pod_ref).join(name)
    }

    /// Writes `config.json`, the upper/work dirs and the termination-log
    /// file; returns the termination-log's host path.
    fn write_bundle(
        &self,
        bundle: &std::path::Path,
        c: &Container,
        image: &LocalImage,
        proc: super::container::Process,
        mut mounts: Vec<crate::runtime::plan::BindMount>,
        cgroup_path: Option<String>,
    ) -> Result<PathBuf, String> {
        if proc.args.is_empty() {
            return Err("failed to generate container spec: no command specified".into());
        }
        let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", bundle.display());
        let _ = std::fs::remove_dir_all(bundle);
        for d in ["upper", "work"] {
            std::fs::create_dir_all(bundle.join(d)).map_err(|e| io("create bundle", e))?;
        }
        let term = bundle.join("termination-log");
        std::fs::write(&term, b"").map_err(|e| io("create termination-log in", e))?;
        // Writable by whatever user the container runs as: kubelet's
        // makeMounts creates it and chmods it 0666 (kuberuntime_container.go;
        // the chmod, not the create, so the umask cannot narrow it).
        std::fs::set_permissions(&term, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(|e| io("open termination-log in", e))?;
        mounts.push(crate::runtime::plan::BindMount {
            source: term.clone(),
            destination: c.termination_message_path.clone().unwrap_or_else(|| {
                crate::manifest::defaults::DEFAULT_TERMINATION_MESSAGE_PATH.into()
            }),
            readonly: false,
            propagation: None,
        });
        let privileged = proc.privileged;
        let mut cfg = ContainerConfig {
            args: proc.args,
            env: proc.env,
            cwd: proc.cwd,
            uid: proc.uid,
            gid: proc.gid,
            additional_gids: proc.additional_gids,
            hostname: spec(&self.pod)
                .hostname
                .clone()
                .unwrap_or_else(|| self.handle.pod_ref.name.clone()),
            rootfs: Rootfs::Overlay {
                lower: image.lower.clone(),
                upper: bundle.join("upper"),
                work: bundle.join("work"),
            },
            readonly_rootfs: proc.readonly_rootfs,
            mounts,
            cap_add: proc.cap_add,
            cap_drop: proc.cap_drop,
            no_new_privileges: proc.no_new_privileges,
            pod_namespaces: true,
            oom_score_adj: cgroup_path.as_ref().map(|_| {
                resources::oom_score_adj(
                    &self.pod,
                    c,
                    self.deps.downward.node_memory_bytes,
                    resources::is_critical(&self.pod),
                )
            }),
            resources: resources::container_resources(c),
            cgroup_path,
            privileged,
            devices: if privileged {
                crate::runtime::plan::host_devices()
            } else {
                Vec::new()
            },
            seccomp: None,
        };
        let choice = super::security::seccomp(&self.pod, c, &self.deps.security);
        cfg.seccomp = super::security::seccomp_profile(
            &choice,
            &cfg.capabilities(),
            &self.deps.security.seccomp_root,
        )?;
        let spec = build_spec(&cfg).map_err(|e| crate::error_chain(&e))?;
        let json = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        // config.json holds the container's environment, secrets included.
        crate::runtime::record::write_atomic(&bundle.join("config.json"), &json)
            .map_err(|e| crate::error_chain(&e))?;
        Ok(term)
    }

    /// Where handlers of `name`'s current instance run.
    fn target(&self, name: &str, instance: &str) -> Target<R> {
        let ports = find_container(&self.pod, name)
            .and_then(|(_, c)| c.ports.clone())
            .unwrap_or_default();
        Target {
            runtime: self.deps.runtime.clone(),
            sandbox: self.uid.clone(),
            container_id: instance.to_string(),
            netns: self.netns(),
            pod_ip: self.deps.node.pod_ip.clone(),
            ports,
            owner: crate::metrics::ProbeOwner {
                container: name.to_string(),
                pod: self.handle.pod_ref.name.clone(),
                namespace: self.handle.pod_ref.namespace.clone(),
                pod_uid: self.uid.clone(),
            },
        }
    }

    fn stop_ctx(&self, name: &str, kind: Kind, i: &Instance) -> StopCtx<R> {
        StopCtx {
            events: self.deps.events.clone(),
            pod: self.handle.pod_ref.clone(),
            pod_full_name: planner::pod_full_name(&self.pod),
            name: name.to_string(),
            kind,
            instance: i.clone(),
            container: find_container(&self.pod, name).map(|(_, c)| c.clone()),
            target: self.target(name, &i.id),
        }
    }

    /// Starts the probe tasks of a just-started container instance.
    /// `adopted`: the instance ran before this daemon started (its first
    /// probe is jittered).
    fn start_probers(&mut self, name: &str, c: &Container, i: &Instance, adopted: bool) {
        let probes = [
            (ProbeKind::Startup, c.startup_probe.clone()),
            (ProbeKind::Readiness, c.readiness_probe.clone()),
            (ProbeKind::Liveness, c.liveness_probe.clone()),
        ];
        if probes.iter().all(|(_, p)| p.is_none()) {
            return;
        }
        let started = self.st.container(name).is_some_and(|s| s.started);
        let paused = self.st.container(name).is_some_and(|s| s.paused);
        let (tx, rx) = watch::channel(started);
        let (paused_tx, paused_rx) = watch::channel(paused);
        let tasks = probes
            .into_iter()
            .filter_map(|(kind, p)| p.map(|p| (kind, p)))
            .map(|(kind, p)| {
                let task = tokio::spawn(crate::probe::run(
                    self.target(name, &i.id),
                    p,
                    kind,
                    name.to_string(),
                    i.started_at.unwrap_or_else(SystemTime::now),
                    rx.clone(),
                    paused_rx.clone(),
                    self.probe_tx.clone(),
                    adopted,
                ));
                (kind, task)
            })
            .collect();
        self.probers.insert(
            name.to_string(),
            Prober {
                instance: i.id.clone(),
                tasks,
                started: tx,
                paused: paused_tx,
            },
        );
    }

    fn stop_probers(&mut self, name: &str) {
        if let Some(p) = self.probers.remove(name) {
            for (_, t) in p.tasks {
                t.abort();
            }
        }
    }

    /// Stops the startup and liveness probes of `name` and keeps its
    /// readiness probe running: a container being killed (the pod deleted,
    /// or a liveness or startup failure) is still probed for readiness
    /// until it is gone (`k8s:pkg/kubelet/prober/worker.go`: with a
    /// deletion timestamp only `readiness` keeps probing; a liveness kill
    /// puts only the liveness worker on hold).
    fn stop_health_probes(&mut self, name: &str) {
        if let Some(p) = self.probers.get_mut(name) {
            p.tasks.retain(|(kind, t)| {
                let keep = *kind == ProbeKind::Readiness;
                if !keep {
                    t.abort();
                }
                keep
            });
        }
    }

    /// Drives `stopping` (containers being stopped) to its end while the
    /// readiness probes still running report: their results and events
    /// are applied and published as they come. Other probe updates wait
    /// for the worker's loop.
    async fn while_stopping<F: std::future::Future>(&mut self, stopping: F) -> F::Output {
        tokio::pin!(stopping);
        let mut later = Vec::new();
        let out = loop {
            tokio::select! {
                out = &mut stopping => break out,
                Some(u) = self.probe_rx.recv() => {
                    if u.kind == ProbeKind::Readiness {
                        // Readiness never asks for a kill.
                        let _ = self.probe_event(u);
                        self.publish();
                    } else {
                        later.push(u);
                    }
                }
            }
        };
        for u in later {
            let _ = self.probe_tx.send(u);
        }
        out
    }

    /// A probe result: events, started/ready, and kills for liveness and
    /// startup failures.
    async fn on_probe(&mut self, u: ProbeUpdate) {
        if let Some(kill) = self.probe_event(u) {
            self.stop_health_probes(&kill.container);
            let ctx = self.stop_ctx(&kill.container, kill.kind, &kill.instance);
            let stopping = stop(&ctx, kill.grace, kill.message);
            self.while_stopping(stopping).await;
            self.observe().await;
        }
        self.publish();
    }

    /// Applies a probe's update to the status and records its events;
    /// a failed liveness or startup probe returns the kill it calls for.
    fn probe_event(&mut self, u: ProbeUpdate) -> Option<ProbeKill> {
        let (kind, c) = find_container(&self.pod, &u.container).map(|(k, c)| (k, c.clone()))?;
        let instance = self
            .st
            .container(&u.container)
            .and_then(|s| s.latest())
            .filter(|i| i.id == u.instance && i.phase == Phase::Running)
            .cloned()?;
        // A probe that was in flight when the container froze says nothing
        // about its health.
        let paused = self.st.container(&u.container).is_some_and(|c| c.paused);
        if paused && !matches!(u.event, UpdateKind::Result(_) if u.kind == ProbeKind::Readiness) {
            return None;
        }
        let fp = kind.field_path(&u.container);
        match u.event {
            UpdateKind::FailedAttempt => {
                self.event(
                    EventType::Warning,
                    "Unhealthy",
                    &fp,
                    format!("{} probe failed: {}", u.kind.label(), u.message),
                );
            }
            UpdateKind::Warning => {
                self.event(
                    EventType::Warning,
                    "ProbeWarning",
                    &fp,
                    format!("{} probe warning: {}", u.kind.label(), u.message),
                );
            }
            UpdateKind::Result(ok) => match (u.kind, ok) {
                (ProbeKind::Startup, true) => {
                    let cs = self.st.container_mut(&u.container);
                    cs.started = true;
                    if c.readiness_probe.is_none() {
                        cs.ready = true;
                    }
                    if let Some(p) = self.probers.get(&u.container) {
                        let _ = p.started.send(true);
                    }
                }
                (ProbeKind::Readiness, ok) => self.st.container_mut(&u.container).ready = ok,
                (ProbeKind::Liveness, true) => {}
                (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                    let (what, probe) = if u.kind == ProbeKind::Startup {
                        ("startup", &c.startup_probe)
                    } else {
                        ("liveness", &c.liveness_probe)
                    };
                    let grace = probe
                        .as_ref()
                        .and_then(|p| p.termination_grace_period_seconds)
                        .or(spec(&self.pod).termination_grace_period_seconds)
                        .unwrap_or(30);
                    // kuberuntime_manager.go words the two kinds apart:
                    // `computePodActions` for app containers, and
                    // `computeInitContainerActions` (no restart suffix)
                    // for sidecars.
                    let message = if kind == Kind::Sidecar {
                        format!("Init container {} failed {what} probe", u.container)
                    } else {
                        format!(
                            "Container {} failed {what} probe, will be restarted",
                            u.container
                        )
                    };
                    return Some(ProbeKill {
                        container: u.container,
                        kind,
                        instance,
                        grace: Grace::Normal(Duration::from_secs(
                            u64::try_from(grace).unwrap_or(0),
                        )),
                        message,
                    });
                }
            },
        }
        None
    }

    /// Terminating → Terminated: stop app (and regular init) containers in
    /// parallel, then sidecars in reverse order, then the sandbox.
    async fn terminate(&mut self, why: &Termination) {
        let names: Vec<String> = self.probers.keys().cloned().collect();
        for n in &names {
            self.stop_health_probes(n);
        }
        // A frozen container could not see its stop signal: thaw it first.
        let frozen: Vec<(String, String)> = self
            .st
            .containers
            .iter()
            .filter(|(_, c)| c.paused)
            .filter_map(|(n, c)| c.latest().map(|i| (n.clone(), i.id.clone())))
            .collect();
        for (name, id) in frozen {
            if let Err(e) = self.deps.runtime.resume_container(&self.uid, &id).await {
                tracing::warn!(container = %name, error = %crate::error_chain(&e), "thaw before stop");
            }
            self.st.container_mut(&name).paused = false;
        }
        let pod_grace = spec(&self.pod)
            .termination_grace_period_seconds
            .unwrap_or(30);
        let secs = |g: i64| Duration::from_secs(u64::try_from(g).unwrap_or(0));
        // `--grace-period` overrides the pod's grace (0 = kill now); either
        // way each container's stop signal gets at least 2 s.
        let grace = match why {
            Termination::Deleted {
                grace_seconds: Some(g),
            } => secs(*g),
            _ => secs(pod_grace),
        };
        let kill_now = matches!(
            why,
            Termination::Deleted {
                grace_seconds: Some(0)
            }
        );
        let deadline = Instant::now() + grace;
        let grace_left = || {
            if kill_now {
                Grace::Now
            } else {
                Grace::Normal(deadline.saturating_duration_since(Instant::now()))
            }
        };
        if self.st.sandbox == Sandbox::Ready {
            let live = |w: &Self, kinds: &[Kind]| -> Vec<StopCtx<R>> {
                all_containers(&w.pod)
                    .filter(|(k, _)| kinds.contains(k))
                    .filter_map(|(k, c)| {
                        w.st.container(&c.name)
                            .and_then(Cs::latest)
                            .filter(|i| !i.exited())
                            .map(|i| w.stop_ctx(&c.name, k, i))
                    })
                    .collect()
            };
            let first = live(self, &[Kind::App, Kind::Init]);
            let mut sidecars = live(self, &[Kind::Sidecar]);
            sidecars.reverse();
            let g = grace_left();
            let stops = first
                .iter()
                .map(|ctx| stop(ctx, g, format!("Stopping container {}", ctx.name)));
            let stopping = async {
                futures_util::future::join_all(stops).await;
                for ctx in &sidecars {
                    stop(
                        ctx,
                        grace_left(),
                        format!("Stopping container {}", ctx.name),
                    )
                    .await;
                }
            };
            self.while_stopping(stopping).await;
            self.observe().await;
            if let Err(e) = self.deps.runtime.remove_sandbox(&self.uid).await {
                tracing::warn!(error = %e, "remove sandbox");
            }
        }
        for n in &names {
            self.stop_probers(n);
        }
        // Anything still marked live is gone with the sandbox.
        self.lose_all("The container could not be located when the pod was terminated");
        if let Err(e) = volumes::teardown(&self.pod_dir()) {
            tracing::warn!(error = %e, "remove pod directory");
        }
        self.unwatch_sandbox();
        self.sandbox = None;
        self.st.sandbox = Sandbox::Gone;
        self.st.terminated = true;
        // A container that ran shows how it ended; one that never ran keeps
        // the reason it could not (CreateContainerConfigError, ErrImagePull…).
        for c in self.st.containers.values_mut() {
            if !c.instances.is_empty() {
                c.waiting = None;
            }
        }
    }
}

/// A container instance a failed probe has condemned.
struct ProbeKill {
    container: String,
    kind: Kind,
    instance: Instance,
    grace: Grace,
    message: String,
}

/// How long a container may take to stop.
#[derive(Debug, Clone, Copy)]
pub enum Grace {
    /// The container's grace: preStop within it, then at least
    /// [`MINIMUM_GRACE`] for the stop signal (kubelet's killContainer).
    Normal(Duration),
    /// `--grace-period 0`: SIGKILL now, no preStop.
    Now,
}

/// Everything needed to stop one container instance.
pub struct StopCtx<R: Runtime> {
    events: Arc<Recorder>,
    pod: PodRef,
    pod_full_name: String,
    name: String,
    kind: Kind,
    instance: Instance,
    container: Option<Container>,
    target: Target<R>,
}

/// preStop → stop signal → grace → SIGKILL (`kuberuntime_container.go
/// killContainer`).
/// How often a stopping container's state is read before its deadline.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long after the grace deadline nodelet sends SIGKILL itself when
/// the shim was asked to.
const KILL_SAFETY_NET: Duration = Duration::from_millis(500);

async fn stop<R: Runtime>(ctx: &StopCtx<R>, grace: Grace, message: String) {
    let fp = ctx.kind.field_path(&ctx.name);
    ctx.events.record(
        &ctx.pod,
        EventType::Normal,
        "Killing",
        &fp,
        message,
        SystemTime::now(),
    );
    let rt = &ctx.target.runtime;
    let (sandbox, id) = (&ctx.target.sandbox, &ctx.instance.id);
    let exited = |s: &Result<ContainerState, RuntimeError>| {
        s.as_ref().map_or(true, |s| s.status == Status::Exited)
    };
    let mut left = match grace {
        Grace::Normal(d) => d,
        Grace::Now => Duration::ZERO,
    };
    let pre_stop = ctx
        .container
        .as_ref()
        .and_then(|c| c.lifecycle.as_ref())
        .and_then(|l| l.pre_stop.clone());
    if let Some(h) = pre_stop.filter(|_| !left.is_zero()) {
        let started = Instant::now();
        let run = crate::probe::run_hook(&ctx.target, &h, &ctx.name, &ctx.pod_full_name, left);
        match tokio::time::timeout(left, run).await {
            Ok(Ok(ran)) => {
                if let Some(m) = ran.fallback_message() {
                    ctx.events.record(
                        &ctx.pod,
                        EventType::Warning,
                        "LifecycleHTTPFallback",
                        "",
                        m,
                        SystemTime::now(),
                    );
                }
            }
            Ok(Err(m)) => ctx.events.record(
                &ctx.pod,
                EventType::Warning,
                "FailedPreStopHook",
                &fp,
                m,
                SystemTime::now(),
            ),
            Err(_) => ctx.events.record(
                &ctx.pod,
                EventType::Warning,
                "FailedPreStopHook",
                &fp,
                format!(
                    "PreStop hook for Container {:?} did not finish within the grace period",
                    ctx.name
                ),
                SystemTime::now(),
            ),
        }
        // kubelet subtracts whole seconds.
        let used = Duration::from_secs(started.elapsed().as_secs());
        left = left.saturating_sub(used);
    }
    // kubelet's killContainer: the override replaces the grace before the
    // preStop, and whatever the preStop left, the stop signal is sent and
    // followed by at least `minimumGracePeriodInSeconds` — also after a
    // preStop (exec, or a sleep cut by the grace) that used it all.
    // nodelet's `--grace-period 0` alone kills at once (the CLI's contract;
    // kubelet floors even that at 2 s).
    if let Grace::Normal(_) = grace {
        left = left.max(MINIMUM_GRACE);
    }
    if !left.is_zero() {
        // The grace period runs from the stop signal being sent, not from
        // its (possibly queued) acknowledgement: the deadline is fixed first.
        let deadline = Instant::now() + left;
        // The shim kills at the deadline itself when it can; ours is then
        // a safety net a little later (a shim from an older nodelet).
        let deadline = match rt
            .stop_container(sandbox, id, ctx.instance.stop_signal, deadline)
            .await
        {
            Ok(true) => deadline + KILL_SAFETY_NET,
            _ => deadline,
        };
        while Instant::now() < deadline {
            // A slow answer (a busy shim) must not push the SIGKILL back.
            let state = tokio::time::timeout_at(deadline.into(), rt.container_state(sandbox, id));
            match state.await {
                Ok(s) if exited(&s) => return,
                Ok(_) => {}
                Err(_) => break,
            }
            // Polls (gently: a pod's containers share one shim) but wakes
            // exactly at the deadline.
            let nap = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(nap.min(STOP_POLL)).await;
        }
    }
    let _ = rt.signal_container(sandbox, id, libc::SIGKILL).await;
    for _ in 0..500 {
        if exited(&rt.container_state(sandbox, id).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
