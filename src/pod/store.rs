//! Pod records that outlive the daemon: each pod's spec, observed state and
//! last status in `<root>/state/pods/<uid>.json`, written atomically on
//! every change, so a restarted daemon re-adopts its pods (live shims,
//! restart counts, exit codes) instead of starting them again.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde::{Deserialize, Serialize};

use super::state::PodState;
use crate::runtime::record::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub pod: Pod,
    pub state: PodState,
    pub status: Option<PodStatus>,
}

fn file(dir: &Path, uid: &str) -> PathBuf {
    dir.join(format!("{uid}.json"))
}

pub fn save(dir: &Path, uid: &str, s: &Saved) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let data = serde_json::to_vec(s).map_err(|e| e.to_string())?;
    write_atomic(&file(dir, uid), &data).map_err(|e| crate::error_chain(&e))
}

pub fn remove(dir: &Path, uid: &str) {
    let _ = std::fs::remove_file(file(dir, uid));
}

/// A record that could not be read: moved aside (kept for inspection)
/// under `kept_at`; its pod's sandbox must be left alone.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub uid: String,
    pub kept_at: PathBuf,
    pub error: String,
    /// The pod's namespace and name, when what could be read says.
    pub named: Option<(String, String)>,
}

/// The pod's `metadata.namespace` and `metadata.name` in what is left of a
/// record (its start, usually: a record cut short keeps its metadata):
/// read at the metadata object's own level, not in its labels or
/// annotations.
pub fn identify(text: &str) -> Option<(String, String)> {
    let at = text.find("\"metadata\":{")? + "\"metadata\":".len();
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, at);
    let (mut ns, mut name, mut key) = (None, None, None::<String>);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            b'"' => {
                // A string: a key at depth 1, or its value.
                let end =
                    (i + 1..bytes.len()).find(|&j| bytes[j] == b'"' && bytes[j - 1] != b'\\')?;
                let s = text.get(i + 1..end)?.to_string();
                let is_key = bytes.get(end + 1) == Some(&b':');
                if depth == 1 {
                    match (is_key, key.take()) {
                        (true, _) => key = Some(s),
                        (false, Some(k)) if k == "name" => name = Some(s),
                        (false, Some(k)) if k == "namespace" => ns = Some(s),
                        _ => {}
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Some((ns.unwrap_or_else(|| "default".into()), name?))
}

/// Every saved pod, and the records that could not be read. An unreadable
/// record is renamed `<uid>.json.unreadable` (the newest kept) so the next
/// start does not trip on it again, and is never a reason to kill
/// anything: the caller keeps that pod's sandbox.
pub fn load_all(dir: &Path) -> (Vec<Saved>, Vec<Unreadable>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|e| e.to_string());
        let decoded = bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| serde_json::from_slice::<Saved>(b).map_err(|e| e.to_string()));
        match decoded {
            Ok(s) => out.push(s),
            Err(error) => {
                let named = bytes
                    .as_ref()
                    .ok()
                    .and_then(|b| identify(&String::from_utf8_lossy(b)));
                let uid = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let kept_at = dir.join(format!("{uid}.json.unreadable"));
                let kept_at = match std::fs::rename(&p, &kept_at) {
                    Ok(()) => kept_at,
                    Err(_) => p.clone(),
                };
                tracing::error!(path = %kept_at.display(), error = %error, "unreadable pod record kept aside; its pod is left running");
                bad.push(Unreadable {
                    uid,
                    kept_at,
                    error,
                    named,
                });
            }
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::identify;

    #[test]
    fn a_cut_record_still_names_its_pod() {
        let full = r#"{"pod":{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"name":"not-this"},"labels":{"name":"nor-this"},"name":"web","namespace":"prod","uid":"u1"},"spec":{"containers":[{"name":"c"}]}},"state":{}}"#;
        for cut in [full.len(), full.find("\"spec\"").unwrap_or(0) + 3] {
            assert_eq!(
                identify(&full[..cut]),
                Some(("prod".into(), "web".into())),
                "{}",
                &full[..cut]
            );
        }
        assert_eq!(
            identify(r#"{"pod":{"metadata":{"name":"a\"b","#),
            Some(("default".into(), "a\\\"b".into()))
        );
        assert_eq!(
            identify(r#"{"pod":{"metadata":{"annotations":{"name":"x"#),
            None
        );
        assert_eq!(identify("garbage"), None);
    }
}
