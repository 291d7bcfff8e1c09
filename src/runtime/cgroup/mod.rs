//! Control groups: one small trait, [`Cgroups`], over the two kernel
//! interfaces, cgroup v1 (a hierarchy per controller) and v2 (unified).
//! Paths are cgroup paths (`/nodelet/kubepods/pod<uid>/<id>`), the same in
//! every hierarchy, as runc's `linux.cgroupsPath`. Plain std file I/O, so
//! the single-threaded shim uses it too. Knows nothing of Kubernetes.

pub mod devices;
#[cfg(test)]
mod tests_real;
mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::V1;
pub use v2::V2;

/// Limits for one cgroup, in the kernel's units (OCI `linux.resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// v1 `cpu.shares` (2..=262144); v2 gets the matching `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per period; `None` = unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in µs.
    pub cpu_period: Option<u64>,
    /// Bytes; `None` = unlimited. Swap is never allowed on top.
    pub memory_limit: Option<i64>,
    /// Tasks; `None` = unlimited.
    pub pids_limit: Option<i64>,
    /// The device allowlist, in order; `None` leaves the cgroup's default
    /// (every device, as its parent).
    pub devices: Option<Vec<devices::DeviceRule>>,
}

impl Resources {
    /// From an OCI runtime spec's `linux.resources`.
    pub fn from_spec(r: &oci_spec::runtime::LinuxResources) -> Self {
        let cpu = r.cpu().as_ref();
        Resources {
            cpu_shares: cpu.and_then(|c| c.shares()),
            cpu_quota: cpu.and_then(|c| c.quota()).filter(|q| *q > 0),
            cpu_period: cpu.and_then(|c| c.period()),
            memory_limit: r
                .memory()
                .as_ref()
                .and_then(|m| m.limit())
                .filter(|l| *l > 0),
            pids_limit: r.pids().as_ref().map(|p| p.limit()).filter(|l| *l > 0),
            devices: r.devices().as_ref().map(|list| {
                list.iter()
                    .filter_map(|d| {
                        serde_json::to_value(d)
                            .ok()
                            .and_then(|v| serde_json::from_value(v).ok())
                    })
                    .collect()
            }),
        }
    }

    /// As OCI `linux.resources` JSON (swap = memory: no swap, as kubelet).
    pub fn to_spec_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({});
        let mut cpu = serde_json::Map::new();
        if let Some(s) = self.cpu_shares {
            cpu.insert("shares".into(), s.into());
        }
        if let Some(q) = self.cpu_quota {
            cpu.insert("quota".into(), q.into());
        }
        if let Some(p) = self.cpu_period {
            cpu.insert("period".into(), p.into());
        }
        if !cpu.is_empty() {
            v["cpu"] = cpu.into();
        }
        if let Some(m) = self.memory_limit {
            v["memory"] = serde_json::json!({"limit": m, "swap": m});
        }
        if let Some(p) = self.pids_limit {
            v["pids"] = serde_json::json!({ "limit": p });
        }
        if let Some(d) = &self.devices {
            v["devices"] = serde_json::to_value(d).unwrap_or_default();
        }
        v
    }

    /// cgroup v2 `cpu.weight` for v1 shares (runc's and kubelet's
    /// `CpuSharesToCpuWeight`: [2, 262144] onto [1, 10000]).
    pub fn cpu_weight(shares: u64) -> u64 {
        let s = shares.clamp(2, 262_144);
        1 + ((s - 2) * 9999) / 262_142
    }
}

/// The cgroup an OCI spec asks for (`linux.cgroupsPath`) and its limits
/// (`linux.resources`); none without a path.
pub fn of_spec(spec: &oci_spec::runtime::Spec) -> Option<(String, Resources)> {
    let linux = spec.linux().as_ref()?;
    let path = linux
        .cgroups_path()
        .as_ref()?
        .to_string_lossy()
        .into_owned();
    let res = linux
        .resources()
        .as_ref()
        .map(Resources::from_spec)
        .unwrap_or_default();
    Some((path, res))
}

/// Usage of one cgroup (and its descendants).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cumulative CPU time, ns.
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file cache (cAdvisor's working set).
    pub memory_working_set: u64,
    pub memory_rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
    /// OOM kills of processes in this cgroup.
    pub oom_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {action} {}", file.display())]
    Io {
        path: String,
        action: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup filesystem found: {0}")]
    NotMounted(String),
    #[error("cgroup {path}: {message}")]
    Other { path: String, message: String },
}

/// How long kill, freeze and removal wait for the kernel.
const SETTLE: Duration = Duration::from_secs(5);

/// One cgroup interface. All paths are absolute cgroup paths.
pub trait Cgroups: Send + Sync + std::fmt::Debug {
    /// 1 or 2.
    fn version(&self) -> u8;
    /// The directories that hold `path`, one per hierarchy.
    fn dirs(&self, path: &str) -> Vec<PathBuf>;
    /// Creates `path` with its parents and applies `res` to it.
    fn create(&self, path: &str, res: &Resources) -> Result<(), CgroupError>;
    /// Moves process `pid` (0: the caller) into `path` in every hierarchy.
    fn join(&self, path: &str, pid: i32) -> Result<(), CgroupError>;
    /// Freezes `path` and its descendants; returns once they are frozen.
    fn freeze(&self, path: &str) -> Result<(), CgroupError>;
    /// Thaws `path`; returns once it runs again.
    fn thaw(&self, path: &str) -> Result<(), CgroupError>;
    fn is_frozen(&self, path: &str) -> Result<bool, CgroupError> {
        let (file, frozen) = self.freeze_file(path);
        Ok(frozen(&read(path, &file)?))
    }
    /// The file telling whether `path` is frozen, and how to read its
    /// text (also for a caller that keeps it open and asks often).
    fn freeze_file(&self, path: &str) -> (PathBuf, fn(&str) -> bool);
    fn stats(&self, path: &str) -> Result<Stats, CgroupError>;
    /// SIGKILLs every process in `path` and its descendants and waits until
    /// none is left.
    fn kill_all(&self, path: &str) -> Result<(), CgroupError>;

    fn exists(&self, path: &str) -> bool {
        self.dirs(path).iter().any(|d| d.is_dir())
    }

    /// Processes in `path` and its descendants, in any hierarchy.
    fn procs(&self, path: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.dirs(path) {
            walk(&d, &mut |dir| {
                let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills what runs in `path` and removes it with its descendants, in
    /// every hierarchy. Nothing there is fine.
    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        not_root(path)?;
        if !self.exists(path) {
            return Ok(());
        }
        self.kill_all(path)?;
        for d in self.dirs(path) {
            remove_tree(path, &d)?;
        }
        Ok(())
    }
}

/// Finds the host's cgroup interface from `/proc/self/mountinfo`: v2 when
/// `/sys/fs/cgroup` is cgroup2, else the v1 controllers nodelet needs.
pub fn detect() -> Result<Box<dyn Cgroups>, CgroupError> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
            path: "/".into(),
            action: "read",
            file: "/proc/self/mountinfo".into(),
            source,
        })?;
    let mounts = parse_mountinfo(&info);
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2" && m.point == Path::new("/sys/fs/cgroup"))
    {
        return Ok(Box::new(V2::at(&m.point)));
    }
    Ok(Box::new(V1::from_mounts(&mounts)?))
}

/// A cgroup mount: where, which type, which super options (controllers).
#[derive(Debug, Clone)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            if !fstype.starts_with("cgroup") {
                return None;
            }
            let _source = post.next();
            let options = post
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                point: PathBuf::from(point.replace("\\040", " ")),
                fstype: fstype.to_string(),
                options,
            })
        })
        .collect()
}

/// `dir` joined with cgroup path `path` (absolute, `/` = the mount).
fn under(dir: &Path, path: &str) -> PathBuf {
    dir.join(path.trim_start_matches('/'))
}

fn io_err(
    path: &str,
    action: &'static str,
    file: &Path,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let (path, file) = (path.to_string(), file.to_path_buf());
    move |source| CgroupError::Io {
        path,
        action,
        file,
        source,
    }
}

fn write(path: &str, file: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(file, value).map_err(io_err(path, "write", file))
}

fn read(path: &str, file: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(file).map_err(io_err(path, "read", file))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events) → value of `key`.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Calls `f` on `dir` and every directory below it, parents first.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
}

/// Killing, freezing or removing the root cgroup would take the whole
/// host with it: refused whatever the caller computed.
fn not_root(path: &str) -> Result<(), CgroupError> {
    if path.trim_matches('/').is_empty() {
        return Err(CgroupError::Other {
            path: path.to_string(),
            message: "refusing to kill, freeze or remove the root cgroup".into(),
        });
    }
    Ok(())
}

/// Removes `dir` and the cgroups below it, children first. A cgroup with a
/// dying process is busy for a moment: retried until [`SETTLE`].
fn remove_tree(path: &str, dir: &Path) -> Result<(), CgroupError> {
    if !dir.is_dir() {
        return Ok(());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(path, &e.path())?;
            }
        }
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err(path, "remove", dir)(e)),
        }
    }
}

/// Polls `done` every few ms until it holds or [`SETTLE`] passes.
fn settle(path: &str, what: &str, mut done: impl FnMut() -> bool) -> Result<(), CgroupError> {
    let deadline = Instant::now() + SETTLE;
    let mut pause = Duration::from_micros(200);
    while !done() {
        if Instant::now() >= deadline {
            return Err(CgroupError::Other {
                path: path.into(),
                message: format!("{what}: not done after {}s", SETTLE.as_secs()),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    Ok(())
}

/// Freezes `path`, SIGKILLs what is listed, thaws (the signals land once
/// the tasks run): nothing forks past a freeze.
fn kill_frozen<C: Cgroups + ?Sized>(cg: &C, path: &str) -> Result<(), CgroupError> {
    let frozen = cg.freeze(path).is_ok();
    kill_pids(&cg.procs(path));
    if frozen {
        cg.thaw(path)?;
    }
    Ok(())
}

/// Waits until nothing is left in `path`, killing stragglers meanwhile.
fn until_empty<C: Cgroups + ?Sized>(cg: &C, path: &str) -> Result<(), CgroupError> {
    settle(path, "kill", || {
        let left = cg.procs(path);
        kill_pids(&left);
        left.is_empty()
    })
}

/// SIGKILL to each pid; gone ones are fine.
fn kill_pids(pids: &[i32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_matches_runc_conversion() {
        assert_eq!(Resources::cpu_weight(2), 1);
        assert_eq!(Resources::cpu_weight(1024), 39);
        assert_eq!(Resources::cpu_weight(262_144), 10_000);
        assert_eq!(Resources::cpu_weight(0), 1);
    }

    #[test]
    fn resources_round_trip_through_the_oci_spec() {
        let r = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            pids_limit: Some(100),
            devices: Some(devices::default_rules()),
        };
        let spec: oci_spec::runtime::LinuxResources =
            serde_json::from_value(r.to_spec_json()).unwrap();
        assert_eq!(Resources::from_spec(&spec), r);
        assert_eq!(r.to_spec_json()["memory"]["swap"], 64 << 20);
        let none: oci_spec::runtime::LinuxResources =
            serde_json::from_value(Resources::default().to_spec_json()).unwrap();
        assert_eq!(Resources::from_spec(&none), Resources::default());
    }

    #[test]
    fn mountinfo_yields_cgroup_mounts_with_their_controllers() {
        let text = "\
35 24 0:30 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
36 24 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 24 0:32 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw
38 24 0:33 / /proc rw - proc proc rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[1].options.contains(&"cpuacct".to_string()));
        assert_eq!(m[2].fstype, "cgroup2");
    }

    #[test]
    fn keyed_values_are_found_by_exact_key() {
        let t = "total_rss 10\nrss 4\ninactive_file 7\n";
        assert_eq!(keyed(t, "rss"), Some(4));
        assert_eq!(keyed(t, "total_rss"), Some(10));
        assert_eq!(keyed(t, "absent"), None);
    }
}
