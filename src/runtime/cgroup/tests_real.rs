//! The backends against the kernel: v1 on this host's controller
//! hierarchies, v2 on its cgroup2 mount (`/sys/fs/cgroup/unified` here,
//! where no controller is attached, so limits are checked on plain files).
//! Root only; each test uses its own cgroup names.

use std::path::Path;
use std::process::{Child, Command};

use super::*;

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/nodelet-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A sleeping process, reaped by a thread once it dies.
fn sleeper() -> (i32, std::thread::JoinHandle<()>) {
    let mut c: Child = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = c.id() as i32;
    (pid, std::thread::spawn(move || drop(c.wait())))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn host_v1() -> Option<V1> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    V1::from_mounts(&parse_mountinfo(&info)).ok()
}

#[test]
fn v1_limits_freeze_stats_kill_and_remove() {
    let Some(cg) = host_v1() else {
        eprintln!("no cgroup v1 controllers here; the v2 tests cover this host");
        return;
    };
    let path = unique("v1");
    let res = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(64 << 20),
        pids_limit: Some(10),
        devices: None,
    };
    cg.create(&path, &res).unwrap();
    let file = |c: &str, f: &str| {
        std::fs::read_to_string(cg.dir(c, &path).join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(file("cpu", "cpu.shares"), "512");
    assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(file("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(
        file("memory", "memory.limit_in_bytes"),
        (64 << 20).to_string()
    );
    assert_eq!(file("pids", "pids.max"), "10");

    let (pid, reaper) = sleeper();
    cg.join(&path, pid).unwrap();
    assert_eq!(cg.procs(&path), vec![pid]);
    assert_eq!(cg.stats(&path).unwrap().pids, 1);
    cg.freeze(&path).unwrap();
    assert!(cg.is_frozen(&path).unwrap());
    assert_eq!(file("freezer", "freezer.state"), "FROZEN");
    cg.thaw(&path).unwrap();
    assert!(!cg.is_frozen(&path).unwrap());

    cg.remove(&path).unwrap();
    reaper.join().unwrap();
    assert!(!alive(pid));
    assert!(!cg.exists(&path), "{path} left behind");
    // Removing what is gone is fine.
    cg.remove(&path).unwrap();
}

#[test]
fn v1_removal_kills_a_process_that_moved_into_a_sub_cgroup() {
    let Some(cg) = host_v1() else { return };
    let path = unique("escape");
    cg.create(&path, &Resources::default()).unwrap();
    let (pid, reaper) = sleeper();
    cg.join(&path, pid).unwrap();
    // It moves itself further down in one hierarchy only.
    let sub = cg.dir("memory", &path).join("escaped");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cgroup.procs"), pid.to_string()).unwrap();
    cg.remove(&path).unwrap();
    reaper.join().unwrap();
    assert!(!alive(pid));
    assert!(!sub.exists() && !cg.exists(&path));
}

fn host_v2() -> Option<V2> {
    for m in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(m).join("cgroup.subtree_control").exists() {
            return Some(V2::at(Path::new(m)));
        }
    }
    None
}

#[test]
fn v2_freeze_kill_and_remove_on_a_real_cgroup2_mount() {
    let Some(cg) = host_v2() else {
        eprintln!("no cgroup2 mount here");
        return;
    };
    let path = unique("v2");
    cg.create(&path, &Resources::default()).unwrap();
    let (pid, reaper) = sleeper();
    cg.join(&path, pid).unwrap();
    assert_eq!(cg.procs(&path), vec![pid]);
    cg.freeze(&path).unwrap();
    assert!(cg.is_frozen(&path).unwrap());
    cg.thaw(&path).unwrap();
    assert!(!cg.is_frozen(&path).unwrap());
    cg.remove(&path).unwrap();
    reaper.join().unwrap();
    assert!(!alive(pid));
    assert!(!cg.exists(&path));
}

#[test]
fn v2_limits_are_written_in_v2_units() {
    let dir = tempfile::tempdir().unwrap();
    let cg = V2::at(dir.path());
    let leaf = dir.path().join("pod/c");
    std::fs::create_dir_all(&leaf).unwrap();
    std::fs::write(leaf.join("memory.swap.max"), "max").unwrap();
    std::fs::write(
        dir.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids",
    )
    .unwrap();
    let res = Resources {
        cpu_shares: Some(1024),
        cpu_quota: Some(25_000),
        cpu_period: Some(100_000),
        memory_limit: Some(1 << 30),
        pids_limit: Some(42),
        devices: None,
    };
    cg.create("/pod/c", &res).unwrap();
    let f = |n: &str| std::fs::read_to_string(leaf.join(n)).unwrap();
    assert_eq!(f("cpu.weight"), "39");
    assert_eq!(f("cpu.max"), "25000 100000");
    assert_eq!(f("memory.max"), (1u64 << 30).to_string());
    assert_eq!(f("memory.swap.max"), "0");
    assert_eq!(f("pids.max"), "42");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
    // Unlimited CPU keeps the period.
    let res = Resources {
        cpu_period: Some(100_000),
        ..Resources::default()
    };
    cg.create("/pod/c", &res).unwrap();
    assert_eq!(f("cpu.max"), "max 100000");
}

#[test]
fn the_root_cgroup_is_never_killed_frozen_or_removed() {
    let backends: Vec<Box<dyn Cgroups>> = [
        host_v1().map(|c| Box::new(c) as Box<dyn Cgroups>),
        host_v2().map(|c| Box::new(c) as Box<dyn Cgroups>),
    ]
    .into_iter()
    .flatten()
    .collect();
    if backends.is_empty() {
        return;
    }
    let (pid, reaper) = sleeper();
    for cg in &backends {
        for root in ["", "/", "//"] {
            for e in [cg.kill_all(root), cg.freeze(root), cg.remove(root)] {
                let e = e.unwrap_err().to_string();
                assert!(e.contains("refusing"), "{e}");
            }
        }
    }
    assert!(alive(pid), "nothing was killed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    reaper.join().unwrap();
}

/// Opens the block device node `node` (b 7:0, the host's loop0) and
/// /dev/zero from a shell that first moves itself into `procs`; returns
/// what it printed.
fn open_from_cgroup(procs: &Path, node: &Path) -> String {
    let script = format!(
        "echo $$ > {} && head -c 1 {} >/dev/null 2>/tmp/nodelet-devtest-$$ ; cat /tmp/nodelet-devtest-$$; rm -f /tmp/nodelet-devtest-$$; head -c 1 /dev/zero | wc -c",
        procs.display(),
        node.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn loop0_node(dir: &Path) -> std::path::PathBuf {
    let node = dir.join("l0");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap();
    node
}

#[test]
fn v1_device_allowlist_is_the_kernels_list_and_refuses_a_disk() {
    let Some(cg) = host_v1() else {
        eprintln!("no cgroup v1 controllers here");
        return;
    };
    let path = unique("v1dev");
    let res = Resources {
        devices: Some(devices::default_rules()),
        ..Resources::default()
    };
    cg.create(&path, &res).unwrap();
    let list = std::fs::read_to_string(cg.dir("devices", &path).join("devices.list")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines,
        [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
            "c 10:229 rwm"
        ]
    );
    let tmp = tempfile::tempdir().unwrap();
    let node = loop0_node(tmp.path());
    let procs = cg.dir("devices", &path).join("cgroup.procs");
    let out = open_from_cgroup(&procs, &node);
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.trim_end().ends_with('1'), "/dev/zero must open: {out}");
    cg.remove(&path).unwrap();
}

#[test]
fn v2_device_program_refuses_a_disk_and_allows_the_safe_nodes() {
    let Some(cg) = host_v2() else {
        eprintln!("no cgroup2 mount here");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = loop0_node(tmp.path());
    let path = unique("v2dev");
    // Before: nothing refuses the open (loop0 may have no backing file,
    // but the error is then the driver's, not a permission).
    cg.create(&path, &Resources::default()).unwrap();
    let procs = cg.dirs(&path)[0].join("cgroup.procs");
    let before = open_from_cgroup(&procs, &node);
    assert!(!before.contains("Operation not permitted"), "{before}");
    cg.remove(&path).unwrap();

    let res = Resources {
        devices: Some(devices::default_rules()),
        ..Resources::default()
    };
    cg.create(&path, &res).unwrap();
    let out = open_from_cgroup(&procs, &node);
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.trim_end().ends_with('1'), "/dev/zero must open: {out}");
    cg.remove(&path).unwrap();
}
