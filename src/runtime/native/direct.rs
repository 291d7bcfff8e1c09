//! Execs run by the daemon itself (exec probes, hooks, `nodelet exec`):
//! the command is started from a thread of the daemon and becomes its
//! child, so neither the request, nor the command's exit, nor the answer
//! has to wake the pod's shim. An exec probe every second in every pod
//! made those wake-ups, in as many processes whose caches had gone cold
//! in between, most of the shim's cost (`docs/benchmarks.md`).
//!
//! What the command needs from its container is what a shim would use
//! ([`ExecContext`]), opened once per container from its init's `/proc`
//! entry and its bundle, and checked against the shim's word that this
//! init is still the container's. A shim that does not report its
//! bundle (older than this) still runs the exec itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use super::container::Exit;
use super::exec::{ExecContext, ExecStarted};
use super::protocol::ExecResult;
use crate::runtime::cgroup::Cgroups;
use crate::sys::spawn::Spawner;

/// What execs into one container need, opened at its first exec.
pub struct Target {
    /// A pidfd of the container's init: readable once it has exited.
    init: OwnedFd,
    ctx: ExecContext,
    /// Held shared while a command is being started, exclusively while
    /// the container is being frozen: a command that joined the cgroup as
    /// it froze would stop before its exec, and the thread that started
    /// it would wait for that exec until a thaw (runc refuses the same).
    gate: tokio::sync::RwLock<()>,
}

impl Target {
    /// For the container whose init is `pid`, created from `bundle`.
    /// The caller must check afterwards that `pid` is still that
    /// container's init (the pidfd then names it, not a reuse of its PID).
    pub fn open(pid: i32, bundle: &Path, cgroups: Option<&dyn Cgroups>) -> Result<Target, String> {
        let init = crate::sys::pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?;
        let config = bundle.join("config.json");
        let text = std::fs::read_to_string(&config)
            .map_err(|e| format!("read {}: {e}", config.display()))?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", config.display()))?;
        let ctx = ExecContext::open(Pid::from_raw(pid), &spec, cgroups)
            .map_err(|e| crate::error_chain(&e))?;
        Ok(Target {
            init,
            ctx,
            gate: tokio::sync::RwLock::new(()),
        })
    }

    /// The container's init has not exited.
    fn alive(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.init.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Waits until no command is being started, and keeps others from
    /// starting while the guard lives.
    pub async fn hold(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }
}

/// The open targets by (sandbox, container id).
#[derive(Default)]
pub struct Targets(Mutex<HashMap<(String, String), Arc<Target>>>);

impl Targets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Target>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The target of a container whose init still runs.
    pub fn get(&self, sandbox: &str, id: &str) -> Option<Arc<Target>> {
        let mut map = self.map();
        let key = (sandbox.to_string(), id.to_string());
        match map.get(&key) {
            Some(t) if t.alive() => Some(Arc::clone(t)),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `t` (or the one another exec opened first); drops the targets
    /// of containers that have exited since.
    pub fn insert(&self, sandbox: &str, id: &str, t: Target) -> Arc<Target> {
        let mut map = self.map();
        map.retain(|_, t| t.alive());
        Arc::clone(
            map.entry((sandbox.to_string(), id.to_string()))
                .or_insert_with(|| Arc::new(t)),
        )
    }

    pub fn forget(&self, sandbox: &str, id: &str) {
        self.map().remove(&(sandbox.to_string(), id.to_string()));
    }

    pub fn forget_sandbox(&self, sandbox: &str) {
        self.map().retain(|(s, _), _| s != sandbox);
    }
}

thread_local! {
    /// Each thread that starts commands has its own child stack.
    static SPAWNER: RefCell<Option<Spawner>> = const { RefCell::new(None) };
}

fn spawn_here(
    t: &Target,
    args: &[String],
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> Result<ExecStarted, String> {
    SPAWNER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let spawner = match &mut *slot {
            Some(s) => s,
            None => slot.insert(Spawner::for_threads().map_err(|e| format!("prepare execs: {e}"))?),
        };
        t.ctx
            .spawn(spawner, args, stdout, stderr)
            .map_err(|e| crate::error_chain(&e))
    })
}

/// Runs `args` in the container of `t` (named `id` in messages): at
/// `timeout` the command's process group is killed; each of stdout and
/// stderr keeps at most `max_output` bytes.
pub async fn run(
    t: Arc<Target>,
    id: &str,
    args: &[String],
    timeout: Duration,
    max_output: usize,
) -> Result<ExecResult, String> {
    let deadline = Instant::now() + timeout;
    // The read ends are ours and non-blocking; the command opens the write
    // ends anew (see `sys::spawn`), so its stdout and stderr block as usual.
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("create pipe: {e}"))
    };
    let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
    let started = {
        let _starting = t.gate.read().await;
        if t.ctx.paused().unwrap_or(false) {
            return Err(format!("cannot exec in a paused container: {id}"));
        }
        let (target, argv) = (Arc::clone(&t), args.to_vec());
        // A blocking thread: the vfork suspends the caller until the
        // command execs, which a cgroup v1 migration can make take
        // milliseconds.
        tokio::task::spawn_blocking(move || {
            spawn_here(&target, &argv, out_w.as_fd(), err_w.as_fd())
        })
        .await
        .map_err(|e| format!("start exec: {e}"))??
    };
    let mut child = Child::new(started.pid)?;
    let watch =
        |fd: OwnedFd| crate::sys::async_fd(fd).map_err(|e| format!("watch the exec's output: {e}"));
    let mut out = Capture::new(watch(out_r)?, Vec::new(), max_output);
    // A program that could not be run: containerd's message, as the
    // process would have written it.
    let failed = started
        .failed
        .map(|msg| format!("{msg}\n").into_bytes())
        .unwrap_or_default();
    let mut err = Capture::new(watch(err_r)?, failed, max_output);
    let mut timed_out = false;
    loop {
        tokio::select! {
            _ = child.exited() => break,
            () = out.pump(), if out.open() => {}
            () = err.pump(), if err.open() => {}
            () = tokio::time::sleep_until(deadline.into()), if !timed_out => {
                child.kill();
                timed_out = true;
            }
        }
    }
    out.drain();
    err.drain();
    let code = child.reap()?;
    Ok(ExecResult {
        exit_code: code,
        stdout: String::from_utf8_lossy(&out.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&err.bytes).into_owned(),
        timed_out,
        truncated: out.truncated || err.truncated,
    })
}

/// One output stream of a command: what was read, up to `max` bytes.
struct Capture {
    /// None once at end of file.
    fd: Option<AsyncFd<OwnedFd>>,
    bytes: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl Capture {
    fn new(fd: AsyncFd<OwnedFd>, bytes: Vec<u8>, max: usize) -> Capture {
        Capture {
            fd: Some(fd),
            bytes,
            max,
            truncated: false,
        }
    }

    fn open(&self) -> bool {
        self.fd.is_some()
    }

    /// Waits until the pipe has something (or is at its end), reads it.
    /// Cancel-safe: nothing is read before the wait is over.
    async fn pump(&mut self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        let Ok(mut ready) = fd.readable().await else {
            self.fd = None;
            return;
        };
        match read_into(fd.get_ref(), &mut self.bytes, self.max, &mut self.truncated) {
            Drained::Empty => ready.clear_ready(),
            Drained::End => {
                drop(ready);
                self.fd = None;
            }
        }
    }

    /// Reads what is there now (a command that exited has written all).
    fn drain(&mut self) {
        if let Some(fd) = &self.fd {
            read_into(fd.get_ref(), &mut self.bytes, self.max, &mut self.truncated);
        }
        self.fd = None;
    }
}

enum Drained {
    /// Nothing more for now.
    Empty,
    /// End of file (or an error: nothing more will come).
    End,
}

/// Reads `fd` until it is empty or at its end, keeping up to `max` bytes.
fn read_into(fd: &OwnedFd, bytes: &mut Vec<u8>, max: usize, truncated: &mut bool) -> Drained {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Drained::End,
            Ok(n) => {
                let room = max.saturating_sub(bytes.len());
                if n > room {
                    *truncated = true;
                }
                bytes.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return Drained::Empty,
            Err(_) => return Drained::End,
        }
    }
}

/// A started command: our child until reaped. Dropped before that (the
/// exec's caller went away), its process group is killed and it is
/// reaped in the background, so no process or zombie is left.
struct Child {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    fn new(pid: Pid) -> Result<Child, String> {
        // On failure the command is killed and reaped here and now.
        let abandon = |what: String| {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            what
        };
        // Our child and not yet reaped: its PID cannot have been reused.
        let fd = crate::sys::pidfd_open(pid.as_raw())
            .map_err(|e| abandon(format!("pidfd_open {pid}: {e}")))?;
        let fd = crate::sys::async_fd(fd).map_err(|e| abandon(format!("watch exec {pid}: {e}")))?;
        Ok(Child {
            pid,
            pidfd: Some(fd),
        })
    }

    /// Its process group (it leads one), killed.
    fn kill(&self) {
        let _ = killpg(self.pid, Signal::SIGKILL);
    }

    /// Returns once it has exited.
    async fn exited(&self) {
        match &self.pidfd {
            Some(fd) => {
                let _ = fd.readable().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Its exit code (128 + signal when killed); it must have exited.
    fn reap(&mut self) -> Result<i32, String> {
        let fd = self.pidfd.take().ok_or("exec already reaped")?;
        let status = waitid(Id::PIDFd(fd.get_ref().as_fd()), WaitPidFlag::WEXITED)
            .map_err(|e| format!("wait for exec {}: {e}", self.pid))?;
        Exit::from_status(status)
            .map(|e| e.code)
            .ok_or_else(|| format!("exec {}: unexpected wait status {status:?}", self.pid))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(fd) = self.pidfd.take() else { return };
        self.kill();
        let reap = move |fd: &AsyncFd<OwnedFd>| {
            let _ = waitid(Id::PIDFd(fd.get_ref().as_fd()), WaitPidFlag::WEXITED);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = fd.readable().await;
                    reap(&fd);
                });
            }
            Err(_) => reap(&fd),
        }
    }
}
