//! Sockets made inside a pod's network namespace, for probes and hooks
//! that must reach 127.0.0.1 of the pod. A socket keeps the namespace it
//! was made in, so one thread per namespace sits in it and makes sockets
//! on request; connecting is then asynchronous like any other. No thread
//! of the async runtime ever changes namespace, and no probe pays for a
//! thread or a `setns` of its own.
//!
//! The thread keeps a few spare sockets of each family made ahead: a
//! probe takes one without waiting, and the last one taken asks for
//! more, so the thread wakes once per [`SPARES`] probes and no probe
//! waits for it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `Some(reply)`: a socket now; `None`: refill the spares.
type Request = (
    bool,
    Option<tokio::sync::oneshot::Sender<std::io::Result<OwnedFd>>>,
);

/// Spare sockets, IPv4 and IPv6.
type Spares = Arc<Mutex<[Vec<OwnedFd>; 2]>>;

/// Sockets made per wake-up of the thread (and so held at most, per
/// family and namespace: a few descriptors per pod).
const SPARES: usize = 3;

/// A network namespace to dial from. Its thread starts on first use and
/// ends when this value is dropped.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    dialer: Mutex<Option<std::sync::mpsc::Sender<Request>>>,
    spares: Spares,
}

/// Stack of a dialer thread: it only makes sockets.
const DIALER_STACK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NetNs {
    pub fn new(path: &Path) -> NetNs {
        NetNs {
            path: path.to_path_buf(),
            dialer: Mutex::new(None),
            spares: Spares::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn start(&self) -> std::io::Result<std::sync::mpsc::Sender<Request>> {
        let ns = std::fs::File::open(&self.path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let spares = Arc::clone(&self.spares);
        std::thread::Builder::new()
            .name("netns-dialer".into())
            .stack_size(DIALER_STACK)
            .spawn(move || {
                if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(std::io::Error::from(e)));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                for (v6, reply) in rx {
                    if let Some(reply) = reply {
                        let _ = reply.send(stream_socket(v6));
                    }
                    let mut spares = lock(&spares);
                    let slot = &mut spares[usize::from(v6)];
                    while slot.len() < SPARES {
                        match stream_socket(v6) {
                            Ok(fd) => slot.push(fd),
                            Err(_) => break,
                        }
                    }
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("netns dialer thread died"))??;
        Ok(tx)
    }

    /// Sends `req` to the dialer thread, starting it if need be.
    fn ask(&self, req: Request) -> std::io::Result<()> {
        let mut d = lock(&self.dialer);
        if d.is_none() {
            *d = Some(self.start()?);
        }
        let sent = d.as_ref().map(|tx| tx.send(req));
        if !matches!(sent, Some(Ok(()))) {
            // The thread is gone: start afresh next time.
            *d = None;
            return Err(std::io::Error::other("netns dialer thread died"));
        }
        Ok(())
    }

    /// A non-blocking, unconnected TCP socket made in this namespace.
    pub async fn socket(&self, v6: bool) -> std::io::Result<OwnedFd> {
        let (spare, last) = {
            let mut spares = lock(&self.spares);
            let slot = &mut spares[usize::from(v6)];
            (slot.pop(), slot.is_empty())
        };
        if let Some(fd) = spare {
            if last {
                self.ask((v6, None))?;
            }
            return Ok(fd);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ask((v6, Some(reply)))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("netns dialer thread died"))?
    }
}

/// A non-blocking, close-on-exec TCP socket in the caller's namespace.
pub fn stream_socket(v6: bool) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[tokio::test]
    async fn sockets_are_made_in_the_namespace_by_one_thread() {
        // This process's own namespace stands in for a pod's.
        let ns = NetNs::new(Path::new("/proc/self/ns/net"));
        let dialers = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "netns-dialer")
                })
                .count()
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let wait_for = |n: usize| {
            let spares = Arc::clone(&ns.spares);
            async move {
                let start = std::time::Instant::now();
                while lock(&spares)[0].len() != n {
                    assert!(
                        start.elapsed() < std::time::Duration::from_secs(5),
                        "{} spares, not {n}",
                        lock(&spares)[0].len()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        // The first socket is made on demand, with a batch of spares.
        let fd = ns.socket(false).await.unwrap();
        let s = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        s.connect(addr).await.unwrap();
        wait_for(SPARES).await;
        // Spares are handed out without asking the thread, newest first;
        // taking the last asks for a new batch.
        for left in (0..SPARES).rev() {
            let spare = lock(&ns.spares)[0].last().map(|fd| fd.as_raw_fd());
            let fd = ns.socket(false).await.unwrap();
            assert_eq!(Some(fd.as_raw_fd()), spare);
            if left > 0 {
                assert_eq!(lock(&ns.spares)[0].len(), left, "one taken, none made");
            }
            let s = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            s.connect(addr).await.unwrap();
        }
        wait_for(SPARES).await;
        assert_eq!(dialers(), 1, "one dialer thread for every socket");
        drop(ns);
        let start = std::time::Instant::now();
        while dialers() > 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "the dialer outlived its namespace handle"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let gone = NetNs::new(Path::new("/proc/self/ns/none"));
        assert!(gone.socket(false).await.is_err());
    }
}
