//! A shim's HTTP attempt (an `httpEvery` run): the connection made from
//! the pod's network namespace (the shim's own), non-blocking, driven by
//! the shim's event loop, with kubelet's rules from `probe::http1`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::readiness::{Readiness, Token, Watched};
use crate::probe::http1::{self, Get, Made, Reader, Step};

/// An HTTP attempt in flight (an `httpEvery` run), its outcome for the
/// subscription once it ends.
pub struct PendingGet {
    /// The subscription.
    pub repeat: u64,
    /// Its number in the shim's readiness tokens.
    pub serial: u64,
    pub started: Instant,
    pub deadline: Instant,
    get: Get,
    /// The connection of this hop (none between hops).
    hop: Option<Hop>,
}

/// One request and its answer.
struct Hop {
    sock: Watched<OwnedFd>,
    request: Vec<u8>,
    sent: usize,
    reader: Reader,
}

impl PendingGet {
    /// Attempt `get` for subscription `repeat` from `now` until `timeout`
    /// has passed; `serial` names its connections in the readiness set.
    pub fn new(repeat: u64, serial: u64, get: Get, now: Instant, timeout: Duration) -> PendingGet {
        PendingGet {
            repeat,
            serial,
            started: now,
            deadline: now + timeout,
            get,
            hop: None,
        }
    }

    /// Goes on with the attempt as far as it can without waiting: what
    /// it made once it ended (or must go on in the daemon: HTTPS).
    pub fn advance(&mut self, readiness: &Readiness, now: Instant) -> Option<Made> {
        if now >= self.deadline {
            return Some(Made::Done(self.get.timed_out()));
        }
        loop {
            let answer = match &mut self.hop {
                None => match Hop::open(&self.get, self.serial, readiness) {
                    // Nothing to read yet: the server has had no time.
                    Ok(h) => {
                        self.hop = Some(h);
                        return None;
                    }
                    Err(e) => Err(e),
                },
                Some(h) => h.advance(self.get.addr)?,
            };
            if let (Ok(_), Some(h)) = (&answer, &self.hop) {
                http1::reset_if_closed(h.sock.as_fd());
            }
            self.hop = None;
            match self.get.answered(answer) {
                Step::Done(o) => return Some(Made::Done(o)),
                Step::Again if self.get.https => {
                    return Some(Made::Unfinished(self.get.clone()));
                }
                Step::Again => {}
            }
        }
    }
}

impl Hop {
    /// Connects to the attempt's address (from the pod's network
    /// namespace: the shim's own) and sends what the socket takes: on
    /// loopback the handshake is done within connect(2) and the whole
    /// request goes at once. `Err`: Go's words for the failed connect.
    fn open(get: &Get, serial: u64, readiness: &Readiness) -> Result<Hop, String> {
        use nix::sys::socket::{self, MsgFlags, SockaddrIn, SockaddrIn6};
        let addr = get.addr;
        let dial = |e: nix::errno::Errno| http1::dial_error(addr, &e.into());
        let fd = crate::probe::netns::stream_socket(addr.is_ipv6())
            .map_err(|e| http1::dial_error(addr, &e))?;
        let started = match addr {
            std::net::SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
            std::net::SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
        };
        match started {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(dial(e)),
        }
        let request = get.request()?;
        let sent = match socket::send(fd.as_raw_fd(), &request, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => n,
            // Still in the handshake.
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOTCONN) => 0,
            Err(e) => return Err(dial(e)),
        };
        let sock = readiness
            .watch_for(fd, Token::Http(serial), sent < request.len())
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
    fn advance(&mut self, addr: std::net::SocketAddr) -> Option<Result<http1::Response, String>> {
        use nix::sys::socket::{self, MsgFlags};
        let fd = self.sock.as_fd().as_raw_fd();
        if self.sent < self.request.len() {
            let dial = |e: std::io::Error| Some(Err(http1::dial_error(addr, &e)));
            match socket::getsockopt(&self.sock.as_fd(), socket::sockopt::SocketError) {
                Ok(0) => {}
                Ok(code) => return dial(std::io::Error::from_raw_os_error(code)),
                Err(e) => return dial(e.into()),
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
