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

/// Every saved pod; unreadable records are reported and skipped.
pub fn load_all(dir: &Path) -> Vec<Saved> {
    let mut out = Vec::new();
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
            Err(e) => {
                tracing::error!(path = %p.display(), error = %e, "unreadable pod record skipped")
            }
        }
    }
    out
}
