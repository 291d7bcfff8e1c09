//! Probes: one timer-driven task per (container instance, probe kind),
//! kubelet's `prober/worker.go`: first run at once (after
//! `initialDelaySeconds` from the container's start), then every
//! `periodSeconds`; the result flips after `successThreshold` successes or
//! `failureThreshold` failures in a row. Startup gates liveness and
//! readiness. Results go to the pod worker, which owns what they cause.

pub mod action;
mod http1;
pub mod netns;
mod tls;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};
use tokio::sync::{mpsc, watch};

use self::action::{Outcome, Target};
use crate::runtime::api::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }
}

/// What a probe task tells the pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub container: String,
    pub instance: String,
    pub kind: Kind,
    /// A failed attempt (for the `Unhealthy` event), or a result flip.
    pub event: UpdateKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    FailedAttempt,
    /// A successful attempt with a warning (`ProbeWarning` event).
    Warning,
    Result(bool),
}

/// A uniformly random part of `period`.
fn jitter(period: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    period.mul_f64((r % 1_000_000) as f64 / 1_000_000.0)
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

/// Runs a probe's handler once.
pub async fn run_once<R: Runtime>(t: &Target<R>, p: &Probe) -> Outcome {
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(e) = &p.exec {
        action::exec(t, e.command.as_deref().unwrap_or_default(), timeout).await
    } else if let Some(s) = &p.tcp_socket {
        action::tcp(t, s.host.as_deref(), &s.port, timeout).await
    } else if let Some(h) = &p.http_get {
        action::http(t, h, timeout).await
    } else if let Some(g) = &p.grpc {
        action::grpc(t, g, timeout).await
    } else {
        Outcome::Failure("probe has no handler".into())
    }
}

/// The probe loop of one container instance and kind.
#[allow(clippy::too_many_arguments)]
pub async fn run<R: Runtime>(
    target: Target<R>,
    probe: Probe,
    kind: Kind,
    container: String,
    started_at: SystemTime,
    mut started: watch::Receiver<bool>,
    mut paused: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Update>,
    adopted: bool,
) {
    if kind != Kind::Startup && started.wait_for(|s| *s).await.is_err() {
        return;
    }
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    // After a daemon restart every adopted container's probes would fire
    // at once: like kubelet's prober (worker.go), wait a random part of a
    // period first.
    if adopted {
        tokio::time::sleep(jitter(period)).await;
    }
    let delay = secs(probe.initial_delay_seconds, 0);
    let need_ok = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
    let need_fail = u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3);
    // A new instance starts as: readiness Failure, liveness Success,
    // startup Unknown.
    let mut result = match kind {
        Kind::Readiness => Some(false),
        Kind::Liveness => Some(true),
        Kind::Startup => None,
    };
    let (mut oks, mut fails) = (0u32, 0u32);
    let mut series = crate::metrics::ProbeSeries::new(kind.label(), &target.owner);
    let send = |event: UpdateKind, message: String| {
        tx.send(Update {
            container: container.clone(),
            instance: target.container_id.clone(),
            kind,
            event,
            message,
        })
        .is_ok()
    };
    loop {
        let since = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        if since < delay {
            tokio::time::sleep(delay - since).await;
        }
        // Suspended while the container is frozen (`nodelet pause`).
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let began = std::time::Instant::now();
        let out = run_once(&target, &probe).await;
        series.record(out.metric_result(), began.elapsed().as_secs_f64());
        if out.ok() {
            oks += 1;
            fails = 0;
            if matches!(out, Outcome::Warning(_))
                && !send(UpdateKind::Warning, out.message().trim_end().to_string())
            {
                return;
            }
        } else {
            fails += 1;
            oks = 0;
            if !send(
                UpdateKind::FailedAttempt,
                out.message().trim_end().to_string(),
            ) {
                return;
            }
        }
        let next = if oks >= need_ok {
            Some(true)
        } else if fails >= need_fail {
            Some(false)
        } else {
            result
        };
        if next != result {
            result = next;
            if !send(
                UpdateKind::Result(next == Some(true)),
                out.message().to_string(),
            ) {
                return;
            }
        }
        match (kind, result) {
            // Started for good; or about to be killed: the next instance
            // gets new probes.
            (Kind::Startup, Some(true)) | (Kind::Startup | Kind::Liveness, Some(false)) => return,
            _ => {}
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs a lifecycle hook handler; `Err` carries kubelet's message.
pub async fn run_hook<R: Runtime>(
    t: &Target<R>,
    h: &LifecycleHandler,
    container: &str,
    pod: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match action::exec(t, &cmd, timeout).await {
            Outcome::Success(_) | Outcome::Warning(_) => Ok(()),
            Outcome::Failure(m) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container {container:?} in Pod {pod:?} failed - error: {}",
                m.trim_end()
            )),
        };
    }
    if let Some(g) = &h.http_get {
        return match action::http(t, g, timeout).await {
            Outcome::Success(_) | Outcome::Warning(_) => Ok(()),
            Outcome::Failure(m) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {m}",
                g.path.clone().unwrap_or_default()
            )),
        };
    }
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0));
        tokio::time::sleep(d.min(timeout)).await;
        return Ok(());
    }
    if h.tcp_socket.is_some() {
        // kubelet refuses tcpSocket handlers when it runs them.
        return Err(format!(
            "tcpSocket lifecycle hook for Container {container:?} in Pod {pod:?} is not supported"
        ));
    }
    Err("lifecycle hook has no handler".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_a_random_part_of_the_period() {
        let period = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..50).map(|_| jitter(period)).collect();
        assert!(draws.iter().all(|d| *d < period));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 40, "{draws:?}");
    }
}
