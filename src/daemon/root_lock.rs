//! One owner per state root: `nodelet daemon` and `nodelet run` hold an
//! exclusive `flock` on `<root>/nodelet.lock` for as long as they run, so a
//! second process on the same root stops at once instead of adopting,
//! killing or duplicating the first one's pods. The holder writes its PID
//! into the file for the refusal's message. The kernel drops the lock
//! when the process dies, `kill -9` included: no stale lock to clean up.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the state root.
pub const LOCK_FILE: &str = "nodelet.lock";

#[derive(Debug, thiserror::Error)]
pub enum RootLockError {
    #[error("state root {} is in use by nodelet process {pid} (lock {})", root.display(), lock.display())]
    Held {
        root: PathBuf,
        lock: PathBuf,
        /// As the holder wrote it; `unknown` when it had not yet.
        pid: String,
    },
    #[error("lock state root {}: {action}", root.display())]
    Io {
        root: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the root.
#[derive(Debug)]
pub struct RootLock {
    _file: Flock<std::fs::File>,
}

/// Takes `root` for this process, or says who has it.
pub fn acquire(root: &Path) -> Result<RootLock, RootLockError> {
    let io = |action: &'static str| {
        move |source: std::io::Error| RootLockError::Io {
            root: root.to_path_buf(),
            action,
            source,
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io("create the directory"))?;
    let lock = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(io("open the lock file"))?;
    let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(RootLockError::Held {
                root: root.to_path_buf(),
                lock,
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            });
        }
        Err((_, e)) => return Err(io("take the lock")(e.into())),
    };
    held.set_len(0)
        .and_then(|()| held.rewind())
        .and_then(|()| write!(held, "{}", std::process::id()))
        .and_then(|()| held.flush())
        .map_err(io("write the holder's pid"))?;
    Ok(RootLock { _file: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let first = acquire(&root).unwrap();
        let e = acquire(&root).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "state root {} is in use by nodelet process {} (lock {})",
                root.display(),
                std::process::id(),
                root.join(LOCK_FILE).display()
            )
        );
        drop(first);
        acquire(&root).unwrap();
    }
}
