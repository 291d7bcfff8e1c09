//! A shim's network attempts (`httpEvery` and `dialEvery` runs): the
//! connection made from the pod's network namespace (the shim's own),
//! non-blocking, driven by the shim's event loop, with kubelet's rules and
//! words from `probe::http1`.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::readiness::{Readiness, Token, Watched};
use crate::probe::action::Outcome;
use crate::probe::http1::{self, Get, Made, Reader, Step};

/// A network attempt in flight (an `httpEvery` or `dialEvery` run), what
/// it made for the subscription once it ends.
pub struct PendingAttempt {
    /// The subscription.
    pub repeat: u64,
    /// Its number in the shim's readiness tokens.
    pub serial: u64,
    pub started: Instant,
    pub deadline: Instant,
    what: What,
}

enum What {
    /// An `httpGet` attempt and the connection of its hop (none between
    /// hops).
    Http(Box<(Get, Option<Hop>)>),
    /// A `tcpSocket` attempt: a connection made, then closed.
    Dial {
        addr: SocketAddr,
        sock: Option<Watched<OwnedFd>>,
    },
}

/// One request and its answer.
struct Hop {
    sock: Watched<OwnedFd>,
    request: Vec<u8>,
    sent: usize,
    reader: Reader,
}

impl PendingAttempt {
    /// Attempt `get` for subscription `repeat` from `now` until `timeout`
    /// has passed; `serial` names its connections in the readiness set.
    pub fn http(repeat: u64, serial: u64, get: Get, now: Instant, timeout: Duration) -> Self {
        let what = What::Http(Box::new((get, None)));
        PendingAttempt::new(repeat, serial, what, now, timeout)
    }

    /// Connect to `addr` (kubelet's tcpSocket probe), like [`Self::http`].
    pub fn dial(
        repeat: u64,
        serial: u64,
        addr: SocketAddr,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        let what = What::Dial { addr, sock: None };
        PendingAttempt::new(repeat, serial, what, now, timeout)
    }

    fn new(repeat: u64, serial: u64, what: What, now: Instant, timeout: Duration) -> Self {
        PendingAttempt {
            repeat,
            serial,
            started: now,
            deadline: now + timeout,
            what,
        }
    }

    /// Goes on with the attempt as far as it can without waiting: what
    /// it made once it ended (or must go on in the daemon: HTTPS).
    pub fn advance(&mut self, readiness: &Readiness, now: Instant) -> Option<Made> {
        let serial = self.serial;
        match &mut self.what {
            What::Http(h) if now >= self.deadline => Some(Made::Done(h.0.timed_out())),
            What::Http(h) => http(&mut h.0, &mut h.1, serial, readiness),
            What::Dial { addr, .. } if now >= self.deadline => {
                Some(Made::Done(Outcome::Failure(http1::dial_timeout(*addr))))
            }
            What::Dial { addr, sock } => dial(*addr, sock, serial, readiness).map(Made::Done),
        }
    }
}

/// Goes on with an HTTP attempt.
fn http(get: &mut Get, hop: &mut Option<Hop>, serial: u64, readiness: &Readiness) -> Option<Made> {
    loop {
        let answer = match hop {
            None => match Hop::open(get, serial, readiness) {
                // Nothing to read yet: the server has had no time.
                Ok(h) => {
                    *hop = Some(h);
                    return None;
                }
                Err(e) => Err(e),
            },
            Some(h) => h.advance(get.addr)?,
        };
        if let (Ok(_), Some(h)) = (&answer, &*hop) {
            http1::reset_if_closed(h.sock.as_fd());
        }
        *hop = None;
        match get.answered(answer) {
            Step::Done(o) => return Some(Made::Done(o)),
            Step::Again if get.https => return Some(Made::Unfinished(get.clone())),
            Step::Again => {}
        }
    }
}

/// Goes on with a tcpSocket attempt: success once connected (the socket
/// then closes), failure in Go's words if the connection is refused.
fn dial(
    addr: SocketAddr,
    sock: &mut Option<Watched<OwnedFd>>,
    serial: u64,
    readiness: &Readiness,
) -> Option<Outcome> {
    let failed = |e: std::io::Error| Some(Outcome::Failure(http1::dial_error(addr, &e)));
    let Some(s) = sock else {
        return match start_connect(addr) {
            Ok((_, true)) => Some(Outcome::Success(String::new())),
            Ok((fd, false)) => match readiness.watch_for(fd, Token::Attempt(serial), true) {
                Ok(w) => {
                    *sock = Some(w);
                    None
                }
                Err(e) => failed(e.into()),
            },
            Err(e) => failed(e),
        };
    };
    match connect_error(s.as_fd()) {
        Some(e) => failed(e),
        None if connected(s.as_fd()) => Some(Outcome::Success(String::new())),
        None => None,
    }
}

/// A socket connecting to `addr` from the shim's (the pod's) network
/// namespace; true if connected already.
fn start_connect(addr: SocketAddr) -> std::io::Result<(OwnedFd, bool)> {
    use nix::sys::socket::{self, SockaddrIn, SockaddrIn6};
    let fd = crate::probe::netns::stream_socket(addr.is_ipv6())?;
    let started = match addr {
        SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match started {
        Ok(()) => Ok((fd, true)),
        Err(nix::errno::Errno::EINPROGRESS) => Ok((fd, false)),
        Err(e) => Err(e.into()),
    }
}

/// Why a connection being made failed (`SO_ERROR`), if it did.
fn connect_error(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::io::Error> {
    match nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SocketError) {
        Ok(0) => None,
        Ok(code) => Some(std::io::Error::from_raw_os_error(code)),
        Err(e) => Some(e.into()),
    }
}

/// Whether the handshake of `fd` is done (it has a peer).
fn connected(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd()).is_ok()
}

impl Hop {
    /// Connects to the attempt's address (from the pod's network
    /// namespace: the shim's own) and sends what the socket takes: on
    /// loopback the handshake is done within connect(2) and the whole
    /// request goes at once. `Err`: Go's words for the failed connect.
    fn open(get: &Get, serial: u64, readiness: &Readiness) -> Result<Hop, String> {
        use nix::sys::socket::{self, MsgFlags};
        let addr = get.addr;
        let dial = |e: nix::errno::Errno| http1::dial_error(addr, &e.into());
        let (fd, _) = start_connect(addr).map_err(|e| http1::dial_error(addr, &e))?;
        let request = get.request()?;
        let sent = match socket::send(fd.as_raw_fd(), &request, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => n,
            // Still in the handshake.
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOTCONN) => 0,
            Err(e) => return Err(dial(e)),
        };
        let sock = readiness
            .watch_for(fd, Token::Attempt(serial), sent < request.len())
            .map_err(dial)?;
        Ok(Hop {
            sock,
            request,
            sent,
            reader: Reader::new(http1::MAX_BODY),
        })
    }

    /// Sends the rest of the request, then reads what has come of the
    /// answer: the answer (or why there is none) once complete.
    fn advance(&mut self, addr: SocketAddr) -> Option<Result<http1::Response, String>> {
        use nix::sys::socket::{self, MsgFlags};
        let fd = self.sock.as_fd().as_raw_fd();
        if self.sent < self.request.len() {
            let dial = |e: std::io::Error| Some(Err(http1::dial_error(addr, &e)));
            if let Some(e) = connect_error(self.sock.as_fd()) {
                return dial(e);
            }
            match socket::send(fd, &self.request[self.sent..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => self.sent += n,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOTCONN) => return None,
                Err(e) => return dial(e.into()),
            }
            if self.sent < self.request.len() {
                return None;
            }
            let _ = self.sock.want_write(false);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match socket::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Some(self.reader.end()),
                Ok(n) => match self.reader.push(&buf[..n]) {
                    Ok(None) => {}
                    Ok(Some(r)) => return Some(Ok(r)),
                    Err(e) => return Some(Err(e)),
                },
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Some(Err(std::io::Error::from(e).to_string())),
            }
        }
    }
}
