//! The retry rules of the contract, as a pure policy, all in this file: which outcomes are
//! retried ([`Failure::of_response`], and a connection that got no response), and given
//! what went wrong, how many retries were made and how much of the deadline is left,
//! retry (after how long) or stop ([`decide`]).
//!
//! Retried: a connection that failed before any response (including a stale pooled
//! keep-alive connection), 429 (honouring `Retry-After` when it fits the deadline, else
//! giving up at once), and 500/502/503/504 (exponential backoff with jitter). Nothing else.
//!
//! "Fits" means the wait *and* a useful attempt after it: a retry that would start with
//! almost nothing of the deadline left can only end in TIMEOUT, which tells the caller
//! less than the failure already in hand. For a hangup the question is whether the call
//! is gone, so a retry is made whenever the attempt after it has a fair chance:
//!
//! - After a server's answer (429, 5xx) the attempt is reserved as long as that answer
//!   took, within [`MIN_ATTEMPT`, `MAX_RESERVE`]: the same server will take about as long.
//! - After a connection that failed before any answer, [`MIN_ATTEMPT`] only: the failed
//!   attempt's time measured the failure (a connect timeout while a busy server's backlog
//!   dropped SYNs, a reset of a stale keep-alive connection), not how long the next,
//!   fresh connection and its answer take.

use std::time::{Duration, Instant};

/// First backoff step; doubles per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest backoff step.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Least time kept for the attempt after a wait.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// Most time kept for it (a slow failure should not rule out every retry).
pub const MAX_RESERVE: Duration = Duration::from_secs(1);

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response arrived: refused, reset, or a pooled connection found closed.
    Connection,
    /// 429, with the server's `Retry-After` if it gave a usable one.
    RateLimited { retry_after: Option<Duration> },
    /// 500, 502, 503 or 504.
    Unavailable,
    /// Anything else: the outcome is final.
    Final,
}

impl Failure {
    /// The retry class of a response: 429 (with its usable `Retry-After`, if any), the
    /// 5xx statuses the contract retries with backoff, or final.
    pub fn of_response(http_status: u16, retry_after: Option<Duration>) -> Failure {
        match http_status {
            429 => Failure::RateLimited { retry_after },
            500 | 502 | 503 | 504 => Failure::Unavailable,
            _ => Failure::Final,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Stop(Stop),
    RetryAfter(Duration),
}

/// Why no retry is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The outcome is not one the contract retries.
    Final,
    /// `max_retries` retries were made already.
    RetriesSpent,
    /// A retry was due after `wait`, but the wait and a useful attempt do not fit in
    /// what is left of the deadline.
    NoTime { wait: Duration },
}

/// `retries_done` retries were already made; `time_left` is what remains of the deadline;
/// `last_attempt` is how long the failed attempt took (it counts only if the server
/// answered); `jitter` is a number in [0, 1) that spreads clients apart.
pub fn decide(
    failure: Failure,
    retries_done: u32,
    max_retries: u32,
    time_left: Duration,
    last_attempt: Duration,
    jitter: f64,
) -> Decision {
    if failure == Failure::Final {
        return Decision::Stop(Stop::Final);
    }
    if retries_done >= max_retries {
        return Decision::Stop(Stop::RetriesSpent);
    }
    let wait = match failure {
        Failure::Final => return Decision::Stop(Stop::Final),
        // The usual cause is a keep-alive connection the server had closed: a fresh
        // connection at once is right. A second failure in a row waits like a 5xx.
        Failure::Connection if retries_done == 0 => Duration::ZERO,
        Failure::Connection | Failure::Unavailable => backoff(retries_done, jitter),
        Failure::RateLimited {
            retry_after: Some(d),
        } => d,
        Failure::RateLimited { retry_after: None } => backoff(retries_done, jitter),
    };
    let reserve = match failure {
        Failure::Connection => MIN_ATTEMPT,
        _ => last_attempt.clamp(MIN_ATTEMPT, MAX_RESERVE),
    };
    if wait.saturating_add(reserve) > time_left {
        Decision::Stop(Stop::NoTime { wait })
    } else {
        Decision::RetryAfter(wait)
    }
}

/// Exponential backoff with "equal jitter": between half and all of base * 2^n, capped.
pub fn backoff(retries_done: u32, jitter: f64) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(1u32 << retries_done.min(16))
        .min(BACKOFF_CAP);
    let j = jitter.clamp(0.0, 1.0);
    step / 2 + step.mul_f64(j / 2.0)
}

/// A cheap, non-cryptographic number in [0, 1) for jitter, different per call and thread.
pub fn jitter() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A sweep's parallelism under rate limits, as TCP's congestion window: halved on a 429
/// (multiplicative decrease), raised by one after as many other answers as it allows
/// (additive increase), between 1 and the caller's maximum. A 429 to an attempt sent
/// before the last decrease does not halve it again: those answers report the load from
/// before the decrease, which the decrease already answered.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    limit: usize,
    max: usize,
    answered: usize,
    /// Attempts numbered below this were sent before the last decrease.
    mark: u64,
}

impl Aimd {
    pub(crate) fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd {
            limit: max,
            max,
            answered: 0,
            mark: 0,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Attempt number `sent` was answered 429; `next` is the number the next attempt
    /// gets. True when this halved the limit.
    pub(crate) fn rate_limited(&mut self, sent: u64, next: u64) -> bool {
        if sent < self.mark {
            return false;
        }
        self.answered = 0;
        self.mark = next;
        if self.limit == 1 {
            return false; // nothing left to halve
        }
        self.limit /= 2;
        true
    }

    /// An attempt was answered, not 429.
    pub(crate) fn answered(&mut self) {
        if self.limit < self.max {
            self.answered += 1;
            if self.answered >= self.limit {
                self.limit += 1;
                self.answered = 0;
            }
        }
    }
}

/// With at most `rate` starts a second, when the start after one due `at` (made `now`)
/// may be: one interval after it, or after `now` when that start came late by more than
/// an interval (no burst to catch up).
pub(crate) fn next_start(at: Instant, now: Instant, rate: u32) -> Instant {
    let interval = Duration::from_secs(1) / rate.max(1);
    let base = if now.saturating_duration_since(at) > interval {
        now
    } else {
        at
    };
    base + interval
}

/// `from + d`; a `d` past what the clock can add (a Rust caller's `Duration::MAX` for
/// "no limit") is taken as a century instead of panicking.
pub(crate) fn later(from: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    from.checked_add(d.min(CENTURY)).unwrap_or(from)
}

/// `now + d`, as [`later`].
pub(crate) fn deadline_after(d: Duration) -> Instant {
    later(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: Duration = Duration::from_secs(10);
    const FAST: Duration = Duration::from_millis(5);
    const STOP: Decision = Decision::Stop(Stop::Final);
    const SPENT: Decision = Decision::Stop(Stop::RetriesSpent);

    fn d(f: Failure, done: u32, left: Duration) -> Decision {
        decide(f, done, 2, left, FAST, 0.5)
    }

    #[test]
    fn what_is_retried() {
        assert_eq!(d(Failure::Final, 0, S), STOP);
        assert_eq!(
            d(Failure::Connection, 0, S),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert!(
            matches!(d(Failure::Connection, 1, S), Decision::RetryAfter(d) if d > Duration::ZERO)
        );
        assert!(matches!(
            d(Failure::Unavailable, 0, S),
            Decision::RetryAfter(_)
        ));
        assert_eq!(d(Failure::Unavailable, 2, S), SPENT);
        assert_eq!(decide(Failure::Unavailable, 0, 0, S, FAST, 0.5), SPENT);
        assert_eq!(decide(Failure::Final, 5, 2, S, FAST, 0.5), STOP);
    }

    #[test]
    fn retry_after_must_fit_with_an_attempt() {
        let r = |secs| Failure::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(d(r(3), 0, S), Decision::RetryAfter(Duration::from_secs(3)));
        let no_time = |secs| {
            Decision::Stop(Stop::NoTime {
                wait: Duration::from_secs(secs),
            })
        };
        assert_eq!(d(r(30), 0, S), no_time(30));
        assert_eq!(d(r(10), 0, S), no_time(10));
        // The review's case: 1.5 s deadline, a 429 with Retry-After 1 after 400 ms. A
        // 1 s wait would leave 100 ms for an attempt that took 400 ms: give up now.
        let ms = Duration::from_millis;
        assert_eq!(decide(r(1), 0, 2, ms(1100), ms(400), 0.0), no_time(1));
        assert_eq!(
            decide(r(1), 0, 2, ms(1500), ms(400), 0.0),
            Decision::RetryAfter(ms(1000))
        );
        // A fast server still needs MIN_ATTEMPT after the wait; a slow one at most MAX_RESERVE.
        assert_eq!(decide(r(1), 0, 2, ms(1099), FAST, 0.0), no_time(1));
        assert_eq!(
            decide(r(1), 0, 2, ms(1100), FAST, 0.0),
            Decision::RetryAfter(ms(1000))
        );
        assert_eq!(
            decide(r(1), 0, 2, ms(2000), ms(9000), 0.0),
            Decision::RetryAfter(ms(1000))
        );
        assert!(matches!(
            d(Failure::RateLimited { retry_after: None }, 0, S),
            Decision::RetryAfter(_)
        ));
        // A stale connection is retried at once, if an attempt still fits.
        assert_eq!(
            d(Failure::Connection, 0, ms(50)),
            Decision::Stop(Stop::NoTime {
                wait: Duration::ZERO
            })
        );
    }

    #[test]
    fn a_connection_failure_reserves_only_the_minimum_attempt() {
        // The case: a connect timed out after 2 s (a small server's backlog
        // dropped the SYN); 995 ms are left and the next try waits 136 ms. The 2 s said
        // nothing about a fresh connect: the retry is made.
        let ms = Duration::from_millis;
        let jitter_for_136 = (136.0 - 100.0) / 100.0;
        assert_eq!(
            decide(Failure::Connection, 1, 2, ms(995), ms(2000), jitter_for_136),
            Decision::RetryAfter(ms(136))
        );
        assert_eq!(
            decide(Failure::Connection, 0, 2, ms(100), ms(2000), 0.0),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            decide(Failure::Connection, 0, 2, ms(99), ms(2000), 0.0),
            Decision::Stop(Stop::NoTime {
                wait: Duration::ZERO
            })
        );
        // A server's slow answer still predicts its next one.
        assert_eq!(
            decide(Failure::Unavailable, 1, 2, ms(299), ms(200), 0.0),
            Decision::Stop(Stop::NoTime { wait: ms(100) })
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(40, 1.0), BACKOFF_CAP);
        assert!(matches!(
            decide(
                Failure::Unavailable,
                0,
                2,
                Duration::from_millis(10),
                FAST,
                0.0
            ),
            Decision::Stop(Stop::NoTime { .. })
        ));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn aimd_halves_once_per_window_and_climbs_back() {
        let mut a = Aimd::new(64);
        assert!(a.rate_limited(0, 10));
        assert_eq!(a.limit(), 32);
        // Sent before the decrease: already answered by it.
        assert!(!a.rate_limited(9, 12));
        assert_eq!(a.limit(), 32);
        assert!(a.rate_limited(10, 20));
        assert_eq!(a.limit(), 16);
        for _ in 0..16 {
            a.answered();
        }
        assert_eq!(a.limit(), 17);
        for _ in 0..10_000 {
            a.answered();
        }
        assert_eq!(a.limit(), 64);
        // At one, a 429 halves nothing and counts no back-off.
        let mut one = Aimd::new(1);
        assert!(!one.rate_limited(0, 1));
        assert_eq!(one.limit(), 1);
        let mut down = Aimd::new(2);
        assert!(down.rate_limited(0, 1));
        assert!(!down.rate_limited(1, 2));
        assert_eq!(down.limit(), 1);
    }

    #[test]
    fn paced_starts_keep_the_rate_without_bursts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(next_start(t0, t0, 10), t0 + ms(100));
        // A little late: the next keeps the schedule.
        assert_eq!(next_start(t0, t0 + ms(30), 10), t0 + ms(100));
        // Very late: one interval from now, not a burst.
        assert_eq!(next_start(t0, t0 + ms(500), 10), t0 + ms(600));
    }
}
