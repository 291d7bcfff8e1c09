//! seccomp profiles: the runtime's default (containerd's), profiles in
//! the OCI or Docker JSON format, and their compilation to the classic BPF
//! program the kernel runs. Knows nothing of Kubernetes.
//!
//! Compilation goes through libseccomp, as runc and crun do, so a profile
//! means here what it means there (syscall names per architecture,
//! argument comparisons, actions). libseccomp takes ~10 ms for the default
//! profile (three architectures), ten times what a container start may
//! spend on its security: a compiled program is kept in memory and in a
//! root-only directory under /run by the hash of the profile's text (and
//! libseccomp's version), as crun keeps its own, so each profile is
//! compiled once per boot, not once per container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile: {0}")]
    Invalid(String),
    #[error("seccomp profile: {action}")]
    Compile {
        action: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp profile: {action}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(msg: impl Into<String>) -> SeccompError {
    SeccompError::Invalid(msg.into())
}

/// Syscalls containerd's default profile allows to every container
/// (`contrib/seccomp/seccomp_default.go`, containerd 1.7/2.x). Names a
/// kernel or architecture lacks are skipped when compiled.
const DEFAULT_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Kernels >= 4.8 check ptrace against seccomp (containerd adds it then).
    "ptrace",
];

/// Syscalls the default profile allows only with a capability in the
/// container's bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP`: the namespace flags a
/// container without CAP_SYS_ADMIN may not pass to `clone`.
const CLONE_NAMESPACES: u64 = 0x7e02_0000;

/// The architectures a profile for this machine covers (containerd's
/// `arches()`), less x32 on a kernel that refuses x32 system calls (most
/// distribution kernels leave it off at boot): there no x32 program runs
/// whatever the filter says, and its rules are two thirds of the program
/// the kernel has to take in at every container start (960 instructions
/// with x86 and x32, about 640 without x32: the install takes that much
/// less time).
fn native_arches() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        let mut a = vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"];
        if crate::sys::x32_syscalls_enabled() {
            a.push("SCMP_ARCH_X32");
        }
        a
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"]
    } else {
        Vec::new()
    }
}

/// containerd's default profile for a container whose bounding set is
/// `caps` (`CAP_…` names), as OCI `linux.seccomp` JSON: everything not
/// listed fails with EPERM.
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut allowed: Vec<&str> = DEFAULT_ALLOWED.to_vec();
    if cfg!(target_arch = "x86_64") {
        allowed.extend(["arch_prctl", "modify_ldt"]);
    } else if cfg!(target_arch = "aarch64") {
        allowed.extend([
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]);
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            allowed.extend(names.iter());
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    // personality(2) only for the personas containerd lets through:
    // PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
    for persona in [0x0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}));
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3's flags sit in a struct
        // seccomp cannot read, so it answers ENOSYS and libc falls back to
        // clone (moby#42681).
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(
            json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
        );
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": native_arches(),
        "syscalls": syscalls,
    })
}

/// A profile as written on disk: OCI `linux.seccomp`, or Docker's format
/// (`archMap`, `includes`/`excludes` by capability and architecture).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<FileSyscall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileSyscall {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// One argument comparison (OCI `LinuxSeccompArg`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// Docker's architecture names for `includes.arches`.
fn docker_arch(native: &str) -> &'static str {
    match native {
        "SCMP_ARCH_X86_64" | "SCMP_ARCH_X86" | "SCMP_ARCH_X32" => "amd64",
        "SCMP_ARCH_AARCH64" | "SCMP_ARCH_ARM" => "arm64",
        _ => "",
    }
}

/// Reads a profile file (OCI or Docker format) into OCI `linux.seccomp`
/// JSON for a container whose bounding set is `caps`. Every action, op
/// and flag is checked here, so a bad profile fails before a container
/// is made.
pub fn from_file_profile(text: &str, caps: &[String]) -> Result<Value, SeccompError> {
    let p: FileProfile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if p.listener_path.is_some() || p.listener_metadata.is_some() {
        return Err(invalid("listenerPath (SCMP_ACT_NOTIFY) is not supported"));
    }
    if let Some(f) = p.flags.first() {
        return Err(invalid(format!(
            "flag {f:?} is not supported (no flags are)"
        )));
    }
    action(&p.default_action, p.default_errno_ret)
        .map_err(|e| invalid(format!("defaultAction: {e}")))?;
    let mut arches = p.architectures.clone();
    for m in &p.arch_map {
        arches.push(m.architecture.clone());
        arches.extend(m.sub_architectures.iter().cloned());
    }
    for a in &arches {
        a.parse::<libseccomp::ScmpArch>()
            .map_err(|_| invalid(format!("unknown architecture {a:?}")))?;
    }
    let this_arch = native_arches().first().map_or("", |a| docker_arch(a));
    let mut syscalls = Vec::new();
    for (i, s) in p.syscalls.iter().enumerate() {
        let _ = &s.comment;
        let inc = s.includes.as_ref();
        let exc = s.excludes.as_ref();
        let included = inc.is_none_or(|f| {
            f.caps.iter().all(|c| caps.contains(c))
                && (f.arches.is_empty() || f.arches.iter().any(|a| a == this_arch))
                && f.min_kernel.as_deref().is_none_or(kernel_at_least)
        });
        let excluded = exc.is_some_and(|f| {
            (!f.caps.is_empty() && f.caps.iter().any(|c| caps.contains(c)))
                || f.arches.iter().any(|a| a == this_arch)
        });
        if !included || excluded {
            continue;
        }
        let mut names = s.names.clone();
        names.extend(s.name.iter().cloned());
        if names.is_empty() {
            return Err(invalid(format!("syscalls[{i}]: no names")));
        }
        action(&s.action, s.errno_ret).map_err(|e| invalid(format!("syscalls[{i}]: {e}")))?;
        for a in &s.args {
            compare(a).map_err(|e| invalid(format!("syscalls[{i}]: {e}")))?;
        }
        let mut v = json!({"names": names, "action": s.action, "args": s.args});
        if let Some(e) = s.errno_ret {
            v["errnoRet"] = json!(e);
        }
        syscalls.push(v);
    }
    let mut out = json!({
        "defaultAction": p.default_action,
        "architectures": arches,
        "syscalls": syscalls,
    });
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    Ok(out)
}

/// Whether the running kernel is at least `min` (`5.8`, Docker's
/// `includes.minKernel`).
fn kernel_at_least(min: &str) -> bool {
    fn parts(v: &str) -> (u32, u32) {
        let mut it = v
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parts(&release) >= parts(min)
}

/// An OCI action name (with its errno or trace value) as libseccomp's.
fn action(name: &str, ret: Option<u32>) -> Result<libseccomp::ScmpAction, String> {
    use libseccomp::ScmpAction as A;
    let errno = i32::try_from(ret.unwrap_or(1)).map_err(|_| "errnoRet out of range".to_string())?;
    Ok(match name {
        "SCMP_ACT_ALLOW" => A::Allow,
        "SCMP_ACT_ERRNO" => A::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => A::KillThread,
        "SCMP_ACT_KILL_PROCESS" => A::KillProcess,
        "SCMP_ACT_TRAP" => A::Trap,
        "SCMP_ACT_LOG" => A::Log,
        "SCMP_ACT_TRACE" => A::Trace(
            u16::try_from(ret.unwrap_or(1)).map_err(|_| "errnoRet out of range".to_string())?,
        ),
        "SCMP_ACT_NOTIFY" => return Err("action SCMP_ACT_NOTIFY is not supported".into()),
        other => {
            return Err(format!(
                "unknown action {other:?} (supported: SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_LOG, SCMP_ACT_TRACE)"
            ))
        }
    })
}

/// An argument comparison as libseccomp's. For `SCMP_CMP_MASKED_EQ` the
/// value is the mask and valueTwo the datum, as runc reads them.
fn compare(a: &Arg) -> Result<libseccomp::ScmpArgCompare, String> {
    use libseccomp::ScmpCompareOp as Op;
    if a.index > 5 {
        return Err(format!("argument index {} is over 5", a.index));
    }
    let (op, datum) = match a.op.as_str() {
        "SCMP_CMP_NE" => (Op::NotEqual, a.value),
        "SCMP_CMP_LT" => (Op::Less, a.value),
        "SCMP_CMP_LE" => (Op::LessOrEqual, a.value),
        "SCMP_CMP_EQ" => (Op::Equal, a.value),
        "SCMP_CMP_GE" => (Op::GreaterEqual, a.value),
        "SCMP_CMP_GT" => (Op::Greater, a.value),
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEqual(a.value), a.value_two),
        other => return Err(format!("unknown comparison {other:?}")),
    };
    Ok(libseccomp::ScmpArgCompare::new(a.index, op, datum))
}

/// The OCI `linux.seccomp` object, as the compiler reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    syscalls: Vec<OciSyscall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciSyscall {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
}

/// Compiled programs by profile text.
static CACHE: Mutex<Option<HashMap<String, Arc<[u8]>>>> = Mutex::new(None);
/// Distinct profiles kept; past this the cache starts over.
const CACHE_MAX: usize = 64;
/// Compiled programs shared by this boot's processes (shims, `run-container`).
const DISK_CACHE: &str = "/run/nodelet/seccomp";

/// The disk cache's directory when it is safe to trust: made by us, a real
/// directory (not a symlink), owned by our user, mode 0700. Anyone who could
/// write there could swap a container's filter.
fn disk_cache() -> Option<&'static std::path::Path> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = std::path::Path::new(DISK_CACHE);
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let md = std::fs::symlink_metadata(dir).ok()?;
    (md.is_dir()
        && md.uid() == nix::unistd::geteuid().as_raw()
        && md.permissions().mode() & 0o077 == 0)
        .then_some(dir)
}

/// The cache file of `key` (a profile's text): its hash, with libseccomp's
/// version and this machine's architecture, so no other build's program
/// is ever taken.
fn cache_file(dir: &std::path::Path, key: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let v = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(b"\0");
    h.update(v.as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    dir.join(format!("{}.bpf", hex::encode(h.finalize())))
}

/// The BPF program (`struct sock_filter`s) for OCI `linux.seccomp`
/// `profile`: from this process's cache, else the boot's disk cache,
/// else compiled (and cached in both).
pub fn compile(profile: &Value) -> Result<Arc<[u8]>, SeccompError> {
    let key = profile.to_string();
    if let Some(p) = CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(|m| m.get(&key).cloned()))
    {
        return Ok(p);
    }
    let file = disk_cache().map(|d| cache_file(d, &key));
    let cached = file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .filter(|b| !b.is_empty() && b.len() % 8 == 0);
    let program: Arc<[u8]> = match cached {
        Some(b) => b.into(),
        None => {
            let b = compile_uncached(profile)?;
            if let Some(f) = &file {
                // Best effort: a full /run only costs the next start a compile.
                let _ = crate::runtime::record::write_atomic(f, &b);
            }
            b.into()
        }
    };
    if let Ok(mut c) = CACHE.lock() {
        let map = c.get_or_insert_with(HashMap::new);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, program.clone());
    }
    Ok(program)
}

fn compile_uncached(profile: &Value) -> Result<Vec<u8>, SeccompError> {
    use libseccomp::{ScmpArch, ScmpFilterContext, ScmpSyscall};
    let p: OciProfile =
        serde_json::from_value(profile.clone()).map_err(|e| invalid(e.to_string()))?;
    if let Some(f) = p.flags.first() {
        return Err(invalid(format!(
            "flag {f:?} is not supported (no flags are)"
        )));
    }
    let fail = |action: String| move |source| SeccompError::Compile { action, source };
    let default = action(&p.default_action, p.default_errno_ret).map_err(invalid)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(fail("create filter".into()))?;
    // nodelet sets no_new_privs itself, when the spec asks for it.
    ctx.set_ctl_nnp(false)
        .map_err(fail("clear the filter's no_new_privs".into()))?;
    for a in &p.architectures {
        let arch: ScmpArch = a
            .parse()
            .map_err(|_| invalid(format!("unknown architecture {a:?}")))?;
        if !ctx.is_arch_present(arch).unwrap_or(false) {
            ctx.add_arch(arch)
                .map_err(fail(format!("add architecture {a}")))?;
        }
    }
    for s in &p.syscalls {
        let act = action(&s.action, s.errno_ret.or(p.default_errno_ret)).map_err(invalid)?;
        // A rule with the default's action changes nothing; libseccomp
        // refuses it, runc skips it.
        if act == default {
            continue;
        }
        let cmps = s
            .args
            .iter()
            .map(compare)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        // Two comparisons of one argument cannot share a rule: each
        // makes its own (they are alternatives, as runc reads them).
        let mut seen = std::collections::HashSet::new();
        let repeated = s.args.iter().any(|a| !seen.insert(a.index));
        for name in &s.names {
            // Unknown to libseccomp (or to every listed architecture):
            // skipped, as runc and crun do.
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if repeated {
                cmps.iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, nr, &[*c]).map(|_| ()))
            } else {
                ctx.add_rule_conditional(act, nr, &cmps).map(|_| ())
            };
            added.map_err(fail(format!("add rule for {name}")))?;
        }
    }
    let memfd = nix::sys::memfd::memfd_create(c"seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Io {
        action: "create a memfd for the program",
        source: e.into(),
    })?;
    ctx.export_bpf(&memfd)
        .map_err(fail("export the program".into()))?;
    let mut file = std::fs::File::from(memfd);
    use std::io::{Read, Seek};
    let mut out = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut out))
        .map_err(|source| SeccompError::Io {
            action: "read the exported program",
            source,
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_profile_refuses_namespaces_without_sys_admin() {
        let p = runtime_default(&caps(&["CAP_CHOWN"]));
        let text = p.to_string();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(!p["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "unshare" || n == "mount" || n == "keyctl"));
        assert!(text.contains("\"clone3\""), "{text}");
        let admin = runtime_default(&caps(&["CAP_SYS_ADMIN"]));
        assert!(admin["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "unshare"));
    }

    #[test]
    fn the_default_profile_compiles_and_is_cached() {
        let p = runtime_default(&caps(&["CAP_CHOWN"]));
        let a = compile(&p).unwrap();
        assert!(!a.is_empty() && a.len() % 8 == 0);
        let b = compile(&p).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn docker_format_profiles_are_converted_with_their_filters() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_BOOT"]}}
            ]
        }"#;
        let p = from_file_profile(text, &caps(&["CAP_SYS_BOOT"])).unwrap();
        assert_eq!(p["syscalls"].as_array().unwrap().len(), 1);
        assert_eq!(p["syscalls"][0]["errnoRet"], 13);
        assert_eq!(p["architectures"][1], "SCMP_ARCH_X86");
        compile(&p).unwrap();
    }

    #[test]
    fn bad_profiles_name_what_is_wrong() {
        let e = from_file_profile(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#, &[]).unwrap_err();
        assert!(
            e.to_string().contains("unknown action \"SCMP_ACT_MAYBE\""),
            "{e}"
        );
        let e = from_file_profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "seccomp profile: syscalls[0]: argument index 9 is over 5"
        );
        let e = from_file_profile(r#"{"defaultAction": "SCMP_ACT_ALLOW", "bogus": 1}"#, &[])
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}
