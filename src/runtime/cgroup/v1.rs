//! cgroup v1: one hierarchy per controller (`/sys/fs/cgroup/<controller>`,
//! co-mounted ones sharing a directory). nodelet uses cpu, cpuacct, memory,
//! pids, freezer and devices; a path is created in each of their hierarchies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    io_err, keyed, kill_frozen, read, settle, under, until_empty, write, CgroupError, Cgroups,
    Mount, Resources, Stats,
};

/// The controllers every nodelet cgroup lives in.
pub const CONTROLLERS: [&str; 6] = ["cpu", "cpuacct", "memory", "pids", "freezer", "devices"];

#[derive(Debug, Clone)]
pub struct V1 {
    /// Controller → its hierarchy's mount point.
    mounts: BTreeMap<&'static str, PathBuf>,
}

impl V1 {
    /// From the host's cgroup mounts; every one of [`CONTROLLERS`] must be
    /// mounted.
    pub fn from_mounts(mounts: &[Mount]) -> Result<Self, CgroupError> {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for c in CONTROLLERS {
            match mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c))
            {
                Some(m) => {
                    found.insert(c, m.point.clone());
                }
                None => missing.push(c),
            }
        }
        if !missing.is_empty() {
            return Err(CgroupError::NotMounted(format!(
                "no cgroup2 at /sys/fs/cgroup, and the cgroup v1 controller(s) {} are not mounted",
                missing.join(", ")
            )));
        }
        Ok(V1 { mounts: found })
    }

    /// Hierarchies rooted at `root/<controller>` (tests).
    pub fn at(root: &Path) -> Self {
        V1 {
            mounts: CONTROLLERS.iter().map(|c| (*c, root.join(c))).collect(),
        }
    }

    /// `path` in `controller`'s hierarchy.
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        under(
            self.mounts
                .get(controller)
                .map(PathBuf::as_path)
                .unwrap_or(Path::new("/sys/fs/cgroup")),
            path,
        )
    }

    fn file(&self, controller: &str, path: &str, name: &str) -> PathBuf {
        self.dir(controller, path).join(name)
    }

    fn freezer_state(&self, path: &str) -> Result<String, CgroupError> {
        Ok(read(path, &self.file("freezer", path, "freezer.state"))?
            .trim()
            .to_string())
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        if let Some(s) = res.cpu_shares {
            write(path, &self.file("cpu", path, "cpu.shares"), &s.to_string())?;
        }
        if let Some(p) = res.cpu_period {
            write(
                path,
                &self.file("cpu", path, "cpu.cfs_period_us"),
                &p.to_string(),
            )?;
        }
        if let Some(q) = res.cpu_quota {
            write(
                path,
                &self.file("cpu", path, "cpu.cfs_quota_us"),
                &q.to_string(),
            )?;
        }
        if let Some(m) = res.memory_limit {
            write(
                path,
                &self.file("memory", path, "memory.limit_in_bytes"),
                &m.to_string(),
            )?;
            // No swap on top of the limit, as kubelet (memory+swap = memory).
            let memsw = self.file("memory", path, "memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(path, &memsw, &m.to_string())?;
            }
        }
        if let Some(p) = res.pids_limit {
            write(path, &self.file("pids", path, "pids.max"), &p.to_string())?;
        }
        if let Some(rules) = &res.devices {
            super::devices::checked(path, rules)?;
            // In order, as runc's v1 emulation: "deny a" first empties the
            // cgroup's list, each allow after it adds one entry.
            for r in rules {
                let file = if r.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(path, &self.file("devices", path, file), &r.v1_line())?;
            }
        }
        Ok(())
    }
}

impl Cgroups for V1 {
    fn version(&self) -> u8 {
        1
    }

    fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.mounts.values().map(|m| under(m, path)).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn create(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        for d in self.dirs(path) {
            std::fs::create_dir_all(&d).map_err(io_err(path, "create", &d))?;
        }
        self.apply(path, res)
    }

    fn join(&self, path: &str, pid: i32) -> Result<(), CgroupError> {
        for d in self.dirs(path) {
            write(path, &d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn freeze(&self, path: &str) -> Result<(), CgroupError> {
        super::not_root(path)?;
        let file = self.file("freezer", path, "freezer.state");
        write(path, &file, "FROZEN")?;
        // FREEZING until every task stopped; writing again nudges stragglers.
        settle(path, "freeze", || match self.freezer_state(path) {
            Ok(s) if s == "FROZEN" => true,
            _ => {
                let _ = std::fs::write(&file, "FROZEN");
                false
            }
        })
    }

    fn thaw(&self, path: &str) -> Result<(), CgroupError> {
        write(path, &self.file("freezer", path, "freezer.state"), "THAWED")?;
        settle(path, "thaw", || {
            self.freezer_state(path).is_ok_and(|s| s == "THAWED")
        })
    }

    /// FREEZING counts as frozen.
    fn freeze_file(&self, path: &str) -> (PathBuf, fn(&str) -> bool) {
        (self.file("freezer", path, "freezer.state"), |s| {
            s.trim() != "THAWED"
        })
    }

    fn stats(&self, path: &str) -> Result<Stats, CgroupError> {
        let num = |c: &str, f: &str| -> Result<u64, CgroupError> {
            Ok(read(path, &self.file(c, path, f))?
                .trim()
                .parse()
                .unwrap_or(0))
        };
        let mem = read(path, &self.file("memory", path, "memory.stat"))?;
        let usage = num("memory", "memory.usage_in_bytes")?;
        let inactive = keyed(&mem, "total_inactive_file").unwrap_or(0);
        let oom = read(path, &self.file("memory", path, "memory.oom_control"))?;
        Ok(Stats {
            cpu_usage_ns: num("cpuacct", "cpuacct.usage")?,
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(inactive),
            memory_rss: keyed(&mem, "total_rss").unwrap_or(0),
            page_faults: keyed(&mem, "total_pgfault").unwrap_or(0),
            major_page_faults: keyed(&mem, "total_pgmajfault").unwrap_or(0),
            pids: num("pids", "pids.current")?,
            oom_kills: keyed(&oom, "oom_kill").unwrap_or(0),
        })
    }

    /// Freeze, SIGKILL everything listed, thaw (the signals land once the
    /// tasks run), until the tree is empty: nothing forks past a freeze.
    fn kill_all(&self, path: &str) -> Result<(), CgroupError> {
        super::not_root(path)?;
        if self.procs(path).is_empty() {
            return Ok(());
        }
        kill_frozen(self, path)?;
        until_empty(self, path)
    }
}
