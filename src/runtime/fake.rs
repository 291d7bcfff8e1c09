//! An in-memory [`Runtime`] for unit tests of the layers above: containers
//! change state only when the test says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::api::{
    ContainerState, CreateContainer, ExecResult, ExitRecord, Ran, Repeats, Runtime, RuntimeError,
    SandboxConfig, SandboxInfo, Stats, Status,
};
use super::record::RECORD_VERSION;

/// Cheap to clone: clones share one state (a repeated exec keeps one).
#[derive(Default, Clone)]
pub struct FakeRuntime(Arc<FakeState>);

impl std::ops::Deref for FakeRuntime {
    type Target = FakeState;
    fn deref(&self) -> &FakeState {
        &self.0
    }
}

#[derive(Default)]
pub struct FakeState {
    state: Mutex<HashMap<String, HashMap<String, ContainerState>>>,
    /// Container ids whose start fails with this message (`*`: every one).
    pub fail_start: Mutex<HashMap<String, String>>,
    /// Exit code an exec of a container returns (0 when unset; `*`: every one).
    pub exec_exit: Mutex<HashMap<String, i32>>,
    /// `exec_every` and `http_every` answer `None` (as a shim that
    /// predates them does).
    pub no_repeat: std::sync::atomic::AtomicBool,
    /// Every call, for assertions: `"start app"`, `"signal app 15"`…
    pub calls: Mutex<Vec<String>>,
}

impl FakeRuntime {
    /// A repeated network attempt's runs (none with `no_repeat`), the
    /// subscription logged as `log`.
    fn network_runs(
        &self,
        log: String,
        attempt: FakeAttempt,
        timeout: std::time::Duration,
        first: tokio::time::Instant,
        period: std::time::Duration,
    ) -> Option<FakeRuns<FakeNetwork>> {
        if self.no_repeat.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.log(log);
        Some(FakeRuns::new(
            FakeNetwork { attempt, timeout },
            first,
            period,
        ))
    }

    fn log(&self, s: String) {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(s);
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, HashMap<String, ContainerState>>) -> T,
    ) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn set_paused(&self, sandbox: &str, id: &str, paused: bool) -> Result<(), RuntimeError> {
        self.with(|s| {
            let c = s
                .get_mut(sandbox)
                .and_then(|p| p.get_mut(id))
                .ok_or_else(|| missing(sandbox, id))?;
            if c.status != Status::Running {
                return Err(RuntimeError::Container {
                    sandbox: sandbox.into(),
                    id: id.into(),
                    message: "not running".into(),
                });
            }
            c.paused = paused;
            Ok(())
        })
    }

    /// A running container `id` in sandbox `sandbox` (made if need be),
    /// through the same calls a pod worker makes.
    pub async fn run_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        if self.sandbox_info(sandbox).await.is_none() {
            self.create_sandbox(&SandboxConfig {
                id: sandbox.into(),
                hostname: sandbox.into(),
                cgroups: Vec::new(),
            })
            .await?;
        }
        self.create_container(&CreateContainer {
            sandbox: sandbox.into(),
            id: id.into(),
            bundle: "/b".into(),
            log_dir: "/l".into(),
            restart_count: 0,
            termination_message_file: None,
            fallback_to_logs: false,
        })
        .await?;
        self.start_container(sandbox, id).await.map(|_| ())
    }

    /// Makes a running container exit with `code`.
    pub fn exit(&self, sandbox: &str, id: &str, code: i32) {
        self.with(|s| {
            if let Some(c) = s.get_mut(sandbox).and_then(|p| p.get_mut(id)) {
                c.status = Status::Exited;
                c.exit = Some(record(code));
            }
        });
    }
}

fn record(code: i32) -> ExitRecord {
    ExitRecord {
        version: RECORD_VERSION.into(),
        exit_code: code,
        signal: (code > 128).then_some(code - 128),
        started_at: String::new(),
        finished_at: String::new(),
        oom_killed: false,
        message: String::new(),
    }
}

fn missing(sandbox: &str, id: &str) -> RuntimeError {
    RuntimeError::Container {
        sandbox: sandbox.into(),
        id: id.into(),
        message: "not found".into(),
    }
}

/// A repeated exec or HTTP attempt on the fake: one run at each tick of
/// its grid.
pub struct FakeRuns<W> {
    what: W,
    next: tokio::time::Instant,
    period: std::time::Duration,
}

/// A repeated exec's command.
pub struct FakeExec {
    rt: FakeRuntime,
    sandbox: String,
    id: String,
    args: Vec<String>,
}

/// A repeated network attempt, made for real from this process as a
/// shim makes it (an HTTP one redirected to HTTPS is handed back
/// unfinished).
pub struct FakeNetwork {
    attempt: FakeAttempt,
    timeout: std::time::Duration,
}

enum FakeAttempt {
    Http(crate::probe::http1::Get),
    Dial(std::net::SocketAddr),
}

impl<W: Send> FakeRuns<W> {
    fn new(what: W, first: tokio::time::Instant, period: std::time::Duration) -> Self {
        FakeRuns {
            what,
            next: first,
            period: period.max(std::time::Duration::from_millis(1)),
        }
    }

    /// Waits for the next tick; the tick.
    async fn tick(&mut self) -> tokio::time::Instant {
        tokio::time::sleep_until(self.next).await;
        let now = tokio::time::Instant::now();
        self.next += crate::time::grid_step_past(now - self.next, self.period);
        now
    }
}

impl Repeats<ExecResult> for FakeRuns<FakeExec> {
    async fn next(&mut self) -> Result<Vec<Ran<ExecResult>>, RuntimeError> {
        let now = self.tick().await;
        let e = &self.what;
        let timeout = std::time::Duration::from_secs(1);
        let result = e.rt.exec(&e.sandbox, &e.id, &e.args, timeout, 0).await;
        Ok(vec![Ran {
            result,
            took: now.elapsed(),
        }])
    }
}

impl Repeats<crate::probe::http1::Made> for FakeRuns<FakeNetwork> {
    async fn next(&mut self) -> Result<Vec<Ran<crate::probe::http1::Made>>, RuntimeError> {
        let now = self.tick().await;
        let h = &self.what;
        use crate::probe::{action, http1::Made};
        let made = match &h.attempt {
            // As a shim makes it: plain HTTP only.
            FakeAttempt::Http(get) => action::http_make(None, get.clone(), h.timeout, true).await,
            FakeAttempt::Dial(addr) => Made::Done(action::dial(None, *addr, h.timeout).await),
        };
        Ok(vec![Ran {
            result: Ok(made),
            took: now.elapsed(),
        }])
    }
}

impl Runtime for FakeRuntime {
    type ExecRuns = FakeRuns<FakeExec>;
    type HttpRuns = FakeRuns<FakeNetwork>;

    async fn http_every(
        &self,
        _sandbox: &str,
        _id: &str,
        get: &crate::probe::http1::Get,
        timeout: std::time::Duration,
        first: tokio::time::Instant,
        period: std::time::Duration,
        _quiet_after: u32,
    ) -> Result<Option<Self::HttpRuns>, RuntimeError> {
        let log = format!("http every {}", get.url());
        let attempt = FakeAttempt::Http(get.clone());
        Ok(self.network_runs(log, attempt, timeout, first, period))
    }

    async fn dial_every(
        &self,
        _sandbox: &str,
        _id: &str,
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
        first: tokio::time::Instant,
        period: std::time::Duration,
        _quiet_after: u32,
    ) -> Result<Option<Self::HttpRuns>, RuntimeError> {
        let log = format!("dial every {addr}");
        Ok(self.network_runs(log, FakeAttempt::Dial(addr), timeout, first, period))
    }

    async fn exec_every(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        _timeout: std::time::Duration,
        _max_output: usize,
        first: tokio::time::Instant,
        period: std::time::Duration,
        _quiet_after: u32,
    ) -> Result<Option<Self::ExecRuns>, RuntimeError> {
        if self.no_repeat.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        self.log(format!("exec every {id} {}", args.join(" ")));
        let what = FakeExec {
            rt: self.clone(),
            sandbox: sandbox.into(),
            id: id.into(),
            args: args.to_vec(),
        };
        Ok(Some(FakeRuns::new(what, first, period)))
    }

    async fn create_sandbox(&self, cfg: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        self.log(format!("create_sandbox {}", cfg.id));
        self.with(|s| {
            s.entry(cfg.id.clone()).or_default();
        });
        Ok(SandboxInfo {
            etc_dir: std::path::PathBuf::from("/fake").join(&cfg.id),
            netns: None,
            cgroup: None,
        })
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("remove_sandbox {id}"));
        self.with(|s| s.remove(id));
        Ok(())
    }

    async fn sandbox_info(&self, id: &str) -> Option<SandboxInfo> {
        self.with(|s| s.contains_key(id)).then(|| SandboxInfo {
            etc_dir: std::path::PathBuf::from("/fake").join(id),
            netns: None,
            cgroup: None,
        })
    }

    async fn list_sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self.with(|s| s.keys().cloned().collect()))
    }

    async fn create_container(
        &self,
        req: &CreateContainer,
    ) -> Result<ContainerState, RuntimeError> {
        self.log(format!("create {}", req.id));
        self.with(|s| {
            let pod = s
                .get_mut(&req.sandbox)
                .ok_or_else(|| RuntimeError::SandboxNotFound(req.sandbox.clone()))?;
            let st = ContainerState {
                id: req.id.clone(),
                status: Status::Created,
                pid: 0,
                started_at: None,
                exit: None,
                paused: false,
            };
            pod.insert(req.id.clone(), st.clone());
            Ok(st)
        })
    }

    async fn start_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<ContainerState, RuntimeError> {
        self.log(format!("start {id}"));
        let fail = self
            .fail_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(k, _)| *k == id || *k == "*")
            .map(|(_, v)| v.clone());
        self.with(|s| {
            let c = s
                .get_mut(sandbox)
                .and_then(|p| p.get_mut(id))
                .ok_or_else(|| missing(sandbox, id))?;
            if let Some(message) = fail {
                c.status = Status::Exited;
                c.exit = Some(record(128));
                return Err(RuntimeError::Start {
                    id: id.into(),
                    message,
                });
            }
            c.status = Status::Running;
            Ok(c.clone())
        })
    }

    async fn signal_container(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
    ) -> Result<(), RuntimeError> {
        self.log(format!("signal {id} {signal}"));
        if signal == 9 {
            self.exit(sandbox, id, 137);
        }
        Ok(())
    }

    async fn container_state(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<ContainerState, RuntimeError> {
        self.with(|s| {
            s.get(sandbox)
                .and_then(|p| p.get(id))
                .cloned()
                .ok_or_else(|| missing(sandbox, id))
        })
    }

    async fn pause_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("pause {id}"));
        self.set_paused(sandbox, id, true)
    }

    async fn resume_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("resume {id}"));
        self.set_paused(sandbox, id, false)
    }

    async fn container_stats(&self, sandbox: &str, id: &str) -> Option<Stats> {
        self.with(|s| {
            s.get(sandbox)
                .and_then(|p| p.get(id))
                .map(|_| Stats::default())
        })
    }

    async fn sandbox_stats(&self, sandbox: &str) -> Option<Stats> {
        self.with(|s| s.contains_key(sandbox).then(Stats::default))
    }

    async fn exec(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        _timeout: std::time::Duration,
        _max: usize,
    ) -> Result<ExecResult, RuntimeError> {
        self.log(format!("exec {id} {}", args.join(" ")));
        let st = self.container_state(sandbox, id).await?;
        if st.status != Status::Running {
            return Err(RuntimeError::Container {
                sandbox: sandbox.into(),
                id: id.into(),
                message: "not running".into(),
            });
        }
        let code = self
            .exec_exit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(k, _)| *k == id || *k == "*")
            .map_or(0, |(_, v)| *v);
        Ok(ExecResult {
            exit_code: code,
            stdout: String::new(),
            stderr: String::new(),
            timed_out: false,
            truncated: false,
        })
    }

    async fn list_containers(&self, sandbox: &str) -> Result<Vec<ContainerState>, RuntimeError> {
        self.with(|s| {
            let mut all: Vec<ContainerState> = s
                .get(sandbox)
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(all)
        })
    }

    async fn remove_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        self.log(format!("remove {id}"));
        self.with(|s| {
            if let Some(p) = s.get_mut(sandbox) {
                p.remove(id);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn containers_move_only_when_told() {
        let rt = FakeRuntime::default();
        rt.create_sandbox(&SandboxConfig {
            id: "p".into(),
            hostname: "p".into(),
            cgroups: Vec::new(),
        })
        .await
        .unwrap();
        let req = CreateContainer {
            sandbox: "p".into(),
            id: "app".into(),
            bundle: "/b".into(),
            log_dir: "/l".into(),
            restart_count: 0,
            termination_message_file: None,
            fallback_to_logs: false,
        };
        assert_eq!(
            rt.create_container(&req).await.unwrap().status,
            Status::Created
        );
        assert_eq!(
            rt.start_container("p", "app").await.unwrap().status,
            Status::Running
        );
        rt.exit("p", "app", 3);
        let st = rt.container_state("p", "app").await.unwrap();
        assert_eq!(
            (st.status, st.exit.map(|e| e.exit_code)),
            (Status::Exited, Some(3))
        );
        rt.fail_start.lock().unwrap().insert(
            "bad".into(),
            "exec: \"x\": executable file not found in $PATH".into(),
        );
        rt.create_container(&CreateContainer {
            id: "bad".into(),
            ..req
        })
        .await
        .unwrap();
        assert!(matches!(
            rt.start_container("p", "bad").await,
            Err(RuntimeError::Start { .. })
        ));
        assert_eq!(
            *rt.calls.lock().unwrap(),
            [
                "create_sandbox p",
                "create app",
                "start app",
                "create bad",
                "start bad"
            ]
        );
    }

    #[tokio::test]
    async fn sigkill_exits_137() {
        let rt = FakeRuntime::default();
        rt.run_container("p", "a").await.unwrap();
        rt.signal_container("p", "a", 9).await.unwrap();
        assert_eq!(
            rt.container_state("p", "a")
                .await
                .unwrap()
                .exit
                .unwrap()
                .exit_code,
            137
        );
    }
}
