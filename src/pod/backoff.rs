//! Restart and image-pull back-off, as client-go's `flowcontrol.Backoff`
//! that the kubelet uses (`k8s:pkg/kubelet/kuberuntime/kuberuntime_manager.go
//! doBackOff`, `k8s:pkg/kubelet/images/image_manager.go`): 10 s, doubling,
//! capped at 300 s; an entry not touched for twice the cap (10 min) starts
//! over. Pure: every call takes the time it is about.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, at: SystemTime) -> bool {
        at.duration_since(e.last_update)
            .is_ok_and(|d| d > self.max * 2)
    }

    /// `IsInBackOffSince`: the time left to wait at `now` when the event
    /// (a container's exit) happened at `event`; `None` when it may go.
    pub fn remaining(&self, key: &str, event: SystemTime, now: SystemTime) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        let since = now.duration_since(event).unwrap_or_default();
        (since < e.backoff).then(|| e.backoff - since)
    }

    /// `IsInBackOffSinceUpdate`: the time left at `now` since the last
    /// [`Backoff::next`] of `key` (image pulls).
    pub fn remaining_since_update(&self, key: &str, now: SystemTime) -> Option<Duration> {
        let e = self.entries.get(key)?;
        self.remaining(key, e.last_update, now)
    }

    /// The current back-off of `key` (for messages), if any.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// `Next`: records an attempt at `at`, doubling the back-off (or
    /// starting it at the initial value).
    pub fn next(&mut self, key: &str, at: SystemTime) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(e, at) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: at,
            },
        );
    }

    /// Forgets `key` (a pull that succeeded).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    /// Simulates a container that exits at once every time it is started,
    /// started as soon as back-off allows: the gaps are 0, 10, 20, 40, …, 300.
    #[test]
    fn crash_loop_delays_double_to_the_cap() {
        let mut b = Backoff::default();
        let mut now = 0;
        let mut gaps = Vec::new();
        for _ in 0..9 {
            let exited = now;
            let mut waited = 0;
            while let Some(r) = b.remaining("k", t(exited), t(now)) {
                now += r.as_secs();
                waited += r.as_secs();
            }
            gaps.push(waited);
            b.next("k", t(exited));
        }
        assert_eq!(gaps, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn ten_minutes_of_good_running_resets_the_backoff() {
        let mut b = Backoff::default();
        b.next("k", t(0));
        b.next("k", t(1));
        b.next("k", t(2));
        assert_eq!(b.current("k"), Some(Duration::from_secs(40)));
        // Exits 601 s after the last step: not in back-off, and starts over.
        assert_eq!(b.remaining("k", t(603), t(603)), None);
        b.next("k", t(603));
        assert_eq!(b.current("k"), Some(INITIAL));
    }

    #[test]
    fn keys_are_independent_and_reset_forgets() {
        let mut b = Backoff::default();
        b.next("a", t(0));
        assert!(b.remaining("a", t(0), t(5)).is_some());
        assert!(b.remaining("b", t(0), t(5)).is_none());
        b.reset("a");
        assert!(b.remaining("a", t(0), t(5)).is_none());
    }
}
