//! The planner: the only place that decides what happens next to a pod.
//! A pure function of the pod spec, the observed [`PodState`], the clock and
//! the back-off book, modelled on kubelet's `computePodActions` and
//! `computeInitContainerActions`
//! (`k8s:pkg/kubelet/kuberuntime/kuberuntime_manager.go`).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use sha2::{Digest, Sha256};

use super::backoff::Backoff;
use super::state::{
    all_containers, restart_policy, should_restart, spec, Kind, Phase, PodState, Sandbox,
    Termination, Waiting,
};
use crate::time::go_duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Pull (per policy), create and start a new instance of a container.
    Start {
        name: String,
        kind: Kind,
    },
    /// Stop the pod: kill what runs, tear the sandbox down.
    Terminate(Termination),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Containers held back by restart back-off, with what to show.
    pub backoff: Vec<(String, Waiting)>,
    /// Run the planner again by then (a back-off ends, a deadline passes).
    pub wake_at: Option<SystemTime>,
}

impl Plan {
    fn start(&mut self, name: &str, kind: Kind) {
        self.actions.push(Action::Start {
            name: name.to_string(),
            kind,
        });
    }

    fn wake(&mut self, at: SystemTime) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The restart back-off key: pod, container and a hash of the container's
/// spec, so an edited container starts with fresh back-off.
pub fn backoff_key(pod: &Pod, c: &Container) -> String {
    let hash = Sha256::digest(serde_json::to_vec(c).unwrap_or_default());
    format!(
        "{}_{}_{}_{}_{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
        c.name,
        hex::encode(&hash[..8])
    )
}

/// `<name>_<namespace>(<uid>)`, as kubelet names a pod in messages.
pub fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Decides the next actions for `pod`.
pub fn plan(pod: &Pod, st: &PodState, now: SystemTime, backoff: &Backoff) -> Plan {
    let mut p = Plan::default();
    if st.terminated || st.terminating.is_some() {
        return p;
    }
    if let (Some(start), Some(secs)) = (st.start_time, spec(pod).active_deadline_seconds) {
        let deadline = start + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        if now >= deadline {
            p.actions
                .push(Action::Terminate(Termination::DeadlineExceeded));
            return p;
        }
        p.wake(deadline);
    }
    if st.sandbox != Sandbox::Ready {
        let has_run = st.containers.values().any(|c| !c.instances.is_empty());
        if st.sandbox == Sandbox::Gone && restart_policy(pod) == "Never" && has_run {
            // kubelet: no new sandbox for a Never pod whose containers ran.
            p.actions.push(Action::Terminate(Termination::Completed));
        } else {
            p.actions.push(Action::CreateSandbox);
        }
        return p;
    }
    if !st.initialized && !plan_init(pod, st, now, backoff, &mut p) {
        return p;
    }
    if st.initialized {
        // Sidecars keep running whatever the pod's restart policy.
        for (kind, c) in all_containers(pod).filter(|(k, _)| *k == Kind::Sidecar) {
            match st.container(&c.name).and_then(|s| s.latest()) {
                None => p.start(&c.name, kind),
                Some(i) if i.exited() => restart(pod, st, c, kind, now, backoff, &mut p),
                Some(_) => {}
            }
        }
    }
    let mut finished = 0;
    let apps = &spec(pod).containers;
    for c in apps {
        match st.container(&c.name).and_then(|s| s.latest()) {
            None => p.start(&c.name, Kind::App),
            Some(i) if i.exited() => {
                if should_restart(pod, Kind::App, i) {
                    restart(pod, st, c, Kind::App, now, backoff, &mut p);
                } else {
                    finished += 1;
                }
            }
            Some(_) => {}
        }
    }
    if finished == apps.len() {
        // Every app container is done for good: stop the sidecars and the
        // sandbox (kubelet's KillPod when nothing is left to keep).
        p.actions.clear();
        p.backoff.clear();
        p.actions.push(Action::Terminate(Termination::Completed));
    }
    p
}

/// Plans the init containers; true when all of them are done and app
/// containers may start now.
///
/// As kubelet's `computeInitContainerActions` scans them from the last: the
/// furthest init container that has run decides what comes next, and the
/// ones before it have had their turn — a sidecar among them that has
/// exited is restarted (or waits out its back-off) but holds nothing back.
/// So once every regular init container has completed and each sidecar
/// has started once, the app containers start even if a sidecar is down
/// (e2e "a restartable init container starts and exits with exit code 1
/// continuously").
fn plan_init(pod: &Pod, st: &PodState, now: SystemTime, backoff: &Backoff, p: &mut Plan) -> bool {
    let inits: Vec<(Kind, &Container)> = all_containers(pod)
        .filter(|(k, _)| *k != Kind::App)
        .collect();
    let has_run = |c: &Container| st.container(&c.name).is_some_and(|s| s.latest().is_some());
    let reached = inits.iter().rposition(|(_, c)| has_run(c));
    for (at, (kind, c)) in inits.iter().enumerate() {
        let (kind, c) = (*kind, *c);
        // A later init container has run: this one had its turn.
        let passed = reached.is_some_and(|r| at < r);
        let cs = st.container(&c.name);
        let Some(i) = cs.and_then(|s| s.latest()) else {
            p.start(&c.name, kind);
            return false;
        };
        match (kind, i.phase) {
            (_, Phase::Created) if passed => {}
            (_, Phase::Created) => return false,
            (Kind::Sidecar, Phase::Running) => {
                if !passed && !cs.is_some_and(|s| s.started) {
                    return false;
                }
            }
            (Kind::Sidecar, Phase::Exited) => {
                restart(pod, st, c, kind, now, backoff, p);
                if !passed {
                    return false;
                }
            }
            (_, Phase::Running) => return false,
            (_, Phase::Exited) if i.exit_code == 0 => {}
            (_, Phase::Exited) => {
                if should_restart(pod, kind, i) {
                    restart(pod, st, c, kind, now, backoff, p);
                } else {
                    p.actions.push(Action::Terminate(Termination::InitFailed));
                }
                return false;
            }
        }
    }
    true
}

/// Starts `c` again unless its back-off holds it, in which case it waits
/// in `CrashLoopBackOff`.
fn restart(
    pod: &Pod,
    st: &PodState,
    c: &Container,
    kind: Kind,
    now: SystemTime,
    backoff: &Backoff,
    p: &mut Plan,
) {
    let finished = st
        .container(&c.name)
        .and_then(|s| s.latest())
        .and_then(|i| i.finished_at)
        .unwrap_or(now);
    let key = backoff_key(pod, c);
    match backoff.remaining(&key, finished, now) {
        Some(left) => {
            let current = backoff.current(&key).unwrap_or(left);
            p.backoff.push((
                c.name.clone(),
                Waiting::new(
                    "CrashLoopBackOff",
                    format!(
                        "back-off {} restarting failed container={} pod={}",
                        go_duration(current),
                        c.name,
                        pod_full_name(pod)
                    ),
                ),
            ));
            p.wake(now + left);
        }
        None => p.start(&c.name, kind),
    }
}
