//! The static pod source (`k8s:pkg/kubelet/config/file.go`): the
//! `staticPodPath` directory, non-recursive, dotfiles ignored, one Pod per
//! `*.yaml|*.yml|*.json` file. Pods are named `<name>-<node>`, bound to the
//! node, and get a UID hashed from the file's content, path and node — so
//! an edit is a new pod, and the same file again is the same pod.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::manifest::{self, PrepareOptions};

/// kubelet reads at most this much of a static pod file.
pub const MAX_FILE: u64 = 10 << 20;

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub result: Result<Pod, String>,
}

fn uid_for(content: &[u8], path: &Path, node: &str) -> String {
    let mut h = Sha256::new();
    h.update(content);
    h.update(format!("host:{node}").as_bytes());
    h.update(format!("file:{}", path.display()).as_bytes());
    let x = hex::encode(&h.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Reads every static pod file in `dir`, sorted by name.
pub fn scan(dir: &Path, node: &str) -> Vec<Entry> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml" | "json")
                )
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
        })
        .collect();
    files.sort();
    // Two files with a pod of the same name: the first (by file name)
    // wins, the other is invalid (kubelet's filterInvalidPods, a
    // `Duplicate value` on metadata.name).
    let mut seen: std::collections::HashMap<(String, String), PathBuf> = Default::default();
    files
        .into_iter()
        .map(|p| {
            let result = read(&p, node).and_then(|pod| {
                let key = (
                    pod.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    pod.metadata.name.clone().unwrap_or_default(),
                );
                match seen.get(&key) {
                    Some(first) => Err(format!(
                        "metadata.name: Duplicate value: {:?}: {} holds a pod of that name",
                        key.1,
                        first.display()
                    )),
                    None => {
                        seen.insert(key, p.clone());
                        Ok(pod)
                    }
                }
            });
            Entry { result, path: p }
        })
        .collect()
}

fn read(path: &Path, node: &str) -> Result<Pod, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    let content = std::fs::read(path).map_err(|e| e.to_string())?;
    let prepared = manifest::prepare(&[path.display().to_string()], PrepareOptions::default());
    let errors: Vec<String> = prepared
        .diagnostics
        .iter()
        .filter(|d| d.severity == manifest::Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if !prepared.config_maps.is_empty() || !prepared.secrets.is_empty() {
        // A kubelet's static pods cannot refer to ConfigMaps or Secrets
        // either; they are refused here rather than dropped.
        return Err(
            "a static pod file holds exactly one Pod; ConfigMap and Secret objects are not read from the static pod directory".into(),
        );
    }
    let mut pods = prepared.pods;
    if pods.len() != 1 {
        return Err(format!(
            "a static pod file holds exactly one Pod, found {}",
            pods.len()
        ));
    }
    let mut pod = pods.remove(0).pod;
    let name = format!(
        "{}-{}",
        pod.metadata.name.clone().unwrap_or_default(),
        node.to_lowercase()
    );
    pod.metadata.name = Some(name);
    if pod.metadata.uid.as_deref().unwrap_or_default().is_empty() {
        pod.metadata.uid = Some(uid_for(&content, path, node));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ann = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    ann.insert("kubernetes.io/config.hash".into(), uid);
    ann.insert(crate::pod::CONFIG_SOURCE_ANNOTATION.into(), "file".into());
    ann.insert(
        "kubernetes.io/config.seen".into(),
        crate::time::rfc3339_nano(std::time::SystemTime::now()),
    );
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox:1}]\n";

    #[test]
    fn a_static_file_with_a_secret_is_refused_not_half_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("web.yaml"),
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{k: v}}\n---\n{POD}"),
        )
        .unwrap();
        let e = scan(d.path(), "n");
        let err = e[0].result.clone().unwrap_err();
        assert!(
            err.contains("ConfigMap and Secret objects are not read from the static pod directory"),
            "{err}"
        );
    }

    #[test]
    fn names_uids_and_files_follow_kubelets_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("web.yaml"), POD).unwrap();
        std::fs::write(d.path().join(".hidden.yaml"), POD).unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        std::fs::write(
            d.path().join("bad.yaml"),
            "kind: Pod\nmetadata: {name: B}\n",
        )
        .unwrap();
        let e = scan(d.path(), "Node1");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].path.ends_with("bad.yaml") && e[0].result.is_err());
        let pod = e[1].result.clone().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("Node1")
        );
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()["kubernetes.io/config.source"],
            "file"
        );
        // Same file, same UID; an edit makes another.
        assert_eq!(
            scan(d.path(), "Node1")[1]
                .result
                .clone()
                .unwrap()
                .metadata
                .uid
                .unwrap(),
            uid
        );
        // Written in place, half done: invalid until the rest arrives (the
        // next inotify event or resync reads it again).
        let half = &POD[..POD.len() / 2];
        std::fs::write(d.path().join("late.yaml"), half).unwrap();
        let late = |e: Vec<Entry>| {
            e.into_iter()
                .find(|e| e.path.ends_with("late.yaml"))
                .unwrap()
        };
        assert!(late(scan(d.path(), "Node1")).result.is_err());
        std::fs::write(
            d.path().join("late.yaml"),
            POD.replace("name: web", "name: late"),
        )
        .unwrap();
        let pod = late(scan(d.path(), "Node1")).result.unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("late-node1"));
        std::fs::remove_file(d.path().join("late.yaml")).unwrap();
        // The same name in a second file: that file is invalid.
        std::fs::write(
            d.path().join("web2.yaml"),
            POD.replace("c, image", "d, image"),
        )
        .unwrap();
        let e = scan(d.path(), "Node1");
        assert_eq!(
            e[1].result.as_ref().unwrap().metadata.uid.as_deref(),
            Some(uid.as_str())
        );
        let dup = e[2].result.clone().unwrap_err();
        assert!(
            dup.starts_with("metadata.name: Duplicate value: \"web-node1\": ")
                && dup.ends_with("/web.yaml holds a pod of that name"),
            "{dup}"
        );
        std::fs::remove_file(d.path().join("web2.yaml")).unwrap();
        std::fs::write(
            d.path().join("web.yaml"),
            POD.replace("busybox:1", "busybox:2"),
        )
        .unwrap();
        assert_ne!(
            scan(d.path(), "Node1")[1]
                .result
                .clone()
                .unwrap()
                .metadata
                .uid
                .unwrap(),
            uid
        );
    }
}
