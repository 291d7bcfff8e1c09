//! cgroup v2: one unified hierarchy. Controllers are enabled down the
//! path through `cgroup.subtree_control`; `cgroup.freeze`, `cgroup.kill`
//! and `cgroup.events` do the rest.

use std::path::{Path, PathBuf};

use super::{
    io_err, keyed, kill_frozen, settle, under, until_empty, write, CgroupError, Cgroups, Resources,
    Stats,
};

/// Controllers enabled for nodelet's subtree (those the kernel offers).
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2 {
    mount: PathBuf,
}

impl V2 {
    pub fn at(mount: &Path) -> Self {
        V2 {
            mount: mount.to_path_buf(),
        }
    }

    fn dir(&self, path: &str) -> PathBuf {
        under(&self.mount, path)
    }

    /// `key` of `cgroup.events` is 1.
    fn event(&self, path: &str, key: &str) -> bool {
        std::fs::read_to_string(self.dir(path).join("cgroup.events"))
            .ok()
            .and_then(|t| keyed(&t, key))
            == Some(1)
    }

    /// Enables our controllers in every ancestor of `path` (a cgroup's
    /// limits need them enabled in its parent).
    fn enable_controllers(&self, path: &str) -> Result<(), CgroupError> {
        let mut dir = self.mount.clone();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            let offered =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let wanted: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| offered.split_whitespace().any(|o| o == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !wanted.is_empty() {
                write(path, &dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
            }
            dir = dir.join(part);
        }
        Ok(())
    }

    fn apply(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        let d = self.dir(path);
        if let Some(s) = res.cpu_shares {
            write(
                path,
                &d.join("cpu.weight"),
                &Resources::cpu_weight(s).to_string(),
            )?;
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let quota = res
                .cpu_quota
                .map_or_else(|| "max".to_string(), |q| q.to_string());
            let period = res.cpu_period.unwrap_or(100_000);
            write(path, &d.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(m) = res.memory_limit {
            write(path, &d.join("memory.max"), &m.to_string())?;
            let swap = d.join("memory.swap.max");
            if swap.exists() {
                write(path, &swap, "0")?;
            }
        }
        if let Some(p) = res.pids_limit {
            write(path, &d.join("pids.max"), &p.to_string())?;
        }
        if let Some(rules) = &res.devices {
            self.attach_devices(path, rules)?;
        }
        Ok(())
    }

    /// cgroup v2 has no devices files: the allowlist is an eBPF program
    /// attached to the cgroup (as runc and crun do), kept by the kernel as
    /// long as the cgroup exists.
    fn attach_devices(
        &self,
        path: &str,
        rules: &[super::devices::DeviceRule],
    ) -> Result<(), CgroupError> {
        use super::devices;
        devices::checked(path, rules)?;
        if devices::allows_everything(rules) {
            return Ok(());
        }
        let d = self.dir(path);
        let prog = crate::sys::bpf::load_device_program(&devices::program(rules))
            .map_err(io_err(path, "load the device program for", &d))?;
        let dir = std::fs::File::open(&d).map_err(io_err(path, "open", &d))?;
        crate::sys::bpf::attach_device_program(
            std::os::fd::AsFd::as_fd(&dir),
            std::os::fd::AsFd::as_fd(&prog),
        )
        .map_err(io_err(path, "attach the device program to", &d))
    }
}

impl Cgroups for V2 {
    fn version(&self) -> u8 {
        2
    }

    fn dirs(&self, path: &str) -> Vec<PathBuf> {
        vec![self.dir(path)]
    }

    fn create(&self, path: &str, res: &Resources) -> Result<(), CgroupError> {
        let d = self.dir(path);
        std::fs::create_dir_all(&d).map_err(io_err(path, "create", &d))?;
        self.enable_controllers(path)?;
        self.apply(path, res)
    }

    fn join(&self, path: &str, pid: i32) -> Result<(), CgroupError> {
        write(path, &self.dir(path).join("cgroup.procs"), &pid.to_string())
    }

    fn freeze(&self, path: &str) -> Result<(), CgroupError> {
        super::not_root(path)?;
        write(path, &self.dir(path).join("cgroup.freeze"), "1")?;
        settle(path, "freeze", || self.event(path, "frozen"))
    }

    fn thaw(&self, path: &str) -> Result<(), CgroupError> {
        write(path, &self.dir(path).join("cgroup.freeze"), "0")?;
        settle(path, "thaw", || !self.event(path, "frozen"))
    }

    fn freeze_file(&self, path: &str) -> (PathBuf, fn(&str) -> bool) {
        (self.dir(path).join("cgroup.freeze"), |s| s.trim() == "1")
    }

    fn stats(&self, path: &str) -> Result<Stats, CgroupError> {
        let d = self.dir(path);
        let text = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        let (cpu, mem, events) = (text("cpu.stat"), text("memory.stat"), text("memory.events"));
        let usage = text("memory.current").trim().parse().unwrap_or(0);
        if !d.is_dir() {
            return Err(io_err(path, "read", &d)(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            )));
        }
        Ok(Stats {
            cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
            memory_usage: usage,
            memory_working_set: usage.saturating_sub(keyed(&mem, "inactive_file").unwrap_or(0)),
            memory_rss: keyed(&mem, "anon").unwrap_or(0),
            page_faults: keyed(&mem, "pgfault").unwrap_or(0),
            major_page_faults: keyed(&mem, "pgmajfault").unwrap_or(0),
            pids: text("pids.current").trim().parse().unwrap_or(0),
            oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
        })
    }

    /// `cgroup.kill` (Linux 5.14) kills the whole subtree at once; without
    /// it, freeze + SIGKILL + thaw as on v1.
    fn kill_all(&self, path: &str) -> Result<(), CgroupError> {
        super::not_root(path)?;
        if self.procs(path).is_empty() {
            return Ok(());
        }
        let kill = self.dir(path).join("cgroup.kill");
        if kill.exists() {
            write(path, &kill, "1")?;
        } else {
            kill_frozen(self, path)?;
        }
        until_empty(self, path)
    }
}
