//! PodStatus exactly as kubelet fills it (`k8s:pkg/kubelet/kubelet_pods.go`
//! `generateAPIPodStatus`, `getPhase`, `convertToAPIContainerStatuses`;
//! `k8s:pkg/kubelet/status/generate.go` for conditions). Pure.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::qos::qos_class;
use super::state::{
    all_containers, restart_policy, spec, ContainerState, Instance, Kind, Phase, PodState,
    Termination, Waiting,
};

/// The scheme of `containerID` in statuses.
pub const CONTAINER_ID_SCHEME: &str = "nodelet://";

pub fn time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(secs, nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Node-level facts a status carries.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub host_ip: String,
    /// The pod's IP: the host's until CNI networking exists (loopback-only
    /// network namespaces have no routable address).
    pub pod_ip: String,
}

/// Builds the status to publish. `prev` keeps condition transition times
/// and the sticky terminal phase.
pub fn generate(
    pod: &Pod,
    st: &PodState,
    node: &NodeFacts,
    prev: Option<&PodStatus>,
    now: SystemTime,
) -> PodStatus {
    // A pod that was turned away before anything ran (admission: kubelet's
    // rejectPod) keeps the status it was given: no container statuses.
    if let Some(p) = prev.filter(|p| {
        st.terminated
            && st.sandbox == super::state::Sandbox::None
            && st.containers.is_empty()
            && p.phase.as_deref() == Some("Failed")
    }) {
        return p.clone();
    }
    let has_init = spec(pod)
        .init_containers
        .as_ref()
        .is_some_and(|v| !v.is_empty());
    let mut init_statuses = Vec::new();
    let mut statuses = Vec::new();
    for (kind, c) in all_containers(pod) {
        let s = container_status(c, kind, st.container(&c.name), has_init);
        if kind == Kind::App {
            statuses.push(s);
        } else {
            init_statuses.push(s);
        }
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let mut phase = phase(pod, st, &init_statuses, &statuses);
    let prev_phase = prev.and_then(|p| p.phase.as_deref());
    if matches!(prev_phase, Some("Succeeded" | "Failed")) {
        phase = prev_phase.unwrap_or_default().to_string();
    }
    let (reason, message) = match st.terminating {
        Some(Termination::DeadlineExceeded) => (
            Some("DeadlineExceeded".to_string()),
            Some("Pod was active on the node longer than the specified deadline".to_string()),
        ),
        _ => prev
            .map(|p| (p.reason.clone(), p.message.clone()))
            .unwrap_or_default(),
    };
    let conditions = conditions(pod, st, &phase, &init_statuses, &statuses, prev, now);
    let ip = |s: &str| (!s.is_empty()).then(|| s.to_string());
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: ip(&node.host_ip),
        host_ips: ip(&node.host_ip).map(|i| vec![HostIP { ip: i }]),
        pod_ip: ip(&node.pod_ip),
        pod_ips: ip(&node.pod_ip).map(|i| vec![PodIP { ip: i }]),
        start_time: st.start_time.map(time),
        init_container_statuses: has_init.then_some(init_statuses),
        container_statuses: Some(statuses),
        qos_class: Some(qos_class(pod).to_string()),
        reason,
        message,
        ..Default::default()
    }
}

fn terminated(i: &Instance) -> ApiState {
    ApiState {
        terminated: Some(ContainerStateTerminated {
            exit_code: i.exit_code,
            signal: i.signal,
            reason: (!i.reason.is_empty()).then(|| i.reason.clone()),
            message: (!i.message.is_empty()).then(|| i.message.clone()),
            started_at: i.started_at.map(time),
            finished_at: i.finished_at.map(time),
            container_id: Some(format!("{CONTAINER_ID_SCHEME}{}", i.id)),
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    }
}

/// One container's status (`convertToAPIContainerStatuses`).
pub fn container_status(
    c: &Container,
    kind: Kind,
    cs: Option<&ContainerState>,
    pod_has_init: bool,
) -> ContainerStatus {
    let default_reason = if pod_has_init {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let image = c.image.clone().unwrap_or_default();
    if let Some(s) = cs.filter(|s| s.in_post_start) {
        // Shown as it was before this instance: waiting to be created.
        let mut before = s.clone();
        before.instances.pop();
        before.in_post_start = false;
        before.waiting = Some(Waiting::new(default_reason, ""));
        return container_status(c, kind, Some(&before), pod_has_init);
    }
    let Some(latest) = cs.and_then(|s| s.latest()) else {
        let w = cs.and_then(|s| s.waiting.clone());
        return ContainerStatus {
            name: c.name.clone(),
            state: Some(match &w {
                Some(w) => waiting(&w.reason, &w.message),
                None => waiting(default_reason, ""),
            }),
            last_state: Some(ApiState::default()),
            ready: false,
            restart_count: 0,
            image,
            image_id: String::new(),
            started: Some(false),
            ..Default::default()
        };
    };
    let cs = cs.cloned().unwrap_or_default();
    let previous = cs.instances.len().checked_sub(2).map(|i| &cs.instances[i]);
    let (state, last_state) = match (latest.phase, &cs.waiting) {
        // Exited and waiting to restart: the reason cache shows, the exited
        // instance moves to lastState.
        (Phase::Exited, Some(w)) => (waiting(&w.reason, &w.message), terminated(latest)),
        (Phase::Exited, None) => (
            terminated(latest),
            previous.map(terminated).unwrap_or_default(),
        ),
        (Phase::Running, _) => (
            ApiState {
                running: Some(ContainerStateRunning {
                    started_at: latest.started_at.map(time),
                }),
                ..Default::default()
            },
            previous.map(terminated).unwrap_or_default(),
        ),
        (Phase::Created, _) => (
            waiting("", ""),
            previous.map(terminated).unwrap_or_default(),
        ),
    };
    let running = latest.phase == Phase::Running;
    let (started, ready) = match kind {
        Kind::Init => (running, latest.succeeded()),
        Kind::Sidecar | Kind::App => {
            let started = running && cs.started;
            (started, started && cs.ready && !cs.paused)
        }
    };
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: Some(last_state),
        ready,
        restart_count: i32::try_from(latest.restart_count).unwrap_or(i32::MAX),
        image: if latest.image.is_empty() {
            image
        } else {
            latest.image.clone()
        },
        image_id: latest.image_id.clone(),
        container_id: Some(format!("{CONTAINER_ID_SCHEME}{}", latest.id)),
        started: Some(started),
        ..Default::default()
    }
}

/// `getPhase`: kubelet's counting rules over the statuses about to be
/// published (see ../shared kubelet-behaviour §1), first match wins.
fn phase(pod: &Pod, st: &PodState, inits: &[ContainerStatus], apps: &[ContainerStatus]) -> String {
    let last_terminated = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    let (mut pending_init, mut failed_init, mut pending_sidecar) = (0, 0, 0);
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    let kinds = all_containers(pod).filter(|(k, _)| *k != Kind::App);
    for (s, (kind, _)) in inits.iter().zip(kinds) {
        let state = s.state.clone().unwrap_or_default();
        if kind == Kind::Sidecar {
            if state.running.is_some() {
                running += 1;
                if s.started != Some(true) {
                    pending_sidecar += 1;
                }
            } else if state.waiting.is_some() && last_terminated(s).is_none() {
                pending_sidecar += 1;
                waiting += 1;
            }
        } else if state.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &state.terminated {
            failed_init += usize::from(t.exit_code != 0);
        } else if last_terminated(s).is_some_and(|c| c != 0) {
            failed_init += 1;
        } else {
            pending_init += 1;
        }
    }
    let mut app_started = false;
    for s in apps {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
            app_started = true;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            succeeded += usize::from(t.exit_code == 0);
            app_started = true;
        } else if last_terminated(s).is_some() {
            stopped += 1;
            app_started = true;
        } else {
            waiting += 1;
        }
    }
    if st.terminating == Some(Termination::DeadlineExceeded) {
        return "Failed".into();
    }
    // A deleted pod whose containers all stopped is terminal (1.27+).
    let terminal = st.terminated && matches!(st.terminating, Some(Termination::Deleted { .. }));
    let policy = restart_policy(pod);
    let phase = if failed_init > 0 && policy == "Never" {
        "Failed"
    } else if terminal && running == 0 {
        if stopped > 0 && stopped == succeeded && waiting == 0 {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if pending_init > 0 || (pending_sidecar > 0 && !app_started) || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    phase.to_string()
}

fn names(list: &[&str]) -> String {
    format!("[{}]", list.join(" "))
}

#[allow(clippy::too_many_arguments)]
fn conditions(
    pod: &Pod,
    st: &PodState,
    phase: &str,
    inits: &[ContainerStatus],
    apps: &[ContainerStatus],
    prev: Option<&PodStatus>,
    now: SystemTime,
) -> Vec<PodCondition> {
    let cond = |ty: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = prev
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ty))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(now));
        PodCondition {
            type_: ty.to_string(),
            status: status.to_string(),
            last_transition_time: Some(since),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            message: (!message.is_empty()).then_some(message),
            ..Default::default()
        }
    };
    let sandbox_ok = st.sandbox == super::state::Sandbox::Ready;
    // Initialized: regular init done = exited 0 (ready); sidecar = started.
    let kinds: Vec<Kind> = all_containers(pod)
        .filter(|(k, _)| *k != Kind::App)
        .map(|(k, _)| k)
        .collect();
    let incomplete: Vec<&str> = inits
        .iter()
        .zip(&kinds)
        .filter(|(s, k)| match k {
            Kind::Sidecar => s.started != Some(true),
            _ => !s.ready,
        })
        .map(|(s, _)| s.name.as_str())
        .collect();
    let app_started = apps.iter().any(|s| {
        st.container(&s.name)
            .is_some_and(|c| !c.instances.is_empty())
    });
    let initialized =
        incomplete.is_empty() || app_started || st.initialized || phase == "Succeeded";
    let init_cond = if initialized {
        cond(
            "Initialized",
            true,
            // status/generate.go GeneratePodInitializedCondition: every
            // init container's status known (always, here) in a Succeeded
            // pod is `PodCompleted`, with or without init containers.
            if phase == "Succeeded" {
                "PodCompleted"
            } else {
                ""
            },
            String::new(),
        )
    } else {
        cond(
            "Initialized",
            false,
            "ContainersNotInitialized",
            format!("containers with incomplete status: {}", names(&incomplete)),
        )
    };
    // ContainersReady: app containers and sidecars.
    let unready: Vec<&str> = inits
        .iter()
        .zip(&kinds)
        .filter(|(_, k)| **k == Kind::Sidecar)
        .map(|(s, _)| s)
        .chain(apps.iter())
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = match phase {
        "Succeeded" => cond("ContainersReady", false, "PodCompleted", String::new()),
        "Failed" => cond("ContainersReady", false, "PodFailed", String::new()),
        _ if !unready.is_empty() => cond(
            "ContainersReady",
            false,
            "ContainersNotReady",
            format!("containers with unready status: {}", names(&unready)),
        ),
        _ => cond("ContainersReady", true, "", String::new()),
    };
    let gates = spec(pod).readiness_gates.clone().unwrap_or_default();
    let pod_ready = if ready.status != "True" {
        PodCondition {
            type_: "Ready".into(),
            ..ready.clone()
        }
    } else if let Some(g) = gates.first() {
        // No controller sets gate conditions on a single node.
        cond(
            "Ready",
            false,
            "ReadinessGatesNotReady",
            format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                g.condition_type
            ),
        )
    } else {
        cond("Ready", true, "", String::new())
    };
    // Ready copies ContainersReady's reason and message but keeps its own
    // transition time.
    let pod_ready = {
        let mut r = cond("Ready", pod_ready.status == "True", "", String::new());
        r.reason = pod_ready.reason;
        r.message = pod_ready.message;
        r
    };
    let mut all = vec![
        cond("PodReadyToStartContainers", sandbox_ok, "", String::new()),
        init_cond,
        pod_ready,
        ready,
        cond("PodScheduled", true, "", String::new()),
    ];
    // nodelet's own condition, present while any container is frozen.
    let paused: Vec<&str> = all_containers(pod)
        .map(|(_, c)| c.name.as_str())
        .filter(|n| st.container(n).is_some_and(|c| c.paused))
        .collect();
    if !paused.is_empty() {
        all.push(cond(
            PAUSED_CONDITION,
            true,
            "Paused",
            format!("paused containers: {}", names(&paused)),
        ));
    }
    all
}

/// The condition a pod with frozen containers carries.
pub const PAUSED_CONDITION: &str = "nodelet.dev/Paused";
