//! The shim's readiness set: one epoll instance, and the descriptors in it
//! for as long as they are wanted. Registrations persist between waits,
//! so a wake-up costs the shim nothing per idle descriptor (a `poll` over
//! the listener, the connections, the containers' and the execs' pipes
//! queued and unqueued itself on every one of them, twice per exec).

use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Signals,
    Listener,
    /// A connection, by its number.
    Client(u64),
    /// A container's stdout (0) or stderr (1), by the container's number.
    Output(u64, usize),
    /// An exec's stdout (0) or stderr (1), by the exec's number.
    Exec(u64, usize),
    /// The connection of a network attempt, by the attempt's number.
    Attempt(u64),
}

const KIND_SHIFT: u32 = 56;
const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

impl Token {
    fn encode(self) -> u64 {
        let (kind, id, which) = match self {
            Token::Signals => (0, 0, 0),
            Token::Listener => (1, 0, 0),
            Token::Client(n) => (2, n, 0),
            Token::Output(n, i) => (3, n, i),
            Token::Exec(n, i) => (4, n, i),
            Token::Attempt(n) => (5, n, 0),
        };
        // An output or exec pipe number is 0 or 1: one bit under the id.
        (kind << KIND_SHIFT) | (((id << 1) | (which as u64 & 1)) & ID_MASK)
    }
}

fn interest(write: bool) -> EpollFlags {
    if write {
        EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
    } else {
        EpollFlags::EPOLLIN
    }
}

/// The shim's epoll instance and what one wait found.
pub struct Readiness {
    ep: Rc<Epoll>,
    events: Vec<EpollEvent>,
    ready: Vec<u64>,
}

impl Readiness {
    pub fn new() -> nix::Result<Readiness> {
        Ok(Readiness {
            ep: Rc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?),
            events: vec![EpollEvent::empty(); 64],
            ready: Vec::new(),
        })
    }

    /// Watches `f` (level-triggered, for reading) until the returned
    /// guard is dropped.
    pub fn watch<F: AsFd>(&self, f: F, token: Token) -> nix::Result<Watched<F>> {
        self.watch_for(f, token, false)
    }

    /// Watches `f` for reading and, if `write`, for room to write (see
    /// [`Watched::want_write`]).
    pub fn watch_for<F: AsFd>(&self, f: F, token: Token, write: bool) -> nix::Result<Watched<F>> {
        let data = token.encode();
        self.ep
            .add(f.as_fd(), EpollEvent::new(interest(write), data))?;
        Ok(Watched {
            f,
            ep: Rc::clone(&self.ep),
            data,
        })
    }

    /// Watches `fd` for good (the signalfd, the listener: they live as
    /// long as the shim).
    pub fn watch_always(&self, fd: BorrowedFd<'_>, token: Token) -> nix::Result<()> {
        self.ep
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token.encode()))
    }

    /// Waits for events; what was found replaces what the last wait
    /// found. More than fit in one wait are found by the next (the set is
    /// level-triggered).
    pub fn wait(&mut self, timeout: nix::poll::PollTimeout) -> nix::Result<()> {
        self.ready.clear();
        let n = match self.ep.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e),
        };
        self.ready
            .extend(self.events[..n].iter().map(EpollEvent::data));
        Ok(())
    }

    /// Whether the last wait found `token` ready.
    pub fn is_ready(&self, token: Token) -> bool {
        self.ready.contains(&token.encode())
    }
}

/// A descriptor in the readiness set, taken out when this is dropped,
/// before the descriptor itself may close. (A file still open elsewhere —
/// a container's init holds copies of the shim's descriptors until it
/// execs — would otherwise stay in the set, and a hung-up pipe fire for
/// nothing at every wait.)
pub struct Watched<F: AsFd> {
    f: F,
    ep: Rc<Epoll>,
    data: u64,
}

impl<F: AsFd> Watched<F> {
    pub fn get(&self) -> &F {
        &self.f
    }

    /// Whether room to write wakes the wait too (a connection still being
    /// made, a request not all sent), besides something to read.
    pub fn want_write(&self, write: bool) -> nix::Result<()> {
        self.ep.modify(
            self.f.as_fd(),
            &mut EpollEvent::new(interest(write), self.data),
        )
    }

    /// Takes it out of the set now (at end of file); it stays open.
    pub fn unwatch(&self) {
        let _ = self.ep.delete(self.f.as_fd());
    }
}

impl<F: AsFd> AsFd for Watched<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.f.as_fd()
    }
}

impl<F: AsFd> Drop for Watched<F> {
    fn drop(&mut self) {
        self.unwatch();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_distinct_across_kinds_and_numbers() {
        let tokens = [
            Token::Signals,
            Token::Listener,
            Token::Client(0),
            Token::Client(1),
            Token::Output(0, 0),
            Token::Output(0, 1),
            Token::Output(1, 0),
            Token::Exec(0, 0),
            Token::Exec(7, 1),
            Token::Exec(7, 0),
            Token::Exec(ID_MASK >> 1, 1),
        ];
        let codes: std::collections::HashSet<u64> = tokens.iter().map(|t| t.encode()).collect();
        assert_eq!(codes.len(), tokens.len());
    }

    #[test]
    fn a_watched_pipe_is_reported_until_its_guard_drops_even_if_still_open() {
        let mut r = Readiness::new().unwrap();
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let other = rd.try_clone().unwrap();
        let w = r.watch(rd, Token::Exec(5, 1)).unwrap();
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(!r.is_ready(Token::Exec(5, 1)), "nothing written yet");
        drop(wr);
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(r.is_ready(Token::Exec(5, 1)), "hung up");
        assert!(!r.is_ready(Token::Exec(5, 0)));
        // Level-triggered: reported again.
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(r.is_ready(Token::Exec(5, 1)));
        // Dropped while another descriptor keeps the pipe open: gone from
        // the set all the same.
        drop(w);
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(!r.is_ready(Token::Exec(5, 1)));
        drop(other);
    }

    #[test]
    fn unwatch_keeps_the_descriptor_open() {
        let mut r = Readiness::new().unwrap();
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let w = r.watch(rd, Token::Output(3, 0)).unwrap();
        nix::unistd::write(&wr, b"x").unwrap();
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(r.is_ready(Token::Output(3, 0)));
        w.unwatch();
        r.wait(nix::poll::PollTimeout::ZERO).unwrap();
        assert!(!r.is_ready(Token::Output(3, 0)));
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(w.get(), &mut buf).unwrap(), 1);
    }
}
