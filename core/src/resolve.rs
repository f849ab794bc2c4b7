//! Host name resolution for the client's agent.
//!
//! ureq's default resolver starts a thread for every request when a timeout is set, even
//! for an IP address and even when a pooled connection is then reused: a thread per call,
//! which a telephony host must not pay. This resolver answers IP literals at once, caches
//! names for [`TTL`], and resolves a miss on one helper thread bounded by the deadline.
//! Helper threads are joined when the client is dropped, so none outlives it (a stuck
//! system resolver can delay that by its own timeout, typically a few seconds).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved name is reused.
pub const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct CachingResolver {
    cache: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
    helpers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CachingResolver {
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

    fn lookup(&self, key: String, timeout: NextTimeout) -> Result<Vec<SocketAddr>, ureq::Error> {
        let (tx, rx) = mpsc::channel();
        let k = key.clone();
        let handle = std::thread::Builder::new()
            .name("tryvox-resolve".into())
            .spawn(move || {
                let _ = tx.send(k.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
            })
            .map_err(ureq::Error::Io)?;
        {
            let mut helpers = lock(&self.helpers);
            helpers.retain(|h| !h.is_finished());
            helpers.push(handle);
        }
        let wait = if timeout.after.is_not_happening() {
            Duration::MAX
        } else {
            *timeout.after
        };
        match rx.recv_timeout(wait) {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                lock(&self.cache).insert(key, (addrs.clone(), Instant::now()));
                Ok(addrs)
            }
            Ok(_) => Err(ureq::Error::HostNotFound),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ureq::Error::HostNotFound),
        }
    }
}

impl Resolver for CachingResolver {
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
        let key = format!("{host}:{port}");
        let cached = lock(&self.cache)
            .get(&key)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(addrs, _)| addrs.clone());
        let addrs = match cached {
            Some(a) => a,
            None => self.lookup(key, timeout)?,
        };
        self.to_resolved(&addrs, config)
    }
}

impl Drop for CachingResolver {
    fn drop(&mut self) {
        for h in lock(&self.helpers).drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::time::Duration as UDuration;

    fn t() -> NextTimeout {
        NextTimeout {
            after: UDuration::Exact(Duration::from_secs(5)),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    #[test]
    fn literals_without_a_lookup_and_names_cached() {
        let r = CachingResolver::default();
        let cfg = Config::default();
        let got = r
            .resolve(&"http://127.0.0.1:8080/x".parse().unwrap(), &cfg, t())
            .unwrap();
        assert_eq!(got[0], "127.0.0.1:8080".parse().unwrap());
        let got = r
            .resolve(&"https://[::1]/x".parse().unwrap(), &cfg, t())
            .unwrap();
        assert_eq!(got[0], "[::1]:443".parse().unwrap());
        assert!(lock(&r.helpers).is_empty(), "no thread for literals");
        let got = r
            .resolve(&"http://localhost:9/x".parse().unwrap(), &cfg, t())
            .unwrap();
        assert!(got.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(lock(&r.helpers).len(), 1);
        r.resolve(&"http://localhost:9/x".parse().unwrap(), &cfg, t())
            .unwrap();
        assert!(
            lock(&r.helpers).len() <= 1,
            "second lookup served from the cache"
        );
    }
}
