//! Host name resolution: the client's address book, shared by the blocking path and the
//! engine.
//!
//! - IP literals are answered at once, without a thread.
//! - Names are cached for [`TTL`]. A miss is looked up on a helper thread; concurrent
//!   misses of one name wait for the same lookup (merged), so a burst of hangups costs one
//!   lookup and one thread.
//! - A caller waits for a lookup no longer than its own deadline (then TIMEOUT); the
//!   engine never waits: it is woken when the answer arrives, and each of its hangups
//!   waiting for that lookup takes the answer by its ticket (a failure too: no new
//!   lookup is started for a waiter of a failed one). The
//!   helper holds no client state (only the name and a slot for its answer), so it is
//!   detached: a stuck system resolver never delays dropping the client; the thread ends
//!   when the resolver answers, and its answer is used if anyone still wants it.
//! - The connector reports addresses that failed or lost a Happy Eyeballs race; they move
//!   to the back of the cached list, so the next connection starts with one that works.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::contract::options::LookupFn;
use crate::host::fds::Notify;
use crate::host::process::PerProcess;

/// The lookup helper's stack: the system resolver's (getaddrinfo, NSS modules) needs,
/// as Rust's default.
const RESOLVE_STACK: usize = 2 * 1024 * 1024;

/// How long a resolved name is reused.
pub const TTL: Duration = Duration::from_secs(30);

/// The system resolver.
pub(crate) fn system_lookup() -> LookupFn {
    Arc::new(|key: &str| key.to_socket_addrs().map(Iterator::collect))
}

/// Why no address was had.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The name does not resolve (or to nothing).
    NotFound,
    /// The deadline passed before the resolver answered.
    Timeout,
    /// No thread could be started for the lookup.
    Spawn(io::Error),
}

/// A lookup without waiting: the addresses, a failure, or an answer still to come.
pub(crate) enum Lookup {
    Ready(Result<Vec<SocketAddr>, ResolveError>),
    /// Ask [`AddressBook::answer`] with the ticket when notified.
    Pending(Ticket),
}

/// The lookup a caller waits for. Its answer is asked for by the ticket, not by name: a
/// failure is served to every waiter of that lookup, however late each asks (by name, a
/// failure that arrived before the asking is not served: the name is looked up again).
pub(crate) struct Ticket {
    key: String,
    pending: Arc<Pending>,
}

/// One lookup in flight; every waiter of that name shares it.
#[derive(Default)]
struct Pending {
    /// The answer and when it arrived.
    answer: Mutex<Option<(io::Result<Vec<SocketAddr>>, Instant)>>,
    done: Condvar,
    /// Told when the answer arrives (the engine's waker), each once.
    watchers: Mutex<Vec<Notify>>,
}

enum Found {
    Addrs(Vec<SocketAddr>),
    Pending(Arc<Pending>),
}

enum Entry {
    Resolved(Vec<SocketAddr>, Instant),
    Looking(Arc<Pending>),
}

pub(crate) struct AddressBook {
    lookup: LookupFn,
    /// Of this process: a forked child starts empty (a lookup in flight at the fork
    /// would never be answered there: its helper thread does not exist).
    entries: PerProcess<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressBook").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AddressBook {
    pub(crate) fn new(lookup: LookupFn) -> AddressBook {
        AddressBook {
            lookup,
            entries: PerProcess::default(),
        }
    }

    /// The addresses of `host` at `port`, waiting for a lookup until `deadline`.
    pub(crate) fn addresses(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let key = format!("{host}:{port}");
        let pending = match self.find(host, port, &key)? {
            Found::Addrs(a) => return Ok(a),
            Found::Pending(p) => p,
        };
        let mut answer = lock(&pending.answer);
        loop {
            // The deadline first: an answer that arrives as it passes leaves no time to
            // connect.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ResolveError::Timeout);
            }
            if answer.is_some() {
                drop(answer);
                return self.take_answer(&key, &pending);
            }
            answer = pending
                .done
                .wait_timeout(answer, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The addresses of `host` at `port` if known now; else a lookup is under way and
    /// `notify` is called once when it answers: then [`AddressBook::answer`] with the
    /// ticket gives its answer.
    pub(crate) fn poll_addresses(&self, host: &str, port: u16, notify: &Notify) -> Lookup {
        let key = format!("{host}:{port}");
        let pending = match self.find(host, port, &key) {
            Ok(Found::Addrs(a)) => return Lookup::Ready(Ok(a)),
            Err(e) => return Lookup::Ready(Err(e)),
            Ok(Found::Pending(p)) => p,
        };
        if lock(&pending.answer).is_some() {
            return Lookup::Ready(self.take_answer(&key, &pending));
        }
        let mut watchers = lock(&pending.watchers);
        if !watchers.iter().any(|w| Arc::ptr_eq(w, notify)) {
            watchers.push(Arc::clone(notify));
        }
        drop(watchers);
        // The answer may have landed while the watcher was added.
        if lock(&pending.answer).is_some() {
            return Lookup::Ready(self.take_answer(&key, &pending));
        }
        Lookup::Pending(Ticket { key, pending })
    }

    /// The answer of the lookup `ticket` waits for, once it has arrived: the same to
    /// every holder of that lookup's tickets, failure included (no second lookup).
    pub(crate) fn answer(&self, ticket: &Ticket) -> Option<Result<Vec<SocketAddr>, ResolveError>> {
        if lock(&ticket.pending.answer).is_none() {
            return None;
        }
        Some(self.take_answer(&ticket.key, &ticket.pending))
    }

    /// A literal, a cached answer, or the lookup (started if need be) to wait for.
    fn find(&self, host: &str, port: u16, key: &str) -> Result<Found, ResolveError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Found::Addrs(vec![SocketAddr::new(ip, port)]));
        }
        let asked = Instant::now();
        let mut entries = lock(self.entries.get(Default::default));
        let current = match entries.get(key) {
            Some(Entry::Resolved(addrs, at)) if at.elapsed() < TTL => {
                return Ok(Found::Addrs(addrs.clone()))
            }
            Some(Entry::Looking(p)) => Some(Arc::clone(p)),
            _ => None,
        };
        // A lookup that finished after all its waiters gave up: a success is cached
        // from when it arrived (and may already be too old); a failure is not served
        // to a later caller, who asks again.
        let usable = current.filter(|p| match lock(&p.answer).as_ref() {
            None => true,
            Some((Ok(addrs), at)) => !addrs.is_empty() && at.elapsed() < TTL,
            Some((Err(_), at)) => *at >= asked,
        });
        Ok(Found::Pending(match usable {
            Some(p) => p,
            None => {
                let p = Arc::new(Pending::default());
                self.start_lookup(key, Arc::clone(&p))?;
                entries.insert(key.to_owned(), Entry::Looking(Arc::clone(&p)));
                p
            }
        }))
    }

    /// The answer of a finished lookup, settled into the cache.
    fn take_answer(
        &self,
        key: &str,
        pending: &Arc<Pending>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let (result, at) = match lock(&pending.answer).as_ref() {
            Some((Ok(addrs), at)) if !addrs.is_empty() => (Ok(addrs.clone()), *at),
            Some((_, at)) => (Err(ResolveError::NotFound), *at),
            None => return Err(ResolveError::Timeout),
        };
        self.settle(key, pending, result.as_ref().ok(), at);
        result
    }

    /// Starts the detached helper thread of one lookup.
    fn start_lookup(&self, key: &str, pending: Arc<Pending>) -> Result<(), ResolveError> {
        let lookup = Arc::clone(&self.lookup);
        let key = key.to_owned();
        crate::host::pool::spawn_named("tryvox-resolve", RESOLVE_STACK, move || {
            pin_code_while_running();
            let answer = lookup(&key);
            *lock(&pending.answer) = Some((answer, Instant::now()));
            pending.done.notify_all();
            for w in std::mem::take(&mut *lock(&pending.watchers)) {
                w();
            }
        })
        .map(drop)
        .map_err(ResolveError::Spawn)
    }

    /// Replaces a finished lookup by its answer, cached from when it `arrived`, or by
    /// nothing (a failure is not cached: the next hangup asks again).
    fn settle(
        &self,
        key: &str,
        pending: &Arc<Pending>,
        addrs: Option<&Vec<SocketAddr>>,
        arrived: Instant,
    ) {
        let mut entries = lock(self.entries.get(Default::default));
        if matches!(entries.get(key), Some(Entry::Looking(p)) if Arc::ptr_eq(p, pending)) {
            match addrs {
                Some(a) => entries.insert(key.to_owned(), Entry::Resolved(a.clone(), arrived)),
                None => entries.remove(key),
            };
        }
    }

    /// Moves `addr` to the back of every cached list that holds it: it failed, or was
    /// still connecting when another address answered.
    pub(crate) fn demote(&self, addr: SocketAddr) {
        for entry in lock(self.entries.get(Default::default)).values_mut() {
            if let Entry::Resolved(addrs, _) = entry {
                if let Some(i) = addrs.iter().position(|a| *a == addr) {
                    let a = addrs.remove(i);
                    addrs.push(a);
                }
            }
        }
    }
}

/// Keeps the shared object holding this code mapped while a detached lookup thread runs,
/// so a host that frees the client and `dlclose`s libtryvox while the system resolver is
/// stuck does not unmap the code that thread returns to: glibc does not unload an object
/// while a live thread holds a thread-local destructor registered from it
/// (`__cxa_thread_atexit_impl`); the thread's exit releases it.
fn pin_code_while_running() {
    struct Pin;
    impl Drop for Pin {
        fn drop(&mut self) {}
    }
    thread_local! {
        static PIN: Pin = const { Pin };
    }
    PIN.with(|_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn counting(answer: Vec<SocketAddr>) -> (AddressBook, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(answer.clone())
        });
        (AddressBook::new(lookup), calls)
    }

    #[test]
    fn literals_without_a_lookup_and_names_cached() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (r, calls) = counting(vec![a]);
        let got = r.addresses("127.0.0.1", 8080, soon(5000)).unwrap();
        assert_eq!(got[0], "127.0.0.1:8080".parse().unwrap());
        let got = r.addresses("[::1]", 443, soon(5000)).unwrap();
        assert_eq!(got[0], "[::1]:443".parse().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no lookup for literals");
        for _ in 0..3 {
            assert_eq!(r.addresses("some.name", 9, soon(5000)).unwrap()[0], a);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "later ones from the cache");
    }

    #[test]
    fn a_failure_nobody_waited_for_is_not_served_later() {
        // The lookup fails after its only waiter gave up: the next caller asks again.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                let _ = lock(&gate).recv();
                return Err(io::Error::other("the DNS server is down"));
            }
            Ok(vec!["127.0.0.1:9".parse().unwrap()])
        });
        let r = AddressBook::new(lookup);
        assert!(matches!(
            r.addresses("flaky.name", 9, soon(50)),
            Err(ResolveError::Timeout)
        ));
        release.send(()).unwrap();
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50)); // let the failure land
        let got = r.addresses("flaky.name", 9, soon(5000)).unwrap();
        assert_eq!(got[0], "127.0.0.1:9".parse().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again");
    }

    #[test]
    fn a_failure_reaches_every_ticket_of_its_lookup_without_a_second_lookup() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = lock(&gate).recv();
            Err(io::Error::other("NXDOMAIN"))
        });
        let r = AddressBook::new(lookup);
        let notify: Notify = Arc::new(|| {});
        let tickets: Vec<Ticket> = (0..5)
            .map(|_| match r.poll_addresses("no.such", 9, &notify) {
                Lookup::Pending(t) => t,
                Lookup::Ready(_) => panic!("answered before the lookup was released"),
            })
            .collect();
        assert!(tickets.iter().all(|t| r.answer(t).is_none()));
        release.send(()).unwrap();
        for t in &tickets {
            let got = loop {
                match r.answer(t) {
                    Some(a) => break a,
                    None => std::thread::yield_now(),
                }
            };
            assert!(matches!(got, Err(ResolveError::NotFound)), "{got:?}");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one lookup for every waiter"
        );
    }

    #[test]
    fn a_failed_address_moves_to_the_back() {
        let a: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (r, _) = counting(vec![a, b]);
        assert_eq!(r.addresses("some.name", 9, soon(5000)).unwrap()[0], a);
        r.demote(a);
        let got = r.addresses("some.name", 9, soon(5000)).unwrap();
        assert_eq!((got[0], got[1]), (b, a));
    }

    #[test]
    fn a_stuck_lookup_is_shared_bounded_and_wakes_the_engine() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = lock(&gate).recv();
            Ok(vec!["127.0.0.1:9".parse().unwrap()])
        });
        let r = AddressBook::new(lookup);
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let notify: Notify = Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let e = r.addresses("stuck.name", 9, soon(100)).unwrap_err();
                    assert!(matches!(e, ResolveError::Timeout), "{e:?}");
                });
            }
        });
        for _ in 0..3 {
            assert!(matches!(
                r.poll_addresses("stuck.name", 9, &notify),
                Lookup::Pending(_)
            ));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one lookup for all waiters"
        );
        release.send(()).unwrap();
        while woken.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(woken.load(Ordering::SeqCst), 1, "notified once");
        assert!(matches!(
            r.poll_addresses("stuck.name", 9, &notify),
            Lookup::Ready(Ok(_))
        ));
        // The answer that came late serves the next caller.
        assert!(r.addresses("stuck.name", 9, soon(5000)).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
