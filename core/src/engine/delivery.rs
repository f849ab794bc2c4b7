//! Outcomes and delivery: an attempt's answer or failure is judged (the same functions
//! as the caller's-thread path), retried after a wait (a timer) or completed; outcomes go
//! to the callback pool (never run on the loop), and so do queued log lines.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq_proto::http::Method;

use crate::contract::error::{HangupResult, Status};
use crate::contract::options::LogLevel;
use crate::net::conn::AttemptError;

use super::timers::Timer;
use super::{lock, Done, Loop, Origin};

use super::admission::{adapt, release_budget};

impl Loop {
    /// Hands queued log lines to a callback thread (never written on the loop).
    pub(super) fn schedule_log_drain(&mut self) {
        if self.core.schedule_log_drain(true) {
            let core = Arc::clone(&self.core);
            if self
                .callbacks
                .submit(Box::new(move || core.drain_log()))
                .is_err()
            {
                self.core.schedule_log_drain(false);
            }
        }
    }

    /// An attempt of job `j` ended: the outcome, or a retry after a wait (a timer; the
    /// job holds no slot meanwhile).
    pub(super) fn attempt_done(
        &mut self,
        j: usize,
        outcome: Result<crate::net::wire::Answer, AttemptError>,
    ) {
        let Some(job) = self.jobs.get_mut(j) else {
            return;
        };
        job.slot = None;
        let took = job.attempt_start.elapsed();
        release_budget(&mut self.async_active, &mut self.batches, &job.origin);
        if let Origin::Batch { batch, .. } = job.origin {
            let rate_limited = matches!(&outcome, Ok(a) if a.http_status == 429);
            adapt(&mut self.batches, batch, job.sent_seq, rate_limited);
        }
        let attempt = match &outcome {
            Ok(answer) => {
                self.core.log(LogLevel::Debug, || {
                    format!(
                        "DELETE {} -> HTTP {} in {} us",
                        job.uri,
                        answer.http_status,
                        took.as_micros()
                    )
                });
                self.core.hangup_outcome(answer, &job.id)
            }
            Err(e) => self.core.no_response(&Method::DELETE, &job.uri, e),
        };
        let err = match attempt.result {
            Ok(code) => return self.complete(j, Ok(code)),
            Err(e) => e,
        };
        let (retries, deadline) = (job.retries, job.deadline);
        let next = self.core.after_failure(
            format_args!("hangup {}", job.id),
            true,
            err,
            attempt.failure,
            retries,
            deadline,
            took,
        );
        match next {
            Err(e) => self.complete(j, Err(e)),
            Ok(wait) => {
                let key = self.add_timer(Instant::now() + wait, Timer::Retry(j));
                if let Some(job) = self.jobs.get_mut(j) {
                    job.retries += 1;
                    job.retry_key = Some(key);
                    if let Origin::Batch { batch, .. } = job.origin {
                        if let Some(b) = self.batches.get_mut(batch) {
                            b.retrying += 1;
                        }
                    }
                }
            }
        }
    }

    /// The job's outcome: counted, and handed to its caller.
    pub(super) fn complete(&mut self, j: usize, result: HangupResult) {
        let Some(job) = self.jobs.try_remove(j) else {
            return;
        };
        self.timers.remove(&job.deadline_key);
        if let Some(k) = job.retry_key {
            self.timers.remove(&k);
            self.retry_wait_ended(&job.origin);
        }
        if job.queued {
            // Its entry in `ready` is stale from now on.
            if let Origin::Batch { batch, .. } = job.origin {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.queued -= 1;
                }
            }
        }
        if let Some(s) = job.slot {
            // Still on a connection (the deadline passed mid-exchange): it goes.
            if let Some(slot) = self.slots.get_mut(s) {
                slot.job = None;
            }
            self.close_slot(s);
            release_budget(&mut self.async_active, &mut self.batches, &job.origin);
        }
        let status = match &result {
            Ok(_) => Status::Ok,
            Err(e) => e.status(),
        };
        self.core.stats.finished(status, job.start.elapsed());
        self.core.stats.in_flight_add(-1);
        self.deliver(job.origin, result);
    }

    pub(super) fn deliver(&mut self, origin: Origin, result: HangupResult) {
        match origin {
            Origin::Async(done) => self.offer(done, result),
            Origin::Batch { batch, index } => {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.record(index, Some(result));
                }
                self.batch_maybe_done(batch);
            }
        }
    }

    /// Queues a callback with its outcome; the turn's callbacks go to the pool together.
    pub(super) fn offer(&mut self, done: Done, result: HangupResult) {
        self.ready_callbacks.push((done, result));
    }

    /// Hands this turn's callbacks to the pool as one job, run in order on one callback
    /// thread after the queued log lines: one wake-up per turn, not one per hangup, and
    /// no new thread per burst. If no thread can take them, they are offered again
    /// shortly.
    pub(super) fn flush_callbacks(&mut self) {
        if self.ready_callbacks.is_empty() {
            return;
        }
        let batch = Arc::new(Mutex::new(std::mem::take(&mut self.ready_callbacks)));
        let theirs = Arc::clone(&batch);
        let core = Arc::clone(&self.core);
        // This job writes the queued lines: no separate job for them this turn.
        let marked = self.core.schedule_log_drain(true);
        let mark = self.core.log_mark();
        let job = Box::new(move || {
            // The lines logged before these outcomes are written before their callbacks
            // run (unless another thread is writing the queue this moment); lines logged
            // later wait for the callbacks, not the other way round.
            core.drain_log_until(Some(mark));
            let generation = crate::host::process::generation();
            let mut list = std::mem::take(&mut *lock(&theirs)).into_iter();
            for (done, result) in list.by_ref() {
                // A panicking callback (a Rust caller's) loses nothing but itself.
                let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
                // It forked, and this is the child: the other callbacks are the
                // parent's, never run (nor dropped) here; this thread stops.
                if crate::host::process::generation() != generation {
                    std::mem::forget((list, core));
                    return;
                }
            }
            // Then the lines queued since (this job stood in for a separate drainer).
            core.drain_log();
        });
        if self.callbacks.submit(job).is_err() {
            if marked {
                self.core.schedule_log_drain(false);
            }
            let list = std::mem::take(&mut *lock(&batch));
            if !list.is_empty() {
                if self.undelivered.is_empty() {
                    self.add_timer(Instant::now() + Duration::from_millis(50), Timer::Redeliver);
                }
                self.undelivered.extend(list);
            }
        }
    }

    /// At exit, callbacks the pool never took run here (the client is being dropped).
    pub(super) fn deliver_stragglers(&mut self) {
        self.flush_callbacks();
        for (done, result) in std::mem::take(&mut self.undelivered) {
            let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
        }
    }
}
