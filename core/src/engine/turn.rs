//! The loop's turn: the thread (`run`), and one turn of it: take new work, wait for
//! events or the next timer, hand each event to its slot, fire timers, admit what may
//! start, deliver; idle connections' upkeep, and what a caught panic leaves to clean.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use slab::Slab;

use crate::contract::error::{Error, Status};
use crate::contract::options::{LogLevel, ASYNC_PARALLEL};
use crate::host::fds::{Notify, Tracked, Waker};
use crate::host::pool::{WorkerPool, IDLE_EXIT};
use crate::net::idle::IDLE_CONN;
use crate::state::Core;

use super::timers::Timer;
use super::{lock, Job, Loop, Shared, SlotState, INITIAL_CONNECTING, WAKER};

/// The loop thread: runs until stopped or idle, every panic caught (the jobs it held
/// still get an outcome, INTERNAL_ERROR).
pub(super) fn run(shared: Arc<Shared>, poll: Tracked<Poll>, waker: Arc<Waker>) {
    let w = Arc::clone(&waker);
    let notify: Notify = Arc::new(move || {
        let _ = w.wake();
    });
    let mut lp = Loop::new(
        Arc::clone(&shared.core),
        Arc::clone(&shared.callbacks),
        poll,
        notify,
    );
    let mut events = Events::with_capacity(1024);
    let mut idle_since = Instant::now();
    crate::host::pool::set_engine_thread(true);
    loop {
        let turn = catch_unwind(AssertUnwindSafe(|| {
            lp.turn(&shared, &mut events, &mut idle_since)
        }));
        match turn {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => lp.fail_everything(),
        }
    }
    lp.close_all();
    crate::host::pool::set_engine_thread(false);
    lp.deliver_stragglers();
    // Lines the callback threads did not write yet: written here, in order.
    lp.core.drain_log();
}

impl Loop {
    pub(super) fn new(
        core: Arc<Core>,
        callbacks: Arc<WorkerPool>,
        poll: Tracked<Poll>,
        notify: Notify,
    ) -> Loop {
        // Not a share of the descriptors free when this engine starts (three clients
        // would leave the host none): the process's one budget governs.
        let conn_cap = crate::host::fds::MAX_BUDGET;
        let host_limit = core.max_connections.clamp(1, ASYNC_PARALLEL);
        Loop {
            core,
            callbacks,
            poll,
            notify,
            jobs: Slab::new(),
            slots: Slab::new(),
            batches: Slab::new(),
            idle: VecDeque::new(),
            last_reap: Instant::now(),
            turn_no: 0,
            waiting: VecDeque::new(),
            async_active: 0,
            resolving: Vec::new(),
            timers: BTreeMap::new(),
            serial: 0,
            conn_cap,
            host_limit,
            connecting: 0,
            connect_window: INITIAL_CONNECTING,
            ready_callbacks: Vec::new(),
            undelivered: Vec::new(),
            stopping: false,
            seen_wanted: crate::host::fds::wanted(),
            budget_waiter: None,
            yield_until: None,
            holding: false,
        }
    }

    /// Work waits for a place in the process's descriptor budget: idle connections
    /// give theirs up (reused, they would only save a connect).
    pub(super) fn shed_idle_if_wanted(&mut self) {
        let w = crate::host::fds::wanted();
        if w == self.seen_wanted {
            return;
        }
        self.seen_wanted = w;
        self.holding = false; // the list was emptied by whoever woke it
        while let Some((s, serial)) = self.idle.pop_front() {
            if self
                .slots
                .get(s)
                .is_some_and(|slot| slot.serial == serial && slot.idle)
            {
                self.close_slot(s);
            }
        }
    }

    pub(super) fn busy(&self) -> bool {
        !self.jobs.is_empty()
            || !self.batches.is_empty()
            || !self.undelivered.is_empty()
            || !self.ready_callbacks.is_empty()
    }

    /// One turn of the loop: take new work, wait for events or the next timer, handle
    /// them, admit what may start. False when the thread should exit.
    pub(super) fn turn(
        &mut self,
        shared: &Shared,
        events: &mut Events,
        idle_since: &mut Instant,
    ) -> bool {
        let (work, stopping) = {
            let mut inbox = lock(&shared.inbox);
            let work = std::mem::take(&mut inbox.queue);
            if work.is_empty() && !self.busy() {
                if inbox.stopping {
                    inbox.running = false;
                    inbox.waker = None;
                    return false;
                }
                if idle_since.elapsed() >= IDLE_EXIT {
                    // Idle: exit. A submit from now on starts a new thread.
                    inbox.running = false;
                    inbox.waker = None;
                    return false;
                }
            }
            (work, inbox.stopping)
        };
        self.stopping = stopping;
        for w in work {
            self.accept(w);
        }
        self.pump();
        // Outcomes from outside a turn (a caught panic's) must not wait for an event.
        self.flush_callbacks();
        let now = Instant::now();
        let mut timeout = self
            .timers
            .keys()
            .next()
            .map(|(at, _)| at.saturating_duration_since(now));
        if !self.busy() {
            let exit_in = IDLE_EXIT.saturating_sub(idle_since.elapsed());
            timeout = Some(timeout.map_or(exit_in, |t| t.min(exit_in)));
        }
        let waits = self.busy() && self.waits_for_room();
        if waits != self.budget_waiter.is_some() {
            self.budget_waiter = waits.then(crate::host::fds::Waiting::new);
        }
        if waits {
            let poll = crate::host::fds::ROOM_POLL;
            timeout = Some(timeout.map_or(poll, |t| t.min(poll)));
        }
        // A yield ends by itself: the work it held back starts then.
        match self.yield_until {
            Some(t) if t <= now => self.yield_until = None,
            Some(t) if self.busy() => {
                let left = t - now;
                timeout = Some(timeout.map_or(left, |x| x.min(left)));
            }
            _ => {}
        }
        // epoll counts milliseconds: round up so a timer is not polled for in a spin.
        let timeout = timeout.map(|t| {
            let ms = t.as_micros().div_ceil(1000);
            Duration::from_millis(ms.min(u64::MAX as u128) as u64)
        });
        if !self.idle.is_empty() && !self.holding {
            // Woken, without polling, when another client's work waits for a descriptor.
            crate::host::fds::hold_idle(&self.notify);
            self.holding = true;
        }
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.core
                    .log(LogLevel::Error, || format!("the engine's poll failed: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Connections that go idle from here on have not been polled since.
        self.turn_no += 1;
        let mut woken = false;
        for ev in events.iter() {
            if ev.token() == WAKER {
                woken = true;
            } else {
                // Error and hang-up count as readable: the read reports them.
                let hup = ev.is_read_closed() || ev.is_error();
                let readable = ev.is_readable() || hup;
                let s = ev.token().0;
                if hup {
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.hup = true;
                    }
                }
                // A panic here (a bug of ours) costs this slot's hangup, not the others.
                if catch_unwind(AssertUnwindSafe(|| self.on_ready(s, readable))).is_err() {
                    self.fail_slot(s);
                }
            }
        }
        if woken {
            self.resolved();
        }
        self.fire_timers();
        self.reap_idle();
        self.shed_idle_if_wanted();
        self.pump();
        self.flush_callbacks();
        self.schedule_log_drain();
        if self.busy() {
            *idle_since = Instant::now();
        }
        true
    }

    /// Closes connections idle for [`IDLE_CONN`] (checked once a second): after a burst
    /// of 1,000, a client that goes on with a trickle keeps what the trickle uses.
    pub(super) fn reap_idle(&mut self) {
        if self.last_reap.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_reap = Instant::now();
        while let Some(&(s, serial)) = self.idle.front() {
            match self.slots.get(s) {
                Some(slot) if slot.serial == serial && slot.idle => {
                    if slot.idle_at.elapsed() < IDLE_CONN {
                        break;
                    }
                    self.idle.pop_front();
                    self.close_slot(s);
                }
                _ => {
                    self.idle.pop_front();
                }
            }
        }
    }

    /// A panic escaped a turn: every job ends with INTERNAL_ERROR (exactly once), every
    /// connection is closed, and the loop goes on.
    pub(super) fn fail_everything(&mut self) {
        for mut slot in self.slots.drain() {
            if let SlotState::Open(c) = &mut slot.state {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
        }
        self.idle.clear();
        self.resolving.clear();
        self.connecting = 0;
        self.timers.clear();
        self.waiting.clear();
        self.async_active = 0;
        // Batches stay: their ids not started yet still run.
        for b in self.batches.iter_mut().map(|(_, b)| b) {
            b.active = 0;
            b.queued = 0;
            b.ready.clear();
            b.pace_timer = false;
            b.retrying = 0;
        }
        let jobs: Vec<Job> = self.jobs.drain().collect();
        for job in jobs {
            self.core.stats.in_flight_add(-1);
            self.core
                .stats
                .finished(Status::InternalError, job.start.elapsed());
            self.deliver(job.origin, Err(Error::caught_panic()));
        }
        // Callbacks the pool could not take yet lost their timer with the rest.
        if !self.undelivered.is_empty() {
            self.add_timer(Instant::now() + Duration::from_millis(50), Timer::Redeliver);
        }
    }

    pub(super) fn close_all(&mut self) {
        for s in 0..self.slots.capacity() {
            self.close_slot(s);
        }
        self.idle.clear();
    }
}
