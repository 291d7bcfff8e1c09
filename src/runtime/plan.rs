//! The container plan: an OCI runtime spec (`config.json`) built from a
//! runtime-level container description. The native runtime executes it;
//! runc or crun could take the same file. Knows nothing of Kubernetes.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde_json::json;

use super::cgroup::{devices, Resources};

/// Docker's default capability set, which containerd's CRI uses too.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc/containerd's default masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc/containerd's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Annotations carrying the overlay rootfs (lower dirs top-most first,
/// colon-separated; upper; work). Without them `root.path` is used as is.
pub const ANNOTATION_LOWER: &str = "dev.nodelet.rootfs.lower";
pub const ANNOTATION_UPPER: &str = "dev.nodelet.rootfs.upper";
pub const ANNOTATION_WORK: &str = "dev.nodelet.rootfs.work";

/// Every capability the kernel knows, for `drop: [ALL]` / `add: [ALL]`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// overlayfs: lower dirs top-most first, then upper and work dirs.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A prepared directory (tests, or a runc-style bundle).
    Dir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
    /// `rprivate` (default), `rslave` or `rshared`.
    pub propagation: Option<String>,
}

/// A device node to create in the container's `/dev` (OCI `linux.devices`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    /// `c` or `b`.
    #[serde(rename = "type")]
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Directories of the host's `/dev` that are mounts of their own in every
/// container, not devices to copy.
const NOT_HOST_DEVICES: &[&str] = &[
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/dev/.lxc",
    "/dev/.udev",
];

/// Every device node under the host's `/dev` (what containerd's
/// `WithHostDevices` gives a privileged container), sorted by path.
pub fn host_devices() -> Vec<DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(dir: &std::path::Path, out: &mut Vec<DeviceNode>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            let text = path.display().to_string();
            if ft.is_dir() {
                if !NOT_HOST_DEVICES.contains(&text.as_str()) {
                    walk(&path, out);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            let rdev = md.rdev();
            out.push(DeviceNode {
                path: text,
                kind,
                major: i64::try_from(nix::sys::stat::major(rdev)).unwrap_or(0),
                minor: i64::try_from(nix::sys::stat::minor(rdev)).unwrap_or(0),
                file_mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
            });
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// What to run, described without Kubernetes words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub rootfs: Rootfs,
    pub readonly_rootfs: bool,
    pub mounts: Vec<BindMount>,
    /// Normalized names (`CAP_NET_ADMIN`); `ALL` allowed.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    /// Join the pod's network, IPC and UTS namespaces (held by the shim)
    /// instead of creating new ones.
    pub pod_namespaces: bool,
    /// `linux.cgroupsPath`: the cgroup the container runs in (created with
    /// `resources` by the runtime); none = the runtime's own.
    pub cgroup_path: Option<String>,
    pub resources: Resources,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
    /// runc's privileged container: every capability and device, nothing
    /// masked or read-only, `/sys` writable.
    pub privileged: bool,
    /// Device nodes to create in `/dev` (a privileged container's: the host's).
    pub devices: Vec<DeviceNode>,
    /// OCI `linux.seccomp`; none = unconfined.
    pub seccomp: Option<serde_json::Value>,
}

impl ContainerConfig {
    /// A minimal root container in `rootfs` running `args`.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        ContainerConfig {
            args,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "container".into(),
            rootfs,
            readonly_rootfs: false,
            mounts: Vec::new(),
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            no_new_privileges: true,
            pod_namespaces: false,
            cgroup_path: None,
            resources: Resources::default(),
            oom_score_adj: None,
            privileged: false,
            devices: Vec::new(),
            seccomp: None,
        }
    }

    /// The effective capability set: Docker's default, minus drops, plus
    /// adds (`ALL` on either side as Kubernetes allows), in a stable order.
    pub fn capabilities(&self) -> Vec<String> {
        if self.privileged {
            return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        }
        let mut set: Vec<String> = if self.cap_drop.iter().any(|c| c == "ALL" || c == "CAP_ALL") {
            Vec::new()
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .filter(|c| !self.cap_drop.iter().any(|d| d == *c))
                .map(|c| c.to_string())
                .collect()
        };
        if self.cap_add.iter().any(|c| c == "ALL" || c == "CAP_ALL") {
            return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        }
        for c in &self.cap_add {
            if !set.contains(c) {
                set.push(c.clone());
            }
        }
        set
    }
}

#[derive(Debug, thiserror::Error)]
#[error("build OCI runtime spec")]
pub struct PlanError(#[source] serde_json::Error);

/// The OCI runtime spec for `cfg`: the same `config.json` runc would take.
pub fn build_spec(cfg: &ContainerConfig) -> Result<Spec, PlanError> {
    let caps = cfg.capabilities();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if cfg.privileged { "rw" } else { "ro" }]}),
    ];
    for m in &cfg.mounts {
        let mut options = vec![
            "rbind".to_string(),
            if m.readonly { "ro" } else { "rw" }.to_string(),
        ];
        options.push(m.propagation.clone().unwrap_or_else(|| "rprivate".into()));
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": options}));
    }
    let (root_path, annotations) = match &cfg.rootfs {
        Rootfs::Dir(p) => (p.clone(), json!({})),
        Rootfs::Overlay { lower, upper, work } => {
            let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
            (
                PathBuf::from("rootfs"),
                json!({ANNOTATION_LOWER: lower.join(":"), ANNOTATION_UPPER: upper.display().to_string(), ANNOTATION_WORK: work.display().to_string()}),
            )
        }
    };
    let namespaces = if cfg.pod_namespaces {
        json!([{"type": "pid"}, {"type": "mount"}])
    } else {
        json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}])
    };
    // Every container is behind a device allowlist (runc's default) unless
    // privileged; the runtime enforces it in the container's cgroup.
    let mut resources = cfg.resources.clone();
    resources.devices = Some(if cfg.privileged {
        devices::allow_all()
    } else {
        devices::default_rules()
    });
    let (masked, readonly): (&[&str], &[&str]) = if cfg.privileged {
        (&[], &[])
    } else {
        (MASKED_PATHS, READONLY_PATHS)
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "rootfsPropagation": "rprivate",
        "resources": resources.to_spec_json(),
    });
    if !cfg.devices.is_empty() {
        linux["devices"] = json!(cfg.devices);
    }
    if let Some(s) = &cfg.seccomp {
        linux["seccomp"] = s.clone();
    }
    if let Some(p) = &cfg.cgroup_path {
        linux["cgroupsPath"] = json!(p);
    }
    let mut spec = json!({
        // 1.0.2: the newest version runc 1.1 and crun 1.8 (Debian 12) accept.
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": cfg.uid, "gid": cfg.gid, "additionalGids": cfg.additional_gids, "umask": 0o022},
            "args": cfg.args,
            "env": cfg.env,
            "cwd": cfg.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": cfg.no_new_privileges,
        },
        "root": {"path": root_path, "readonly": cfg.readonly_rootfs},
        "hostname": cfg.hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    if let Some(adj) = cfg.oom_score_adj {
        spec["process"]["oomScoreAdj"] = json!(adj);
    }
    serde_json::from_value(spec).map_err(PlanError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ContainerConfig {
        ContainerConfig::new(Rootfs::Dir("/r".into()), vec!["sh".into()])
    }

    #[test]
    fn default_capabilities_are_dockers() {
        assert_eq!(cfg().capabilities().len(), 14);
    }

    #[test]
    fn drop_all_then_add_keeps_only_the_added() {
        let mut c = cfg();
        c.cap_drop = vec!["ALL".into()];
        c.cap_add = vec!["CAP_NET_ADMIN".into()];
        assert_eq!(c.capabilities(), ["CAP_NET_ADMIN"]);
    }

    #[test]
    fn drops_and_adds_edit_the_default_set() {
        let mut c = cfg();
        c.cap_drop = vec!["CAP_NET_RAW".into()];
        c.cap_add = vec!["CAP_SYS_TIME".into(), "CAP_CHOWN".into()];
        let caps = c.capabilities();
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert!(caps.contains(&"CAP_SYS_TIME".to_string()));
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn the_spec_round_trips_as_runc_config_json() {
        let mut c = cfg();
        c.rootfs = Rootfs::Overlay {
            lower: vec!["/l2".into(), "/l1".into()],
            upper: "/u".into(),
            work: "/w".into(),
        };
        c.mounts.push(BindMount {
            source: "/data".into(),
            destination: "/data".into(),
            readonly: true,
            propagation: None,
        });
        let spec = build_spec(&c).unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.annotations().as_ref().unwrap()[ANNOTATION_LOWER],
            "/l2:/l1"
        );
        assert_eq!(
            back.linux()
                .as_ref()
                .unwrap()
                .masked_paths()
                .as_ref()
                .unwrap()
                .len(),
            MASKED_PATHS.len()
        );
        let m = back
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().to_str() == Some("/data"))
            .unwrap();
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(
            back.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
    }
}
