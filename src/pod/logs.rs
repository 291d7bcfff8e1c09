//! Where a pod's container logs live (kubelet's layout
//! `<logDir>/<ns>_<name>_<uid>/<container>/<restartCount>.log`) and their
//! garbage collection: a removed container instance takes its log along,
//! a deleted pod its whole directory.

use std::path::{Path, PathBuf};

use super::events::PodRef;

pub fn pod_log_dir(log_dir: &Path, pod: &PodRef) -> PathBuf {
    log_dir.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
}

/// Removes instance `restart`'s log in a container's log directory: the
/// live `N.log` and its rotated `N.log.<timestamp>[.gz]` files.
pub fn remove_instance_logs(container_dir: &Path, restart: u32) {
    let live = format!("{restart}.log");
    let rotated = format!("{live}.");
    for e in std::fs::read_dir(container_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == live || name.starts_with(&rotated) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), error = %err, "container log not removed");
            }
        }
    }
}

pub fn remove_pod_logs(log_dir: &Path, pod: &PodRef) {
    remove_log_dir(&pod_log_dir(log_dir, pod));
}

/// Removes the log directories of a pod known only by its UID (an orphan
/// found at start-up); other directories are left alone, since the log
/// directory may be shared with a kubelet.
pub fn remove_orphan_logs(log_dir: &Path, uid: &str) {
    let suffix = format!("_{uid}");
    for e in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(&suffix) {
            remove_log_dir(&e.path());
        }
    }
}

fn remove_log_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "pod logs not removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_takes_its_rotated_logs_along_and_a_pod_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
        };
        let dir = pod_log_dir(tmp.path(), &pod).join("app");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "0.log",
            "0.log.20261125-101010",
            "0.log.20261125-090909.gz",
            "1.log",
            "10.log",
        ] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        remove_instance_logs(&dir, 0);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1.log", "10.log"]);

        let other = tmp.path().join("kube-system_x_u2");
        std::fs::create_dir_all(&other).unwrap();
        remove_orphan_logs(tmp.path(), "u1");
        assert!(!pod_log_dir(tmp.path(), &pod).exists());
        assert!(other.exists(), "another pod's logs stay");
        std::fs::create_dir_all(&dir).unwrap();
        remove_pod_logs(tmp.path(), &pod);
        assert!(!pod_log_dir(tmp.path(), &pod).exists());
        remove_pod_logs(tmp.path(), &pod);
    }
}
