//! The caller's-thread path (`hangup`, listings): the connection state machine of
//! `conn.rs` driven by `poll()` on the caller's thread, over the client's own stack of
//! idle keep-alive connections. Nothing here waits past the deadline it is given.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ureq_proto::http::Request;

use crate::client::Core;
use crate::conn::{Conn, Fail};
use crate::engine::IDLE_CONN;
use crate::process::PerProcess;
use crate::resolve::ResolveError;
use crate::transport::{self, Race, Raced};
use crate::wire::Answer;

/// Idle connections kept for the blocking path.
pub(crate) const MAX_IDLE: usize = 128;

/// Why an attempt got no response.
#[derive(Debug)]
pub(crate) enum AttemptError {
    Resolve(ResolveError),
    /// The connect timeout (or the deadline) passed while connecting.
    ConnectTimeout,
    /// The deadline passed waiting for the server.
    Deadline,
    /// The deadline passed waiting for a place in the process's descriptor budget
    /// (nothing was sent).
    NoDescriptor,
    Conn(Fail),
}

/// The client's idle connections for the blocking path, most recent last, with the time
/// each went idle. One idle longer than the engine's [`IDLE_CONN`] is closed when the
/// stack is next used (no thread watches it: a client nobody uses keeps them until then).
/// In a forked child the parent's stack is left alone (its sockets are the parent's, and
/// were closed in the child at the fork): the child starts an empty one. Each stack is
/// known to `fds`, which empties it when any client's work waits for a descriptor.
pub(crate) struct IdleStack(PerProcess<Arc<Mutex<Idle>>>);

impl Default for IdleStack {
    fn default() -> IdleStack {
        IdleStack(PerProcess::new(registered()))
    }
}

/// A new empty stack, known to `fds`.
fn registered() -> Arc<Mutex<Idle>> {
    let stack = Arc::new(Mutex::new(Idle::default()));
    let weak: std::sync::Weak<dyn crate::fds::Shed> =
        Arc::downgrade(&stack) as std::sync::Weak<Mutex<Idle>>;
    crate::fds::register_idle(weak);
    stack
}

#[derive(Default)]
struct Idle {
    conns: Vec<(Conn, Instant)>,
    /// `fds::wanted()` when last used: when it changes, work (of any client) waits for
    /// a descriptor, and the idle connections give theirs up.
    seen_wanted: u64,
}

impl crate::fds::Shed for Mutex<Idle> {
    fn shed(&self) {
        let conns = match self.try_lock() {
            Ok(mut idle) => std::mem::take(&mut idle.conns),
            Err(std::sync::TryLockError::Poisoned(e)) => std::mem::take(&mut e.into_inner().conns),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        drop(conns); // closed outside the lock
    }
}

impl IdleStack {
    fn stack(&self) -> &Mutex<Idle> {
        self.0.get(registered)
    }

    /// Closes this process's idle connections (the client is being freed: in a forked
    /// child its `Core` outlives it, held by the parent's leaked runtime).
    pub(crate) fn release(&self) {
        if let Some(stack) = self.0.current() {
            let conns = std::mem::take(&mut stack.lock().unwrap_or_else(|e| e.into_inner()).conns);
            drop(conns);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        let mut idle = self.stack().lock().unwrap_or_else(|e| e.into_inner());
        let wanted = crate::fds::wanted();
        if idle.seen_wanted != wanted {
            idle.seen_wanted = wanted;
            idle.conns.clear();
        }
        // Oldest first: close what the server has most likely closed already.
        let stale = idle
            .conns
            .iter()
            .take_while(|(_, since)| since.elapsed() >= IDLE_CONN)
            .count();
        idle.conns.drain(..stale);
        idle
    }

    fn take(&self) -> Option<Conn> {
        loop {
            let (c, _) = self.lock().conns.pop()?;
            // A connection the server closed, or that holds unasked bytes, is dropped.
            if c.is_reusable() {
                return Some(c);
            }
        }
    }

    fn put(&self, c: Conn) {
        let mut idle = self.lock();
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push((c, Instant::now()));
        }
    }
}

impl Core {
    /// One request on a pooled (or new) connection, driven on this thread until its
    /// answer or `deadline`.
    pub(crate) fn exchange_blocking(
        &self,
        request: Request<()>,
        body_limit: usize,
        deadline: Instant,
    ) -> Result<Answer, AttemptError> {
        // A new connection's tunnel and TLS handshake are bounded by the connect timeout.
        let (mut conn, setup_until) = match self.idle.take() {
            Some(c) => (c, deadline),
            None => self.connect_blocking(deadline)?,
        };
        conn.start(request, body_limit)
            .map_err(AttemptError::Conn)?;
        let mut readable = false;
        loop {
            match conn.drive(readable) {
                Ok(Some((answer, reusable))) => {
                    if reusable {
                        self.idle.put(conn);
                    }
                    return Ok(answer);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(&conn, &e);
                    return Err(AttemptError::Conn(e));
                }
            }
            let mut events = libc::POLLIN;
            if conn.wants_write() {
                events |= libc::POLLOUT;
            }
            let setting_up = !conn.is_established();
            let until = match conn.grace_until() {
                // A decided 2xx waits a moment for the rest of its body (see `conn.rs`).
                Some(grace) => grace.min(deadline),
                None if setting_up => setup_until,
                None => deadline,
            };
            match transport::wait(&[(conn.sock.as_raw_fd(), events)], Some(until)) {
                Ok(true) => readable = true,
                Ok(false) if setting_up => return Err(AttemptError::ConnectTimeout),
                // A hangup whose status line came is decided by it, body or not.
                Ok(false) => return conn.cut_short().ok_or(AttemptError::Deadline),
                Err(e) => return Err(AttemptError::Conn(Fail::Io(e))),
            }
        }
    }

    /// A connection that failed before the server ever answered on it: its address goes
    /// to the back of the list (a server that accepts and then resets).
    pub(crate) fn failed(&self, conn: &Conn, e: &Fail) {
        if !conn.answered && matches!(e, Fail::Io(_) | Fail::Closed) {
            self.book.demote(conn.peer);
        }
    }

    /// Resolves and connects (Happy Eyeballs), within the connect timeout and `deadline`;
    /// returns the connection and when its setup (tunnel, TLS) must be done.
    fn connect_blocking(&self, deadline: Instant) -> Result<(Conn, Instant), AttemptError> {
        // The process's descriptor budget is full (every client's sockets): wait for a
        // place, within the deadline, before the connect timeout starts.
        let mut waiting = None;
        while !crate::fds::room(0) {
            // Counted as a waiter: a busy engine then gives a place up (see `fds`).
            waiting.get_or_insert_with(crate::fds::Waiting::new);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AttemptError::NoDescriptor);
            }
            std::thread::sleep(crate::fds::ROOM_POLL.min(left));
        }
        drop(waiting);
        let until = crate::client::deadline_after(self.connect_timeout).min(deadline);
        let addrs = self
            .book
            .addresses(&self.route.dial_host, self.route.dial_port, until)
            .map_err(|e| match e {
                ResolveError::Timeout => AttemptError::ConnectTimeout,
                e => AttemptError::Resolve(e),
            })?;
        let mut race = Race::new(&addrs);
        let outcome = loop {
            match race.step(&mut |_| {}) {
                Raced::Pending => {}
                done => break done,
            }
            let fds: Vec<_> = race.fds().into_iter().map(|f| (f, libc::POLLOUT)).collect();
            let next = race.next_start().map_or(until, |n| n.min(until));
            match transport::wait(&fds, Some(next)) {
                Ok(_) if Instant::now() < until => {}
                Ok(_) => {
                    // One last look: an attempt may have connected as time ran out.
                    match race.step(&mut |_| {}) {
                        Raced::Pending => {
                            race.abandon();
                            self.demote_all(&race);
                            return Err(AttemptError::ConnectTimeout);
                        }
                        done => break done,
                    }
                }
                Err(e) => break Raced::Lost(e),
            }
        };
        self.demote_all(&race);
        match outcome {
            Raced::Won(sock, peer) => {
                Conn::new(sock, peer, &self.route, self.stats.connection_opened())
                    .map(|c| (c, until))
                    .map_err(AttemptError::Conn)
            }
            Raced::Lost(e) => Err(AttemptError::Conn(Fail::Io(e))),
            Raced::Pending => Err(AttemptError::ConnectTimeout),
        }
    }

    pub(crate) fn demote_all(&self, race: &Race) {
        for a in &race.losers {
            self.book.demote(*a);
        }
    }
}
