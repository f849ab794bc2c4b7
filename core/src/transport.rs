//! The TCP transport under the HTTP client: non-blocking sockets driven by `poll()`.
//!
//! ureq's own TCP transport re-arms `SO_RCVTIMEO`/`SO_SNDTIMEO` whenever the remaining
//! deadline changes (every request, for us) and probes a pooled connection by toggling
//! `O_NONBLOCK` around a `recv`: about ten system calls per hangup. Here the socket is
//! non-blocking from the start, each wait is one `poll()` bounded by the deadline, and
//! the liveness probe of a pooled connection is a single zero-timeout `poll()`, close to
//! what libcurl does (a hangup costs a send, a poll, a recv and one probe).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::Instant;

use ureq::unversioned::resolver::ResolvedSocketAddrs;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};
use ureq::Timeout;

/// Opens TCP connections for the connector chain (after a CONNECT proxy, before TLS).
#[derive(Debug, Default)]
pub(crate) struct PollTcpConnector;

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
        let stream = connect_any(&details.addrs, details.timeout)?;
        stream.set_nodelay(details.config.no_delay())?;
        stream.set_nonblocking(true)?;
        let stream = Arc::new(stream);
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PollTcpTransport {
            stream,
            buffers,
            just_read: false,
        })))
    }
}

/// Tries each resolved address in turn within the connect budget.
fn connect_any(
    addrs: &ResolvedSocketAddrs,
    timeout: NextTimeout,
) -> Result<TcpStream, ureq::Error> {
    let deadline = timeout.not_zero().map(|d| Instant::now() + *d);
    let mut last = None;
    for addr in addrs.iter() {
        let attempt = match deadline {
            Some(dl) => {
                let left = dl.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                TcpStream::connect_timeout(addr, left)
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(ureq::Error::Timeout(timeout.reason));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(ureq::Error::Io)
        .unwrap_or(ureq::Error::ConnectionFailed))
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
                Err(e) => return Err(e.into()),
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
                    return Ok(n > 0);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
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
