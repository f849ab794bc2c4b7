//! The retry rules of the contract, as a pure policy: given what went wrong, how many
//! retries were made and how much of the deadline is left, retry (after how long) or stop.
//!
//! Retried: a connection that failed before any response (including a stale pooled
//! keep-alive connection), 429 (honouring `Retry-After` when it fits the deadline, else
//! giving up at once), and 500/502/503/504 (exponential backoff with jitter). Nothing else.

use std::time::Duration;

/// First backoff step; doubles per retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Largest backoff step.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

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

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Stop,
    RetryAfter(Duration),
}

/// `retries_done` retries were already made; `time_left` is what remains of the deadline;
/// `jitter` is a number in [0, 1) that spreads clients apart.
pub fn decide(
    failure: Failure,
    retries_done: u32,
    max_retries: u32,
    time_left: Duration,
    jitter: f64,
) -> Decision {
    if retries_done >= max_retries || time_left.is_zero() {
        return Decision::Stop;
    }
    let wait = match failure {
        Failure::Final => return Decision::Stop,
        // The usual cause is a keep-alive connection the server had closed: a fresh
        // connection at once is right. A second failure in a row waits like a 5xx.
        Failure::Connection if retries_done == 0 => Duration::ZERO,
        Failure::Connection | Failure::Unavailable => backoff(retries_done, jitter),
        Failure::RateLimited {
            retry_after: Some(d),
        } => d,
        Failure::RateLimited { retry_after: None } => backoff(retries_done, jitter),
    };
    // A wait that uses up the deadline leaves no time for the request itself.
    if wait >= time_left {
        Decision::Stop
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

#[cfg(test)]
mod tests {
    use super::*;
    const S: Duration = Duration::from_secs(10);

    #[test]
    fn what_is_retried() {
        assert_eq!(decide(Failure::Final, 0, 2, S, 0.5), Decision::Stop);
        assert_eq!(
            decide(Failure::Connection, 0, 2, S, 0.5),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert!(
            matches!(decide(Failure::Connection, 1, 2, S, 0.5), Decision::RetryAfter(d) if d > Duration::ZERO)
        );
        assert!(matches!(
            decide(Failure::Unavailable, 0, 2, S, 0.5),
            Decision::RetryAfter(_)
        ));
        assert_eq!(decide(Failure::Unavailable, 2, 2, S, 0.5), Decision::Stop);
        assert_eq!(decide(Failure::Unavailable, 0, 0, S, 0.5), Decision::Stop);
    }

    #[test]
    fn retry_after_must_fit() {
        let r = |secs| Failure::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            decide(r(3), 0, 2, S, 0.0),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(decide(r(30), 0, 2, S, 0.0), Decision::Stop);
        assert_eq!(decide(r(10), 0, 2, S, 0.0), Decision::Stop);
        assert!(matches!(
            decide(Failure::RateLimited { retry_after: None }, 0, 2, S, 0.0),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(40, 1.0), BACKOFF_CAP);
        assert_eq!(
            decide(Failure::Unavailable, 0, 2, Duration::from_millis(10), 0.0),
            Decision::Stop
        );
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
