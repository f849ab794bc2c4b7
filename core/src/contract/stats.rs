//! Client statistics: counters and a fixed latency histogram, recorded with relaxed
//! atomics only (no allocation, no lock on the hot path), read as a [`Stats`] snapshot.
//!
//! The design is monotonic: counters only grow over the client's life, so a reader who
//! wants a rate or a window diffs two snapshots; `in_flight` and `connections_open` are
//! gauges. Latency is each hangup's whole time (validation to outcome, retries and waits
//! included), kept in log-linear buckets: four per power of two of microseconds, so a
//! percentile is reported as the upper edge of its bucket, at most 19% above the truth.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;
use std::time::Duration;

use crate::contract::status::Status;

/// How many statuses the per-status counters can hold (room for statuses added later).
pub const STATUS_SLOTS: usize = 32;

/// Sub-buckets per power of two.
const SUB: u32 = 4;
/// Buckets: values up to 2^40 us (12 days) and one for anything above.
const BUCKETS: usize = (40 * SUB as usize) + 1;

/// What a client has done so far. Plain data: a snapshot taken by [`crate::Client::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Finished hangups by final status, indexed by the status number ([`Status::code`]).
    pub hangups_by_status: [u64; STATUS_SLOTS],
    /// HTTP attempts made (a hangup makes one, plus one per retry).
    pub attempts: u64,
    /// Retries after a connection failed before any response.
    pub retries_connection: u64,
    /// Retries after a 429.
    pub retries_rate_limited: u64,
    /// Retries after a 500, 502, 503 or 504.
    pub retries_server_error: u64,
    /// Hangups running now (started, no outcome yet), including any waiting to retry:
    /// such a wait holds no connection, so a bulk call may have more hangups in flight
    /// than its `max_parallel`, never more requests.
    pub in_flight: u64,
    /// TCP connections open now. (Both gauges are of this process: in a forked child,
    /// they count the child's own only.)
    pub connections_open: u64,
    /// TCP connections opened over the client's life.
    pub connections_opened: u64,
    /// Latency percentiles of finished hangups, in microseconds (upper bucket edges; 0
    /// before the first hangup), and the largest latency seen, exact.
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
}

impl Stats {
    /// Finished hangups, whatever their status.
    pub fn hangups(&self) -> u64 {
        self.hangups_by_status.iter().sum()
    }

    /// Finished hangups with `status`.
    pub fn with_status(&self, status: Status) -> u64 {
        self.hangups_by_status[status.code() as usize]
    }
}

/// Why a retry was made, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RetryCause {
    Connection,
    RateLimited,
    ServerError,
}

/// The live counters of one client.
pub(crate) struct Recorder {
    by_status: [AtomicU64; STATUS_SLOTS],
    attempts: AtomicU64,
    retries: [AtomicU64; 3],
    /// The gauges, of this process: a forked child's start at zero (the parent's
    /// hangups and connections are not the child's, and never end there).
    gauges: crate::host::process::PerProcess<Gauges>,
    opened: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            attempts: AtomicU64::new(0),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: Default::default(),
            opened: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }
}

/// The largest latency (us) each bucket holds: 2^(b/4) rounded up, the last unbounded.
/// Computed once, so recording a latency is a binary search, no floating point.
static EDGES: LazyLock<[u64; BUCKETS]> = LazyLock::new(|| {
    std::array::from_fn(|b| {
        if b == BUCKETS - 1 {
            u64::MAX
        } else {
            (2f64.powf(b as f64 / SUB as f64)).ceil() as u64
        }
    })
});

/// Makes the bucket table (see `host::init`).
pub(crate) fn init() {
    LazyLock::force(&EDGES);
}

/// The bucket of a latency of `us` microseconds: the first whose upper edge holds it.
fn bucket(us: u64) -> usize {
    EDGES.partition_point(|&edge| edge < us).min(BUCKETS - 1)
}

/// The largest latency (us) bucket `b` holds.
fn upper_edge(b: usize) -> u64 {
    EDGES[b.min(BUCKETS - 1)]
}

#[derive(Default)]
struct Gauges {
    in_flight: AtomicU64,
    open: AtomicU64,
}

/// Counts in-flight hangups for as long as it lives (on the counter it raised).
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Counts an open connection for as long as it lives, in the process that opened it.
pub(crate) struct OpenConnection(std::sync::Arc<Recorder>, u64);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.1 == crate::host::process::generation() {
            self.0.gauges().open.fetch_sub(1, Relaxed);
        }
    }
}

impl Recorder {
    #[inline]
    fn gauges(&self) -> &Gauges {
        self.gauges.get(Default::default)
    }

    pub(crate) fn started(&self) -> InFlight<'_> {
        let n = &self.gauges().in_flight;
        n.fetch_add(1, Relaxed);
        InFlight(n)
    }

    /// The engine's form of `started`: +1 when a hangup is taken, -1 when it ends.
    pub(crate) fn in_flight_add(&self, delta: i64) {
        let n = &self.gauges().in_flight;
        if delta >= 0 {
            n.fetch_add(delta as u64, Relaxed);
        } else {
            n.fetch_sub(delta.unsigned_abs(), Relaxed);
        }
    }

    pub(crate) fn attempt(&self) {
        self.attempts.fetch_add(1, Relaxed);
    }

    pub(crate) fn retry(&self, cause: RetryCause) {
        self.retries[cause as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn finished(&self, status: Status, took: Duration) {
        self.by_status[(status.code() as usize).min(STATUS_SLOTS - 1)].fetch_add(1, Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(us)].fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub(crate) fn connection_opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.opened.fetch_add(1, Relaxed);
        self.gauges().open.fetch_add(1, Relaxed);
        OpenConnection(
            std::sync::Arc::clone(self),
            crate::host::process::generation(),
        )
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max_us = self.max_us.load(Relaxed);
        // The first bucket whose running count reaches the rank; never above the max seen.
        let pct = |p: u64| -> u64 {
            if total == 0 {
                return 0;
            }
            let rank = (total * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_edge(b).min(max_us);
                }
            }
            max_us
        };
        Stats {
            hangups_by_status: std::array::from_fn(|i| self.by_status[i].load(Relaxed)),
            attempts: self.attempts.load(Relaxed),
            retries_connection: self.retries[RetryCause::Connection as usize].load(Relaxed),
            retries_rate_limited: self.retries[RetryCause::RateLimited as usize].load(Relaxed),
            retries_server_error: self.retries[RetryCause::ServerError as usize].load(Relaxed),
            in_flight: self.gauges().in_flight.load(Relaxed),
            connections_open: self.gauges().open.load(Relaxed),
            connections_opened: self.opened.load(Relaxed),
            latency_p50_us: pct(50),
            latency_p90_us: pct(90),
            latency_p99_us: pct(99),
            latency_max_us: max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_and_are_ordered() {
        for us in [
            0u64,
            1,
            2,
            3,
            5,
            17,
            100,
            1_000,
            123_456,
            10_000_000,
            u64::MAX / 2,
        ] {
            let b = bucket(us);
            assert!(
                upper_edge(b) >= us,
                "{us} in bucket {b} up to {}",
                upper_edge(b)
            );
            if b > 0 {
                assert!(
                    upper_edge(b - 1) < us,
                    "{us}: bucket {b} is the first that holds it"
                );
            }
        }
        for b in 1..BUCKETS {
            assert!(upper_edge(b) >= upper_edge(b - 1));
        }
    }

    #[test]
    fn percentiles_are_within_one_bucket_of_the_truth() {
        let r = Recorder::default();
        // 1..=10,000 us: true p50 = 5,000, p90 = 9,000, p99 = 9,900, max 10,000.
        for us in 1..=10_000u64 {
            r.finished(Status::Ok, Duration::from_micros(us));
        }
        let s = r.snapshot();
        for (got, truth) in [
            (s.latency_p50_us, 5_000u64),
            (s.latency_p90_us, 9_000),
            (s.latency_p99_us, 9_900),
        ] {
            let (gb, tb) = (bucket(got) as i64, bucket(truth) as i64);
            assert!((gb - tb).abs() <= 1, "got {got} for {truth}");
            assert!(got >= truth, "an upper edge: {got} >= {truth}");
        }
        assert_eq!(s.latency_max_us, 10_000);
        assert_eq!(s.with_status(Status::Ok), 10_000);
        assert_eq!(s.hangups(), 10_000);
    }

    #[test]
    fn gauges_follow_their_guards() {
        let r = std::sync::Arc::new(Recorder::default());
        let a = r.started();
        let c = r.connection_opened();
        let s = r.snapshot();
        assert_eq!(
            (s.in_flight, s.connections_open, s.connections_opened),
            (1, 1, 1)
        );
        drop(a);
        drop(c);
        let s = r.snapshot();
        assert_eq!(
            (s.in_flight, s.connections_open, s.connections_opened),
            (0, 0, 1)
        );
        assert_eq!(s.latency_p50_us, 0, "no hangup yet");
    }
}
