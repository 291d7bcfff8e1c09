//! Probes: one timer-driven task per (container instance, probe kind),
//! kubelet's `prober/worker.go`: a tick at once and then every
//! `periodSeconds` ([`ticker`]); a tick probes unless fewer than
//! `initialDelaySeconds` whole seconds have passed since the container
//! started, or (liveness, readiness) it has not started yet; the result
//! flips after `successThreshold` successes or `failureThreshold` failures
//! in a row. Results go to the pod worker, which owns what they cause.

pub mod action;
pub mod http1;
pub mod netns;
mod ticker;
mod tls;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};
use tokio::sync::{mpsc, watch};

use self::action::{Outcome, Target};
use self::http1::Made;
use crate::runtime::api::{Repeats, Runtime, RuntimeError};

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

/// A probe's timeout: `timeoutSeconds`, at least one second.
fn timeout(p: &Probe) -> Duration {
    secs(p.timeout_seconds, 1).max(Duration::from_secs(1))
}

/// Runs a probe's handler once.
pub async fn run_once<R: Runtime>(t: &Target<R>, p: &Probe) -> Outcome {
    let timeout = timeout(p);
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

/// A probe's result as its attempts come: kubelet's thresholds, its
/// metrics, and what the pod worker is told.
struct Tracker<'a> {
    kind: Kind,
    container: &'a str,
    instance: &'a str,
    tx: &'a mpsc::UnboundedSender<Update>,
    need_ok: u32,
    need_fail: u32,
    result: Option<bool>,
    oks: u32,
    fails: u32,
    series: crate::metrics::ProbeSeries,
}

impl Tracker<'_> {
    fn send(&self, event: UpdateKind, message: String) -> bool {
        self.tx
            .send(Update {
                container: self.container.to_string(),
                instance: self.instance.to_string(),
                kind: self.kind,
                event,
                message,
            })
            .is_ok()
    }

    /// One attempt's outcome. False when the probe is done: its result
    /// settled for good, or no one listens.
    fn attempt(&mut self, out: &Outcome, took: Duration) -> bool {
        self.series.record(out.metric_result(), took.as_secs_f64());
        if out.ok() {
            self.oks += 1;
            self.fails = 0;
            if matches!(out, Outcome::Warning(_))
                && !self.send(UpdateKind::Warning, out.message().trim_end().to_string())
            {
                return false;
            }
        } else {
            self.fails += 1;
            self.oks = 0;
            if !self.send(
                UpdateKind::FailedAttempt,
                out.message().trim_end().to_string(),
            ) {
                return false;
            }
        }
        let next = if self.oks >= self.need_ok {
            Some(true)
        } else if self.fails >= self.need_fail {
            Some(false)
        } else {
            self.result
        };
        if next != self.result {
            self.result = next;
            if !self.send(
                UpdateKind::Result(next == Some(true)),
                out.message().to_string(),
            ) {
                return false;
            }
        }
        // Started for good; or about to be killed: the next instance gets
        // new probes.
        !matches!(
            (self.kind, self.result),
            (Kind::Startup, Some(true)) | (Kind::Startup | Kind::Liveness, Some(false))
        )
    }

    /// An attempt the runtime could not make.
    fn failed(&mut self, e: &crate::runtime::api::RuntimeError) -> bool {
        self.attempt(&Outcome::Failure(crate::error_chain(e)), Duration::ZERO)
    }
}

/// Applies the runs of a repeated exec or HTTP probe as they come (`judge`
/// says what each run's result means; an HTTP attempt the runtime could
/// not finish is finished here within what is left of `timeout`), until
/// the result settles (false: the probe is done), the container is paused
/// or the runs break off (true: subscribe again at the next tick).
async fn follow<T, Rs: Repeats<T>, R: Runtime>(
    runs: &mut Rs,
    t: &mut Tracker<'_>,
    paused: &mut watch::Receiver<bool>,
    (target, timeout): (&Target<R>, Duration),
    judge: impl Fn(Result<T, RuntimeError>) -> Made,
) -> bool {
    loop {
        let batch = tokio::select! {
            got = runs.next() => match got {
                Ok(batch) => batch,
                Err(e) => return t.failed(&e),
            },
            now_paused = paused.wait_for(|p| *p) => return now_paused.is_ok(),
        };
        for run in batch {
            let (out, took) = match judge(run.result) {
                Made::Done(out) => (out, run.took),
                Made::Unfinished(get) => {
                    let began = std::time::Instant::now();
                    let left = timeout.saturating_sub(run.took);
                    let out = action::http_get(target.netns.as_deref(), get, left).await;
                    (out, run.took + began.elapsed())
                }
            };
            if !t.attempt(&out, took) {
                return false;
            }
        }
    }
}

/// A probe the runtime can make on its grid: an exec, a plain-HTTP GET or
/// a connection from the pod's network namespace.
enum Repeatable<'a> {
    Exec(&'a [String]),
    Http(http1::Get),
    Dial(std::net::SocketAddr),
}

fn repeatable<'a, R: Runtime>(target: &Target<R>, probe: &'a Probe) -> Option<Repeatable<'a>> {
    if let Some(e) = &probe.exec {
        return Some(Repeatable::Exec(e.command.as_deref().unwrap_or_default()));
    }
    if let Some(h) = &probe.http_get {
        let get = action::http_attempt(target, h).ok()?;
        return (!get.https).then_some(Repeatable::Http(get));
    }
    let s = probe.tcp_socket.as_ref()?;
    let addr = action::tcp_addr(target, s.host.as_deref(), &s.port).ok()?;
    Some(Repeatable::Dial(addr))
}

/// When the runtime makes a repeated probe.
struct Every {
    first: tokio::time::Instant,
    period: Duration,
    timeout: Duration,
    /// Successes in a row reported at once (`successThreshold`).
    quiet_after: u32,
}

/// Has the runtime make `what` on the grid of `every` and follows its
/// runs (see [`follow`]): `Some(go on)` once followed, `None` if the
/// runtime cannot.
async fn repeat<R: Runtime>(
    what: &Repeatable<'_>,
    every: &Every,
    target: &Target<R>,
    t: &mut Tracker<'_>,
    paused: &mut watch::Receiver<bool>,
) -> Result<Option<bool>, RuntimeError> {
    let (rt, sandbox, id) = (&target.runtime, &target.sandbox, &target.container_id);
    let Every {
        first,
        period,
        timeout,
        quiet_after: q,
    } = *every;
    let to = (target, timeout);
    // A network run's outcome, or why the runtime could not make it.
    let made = |r: Result<Made, RuntimeError>| {
        r.unwrap_or_else(|e| Made::Done(Outcome::Failure(crate::error_chain(&e))))
    };
    let network = match what {
        Repeatable::Exec(cmd) => {
            let max = action::MAX_EXEC_OUTPUT;
            let runs = rt.exec_every(sandbox, id, cmd, timeout, max, first, period, q);
            return Ok(match runs.await? {
                Some(mut runs) => {
                    let judge = |r| Made::Done(action::exec_outcome(cmd, timeout, r));
                    Some(follow(&mut runs, t, paused, to, judge).await)
                }
                None => None,
            });
        }
        Repeatable::Http(get) => {
            rt.http_every(sandbox, id, get, timeout, first, period, q)
                .await?
        }
        Repeatable::Dial(addr) => {
            rt.dial_every(sandbox, id, *addr, timeout, first, period, q)
                .await?
        }
    };
    Ok(match network {
        Some(mut runs) => Some(follow(&mut runs, t, paused, to, made).await),
        None => None,
    })
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
    let period = secs(probe.period_seconds, 10).max(Duration::from_secs(1));
    // After a daemon restart every adopted container's probes would fire
    // at once: like kubelet's prober (worker.go), start a random part of
    // a period later.
    let now = tokio::time::Instant::now();
    let start = if adopted { now + jitter(period) } else { now };
    let mut ticks = ticker::Ticker::new(start, period);
    // The container's start on the runtime's clock (which tests may stop).
    let since_start = SystemTime::now()
        .duration_since(started_at)
        .unwrap_or_default();
    let started_at = now.checked_sub(since_start).unwrap_or(now);
    let delay = secs(probe.initial_delay_seconds, 0);
    let need_ok = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
    let mut t = Tracker {
        kind,
        container: &container,
        instance: &target.container_id,
        tx: &tx,
        need_ok,
        need_fail: u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
        // A new instance starts as: readiness Failure, liveness Success,
        // startup Unknown.
        result: match kind {
            Kind::Readiness => Some(false),
            Kind::Liveness => Some(true),
            Kind::Startup => None,
        },
        oks: 0,
        fails: 0,
        series: crate::metrics::ProbeSeries::new(kind.label(), &target.owner),
    };
    // Made by the runtime on this grid while it can.
    let mut repeated = repeatable(&target, &probe);
    loop {
        let tick = ticks.tick().await;
        // kubelet compares whole seconds (`int32(time.Since(...).Seconds())`).
        if started_at.elapsed().as_secs() < delay.as_secs() {
            continue;
        }
        // Liveness and readiness wait for the container to have started
        // (startup probe passed, postStart done); suspended while the
        // container is frozen (`nodelet pause`). Either way the probe
        // runs at the next tick after.
        let before_start = kind != Kind::Startup && !*started.borrow();
        if before_start || *paused.borrow() {
            if started
                .wait_for(|s| *s || kind == Kind::Startup)
                .await
                .is_err()
                || paused.wait_for(|p| !*p).await.is_err()
            {
                return;
            }
            ticks.skip_missed();
            // A container that has just started is probed for readiness
            // at once, off the grid, which goes on unchanged: kubelet's
            // prober manager triggers the readiness worker by hand when a
            // started container has no readiness result yet
            // (`prober_manager.go UpdatePodStatus`, `manualTriggerCh`).
            let delay_over = started_at.elapsed().as_secs() >= delay.as_secs();
            if kind == Kind::Readiness && before_start && delay_over && !*paused.borrow() {
                let began = std::time::Instant::now();
                let out = run_once(&target, &probe).await;
                if !t.attempt(&out, began.elapsed()) {
                    return;
                }
                ticks.skip_missed();
            }
            continue;
        }
        if let Some(what) = &repeated {
            let every = Every {
                first: tick,
                period,
                timeout: timeout(&probe),
                quiet_after: need_ok,
            };
            match repeat(what, &every, &target, &mut t, &mut paused).await {
                Ok(Some(true)) => {
                    ticks.skip_missed();
                    continue;
                }
                Ok(Some(false)) => return,
                // This runtime cannot: one attempt per tick.
                Ok(None) => repeated = None,
                Err(e) => {
                    if !t.failed(&e) {
                        return;
                    }
                    continue;
                }
            }
        }
        let began = std::time::Instant::now();
        let out = run_once(&target, &probe).await;
        if !t.attempt(&out, began.elapsed()) {
            return;
        }
    }
}

/// A lifecycle hook that ran to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum HookRan {
    Done,
    /// An HTTPS hook answered only over HTTP: kubelet's Warning event
    /// `LifecycleHTTPFallback` is due, naming this `host:port`.
    FellBackToHttp(String),
}

impl HookRan {
    /// kubelet's `LifecycleHTTPFallback` message, if one is due
    /// (`k8s:pkg/kubelet/lifecycle/handlers.go`).
    pub fn fallback_message(&self) -> Option<String> {
        match self {
            HookRan::Done => None,
            HookRan::FellBackToHttp(host) => Some(format!(
                "request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"
            )),
        }
    }
}

/// Runs a lifecycle hook handler; `Err` carries kubelet's message.
pub async fn run_hook<R: Runtime>(
    t: &Target<R>,
    h: &LifecycleHandler,
    container: &str,
    pod: &str,
    timeout: Duration,
) -> Result<HookRan, String> {
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match action::exec(t, &cmd, timeout).await {
            Outcome::Success(_) | Outcome::Warning(_) => Ok(HookRan::Done),
            Outcome::Failure(m) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container {container:?} in Pod {pod:?} failed - error: {}",
                m.trim_end()
            )),
        };
    }
    if let Some(g) = &h.http_get {
        return match action::http_hook(t, g, timeout).await {
            action::HookHttp::Answered => Ok(HookRan::Done),
            action::HookHttp::FellBack { authority } => {
                crate::metrics::record_lifecycle_http_fallback();
                Ok(HookRan::FellBackToHttp(authority))
            }
            action::HookHttp::Failed(m) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {container:?} in Pod {pod:?} failed - error: {m}",
                g.path.clone().unwrap_or_default()
            )),
        };
    }
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(u64::try_from(s.seconds.max(0)).unwrap_or(0));
        tokio::time::sleep(d.min(timeout)).await;
        return Ok(HookRan::Done);
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
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    const S: Duration = Duration::from_secs(1);

    /// A running container `c` on `rt` whose execs exit with 1.
    async fn failing_container_on(rt: FakeRuntime) -> Target<FakeRuntime> {
        rt.run_container("s", "c").await.unwrap();
        rt.exec_exit.lock().unwrap().insert("*".into(), 1);
        target_on(rt)
    }

    /// Container `c` of sandbox `s` on `rt`.
    fn target_on(rt: FakeRuntime) -> Target<FakeRuntime> {
        Target {
            runtime: Arc::new(rt),
            sandbox: "s".into(),
            container_id: "c".into(),
            netns: None,
            pod_ip: String::new(),
            ports: Vec::new(),
            owner: crate::metrics::ProbeOwner::default(),
        }
    }

    struct Run {
        updates: mpsc::UnboundedReceiver<Update>,
        started: watch::Sender<bool>,
        paused: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        t0: Instant,
    }

    /// Starts `kind`'s probe loop of `probe` (an exec that always fails,
    /// never reaching its failure threshold) on a container that started
    /// now.
    async fn start(kind: Kind, probe: serde_json::Value, started: bool) -> Run {
        start_on(FakeRuntime::default(), kind, probe, started).await
    }

    async fn start_on(rt: FakeRuntime, kind: Kind, probe: serde_json::Value, started: bool) -> Run {
        let mut probe = probe;
        probe["exec"] = serde_json::json!({"command": ["false"]});
        probe["failureThreshold"] = 1000.into();
        spawn_probe(failing_container_on(rt).await, kind, probe, started)
    }

    /// Starts `kind`'s probe loop of `probe` on `target`, a container that
    /// started now.
    fn spawn_probe(
        target: Target<FakeRuntime>,
        kind: Kind,
        probe: serde_json::Value,
        started: bool,
    ) -> Run {
        let probe: Probe = serde_json::from_value(probe).unwrap();
        let (tx, updates) = mpsc::unbounded_channel();
        let (started_tx, started_rx) = watch::channel(started);
        let (paused_tx, paused_rx) = watch::channel(false);
        let t0 = Instant::now();
        let task = tokio::spawn(run(
            target,
            probe,
            kind,
            "app".into(),
            SystemTime::now(),
            started_rx,
            paused_rx,
            tx,
            false,
        ));
        Run {
            updates,
            started: started_tx,
            paused: paused_tx,
            task,
            t0,
        }
    }

    impl Run {
        /// When the next attempt was made, from the start.
        async fn next_attempt(&mut self) -> Duration {
            let u = self.updates.recv().await.unwrap();
            assert_eq!(u.event, UpdateKind::FailedAttempt, "{u:?}");
            Instant::now() - self.t0
        }
    }

    /// `at` is `want` on the probe grid: at most one step later (and the
    /// timer wheel's millisecond).
    #[track_caller]
    fn assert_at(at: Duration, want: Duration) {
        assert!(
            at >= want && at < want + ticker::STEP + Duration::from_millis(1),
            "attempt at {at:?}, want {want:?}"
        );
    }

    /// Ticks at 0, 2, 4, 6…; kubelet skips those under 3 whole seconds
    /// from the container's start. The same whether the runtime repeats
    /// the exec on the grid or nodelet execs at each tick.
    #[tokio::test(start_paused = true)]
    async fn probes_tick_every_period_once_the_initial_delay_has_passed() {
        for repeats in [true, false] {
            let rt = FakeRuntime::default();
            rt.no_repeat
                .store(!repeats, std::sync::atomic::Ordering::Relaxed);
            let mut r = start_on(
                rt.clone(),
                Kind::Readiness,
                serde_json::json!({"periodSeconds": 2, "initialDelaySeconds": 3}),
                true,
            )
            .await;
            for want in [4, 6, 8] {
                assert_at(r.next_attempt().await, want * S);
            }
            r.task.abort();
            let calls = rt.calls.lock().unwrap().clone();
            let every = calls
                .iter()
                .filter(|c| c.starts_with("exec every "))
                .count();
            let single = calls.iter().filter(|c| c.starts_with("exec c ")).count();
            // Repeated: one subscription, one exec per run; else one exec
            // per tick and no subscription.
            assert_eq!((every, single), (usize::from(repeats), 3), "{calls:#?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_waits_for_the_start_and_pauses_on_its_grid() {
        let mut r = start(
            Kind::Liveness,
            serde_json::json!({"periodSeconds": 1}),
            false,
        )
        .await;
        tokio::time::sleep(S * 5 / 2).await;
        assert!(r.updates.try_recv().is_err(), "no probe before the start");
        r.started.send(true).unwrap();
        // The next tick, not at once.
        assert_at(r.next_attempt().await, 3 * S);
        assert_at(r.next_attempt().await, 4 * S);
        r.paused.send(true).unwrap();
        tokio::time::sleep(S * 5 / 2).await;
        assert!(r.updates.try_recv().is_err(), "no probe while paused");
        r.paused.send(false).unwrap();
        assert_at(r.next_attempt().await, 7 * S);
        r.task.abort();
    }

    /// e2e container_probe.go "should be ready immediately after
    /// startupProbe succeeds": readiness runs the moment the container
    /// has started, then keeps its grid.
    #[tokio::test(start_paused = true)]
    async fn readiness_runs_at_once_when_the_container_has_started() {
        let mut r = start(
            Kind::Readiness,
            serde_json::json!({"periodSeconds": 30}),
            false,
        )
        .await;
        tokio::time::sleep(S * 5 / 2).await;
        assert!(r.updates.try_recv().is_err(), "no probe before the start");
        r.started.send(true).unwrap();
        assert_at(r.next_attempt().await, S * 5 / 2);
        assert_at(r.next_attempt().await, 30 * S);
        r.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn startup_probes_do_not_wait_for_the_start() {
        let mut r = start(
            Kind::Startup,
            serde_json::json!({"periodSeconds": 1}),
            false,
        )
        .await;
        assert_at(r.next_attempt().await, Duration::ZERO);
        assert_at(r.next_attempt().await, S);
        r.task.abort();
    }

    /// Starts a readiness probe `probe` on a fake runtime that repeats
    /// network probes or not, and returns the first update with the count
    /// of subscriptions logged as `kind every` (`http`, `dial`).
    async fn first_update(probe: serde_json::Value, repeats: bool, kind: &str) -> (Update, usize) {
        let rt = FakeRuntime::default();
        rt.no_repeat
            .store(!repeats, std::sync::atomic::Ordering::Relaxed);
        let mut r = spawn_probe(target_on(rt.clone()), Kind::Readiness, probe, true);
        let u = r.updates.recv().await.unwrap();
        r.task.abort();
        (u, subscriptions(&rt, kind))
    }

    /// Subscriptions `rt` took for `kind` (`http`, `dial`) probes.
    fn subscriptions(rt: &FakeRuntime, kind: &str) -> usize {
        let prefix = format!("{kind} every ");
        let calls = rt.calls.lock().unwrap();
        calls.iter().filter(|c| c.starts_with(&prefix)).count()
    }

    /// A plain HTTP server on loopback: its `n`th connection (from 0) gets
    /// `answer(n)`. Its port and the count of connections.
    async fn http_server(
        answer: impl Fn(usize) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c.write_all(answer(n).as_bytes()).await;
            }
        });
        (port, served)
    }

    /// A plain-HTTP probe subscribes once when the runtime makes its
    /// attempts, else attempts on each tick; either way the same answers
    /// drive the result (here: readiness flips on the first 200, then off
    /// after three 500s).
    #[tokio::test]
    async fn http_probes_are_repeated_by_the_runtime_or_made_on_each_tick() {
        let (port, served) = http_server(|n| {
            let status = if n == 0 { "200 OK" } else { "500 Oops" };
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")
        })
        .await;
        for repeats in [true, false] {
            served.store(0, std::sync::atomic::Ordering::SeqCst);
            let rt = FakeRuntime::default();
            rt.no_repeat
                .store(!repeats, std::sync::atomic::Ordering::Relaxed);
            let probe = serde_json::json!({
                "httpGet": {"port": port, "path": "/ready"},
                "periodSeconds": 1,
            });
            let mut r = spawn_probe(target_on(rt.clone()), Kind::Readiness, probe, true);
            let mut events = Vec::new();
            while events.last() != Some(&UpdateKind::Result(false)) {
                events.push(r.updates.recv().await.unwrap().event);
            }
            r.task.abort();
            use UpdateKind::{FailedAttempt, Result};
            assert_eq!(
                events,
                [
                    Result(true),
                    FailedAttempt,
                    FailedAttempt,
                    FailedAttempt,
                    Result(false)
                ]
            );
            let every = subscriptions(&rt, "http");
            assert_eq!(every, usize::from(repeats), "repeats: {repeats}");
        }
    }

    /// Redirected to HTTPS on the same host (kubelet follows another
    /// scheme or port of the same host name): a runtime that makes plain
    /// HTTP only hands the attempt back, and the probe task finishes it.
    #[tokio::test]
    async fn an_http_probe_redirected_to_https_is_finished_by_the_daemon() {
        let tls = action::tls_server().await;
        let (port, _) = http_server(move |_| {
            format!(
                "HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:{tls}/\r\nContent-Length: 0\r\n\r\n"
            )
        })
        .await;
        for repeats in [true, false] {
            let probe = serde_json::json!({"httpGet": {"port": port}, "periodSeconds": 1});
            let (u, every) = first_update(probe, repeats, "http").await;
            assert_eq!(
                (u.event, u.message.as_str()),
                (UpdateKind::Result(true), "secure")
            );
            assert_eq!(every, usize::from(repeats), "repeats: {repeats}");
        }
    }

    /// A tcpSocket probe is made by the runtime when it can, else on each
    /// tick; either way a listener makes it pass.
    #[tokio::test]
    async fn tcp_probes_are_repeated_by_the_runtime_or_made_on_each_tick() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        for repeats in [true, false] {
            let probe = serde_json::json!({"tcpSocket": {"port": port}, "periodSeconds": 1});
            let (u, every) = first_update(probe, repeats, "dial").await;
            assert_eq!(u.event, UpdateKind::Result(true));
            assert_eq!(every, usize::from(repeats), "repeats: {repeats}");
        }
    }

    #[test]
    fn jitter_is_a_random_part_of_the_period() {
        let period = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..50).map(|_| jitter(period)).collect();
        assert!(draws.iter().all(|d| *d < period));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 40, "{draws:?}");
    }
}
