//! Timers: each job's deadline, its retry wait, a connecting slot's connect timeout or
//! next address, a paced batch's next start and the redelivery of refused callbacks, in
//! one ordered map keyed by instant; what each timer ends when it fires.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::contract::error::Error;
use crate::net::conn::AttemptError;

use super::{Loop, Origin, SlotState, INITIAL_CONNECTING};

/// A timer's purpose; each is removed when what it guards ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The job's deadline.
    Deadline(usize),
    /// The job's retry wait is over.
    Retry(usize),
    /// A connecting slot: its connect timeout, or its next Happy Eyeballs address.
    Slot(usize),
    /// Callbacks the pool refused are offered again.
    Redeliver,
    /// A paced batch may start its next id.
    Pace(usize),
}

pub(super) type TimerKey = (Instant, u64);

impl Loop {
    pub(super) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    pub(super) fn add_timer(&mut self, at: Instant, t: Timer) -> TimerKey {
        let key = (at, self.next_serial());
        self.timers.insert(key, t);
        key
    }

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((&key, _)) = self.timers.first_key_value() {
            if key.0 > now {
                break;
            }
            let Some(t) = self.timers.remove(&key) else {
                break;
            };
            // A panic in one timer's work costs its own hangup only.
            let guarded = catch_unwind(AssertUnwindSafe(|| self.fire(t, now)));
            if guarded.is_err() {
                match t {
                    Timer::Deadline(j) | Timer::Retry(j) => {
                        match self.jobs.get(j).and_then(|job| job.slot) {
                            Some(s) => self.fail_slot(s),
                            None => self.complete(j, Err(Error::caught_panic())),
                        }
                    }
                    Timer::Slot(s) => self.fail_slot(s),
                    Timer::Redeliver | Timer::Pace(_) => {}
                }
            }
        }
    }

    pub(super) fn fire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Deadline(j) => self.deadline_passed(j),
            Timer::Retry(j) => {
                let Some(job) = self.jobs.get_mut(j) else {
                    return;
                };
                job.retry_key = None;
                if let Origin::Batch { batch, .. } = job.origin {
                    if let Some(b) = self.batches.get_mut(batch) {
                        b.retrying = b.retrying.saturating_sub(1);
                    }
                }
                let Some(job) = self.jobs.get_mut(j) else {
                    return;
                };
                if Instant::now() >= job.deadline {
                    let e = self.core.deadline_error(job.start);
                    self.complete(j, Err(e));
                    return;
                }
                let serial = job.serial;
                match job.origin {
                    Origin::Async(_) => self.waiting.push_front((j, serial)),
                    // Before ids admitted meanwhile, as an async retry goes first.
                    Origin::Batch { batch, .. } => self.queue_in_batch(batch, j, true),
                }
            }
            Timer::Slot(s) => {
                let Some(slot) = self.slots.get_mut(s) else {
                    return;
                };
                slot.timer = None;
                if let SlotState::Open(c) = &mut slot.state {
                    // The connect timeout passed: still in the tunnel or the handshake?
                    if !c.is_established() {
                        self.attempt_failed(s, AttemptError::ConnectTimeout);
                    } else if c.grace_until().is_some_and(|g| now >= g) {
                        // The rest of a decided 2xx's body did not come: the answer
                        // stands, the connection goes.
                        let answer = c.cut_short();
                        let j = slot.job.take();
                        self.close_slot(s);
                        if let (Some(j), Some(answer)) = (j, answer) {
                            self.attempt_done(j, Ok(answer));
                        }
                    }
                } else if now >= slot.connect_until {
                    if let SlotState::Racing(r) = &mut slot.state {
                        r.abandon();
                        let losers = std::mem::take(&mut r.losers);
                        for a in losers {
                            self.core.book.demote(a);
                        }
                        // A connect that timed out: the server (or its backlog) is
                        // overwhelmed, or the path lossy; fewer at once.
                        self.connect_window = (self.connect_window / 2).max(INITIAL_CONNECTING);
                    }
                    self.attempt_failed(s, AttemptError::ConnectTimeout);
                } else {
                    self.step_race(s);
                }
            }
            Timer::Redeliver => {
                for (done, result) in std::mem::take(&mut self.undelivered) {
                    self.offer(done, result);
                }
            }
            // `pump`, after the timers, starts the next id.
            Timer::Pace(b) => {
                if let Some(batch) = self.batches.get_mut(b) {
                    batch.pace_timer = false;
                }
            }
        }
    }

    /// The job's deadline passed: whatever it was doing ends now.
    pub(super) fn deadline_passed(&mut self, j: usize) {
        let Some(job) = self.jobs.get(j) else { return };
        let connecting = job
            .slot
            .and_then(|s| self.slots.get(s))
            .is_some_and(|slot| match &slot.state {
                SlotState::Open(c) => !c.is_established(),
                _ => true,
            });
        match job.slot {
            Some(s) => {
                // A hangup whose status line came is decided by it, body or not.
                let cut = match self.slots.get_mut(s).map(|slot| &mut slot.state) {
                    Some(SlotState::Open(c)) => c.cut_short(),
                    _ => None,
                };
                if let Some(answer) = cut {
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.job = None;
                    }
                    self.close_slot(s);
                    return self.attempt_done(j, Ok(answer));
                }
                let e = if connecting {
                    AttemptError::ConnectTimeout
                } else {
                    AttemptError::Deadline
                };
                self.attempt_failed(s, e);
                // The retry rules see no time left: the job ends with this attempt's error.
            }
            None => {
                let mut e = self.core.deadline_error(job.start);
                // Queued with the budget full now: a descriptor is what it waited for.
                if !crate::host::fds::room(self.resolving.len()) {
                    e = e.append(&format!(": {}", crate::host::fds::WAITED_FOR_DESCRIPTOR));
                }
                self.complete(j, Err(e));
            }
        }
    }
}
