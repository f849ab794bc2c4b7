//! Connection slots: a slot resolves its host (never blocking the loop), races the
//! addresses (Happy Eyeballs), then carries one exchange at a time on its connection
//! (`net::conn`'s state machine, driven by readiness events).

use std::time::Instant;

use mio::{Interest, Token};
use ureq_proto::http::Method;

use crate::contract::error::Error;
use crate::net::conn::{AttemptError, Conn, Fail};
use crate::net::resolve::Lookup;
use crate::net::transport::{Race, Raced};
use crate::policy::response::MAX_BODY;

use super::timers::Timer;
use super::{Loop, SlotState, MAX_CONNECTING};

impl Loop {
    /// Asks the address book for the slot's addresses; a race starts when they are known.
    pub(super) fn resolve(&mut self, s: usize) {
        let route = &self.core.route;
        match self
            .core
            .book
            .poll_addresses(&route.dial_host, route.dial_port, &self.notify)
        {
            Lookup::Pending(ticket) => {
                if let Some(slot) = self.slots.get(s) {
                    self.resolving.push((s, slot.serial, ticket));
                }
            }
            Lookup::Ready(answer) => self.addresses_known(s, answer),
        }
    }

    /// The slot's lookup answered: its race starts, or its attempt fails.
    pub(super) fn addresses_known(
        &mut self,
        s: usize,
        answer: Result<Vec<std::net::SocketAddr>, crate::net::resolve::ResolveError>,
    ) {
        match answer {
            Err(e) => {
                let e = match e {
                    crate::net::resolve::ResolveError::Timeout => AttemptError::ConnectTimeout,
                    e => AttemptError::Resolve(e),
                };
                self.attempt_failed(s, e);
            }
            Ok(addrs) => {
                if let Some(slot) = self.slots.get_mut(s) {
                    slot.state = SlotState::Racing(Race::new(&addrs));
                }
                self.step_race(s);
            }
        }
    }

    /// A DNS answer arrived (or new work woke the loop): each slot waiting for one takes
    /// its own lookup's answer, by ticket; a failure ends every hangup that waited for
    /// it, once, and starts no new lookup.
    pub(super) fn resolved(&mut self) {
        if self.resolving.is_empty() {
            return;
        }
        for (s, serial, ticket) in std::mem::take(&mut self.resolving) {
            let live = self
                .slots
                .get(s)
                .is_some_and(|sl| sl.serial == serial && matches!(sl.state, SlotState::Resolving));
            if !live {
                continue;
            }
            match self.core.book.answer(&ticket) {
                Some(answer) => self.addresses_known(s, answer),
                None => self.resolving.push((s, serial, ticket)),
            }
        }
    }

    pub(super) fn step_race(&mut self, s: usize) {
        let registry = self.poll.registry();
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Racing(race) = &mut slot.state else {
            return;
        };
        let mut reg_error = None;
        let outcome = race.step(&mut |sock| {
            if let Err(e) =
                registry.register(sock, Token(s), Interest::READABLE | Interest::WRITABLE)
            {
                reg_error = Some(e);
            }
        });
        if let Some(e) = reg_error {
            race.abandon();
            self.core.demote_all(race);
            self.attempt_failed(s, AttemptError::Conn(Fail::Io(e)));
            return;
        }
        match outcome {
            Raced::Pending => {
                // The next address, or the connect timeout, whichever comes first.
                let at = race
                    .next_start()
                    .map_or(slot.connect_until, |n| n.min(slot.connect_until));
                let old = slot.timer.take();
                if let Some(k) = old {
                    self.timers.remove(&k);
                }
                let key = self.add_timer(at, Timer::Slot(s));
                if let Some(slot) = self.slots.get_mut(s) {
                    slot.timer = Some(key);
                }
            }
            Raced::Lost(e) => {
                self.core.demote_all(race);
                self.attempt_failed(s, AttemptError::Conn(Fail::Io(e)));
            }
            Raced::Won(sock, peer) => {
                self.core.demote_all(race);
                // The connect timeout goes on covering the proxy's tunnel and TLS.
                if let Some(k) = slot.timer.take() {
                    self.timers.remove(&k);
                }
                let until = slot.connect_until;
                if self.core.route.needs_setup() {
                    let key = self.add_timer(until, Timer::Slot(s));
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.timer = Some(key);
                    }
                }
                let Some(slot) = self.slots.get_mut(s) else {
                    return;
                };
                match Conn::new(
                    sock,
                    peer,
                    &self.core.route,
                    self.core.stats.connection_opened(),
                ) {
                    Ok(conn) => {
                        slot.state = SlotState::Open(Box::new(conn));
                        // Connected: the next setup may start (the tunnel and TLS, if
                        // any, follow on an accepted connection), and the window grows.
                        self.connecting -= 1;
                        self.connect_window = (self.connect_window + 1).min(MAX_CONNECTING);
                        if let Some(j) = slot.job {
                            self.send_request(s, j);
                        }
                    }
                    Err(e) => self.attempt_failed(s, AttemptError::Conn(e)),
                }
            }
        }
    }

    pub(super) fn send_request(&mut self, s: usize, j: usize) {
        let Some(job) = self.jobs.get(j) else { return };
        let request = self.core.request(Method::DELETE, &job.uri);
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Open(conn) = &mut slot.state else {
            return;
        };
        if let Err(e) = conn.start(request, MAX_BODY) {
            self.attempt_failed(s, AttemptError::Conn(e));
            return;
        }
        self.drive(s, false);
    }

    /// A socket of slot `s` is ready.
    pub(super) fn on_ready(&mut self, s: usize, readable: bool) {
        let Some(slot) = self.slots.get(s) else {
            return;
        };
        match &slot.state {
            SlotState::Resolving => {}
            SlotState::Racing(_) => self.step_race(s),
            SlotState::Open(c) if slot.job.is_none() => {
                // An idle connection stirred: the server closed it, or sent what was
                // not asked for. Either way it is not reused.
                if !c.is_reusable() {
                    self.close_slot(s);
                }
            }
            SlotState::Open(_) => self.drive(s, readable),
        }
    }

    pub(super) fn drive(&mut self, s: usize, readable: bool) {
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Open(conn) = &mut slot.state else {
            return;
        };
        match conn.drive(readable) {
            Ok(None) => {
                // A decided 2xx waits a moment for the rest of its body (see `net::conn`).
                if let Some(until) = conn.new_grace() {
                    if let Some(k) = slot.timer.take() {
                        self.timers.remove(&k);
                    }
                    let key = self.add_timer(until, Timer::Slot(s));
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.timer = Some(key);
                    }
                }
            }
            Ok(Some((answer, reusable))) => {
                let j = slot.job.take();
                // Another client waits for a descriptor: this one goes back to the
                // budget rather than to the next queued hangup (see `fds::Waiting`).
                let give_up = crate::host::fds::others_wait(self.budget_waiter.is_some());
                if give_up {
                    self.yield_until = Some(Instant::now() + crate::host::fds::YIELD);
                }
                if reusable && !give_up {
                    slot.idle = true;
                    slot.idle_at = Instant::now();
                    slot.idle_turn = self.turn_no;
                    let serial = slot.serial;
                    self.idle.push_back((s, serial));
                } else {
                    self.close_slot(s);
                }
                if let Some(j) = j {
                    self.attempt_done(j, Ok(answer));
                }
            }
            Err(e) => {
                self.core.failed(conn, &e);
                self.attempt_failed(s, AttemptError::Conn(e));
            }
        }
    }

    /// The attempt on slot `s` failed: the slot is closed and its job goes on.
    pub(super) fn attempt_failed(&mut self, s: usize, e: AttemptError) {
        let j = self.slots.get_mut(s).and_then(|slot| slot.job.take());
        self.close_slot(s);
        if let Some(j) = j {
            self.attempt_done(j, Err(e));
        }
    }

    pub(super) fn close_slot(&mut self, s: usize) {
        if let Some(mut slot) = self.slots.try_remove(s) {
            if let Some(k) = slot.timer.take() {
                self.timers.remove(&k);
            }
            match &mut slot.state {
                SlotState::Open(c) => {
                    let _ = self.poll.registry().deregister(&mut c.sock);
                }
                SlotState::Racing(r) => {
                    r.abandon();
                    self.connecting -= 1;
                }
                SlotState::Resolving => self.connecting -= 1,
            }
        }
    }

    /// A panic while handling one slot's event or timer: only its job fails (`complete`
    /// closes the slot and frees the job's budget).
    pub(super) fn fail_slot(&mut self, s: usize) {
        match self.slots.get(s).and_then(|slot| slot.job) {
            Some(j) => self.complete(j, Err(Error::caught_panic())),
            None => self.close_slot(s),
        }
    }
}
