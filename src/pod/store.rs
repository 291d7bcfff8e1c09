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
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Saved>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => out.push(s),
            Err(error) => {
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
                });
            }
        }
    }
    (out, bad)
}
