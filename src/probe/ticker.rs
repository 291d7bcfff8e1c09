//! When a probe runs: kubelet's prober worker (`k8s:pkg/kubelet/prober/
//! worker.go`, `run`) probes once at start and then on every tick of a
//! `time.Ticker` of `periodSeconds`, so probes keep to a grid from the
//! worker's start whatever they last: a probe that outlasts its period is
//! followed at once by the next (the ticker holds one tick), and the
//! ticks it outlasted beyond that one are dropped.
//!
//! nodelet keeps that grid, and lays every probe's grid on a common one of
//! [`STEP`]: a worker's first tick is its start rounded up to the next
//! step. Periods are whole seconds, so every later tick stays on the
//! common grid too, and the probes of a node's containers that fall due
//! within one step run in one wake-up of the runtime instead of one each.
//! The phase of kubelet's grid is itself an accident of when the pod was
//! added; the rounding moves a first probe by less than one step and
//! changes no period.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The common grid's step: a divisor of one second.
pub const STEP: Duration = Duration::from_millis(50);

/// A probe worker's ticks: every `period` from its first.
#[derive(Debug)]
pub struct Ticker {
    next: Instant,
    period: Duration,
}

/// The origin of the common grid: the first time any ticker asked.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `t` rounded up to the grid of `step` through `origin`.
fn align(t: Instant, origin: Instant, step: Duration) -> Instant {
    let step_ns = step.as_nanos().max(1);
    if t >= origin {
        let off = (t - origin).as_nanos();
        let steps = off.div_ceil(step_ns);
        origin + nanos(steps * step_ns)
    } else {
        let back = (origin - t).as_nanos();
        origin - nanos(back / step_ns * step_ns)
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

impl Ticker {
    /// Ticks from `start` (rounded up to the common grid) every `period`.
    pub fn new(start: Instant, period: Duration) -> Ticker {
        Ticker {
            next: align(start, origin(), STEP),
            period: period.max(STEP),
        }
    }

    /// The next tick's time.
    #[cfg(test)]
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Waits for the next tick and returns its time. A tick that passed
    /// while the caller was busy is delivered at once; those before it are
    /// dropped (Go's ticker channel holds one).
    pub async fn tick(&mut self) -> Instant {
        let at = self.next;
        tokio::time::sleep_until(at).await;
        self.next = self.first_after(Instant::now());
        at
    }

    /// Drops a tick that passed while the caller waited for something
    /// else: the next one is the first still to come.
    pub fn skip_missed(&mut self) {
        self.next = self.first_after(Instant::now());
    }

    /// The first tick of this grid strictly after `t`.
    fn first_after(&self, t: Instant) -> Instant {
        if t < self.next {
            return self.next;
        }
        self.next + crate::time::grid_step_past(t - self.next, self.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Now is `want`, up to the timer wheel's millisecond (the grid's
    /// origin may come from another test's runtime, whose milliseconds
    /// fall elsewhere).
    #[track_caller]
    fn assert_now(want: Instant, what: &str) {
        let now = Instant::now();
        assert!(
            now >= want && now - want < Duration::from_millis(1),
            "{what}: now {now:?}, want {want:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_keep_their_grid_however_long_the_work_between() {
        let start = Instant::now();
        let mut t = Ticker::new(start, 2 * S);
        let first = t.next();
        assert!(
            first >= start && first - start < STEP,
            "rounded up by less than a step"
        );
        t.tick().await;
        assert_now(first, "the first tick at the start");
        // Work shorter than the period: the next tick is one period on.
        tokio::time::advance(S / 2).await;
        t.tick().await;
        assert_now(first + 2 * S, "one period on");
        // Work past the next tick but not the one after: that tick is
        // delivered at once, then the grid resumes.
        tokio::time::advance(3 * S).await;
        let late = Instant::now();
        t.tick().await;
        assert_eq!(Instant::now(), late, "the held tick comes at once");
        t.tick().await;
        assert_now(first + 6 * S, "back on the grid");
        // Work past several ticks: one is held, the others dropped.
        tokio::time::advance(5 * S).await;
        t.tick().await;
        t.tick().await;
        assert_now(first + 12 * S, "one held, the others dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_missed_while_waiting_for_something_else_is_dropped() {
        let mut t = Ticker::new(Instant::now(), S);
        let first = t.next();
        tokio::time::advance(S * 5 / 2 + STEP).await;
        t.skip_missed();
        t.tick().await;
        assert_now(first + 3 * S, "the next tick still to come");
        // Nothing missed: nothing changes.
        t.skip_missed();
        assert_eq!(t.next(), first + 4 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn workers_started_within_one_step_tick_together() {
        // Just past a point of the grid.
        tokio::time::sleep_until(Ticker::new(Instant::now(), S).next()).await;
        tokio::time::advance(Duration::from_millis(1)).await;
        let a = Ticker::new(Instant::now(), S);
        tokio::time::advance(STEP / 3).await;
        let b = Ticker::new(Instant::now(), 3 * S);
        tokio::time::advance(STEP).await;
        let c = Ticker::new(Instant::now(), S);
        assert_eq!(a.next(), b.next(), "{a:?} {b:?}");
        assert_eq!(c.next(), a.next() + STEP, "the next step, not the same");
    }

    #[test]
    fn times_round_up_to_the_grid_on_either_side_of_its_origin() {
        let o = std::time::Instant::now() + 10 * S;
        let o = Instant::from_std(o);
        let step = Duration::from_millis(50);
        assert_eq!(align(o, o, step), o);
        assert_eq!(align(o + Duration::from_millis(1), o, step), o + step);
        assert_eq!(align(o + step, o, step), o + step);
        assert_eq!(
            align(o - Duration::from_millis(1), o, step),
            o,
            "just before the origin rounds up to it"
        );
        assert_eq!(align(o - Duration::from_millis(60), o, step), o - step);
    }
}
