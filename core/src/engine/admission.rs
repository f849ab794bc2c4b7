//! Admission and budgets: async hangups and batches become jobs, in order; each waits
//! for a place in its budget (the client's `max_connections`, or its batch's
//! parallelism, lowered on 429), for the connect window and the process's descriptor
//! budget, then takes an idle connection or sets up a new one.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slab::Slab;
use ureq_proto::http::Uri;

use crate::contract::error::{Error, HangupResult, Status};
use crate::policy::retry::Aimd;

use super::timers::Timer;
use super::{Batch, Job, Loop, Origin, Reply, Slot, SlotState, Work};

/// A job's attempt ended: the place it held in its budget (async, or its batch's) is free.
/// A controlled batch's attempt was answered: 429 halves its parallelism (once per window
/// of attempts, `retry::Aimd`), any other answer counts toward raising it again.
pub(super) fn adapt(batches: &mut Slab<Batch>, b: usize, sent_seq: u64, rate_limited: bool) {
    let Some(batch) = batches.get_mut(b) else {
        return;
    };
    let Some(control) = &batch.control else {
        return;
    };
    if rate_limited {
        control.rate_limited.fetch_add(1, Ordering::Relaxed);
        if batch.aimd.rate_limited(sent_seq, batch.sent) {
            control.backoffs.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        batch.aimd.answered();
    }
    control
        .parallel
        .store(batch.aimd.limit(), Ordering::Relaxed);
}

pub(super) fn release_budget(async_active: &mut usize, batches: &mut Slab<Batch>, origin: &Origin) {
    match origin {
        Origin::Async(_) => *async_active -= 1,
        Origin::Batch { batch, .. } => {
            if let Some(b) = batches.get_mut(*batch) {
                b.active -= 1;
            }
        }
    }
}

impl Batch {
    /// In flight at once now.
    pub(super) fn limit(&self) -> usize {
        self.aimd.limit()
    }

    /// Jobs that hold a place against `limit` when admitting a new id.
    pub(super) fn holding(&self) -> usize {
        self.active
            + self.queued
            + if self.control.is_some() {
                self.retrying
            } else {
                0
            }
    }

    pub(super) fn stopped(&self, now: Instant) -> bool {
        self.stop_at.is_some_and(|t| now >= t)
            || self
                .control
                .as_ref()
                .is_some_and(|c| c.stop.load(Ordering::Relaxed))
    }

    /// One outcome (None: not started).
    pub(super) fn record(&mut self, index: usize, result: Option<HangupResult>) {
        self.left -= 1;
        match &self.reply {
            Reply::AtEnd(_) => self.out[index] = result,
            Reply::Each(tx) => {
                let _ = tx.send((index, result));
            }
        }
    }
}

impl Loop {
    pub(super) fn accept(&mut self, work: Work) {
        match work {
            Work::One { id, done } => {
                if let Some(j) = self.new_job(id, Origin::Async(done)) {
                    let serial = self.jobs.get(j).map_or(0, |job| job.serial);
                    self.waiting.push_back((j, serial));
                }
            }
            Work::Batch {
                ids,
                max,
                stop_at,
                reply,
                control,
            } => {
                let left = ids.len();
                if left == 0 {
                    if let Reply::AtEnd(tx) = reply {
                        let _ = tx.send(Vec::new());
                    }
                    return;
                }
                let max = max.max(1);
                if let Some(c) = &control {
                    c.parallel.store(max, Ordering::Relaxed);
                }
                self.batches.insert(Batch {
                    out: match reply {
                        Reply::AtEnd(_) => (0..left).map(|_| None).collect(),
                        Reply::Each(_) => Vec::new(),
                    },
                    pace_next: control
                        .as_ref()
                        .filter(|c| c.max_rate > 0)
                        .map(|_| Instant::now()),
                    pace_timer: false,
                    sent: 0,
                    retrying: 0,
                    aimd: Aimd::new(max),
                    ids,
                    next: 0,
                    active: 0,
                    ready: VecDeque::new(),
                    queued: 0,
                    left,
                    stop_at,
                    reply,
                    control,
                });
            }
        }
    }

    /// A job for a validated id, counted in flight from now; None if its URL does not
    /// parse (delivered at once as INTERNAL_ERROR).
    pub(super) fn new_job(&mut self, id: String, origin: Origin) -> Option<usize> {
        let start = Instant::now();
        self.core.stats.in_flight_add(1);
        let uri = match format!("{}{}", self.core.calls_url, id).parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                self.core.stats.in_flight_add(-1);
                self.core
                    .stats
                    .finished(Status::InternalError, Duration::ZERO);
                self.deliver(
                    origin,
                    Err(Error::internal("the request URL did not parse")),
                );
                return None;
            }
        };
        let deadline = crate::policy::retry::later(start, self.core.timeout);
        // A sweep's hangup ends by the sweep's deadline too (its batch's `stop_at`).
        let deadline = match &origin {
            Origin::Batch { batch, .. } => self
                .batches
                .get(*batch)
                .and_then(|b| b.stop_at)
                .map_or(deadline, |stop| deadline.min(stop)),
            _ => deadline,
        };
        let serial = self.next_serial();
        let deadline_key = (deadline, serial);
        let j = self.jobs.insert(Job {
            serial,
            id,
            uri,
            origin,
            start,
            deadline,
            deadline_key,
            retries: 0,
            attempt_start: start,
            slot: None,
            retry_key: None,
            queued: false,
            sent_seq: 0,
        });
        self.timers.insert(deadline_key, Timer::Deadline(j));
        Some(j)
    }

    /// True if another connection may be used now (an idle one, or room for a new one:
    /// within `conn_cap`, and in the process's descriptor budget beside the slots that
    /// will open a socket when their lookup answers).
    pub(super) fn has_room(&self) -> bool {
        !self.idle.is_empty() || self.room_for_new()
    }

    /// True if a new connection may be opened now: within `conn_cap`, fewer than the
    /// connect window being set up, and in the process's descriptor budget beside the
    /// slots that will open a socket when their lookup answers.
    pub(super) fn room_for_new(&self) -> bool {
        self.slots.len() < self.conn_cap
            && self.connecting < self.connect_window
            && self.yield_until.is_none_or(|t| Instant::now() >= t)
            && crate::host::fds::room(self.resolving.len())
    }

    /// Work is queued that only a free descriptor would start: the budget is shared by
    /// every client, which do not wake each other, so the loop looks again shortly. (A
    /// full connect window needs no look: a connect ending is an event of this loop.)
    pub(super) fn waits_for_room(&self) -> bool {
        if !self.idle.is_empty()
            || self.slots.len() >= self.conn_cap
            || self.connecting >= self.connect_window
            || crate::host::fds::room(self.resolving.len())
        {
            return false;
        }
        (!self.waiting.is_empty() && (self.stopping || self.async_active < self.host_limit))
            || self
                .batches
                .iter()
                .map(|(_, x)| x)
                .any(|b| b.active < b.limit() && (b.next < b.ids.len() || !b.ready.is_empty()))
    }

    /// Starts what the budgets allow: each batch up to its `max_parallel`, async jobs up
    /// to the client's `max_connections` (no limit while stopping: every queued hangup
    /// as soon as it can connect), new connections as the connect window allows.
    pub(super) fn pump(&mut self) {
        for b in 0..self.batches.capacity() {
            // Admit up to `max_parallel` (less after 429s), no faster than its rate: each
            // admitted id's deadline starts now.
            while let Some(batch) = self.batches.get_mut(b) {
                if batch.next >= batch.ids.len() {
                    break;
                }
                let now = Instant::now();
                let index = batch.next;
                if batch.stopped(now) {
                    // Not started: its outcome is None.
                    batch.next += 1;
                    batch.record(index, None);
                    self.batch_maybe_done(b);
                    continue;
                }
                if batch.holding() >= batch.limit() {
                    break;
                }
                if let Some(at) = batch.pace_next {
                    if now < at {
                        if !batch.pace_timer {
                            batch.pace_timer = true;
                            // By the batch's deadline at the latest: what is not started
                            // then is not started at all, and the caller hears so then.
                            let wake = batch.stop_at.map_or(at, |t| t.min(at));
                            self.add_timer(wake, Timer::Pace(b));
                        }
                        break;
                    }
                    let rate = batch.control.as_ref().map_or(1, |c| c.max_rate.max(1));
                    batch.pace_next = Some(crate::policy::retry::next_start(at, now, rate));
                }
                batch.next += 1;
                let id = std::mem::take(&mut batch.ids[index]);
                if let Some(j) = self.new_job(id, Origin::Batch { batch: b, index }) {
                    self.queue_in_batch(b, j, false);
                }
            }
            // Then connections, as there is room, in order, never more than the limit on
            // the wire (a plain bulk call's jobs back from a retry wait are not in its
            // admission's count: they may find more queued than the limit).
            while self.has_room() {
                let Some(batch) = self.batches.get_mut(b) else {
                    break;
                };
                if batch.active >= batch.limit() {
                    break;
                }
                let Some((j, serial)) = batch.ready.pop_front() else {
                    break;
                };
                let Some(job) = self.jobs.get_mut(j).filter(|job| job.serial == serial) else {
                    continue; // ended meanwhile (its deadline)
                };
                job.queued = false;
                batch.queued -= 1;
                if !self.start_attempt(j) {
                    // No connection after all (the idle ones were stale, or setups are
                    // at their limit): first in line for the next.
                    self.queue_in_batch(b, j, true);
                    break;
                }
            }
        }
        while self.stopping || self.async_active < self.host_limit {
            if !self.has_room() {
                break;
            }
            let Some((j, serial)) = self.waiting.pop_front() else {
                break;
            };
            if self.jobs.get(j).is_none_or(|job| job.serial != serial) {
                continue; // ended meanwhile (its deadline)
            }
            if !self.start_attempt(j) {
                self.waiting.push_front((j, serial));
                break;
            }
        }
    }

    /// A batch job's retry wait ended early (its hangup ended meanwhile).
    pub(super) fn retry_wait_ended(&mut self, origin: &Origin) {
        if let Origin::Batch { batch, .. } = origin {
            if let Some(b) = self.batches.get_mut(*batch) {
                b.retrying = b.retrying.saturating_sub(1);
            }
        }
    }

    /// Job `j` of batch `b` waits for a connection (at the front: it had its turn).
    pub(super) fn queue_in_batch(&mut self, b: usize, j: usize, front: bool) {
        let (Some(batch), Some(job)) = (self.batches.get_mut(b), self.jobs.get_mut(j)) else {
            return;
        };
        if job.queued {
            return;
        }
        job.queued = true;
        batch.queued += 1;
        if front {
            batch.ready.push_front((j, job.serial));
        } else {
            batch.ready.push_back((j, job.serial));
        }
    }

    pub(super) fn batch_maybe_done(&mut self, b: usize) {
        if self.batches.get(b).is_some_and(|bt| bt.left == 0) {
            if let Some(bt) = self.batches.try_remove(b) {
                if let Reply::AtEnd(tx) = bt.reply {
                    let _ = tx.send(bt.out);
                }
            }
        }
    }

    /// One attempt of `j`: on an idle connection, or a new one if there is room; its
    /// place in its budget (async or its batch's) is taken. False if there is neither
    /// (nothing done, the job is as it was).
    pub(super) fn start_attempt(&mut self, j: usize) -> bool {
        // The most recent idle connection that is still good.
        while let Some((s, serial)) = self.idle.pop_back() {
            let good = match self.slots.get(s) {
                // A connection that went idle in this turn, whose last read emptied the
                // socket and whose event did not report a hang-up, was read to its end
                // moments ago: no probe (a system call per hangup in a bulk run). Any
                // other is asked whether the server closed it or sent more meanwhile.
                Some(slot) if slot.serial == serial && slot.idle => match &slot.state {
                    SlotState::Open(c) if slot.idle_turn == self.turn_no && !slot.hup => {
                        c.is_clean_and_drained() || c.is_reusable()
                    }
                    SlotState::Open(c) => c.is_reusable(),
                    _ => false,
                },
                _ => continue,
            };
            if !good {
                self.close_slot(s);
                continue;
            }
            if let Some(slot) = self.slots.get_mut(s) {
                slot.idle = false;
                slot.job = Some(j);
            }
            self.attempt_begins(j, Instant::now());
            if let Some(job) = self.jobs.get_mut(j) {
                job.slot = Some(s);
            }
            self.send_request(s, j);
            return true;
        }
        // A new connection.
        if !self.room_for_new() {
            return false;
        }
        let now = Instant::now();
        let until = {
            let job = match self.jobs.get(j) {
                Some(job) => job,
                None => return true,
            };
            job.deadline
                .min(crate::policy::retry::later(now, self.core.connect_timeout))
        };
        self.attempt_begins(j, now);
        let serial = self.next_serial();
        let s = self.slots.insert(Slot {
            state: SlotState::Resolving,
            job: Some(j),
            connect_until: until,
            timer: None,
            idle: false,
            idle_at: now,
            idle_turn: 0,
            hup: false,
            serial,
        });
        self.connecting += 1;
        if let Some(job) = self.jobs.get_mut(j) {
            job.slot = Some(s);
        }
        let key = self.add_timer(until, Timer::Slot(s));
        if let Some(slot) = self.slots.get_mut(s) {
            slot.timer = Some(key);
        }
        self.resolve(s);
        true
    }

    /// Job `j` has a connection: its attempt is counted and takes its place in its
    /// budget.
    pub(super) fn attempt_begins(&mut self, j: usize, now: Instant) {
        let Some(job) = self.jobs.get_mut(j) else {
            return;
        };
        job.attempt_start = now;
        match job.origin {
            Origin::Async(_) => self.async_active += 1,
            Origin::Batch { batch, .. } => {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.active += 1;
                    job.sent_seq = b.sent;
                    b.sent += 1;
                }
            }
        }
        self.core.stats.attempt();
    }
}
