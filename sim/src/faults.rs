//! Fault injection: global rates from the command line, and scripted next responses per
//! call id (set with `POST /_sim/calls/{id}/faults`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::rng::random_unit;

/// Rates and delays applied to every `/v1` request.
#[derive(Debug, Clone, Default)]
pub struct GlobalFaults {
    /// Added before every answer.
    pub latency: Duration,
    /// Share of requests answered 503.
    pub error_rate: f64,
    /// Share of requests answered 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    /// Share of requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Share of list and hangup requests before which one random live call of the
    /// tenant ends on its own (caller-hangup): calls ending while a sweep runs.
    pub self_end_rate: f64,
    /// A real rate limit: at most this many `/v1` requests a second (a token bucket
    /// holding a second's worth), the rest answered 429 with `Retry-After:
    /// retry_after_secs`. 0: none.
    pub rate_limit: u32,
    /// While the first listing runs (at its first request for a page after page 1), this
    /// many new live calls start: calls that begin while a sweep lists.
    pub grow_on_list: u64,
}

/// A fault to act out instead of the normal answer: scripted for the next request that
/// touches a call id, or drawn from the global rates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Scripted {
    /// HTTP status to answer (ignored when `drop` is set).
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` header value, verbatim (seconds or an HTTP date).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// JSON body; default: the nested envelope for the status.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Wait this long before answering (or dropping).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Close the connection without answering.
    #[serde(default)]
    pub drop: bool,
    /// Never answer (the client's deadline must end it).
    #[serde(default)]
    pub hang: bool,
}

#[derive(Default)]
pub struct Faults {
    pub global: GlobalFaults,
    scripts: Mutex<HashMap<String, VecDeque<Scripted>>>,
    /// `rate_limit`'s bucket: tokens left, and when it was last filled.
    bucket: Mutex<Option<(f64, Instant)>>,
    /// `grow_on_list` calls not started yet.
    grow_left: AtomicU64,
    /// 429 answers given (`GET /_sim/health`'s `rate_limited`).
    pub rate_limited: AtomicU64,
}

impl Faults {
    pub fn new(global: GlobalFaults) -> Faults {
        Faults {
            grow_left: AtomicU64::new(global.grow_on_list),
            global,
            scripts: Mutex::new(HashMap::new()),
            bucket: Mutex::new(None),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// How many calls to start now, once: `grow_on_list`, at a listing's page 2 or later.
    pub fn grow_now(&self, page: u64) -> u64 {
        if page < 2 {
            return 0;
        }
        self.grow_left.swap(0, Ordering::Relaxed)
    }

    /// Takes a token from the `rate_limit` bucket; false when it is empty.
    fn within_rate(&self) -> bool {
        let limit = f64::from(self.global.rate_limit);
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = b.get_or_insert((limit, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * limit).min(limit);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a live call should end on its own before this request (`self_end_rate`).
    pub fn self_end(&self) -> bool {
        self.global.self_end_rate > 0.0 && crate::rng::random_unit() < self.global.self_end_rate
    }

    /// Replaces the script for `id`.
    pub fn script(&self, id: &str, responses: Vec<Scripted>) {
        let mut s = self.scripts.lock().unwrap_or_else(|e| e.into_inner());
        if responses.is_empty() {
            s.remove(id);
        } else {
            s.insert(id.to_owned(), responses.into());
        }
    }

    /// The fault for this request, if any: the call's script first, then the rates.
    pub fn next(&self, id: Option<&str>) -> Option<Scripted> {
        if let Some(id) = id {
            let mut s = self.scripts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(q) = s.get_mut(id) {
                let next = q.pop_front();
                if q.is_empty() {
                    s.remove(id);
                }
                if let Some(n) = next {
                    return Some(n);
                }
            }
        }
        let g = &self.global;
        if g.rate_limit > 0 && !self.within_rate() {
            return Some(Scripted {
                status: Some(429),
                retry_after: Some(g.retry_after_secs.to_string()),
                ..blank()
            });
        }
        if g.drop_rate > 0.0 && random_unit() < g.drop_rate {
            return Some(Scripted {
                drop: true,
                ..blank()
            });
        }
        if g.rate_limit_rate > 0.0 && random_unit() < g.rate_limit_rate {
            return Some(Scripted {
                status: Some(429),
                retry_after: Some(g.retry_after_secs.to_string()),
                ..blank()
            });
        }
        if g.error_rate > 0.0 && random_unit() < g.error_rate {
            return Some(Scripted {
                status: Some(503),
                ..blank()
            });
        }
        None
    }
}

fn blank() -> Scripted {
    Scripted {
        status: None,
        retry_after: None,
        body: None,
        delay_ms: None,
        drop: false,
        hang: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_run_in_order_then_stop() {
        let f = Faults::new(GlobalFaults::default());
        f.script(
            "c1",
            vec![
                Scripted {
                    status: Some(503),
                    ..blank()
                },
                Scripted {
                    drop: true,
                    ..blank()
                },
            ],
        );
        assert_eq!(
            f.next(Some("c1")),
            Some(Scripted {
                status: Some(503),
                ..blank()
            })
        );
        assert_eq!(
            f.next(Some("c1")),
            Some(Scripted {
                drop: true,
                ..blank()
            })
        );
        assert_eq!(f.next(Some("c1")), None);
        assert_eq!(f.next(Some("c2")), None);
    }

    #[test]
    fn rates() {
        let f = Faults::new(GlobalFaults {
            error_rate: 1.0,
            ..Default::default()
        });
        assert_eq!(
            f.next(None),
            Some(Scripted {
                status: Some(503),
                ..blank()
            })
        );
        let f = Faults::new(GlobalFaults {
            rate_limit_rate: 0.5,
            retry_after_secs: 2,
            ..Default::default()
        });
        let n = (0..2000).filter(|_| f.next(None).is_some()).count();
        assert!((800..1200).contains(&n), "{n}");
    }
}
