//! The caller's-thread path (`hangup`, listings): the connection state machine of
//! `net::conn` driven by `poll()` on the caller's thread, over the client's own stack of
//! idle keep-alive connections. Nothing here waits past the deadline it is given.

use std::os::fd::AsRawFd;
use std::time::Instant;

use ureq_proto::http::{Method, Request, Uri};

use crate::contract::error::{Error, HangupResult, Status};
use crate::contract::options::LogLevel;
use crate::contract::validate;
use crate::net::conn::{AttemptError, Conn, Fail};
use crate::net::resolve::ResolveError;
use crate::net::transport::{self, Race, Raced};
use crate::net::wire::Answer;
use crate::policy::response::MAX_BODY;
use crate::state::attempt::Attempt;
use crate::state::Core;

impl Core {
    /// One DELETE on this thread, until its answer or `deadline`.
    pub(crate) fn attempt(&self, uri: &Uri, call_uuid: &str, deadline: Instant) -> Attempt {
        match self.exchange(Method::DELETE, uri, deadline, MAX_BODY) {
            Ok(answer) => self.hangup_outcome(&answer, call_uuid),
            Err(attempt) => attempt,
        }
    }

    /// One request on this thread, its body read up to `body_limit` bytes; a failure
    /// before any response is mapped to its status and retry class here.
    pub(crate) fn exchange<T>(
        &self,
        method: Method,
        uri: &Uri,
        deadline: Instant,
        body_limit: usize,
    ) -> Result<Answer, Attempt<T>> {
        let t0 = Instant::now();
        let request = self.request(method.clone(), uri);
        match self.exchange_blocking(request, body_limit, deadline) {
            Ok(answer) => {
                self.log(LogLevel::Debug, || {
                    format!(
                        "{method} {uri} -> HTTP {} in {} us",
                        answer.http_status,
                        t0.elapsed().as_micros()
                    )
                });
                Ok(answer)
            }
            Err(e) => Err(self.no_response(&method, uri, &e)),
        }
    }

    pub(crate) fn hangup(&self, call_uuid: &str) -> HangupResult {
        if let Err(e) = validate::id("call_uuid", call_uuid) {
            self.stats.finished(e.status(), std::time::Duration::ZERO);
            return Err(e);
        }
        self.hangup_valid(call_uuid)
    }

    /// The hangup proper, for an id that passed `validate::id`, counted in the client's
    /// statistics.
    fn hangup_valid(&self, call_uuid: &str) -> HangupResult {
        let _in_flight = self.stats.started();
        let start = Instant::now();
        let result = self.hangup_uncounted(call_uuid);
        let status = match &result {
            Ok(_) => Status::Ok,
            Err(e) => e.status(),
        };
        self.stats.finished(status, start.elapsed());
        result
    }

    fn hangup_uncounted(&self, call_uuid: &str) -> HangupResult {
        // Built once: every attempt of this hangup reuses it. Cannot fail for an id that
        // passed validation under a base URL that passed `Options::set_base_url`.
        let uri: Uri = format!("{}{}", self.calls_url, call_uuid)
            .parse()
            .map_err(|_| Error::internal("the request URL did not parse"))?;
        // Formatted only if a log line is written: no allocation per hangup for it.
        self.retrying(format_args!("hangup {call_uuid}"), true, |deadline| {
            self.stats.attempt();
            self.attempt(&uri, call_uuid, deadline)
        })
    }

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
                // A decided 2xx waits a moment for the rest of its body (see `net::conn`).
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
        while !crate::host::fds::room(0) {
            // Counted as a waiter: a busy engine then gives a place up (see `fds`).
            waiting.get_or_insert_with(crate::host::fds::Waiting::new);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AttemptError::NoDescriptor);
            }
            std::thread::sleep(crate::host::fds::ROOM_POLL.min(left));
        }
        drop(waiting);
        let until = crate::policy::retry::deadline_after(self.connect_timeout).min(deadline);
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
