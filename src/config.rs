//! The daemon configuration: a YAML file in the spirit of
//! `KubeletConfiguration` (`apiVersion: nodelet.dev/v1alpha1`,
//! `kind: NodeletConfiguration`). Parsing is strict: an unknown key is an
//! error with its path. Defaults follow the kubelet's
//! (`k8s:pkg/kubelet/apis/config/v1beta1/defaults.go`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;

pub const API_VERSION: &str = "nodelet.dev/v1alpha1";
pub const KIND: &str = "NodeletConfiguration";
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/nodelet";
pub const DEFAULT_LOG_DIR: &str = "/var/log/pods";
pub const DEFAULT_SOCKET: &str = "/run/nodelet/nodelet.sock";
pub const DEFAULT_RUN_DIR: &str = "/run/nodelet";
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeletConfiguration {
    pub api_version: String,
    pub kind: String,
    /// State: content store, snapshots, pod state.
    pub root_dir: PathBuf,
    /// Container logs, kubelet layout `<ns>_<pod>_<uid>/<container>/<n>.log`.
    pub log_dir: PathBuf,
    /// The API's unix socket.
    pub socket: PathBuf,
    /// Directory of static pod manifests; none when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_pod_path: Option<PathBuf>,
    /// Node name; the host name (lowercased) when empty.
    pub node_name: String,
    pub max_pods: u32,
    /// Rotate a container log at this size (a Kubernetes quantity).
    pub container_log_max_size: String,
    /// Files kept per container, the live one included (at least 2).
    pub container_log_max_files: u32,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: u8,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: u8,
    /// An image is never collected sooner than this after it was first
    /// seen (a Go duration).
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: String,
    /// How often image GC looks at disk use (kubelet: a fixed 5m).
    #[serde(rename = "imageGCPeriod")]
    pub image_gc_period: String,
    /// One image pull at a time node-wide.
    pub serialize_image_pulls: bool,
    /// Concurrent pulls when not serialized; 0 = unlimited.
    pub max_parallel_image_pulls: u32,
    /// Layers downloaded at once within one pull.
    pub max_concurrent_downloads: u32,
    pub registries: RegistriesConfig,
    pub runtime: RuntimeKind,
    /// Process ids per pod (pids cgroup); -1 = unlimited.
    pub pod_pids_limit: i64,
    pub cgroup_driver: CgroupDriver,
    /// Parent of nodelet's cgroups, e.g. `/nodelet`.
    pub cgroup_root: String,
    /// A container without a `seccompProfile` gets `RuntimeDefault`, as
    /// kubelet's `--seccomp-default`. On by default here (kubelet's is
    /// off): podman and Docker confine every container by default, and a
    /// node agent should not be the one runtime that does not.
    pub seccomp_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Hosts (`host` or `host:port`) reached over plain HTTP. 127.0.0.0/8 and
    /// localhost always may be, as with Docker.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Credentials per registry host; `~/.docker/config.json` is read too.
    #[serde(default)]
    pub auths: Vec<RegistryAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAuth {
    pub registry: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// nodelet's own runtime and per-pod shim.
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    /// Not supported yet: refused at start-up with a clear error.
    Systemd,
}

impl Default for NodeletConfiguration {
    fn default() -> Self {
        NodeletConfiguration {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            socket: PathBuf::from(DEFAULT_SOCKET),
            static_pod_path: None,
            node_name: String::new(),
            max_pods: 110,
            container_log_max_size: "10Mi".to_string(),
            container_log_max_files: 5,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: "2m0s".to_string(),
            image_gc_period: "5m0s".to_string(),
            serialize_image_pulls: true,
            max_parallel_image_pulls: 0,
            max_concurrent_downloads: 3,
            registries: RegistriesConfig::default(),
            runtime: RuntimeKind::Native,
            pod_pids_limit: -1,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/nodelet".to_string(),
            seccomp_default: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: config file is larger than 1 MiB", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {field}: {message}", path.display())]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// A partially specified file: every key optional, merged over the defaults.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    api_version: String,
    kind: String,
    root_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    static_pod_path: Option<PathBuf>,
    node_name: Option<String>,
    max_pods: Option<u32>,
    container_log_max_size: Option<String>,
    container_log_max_files: Option<u32>,
    #[serde(
        rename = "imageGCHighThresholdPercent",
        alias = "imageGcHighThresholdPercent"
    )]
    image_gc_high_threshold_percent: Option<u8>,
    #[serde(
        rename = "imageGCLowThresholdPercent",
        alias = "imageGcLowThresholdPercent"
    )]
    image_gc_low_threshold_percent: Option<u8>,
    #[serde(rename = "imageMinimumGCAge", alias = "imageMinimumGcAge")]
    image_minimum_gc_age: Option<String>,
    #[serde(rename = "imageGCPeriod", alias = "imageGcPeriod")]
    image_gc_period: Option<String>,
    serialize_image_pulls: Option<bool>,
    max_parallel_image_pulls: Option<u32>,
    max_concurrent_downloads: Option<u32>,
    registries: Option<RegistriesConfig>,
    runtime: Option<RuntimeKind>,
    pod_pids_limit: Option<i64>,
    cgroup_driver: Option<CgroupDriver>,
    cgroup_root: Option<String>,
    seccomp_default: Option<bool>,
}

impl NodeletConfiguration {
    /// `imageMinimumGCAge` (validated at load).
    pub fn image_minimum_gc_age(&self) -> std::time::Duration {
        crate::time::parse_go_duration(&self.image_minimum_gc_age).unwrap_or_default()
    }

    /// `imageGCPeriod` (validated at load).
    pub fn image_gc_period(&self) -> std::time::Duration {
        crate::time::parse_go_duration(&self.image_gc_period)
            .unwrap_or(std::time::Duration::from_secs(300))
    }

    /// Reads, merges over the defaults and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(text);
        let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "(root)".to_string(),
                p => p,
            };
            let inner = e.into_inner();
            let location = inner
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()));
            // serde_norway prefixes the path and appends the location itself.
            let text = inner.to_string();
            let segs: Vec<&str> = field.split('.').collect();
            let text = (1..=segs.len())
                .rev()
                .find_map(|n| text.strip_prefix(&format!("{}: ", segs[..n].join("."))))
                .unwrap_or(&text);
            let text = text.find(" at line ").map_or(text, |i| &text[..i]);
            let message = format!("{text}{}", location.unwrap_or_default());
            ConfigError::Parse {
                path: path.to_path_buf(),
                field,
                message,
            }
        })?;
        let invalid = |field, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if file.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!(
                    "Unsupported value: {:?}: supported values: \"{API_VERSION}\"",
                    file.api_version
                ),
            ));
        }
        if file.kind != KIND {
            return Err(invalid(
                "kind",
                format!(
                    "Unsupported value: {:?}: supported values: \"{KIND}\"",
                    file.kind
                ),
            ));
        }
        let d = NodeletConfiguration::default();
        let cfg = NodeletConfiguration {
            api_version: file.api_version,
            kind: file.kind,
            root_dir: file.root_dir.unwrap_or(d.root_dir),
            log_dir: file.log_dir.unwrap_or(d.log_dir),
            socket: file.socket.unwrap_or(d.socket),
            static_pod_path: file.static_pod_path.filter(|p| !p.as_os_str().is_empty()),
            node_name: file.node_name.unwrap_or(d.node_name),
            max_pods: file.max_pods.unwrap_or(d.max_pods),
            container_log_max_size: file
                .container_log_max_size
                .unwrap_or(d.container_log_max_size),
            container_log_max_files: file
                .container_log_max_files
                .unwrap_or(d.container_log_max_files),
            image_gc_high_threshold_percent: file
                .image_gc_high_threshold_percent
                .unwrap_or(d.image_gc_high_threshold_percent),
            image_gc_low_threshold_percent: file
                .image_gc_low_threshold_percent
                .unwrap_or(d.image_gc_low_threshold_percent),
            image_minimum_gc_age: file.image_minimum_gc_age.unwrap_or(d.image_minimum_gc_age),
            image_gc_period: file.image_gc_period.unwrap_or(d.image_gc_period),
            serialize_image_pulls: file
                .serialize_image_pulls
                .unwrap_or(d.serialize_image_pulls),
            max_parallel_image_pulls: file
                .max_parallel_image_pulls
                .unwrap_or(d.max_parallel_image_pulls),
            max_concurrent_downloads: file
                .max_concurrent_downloads
                .unwrap_or(d.max_concurrent_downloads),
            registries: file.registries.unwrap_or(d.registries),
            runtime: file.runtime.unwrap_or(d.runtime),
            pod_pids_limit: file.pod_pids_limit.unwrap_or(d.pod_pids_limit),
            cgroup_driver: file.cgroup_driver.unwrap_or(d.cgroup_driver),
            cgroup_root: file.cgroup_root.unwrap_or(d.cgroup_root),
            seccomp_default: file.seccomp_default.unwrap_or(d.seccomp_default),
        };
        cfg.validate()
            .map_err(|(field, message)| invalid(field, message))?;
        Ok(cfg)
    }

    /// Range checks as the kubelet's `ValidateKubeletConfiguration` does.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let paths = [
            ("rootDir", Some(&self.root_dir)),
            ("logDir", Some(&self.log_dir)),
            ("socket", Some(&self.socket)),
            ("staticPodPath", self.static_pod_path.as_ref()),
        ];
        for (field, p) in paths {
            if let Some(p) = p.filter(|p| !p.is_absolute()) {
                return Err((
                    field,
                    format!(
                        "Invalid value: {:?}: must be an absolute path",
                        p.display().to_string()
                    ),
                ));
            }
        }
        if self.max_pods == 0 {
            return Err(("maxPods", "Invalid value: 0: must be greater than 0".into()));
        }
        match Quantity::parse(&self.container_log_max_size) {
            Ok(q) if q > 0 => {}
            Ok(_) => {
                return Err((
                    "containerLogMaxSize",
                    format!(
                        "Invalid value: {:?}: must be greater than 0",
                        self.container_log_max_size
                    ),
                ))
            }
            Err(e) => {
                return Err((
                    "containerLogMaxSize",
                    format!("Invalid value: {:?}: {e}", self.container_log_max_size),
                ))
            }
        }
        if self.container_log_max_files < 2 {
            return Err((
                "containerLogMaxFiles",
                format!(
                    "Invalid value: {}: must be at least 2",
                    self.container_log_max_files
                ),
            ));
        }
        let (hi, lo) = (
            self.image_gc_high_threshold_percent,
            self.image_gc_low_threshold_percent,
        );
        if hi > 100 {
            return Err((
                "imageGCHighThresholdPercent",
                format!("Invalid value: {hi}: must be between 0 and 100, inclusive"),
            ));
        }
        if lo >= hi {
            return Err((
                "imageGCLowThresholdPercent",
                format!(
                    "Invalid value: {lo}: must be less than imageGCHighThresholdPercent ({hi})"
                ),
            ));
        }
        for (field, v) in [
            ("imageMinimumGCAge", &self.image_minimum_gc_age),
            ("imageGCPeriod", &self.image_gc_period),
        ] {
            crate::time::parse_go_duration(v)
                .map_err(|e| (field, format!("Invalid value: {e}")))?;
        }
        if self.image_gc_period() < std::time::Duration::from_secs(1) {
            return Err((
                "imageGCPeriod",
                format!(
                    "Invalid value: {:?}: must be at least 1s",
                    self.image_gc_period
                ),
            ));
        }
        if self.max_concurrent_downloads == 0 {
            return Err((
                "maxConcurrentDownloads",
                "Invalid value: 0: must be greater than 0".into(),
            ));
        }
        if self.pod_pids_limit < -1 || self.pod_pids_limit == 0 {
            return Err((
                "podPidsLimit",
                format!(
                    "Invalid value: {}: must be -1 (unlimited) or positive",
                    self.pod_pids_limit
                ),
            ));
        }
        if !self.cgroup_root.starts_with('/') {
            return Err((
                "cgroupRoot",
                format!("Invalid value: {:?}: must start with '/'", self.cgroup_root),
            ));
        }
        for host in &self.registries.insecure {
            if host.is_empty() || host.contains('/') {
                return Err(("registries.insecure", format!("Invalid value: {host:?}: must be a host or host:port, without scheme or path")));
            }
        }
        Ok(())
    }

    /// The full default file, as `nodelet config defaults` prints it.
    pub fn defaults_yaml() -> String {
        serde_norway::to_string(&NodeletConfiguration::default()).unwrap_or_default()
    }

    /// The node name to use: configured, else the lowercased host name.
    pub fn effective_node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "localhost".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeletConfiguration, ConfigError> {
        NodeletConfiguration::parse(Path::new("nodelet.yaml"), text)
    }

    const HEAD: &str = "apiVersion: nodelet.dev/v1alpha1\nkind: NodeletConfiguration\n";

    #[test]
    fn minimal_file_gets_kubelet_defaults() {
        let c = parse(HEAD).unwrap();
        assert_eq!(c, NodeletConfiguration::default());
        assert_eq!(
            (
                c.max_pods,
                c.container_log_max_files,
                c.image_gc_high_threshold_percent,
                c.image_gc_low_threshold_percent
            ),
            (110, 5, 85, 80)
        );
        assert_eq!(c.container_log_max_size, "10Mi");
        assert!(c.serialize_image_pulls);
    }

    #[test]
    fn printed_defaults_parse_back_to_defaults() {
        let text = NodeletConfiguration::defaults_yaml();
        assert_eq!(parse(&text).unwrap(), NodeletConfiguration::default());
        assert!(text.contains("imageGCHighThresholdPercent: 85"), "{text}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = parse(&format!("{HEAD}registries:\n  insecur: [a]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nodelet.yaml: registries.insecur: unknown field `insecur`, expected `insecure` or `auths` (line 4, column 3)"), "{e}");
        let e = parse(&format!("{HEAD}maxPod: 3\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `maxPod`"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse(&format!("{HEAD}maxPods: lots\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("nodelet.yaml: maxPods: invalid type"), "{e}");
    }

    #[test]
    fn wrong_kind_and_version_are_rejected() {
        let e = parse("apiVersion: v1\nkind: NodeletConfiguration\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion: Unsupported value: \"v1\""), "{e}");
        let e = parse("apiVersion: nodelet.dev/v1alpha1\nkind: KubeletConfiguration\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind: Unsupported value"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        for (extra, field) in [
            ("maxPods: 0", "maxPods"),
            ("containerLogMaxFiles: 1", "containerLogMaxFiles"),
            ("containerLogMaxSize: 10Qi", "containerLogMaxSize"),
            (
                "imageGCLowThresholdPercent: 90",
                "imageGCLowThresholdPercent",
            ),
            (
                "imageGCHighThresholdPercent: 101",
                "imageGCHighThresholdPercent",
            ),
            ("rootDir: relative/dir", "rootDir"),
            ("podPidsLimit: 0", "podPidsLimit"),
            (
                "registries: {insecure: [\"http://x\"]}",
                "registries.insecure",
            ),
        ] {
            let e = parse(&format!("{HEAD}{extra}\n")).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { field: f, .. } if *f == field),
                "{extra}: {e}"
            );
        }
    }
}
