//! Thin wrappers over the syscalls nix does not cover. The only module
//! allowed `unsafe`; each block does one operation and says why it is sound.

#![allow(unsafe_code)]

pub mod bpf;
pub mod spawn;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `lsetxattr` on `name` inside directory `dir`, without following a
/// symlink at `name`. The path goes through `/proc/self/fd/<dir>`, the
/// kernel's own handle for the directory, so no component of it can be
/// swapped for a symlink by the content being unpacked.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &str, key: &str, value: &[u8]) -> io::Result<()> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let key = CString::new(key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both pointers come from live CStrings and the value pointer and
    // length from a live slice; lsetxattr only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lgetxattr` on `name` inside `dir` (see [`lsetxattr_at`]); `None` when
/// the attribute is absent.
pub fn lgetxattr_at(dir: BorrowedFd<'_>, name: &str, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let key = CString::new(key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the pointers come from live CStrings and a live, writable
    // buffer whose length is passed; the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc >= 0 {
        buf.truncate(usize::try_from(rc).unwrap_or(0));
        return Ok(Some(buf));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// `llistxattr` on `name` inside `dir`: the attribute names.
pub fn llistxattr_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<String>> {
    let path = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the path pointer comes from a live CString and the buffer is
    // live and writable for the length passed.
    let rc = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(rc).unwrap_or(0));
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Proof that this process had one thread when checked. A process that
/// never starts threads stays single-threaded, so the proof can be taken
/// before a chroot that hides `/proc/self` and used after it.
#[derive(Debug, Clone, Copy)]
pub struct SingleThreaded(());

/// Checks `/proc/self/status` for exactly one thread.
pub fn single_threaded() -> io::Result<SingleThreaded> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim)
        .unwrap_or("0");
    if threads != "1" {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    Ok(SingleThreaded(()))
}

/// Forks a process that must be single-threaded: after `fork()` in a
/// multi-threaded process the child may only call async-signal-safe
/// functions, so this refuses unless `/proc/self/status` shows one thread.
pub fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    fork_checked(single_threaded()?)
}

/// Forks with a proof taken earlier (see [`SingleThreaded`]).
pub fn fork_checked(_proof: SingleThreaded) -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: the process has exactly one thread (the proof), so the child
    // inherits no lock held by another thread and may run any code.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Marks every fd from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`), so exec leaves only 0, 1, 2 open (CVE-2024-21626).
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes plain integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).unwrap_or(0);
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a live ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS just filled in.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: SIOCSIFFLAGS reads the name and flags of a live ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores the default SIGPIPE action, so a client command writing into a
/// closed pipe (`nodelet get pods | head`) ends quietly like other Unix
/// tools instead of panicking. Never for the daemon, `run` or the shim,
/// which write to sockets and must see EPIPE as an error.
/// Hands memory the allocator holds free back to the kernel (glibc's
/// `malloc_trim`, every arena): after a large transient allocation (a
/// multi-megabyte request decoded and dropped) the daemon's resident size
/// returns to what it uses instead of keeping each thread's peak.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists under
    // its locks; it takes no pointers and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler of ours; it is only called by
    // short-lived client commands before they open anything.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

fn sysconf_or(var: nix::unistd::SysconfVar, default: u64) -> u64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(default)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of /proc CPU times (100 when unknown).
pub fn clock_ticks() -> u64 {
    sysconf_or(nix::unistd::SysconfVar::CLK_TCK, 100)
}

/// `sysconf(_SC_PAGESIZE)` (4096 when unknown).
pub fn page_size() -> u64 {
    sysconf_or(nix::unistd::SysconfVar::PAGE_SIZE, 4096)
}

/// The boot time in seconds since the epoch (`btime` of /proc/stat).
pub fn boot_time_seconds() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Hands the heap's free memory back to the kernel (`malloc_trim(0)`): a
/// long-lived small process (the shim) keeps only what it uses after a
/// burst of allocations (parsing a container's config, an exec's output).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state under its
    // locks; it takes no pointers from us and is safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Accepts one connection on a listening unix socket, already
/// non-blocking and close-on-exec (`accept4`): no `fcntl` after it.
/// `WouldBlock` when none is waiting.
pub fn accept_nonblocking(
    listener: &std::os::unix::net::UnixListener,
) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain accept4 on a descriptor we borrow for the call; null
    // address pointers are allowed (the peer address is not wanted).
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) })
}

/// `RLIMIT_NOFILE` (soft, hard) as the process started with, before
/// [`raise_nofile`].
static NOFILE_AT_START: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard one, as Go does for every
/// program (kubelet, containerd): the daemon holds a few fds per pod (kept
/// shim connections, spare probe sockets, network namespaces), and a
/// shell's soft 1024 runs short at around a hundred pods.
/// What the process started with is kept for its children
/// ([`nofile_at_start`]).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if NOFILE_AT_START.set((soft, hard)).is_ok() && soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The limits this process started with, when [`raise_nofile`] changed
/// them: what its children should have.
pub fn nofile_at_start() -> Option<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    let start = *NOFILE_AT_START.get()?;
    (getrlimit(Resource::RLIMIT_NOFILE).ok()? != start).then_some(start)
}

/// Sets process `pid`'s `RLIMIT_NOFILE` (a child just started).
pub fn set_nofile_of(pid: i32, (soft, hard): (u64, u64)) -> io::Result<()> {
    let lim = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a live rlimit64; no old value is asked for.
    let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this kernel runs x32 system calls (x86-64 with
/// `CONFIG_X86_X32_ABI` and x32 enabled at boot): a raw `getpid` with the
/// x32 bit set answers ENOSYS when it does not. Asked once.
pub fn x32_syscalls_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return false;
        }
        const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
        // SAFETY: getpid takes no arguments and changes nothing; with the
        // x32 bit it is either getpid or an ENOSYS answer.
        let rc = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
        rc >= 0
    })
}
