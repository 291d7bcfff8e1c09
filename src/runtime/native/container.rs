//! Running one container from an OCI runtime spec, in this single-threaded
//! process: fork into new namespaces, build the rootfs (overlay or bind),
//! mount /proc, /dev, /sys, pivot_root, mask paths, drop to the user and
//! capabilities, exec. A failure before exec reaches the parent through a
//! close-on-exec pipe, so "executable not found" is a start error, not an
//! exit code.
//!
//! ```text
//! parent (stays in host namespaces)
//!   unshare(PID)        ─ only the next child enters the new PID namespace
//!   fork ─► child = PID 1 of the container
//!             unshare(mount, uts, ipc, net); lo up; mount rootfs
//!             /proc /dev /dev/pts /dev/shm /dev/mqueue /sys, binds
//!             pivot_root; masked + read-only paths; hostname
//!             rlimits, umask, groups/gid/uid, capabilities, no_new_privs
//!             chdir(cwd); fds ≥ 3 close-on-exec; execve
//!   read error pipe: EOF = exec happened; else the start error
//!   waitpid → exit code (signal n → 128 + n)
//! ```

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, execve, pivot_root, sethostname, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::Spec;

use super::super::cgroup::Cgroups;
use super::super::plan::{ANNOTATION_LOWER, ANNOTATION_UPPER, ANNOTATION_WORK};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    Start(String),
    #[error("{action}")]
    Setup {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

fn setup(action: impl Into<String>) -> impl FnOnce(nix::Error) -> ContainerError {
    let action = action.into();
    move |e| ContainerError::Setup {
        action,
        source: e.into(),
    }
}

/// How the container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub signal: Option<i32>,
}

/// Forks this single-threaded process.
fn fork() -> Result<nix::unistd::ForkResult, ContainerError> {
    sys::fork_single_threaded().map_err(|source| ContainerError::Setup {
        action: "fork".into(),
        source,
    })
}

/// Runs the container of `spec` (bundle at `bundle`) to completion.
/// Must be called from a single-threaded process. With `cgroups`, the
/// container runs in the spec's `linux.cgroupsPath` (created by the caller).
pub fn run(
    bundle: &Path,
    spec: &Spec,
    cgroups: Option<&dyn Cgroups>,
) -> Result<Exit, ContainerError> {
    let seccomp = seccomp_program(spec)?;
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("create error pipe"))?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(setup("unshare PID namespace"))?;
    match fork()? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let err = match enter_cgroup(spec, cgroups, 0).and_then(|()| oom_score_adj(spec)) {
                Ok(()) => child(bundle, spec, None, seccomp.as_deref()),
                Err(e) => e.to_string(),
            };
            let mut f = File::from(wr);
            let _ = f.write_all(err.as_bytes());
            // Exit without running atexit handlers or destructors of the parent's state.
            std::process::exit(127);
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            let _ = File::from(rd).read_to_string(&mut msg);
            let status = waitpid(child, None).map_err(setup("wait for container"))?;
            if !msg.is_empty() {
                return Err(ContainerError::Start(msg));
            }
            Ok(match status {
                WaitStatus::Exited(_, code) => Exit { code, signal: None },
                WaitStatus::Signaled(_, sig, _) => Exit {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                },
                other => Exit {
                    code: 128,
                    signal: None,
                }
                .with_unexpected(other),
            })
        }
    }
}

/// A created container: its init, waiting on the start gate.
pub struct Spawned {
    /// PID of the container's init, as seen from the caller.
    pub pid: nix::unistd::Pid,
    /// Readable end of the error pipe: EOF once exec succeeded, else the
    /// start error.
    pub errors: OwnedFd,
}

/// Creates the container of `spec` as a grandchild of this single-threaded
/// process (an intermediate process enters a new PID namespace so that the
/// container's init is PID 1 of its own), and returns once it waits for
/// the start gate. The caller reaps it (be a child subreaper).
pub fn spawn(
    bundle: &Path,
    spec: &Spec,
    io: ChildIo,
    cgroups: Option<&dyn Cgroups>,
) -> Result<Spawned, ContainerError> {
    // Compiled here, before the forks: the child only installs it.
    let seccomp = seccomp_program(spec)?;
    let (err_rd, err_wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("create error pipe"))?;
    let (pid_rd, pid_wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("create pid pipe"))?;
    match fork()? {
        nix::unistd::ForkResult::Child => {
            drop(err_rd);
            drop(pid_rd);
            let outcome = (|| -> Result<(), ContainerError> {
                oom_score_adj(spec)?;
                unshare(CloneFlags::CLONE_NEWPID).map_err(setup("unshare PID namespace"))?;
                match fork()? {
                    nix::unistd::ForkResult::Child => {
                        drop(pid_wr);
                        let msg = child(bundle, spec, Some(io), seccomp.as_deref());
                        let _ = nix::unistd::write(&err_wr, msg.as_bytes());
                        std::process::exit(127);
                    }
                    nix::unistd::ForkResult::Parent { child } => {
                        // The init joins its cgroup while it sets itself up
                        // (the first move after a while waits for an RCU
                        // grace period, milliseconds); it cannot exec
                        // before the start gate opens, which is after this.
                        if let Err(e) = enter_cgroup(spec, cgroups, child.as_raw()) {
                            let _ =
                                nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                            return Err(e);
                        }
                        let _ = File::from(pid_wr).write_all(child.as_raw().to_string().as_bytes());
                        Ok(())
                    }
                }
            })();
            if let Err(e) = outcome {
                let _ = nix::unistd::write(&err_wr, e.to_string().as_bytes());
            }
            // The intermediate's job is done; the init is reparented to the subreaper.
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(err_wr);
            drop(pid_wr);
            drop(io);
            let mut pid = String::new();
            let _ = File::from(pid_rd).read_to_string(&mut pid);
            let _ = waitpid(child, None);
            match pid.trim().parse::<i32>() {
                Ok(p) => Ok(Spawned {
                    pid: nix::unistd::Pid::from_raw(p),
                    errors: err_rd,
                }),
                Err(_) => {
                    let mut msg = String::new();
                    let _ = File::from(err_rd).read_to_string(&mut msg);
                    Err(ContainerError::Start(if msg.is_empty() {
                        "container init was not created".into()
                    } else {
                        msg
                    }))
                }
            }
        }
    }
}

impl Exit {
    /// From a wait status: exit code, or 128 + signal.
    pub fn from_status(status: WaitStatus) -> Option<Exit> {
        match status {
            WaitStatus::Exited(_, code) => Some(Exit { code, signal: None }),
            WaitStatus::Signaled(_, sig, _) => Some(Exit {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
            }),
            _ => None,
        }
    }

    fn with_unexpected(self, status: WaitStatus) -> Exit {
        tracing::warn!(?status, "unexpected wait status");
        self
    }
}

/// The container's stdio and start gate when a shim runs it: stdout and
/// stderr go to the shim's pipes, and exec waits for a byte on `start`
/// (create/start are separate steps, as with runc).
pub struct ChildIo {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub start: OwnedFd,
}

/// The compiled program of the spec's `linux.seccomp`, if any.
pub(super) fn seccomp_program(spec: &Spec) -> Result<Option<std::sync::Arc<[u8]>>, ContainerError> {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let json = serde_json::to_value(profile)
        .map_err(|e| ContainerError::Start(format!("encode the spec's seccomp profile: {e}")))?;
    crate::runtime::seccomp::compile(&json)
        .map(Some)
        .map_err(|e| ContainerError::Start(crate::error_chain(&e)))
}

fn install_seccomp(program: &[u8]) -> Result<(), ContainerError> {
    sys::bpf::seccomp_install(program).map_err(|source| ContainerError::Setup {
        action: "install the seccomp filter".into(),
        source,
    })
}

/// Everything between fork and exec; returns the message for the parent.
fn child(bundle: &Path, spec: &Spec, io: Option<ChildIo>, seccomp: Option<&[u8]>) -> String {
    match child_setup(bundle, spec, io, seccomp) {
        Ok(never) => match never {},
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    }
}

enum Never {}

/// Moves process `pid` (0: the caller, whose children inherit it) into the
/// spec's `linux.cgroupsPath`, as runc does before the init runs.
fn enter_cgroup(
    spec: &Spec,
    cgroups: Option<&dyn Cgroups>,
    pid: i32,
) -> Result<(), ContainerError> {
    let Some((path, cg)) = spec_cgroup(spec, cgroups)? else {
        return Ok(());
    };
    cg.join(&path, pid).map_err(|e| ContainerError::Setup {
        action: "join cgroup".into(),
        source: std::io::Error::other(crate::error_chain(&e)),
    })
}

/// The spec's `linux.cgroupsPath` with the backend that reaches it; none
/// when the spec names no cgroup, an error when it does but there is no
/// cgroup filesystem.
pub(super) fn spec_cgroup<'c>(
    spec: &Spec,
    cgroups: Option<&'c dyn Cgroups>,
) -> Result<Option<(String, &'c dyn Cgroups)>, ContainerError> {
    match (super::super::cgroup::of_spec(spec), cgroups) {
        (Some((path, _)), Some(cg)) => Ok(Some((path, cg))),
        (Some((path, _)), None) => Err(ContainerError::Start(format!(
            "the spec asks for cgroup {path} but no cgroup filesystem is available"
        ))),
        (None, _) => Ok(None),
    }
}

/// Writes the spec's `process.oomScoreAdj`. Lowering the score needs
/// CAP_SYS_RESOURCE; without it the inherited score stays (nodelet warns
/// about this once at start-up, see `runtime::native::oom`).
fn oom_score_adj(spec: &Spec) -> Result<(), ContainerError> {
    let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else {
        return Ok(());
    };
    match std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
        Err(source) => Err(ContainerError::Setup {
            action: format!("set oom_score_adj {adj}"),
            source,
        }),
    }
}

/// The namespaces of the spec other than PID (which the parent creates):
/// a pod's containers share the shim's network, IPC and UTS namespaces, so
/// their plan lists only mount (and PID).
fn spec_namespaces(spec: &Spec) -> CloneFlags {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let mut flags = CloneFlags::CLONE_NEWNS;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        flags |= match ns.typ() {
            T::Uts => CloneFlags::CLONE_NEWUTS,
            T::Ipc => CloneFlags::CLONE_NEWIPC,
            T::Network => CloneFlags::CLONE_NEWNET,
            _ => CloneFlags::empty(),
        };
    }
    flags
}

fn child_setup(
    bundle: &Path,
    spec: &Spec,
    io: Option<ChildIo>,
    seccomp: Option<&[u8]>,
) -> Result<Never, ContainerError> {
    nix::unistd::setsid().map_err(setup("setsid"))?;
    let namespaces = spec_namespaces(spec);
    unshare(namespaces).map_err(setup("unshare namespaces"))?;
    // Nothing mounted from here on propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(setup("make / rprivate"))?;
    if namespaces.contains(CloneFlags::CLONE_NEWNET) {
        sys::loopback_up().map_err(|source| ContainerError::Setup {
            action: "bring up loopback".into(),
            source,
        })?;
    }

    let root = rootfs(bundle, spec)?;
    let root_fd = nix::fcntl::open(
        &root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(setup("open rootfs"))?;
    for m in spec.mounts().iter().flatten() {
        mount_one(&root_fd, m)?;
    }
    dev_nodes(&root_fd)?;
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        device_node(&root_fd, d)?;
    }

    chdir(&root).map_err(setup("chdir to rootfs"))?;
    pivot_root(".", ".").map_err(setup("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(setup("detach old root"))?;
    chdir("/").map_err(setup("chdir to /"))?;

    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            mask(p)?;
        }
        for p in linux.readonly_paths().iter().flatten() {
            readonly(p)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(setup("remount rootfs read-only"))?;
    }
    // In a pod the UTS namespace is the shim's: its hostname is the pod's.
    if let Some(h) = spec
        .hostname()
        .as_ref()
        .filter(|_| namespaces.contains(CloneFlags::CLONE_NEWUTS))
    {
        sethostname(h).map_err(setup("set hostname"))?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::Start("spec has no process".into()))?;
    if let Some((soft, hard)) = nofile_limit(process)? {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
            .map_err(setup("set RLIMIT_NOFILE"))?;
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(
        process.user().umask().unwrap_or(0o022),
    ));
    // runc's order: without no_new_privs, installing a filter needs
    // CAP_SYS_ADMIN, so it goes in before the capabilities are dropped;
    // with it, as late as possible (after the start gate), so the filter
    // has to allow as little of our own setup as can be.
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if let Some(program) = seccomp.filter(|_| !no_new_privs) {
        install_seccomp(program)?;
    }
    become_user(process)?;
    let cwd = process.cwd();
    chdir(cwd).map_err(|e| {
        ContainerError::Start(format!(
            "chdir to cwd ({:?}) set in config.json failed: {}",
            cwd.display().to_string(),
            e.desc()
        ))
    })?;
    let exec = prepare_exec(
        process.env().as_deref().unwrap_or_default(),
        process.args().as_deref().unwrap_or_default(),
    )?;
    let gate = match io {
        Some(io) => {
            let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, Mode::empty())
                .map_err(setup("open /dev/null"))?;
            nix::unistd::dup2_stdin(&null).map_err(setup("redirect stdin"))?;
            nix::unistd::dup2_stdout(&io.stdout).map_err(setup("redirect stdout"))?;
            nix::unistd::dup2_stderr(&io.stderr).map_err(setup("redirect stderr"))?;
            Some(io.start)
        }
        None => None,
    };
    if let Some(gate) = gate {
        // Created: wait for start. EOF means the shim gave up on us.
        let mut b = [0u8; 1];
        if nix::unistd::read(&gate, &mut b).unwrap_or(0) == 0 {
            return Err(ContainerError::Start(
                "container was not started (start gate closed)".into(),
            ));
        }
    }
    if let Some(program) = seccomp.filter(|_| no_new_privs) {
        install_seccomp(program)?;
    }
    if let Err(source) = sys::spawn::default_signals() {
        return Err(ContainerError::Setup {
            action: "reset signals".into(),
            source,
        });
    }
    Err(exec_now(&exec))
}

/// The process's `RLIMIT_NOFILE` as (soft, hard), if it sets one. Raising
/// the hard limit needs CAP_SYS_RESOURCE, which a nodelet inside a
/// container may lack: never ask for more than we have.
pub(super) fn nofile_limit(
    process: &oci_spec::runtime::Process,
) -> Result<Option<(u64, u64)>, ContainerError> {
    let Some(r) = process
        .rlimits()
        .iter()
        .flatten()
        .find(|r| r.typ() == oci_spec::runtime::PosixRlimitType::RlimitNofile)
    else {
        return Ok(None);
    };
    let (_, hard_now) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(setup("get RLIMIT_NOFILE"))?;
    let can_raise = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    let hard = if can_raise {
        r.hard()
    } else {
        r.hard().min(hard_now)
    };
    Ok(Some((r.soft().min(hard), hard)))
}

/// A command resolved and encoded, ready for execve.
struct Exec {
    arg0: String,
    prog: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

/// Resolves `args[0]` in the container's PATH and encodes the call.
fn prepare_exec(env: &[String], args: &[String]) -> Result<Exec, ContainerError> {
    let arg0 = args
        .first()
        .ok_or_else(|| ContainerError::Start("no command given (empty args)".into()))?;
    let path = lookup(arg0, env)?;
    Ok(Exec {
        arg0: arg0.clone(),
        prog: CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| ContainerError::Start("NUL in path".into()))?,
        argv: args
            .iter()
            .filter_map(|a| CString::new(a.as_str()).ok())
            .collect(),
        env: env
            .iter()
            .filter_map(|e| CString::new(e.as_str()).ok())
            .collect(),
    })
}

/// Marks fds ≥ 3 close-on-exec and execs; returns only on failure.
fn exec_now(e: &Exec) -> ContainerError {
    if let Err(source) = sys::cloexec_from(3) {
        return ContainerError::Setup {
            action: "mark fds close-on-exec".into(),
            source,
        };
    }
    match execve(&e.prog, &e.argv, &e.env) {
        Ok(never) => match never {},
        Err(err) => ContainerError::Start(format!("exec: {:?}: {}", e.arg0, err.desc())),
    }
}

/// The root: an overlay of the image snapshots (described in annotations)
/// mounted at `<bundle>/rootfs`, or `root.path` bind-mounted onto itself so
/// that pivot_root has a mount point.
fn rootfs(bundle: &Path, spec: &Spec) -> Result<PathBuf, ContainerError> {
    let root_path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let root = if root_path.is_absolute() {
        root_path
    } else {
        bundle.join(root_path)
    };
    let ann = spec.annotations().clone().unwrap_or_default();
    match (
        ann.get(ANNOTATION_LOWER),
        ann.get(ANNOTATION_UPPER),
        ann.get(ANNOTATION_WORK),
    ) {
        (Some(lower), Some(upper), Some(work)) => {
            std::fs::create_dir_all(&root).map_err(|source| ContainerError::Setup {
                action: "create rootfs mount point".into(),
                source,
            })?;
            let data = format!("lowerdir={lower},upperdir={upper},workdir={work}");
            mount(
                Some("overlay"),
                &root,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(setup("mount overlay rootfs"))?;
        }
        _ => {
            mount(
                Some(&root),
                &root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(setup("bind rootfs"))?;
        }
    }
    Ok(root)
}

/// Opens `dest` inside the rootfs with symlinks resolved *inside* it
/// (RESOLVE_IN_ROOT), creating missing directories (or an empty file when
/// `file`), so a mount can never land outside (CVE-2021-30465).
fn resolve_in_root(root: &OwnedFd, dest: &str, file: bool) -> Result<OwnedFd, ContainerError> {
    resolve_in_root_depth(root, dest, file, 0)
}

/// Symlinks followed while creating mount points, as the kernel's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

fn resolve_in_root_depth(
    root: &OwnedFd,
    dest: &str,
    file: bool,
    depth: usize,
) -> Result<OwnedFd, ContainerError> {
    if depth > MAX_SYMLINKS {
        return Err(ContainerError::Start(format!(
            "mount point {dest}: too many levels of symbolic links"
        )));
    }
    let rel = dest.trim_start_matches('/');
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    if rel.is_empty() {
        return openat2(root, ".", how()).map_err(setup(format!("open {dest} in rootfs")));
    }
    if let Ok(fd) = openat2(root, rel, how()) {
        return Ok(fd);
    }
    let mut cur = openat2(root, ".", how()).map_err(setup("open rootfs"))?;
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        // Resolve the prefix again from the root each step so symlinks stay inside.
        let prefix = comps[..=i].join("/");
        match openat2(root, prefix.as_str(), how()) {
            Ok(fd) => cur = fd,
            Err(nix::errno::Errno::ENOENT) => {
                // A dangling symlink: create what it points at, inside the
                // root (securejoin's MkdirAll semantics), and go on from there.
                if let Ok(target) = nix::fcntl::readlinkat(&cur, *c) {
                    let target = target.to_string_lossy().into_owned();
                    let parent = comps[..i].join("/");
                    let base = if target.starts_with('/') {
                        target
                    } else {
                        format!("{parent}/{target}")
                    };
                    let rest = comps[i + 1..].join("/");
                    let next = if rest.is_empty() {
                        base
                    } else {
                        format!("{base}/{rest}")
                    };
                    return resolve_in_root_depth(root, &next, file, depth + 1);
                }
                if last && file {
                    let f = nix::fcntl::openat(
                        &cur,
                        *c,
                        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(setup(format!("create mount point {dest}")))?;
                    drop(f);
                } else {
                    nix::sys::stat::mkdirat(&cur, *c, Mode::from_bits_truncate(0o755))
                        .map_err(setup(format!("create mount point {dest}")))?;
                }
                cur = openat2(root, prefix.as_str(), how())
                    .map_err(setup(format!("open mount point {dest}")))?;
            }
            Err(e) => return Err(setup(format!("open mount point {dest}"))(e)),
        }
    }
    Ok(cur)
}

fn proc_fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_one(root: &OwnedFd, m: &oci_spec::runtime::Mount) -> Result<(), ContainerError> {
    let dest = m.destination().display().to_string();
    let typ = m.typ().clone().unwrap_or_default();
    let opts = m.options().clone().unwrap_or_default();
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut readonly = false;
    let mut propagation = MsFlags::MS_PRIVATE;
    for o in &opts {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "rprivate" | "private" => propagation = MsFlags::MS_PRIVATE,
            "rslave" | "slave" => propagation = MsFlags::MS_SLAVE,
            "rshared" | "shared" => propagation = MsFlags::MS_SHARED,
            other => data.push(other.to_string()),
        }
    }
    let source = m.source().clone().unwrap_or_default();
    let is_bind = flags.contains(MsFlags::MS_BIND);
    let file_target = is_bind
        && std::fs::metadata(&source)
            .map(|md| !md.is_dir())
            .unwrap_or(false);
    if is_bind && !source.exists() {
        return Err(ContainerError::Start(format!(
            "bind mount source {:?} does not exist",
            source.display().to_string()
        )));
    }
    let target = resolve_in_root(root, &dest, file_target)?;
    let target_path = proc_fd_path(&target);
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let fstype = (!is_bind).then_some(typ.as_str());
    let res = mount(Some(&source), target_path.as_str(), fstype, flags, data);
    if let Err(e) = res {
        // sysfs cannot be mounted without owning the network namespace's
        // sysfs view in some setups; fall back to a read-only bind.
        if typ == "sysfs" {
            mount(
                Some("/sys"),
                target_path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(setup(format!("bind /sys at {dest}")))?;
        } else {
            return Err(setup(format!("mount {typ} at {dest}"))(e));
        }
    }
    if is_bind {
        // Reopen: the fd points at the covered directory, not the new mount.
        let target = resolve_in_root(root, &dest, file_target)?;
        let target_path = proc_fd_path(&target);
        mount(
            None::<&str>,
            target_path.as_str(),
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(setup(format!("set propagation of {dest}")))?;
        if readonly {
            mount(
                None::<&str>,
                target_path.as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | flags
                        .intersection(MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
                None::<&str>,
            )
            .map_err(setup(format!("make {dest} read-only")))?;
        }
    } else if readonly {
        let target = resolve_in_root(root, &dest, false)?;
        let target_path = proc_fd_path(&target);
        mount(
            None::<&str>,
            target_path.as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            data,
        )
        .map_err(setup(format!("make {dest} read-only")))?;
    }
    Ok(())
}

/// The device nodes every container gets, bind-mounted from the host's
/// (works whatever the namespace), and the usual /dev symlinks.
fn dev_nodes(root: &OwnedFd) -> Result<(), ContainerError> {
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = format!("/dev/{name}");
        let target = resolve_in_root(root, &host, true)?;
        mount(
            Some(host.as_str()),
            proc_fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(setup(format!("bind {host}")))?;
    }
    let dev = resolve_in_root(root, "/dev", false)?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let _ = nix::unistd::symlinkat(target, &dev, link);
    }
    Ok(())
}

/// Creates the spec's device node `d` (OCI `linux.devices`) inside the
/// rootfs, its directory made if missing; a node already there (the
/// default ones) is kept.
fn device_node(root: &OwnedFd, d: &oci_spec::runtime::LinuxDevice) -> Result<(), ContainerError> {
    use nix::sys::stat::{makedev, mknodat, SFlag};
    use oci_spec::runtime::LinuxDeviceType as T;
    let path = d.path().display().to_string();
    let kind = match d.typ() {
        T::C | T::U => SFlag::S_IFCHR,
        T::B => SFlag::S_IFBLK,
        T::P => SFlag::S_IFIFO,
        T::A => {
            return Err(ContainerError::Start(format!(
                "device {path}: type a is not a node type"
            )))
        }
    };
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() => (dir, name),
        _ => {
            return Err(ContainerError::Start(format!(
                "device path {path:?} names no file"
            )))
        }
    };
    let parent = resolve_in_root(root, if dir.is_empty() { "/" } else { dir }, false)?;
    let dev = makedev(
        u64::try_from(d.major()).unwrap_or(0),
        u64::try_from(d.minor()).unwrap_or(0),
    );
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
    // An O_PATH directory fd works as mknodat's dirfd; the name has no '/'.
    let parent_path = proc_fd_path(&parent);
    match mknodat(
        nix::fcntl::AT_FDCWD,
        format!("{parent_path}/{name}").as_str(),
        kind,
        mode,
        dev,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(setup(format!("create device {path}"))(e)),
    }
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        format!("{parent_path}/{name}").as_str(),
        d.uid().map(Uid::from_raw),
        d.gid().map(Gid::from_raw),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(setup(format!("chown device {path}")))
}

/// runc's masking: /dev/null over files, an empty read-only tmpfs over dirs.
fn mask(p: &str) -> Result<(), ContainerError> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(setup(format!("mask {p}"))),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(setup(format!("mask {p}"))),
    }
}

fn readonly(p: &str) -> Result<(), ContainerError> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(setup(format!("bind {p}")))?;
    mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(setup(format!("make {p} read-only")))
}

/// Groups, gid, then uid with the planned capabilities, then
/// no_new_privs: the identity a container process (or an exec) runs with.
fn become_user(process: &oci_spec::runtime::Process) -> Result<(), ContainerError> {
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(setup("set supplementary groups"))?;
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(setup("set gid"))?;
    capabilities(process, user.uid())?;
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(setup("set no_new_privs"))?;
    }
    Ok(())
}

/// The capabilities the process keeps: its bounding set (nodelet puts
/// the same list in every set of the spec).
fn wanted_caps(process: &oci_spec::runtime::Process) -> caps::CapsHashSet {
    process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().and_then(|s| s.parse::<caps::Capability>().ok()))
        })
        .collect()
}

fn cap_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> ContainerError {
    let what = what.to_string();
    move |e| ContainerError::Setup {
        action: what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Bounding set first (needs CAP_SETPCAP), keep caps across setuid, then
/// the effective/permitted/inheritable sets of the spec.
fn capabilities(process: &oci_spec::runtime::Process, uid: u32) -> Result<(), ContainerError> {
    use caps::CapSet;
    let want = wanted_caps(process);
    for c in caps::all() {
        if !want.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(cap_err("drop bounding capability"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(setup("keep capabilities across setuid"))?;
    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
        .map_err(setup("set uid"))?;
    // Shrink in an order the kernel accepts at each step: effective ⊆
    // permitted must hold after every capset.
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())
        .map_err(cap_err("clear inheritable capabilities"))?;
    let current =
        caps::read(None, CapSet::Permitted).map_err(cap_err("read permitted capabilities"))?;
    let effective: caps::CapsHashSet = want.intersection(&current).copied().collect();
    caps::set(None, CapSet::Effective, &effective)
        .map_err(cap_err("set effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &effective)
        .map_err(cap_err("set permitted capabilities"))?;
    Ok(())
}

/// What [`become_user`] and [`capabilities`] do, encoded for a process
/// started by `sys::spawn` (same order, one capset).
pub(super) fn creds(
    process: &oci_spec::runtime::Process,
) -> Result<sys::spawn::Creds, ContainerError> {
    let user = process.user();
    let want = wanted_caps(process);
    let current = caps::read(None, caps::CapSet::Permitted)
        .map_err(cap_err("read permitted capabilities"))?;
    Ok(sys::spawn::Creds {
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        drop_bounding: caps::all()
            .into_iter()
            .filter(|c| !want.contains(c))
            .map(|c| u32::from(c.index()))
            .collect(),
        caps: want
            .intersection(&current)
            .fold(0u64, |m, c| m | (1u64 << c.index())),
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        seccomp: None,
    })
}

/// The directories of the environment's `PATH` (runc's default without
/// one); an empty entry is the working directory.
pub(super) fn path_dirs(env: &[String]) -> impl Iterator<Item = &str> {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .split(':')
        .map(|d| if d.is_empty() { "." } else { d })
}

/// `exec: "foo": executable file not found in $PATH`, as containerd says.
fn lookup(arg0: &str, env: &[String]) -> Result<PathBuf, ContainerError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match std::fs::metadata(&p) {
            Err(_) => Err(ContainerError::Start(format!(
                "exec: {arg0:?}: stat {arg0}: no such file or directory"
            ))),
            Ok(_) if !executable(&p) => Err(ContainerError::Start(format!(
                "exec: {arg0:?}: permission denied"
            ))),
            Ok(_) => Ok(p),
        };
    }
    path_dirs(env)
        .map(|d| Path::new(d).join(arg0))
        .find(|p| executable(p))
        .ok_or_else(|| {
            ContainerError::Start(format!(
                "exec: {arg0:?}: executable file not found in $PATH"
            ))
        })
}
