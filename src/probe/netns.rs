//! Sockets made inside a pod's network namespace, for probes and hooks
//! that must reach 127.0.0.1 of the pod. A socket keeps the namespace it
//! was made in, so one thread per namespace sits in it and makes sockets
//! on request; connecting is then asynchronous like any other. No thread
//! of the async runtime ever changes namespace, and no probe pays for a
//! thread or a `setns` of its own.
//!
//! The thread keeps one spare socket of each family made ahead: a probe
//! takes it without waiting and asks for the next, so the steady state
//! is one wake-up of the thread per probe and no wait for it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `Some(reply)`: a socket now; `None`: refill the spares.
type Request = (
    bool,
    Option<tokio::sync::oneshot::Sender<std::io::Result<OwnedFd>>>,
);

/// Spare sockets, IPv4 and IPv6.
type Spares = Arc<Mutex<[Option<OwnedFd>; 2]>>;

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
                    if slot.is_none() {
                        *slot = stream_socket(v6).ok();
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
        let spare = lock(&self.spares)[usize::from(v6)].take();
        if let Some(fd) = spare {
            self.ask((v6, None))?;
            return Ok(fd);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ask((v6, Some(reply)))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("netns dialer thread died"))?
    }
}

fn stream_socket(v6: bool) -> std::io::Result<OwnedFd> {
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
        for _ in 0..3 {
            let fd = ns.socket(false).await.unwrap();
            let s = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
            s.connect(addr).await.unwrap();
        }
        assert_eq!(dialers(), 1, "one dialer thread for every socket");
        // A spare is made ahead, and handed out without asking the thread.
        let start = std::time::Instant::now();
        while lock(&ns.spares)[0].is_none() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "no spare"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let spare = lock(&ns.spares)[0].as_ref().map(|fd| fd.as_raw_fd());
        let fd = ns.socket(false).await.unwrap();
        assert_eq!(Some(fd.as_raw_fd()), spare);
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
