//! The TCP transport under the HTTP client: non-blocking sockets driven by `poll()`.
//!
//! ureq's own TCP transport re-arms `SO_RCVTIMEO`/`SO_SNDTIMEO` whenever the remaining
//! deadline changes (every request, for us) and probes a pooled connection by toggling
//! `O_NONBLOCK` around a `recv`: about ten system calls per hangup. Here the socket is
//! non-blocking from the start, each wait is one `poll()` bounded by the deadline, and
//! the liveness probe of a pooled connection is a single zero-timeout `poll()`, close to
//! what libcurl does (a hangup costs a send, a poll, a recv and one probe).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::resolve::AddressBook;
use crate::stats::{OpenConnection, Recorder};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};
use ureq::Timeout;

/// Opens TCP connections for the connector chain (after a CONNECT proxy, before TLS).
#[derive(Debug)]
pub(crate) struct PollTcpConnector {
    /// The client's resolved addresses: ones that fail are moved to the back.
    book: Arc<AddressBook>,
    /// The client's statistics (connections opened and open).
    stats: Arc<Recorder>,
}

impl PollTcpConnector {
    pub(crate) fn new(book: Arc<AddressBook>, stats: Arc<Recorder>) -> PollTcpConnector {
        PollTcpConnector { book, stats }
    }
}

impl<In: Transport> Connector<In> for PollTcpConnector {
    type Out = Either<In, PollTcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(t) = chained {
            return Ok(Some(Either::A(t)));
        }
        // No time left is TIMEOUT now (ureq's `not_zero` would make it a second).
        let deadline = deadline_of(&details.timeout)?;
        let addrs: Vec<SocketAddr> = details.addrs.iter().copied().collect();
        let outcome = happy_eyeballs(&addrs, deadline);
        for a in &outcome.losers {
            self.book.demote(*a);
        }
        let stream = match outcome.stream {
            Some(s) => s,
            None if outcome.timed_out => return Err(ureq::Error::Timeout(details.timeout.reason)),
            None => {
                return Err(outcome
                    .error
                    .map(ureq::Error::Io)
                    .unwrap_or(ureq::Error::ConnectionFailed))
            }
        };
        stream.set_nodelay(details.config.no_delay())?;
        stream.set_nonblocking(true)?;
        let stream = Arc::new(stream);
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PollTcpTransport {
            peer: stream.peer_addr().ok(),
            stream,
            buffers,
            just_read: false,
            _open: self.stats.connection_opened(),
            book: Arc::clone(&self.book),
            answered: false,
        })))
    }
}

/// RFC 8305's Connection Attempt Delay: the next address is tried when the one before
/// has not connected (nor failed) within this time.
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// What a Happy Eyeballs race gave.
struct Race {
    stream: Option<TcpStream>,
    /// Addresses that failed, or were still connecting when another one won.
    losers: Vec<SocketAddr>,
    /// The last error of a failed address, when none connected.
    error: Option<io::Error>,
    /// The deadline passed with attempts still connecting.
    timed_out: bool,
}

/// EMFILE or ENFILE: the process (or the system) has no file descriptor free.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// About how many more descriptors this process may open (its soft limit less those
/// open), where that can be read (Linux); None elsewhere.
pub(crate) fn free_descriptors() -> Option<usize> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    usize::try_from(l.rlim_cur)
        .ok()
        .map(|limit| limit.saturating_sub(open))
}

/// The order of RFC 8305 section 4: families alternate, starting with the first
/// address's family; within a family, the resolver's order is kept.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv4() == first.is_ipv4());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        out.extend(same.pop());
        out.extend(other.pop());
    }
    out
}

/// Connects to one of `addrs` (RFC 8305 Happy Eyeballs): the next address starts
/// [`ATTEMPT_DELAY`] after the previous one, or at once when it fails; the first to
/// connect wins and the others are closed; nothing runs past `deadline`. A black-holed
/// first address (a dead IPv6 route) costs 250 ms, not the whole budget.
fn happy_eyeballs(addrs: &[SocketAddr], deadline: Option<Instant>) -> Race {
    let mut race = Race {
        stream: None,
        losers: Vec::new(),
        error: None,
        timed_out: false,
    };
    let mut queue = interleave(addrs).into_iter();
    let mut trying: Vec<(SocketAddr, mio::net::TcpStream)> = Vec::new();
    let mut next_start = Instant::now();
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|dl| now >= dl) {
            race.timed_out = !trying.is_empty();
            race.losers.extend(trying.iter().map(|(a, _)| *a));
            return race;
        }
        // Start the next address when its time has come, or when nothing is in flight.
        if now >= next_start || trying.is_empty() {
            match queue.next() {
                Some(addr) => {
                    match mio::net::TcpStream::connect(addr) {
                        Ok(s) => trying.push((addr, s)),
                        // Out of descriptors is this process's state, not the address's.
                        Err(e) if is_out_of_descriptors(&e) => {
                            race.error = Some(e);
                            race.losers.extend(trying.iter().map(|(a, _)| *a));
                            return race;
                        }
                        Err(e) => {
                            race.losers.push(addr);
                            race.error = Some(e);
                            continue; // the next one at once
                        }
                    }
                    next_start = Instant::now() + ATTEMPT_DELAY;
                }
                None if trying.is_empty() => return race,
                None => {}
            }
        }
        // Wait for any attempt to finish, until the next start or the deadline.
        let mut until = if queue.len() > 0 {
            Some(next_start)
        } else {
            None
        };
        if let Some(dl) = deadline {
            until = Some(until.map_or(dl, |u| u.min(dl)));
        }
        let mut fds: Vec<libc::pollfd> = trying
            .iter()
            .map(|(_, s)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = until.map_or(-1, |u| {
            let left = u.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            race.losers.extend(trying.iter().map(|(a, _)| *a));
            race.error = Some(e);
            return race;
        }
        // Settle every attempt that finished, from the last so indices stay valid.
        for i in (0..fds.len()).rev() {
            if fds[i].revents == 0 {
                continue;
            }
            let (addr, s) = trying.remove(i);
            match s.take_error() {
                Ok(None) if s.peer_addr().is_ok() => {
                    if race.stream.is_none() {
                        // SAFETY: the descriptor is moved out of mio's stream into std's.
                        race.stream = Some(unsafe { TcpStream::from_raw_fd(s.into_raw_fd()) });
                    } else {
                        race.losers.push(addr);
                    }
                }
                Ok(Some(e)) | Err(e) => {
                    race.losers.push(addr);
                    race.error = Some(e);
                    next_start = Instant::now(); // the next address at once
                }
                Ok(None) => {
                    race.losers.push(addr);
                    race.error = Some(io::Error::from(io::ErrorKind::NotConnected));
                    next_start = Instant::now();
                }
            }
        }
        if race.stream.is_some() {
            // Attempts still connecting lost the race: closed when dropped here.
            race.losers.extend(trying.iter().map(|(a, _)| *a));
            return race;
        }
    }
}

/// Peer hang-up, reported even before its FIN is read (Linux only; elsewhere POLLIN sees it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const RDHUP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RDHUP: libc::c_short = 0;

pub(crate) struct PollTcpTransport {
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// Set by a read, cleared by the next liveness probe (see `is_open`).
    just_read: bool,
    /// Counts this connection as open in the client's statistics until it is dropped.
    _open: OpenConnection,
    /// The address connected to, and the book to report it to if it fails before it
    /// ever answered (a server that accepts and then resets): it moves to the back.
    peer: Option<SocketAddr>,
    book: Arc<AddressBook>,
    /// Bytes have arrived on this connection (or it was reported already).
    answered: bool,
}

impl PollTcpTransport {
    /// The connection failed or closed: if it never answered, its address goes back.
    fn failed_before_answering(&mut self) {
        if !std::mem::replace(&mut self.answered, true) {
            if let Some(peer) = self.peer {
                self.book.demote(peer);
            }
        }
    }
}

impl std::fmt::Debug for PollTcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollTcpTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// The absolute deadline of a wait, or None for "no timeout".
fn deadline_of(timeout: &NextTimeout) -> Result<Option<Instant>, ureq::Error> {
    if timeout.after.is_not_happening() {
        return Ok(None);
    }
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(Some(Instant::now() + *timeout.after))
}

/// Waits until `fd` is ready for `events` or the deadline passes.
fn wait(
    fd: i32,
    events: libc::c_short,
    deadline: Option<Instant>,
    reason: Timeout,
) -> Result<(), ureq::Error> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(dl) => {
                let left = dl.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(reason));
                }
                // Round up: a 0 ms poll would spin until the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(()); // ready, or an error/hang-up that the next read or write reports
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        // r == 0: the poll timed out; the loop re-checks the deadline.
    }
}

impl Transport for PollTcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let deadline = deadline_of(&timeout)?;
        let fd = self.stream.as_raw_fd();
        let mut sent = 0;
        while sent < amount {
            // std sends with MSG_NOSIGNAL: a closed peer is an EPIPE error, never SIGPIPE.
            match (&*self.stream).write(&self.buffers.output()[sent..amount]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(fd, libc::POLLOUT, deadline, timeout.reason)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed_before_answering();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let deadline = deadline_of(&timeout)?;
        let fd = self.stream.as_raw_fd();
        loop {
            // Wait first: right after a request is sent the answer is rarely there yet,
            // and a read that would block costs a system call for nothing.
            wait(fd, libc::POLLIN, deadline, timeout.reason)?;
            let buf = self.buffers.input_append_buf();
            match (&*self.stream).read(buf) {
                Ok(n) => {
                    self.buffers.input_appended(n);
                    self.just_read = n > 0;
                    if n == 0 {
                        self.failed_before_answering();
                    } else {
                        self.answered = true;
                    }
                    return Ok(n > 0);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.failed_before_answering();
                    return Err(e.into());
                }
            }
        }
    }

    /// Open means idle: nothing to read and no hang-up. Bytes waiting on an idle
    /// connection mean a body was not read to its end, or the server closed it.
    ///
    /// ureq asks twice per request: when it returns the connection to the pool, right
    /// after reading the response, and when it takes it out again. The second probe sees
    /// everything the first would (trailing bytes, a hang-up) and more, so the first one,
    /// recognised as the probe that directly follows a read, is answered without a
    /// system call.
    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.just_read) {
            return true;
        }
        let mut p = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN | RDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn families_alternate_from_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(&[
            a("[::1]:1"),
            a("[::2]:1"),
            a("1.1.1.1:1"),
            a("2.2.2.2:1"),
            a("[::3]:1"),
        ]);
        assert_eq!(
            got,
            [
                a("[::1]:1"),
                a("1.1.1.1:1"),
                a("[::2]:1"),
                a("2.2.2.2:1"),
                a("[::3]:1")
            ]
        );
        assert!(interleave(&[]).is_empty());
    }

    #[test]
    fn refused_addresses_are_skipped_at_once() {
        // Two ports nobody listens on, then one that answers: connected, two losers.
        let dead = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [dead(), dead(), live.local_addr().unwrap()];
        let race = happy_eyeballs(&addrs, Some(Instant::now() + Duration::from_secs(10)));
        let s = race.stream.expect("connected to the live one");
        assert_eq!(s.peer_addr().unwrap(), addrs[2]);
        assert_eq!(race.losers, addrs[..2]);
        let race = happy_eyeballs(&addrs[..2], Some(Instant::now() + Duration::from_secs(10)));
        assert!(race.stream.is_none() && !race.timed_out);
        assert_eq!(
            race.error.map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn wait_honours_the_deadline() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = Instant::now();
        let r = wait(
            a.as_raw_fd(),
            libc::POLLIN,
            Some(t + Duration::from_millis(30)),
            Timeout::Global,
        );
        assert!(matches!(r, Err(ureq::Error::Timeout(Timeout::Global))));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
