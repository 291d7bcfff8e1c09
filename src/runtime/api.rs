//! The `Runtime` trait the pod worker drives: sandboxes (one per pod) and
//! the containers in them. Backends: the native one (a shim per pod) and a
//! fake for unit tests. Knows nothing of Kubernetes.

use std::future::Future;
use std::path::PathBuf;

pub use super::cgroup::{Resources, Stats};
pub use super::native::protocol::{ContainerState, ExecResult, Status};
pub use super::record::ExitRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Unique per pod (the pod UID).
    pub id: String,
    /// The pod's hostname (its name, or `spec.hostname`).
    pub hostname: String,
    /// cgroups to ensure, parents first; the last is the sandbox's own,
    /// under which each container gets `<sandbox cgroup>/<container id>`.
    /// Empty: no cgroups (a runtime may then refuse containers asking for one).
    pub cgroups: Vec<(String, Resources)>,
}

/// What a created sandbox offers its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Holds the pod's `hosts`, `hostname` and `resolv.conf`.
    pub etc_dir: PathBuf,
    /// The pod's network namespace (probes connect from inside it); none
    /// for a runtime without one (the fake).
    pub netns: Option<PathBuf>,
    /// The sandbox's cgroup, if it has one.
    pub cgroup: Option<String>,
}

impl SandboxInfo {
    /// Bind mounts of the pod-level `/etc/hosts`, `/etc/hostname` and
    /// `/etc/resolv.conf`, as containerd gives every container of a pod.
    pub fn pod_mounts(&self) -> Vec<super::plan::BindMount> {
        ["hosts", "hostname", "resolv.conf"]
            .iter()
            .map(|f| super::plan::BindMount {
                source: self.etc_dir.join(f),
                destination: format!("/etc/{f}"),
                readonly: false,
                propagation: None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateContainer {
    pub sandbox: String,
    pub id: String,
    /// An OCI bundle: `config.json` (see `runtime::plan`) and its rootfs dirs.
    pub bundle: PathBuf,
    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>`.
    pub log_dir: PathBuf,
    pub restart_count: u32,
    /// Host file bind-mounted at the container's terminationMessagePath.
    pub termination_message_file: Option<PathBuf>,
    /// `terminationMessagePolicy: FallbackToLogsOnError`.
    pub fallback_to_logs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("container {id} in sandbox {sandbox}: {message}")]
    Container {
        sandbox: String,
        id: String,
        message: String,
    },
    /// The container could not start (containerd's StartError, exit 128).
    #[error("start container {id}: {message}")]
    Start { id: String, message: String },
    #[error("sandbox {sandbox}: {action}")]
    Shim {
        sandbox: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
}

/// One run of a repeated exec or HTTP attempt ([`Runtime::exec_every`],
/// [`Runtime::http_every`]): its result, or why it could not run, and how
/// long it took.
#[derive(Debug)]
pub struct Ran<T> {
    pub result: Result<T, RuntimeError>,
    pub took: std::time::Duration,
}

pub type ExecRun = Ran<ExecResult>;

/// The runs of a repeated exec or HTTP attempt as the runtime reports
/// them; dropping it ends the repetition.
pub trait Repeats<T>: Send {
    /// The next runs, oldest first: every failure as it happens, the first
    /// `quiet_after` successes in a row too, later successes in batches.
    /// An error ends the repetition.
    fn next(&mut self) -> impl Future<Output = Result<Vec<Ran<T>>, RuntimeError>> + Send;
}

/// What a pod worker needs from a container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// A repeated exec's runs.
    type ExecRuns: Repeats<ExecResult>;
    /// A repeated HTTP attempt's or connection's runs.
    type HttpRuns: Repeats<crate::probe::http1::Made>;
    fn create_sandbox(
        &self,
        cfg: &SandboxConfig,
    ) -> impl Future<Output = Result<SandboxInfo, RuntimeError>> + Send;
    /// Kills whatever still runs in the sandbox and removes it; idempotent.
    fn remove_sandbox(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// What a live sandbox offers (after a daemon restart); none if gone.
    fn sandbox_info(&self, id: &str) -> impl Future<Output = Option<SandboxInfo>> + Send;
    /// Waits until something in the sandbox may have changed (a container
    /// exited) past the change count `since`; returns the new count. The
    /// default polls: it returns `since` after half a second, so callers
    /// look again as they would on a timer.
    fn wait_change(
        &self,
        sandbox: &str,
        since: u64,
    ) -> impl Future<Output = Result<u64, RuntimeError>> + Send {
        let _ = sandbox;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            Ok(since)
        }
    }
    /// Sandboxes that exist now (after a daemon restart, the live shims).
    fn list_sandboxes(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    fn create_container(
        &self,
        req: &CreateContainer,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;
    fn start_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;
    fn signal_container(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Sends the stop signal and, where the runtime can, has it SIGKILL
    /// the container at `kill_at` by itself; `Ok(true)` when it will. The
    /// default only signals: the caller kills at the deadline.
    fn stop_container(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
        kill_at: std::time::Instant,
    ) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        let _ = kill_at;
        async move {
            self.signal_container(sandbox, id, signal)
                .await
                .map(|()| false)
        }
    }
    fn container_state(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;
    /// Every container the sandbox holds, created, running or exited: the
    /// truth about what runs, whatever the daemon's records say.
    fn list_containers(
        &self,
        sandbox: &str,
    ) -> impl Future<Output = Result<Vec<ContainerState>, RuntimeError>> + Send;
    fn remove_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Freezes a running container's cgroup; returns once it is frozen.
    fn pause_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Thaws a paused container.
    fn resume_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Usage of a container's cgroup; none without one.
    fn container_stats(
        &self,
        sandbox: &str,
        id: &str,
    ) -> impl Future<Output = Option<Stats>> + Send;
    /// Usage of the sandbox's cgroup (all its containers); none without one.
    fn sandbox_stats(&self, sandbox: &str) -> impl Future<Output = Option<Stats>> + Send;
    /// Runs `args` in a running container with its user, root and
    /// namespaces; at `timeout` the command's process group is killed.
    /// Each of stdout and stderr keeps at most `max_output` bytes.
    fn exec(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        timeout: std::time::Duration,
        max_output: usize,
    ) -> impl Future<Output = Result<ExecResult, RuntimeError>> + Send;
    /// Runs `args` like [`Runtime::exec`] at `first` and every `period`
    /// after, one run at a time (a run that outlasts its period is
    /// followed at once by the next; further missed ticks are dropped),
    /// until the returned runs are dropped. Not while the container is
    /// paused: those ticks are skipped. `None`: this runtime (or this
    /// sandbox's shim) cannot; exec on each tick instead.
    #[allow(clippy::too_many_arguments)]
    fn exec_every(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        timeout: std::time::Duration,
        max_output: usize,
        first: tokio::time::Instant,
        period: std::time::Duration,
        quiet_after: u32,
    ) -> impl Future<Output = Result<Option<Self::ExecRuns>, RuntimeError>> + Send;
    /// Makes the plain-HTTP attempt `get` from inside the sandbox's network
    /// namespace at `first` and every `period` after, like
    /// [`Runtime::exec_every`] (an attempt past `timeout` ends as kubelet's
    /// timeout failure). `None`: this runtime cannot (or not `get`: HTTPS);
    /// make the attempt on each tick instead. `id`: the container probed
    /// (for messages: the attempt is the sandbox's).
    #[allow(clippy::too_many_arguments)]
    fn http_every(
        &self,
        sandbox: &str,
        id: &str,
        get: &crate::probe::http1::Get,
        timeout: std::time::Duration,
        first: tokio::time::Instant,
        period: std::time::Duration,
        quiet_after: u32,
    ) -> impl Future<Output = Result<Option<Self::HttpRuns>, RuntimeError>> + Send;
    /// Connects to `addr` from inside the sandbox's network namespace (a
    /// tcpSocket probe's attempt) at `first` and every `period` after, like
    /// [`Runtime::http_every`]. `None`: connect on each tick instead.
    #[allow(clippy::too_many_arguments)]
    fn dial_every(
        &self,
        sandbox: &str,
        id: &str,
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
        first: tokio::time::Instant,
        period: std::time::Duration,
        quiet_after: u32,
    ) -> impl Future<Output = Result<Option<Self::HttpRuns>, RuntimeError>> + Send;
}
