//! Connecting: RFC 8305 Happy Eyeballs as a non-blocking race over `mio` sockets, which
//! the caller's thread drives with `poll()` and the engine with its event loop; and the
//! bounded `poll()` wait of the blocking path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::host::fds::{self, Sock, ROOM_POLL};

/// RFC 8305's Connection Attempt Delay: the next address is tried when the one before
/// has not connected (nor failed) within this time.
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

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

/// A Happy Eyeballs race (RFC 8305): the next address starts [`ATTEMPT_DELAY`] after the
/// previous one, or at once when one fails; the first to connect wins and the others
/// are closed. A black-holed first address (a dead IPv6 route) costs 250 ms, not the
/// whole budget. Whoever drives it calls [`Race::step`] when a socket is ready or the
/// next start is due; the deadline is the driver's.
pub(crate) struct Race {
    queue: std::iter::Peekable<std::vec::IntoIter<SocketAddr>>,
    /// Attempts in flight, oldest first; each socket holds a place in the process's
    /// descriptor budget (`host::fds`).
    trying: Vec<(SocketAddr, Sock)>,
    next_start: Instant,
    /// Addresses that failed, or were still connecting when another one won.
    pub(crate) losers: Vec<SocketAddr>,
    error: Option<io::Error>,
}

/// Where a race stands.
pub(crate) enum Raced {
    Won(Sock, SocketAddr),
    /// Every address failed (the last error), or the process is out of descriptors.
    Lost(io::Error),
    Pending,
}

impl Race {
    pub(crate) fn new(addrs: &[SocketAddr]) -> Race {
        Race {
            queue: interleave(addrs).into_iter().peekable(),
            trying: Vec::new(),
            next_start: Instant::now(),
            losers: Vec::new(),
            error: None,
        }
    }

    /// Settles the attempts that finished and starts the next address when its time
    /// has come; `started` sees each new socket (the engine registers it). A socket is
    /// opened only within the process's descriptor budget: when it is full, a race that
    /// has attempts in flight replaces its oldest by the next address (it has had its
    /// [`ATTEMPT_DELAY`]; a black-holed address must not hold a place while the one
    /// that answers waits), and one with none waits [`ROOM_POLL`] and asks again.
    pub(crate) fn step(&mut self, started: &mut dyn FnMut(&mut Sock)) -> Raced {
        let now = Instant::now();
        let mut i = self.trying.len();
        while i > 0 {
            i -= 1;
            let (addr, s) = &self.trying[i];
            match s.take_error() {
                Ok(None) => {
                    if s.peer_addr().is_ok() {
                        let (addr, s) = self.trying.remove(i);
                        // The others lost the race: closed when dropped.
                        self.losers.extend(self.trying.drain(..).map(|(a, _)| a));
                        return Raced::Won(s, addr);
                    }
                }
                Ok(Some(e)) | Err(e) => {
                    self.losers.push(*addr);
                    self.error = Some(e);
                    self.trying.remove(i);
                    self.next_start = now; // the next address at once
                }
            }
        }
        while now >= self.next_start || self.trying.is_empty() {
            let Some(&addr) = self.queue.peek() else {
                break;
            };
            let mut opened = fds::connect(addr);
            if matches!(opened, Ok(None)) && !self.trying.is_empty() {
                let (oldest, _) = self.trying.remove(0);
                self.losers.push(oldest);
                opened = fds::connect(addr);
            }
            match opened {
                Ok(None) => {
                    // The budget is full: the address waits for a place.
                    self.next_start = now + ROOM_POLL;
                    break;
                }
                Ok(Some(mut s)) => {
                    self.queue.next();
                    started(&mut s);
                    self.trying.push((addr, s));
                    self.next_start = now + ATTEMPT_DELAY;
                }
                // Out of descriptors is this process's state, not the address's.
                Err(e) if is_out_of_descriptors(&e) => {
                    self.losers.extend(self.trying.drain(..).map(|(a, _)| a));
                    return Raced::Lost(e);
                }
                Err(e) => {
                    self.queue.next();
                    self.losers.push(addr);
                    self.error = Some(e);
                }
            }
        }
        if self.trying.is_empty() && self.queue.peek().is_none() {
            let e = self.error.take().unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "no address to connect to")
            });
            return Raced::Lost(e);
        }
        Raced::Pending
    }

    /// When the next address is due, if one is left.
    pub(crate) fn next_start(&self) -> Option<Instant> {
        (self.queue.len() > 0).then_some(self.next_start)
    }

    /// The sockets still connecting (for a `poll()` on them).
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        self.trying.iter().map(|(_, s)| s.as_raw_fd()).collect()
    }

    /// Gives up: every address still connecting is a loser.
    pub(crate) fn abandon(&mut self) {
        self.losers.extend(self.trying.drain(..).map(|(a, _)| a));
    }
}

/// Waits until one of `fds` is ready for its events, or `until` passes (false then).
pub(crate) fn wait(fds: &[(RawFd, libc::c_short)], until: Option<Instant>) -> io::Result<bool> {
    let pfd = |&(fd, events): &(RawFd, libc::c_short)| libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // On the stack for the usual one socket (a sequential hangup waits once or twice).
    let mut one = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }];
    let mut many: Vec<libc::pollfd>;
    let p: &mut [libc::pollfd] = if fds.len() == 1 {
        one[0] = pfd(&fds[0]);
        &mut one
    } else {
        many = fds.iter().map(pfd).collect();
        &mut many
    };
    loop {
        let ms = match until {
            None => -1,
            Some(u) => {
                let left = u.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Round up: a 0 ms poll would spin until the deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: `p` is a valid array of `p.len()` pollfd structs for the call.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if r > 0 {
            return Ok(true); // ready, or an error/hang-up that the next step reports
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// True if an idle connection has nothing to read and no hang-up: bytes waiting mean a
/// server that closed it or sent something unasked. One zero-timeout `poll()`.
pub(crate) fn is_idle_and_open(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | RDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut p, 1, 0) == 0 }
}

/// Peer hang-up, reported even before its FIN is read (Linux only; elsewhere POLLIN sees it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const RDHUP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RDHUP: libc::c_short = 0;

#[cfg(test)]
mod tests {
    use super::*;

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

    fn run(addrs: &[SocketAddr]) -> (Raced, Vec<SocketAddr>) {
        let mut race = Race::new(addrs);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match race.step(&mut |_| {}) {
                Raced::Pending => {}
                done => return (done, race.losers),
            }
            let fds: Vec<_> = race.fds().into_iter().map(|f| (f, libc::POLLOUT)).collect();
            let next = race.next_start().map_or(until, |n| n.min(until));
            assert!(wait(&fds, Some(next)).is_ok());
            assert!(Instant::now() < until, "the race ended in time");
        }
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
        let (won, losers) = run(&addrs);
        let Raced::Won(s, peer) = won else {
            panic!("connected to the live one")
        };
        assert_eq!((s.peer_addr().unwrap(), peer), (addrs[2], addrs[2]));
        assert_eq!(losers.len(), 2);
        let (lost, _) = run(&addrs[..2]);
        let Raced::Lost(e) = lost else {
            panic!("nobody listens")
        };
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn wait_honours_the_deadline() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let t = Instant::now();
        let r = wait(
            &[(a.as_raw_fd(), libc::POLLIN)],
            Some(t + Duration::from_millis(30)),
        );
        assert!(!r.unwrap());
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
