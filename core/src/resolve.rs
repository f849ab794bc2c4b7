//! Host name resolution for the client's agent: an address book shared with the TCP
//! connector.
//!
//! - IP literals are answered at once, without a thread (ureq's default resolver starts a
//!   thread per request when a timeout is set).
//! - Names are cached for [`TTL`]. A miss is looked up on a helper thread; concurrent
//!   misses of one name wait for the same lookup (merged), so a burst of hangups costs one
//!   lookup and one thread.
//! - A caller waits for a lookup no longer than its own deadline (then TIMEOUT). The
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

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved name is reused.
pub const TTL: Duration = Duration::from_secs(30);

/// Resolves `host:port` to addresses. The default is the system resolver (getaddrinfo);
/// tests substitute their own (a name whose first address is black-holed, a resolver
/// that never answers) through [`crate::Options::set_resolver`].
pub type LookupFn = Arc<dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The system resolver.
pub(crate) fn system_lookup() -> LookupFn {
    Arc::new(|key: &str| key.to_socket_addrs().map(Iterator::collect))
}

/// One lookup in flight; every waiter of that name shares it.
#[derive(Default)]
struct Pending {
    /// The answer and when it arrived.
    answer: Mutex<Option<(io::Result<Vec<SocketAddr>>, Instant)>>,
    done: Condvar,
}

enum Entry {
    Resolved(Vec<SocketAddr>, Instant),
    Looking(Arc<Pending>),
}

pub(crate) struct AddressBook {
    lookup: LookupFn,
    entries: Mutex<HashMap<String, Entry>>,
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
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The addresses of `key` (`host:port`), waiting for a lookup until `deadline`.
    fn addresses(
        &self,
        key: &str,
        deadline: Option<Instant>,
        reason: ureq::Timeout,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let asked = Instant::now();
        let pending = {
            let mut entries = lock(&self.entries);
            let current = match entries.get(key) {
                Some(Entry::Resolved(addrs, at)) if at.elapsed() < TTL => return Ok(addrs.clone()),
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
            match usable {
                Some(p) => p,
                None => {
                    let p = Arc::new(Pending::default());
                    self.start_lookup(key, Arc::clone(&p))?;
                    entries.insert(key.to_owned(), Entry::Looking(Arc::clone(&p)));
                    p
                }
            }
        };
        let mut answer = lock(&pending.answer);
        loop {
            // The deadline first: an answer that arrives as it passes leaves no time to
            // connect.
            let left = deadline.map(|dl| dl.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(ureq::Error::Timeout(reason));
            }
            if let Some((a, at)) = answer.as_ref() {
                let (result, at) = match a {
                    Ok(addrs) if !addrs.is_empty() => (Ok(addrs.clone()), *at),
                    _ => (Err(ureq::Error::HostNotFound), *at),
                };
                drop(answer);
                self.settle(key, &pending, result.as_ref().ok(), at);
                return result;
            }
            let wait = left.unwrap_or(Duration::from_secs(3600));
            answer = pending
                .done
                .wait_timeout(answer, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Starts the detached helper thread of one lookup.
    fn start_lookup(&self, key: &str, pending: Arc<Pending>) -> Result<(), ureq::Error> {
        let lookup = Arc::clone(&self.lookup);
        let key = key.to_owned();
        std::thread::Builder::new()
            .name("tryvox-resolve".into())
            .spawn(move || {
                pin_code_while_running();
                let answer = lookup(&key);
                *lock(&pending.answer) = Some((answer, Instant::now()));
                pending.done.notify_all();
            })
            .map(drop)
            .map_err(ureq::Error::Io)
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
        let mut entries = lock(&self.entries);
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
        for entry in lock(&self.entries).values_mut() {
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

/// The agent's resolver: a handle on the client's [`AddressBook`].
#[derive(Debug, Clone)]
pub(crate) struct BookResolver(pub(crate) Arc<AddressBook>);

impl BookResolver {
    fn to_resolved(
        &self,
        addrs: &[SocketAddr],
        config: &Config,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for a in config
            .ip_family()
            .keep_wanted(addrs.iter().copied())
            .take(16)
        {
            out.push(a);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

impl Resolver for BookResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(uri.to_string()))?;
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = authority.host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.to_resolved(&[SocketAddr::new(ip, port)], config);
        }
        let deadline = if timeout.after.is_not_happening() {
            None
        } else {
            Some(Instant::now() + *timeout.after)
        };
        let addrs = self
            .0
            .addresses(&format!("{host}:{port}"), deadline, timeout.reason)?;
        self.to_resolved(&addrs, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use ureq::unversioned::transport::time::Duration as UDuration;

    fn t(ms: u64) -> NextTimeout {
        NextTimeout {
            after: UDuration::Exact(Duration::from_millis(ms)),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    fn counting(answer: Vec<SocketAddr>) -> (BookResolver, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(answer.clone())
        });
        (BookResolver(Arc::new(AddressBook::new(lookup))), calls)
    }

    #[test]
    fn literals_without_a_lookup_and_names_cached() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (r, calls) = counting(vec![a]);
        let cfg = Config::default();
        let got = r
            .resolve(&"http://127.0.0.1:8080/x".parse().unwrap(), &cfg, t(5000))
            .unwrap();
        assert_eq!(got[0], "127.0.0.1:8080".parse().unwrap());
        let got = r
            .resolve(&"https://[::1]/x".parse().unwrap(), &cfg, t(5000))
            .unwrap();
        assert_eq!(got[0], "[::1]:443".parse().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no lookup for literals");
        for _ in 0..3 {
            let got = r
                .resolve(&"http://some.name:9/x".parse().unwrap(), &cfg, t(5000))
                .unwrap();
            assert_eq!(got[0], a);
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
        let r = BookResolver(Arc::new(AddressBook::new(lookup)));
        let uri: Uri = "http://flaky.name:9/x".parse().unwrap();
        let cfg = Config::default();
        assert!(matches!(
            r.resolve(&uri, &cfg, t(50)),
            Err(ureq::Error::Timeout(_))
        ));
        release.send(()).unwrap();
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50)); // let the failure land
        let got = r.resolve(&uri, &cfg, t(5000)).unwrap();
        assert_eq!(got[0], "127.0.0.1:9".parse().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again");
    }

    #[test]
    fn a_failed_address_moves_to_the_back() {
        let a: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (r, _) = counting(vec![a, b]);
        let cfg = Config::default();
        let uri: Uri = "http://some.name:9/x".parse().unwrap();
        assert_eq!(r.resolve(&uri, &cfg, t(5000)).unwrap()[0], a);
        r.0.demote(a);
        let got = r.resolve(&uri, &cfg, t(5000)).unwrap();
        assert_eq!((got[0], got[1]), (b, a));
    }

    #[test]
    fn a_stuck_lookup_is_shared_and_bounded_by_the_deadline() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: LookupFn = Arc::new(move |_: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = lock(&gate).recv();
            Ok(vec!["127.0.0.1:9".parse().unwrap()])
        });
        let r = BookResolver(Arc::new(AddressBook::new(lookup)));
        let uri: Uri = "http://stuck.name:9/x".parse().unwrap();
        let cfg = Config::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let e = r.resolve(&uri, &cfg, t(100)).unwrap_err();
                    assert!(matches!(e, ureq::Error::Timeout(_)), "{e}");
                });
            }
        });
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one lookup for all waiters"
        );
        release.send(()).unwrap();
        // The answer that came late serves the next caller.
        assert!(r.resolve(&uri, &cfg, t(5000)).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
