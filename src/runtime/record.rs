//! Exit records: how a container instance ended, written atomically next to
//! its state so they survive daemon and shim restarts, plus the termination
//! message rules of `k8s:pkg/kubelet/kuberuntime/kuberuntime_container.go`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const RECORD_VERSION: &str = "v1";
/// The kubelet reads at most this much of `terminationMessagePath`.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// `FallbackToLogsOnError` takes the last 80 log lines, at most 2048 bytes.
pub const FALLBACK_LOG_LINES: usize = 80;
pub const FALLBACK_LOG_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub version: String,
    /// Exit code, or 128 + signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    pub oom_killed: bool,
    /// The termination message (see [`termination_message`]).
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {action}", path.display())]
pub struct RecordError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `data` to `path` atomically: a temp file in the same directory,
/// fsynced, renamed over, and the directory fsynced.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), RecordError> {
    let err = |action| {
        let path = path.to_path_buf();
        move |source| RecordError {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    // Records may hold what a pod's spec holds (env values): root only.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
    }
    .map_err(err("create temp file"))?;
    let res = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(err("write")(e));
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl ExitRecord {
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        let data = serde_json::to_vec(self).map_err(|e| RecordError {
            action: "encode",
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        write_atomic(path, &data)
    }

    /// `None` when there is no record (the container has not exited).
    pub fn load(path: &Path) -> Result<Option<ExitRecord>, RecordError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| RecordError {
                    action: "decode",
                    path: path.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RecordError {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// The message for `terminated.message`: the termination-message file
/// (first 4096 bytes); with `FallbackToLogsOnError`, only when that file is
/// empty **and** the exit code is not 0, the last 80 log lines capped at
/// 2048 bytes (the end is kept).
pub fn termination_message(
    file: &[u8],
    fallback_to_logs: bool,
    exit_code: i32,
    log_tail: impl FnOnce() -> Vec<u8>,
) -> String {
    if !file.is_empty() {
        let end = file.len().min(MAX_TERMINATION_MESSAGE);
        return String::from_utf8_lossy(&file[..end]).into_owned();
    }
    if !fallback_to_logs || exit_code == 0 {
        return String::new();
    }
    let logs = log_tail();
    let text = String::from_utf8_lossy(&logs);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(FALLBACK_LOG_LINES);
    let mut tail = lines[start..].join("\n");
    if text.ends_with('\n') && !tail.is_empty() {
        tail.push('\n');
    }
    if tail.len() > FALLBACK_LOG_BYTES {
        let mut cut = tail.len() - FALLBACK_LOG_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        assert_eq!(ExitRecord::load(&p).unwrap(), None);
        let r = ExitRecord {
            version: RECORD_VERSION.into(),
            exit_code: 137,
            signal: Some(9),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
            oom_killed: false,
            message: String::new(),
        };
        r.save(&p).unwrap();
        assert_eq!(ExitRecord::load(&p).unwrap(), Some(r));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn the_message_file_wins_and_is_capped_at_4096_bytes() {
        let big = vec![b'm'; 5000];
        assert_eq!(
            termination_message(&big, true, 1, || b"log".to_vec()).len(),
            4096
        );
        assert_eq!(
            termination_message(b"bye", true, 1, || b"log".to_vec()),
            "bye"
        );
    }

    #[test]
    fn logs_are_used_only_for_a_failure_with_an_empty_file() {
        assert_eq!(
            termination_message(b"", true, 1, || b"a\nb\n".to_vec()),
            "a\nb\n"
        );
        assert_eq!(
            termination_message(b"", true, 0, || b"a\n".to_vec()),
            "",
            "exit 0 + empty file → empty"
        );
        assert_eq!(
            termination_message(b"", false, 1, || b"a\n".to_vec()),
            "",
            "File policy never reads logs"
        );
    }

    #[test]
    fn the_log_fallback_keeps_the_last_80_lines_and_2048_bytes() {
        let logs: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let m = termination_message(b"", true, 2, || logs.into_bytes());
        assert!(
            m.starts_with("line 120\n") && m.ends_with("line 199\n"),
            "{m}"
        );
        let long: String = (0..100)
            .map(|i| format!("{i:03}{}\n", "x".repeat(60)))
            .collect();
        let m = termination_message(b"", true, 2, || long.into_bytes());
        assert_eq!(m.len(), 2048);
        assert!(m.ends_with(&format!("099{}\n", "x".repeat(60))));
    }
}
