//! Repeated execs (`execEvery`) and HTTP attempts (`httpEvery`): a probe
//! run by the shim on the probe's grid instead of one request per probe
//! from the daemon. The
//! shim wakes on its own timer, and the daemon hears of every failure at
//! once but of a streak of successes only in batches: at 100 pods with an
//! exec probe every second, that spares the daemon a request and an
//! answer (and a wake-up of each side) per probe.
//!
//! This module holds the when and the what-to-tell; the shim runs the
//! commands.

use std::time::{Duration, Instant};

use super::protocol::Run;

/// Successes are held back at most this long before they are sent
/// anyway, so the daemon's probe counts lag by no more...
pub const HOLD_AT_MOST: Duration = Duration::from_secs(10);
/// ...and at most this many, at a period of a second.
pub const FLUSH_AFTER: usize = 10;

/// How many successes to hold at `period`: as many as fit in
/// [`HOLD_AT_MOST`], at least one (none held: each sent as it comes).
pub fn batch(period: Duration) -> usize {
    let n = HOLD_AT_MOST.as_millis() / period.as_millis().max(1);
    usize::try_from(n)
        .unwrap_or(FLUSH_AFTER)
        .clamp(1, FLUSH_AFTER)
}

/// When the runs are due: kubelet's ticker semantics (`probe::ticker`),
/// on the shim's clock. A run that outlasts its period is followed at once
/// by the next; the ticks it outlasted beyond that one are dropped.
#[derive(Debug)]
pub struct Schedule {
    next: Instant,
    period: Duration,
}

impl Schedule {
    pub fn new(first: Instant, period: Duration) -> Schedule {
        Schedule {
            next: first,
            period: period.max(Duration::from_millis(1)),
        }
    }

    /// The next tick.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a tick is due at `now`; if so it is taken, and the next
    /// tick is the first of the grid after `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next += crate::time::grid_step_past(now - self.next, self.period);
        true
    }
}

/// Which runs go to the daemon and when: every failure at once, with the
/// successes held before it; the first `quiet_after` successes in a row at
/// once; later ones in batches of `batch` (see [`batch`]).
#[derive(Debug)]
pub struct Reporter {
    quiet_after: u32,
    batch: usize,
    streak: u32,
    held: Vec<Run>,
}

impl Reporter {
    pub fn new(quiet_after: u32, batch: usize) -> Reporter {
        Reporter {
            quiet_after,
            batch: batch.max(1),
            streak: 0,
            held: Vec::new(),
        }
    }

    /// Records a run; returns what to send now, oldest first.
    pub fn record(&mut self, run: Run) -> Option<Vec<Run>> {
        if run.plain_success() {
            self.streak = self.streak.saturating_add(1);
            if self.streak > self.quiet_after {
                // Its output is of no use to anyone: the daemon's result
                // has not changed since the streak began.
                self.held.push(run.without_output());
                return (self.held.len() >= self.batch).then(|| std::mem::take(&mut self.held));
            }
        } else {
            self.streak = 0;
        }
        let mut out = std::mem::take(&mut self.held);
        out.push(run);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::native::protocol::ExecResult;

    const S: Duration = Duration::from_secs(1);

    fn run(code: i32, out: &str) -> Run {
        Run {
            exec: Some(ExecResult {
                exit_code: code,
                stdout: out.into(),
                stderr: String::new(),
                timed_out: false,
                truncated: false,
            }),
            http: None,
            handoff: None,
            error: None,
            micros: 7,
        }
    }

    #[test]
    fn ticks_keep_their_grid_and_hold_one_missed_tick() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0 + S, 2 * S);
        assert!(!s.take(t0), "not before the first tick");
        assert!(s.take(t0 + S));
        assert_eq!(s.next(), t0 + 3 * S);
        assert!(!s.take(t0 + 2 * S));
        // Taken late (a run outlasted ticks at 3 and 5): one run at once,
        // and the grid goes on from 7.
        assert!(s.take(t0 + S * 11 / 2));
        assert_eq!(s.next(), t0 + 7 * S);
        assert!(!s.take(t0 + S * 13 / 2));
        assert!(s.take(t0 + 7 * S));
        assert_eq!(s.next(), t0 + 9 * S);
    }

    #[test]
    fn failures_go_at_once_and_long_streaks_of_successes_in_batches() {
        let mut r = Reporter::new(2, FLUSH_AFTER);
        // The first two successes in a row, as they come (with output).
        let sent = r.record(run(0, "a")).unwrap();
        assert_eq!(sent, vec![run(0, "a")]);
        assert_eq!(r.record(run(0, "b")).unwrap(), vec![run(0, "b")]);
        // Later ones are held, without their output...
        for _ in 0..3 {
            assert_eq!(r.record(run(0, "c")), None);
        }
        // ...and go ahead of the next failure, in order.
        let sent = r.record(run(1, "boom")).unwrap();
        assert_eq!(sent.len(), 4);
        assert!(sent[..3].iter().all(|x| *x == run(0, "")));
        assert_eq!(sent[3], run(1, "boom"));
        // A failure ends the streak: the next successes go at once again.
        assert_eq!(r.record(run(0, "d")).unwrap(), vec![run(0, "d")]);
        assert_eq!(r.record(run(0, "e")).unwrap(), vec![run(0, "e")]);
        // A long streak is sent every FLUSH_AFTER runs.
        for _ in 0..FLUSH_AFTER - 1 {
            assert_eq!(r.record(run(0, "f")), None);
        }
        assert_eq!(r.record(run(0, "f")).unwrap().len(), FLUSH_AFTER);
    }

    #[test]
    fn timeouts_and_runs_that_could_not_start_are_failures() {
        let mut r = Reporter::new(0, FLUSH_AFTER);
        let mut timed_out = run(0, "");
        if let Some(e) = timed_out.exec.as_mut() {
            e.timed_out = true;
        }
        assert_eq!(r.record(timed_out.clone()).unwrap(), vec![timed_out]);
        let refused = Run {
            exec: None,
            http: None,
            handoff: None,
            error: Some("container c is not running".into()),
            micros: 0,
        };
        assert_eq!(r.record(refused.clone()).unwrap(), vec![refused]);
        // quiet_after 0: every success is held.
        assert_eq!(r.record(run(0, "x")), None);
    }

    #[test]
    fn successes_are_held_ten_seconds_at_most() {
        assert_eq!(batch(S), 10);
        assert_eq!(batch(Duration::from_millis(100)), 10);
        assert_eq!(batch(3 * S), 3);
        assert_eq!(batch(10 * S), 1);
        assert_eq!(batch(300 * S), 1);
        // A batch of one: every success goes as it comes.
        let mut r = Reporter::new(0, batch(10 * S));
        assert_eq!(r.record(run(0, "x")).unwrap(), vec![run(0, "")]);
    }
}
