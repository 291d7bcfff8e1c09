//! A container's confinement from its pod's and its own security context
//! and the node's defaults: privileged or not, and which seccomp profile,
//! as kubelet and containerd's CRI decide them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// The node's security settings.
#[derive(Debug, Clone)]
pub struct SecurityDefaults {
    /// `seccompDefault`: RuntimeDefault for containers that name no profile.
    pub seccomp_default: bool,
    /// `<root>/seccomp`: where Localhost profiles live.
    pub seccomp_root: PathBuf,
}

impl Default for SecurityDefaults {
    /// What tests and fakes get: the node default on, profiles nowhere.
    fn default() -> Self {
        SecurityDefaults {
            seccomp_default: true,
            seccomp_root: PathBuf::from("/nonexistent/seccomp"),
        }
    }
}

/// Which seccomp profile a container runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    Unconfined,
    RuntimeDefault,
    /// Path under the node's seccomp root.
    Localhost(String),
}

/// `securityContext.privileged` of `c`.
pub fn privileged(c: &Container) -> bool {
    c.security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// kubelet's `getSeccompProfile`: the container's field, else the pod's,
/// else RuntimeDefault when the node defaults to it, else Unconfined. A
/// privileged container is never confined (containerd's CRI
/// `generateSeccompSpecOpts` returns nothing for it).
pub fn seccomp(pod: &Pod, c: &Container, defaults: &SecurityDefaults) -> Seccomp {
    if privileged(c) {
        return Seccomp::Unconfined;
    }
    let field = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.seccomp_profile.as_ref())
        });
    match field {
        Some(p) if p.type_ == "Unconfined" => Seccomp::Unconfined,
        Some(p) if p.type_ == "Localhost" => {
            Seccomp::Localhost(p.localhost_profile.clone().unwrap_or_default())
        }
        Some(_) => Seccomp::RuntimeDefault,
        None if defaults.seccomp_default => Seccomp::RuntimeDefault,
        None => Seccomp::Unconfined,
    }
}

/// Largest Localhost profile read.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// The OCI `linux.seccomp` for `choice`, for a container whose bounding
/// set is `caps`. A Localhost profile is opened beneath the seccomp root
/// (no `..`, no absolute path, no symlink leading out); the error is the
/// message the container's `CreateContainerError` shows.
pub fn seccomp_profile(
    choice: &Seccomp,
    caps: &[String],
    root: &Path,
) -> Result<Option<serde_json::Value>, String> {
    use crate::runtime::seccomp;
    match choice {
        Seccomp::Unconfined => Ok(None),
        Seccomp::RuntimeDefault => Ok(Some(seccomp::runtime_default(caps))),
        Seccomp::Localhost(rel) => {
            let shown = root.join(rel);
            let text = read_beneath(root, rel)
                .map_err(|e| format!("failed to load seccomp profile {}: {e}", shown.display()))?;
            seccomp::from_file_profile(&text, caps)
                .map(Some)
                .map_err(|e| format!("seccomp profile {}: {e}", shown.display()))
        }
    }
}

/// Reads `rel` under `root` with every component resolved inside it.
fn read_beneath(root: &Path, rel: &str) -> Result<String, String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return Err("the path must be relative and must not contain '..'".into());
    }
    let dir = std::fs::File::open(root).map_err(|e| e.to_string())?;
    let fd = openat2(
        &dir,
        rel,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(|e| match e {
        nix::errno::Errno::EXDEV => "the path leads outside the seccomp directory".to_string(),
        other => other.desc().to_lowercase(),
    })?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_PROFILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!("larger than {MAX_PROFILE_BYTES} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    const BASE: &str = "
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: a
    image: i
";

    #[test]
    fn the_container_field_wins_over_the_pod_and_the_node() {
        let mut p = pod(BASE);
        let defaults = SecurityDefaults::default();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(seccomp(&p, &c, &defaults), Seccomp::RuntimeDefault);
        let off = SecurityDefaults {
            seccomp_default: false,
            ..SecurityDefaults::default()
        };
        assert_eq!(seccomp(&p, &c, &off), Seccomp::Unconfined);
        p.spec.as_mut().unwrap().security_context = Some(
            serde_json::from_value(serde_json::json!({"seccompProfile": {"type": "Unconfined"}}))
                .unwrap(),
        );
        assert_eq!(seccomp(&p, &c, &defaults), Seccomp::Unconfined);
        let mut c2 = c.clone();
        c2.security_context = Some(
            serde_json::from_value(serde_json::json!(
                {"seccompProfile": {"type": "Localhost", "localhostProfile": "x/y.json"}}
            ))
            .unwrap(),
        );
        assert_eq!(
            seccomp(&p, &c2, &defaults),
            Seccomp::Localhost("x/y.json".into())
        );
        c2.security_context = Some(
            serde_json::from_value(serde_json::json!(
                {"privileged": true, "seccompProfile": {"type": "RuntimeDefault"}}
            ))
            .unwrap(),
        );
        assert_eq!(seccomp(&p, &c2, &defaults), Seccomp::Unconfined);
    }

    #[test]
    fn localhost_profiles_stay_inside_the_seccomp_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("seccomp");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(
            tmp.path().join("outside.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("d/ok.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink("../../outside.json", root.join("d/escape.json")).unwrap();
        let get = |rel: &str| seccomp_profile(&Seccomp::Localhost(rel.into()), &[], &root);
        assert!(get("d/ok.json").unwrap().is_some());
        let e = get("d/escape.json").unwrap_err();
        assert!(e.contains("leads outside the seccomp directory"), "{e}");
        let e = get("../outside.json").unwrap_err();
        assert!(e.contains("must not contain '..'"), "{e}");
        let e = get("d/missing.json").unwrap_err();
        assert!(e.contains("no such file"), "{e}");
    }
}
