//! What the pod worker knows about a pod's containers: the instances the
//! runtime created (newest last), the last failed attempt (kubelet's reason
//! cache) and probe-derived flags. The planner reads it; the worker writes it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Created,
    Running,
    Exited,
}

/// One runtime container: one start of a spec container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub restart_count: u32,
    pub phase: Phase,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// For exited instances: `Completed`, `Error`, `OOMKilled`, `StartError`,
    /// `ContainerStatusUnknown`.
    pub reason: String,
    pub message: String,
    /// Normalized reference and repo digest reference.
    pub image: String,
    pub image_id: String,
    /// Signal that asks it to stop (image `StopSignal`, else SIGTERM).
    pub stop_signal: i32,
}

impl Instance {
    pub fn exited(&self) -> bool {
        self.phase == Phase::Exited
    }

    pub fn succeeded(&self) -> bool {
        self.exited() && self.exit_code == 0
    }
}

/// Why a container is waiting: the reason cache of the last failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Oldest first; the worker keeps the two newest (state and lastState).
    pub instances: Vec<Instance>,
    pub waiting: Option<Waiting>,
    /// Startup probe passed (or none) and postStart returned.
    pub started: bool,
    /// Readiness probe passed (or none).
    pub ready: bool,
    /// Its running instance is frozen (`nodelet pause`): not ready, probes wait.
    #[serde(default)]
    pub paused: bool,
    /// Its newest instance runs its postStart hook: the status shows the
    /// container as not yet created (kubelet publishes no status while
    /// its pod worker is inside `startContainer`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_post_start: bool,
}

impl ContainerState {
    pub fn latest(&self) -> Option<&Instance> {
        self.instances.last()
    }

    pub fn running(&self) -> bool {
        self.latest().is_some_and(|i| i.phase == Phase::Running)
    }

    /// Records a new instance, keeping only the previous one besides it.
    pub fn push(&mut self, i: Instance) {
        self.instances.push(i);
        if self.instances.len() > 2 {
            self.instances.remove(0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Sandbox {
    /// Never created.
    #[default]
    None,
    Ready,
    /// Existed and died (shim gone) or was torn down.
    Gone,
}

/// Everything observed about one pod.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodState {
    pub sandbox: Sandbox,
    pub containers: BTreeMap<String, ContainerState>,
    /// Latched when the first app container is created; init containers
    /// are never re-run while it holds (cleared with a new sandbox).
    pub initialized: bool,
    /// When the pod was accepted (`status.startTime`).
    pub start_time: Option<SystemTime>,
    /// Set once the pod must stop: deletion, deadline, completion.
    pub terminating: Option<Termination>,
    /// Set when everything stopped and the sandbox is gone.
    pub terminated: bool,
}

impl PodState {
    pub fn container(&self, name: &str) -> Option<&ContainerState> {
        self.containers.get(name)
    }

    pub fn container_mut(&mut self, name: &str) -> &mut ContainerState {
        self.containers.entry(name.to_string()).or_default()
    }
}

/// Why a pod is being stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Termination {
    /// Deleted (API, `nodelet run` interrupted) with this grace period.
    Deleted { grace_seconds: Option<i64> },
    /// `activeDeadlineSeconds` passed: phase Failed, reason DeadlineExceeded.
    DeadlineExceeded,
    /// A regular init container failed under `restartPolicy: Never`.
    InitFailed,
    /// Every app container finished for good; only sidecars (if any) remain.
    Completed,
}

/// A container of the spec and where it stands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Sidecar,
    App,
}

impl Kind {
    /// `spec.initContainers{x}` or `spec.containers{x}`.
    pub fn field_path(self, name: &str) -> String {
        match self {
            Kind::Init | Kind::Sidecar => format!("spec.initContainers{{{name}}}"),
            Kind::App => format!("spec.containers{{{name}}}"),
        }
    }
}

pub fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Every container of the pod with its kind, init containers first.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = (Kind, &Container)> {
    let s = spec(pod);
    s.init_containers
        .iter()
        .flatten()
        .map(|c| {
            (
                if is_sidecar(c) {
                    Kind::Sidecar
                } else {
                    Kind::Init
                },
                c,
            )
        })
        .chain(s.containers.iter().map(|c| (Kind::App, c)))
}

pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(Kind, &'a Container)> {
    all_containers(pod).find(|(_, c)| c.name == name)
}

pub fn restart_policy(pod: &Pod) -> &str {
    spec(pod).restart_policy.as_deref().unwrap_or("Always")
}

/// `ShouldContainerBeRestarted` for an exited instance of a container of
/// `kind` (`k8s:pkg/kubelet/container/helpers.go`).
pub fn should_restart(pod: &Pod, kind: Kind, last: &Instance) -> bool {
    match kind {
        Kind::Sidecar => true,
        Kind::Init | Kind::App => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => last.exit_code != 0,
            _ => kind == Kind::App || last.exit_code != 0,
        },
    }
}
