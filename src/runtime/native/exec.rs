//! Running a command in a live container (`exec`, exec probes and hooks):
//! what every exec into one container needs is opened and encoded once
//! ([`ExecContext`]), and each command is started by `sys::spawn` without
//! copying the shim's memory.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use super::container::{self, ContainerError};
use crate::runtime::cgroup::Cgroups;
use crate::sys::spawn::{Creds, Plan, Spawner};

/// The container's namespaces, root and cgroups held open, and its
/// process settings encoded, for any number of execs. Dropped when the
/// container exits, so it pins nothing of a dead container.
pub struct ExecContext {
    root: OwnedFd,
    pidns: OwnedFd,
    mntns: OwnedFd,
    cgroup_procs: Vec<OwnedFd>,
    frozen: Option<FreezeState>,
    oom_score_adj: Option<Vec<u8>>,
    nofile: Option<(u64, u64)>,
    creds: Creds,
    umask: u32,
    cwd: CString,
    env: Vec<CString>,
    path: Vec<String>,
}

/// The exec's credentials, with the container's seccomp program: an exec
/// is confined as its container is (runc applies the filter to `exec`).
fn exec_creds(process: &oci_spec::runtime::Process, spec: &Spec) -> Result<Creds, ContainerError> {
    let mut creds = container::creds(process)?;
    creds.seccomp = container::seccomp_program(spec)?;
    Ok(creds)
}

/// A cgroup's freeze state file, kept open, and how to read its text.
type FreezeState = (std::fs::File, fn(&str) -> bool);

/// A started exec: the command's PID (a child of the caller, leader of
/// its own process group). `failed` is containerd's message when the
/// program could not be run; the process has then exited with 127 (not
/// found) or 126.
pub struct ExecStarted {
    pub pid: nix::unistd::Pid,
    pub failed: Option<String>,
}

fn open(path: &str, flags: OFlag) -> Result<OwnedFd, ContainerError> {
    nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        ContainerError::Setup {
            action: format!("open {path}"),
            source: e.into(),
        }
    })
}

impl ExecContext {
    /// For the container whose init is `init`, run from `spec`.
    pub fn open(
        init: nix::unistd::Pid,
        spec: &Spec,
        cgroups: Option<&dyn Cgroups>,
    ) -> Result<ExecContext, ContainerError> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| ContainerError::Start("spec has no process".into()))?;
        let (cgroup_procs, frozen) = match container::spec_cgroup(spec, cgroups)? {
            Some((path, cg)) => {
                let procs = cg
                    .dirs(&path)
                    .iter()
                    .map(|d| open(&d.join("cgroup.procs").to_string_lossy(), OFlag::O_WRONLY))
                    .collect::<Result<Vec<_>, _>>()?;
                let (file, frozen) = cg.freeze_file(&path);
                let file = open(&file.to_string_lossy(), OFlag::O_RDONLY)?;
                (procs, Some((std::fs::File::from(file), frozen)))
            }
            None => (Vec::new(), None),
        };
        let env: Vec<String> = process.env().clone().unwrap_or_default();
        let path = container::path_dirs(&env).map(str::to_string).collect();
        Ok(ExecContext {
            root: open(
                &format!("/proc/{init}/root"),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
            )?,
            pidns: open(&format!("/proc/{init}/ns/pid"), OFlag::O_RDONLY)?,
            mntns: open(&format!("/proc/{init}/ns/mnt"), OFlag::O_RDONLY)?,
            cgroup_procs,
            frozen,
            oom_score_adj: process.oom_score_adj().map(|v| v.to_string().into_bytes()),
            nofile: container::nofile_limit(process)?,
            creds: exec_creds(process, spec)?,
            umask: process.user().umask().unwrap_or(0o022),
            cwd: cstring(&process.cwd().to_string_lossy())?,
            env: env
                .iter()
                .filter_map(|e| CString::new(e.as_str()).ok())
                .collect(),
            path,
        })
    }

    /// Whether the container's cgroup is frozen (paused); read from the
    /// file kept open, so no path is walked per exec.
    pub fn paused(&self) -> Result<bool, ContainerError> {
        use std::os::unix::fs::FileExt;
        let Some((file, frozen)) = &self.frozen else {
            return Ok(false);
        };
        let mut buf = [0u8; 32];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|source| ContainerError::Setup {
                action: "read the cgroup's freeze state".into(),
                source,
            })?;
        Ok(frozen(&String::from_utf8_lossy(&buf[..n])))
    }

    /// Starts `args` with stdout and stderr on the given pipes and stdin
    /// on the container's /dev/null; returns once the program runs.
    pub fn spawn(
        &self,
        spawner: &mut Spawner,
        args: &[String],
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> Result<ExecStarted, ContainerError> {
        let arg0 = args
            .first()
            .ok_or_else(|| ContainerError::Start("no command given (empty args)".into()))?;
        let path_search = !arg0.contains('/');
        let programs: Vec<CString> = if path_search {
            self.path
                .iter()
                .map(|d| cstring(&format!("{d}/{arg0}")))
                .collect::<Result<_, _>>()?
        } else {
            vec![cstring(arg0)?]
        };
        let argv: Vec<CString> = args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let plan = Plan {
            pidns: self.pidns.as_fd(),
            mntns: self.mntns.as_fd(),
            root: self.root.as_fd(),
            cgroup_procs: &self.cgroup_procs,
            oom_score_adj: self.oom_score_adj.as_deref(),
            nofile: self.nofile,
            creds: &self.creds,
            umask: self.umask,
            cwd: &self.cwd,
            programs: &programs,
            path_search,
            argv: &argv,
            env: &self.env,
            stdout,
            stderr,
        };
        let spawned = spawner.spawn(&plan).map_err(|f| ContainerError::Setup {
            action: f.step.to_string(),
            source: f.source,
        })?;
        Ok(ExecStarted {
            pid: spawned.pid,
            failed: spawned.failed.map(|f| {
                if !f.is_exec() {
                    return f.to_string();
                }
                let errno = f.source.raw_os_error().unwrap_or(0);
                match errno {
                    libc::ENOENT | libc::ENOTDIR if path_search => {
                        format!("exec: {arg0:?}: executable file not found in $PATH")
                    }
                    libc::ENOENT | libc::ENOTDIR => {
                        format!("exec: {arg0:?}: stat {arg0}: no such file or directory")
                    }
                    libc::EACCES => format!("exec: {arg0:?}: permission denied"),
                    _ => format!(
                        "exec: {arg0:?}: {}",
                        nix::errno::Errno::from_raw(errno).desc()
                    ),
                }
            }),
        })
    }
}

fn cstring(s: &str) -> Result<CString, ContainerError> {
    CString::new(s).map_err(|_| ContainerError::Start(format!("NUL byte in {s:?}")))
}
