//! The native backend of [`Runtime`]: one shim per sandbox under
//! `<run_dir>/<sandbox id>/`, spoken to over its socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{
    ContainerState, Every, Op, Request, Response, PID_FILE, PROTOCOL_VERSION, SOCKET_NAME,
};
use super::shim;
use crate::runtime::api::{
    CreateContainer, Runtime, RuntimeError, SandboxConfig, SandboxInfo, Stats,
};
use crate::runtime::cgroup::{CgroupError, Cgroups};

/// The file in a sandbox's state dir naming its cgroup.
const CGROUP_FILE: &str = "cgroup";
/// The file in a sandbox's state dir naming the nodelet instance that
/// made it (see [`NativeRuntime::with_owner`]).
const OWNER_FILE: &str = "owner";

/// Idle connections kept per shim: enough for the requests a pod makes
/// at once (its probes, a status read), few enough to cost nothing.
const IDLE_PER_SHIM: usize = 2;

pub struct NativeRuntime {
    run_dir: PathBuf,
    nodelet: PathBuf,
    log_max_size: u64,
    log_max_files: u32,
    cgroups: Option<Arc<dyn Cgroups>>,
    /// This instance: only sandboxes it made are listed and removed.
    owner: String,
    /// Idle connections by sandbox. A shim answers any number of
    /// requests on one connection, one at a time, and closes it only when
    /// it exits; a connection goes back here only after its whole answer
    /// was read, so the next request never reads a stale answer.
    idle: Mutex<HashMap<String, Vec<UnixStream>>>,
}

impl NativeRuntime {
    /// `nodelet` is the binary the shims are started from (the daemon's own).
    pub fn new(run_dir: &Path, nodelet: &Path, log_max_size: u64, log_max_files: u32) -> Self {
        NativeRuntime {
            run_dir: run_dir.to_path_buf(),
            nodelet: nodelet.to_path_buf(),
            log_max_size,
            log_max_files,
            cgroups: None,
            owner: run_dir.display().to_string(),
            idle: Mutex::default(),
        }
    }

    /// Names this instance `owner` (the daemon's state root): the
    /// sandboxes it makes say so before anything of them exists (their
    /// cgroup included), and it lists, and so garbage-collects, only
    /// those. Another nodelet sharing the run directory or `cgroupRoot`
    /// keeps its own. Default: the run directory's path.
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = owner.to_string();
        self
    }

    /// The instance that made `sandbox`, if it says.
    fn owner_of(&self, sandbox: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir(sandbox).join(OWNER_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// `Err` when `sandbox`'s directory belongs to another instance.
    fn claim(&self, sandbox: &str, action: &str) -> Result<(), RuntimeError> {
        match self.owner_of(sandbox) {
            Some(o) if o != self.owner => Err(RuntimeError::Shim {
                sandbox: sandbox.to_string(),
                action: action.to_string(),
                source: std::io::Error::other(format!(
                    "{} belongs to the nodelet instance of {o}, not this one ({})",
                    self.state_dir(sandbox).display(),
                    self.owner
                )),
            }),
            _ => Ok(()),
        }
    }

    /// Sandboxes and containers asking for cgroups get them from `cgroups`.
    pub fn with_cgroups(mut self, cgroups: Arc<dyn Cgroups>) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    pub fn cgroups(&self) -> Option<&Arc<dyn Cgroups>> {
        self.cgroups.as_ref()
    }

    fn state_dir(&self, sandbox: &str) -> PathBuf {
        self.run_dir.join(sandbox)
    }

    /// The sandbox's cgroup, as recorded at its creation.
    fn sandbox_cgroup(&self, sandbox: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir(sandbox).join(CGROUP_FILE))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// A container's cgroup (`<sandbox cgroup>/<id>`) and the backend; it
    /// may be gone (reads of it then fail).
    fn container_cgroup(&self, sandbox: &str, id: &str) -> Option<(Arc<dyn Cgroups>, String)> {
        let cg = self.cgroups.clone()?;
        let path = format!("{}/{id}", self.sandbox_cgroup(sandbox)?);
        Some((cg, path))
    }

    /// Runs a cgroup operation off the async threads (kill and removal
    /// wait for the kernel).
    async fn blocking<T: Send + 'static>(
        sandbox: &str,
        action: &str,
        f: impl FnOnce() -> Result<T, CgroupError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let shim_err = |e: std::io::Error| RuntimeError::Shim {
            sandbox: sandbox.to_string(),
            action: action.to_string(),
            source: e,
        };
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| shim_err(std::io::Error::other(e)))?
            .map_err(|e| shim_err(std::io::Error::other(crate::error_chain(&e))))
    }

    /// One shim request, counted under kubelet's runtime operation
    /// metrics with the CRI method it stands for.
    async fn call(&self, sandbox: &str, op: Op) -> Result<Response, RuntimeError> {
        let name = match &op {
            Op::Ping => "version",
            Op::Create { .. } => "create_container",
            Op::Start { .. } => "start_container",
            Op::Signal { .. } => "stop_container",
            Op::State { .. } => "container_status",
            Op::List => "list_containers",
            Op::Remove { .. } => "remove_container",
            Op::Exec { .. } | Op::ExecEvery { .. } => "exec_sync",
            Op::Pause { .. } => "pause_container",
            Op::Shutdown => "stop_podsandbox",
            Op::Watch { .. } => "watch",
            // Not a CRI call: kubelet makes the request itself.
            Op::HttpEvery { .. } | Op::DialEvery { .. } => "network_probe",
        };
        let started = std::time::Instant::now();
        let r = self.call_shim(sandbox, op).await;
        let ok = r.as_ref().is_ok_and(|r| r.ok);
        crate::metrics::record_runtime_op(name, ok, started.elapsed().as_secs_f64());
        r
    }

    /// `signal` op: a signal now and, with `kill_at`, SIGKILL then.
    async fn signal(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
        kill_at: Option<u64>,
    ) -> Result<(), RuntimeError> {
        let op = Op::Signal {
            id: id.into(),
            signal,
            kill_at,
        };
        let r = self.call(sandbox, op).await?;
        Self::expect_ok(sandbox, id, r)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<UnixStream>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends one request and reads its answer, on an idle connection to
    /// the shim when there is one. A request is never sent twice: a
    /// kept connection fails a write only when the shim has gone (it
    /// closes none before), so nothing of that request was read, and
    /// only then is it sent on a new connection. A long poll (`watch`)
    /// gets a connection of its own.
    async fn call_shim(&self, sandbox: &str, op: Op) -> Result<Response, RuntimeError> {
        let shim_err = |action: &str| {
            let (sandbox, action) = (sandbox.to_string(), action.to_string());
            move |source| RuntimeError::Shim {
                sandbox,
                action,
                source,
            }
        };
        let reuse = !matches!(op, Op::Watch { .. });
        let mut req = serde_json::to_vec(&Request {
            v: PROTOCOL_VERSION,
            op,
        })
        .unwrap_or_default();
        req.push(b'\n');
        let kept = if reuse {
            self.idle().get_mut(sandbox).and_then(Vec::pop)
        } else {
            None
        };
        let sent = match kept {
            Some(mut s) => s.write_all(&req).await.map(|()| s).ok(),
            None => None,
        };
        let mut s = match sent {
            Some(s) => s,
            None => {
                let mut s = self.connect(sandbox).await?;
                s.write_all(&req).await.map_err(shim_err("send request"))?;
                s
            }
        };
        let mut line = String::new();
        let mut reader = BufReader::new(&mut s);
        reader
            .read_line(&mut line)
            .await
            .map_err(shim_err("read response"))?;
        let whole = line.ends_with('\n') && reader.buffer().is_empty();
        if reuse && whole {
            let mut idle = self.idle();
            let kept = idle.entry(sandbox.to_string()).or_default();
            if kept.len() < IDLE_PER_SHIM {
                kept.push(s);
            }
        }
        serde_json::from_str(&line)
            .map_err(|e| shim_err("decode response")(std::io::Error::other(e)))
    }

    /// A new connection to the sandbox's shim.
    async fn connect(&self, sandbox: &str) -> Result<UnixStream, RuntimeError> {
        let sock = self.state_dir(sandbox).join(SOCKET_NAME);
        match UnixStream::connect(&sock).await {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.idle().remove(sandbox);
                Err(RuntimeError::SandboxNotFound(sandbox.to_string()))
            }
            Err(source) => Err(RuntimeError::Shim {
                sandbox: sandbox.to_string(),
                action: "connect".into(),
                source,
            }),
        }
    }

    fn expect_state(sandbox: &str, id: &str, r: Response) -> Result<ContainerState, RuntimeError> {
        match (r.ok, r.state) {
            (true, Some(s)) => Ok(s),
            (_, _) => Err(RuntimeError::Container {
                sandbox: sandbox.into(),
                id: id.into(),
                message: r.error.unwrap_or_else(|| "no state in reply".into()),
            }),
        }
    }

    fn cgroup_or_err(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<(Arc<dyn Cgroups>, String), RuntimeError> {
        self.container_cgroup(sandbox, id)
            .filter(|(cg, path)| cg.exists(path))
            .ok_or_else(|| RuntimeError::Container {
                sandbox: sandbox.into(),
                id: id.into(),
                message: "container has no cgroup".into(),
            })
    }

    /// Subscribes with `op` (an `…Every`) on a connection of its own: the
    /// runs come on it until it closes.
    async fn subscribe<T: super::runs::RunResult>(
        &self,
        sandbox: &str,
        id: &str,
        op: Op,
    ) -> Result<Option<super::runs::ShimRuns<T>>, RuntimeError> {
        let conn = self.connect(sandbox).await?;
        super::runs::ShimRuns::subscribe(conn, sandbox, id, op).await
    }

    fn expect_ok(sandbox: &str, id: &str, r: Response) -> Result<(), RuntimeError> {
        if r.ok {
            Ok(())
        } else {
            Err(RuntimeError::Container {
                sandbox: sandbox.into(),
                id: id.into(),
                message: r.error.unwrap_or_default(),
            })
        }
    }
}

/// A duration in whole milliseconds, as the shim protocol has them.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A repeated op's timing, as the shim protocol has it.
fn every(
    timeout: Duration,
    first: tokio::time::Instant,
    period: Duration,
    quiet_after: u32,
) -> Every {
    Every {
        timeout_ms: millis(timeout),
        first_at: crate::time::instant_to_monotonic(first.into_std()),
        period_ms: millis(period),
        quiet_after,
    }
}

impl Runtime for NativeRuntime {
    type ExecRuns = super::runs::ShimRuns<super::protocol::ExecResult>;
    type HttpRuns = super::runs::ShimRuns<crate::probe::http1::Made>;

    async fn exec_every(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
        first: tokio::time::Instant,
        period: Duration,
        quiet_after: u32,
    ) -> Result<Option<Self::ExecRuns>, RuntimeError> {
        let op = Op::ExecEvery {
            id: id.into(),
            args: args.to_vec(),
            max_output,
            every: every(timeout, first, period, quiet_after),
        };
        self.subscribe(sandbox, id, op).await
    }

    async fn http_every(
        &self,
        sandbox: &str,
        id: &str,
        get: &crate::probe::http1::Get,
        timeout: Duration,
        first: tokio::time::Instant,
        period: Duration,
        quiet_after: u32,
    ) -> Result<Option<Self::HttpRuns>, RuntimeError> {
        if get.https {
            return Ok(None);
        }
        let op = Op::HttpEvery {
            get: get.clone(),
            every: every(timeout, first, period, quiet_after),
        };
        self.subscribe(sandbox, id, op).await
    }

    async fn dial_every(
        &self,
        sandbox: &str,
        id: &str,
        addr: std::net::SocketAddr,
        timeout: Duration,
        first: tokio::time::Instant,
        period: Duration,
        quiet_after: u32,
    ) -> Result<Option<Self::HttpRuns>, RuntimeError> {
        let op = Op::DialEvery {
            addr,
            every: every(timeout, first, period, quiet_after),
        };
        self.subscribe(sandbox, id, op).await
    }

    /// A long poll on the shim (not counted as a runtime operation: it
    /// lasts until a container exits).
    async fn wait_change(&self, sandbox: &str, since: u64) -> Result<u64, RuntimeError> {
        let r = self.call_shim(sandbox, Op::Watch { since }).await?;
        Self::expect_ok(sandbox, "", r.clone())?;
        Ok(r.seq.unwrap_or(since))
    }

    async fn create_sandbox(&self, cfg: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        let cgroup = cfg.cgroups.last().map(|(p, _)| p.clone());
        self.claim(&cfg.id, "create sandbox")?;
        // Owner and cgroup are on record before the cgroup exists: a
        // daemon killed in between finds what to remove, and no other
        // instance takes it for its own.
        let dir = self.state_dir(&cfg.id);
        let recorded = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(OWNER_FILE), &self.owner))
            .and_then(|()| match &cgroup {
                Some(c) => std::fs::write(dir.join(CGROUP_FILE), c),
                None => Ok(()),
            });
        recorded.map_err(|source| RuntimeError::Shim {
            sandbox: cfg.id.clone(),
            action: format!("record the sandbox in {}", dir.display()),
            source,
        })?;
        if let Some(pod_cgroup) = &cgroup {
            let Some(cg) = self.cgroups.clone() else {
                return Err(RuntimeError::Shim {
                    sandbox: cfg.id.clone(),
                    action: format!("create cgroup {pod_cgroup}"),
                    source: std::io::Error::other("no cgroup filesystem configured"),
                });
            };
            let wanted = cfg.cgroups.clone();
            let pod_cgroup = pod_cgroup.clone();
            Self::blocking(&cfg.id, "create cgroups", move || {
                let made = wanted.iter().try_for_each(|(p, r)| cg.create(p, r));
                if made.is_err() {
                    let _ = cg.remove(&pod_cgroup);
                }
                made
            })
            .await?;
        }
        let (bin, dir, host) = (
            self.nodelet.clone(),
            self.state_dir(&cfg.id),
            cfg.hostname.clone(),
        );
        let id = cfg.id.clone();
        let launched = tokio::task::spawn_blocking(move || shim::launch(&bin, &dir, &host))
            .await
            .map_err(|e| RuntimeError::Shim {
                sandbox: id.clone(),
                action: "launch shim".into(),
                source: std::io::Error::other(e),
            })?
            .map_err(|e| RuntimeError::Shim {
                sandbox: id.clone(),
                action: e.action.clone(),
                source: e.source,
            });
        let pid = match launched {
            Ok(pid) => pid,
            Err(e) => {
                let _ = self.remove_sandbox(&id).await;
                if let (Some(cg), Some((p, _))) = (self.cgroups.clone(), cfg.cgroups.last()) {
                    let p = p.clone();
                    let _ = Self::blocking(&id, "remove cgroup", move || cg.remove(&p)).await;
                }
                return Err(e);
            }
        };
        Ok(SandboxInfo {
            etc_dir: self.state_dir(&cfg.id).join(shim::ETC_DIR),
            netns: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            cgroup: self.sandbox_cgroup(&cfg.id),
        })
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.claim(id, "remove sandbox")?;
        let dir = self.state_dir(id);
        // The pid file may outlive its shim and the pid be reused: only a
        // process that is this sandbox's shim is ever signalled.
        let pid = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(" shim ") && cmd.contains(&dir.display().to_string())
            });
        let shut_down = self.call(id, Op::Shutdown).await;
        self.idle().remove(id);
        if shut_down.is_err() {
            // A dead or hung shim: kill it; the kernel takes its namespaces.
            if let Some(p) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(p) = pid {
            for _ in 0..500 {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                if stat.is_empty() || stat.contains(") Z ") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Whatever still runs in the pod's cgroup (a dead shim's containers,
        // escapees) dies with it.
        if let (Some(cg), Some(path)) = (self.cgroups.clone(), self.sandbox_cgroup(id)) {
            Self::blocking(id, "remove cgroup", move || cg.remove(&path)).await?;
        }
        // Again: a request that raced the shutdown may have put one back.
        self.idle().remove(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Shim {
                sandbox: id.into(),
                action: "remove state directory".into(),
                source,
            }),
        }
    }

    async fn sandbox_info(&self, id: &str) -> Option<SandboxInfo> {
        let dir = self.state_dir(id);
        let pid = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())?;
        if !matches!(self.call(id, Op::Ping).await, Ok(r) if r.ok) {
            return None;
        }
        Some(SandboxInfo {
            etc_dir: dir.join(shim::ETC_DIR),
            netns: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            cgroup: self.sandbox_cgroup(id),
        })
    }

    async fn list_sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else {
            return Ok(Vec::new());
        };
        // Every sandbox of this instance, down to one whose shim never
        // started; none of another's.
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| self.owner_of(id).as_deref() == Some(self.owner.as_str()))
            .collect())
    }

    async fn create_container(
        &self,
        req: &CreateContainer,
    ) -> Result<ContainerState, RuntimeError> {
        let op = Op::Create {
            id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            log_dir: req.log_dir.display().to_string(),
            restart_count: req.restart_count,
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
            termination_message_file: req
                .termination_message_file
                .as_ref()
                .map(|p| p.display().to_string()),
            fallback_to_logs: req.fallback_to_logs,
        };
        let r = self.call(&req.sandbox, op).await?;
        Self::expect_state(&req.sandbox, &req.id, r)
    }

    async fn start_container(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<ContainerState, RuntimeError> {
        let r = self.call(sandbox, Op::Start { id: id.into() }).await?;
        if !r.ok && r.state.is_some() {
            return Err(RuntimeError::Start {
                id: id.into(),
                message: r.error.unwrap_or_default(),
            });
        }
        Self::expect_state(sandbox, id, r)
    }

    async fn signal_container(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
    ) -> Result<(), RuntimeError> {
        self.signal(sandbox, id, signal, None).await
    }

    async fn stop_container(
        &self,
        sandbox: &str,
        id: &str,
        signal: i32,
        kill_at: std::time::Instant,
    ) -> Result<bool, RuntimeError> {
        let at = crate::time::instant_to_monotonic(kill_at);
        self.signal(sandbox, id, signal, Some(at))
            .await
            .map(|()| true)
    }

    async fn list_containers(&self, sandbox: &str) -> Result<Vec<ContainerState>, RuntimeError> {
        let r = self.call(sandbox, Op::List).await?;
        if !r.ok {
            return Err(RuntimeError::Shim {
                sandbox: sandbox.into(),
                action: "list containers".into(),
                source: std::io::Error::other(r.error.unwrap_or_default()),
            });
        }
        Ok(r.containers.unwrap_or_default())
    }

    async fn container_state(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<ContainerState, RuntimeError> {
        let r = self.call(sandbox, Op::State { id: id.into() }).await?;
        let mut state = Self::expect_state(sandbox, id, r)?;
        if state.status == super::protocol::Status::Running {
            state.paused = self
                .container_cgroup(sandbox, id)
                .is_some_and(|(cg, p)| cg.is_frozen(&p).unwrap_or(false));
        }
        Ok(state)
    }

    /// The shim freezes (see `Op::Pause`); a shim from before that op
    /// answers "bad request", and the cgroup is frozen from here.
    async fn pause_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        let r = self.call(sandbox, Op::Pause { id: id.into() }).await?;
        let old_shim = !r.ok
            && r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("bad request"));
        if !old_shim {
            return Self::expect_ok(sandbox, id, r);
        }
        let (cg, path) = self.cgroup_or_err(sandbox, id)?;
        Self::blocking(sandbox, "freeze container", move || cg.freeze(&path)).await
    }

    async fn resume_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        let (cg, path) = self.cgroup_or_err(sandbox, id)?;
        Self::blocking(sandbox, "thaw container", move || cg.thaw(&path)).await
    }

    async fn container_stats(&self, sandbox: &str, id: &str) -> Option<Stats> {
        let (cg, path) = self.container_cgroup(sandbox, id)?;
        cg.stats(&path).ok()
    }

    async fn sandbox_stats(&self, sandbox: &str) -> Option<Stats> {
        let cg = self.cgroups.as_ref()?;
        cg.stats(&self.sandbox_cgroup(sandbox)?).ok()
    }

    async fn exec(
        &self,
        sandbox: &str,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<super::protocol::ExecResult, RuntimeError> {
        let op = Op::Exec {
            id: id.into(),
            args: args.to_vec(),
            timeout_ms: millis(timeout),
            max_output,
        };
        let r = self.call(sandbox, op).await?;
        match (r.ok, r.exec) {
            (true, Some(e)) => Ok(e),
            _ => Err(RuntimeError::Container {
                sandbox: sandbox.into(),
                id: id.into(),
                message: r.error.unwrap_or_else(|| "no exec result".into()),
            }),
        }
    }

    async fn remove_container(&self, sandbox: &str, id: &str) -> Result<(), RuntimeError> {
        let r = self.call(sandbox, Op::Remove { id: id.into() }).await?;
        Self::expect_ok(sandbox, id, r)
    }
}
