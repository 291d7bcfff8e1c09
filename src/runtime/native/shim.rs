//! The per-pod shim: a small single-threaded process, detached from the
//! daemon, that holds the pod's network, IPC and UTS namespaces (it lives
//! in them), creates and starts the pod's containers, copies their output
//! into CRI log files, reaps them as child subreaper and records each exit
//! atomically. The daemon talks to it over `<state>/shim.sock`; the shim
//! keeps running if the daemon dies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::poll::PollTimeout;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::attempt::PendingAttempt;
use super::container::{self, ChildIo};
use super::protocol::{
    ContainerState, Every, ExecResult, Op, Request, Response, Run, Status, MAX_REPEATS, PID_FILE,
    PROTOCOL_VERSION, SOCKET_NAME, TOO_MANY_REPEATS,
};
use super::readiness::{Readiness, Token, Watched};
use super::repeat::{Reporter, Schedule};
use crate::probe::http1::Get;
use crate::runtime::cgroup::{self, Cgroups};
use crate::runtime::logs::{LineSplitter, LogWriter, Stream};
use crate::runtime::record::{ExitRecord, RECORD_VERSION};

/// The pod's `hosts`, `hostname` and `resolv.conf`, under the state dir.
pub const ETC_DIR: &str = "etc";

/// kubelet's managed hosts file (`k8s:pkg/kubelet/kubelet_pods.go
/// managedHostsFileContent`). There is no pod IP before CNI lands, so the
/// `<podIP> <hostname>` line is absent.
fn hosts_file() -> String {
    "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n".to_string()
}

/// Writes the pod-level files containers bind-mount; resolv.conf is the
/// host's (dnsPolicy Default; ClusterFirst falls back to it without a
/// cluster DNS, as the kubelet does).
fn write_etc(state_dir: &Path, hostname: &str) -> Result<(), ShimError> {
    let etc = state_dir.join(ETC_DIR);
    std::fs::create_dir_all(&etc).map_err(err("create etc directory"))?;
    std::fs::write(etc.join("hostname"), format!("{hostname}\n")).map_err(err("write hostname"))?;
    std::fs::write(etc.join("hosts"), hosts_file()).map_err(err("write hosts"))?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(etc.join("resolv.conf"), resolv).map_err(err("write resolv.conf"))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("shim: {action}")]
pub struct ShimError {
    pub action: String,
    #[source]
    pub source: std::io::Error,
}

fn err<E: Into<std::io::Error>>(action: &str) -> impl FnOnce(E) -> ShimError + '_ {
    move |e| ShimError {
        action: action.to_string(),
        source: e.into(),
    }
}

struct Output {
    fd: Watched<OwnedFd>,
    stream: Stream,
    splitter: LineSplitter,
    /// Every writer closed it: out of the readiness set (a hung-up pipe
    /// would end every wait at once).
    eof: bool,
}

/// Who waits for an exec's result.
enum ExecOwner {
    /// A client's `exec`: answered on its connection.
    Client(Rc<UnixStream>),
    /// A run of the repeated exec with this serial.
    Repeat(u64),
}

/// An exec in flight: its result goes to its owner once the command (a
/// child of the shim, leading its own process group) is reaped.
struct PendingExec {
    owner: ExecOwner,
    started: std::time::Instant,
    /// Its number in the shim's readiness tokens.
    serial: u64,
    pid: Pid,
    /// stdout and stderr: the read end (none once at end of file, so a
    /// hung-up pipe does not end every wait at once) and what was read.
    pipes: Vec<(Option<Watched<OwnedFd>>, Vec<u8>)>,
    max: usize,
    truncated: bool,
    deadline: std::time::Instant,
    timed_out: bool,
}

impl PendingExec {
    fn drain(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        for (pipe, out) in &mut self.pipes {
            let Some(fd) = pipe.as_ref() else { continue };
            loop {
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => {
                        *pipe = None;
                        break;
                    }
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => break,
                    Err(_) => {
                        *pipe = None;
                        break;
                    }
                    Ok(n) => {
                        let room = self.max.saturating_sub(out.len());
                        if n > room {
                            self.truncated = true;
                        }
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        }
    }
}

struct Container {
    /// Its number in the shim's readiness tokens.
    serial: u64,
    spec: oci_spec::runtime::Spec,
    /// Termination-message file and FallbackToLogsOnError.
    termination: Option<(PathBuf, bool)>,
    id: String,
    pid: Pid,
    status: Status,
    started_at: Option<String>,
    exit: Option<ExitRecord>,
    gate: Option<OwnedFd>,
    errors: Option<OwnedFd>,
    outputs: Vec<Output>,
    log: LogWriter,
    dir: PathBuf,
    /// Its cgroup (`linux.cgroupsPath`), removed once it exited.
    cgroup: Option<String>,
    /// Opened at its first exec, closed when it exits.
    exec: Option<super::exec::ExecContext>,
    /// The end of its grace period: SIGKILL then if it still runs.
    kill_at: Option<std::time::Instant>,
}

impl Container {
    /// kubelet's rules (`runtime::record::termination_message`) over the
    /// message file and, for FallbackToLogsOnError, this instance's log.
    fn termination_message(&self, code: i32) -> String {
        let Some((file, fallback)) = &self.termination else {
            return String::new();
        };
        let mut content = Vec::new();
        if let Ok(f) = std::fs::File::open(file) {
            let _ = f
                .take(crate::runtime::record::MAX_TERMINATION_MESSAGE as u64)
                .read_to_end(&mut content);
        }
        crate::runtime::record::termination_message(&content, *fallback, code, || {
            crate::runtime::logs::reassemble(&std::fs::read(self.log.path()).unwrap_or_default())
        })
    }

    fn state(&self) -> ContainerState {
        ContainerState {
            id: self.id.clone(),
            status: self.status,
            pid: self.pid.as_raw(),
            started_at: self.started_at.clone(),
            exit: self.exit.clone(),
            paused: false,
        }
    }

    /// Copies what the container wrote into its log.
    fn pump(&mut self, which: usize, at_eof: bool) {
        let mut buf = [0u8; 64 * 1024];
        let mut records = Vec::new();
        let Some(out) = self.outputs.get_mut(which) else {
            return;
        };
        loop {
            match nix::unistd::read(&out.fd, &mut buf) {
                Ok(0) => {
                    out.splitter.finish(&mut records);
                    out.eof = true;
                    out.fd.unwatch();
                    break;
                }
                Ok(n) => out.splitter.push(&buf[..n], &mut records),
                Err(nix::errno::Errno::EAGAIN) => {
                    if at_eof {
                        out.splitter.finish(&mut records);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        let stream = out.stream;
        for (content, partial) in records {
            if let Err(e) = self.log.write(stream, &content, partial) {
                tracing::warn!(container = %self.id, error = %e, "log write failed");
            }
        }
    }
}

/// An `execEvery` or `httpEvery` subscription: the command or request
/// made on its schedule, one run at a time, its runs reported on the
/// subscriber's connection.
struct Repeating {
    serial: u64,
    client: Rc<UnixStream>,
    what: Repeated,
    timeout_ms: u64,
    schedule: Schedule,
    reporter: Reporter,
    running: bool,
}

impl Repeating {
    /// An exec run was started, or refused (`Some`).
    fn ran(&mut self, refused: Option<Refused>) {
        match refused {
            None => self.running = true,
            // Not probed while frozen; the next tick tries again.
            Some(Refused::Paused(_)) => {}
            Some(Refused::Other(msg)) => self.report(Run::refused(msg)),
        }
    }

    /// Records a run; sends what its reporter says to send now.
    fn report(&mut self, run: Run) {
        if let Some(runs) = self.reporter.record(run) {
            send_runs(&self.client, runs);
        }
    }
}

enum Repeated {
    Exec {
        id: String,
        args: Vec<String>,
        max_output: usize,
    },
    Http(Get),
    Dial(std::net::SocketAddr),
}

/// Why an exec was not started.
enum Refused {
    /// The container is frozen (a repeated exec skips the tick).
    Paused(String),
    Other(String),
}

impl Refused {
    fn message(self) -> String {
        match self {
            Refused::Paused(m) | Refused::Other(m) => m,
        }
    }
}

/// A connection: its number, the socket (shared with the execs and
/// watches waiting on it) and what was read of a request so far.
struct Client {
    serial: u64,
    conn: Watched<Rc<UnixStream>>,
    buf: Vec<u8>,
}

pub struct Shim {
    state_dir: PathBuf,
    listener: UnixListener,
    readiness: Readiness,
    /// The last number given to a connection, container or exec.
    serial: u64,
    containers: HashMap<String, Container>,
    clients: Vec<Client>,
    execs: Vec<PendingExec>,
    attempts: Vec<PendingAttempt>,
    repeats: Vec<Repeating>,
    /// Starts execs (made at the first one).
    spawner: Option<crate::sys::spawn::Spawner>,
    shutting_down: bool,
    cgroups: Option<Box<dyn Cgroups>>,
    /// Counts container exits; `Watch` waits for it to move.
    seq: u64,
    /// Clients waiting for `seq` to pass what they saw.
    watchers: Vec<Rc<UnixStream>>,
}

/// Watchers kept at most (a daemon restarted often leaves stale ones
/// until the next exit answers them).
const MAX_WATCHERS: usize = 64;

/// Entry point of `nodelet shim`: sets the process up as the pod's
/// namespace holder and serves until shut down. Must run single-threaded.
pub fn main(state_dir: &Path, hostname: &str) -> Result<(), ShimError> {
    nix::unistd::setsid().map_err(err("setsid"))?;
    // Execs start in our memory until they exec (sys::spawn), and become
    // visible in the container's PID namespace first: none of it may be
    // readable or traceable from there.
    nix::sys::prctl::set_dumpable(false).map_err(err("set non-dumpable"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(err("become child subreaper"))?;
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(err("create pod namespaces"))?;
    nix::unistd::sethostname(hostname).map_err(err("set pod hostname"))?;
    crate::sys::loopback_up().map_err(|source| ShimError {
        action: "bring up loopback".into(),
        source,
    })?;
    std::fs::create_dir_all(state_dir.join("containers")).map_err(err("create state directory"))?;
    write_etc(state_dir, hostname)?;
    let sock = state_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(err("bind socket"))?;
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(err("chmod socket"))?;
    listener
        .set_nonblocking(true)
        .map_err(err("nonblocking socket"))?;
    std::fs::write(state_dir.join(PID_FILE), std::process::id().to_string())
        .map_err(err("write pid file"))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGPIPE);
    mask.thread_block().map_err(err("block signals"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(err("create signalfd"))?;
    // Tell the starter we are ready, then let go of its stdio.
    println!("ready");
    let _ = std::io::stdout().flush();
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(err("open /dev/null"))?;
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let readiness = Readiness::new().map_err(err("create epoll instance"))?;
    readiness
        .watch_always(sfd.as_fd(), Token::Signals)
        .map_err(err("watch signals"))?;
    readiness
        .watch_always(listener.as_fd(), Token::Listener)
        .map_err(err("watch socket"))?;
    let mut shim = Shim {
        state_dir: state_dir.to_path_buf(),
        listener,
        readiness,
        serial: 0,
        containers: HashMap::new(),
        clients: Vec::new(),
        execs: Vec::new(),
        attempts: Vec::new(),
        repeats: Vec::new(),
        spawner: None,
        shutting_down: false,
        cgroups: cgroup::detect().ok(),
        seq: 0,
        watchers: Vec::new(),
    };
    shim.serve(&sfd)
}

impl Shim {
    fn serve(&mut self, sfd: &SignalFd) -> Result<(), ShimError> {
        loop {
            let now = std::time::Instant::now();
            let kills = self
                .containers
                .values()
                .filter(|c| c.status == Status::Running)
                .filter_map(|c| c.kill_at);
            // Rounded up: waking a little late beats waking early and
            // spinning until the deadline. Nothing to time: sleep until
            // something happens.
            let ticks = self
                .repeats
                .iter()
                .filter(|r| !r.running)
                .map(|r| r.schedule.next());
            let timeout = self
                .execs
                .iter()
                .filter(|e| !e.timed_out)
                .map(|e| e.deadline)
                .chain(self.attempts.iter().map(|a| a.deadline))
                .chain(kills)
                .chain(ticks)
                .map(|at| {
                    let d = at.saturating_duration_since(now);
                    d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0)
                })
                .min()
                .map_or(PollTimeout::NONE, |ms| {
                    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
                });
            self.readiness.wait(timeout).map_err(err("epoll_wait"))?;
            let ready = &self.readiness;
            // Output first, so a reaped container's last lines are logged.
            for c in self.containers.values_mut() {
                for i in 0..c.outputs.len() {
                    if ready.is_ready(Token::Output(c.serial, i)) {
                        c.pump(i, false);
                    }
                }
            }
            for e in &mut self.execs {
                // Only what the wait found ready: an exec's pipes are
                // read to the end when it is reaped anyway.
                if (0..e.pipes.len()).any(|i| ready.is_ready(Token::Exec(e.serial, i))) {
                    e.drain();
                }
                if !e.timed_out && std::time::Instant::now() >= e.deadline {
                    // The command's whole process group (and the command,
                    // should it have left the group).
                    let _ = nix::sys::signal::killpg(e.pid, Signal::SIGKILL);
                    let _ = nix::sys::signal::kill(e.pid, Signal::SIGKILL);
                    e.timed_out = true;
                }
            }
            let now = std::time::Instant::now();
            let mut got = Vec::new();
            self.attempts.retain_mut(|g| {
                if !ready.is_ready(Token::Attempt(g.serial)) && now < g.deadline {
                    return true;
                }
                let Some(made) = g.advance(ready, now) else {
                    return true;
                };
                got.push((g.repeat, made, g.started.elapsed()));
                false
            });
            for (repeat, made, took) in got {
                self.repeat_ran(repeat, Run::of_http(made, took));
            }
            let ready = &self.readiness;
            for c in self.containers.values_mut() {
                if c.status == Status::Running && c.kill_at.is_some_and(|at| at <= now) {
                    c.kill_at = None;
                    let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
                }
            }
            let (signalled, connecting) = (
                ready.is_ready(Token::Signals),
                ready.is_ready(Token::Listener),
            );
            // Connections accepted below (numbered past this) are tried
            // at once.
            let known = self.serial;
            if signalled {
                while let Ok(Some(_)) = sfd.read_signal() {}
                self.reap();
            }
            if connecting {
                while let Ok(s) = crate::sys::accept_nonblocking(&self.listener) {
                    self.serial += 1;
                    match self.readiness.watch(Rc::new(s), Token::Client(self.serial)) {
                        Ok(conn) => self.clients.push(Client {
                            serial: self.serial,
                            conn,
                            buf: Vec::new(),
                        }),
                        Err(e) => tracing::warn!(error = %e, "cannot watch a connection"),
                    }
                }
            }
            let mut keep = Vec::new();
            for mut c in std::mem::take(&mut self.clients) {
                if c.serial <= known && !self.readiness.is_ready(Token::Client(c.serial)) {
                    keep.push(c);
                    continue;
                }
                let s = Rc::clone(c.conn.get());
                let mut chunk = [0u8; 4096];
                let alive = match (&*s).read(&mut chunk) {
                    Ok(0) => false,
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        true
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                };
                while let Some(pos) = c.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = c.buf.drain(..=pos).collect();
                    if let Some(resp) = self.handle(&line, &s) {
                        send(&s, &resp);
                    }
                }
                if alive {
                    keep.push(c);
                } else {
                    // Its repeated execs end with it (a run in flight
                    // finishes unreported).
                    self.repeats.retain(|r| !Rc::ptr_eq(&r.client, &s));
                }
            }
            self.clients = keep;
            self.run_due_repeats();
            if self.shutting_down
                && self
                    .containers
                    .values()
                    .all(|c| c.status != Status::Running)
            {
                let _ = std::fs::remove_file(self.state_dir.join(SOCKET_NAME));
                let _ = std::fs::remove_file(self.state_dir.join(PID_FILE));
                return Ok(());
            }
        }
    }

    /// Reaps every exited child; records the exits of container inits.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { return };
                    let Some(exit) = container::Exit::from_status(status) else {
                        continue;
                    };
                    if let Some(i) = self.execs.iter().position(|e| e.pid == pid) {
                        let mut e = self.execs.remove(i);
                        e.drain();
                        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        let result = ExecResult {
                            exit_code: exit.code,
                            stdout: text(&e.pipes[0].1),
                            stderr: text(&e.pipes[1].1),
                            timed_out: e.timed_out,
                            truncated: e.truncated,
                        };
                        match e.owner {
                            ExecOwner::Client(client) => send(
                                &client,
                                &Response {
                                    exec: Some(result),
                                    ..Response::ok()
                                },
                            ),
                            ExecOwner::Repeat(serial) => {
                                let run = Run::of_exec(result, e.started.elapsed());
                                self.repeat_ran(serial, run);
                            }
                        }
                        continue;
                    }
                    if let Some(c) = self
                        .containers
                        .values_mut()
                        .find(|c| c.pid == pid && c.status != Status::Exited)
                    {
                        for i in 0..c.outputs.len() {
                            c.pump(i, true);
                        }
                        c.outputs.clear();
                        c.exec = None;
                        // Died before start: its setup failed, and the error
                        // pipe says why. That is a start error (exit 128).
                        let (code, message) = if c.status == Status::Created {
                            let mut msg = String::new();
                            if let Some(e) = c.errors.take() {
                                let _ = std::fs::File::from(e).read_to_string(&mut msg);
                            }
                            if msg.is_empty() {
                                msg = "container init exited before start".into();
                            }
                            (128, msg)
                        } else {
                            (exit.code, c.termination_message(exit.code))
                        };
                        let finished_at = crate::time::rfc3339_nano(SystemTime::now());
                        let oom_killed = release_cgroup(self.cgroups.as_deref(), c);
                        let rec = ExitRecord {
                            version: RECORD_VERSION.into(),
                            exit_code: code,
                            signal: exit.signal,
                            started_at: c.started_at.clone().unwrap_or_default(),
                            finished_at,
                            oom_killed,
                            message,
                        };
                        if let Err(e) = rec.save(&c.dir.join("exit.json")) {
                            tracing::error!(container = %c.id, error = %e, "cannot record exit");
                        }
                        c.exit = Some(rec);
                        c.status = Status::Exited;
                        self.seq += 1;
                        let answer = Response {
                            seq: Some(self.seq),
                            ..Response::ok()
                        };
                        for w in std::mem::take(&mut self.watchers) {
                            send(&w, &answer);
                        }
                    }
                }
            }
        }
    }

    /// Answers a request; `None` when the answer comes later (exec).
    fn handle(&mut self, line: &[u8], client: &Rc<UnixStream>) -> Option<Response> {
        let req: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => return Some(Response::err(format!("bad request: {e}"))),
        };
        if req.v != PROTOCOL_VERSION {
            return Some(Response::err(format!(
                "unsupported protocol version {} (this shim speaks {PROTOCOL_VERSION})",
                req.v
            )));
        }
        if let Op::Watch { since } = req.op {
            // A count that is not ours (u64::MAX, or another shim's) is
            // answered at once with ours.
            if self.seq != since {
                return Some(Response {
                    seq: Some(self.seq),
                    ..Response::ok()
                });
            }
            if self.watchers.len() >= MAX_WATCHERS {
                self.watchers.remove(0);
            }
            self.watchers.push(Rc::clone(client));
            return None;
        }
        if let Op::Exec {
            id,
            args,
            timeout_ms,
            max_output,
        } = req.op
        {
            let owner = ExecOwner::Client(Rc::clone(client));
            return match self.exec(&id, &args, timeout_ms, max_output, owner) {
                Ok(()) => None,
                Err(refused) => Some(Response::err(refused.message())),
            };
        }
        let op = match req.op {
            Op::ExecEvery {
                id,
                args,
                max_output,
                every,
            } => {
                let what = Repeated::Exec {
                    id,
                    args,
                    max_output,
                };
                return Some(self.repeat(client, what, every));
            }
            Op::HttpEvery { get, every } => {
                return Some(self.repeat(client, Repeated::Http(get), every))
            }
            Op::DialEvery { addr, every } => {
                return Some(self.repeat(client, Repeated::Dial(addr), every))
            }
            op => op,
        };
        Some(match op {
            Op::Ping => Response {
                pid: Some(i32::try_from(std::process::id()).unwrap_or(0)),
                ..Response::ok()
            },
            Op::Create {
                id,
                bundle,
                log_dir,
                restart_count,
                log_max_size,
                log_max_files,
                termination_message_file,
                fallback_to_logs,
            } => {
                match self.create(
                    &id,
                    Path::new(&bundle),
                    Path::new(&log_dir),
                    restart_count,
                    log_max_size,
                    log_max_files,
                ) {
                    Ok(r) => {
                        if let Some(c) = self.containers.get_mut(&id) {
                            c.termination = termination_message_file
                                .map(|f| (PathBuf::from(f), fallback_to_logs));
                        }
                        // The container's config was parsed and planned:
                        // give the transient heap back.
                        crate::sys::trim_heap();
                        r
                    }
                    Err(e) => Response::err(crate::error_chain(&e)),
                }
            }
            Op::Start { id } => self.start(&id),
            Op::Signal {
                id,
                signal,
                kill_at,
            } => match self.containers.get_mut(&id) {
                None => Response::err(format!("container {id} not found")),
                Some(c) if c.status != Status::Running => Response::ok(),
                Some(c) => match Signal::try_from(signal) {
                    Ok(sig) => {
                        // A later, shorter grace period (a second delete)
                        // moves the kill forward, never back.
                        if let Some(at) = kill_at.map(crate::time::monotonic_to_instant) {
                            c.kill_at = Some(c.kill_at.map_or(at, |k| k.min(at)));
                        }
                        match nix::sys::signal::kill(c.pid, sig) {
                            Ok(()) | Err(nix::errno::Errno::ESRCH) => Response::ok(),
                            Err(e) => Response::err(format!("signal {id}: {e}")),
                        }
                    }
                    Err(_) => Response::err(format!("unknown signal {signal}")),
                },
            },
            Op::List => {
                let mut all: Vec<ContainerState> =
                    self.containers.values().map(Container::state).collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                Response {
                    containers: Some(all),
                    ..Response::ok()
                }
            }
            Op::State { id } => match self.containers.get(&id) {
                Some(c) => Response {
                    state: Some(c.state()),
                    ..Response::ok()
                },
                None => Response::err(format!("container {id} not found")),
            },
            Op::Pause { id } => match self.containers.get(&id) {
                None => Response::err(format!("container {id} not found")),
                Some(c) if c.status != Status::Running => {
                    Response::err(format!("container {id} is not running"))
                }
                Some(c) => match (self.cgroups.as_deref(), c.cgroup.as_deref()) {
                    (Some(cg), Some(path)) => match cg.freeze(path) {
                        Ok(()) => Response::ok(),
                        Err(e) => Response::err(crate::error_chain(&e)),
                    },
                    _ => Response::err(format!("container {id} has no cgroup")),
                },
            },
            Op::Remove { id } => match self.containers.get(&id) {
                None => Response::ok(),
                Some(c) if c.status == Status::Running => {
                    Response::err(format!("container {id} is running; stop it first"))
                }
                Some(_) => {
                    if let Some(mut c) = self.containers.remove(&id) {
                        if c.status == Status::Created {
                            let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
                        }
                        release_cgroup(self.cgroups.as_deref(), &mut c);
                        let _ = std::fs::remove_dir_all(&c.dir);
                    }
                    Response::ok()
                }
            },
            Op::Shutdown => {
                self.shutting_down = true;
                for c in self.containers.values() {
                    if c.status != Status::Exited {
                        let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
                    }
                }
                Response::ok()
            }
            Op::Exec { .. }
            | Op::ExecEvery { .. }
            | Op::HttpEvery { .. }
            | Op::DialEvery { .. }
            | Op::Watch { .. } => Response::err("handled above"),
        })
    }

    /// Takes an `execEvery`, `httpEvery` or `dialEvery` subscription: its
    /// first run is due at its first tick.
    fn repeat(&mut self, client: &Rc<UnixStream>, what: Repeated, every: Every) -> Response {
        match &what {
            Repeated::Exec { id, args, .. } => {
                match self.containers.get(id) {
                    None => return Response::err(format!("container {id} not found")),
                    Some(c) if c.status != Status::Running => {
                        return Response::err(format!("container {id} is not running"))
                    }
                    Some(_) => {}
                }
                if args.is_empty() {
                    return Response::err("no command given (empty args)");
                }
            }
            Repeated::Http(get) if get.https => {
                return Response::err("HTTPS attempts are made by the daemon, not the shim")
            }
            Repeated::Http(_) | Repeated::Dial(_) => {}
        }
        if self.repeats.len() >= MAX_REPEATS {
            return Response::err(format!(
                "{TOO_MANY_REPEATS} in this pod (at most {MAX_REPEATS})"
            ));
        }
        self.serial += 1;
        let period = std::time::Duration::from_millis(every.period_ms);
        let first = crate::time::monotonic_to_instant(every.first_at);
        self.repeats.push(Repeating {
            serial: self.serial,
            client: Rc::clone(client),
            what,
            timeout_ms: every.timeout_ms,
            schedule: Schedule::new(first, period),
            reporter: Reporter::new(every.quiet_after, super::repeat::batch(period)),
            running: false,
        });
        Response::ok()
    }

    /// Starts the runs whose tick has come and that are not running.
    fn run_due_repeats(&mut self) {
        let now = std::time::Instant::now();
        let mut repeats = std::mem::take(&mut self.repeats);
        for r in &mut repeats {
            if r.running || !r.schedule.take(now) {
                continue;
            }
            let timeout = std::time::Duration::from_millis(r.timeout_ms);
            let (repeat, serial) = (r.serial, self.serial + 1);
            let mut attempt = match &r.what {
                Repeated::Exec {
                    id,
                    args,
                    max_output,
                } => {
                    let owner = ExecOwner::Repeat(r.serial);
                    let refused = self.exec(id, args, r.timeout_ms, *max_output, owner).err();
                    r.ran(refused);
                    continue;
                }
                Repeated::Http(get) => {
                    PendingAttempt::http(repeat, serial, get.clone(), now, timeout)
                }
                Repeated::Dial(addr) => PendingAttempt::dial(repeat, serial, *addr, now, timeout),
            };
            self.serial = serial;
            match attempt.advance(&self.readiness, now) {
                None => {
                    self.attempts.push(attempt);
                    r.running = true;
                }
                // Over at once (connected, or could not connect).
                Some(made) => r.report(Run::of_http(made, now.elapsed())),
            }
        }
        // Neither `exec` nor an attempt takes a subscription: nothing was
        // added meanwhile.
        self.repeats = repeats;
    }

    /// A run of repeated exec `serial` ended (it may have been dropped).
    fn repeat_ran(&mut self, serial: u64, run: Run) {
        if let Some(r) = self.repeats.iter_mut().find(|r| r.serial == serial) {
            r.running = false;
            r.report(run);
        }
    }

    fn exec(
        &mut self,
        id: &str,
        args: &[String],
        timeout_ms: u64,
        max_output: usize,
        owner: ExecOwner,
    ) -> Result<(), Refused> {
        let cgroups = self.cgroups.as_deref();
        let c = self
            .containers
            .get_mut(id)
            .ok_or_else(|| Refused::Other(format!("container {id} not found")))?;
        if c.status != Status::Running {
            return Err(Refused::Other(format!("container {id} is not running")));
        }
        let ctx = match &mut c.exec {
            Some(ctx) => ctx,
            None => c.exec.insert(
                super::exec::ExecContext::open(c.pid, &c.spec, cgroups)
                    .map_err(|e| Refused::Other(crate::error_chain(&e)))?,
            ),
        };
        // A command joining a frozen cgroup would freeze before its exec,
        // and the shim waits for that exec (runc refuses too).
        if ctx.paused().unwrap_or(false) {
            return Err(Refused::Paused(format!(
                "cannot exec in a paused container: {id}"
            )));
        }
        let began = std::time::Instant::now();
        let other = |what: &str| {
            let what = what.to_string();
            move |e: nix::errno::Errno| Refused::Other(format!("{what}: {e}"))
        };
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(other("create pipe"))?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(other("create pipe"))?;
        for fd in [&out_r, &err_r] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(other("nonblocking pipe"))?;
        }
        self.serial += 1;
        let serial = self.serial;
        let watch = |fd, i| {
            self.readiness
                .watch(fd, Token::Exec(serial, i))
                .map_err(|e| Refused::Other(format!("watch the exec's output: {e}")))
        };
        let (out_r, err_r) = (watch(out_r, 0)?, watch(err_r, 1)?);
        let spawner = match &mut self.spawner {
            Some(s) => s,
            None => {
                let proof =
                    crate::sys::single_threaded().map_err(|e| Refused::Other(e.to_string()))?;
                let spawner = crate::sys::spawn::Spawner::new(proof)
                    .map_err(|e| Refused::Other(format!("prepare execs: {e}")))?;
                self.spawner.insert(spawner)
            }
        };
        let started = ctx
            .spawn(spawner, args, out_w.as_fd(), err_w.as_fd())
            .map_err(|e| Refused::Other(crate::error_chain(&e)))?;
        drop((out_w, err_w));
        // A program that could not be run: containerd's message, as the
        // process would have written it.
        let stderr = started
            .failed
            .map(|msg| format!("{msg}\n").into_bytes())
            .unwrap_or_default();
        self.execs.push(PendingExec {
            owner,
            started: began,
            serial,
            pid: started.pid,
            pipes: vec![(Some(out_r), Vec::new()), (Some(err_r), stderr)],
            max: max_output,
            truncated: false,
            deadline: std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms),
            timed_out: false,
        });
        Ok(())
    }

    fn create(
        &mut self,
        id: &str,
        bundle: &Path,
        log_dir: &Path,
        restart_count: u32,
        max_size: u64,
        max_files: u32,
    ) -> Result<Response, ShimError> {
        if self
            .containers
            .get(id)
            .is_some_and(|c| c.status != Status::Exited)
        {
            return Ok(Response::err(format!("container {id} already exists")));
        }
        let text =
            std::fs::read_to_string(bundle.join("config.json")).map_err(err("read config.json"))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_str(&text).map_err(|e| ShimError {
            action: "parse config.json".into(),
            source: std::io::Error::other(e),
        })?;
        let wanted = cgroup::of_spec(&spec);
        let cgroup = wanted.as_ref().map(|(p, _)| p.clone());
        if let Some((path, res)) = &wanted {
            let Some(cg) = self.cgroups.as_deref() else {
                return Ok(Response::err(format!(
                    "cgroup {path} requested, but this host has no usable cgroup filesystem"
                )));
            };
            // A leftover of an earlier attempt with the same id goes first.
            let created = cg.remove(path).and_then(|()| cg.create(path, res));
            if let Err(e) = created {
                let _ = cg.remove(path);
                return Ok(Response::err(crate::error_chain(&e)));
            }
        }
        let dir = self.state_dir.join("containers").join(id);
        std::fs::create_dir_all(&dir).map_err(err("create container state directory"))?;
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let log = LogWriter::open(
            log_dir,
            restart_count,
            max_size,
            usize::try_from(max_files).unwrap_or(5),
        )
        .map_err(|e| ShimError {
            action: e.to_string(),
            source: e.source,
        })?;
        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err("create stdout pipe"))?;
        let (err_r, err_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err("create stderr pipe"))?;
        let (gate_r, gate_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(err("create start pipe"))?;
        for fd in [&out_r, &err_r] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(err("nonblocking pipe"))?;
        }
        self.serial += 1;
        let serial = self.serial;
        let out_r = self
            .readiness
            .watch(out_r, Token::Output(serial, 0))
            .map_err(err("watch stdout pipe"))?;
        let err_r = self
            .readiness
            .watch(err_r, Token::Output(serial, 1))
            .map_err(err("watch stderr pipe"))?;
        let spawned = match container::spawn(
            bundle,
            &spec,
            ChildIo {
                stdout: out_w,
                stderr: err_w,
                start: gate_r,
            },
            self.cgroups.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                if let (Some(cg), Some(path)) = (self.cgroups.as_deref(), &cgroup) {
                    let _ = cg.remove(path);
                }
                return Ok(Response::err(crate::error_chain(&e)));
            }
        };
        let c = Container {
            serial,
            spec,
            termination: None,
            id: id.to_string(),
            pid: spawned.pid,
            status: Status::Created,
            started_at: None,
            exit: None,
            gate: Some(gate_w),
            errors: Some(spawned.errors),
            exec: None,
            kill_at: None,
            outputs: vec![
                Output {
                    fd: out_r,
                    stream: Stream::Stdout,
                    splitter: LineSplitter::default(),
                    eof: false,
                },
                Output {
                    fd: err_r,
                    stream: Stream::Stderr,
                    splitter: LineSplitter::default(),
                    eof: false,
                },
            ],
            log,
            dir,
            cgroup,
        };
        let resp = Response {
            state: Some(c.state()),
            ..Response::ok()
        };
        self.containers.insert(id.to_string(), c);
        Ok(resp)
    }

    fn start(&mut self, id: &str) -> Response {
        let Some(c) = self.containers.get_mut(id) else {
            return Response::err(format!("container {id} not found"));
        };
        // Its setup failed before we got here: report it as the start error.
        if c.status == Status::Exited && c.started_at.is_none() {
            if let Some(e) = &c.exit {
                return Response {
                    error: Some(e.message.clone()),
                    state: Some(c.state()),
                    ..Response::err("")
                };
            }
        }
        if c.status != Status::Created {
            return Response::err(format!("container {id} is {:?}, not created", c.status));
        }
        let now = crate::time::rfc3339_nano(SystemTime::now());
        if let Some(g) = c.gate.take() {
            let _ = nix::unistd::write(&g, b"s");
        }
        // Blocks only until exec (EOF: success) or a start error.
        let mut msg = String::new();
        if let Some(e) = c.errors.take() {
            let _ = std::fs::File::from(e).read_to_string(&mut msg);
        }
        c.started_at = Some(now);
        if !msg.is_empty() {
            // containerd records a start failure as exit 128, reason StartError.
            let rec = ExitRecord {
                version: RECORD_VERSION.into(),
                exit_code: 128,
                signal: None,
                started_at: c.started_at.clone().unwrap_or_default(),
                finished_at: crate::time::rfc3339_nano(SystemTime::now()),
                oom_killed: false,
                message: msg.clone(),
            };
            let _ = rec.save(&c.dir.join("exit.json"));
            c.exit = Some(rec);
            c.status = Status::Exited;
            return Response {
                error: Some(msg),
                state: Some(c.state()),
                ..Response::err("")
            };
        }
        c.status = Status::Running;
        // It may already have exited; the signalfd tells us on the next turn.
        Response {
            state: Some(c.state()),
            ..Response::ok()
        }
    }
}

/// Reads whether the OOM killer struck in `c`'s cgroup, then removes the
/// cgroup with anything left in it. True when there was an OOM kill.
fn release_cgroup(cgroups: Option<&dyn Cgroups>, c: &mut Container) -> bool {
    let (Some(cg), Some(path)) = (cgroups, c.cgroup.take()) else {
        return false;
    };
    let oom = cg.stats(&path).is_ok_and(|s| s.oom_kills > 0);
    if let Err(e) = cg.remove(&path) {
        tracing::error!(container = %c.id, error = %crate::error_chain(&e), "cannot remove cgroup");
    }
    oom
}

/// Sends runs of a repeated exec or attempt.
fn send_runs(s: &UnixStream, runs: Vec<Run>) {
    send(
        s,
        &Response {
            runs: Some(runs),
            ..Response::ok()
        },
    );
}

/// Writes an answer whole: at once when the socket has room (the usual
/// case: answers are small), else waiting for it.
fn send(mut s: &UnixStream, resp: &Response) {
    let mut out = serde_json::to_vec(resp).unwrap_or_default();
    out.push(b'\n');
    let mut rest = &out[..];
    while !rest.is_empty() {
        match s.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(rest);
                let _ = s.set_nonblocking(true);
                return;
            }
            Err(_) => return,
        }
    }
}

/// A sealed in-memory copy of the nodelet binary (CVE-2019-5736): shims
/// run from it, and so do their exec helpers and the containers' inits
/// until they exec, so `/proc/<pid>/exe` of anything that enters a
/// container is a memfd no one can write (`F_SEAL_WRITE`), never the
/// binary on the host. Made once per process, on the first shim start;
/// its pages are shared by every shim. Sandboxes start in parallel: the
/// first caller makes the copy while the others wait for it (each making
/// its own, as a bare `OnceLock` would let them, held one binary's size of
/// memory per concurrent start — 100 pods applied at once under a debug
/// build peaked at 5.6 GiB of shared memory).
fn sealed_copy(nodelet: &Path) -> Result<PathBuf, ShimError> {
    static SEALED: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);
    let mut sealed = SEALED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if sealed.is_none() {
        *sealed = Some(seal(nodelet)?);
    }
    let fd = sealed.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
}

/// A memfd holding a copy of `nodelet`, sealed against any change.
fn seal(nodelet: &Path) -> Result<OwnedFd, ShimError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(
        c"nodelet",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(err("create memfd for the sealed binary"))?;
    let mut src = std::fs::File::open(nodelet).map_err(err("open the nodelet binary"))?;
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(err("copy the nodelet binary"))?;
    let fd = OwnedFd::from(dst);
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )
    .map_err(err("seal the binary copy"))?;
    Ok(fd)
}

/// Starts `nodelet shim` for a pod, detached, and waits until it serves.
pub fn launch(nodelet: &Path, state_dir: &Path, hostname: &str) -> Result<i32, ShimError> {
    std::fs::create_dir_all(state_dir).map_err(err("create state directory"))?;
    let log = std::fs::File::create(state_dir.join("shim.log")).map_err(err("create shim log"))?;
    let mut child = std::process::Command::new(sealed_copy(nodelet)?)
        .arg0(nodelet)
        .args(["shim", "--state-dir"])
        .arg(state_dir)
        .args(["--hostname", hostname])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(err("start shim"))?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.wait();
        let log = std::fs::read_to_string(state_dir.join("shim.log")).unwrap_or_default();
        return Err(ShimError {
            action: format!("shim did not start: {}", log.trim()),
            source: std::io::Error::other("not ready"),
        });
    }
    // The daemon raised its own fd limit; the shim, and so the containers
    // and execs it starts, keep the one it was started with. Set before
    // the first request (no container exists yet).
    if let Some(limit) = crate::sys::nofile_at_start() {
        if let Err(e) = crate::sys::set_nofile_of(pid, limit) {
            tracing::warn!(error = %e, "cannot give the shim its RLIMIT_NOFILE back");
        }
    }
    // The shim lives on after us: it is in its own session and will be
    // reparented; std's Child does not kill on drop.
    drop(child);
    Ok(pid)
}

/// A blocking client, for tests and tools; the daemon has an async one.
pub fn call(state_dir: &Path, op: Op) -> Result<Response, ShimError> {
    let mut s = UnixStream::connect(state_dir.join(SOCKET_NAME)).map_err(err("connect to shim"))?;
    let mut req = serde_json::to_vec(&Request {
        v: PROTOCOL_VERSION,
        op,
    })
    .unwrap_or_default();
    req.push(b'\n');
    s.write_all(&req).map_err(err("send request"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(err("read response"))?;
    serde_json::from_str(&line).map_err(|e| ShimError {
        action: "decode response".into(),
        source: std::io::Error::other(e),
    })
}
