//! Starting a command inside a running container without copying the
//! caller's memory: posix_spawn's vfork technique, with the container
//! joined on the way.
//!
//! ```text
//! caller (single-threaded)
//!   setns(container PID namespace)      ─ for its next child only
//!   clone(CLONE_VM | CLONE_VFORK)       ─ suspended until the child execs
//!   │  └─ command: oom_score_adj, cgroup.procs, setns(mount), chroot,
//!   │     signals, process group, stdio, rlimits, user, capabilities,
//!   │     cwd, execve
//!   setns(own PID namespace)            ─ back, before anything else
//! ```
//!
//! A fork would copy the caller's page tables and fault its pages back
//! in; for an exec probe every second in every container that was most
//! of the cost. The child runs on a stack of its own inside the caller's
//! address space: it does not allocate, take a lock or unwind; everything
//! it needs is encoded before the clone (see [`Plan`]), it makes raw
//! system calls only, and it reports a failure through atomics the caller
//! reads once it is running again.
//!
//! What the child changes is its own: `oom_score_adj` (the kernel does not
//! pass a vfork child's value on to the processes sharing its memory,
//! `__set_oom_adj`), credentials and signal dispositions (no
//! `CLONE_THREAD` or `CLONE_SIGHAND`), and its root and mount namespace
//! (no `CLONE_FS`, which is also what lets it `setns` the mount namespace).

use std::ffi::{c_int, c_void, CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// User, groups and capabilities of the command.
#[derive(Debug, Clone, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Capabilities removed from the bounding set.
    pub drop_bounding: Vec<u32>,
    /// Effective and permitted sets (bit per capability); inheritable is
    /// cleared.
    pub caps: u64,
    pub no_new_privs: bool,
    /// The container's seccomp program (`struct sock_filter`s), installed
    /// as runc does for an exec: before the capabilities drop without
    /// no_new_privs, right before execve with it.
    pub seccomp: Option<std::sync::Arc<[u8]>>,
}

/// Everything the child needs, encoded by the caller.
pub struct Plan<'a> {
    /// The container's PID and mount namespaces and its root directory.
    pub pidns: BorrowedFd<'a>,
    pub mntns: BorrowedFd<'a>,
    pub root: BorrowedFd<'a>,
    /// `cgroup.procs` of each of the container's cgroups, open for writing.
    pub cgroup_procs: &'a [OwnedFd],
    /// The decimal value for `/proc/self/oom_score_adj`, if any. Refused
    /// (no CAP_SYS_RESOURCE to lower it) is not an error.
    pub oom_score_adj: Option<&'a [u8]>,
    /// `RLIMIT_NOFILE` (soft, hard), if set.
    pub nofile: Option<(u64, u64)>,
    pub creds: &'a Creds,
    pub umask: u32,
    pub cwd: &'a CStr,
    /// Candidate paths of the program, tried in order.
    pub programs: &'a [CString],
    /// The candidates come from `$PATH`: one that is not executable is
    /// passed over like a missing one (Go's `LookPath`, so containerd's
    /// "executable file not found in $PATH").
    pub path_search: bool,
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// The steps that can fail, for messages (index = step number).
const STEPS: [&str; 18] = [
    "",
    "set oom_score_adj",
    "join cgroup",
    "join PID namespace",
    "join mount namespace",
    "enter container root",
    "chroot to container root",
    "create process",
    "reset signals",
    "new process group",
    "redirect stdio",
    "set RLIMIT_NOFILE",
    "set supplementary groups",
    "set gid",
    "set capabilities",
    "set uid",
    "exec",
    "install the seccomp filter",
];
const OOM: usize = 1;
const CGROUP: usize = 2;
const PIDNS: usize = 3;
const MNTNS: usize = 4;
const ROOT: usize = 5;
const CHROOT: usize = 6;
const CLONE: usize = 7;
const SIGNALS: usize = 8;
const PGID: usize = 9;
const STDIO: usize = 10;
const NOFILE: usize = 11;
const GROUPS: usize = 12;
const GID: usize = 13;
const CAPS: usize = 14;
const UID: usize = 15;
const EXEC: usize = 16;
const SECCOMP: usize = 17;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct Failure {
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl Failure {
    /// The command was created but its `execve` failed (every candidate).
    pub fn is_exec(&self) -> bool {
        self.step == STEPS[EXEC]
    }
}

/// A started command: a child of the caller, in the container's PID
/// namespace. When `failed` is set it could not run the program and has
/// exited (127 when not found, else 126); reap it like any other.
#[derive(Debug)]
pub struct Spawned {
    pub pid: nix::unistd::Pid,
    pub failed: Option<Failure>,
}

/// Written by the child, read by the caller once the child has exec'd or
/// exited.
#[derive(Default)]
struct Report {
    step: AtomicUsize,
    errno: AtomicI32,
}

impl Report {
    fn fail(&self, Fail(step, errno): Fail) {
        self.errno.store(errno, Ordering::SeqCst);
        self.step.store(step, Ordering::SeqCst);
    }

    fn failure(&self) -> Option<Failure> {
        match self.step.load(Ordering::SeqCst) {
            0 => None,
            i => Some(Failure {
                step: STEPS.get(i).copied().unwrap_or("spawn"),
                source: io::Error::from_raw_os_error(self.errno.load(Ordering::SeqCst)),
            }),
        }
    }
}

/// What the child reads: the plan, raw pointer arrays for execve, and
/// where to report.
struct Shared<'a> {
    plan: &'a Plan<'a>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Signals with a handler or ignored in the caller: set to default in
    /// the command before it unblocks signals.
    reset: &'a [c_int],
    report: Report,
}

/// The kernel's `struct sigaction` (x86-64 and arm64 layout); all zero
/// is SIG_DFL.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Signals whose action can be changed (all but SIGKILL and SIGSTOP).
fn catchable() -> impl Iterator<Item = c_int> {
    (1..=64).filter(|&sig| sig != libc::SIGKILL && sig != libc::SIGSTOP)
}

/// Raw `rt_sigaction`: glibc's wrapper hides its own two signals, which
/// an ignoring parent may have passed on to us. `new` none only reads.
fn rt_sigaction(sig: c_int, new: Option<&KernelSigaction>, old: &mut KernelSigaction) -> i64 {
    let new = new.map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `new` is null or a live kernel-layout record, `old` a live
    // one the kernel fills in; 8 is the size of the kernel's sigset.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, std::ptr::from_mut(old), 8) }
}

/// Sets `sig` to its default action.
fn set_default(sig: c_int) -> i64 {
    rt_sigaction(
        sig,
        Some(&KernelSigaction::default()),
        &mut KernelSigaction::default(),
    )
}

/// Bytes of the child's stack: it only makes system calls.
const STACK: usize = 32 * 1024;

/// The child's stack, the caller's PID namespace and its signal
/// dispositions. One per (single-threaded) process.
pub struct Spawner {
    stack: Box<[MaybeUninit<u8>]>,
    own_pidns: OwnedFd,
    reset: Vec<c_int>,
}

impl Spawner {
    /// Must be made in the single-threaded process that will spawn, after
    /// its signal handlers are set up.
    pub fn new(_proof: super::SingleThreaded) -> io::Result<Spawner> {
        let own_pidns = nix::fcntl::open(
            "/proc/self/ns/pid",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let reset = catchable()
            .filter(|&sig| {
                let mut old = KernelSigaction::default();
                rt_sigaction(sig, None, &mut old) == 0 && old.handler != 0
            })
            .collect();
        Ok(Spawner {
            stack: Box::new_uninit_slice(STACK),
            own_pidns,
            reset,
        })
    }

    /// Starts `plan`'s command; returns once it has called `execve` (or
    /// failed to, see [`Spawned::failed`]).
    pub fn spawn(&mut self, plan: &Plan<'_>) -> Result<Spawned, Failure> {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let shared = Shared {
            plan,
            argv: ptrs(plan.argv),
            envp: ptrs(plan.env),
            reset: &self.reset,
            report: Report::default(),
        };
        let top = ((self.stack.as_mut_ptr() as usize + STACK) & !15) as *mut c_void;
        // Every signal blocked across the clone, as posix_spawn does: no
        // handler may run in a child that shares our memory before it has
        // reset its dispositions.
        let all = nix::sys::signal::SigSet::all();
        let mut old = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut old),
        )
        .map_err(|e| Failure {
            step: "block signals",
            source: e.into(),
        })?;
        let pid = nix::sched::setns(plan.pidns, nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| Failure {
                step: STEPS[PIDNS],
                source: e.into(),
            })
            .map(|()| {
                // SAFETY: the child runs on our stack buffer, which nothing
                // else uses, and reads `shared`, which lives on this frame
                // until after the child has exec'd or exited: CLONE_VFORK
                // suspends this thread until then, and the process has no
                // other thread (the proof taken in `new`).
                let pid = unsafe {
                    libc::clone(
                        command_main,
                        top,
                        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                        std::ptr::addr_of!(shared).cast_mut().cast(),
                    )
                };
                (pid, io::Error::last_os_error())
            });
        if pid.is_ok() {
            // Our own children (the next container's init among them)
            // must start in our namespace again. Entering one's own active
            // PID namespace cannot be refused to a process that could
            // enter the container's; if it were, carrying on would put
            // the next container inside this one.
            if let Err(e) = nix::sched::setns(&self.own_pidns, nix::sched::CloneFlags::CLONE_NEWPID)
            {
                tracing::error!(error = %e, "cannot return to the shim's PID namespace");
                std::process::abort();
            }
        }
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
        let (pid, clone_error) = pid?;
        if pid < 0 {
            return Err(Failure {
                step: STEPS[CLONE],
                source: clone_error,
            });
        }
        Ok(Spawned {
            pid: nix::unistd::Pid::from_raw(pid),
            failed: shared.report.failure(),
        })
    }
}

/// A failed step and its errno.
struct Fail(usize, c_int);

/// `Err` when a system call failed, with the errno it left.
fn check(rc: i64, step: usize) -> Result<(), Fail> {
    if rc < 0 {
        Err(Fail(
            step,
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(())
    }
}

/// The same for calls returning `ssize_t`.
fn check_size(rc: isize, step: usize) -> Result<(), Fail> {
    check(if rc < 0 { -1 } else { 0 }, step)
}

/// The container's side of the boundary: its OOM score, cgroups, mount
/// namespace and root.
fn join(p: &Plan<'_>) -> Result<(), Fail> {
    if let Some(value) = p.oom_score_adj {
        // SAFETY: a NUL-terminated literal path and plain flags.
        let fd = unsafe {
            libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        check(fd.into(), OOM)?;
        // SAFETY: writes `value`, a live slice, to the fd opened above.
        let rc = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
        let refused = rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES);
        // SAFETY: closes the fd opened above, which nothing else holds.
        unsafe { libc::close(fd) };
        if !refused {
            check_size(rc, OOM)?;
        }
    }
    for procs in p.cgroup_procs {
        // SAFETY: writes a literal to an fd the plan keeps open. "0" moves
        // the writer.
        let rc = unsafe { libc::write(procs.as_raw_fd(), c"0".as_ptr().cast(), 1) };
        check_size(rc, CGROUP)?;
    }
    // SAFETY: setns takes an fd the plan keeps open and a flag; allowed
    // since this process has its own fs context.
    let rc = unsafe { libc::setns(p.mntns.as_raw_fd(), libc::CLONE_NEWNS) };
    check(rc.into(), MNTNS)?;
    // SAFETY: fchdir takes an fd the plan keeps open.
    let rc = unsafe { libc::fchdir(p.root.as_raw_fd()) };
    check(rc.into(), ROOT)?;
    // SAFETY: a NUL-terminated literal path.
    let rc = unsafe { libc::chroot(c".".as_ptr()) };
    check(rc.into(), CHROOT)?;
    Ok(())
}

extern "C" fn command_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` of `Spawner::spawn`, which stays alive
    // and unchanged while that thread is suspended (CLONE_VFORK).
    let s = unsafe { &*arg.cast_const().cast::<Shared<'_>>() };
    let Err(fail) = command(s);
    let Fail(step, errno) = fail;
    s.report.fail(fail);
    if step == EXEC && (errno == libc::ENOENT || errno == libc::ENOTDIR) {
        127
    } else {
        126
    }
}

enum Never {}

/// prctl's arguments are unsigned longs (it is variadic in C).
const Z: libc::c_ulong = 0;
const ONE: libc::c_ulong = 1;

/// The container's seccomp program, if it has one (raw system call only).
fn install_seccomp(c: &Creds) -> Result<(), Fail> {
    match c.seccomp.as_deref().map(super::bpf::seccomp_install) {
        Some(Err(e)) => Err(Fail(SECCOMP, e.raw_os_error().unwrap_or(libc::EINVAL))),
        _ => Ok(()),
    }
}

fn command(s: &Shared<'_>) -> Result<Never, Fail> {
    let p = s.plan;
    join(p)?;
    for &sig in s.reset {
        check(set_default(sig), SIGNALS)?;
    }
    // SAFETY: plain integers.
    let rc = unsafe { libc::setpgid(0, 0) };
    check(rc.into(), PGID)?;
    // SAFETY: a NUL-terminated literal path (the container's, after chroot).
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    check(null.into(), STDIO)?;
    for (from, to) in [
        (null, 0),
        (p.stdout.as_raw_fd(), 1),
        (p.stderr.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 between fds that are open in this process.
        let rc = unsafe { libc::dup2(from, to) };
        check(rc.into(), STDIO)?;
    }
    if null > 2 {
        // SAFETY: closes the fd opened above.
        unsafe { libc::close(null) };
    }
    if let Some((soft, hard)) = p.nofile {
        let lim = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a live rlimit64; no old value is asked for.
        let rc = unsafe { libc::prlimit64(0, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
        check(rc.into(), NOFILE)?;
    }
    let c = p.creds;
    if !c.no_new_privs {
        install_seccomp(c)?;
    }
    // Raw system calls: glibc's wrappers would try to reach other threads.
    // SAFETY: the pointer and length describe the live `groups` vector.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) };
    check(rc, GROUPS)?;
    // SAFETY: plain integers.
    let rc = unsafe { libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid) };
    check(rc, GID)?;
    for &cap in &c.drop_bounding {
        // SAFETY: plain integers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), Z, Z, Z) };
        check(rc.into(), CAPS)?;
    }
    // SAFETY: plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, ONE, Z, Z, Z) };
    check(rc.into(), CAPS)?;
    // SAFETY: plain integers.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid) };
    check(rc, UID)?;
    capset(c.caps)?;
    if c.no_new_privs {
        // SAFETY: plain integers.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, ONE, Z, Z, Z) };
        check(rc.into(), CAPS)?;
        install_seccomp(c)?;
    }
    // SAFETY: plain integer.
    unsafe { libc::umask(p.umask) };
    // A missing working directory is not fatal (the process starts in /).
    // SAFETY: a live NUL-terminated path.
    let _ = unsafe { libc::chdir(p.cwd.as_ptr()) };
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain integers; only marks fds ≥ 3 close-on-exec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    check(rc, STDIO)?;
    let mut none = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(none.as_mut_ptr()) };
    // SAFETY: `none` was initialised just above. Every handler was reset,
    // so nothing of ours can run once signals are let in.
    let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut()) };
    check(rc.into(), SIGNALS)?;
    // execvp's rules: go on past a candidate that is missing or not
    // executable; stop at any other error.
    let mut errno = libc::ENOENT;
    for prog in p.programs {
        // SAFETY: all three are NUL-terminated and point into live CStrings
        // (`argv`, `envp` end with a null pointer); returns only on error.
        unsafe { libc::execve(prog.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr()) };
        let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES if p.path_search => {}
            libc::EACCES => errno = e,
            _ => {
                errno = e;
                break;
            }
        }
    }
    Err(Fail(EXEC, errno))
}

/// For a forked child about to exec: every signal back to its default
/// action and none blocked (dispositions that are ignored, and the mask,
/// survive execve; a container must not inherit the shim's).
pub fn default_signals() -> io::Result<()> {
    for sig in catchable() {
        set_default(sig);
    }
    nix::sys::signal::SigSet::empty()
        .thread_set_mask()
        .map_err(io::Error::from)
}

/// Sets effective = permitted = `caps`, inheritable empty (version 3).
fn capset(caps: u64) -> Result<(), Fail> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let half = |v: u64| {
        let v = u32::try_from(v & u64::from(u32::MAX)).unwrap_or(0);
        Data {
            effective: v,
            permitted: v,
            inheritable: 0,
        }
    };
    let data = [half(caps), half(caps >> 32)];
    // SAFETY: a version-3 header and two data records, both live.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc, CAPS)
}
