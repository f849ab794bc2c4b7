//! One HTTP attempt of a hangup, and the mapping of what it met (a response, or a
//! failure before any response) onto a status and a retry class.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::header::{AUTHORIZATION, RETRY_AFTER};
use ureq::http::Uri;

use crate::client::{Core, HangupResult};
use crate::error::{Error, Status};
use crate::options::LogLevel;
use crate::response::{self, MAX_BODY};
use crate::retry::Failure;

/// The result of one HTTP attempt, with its retry class.
pub(crate) struct Attempt {
    pub(crate) result: HangupResult,
    pub(crate) failure: Failure,
}

impl Core {
    /// One DELETE on the pooled agent, bounded by `budget` (None: the agent's own total
    /// timeout, which is the whole budget of a first attempt).
    pub(crate) fn attempt(&self, uri: &Uri, call_uuid: &str, budget: Option<Duration>) -> Attempt {
        let t0 = Instant::now();
        let mut req = self
            .agent
            .delete(uri.clone())
            .header(AUTHORIZATION, self.key.header().clone());
        if let Some(t) = &self.tenant {
            req = req.header("X-Tenant-ID", t.clone());
        }
        let sent = match budget {
            // A per-request config clones the agent's; only retries need one.
            Some(left) => req.config().timeout_global(Some(left)).build().call(),
            None => req.call(),
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let tls = uri.scheme_str() == Some("https");
                let (status, failure, what) = transport_error(&e, tls);
                // ureq's words may quote a peer (a proxy's status line, a bad header):
                // redacted like any server text.
                let msg = self.key.redact(&format!("{what} ({e})"));
                self.log(LogLevel::Debug, || format!("DELETE {uri}: {msg}"));
                return Attempt {
                    result: Err(Error::new(status, msg)),
                    failure,
                };
            }
        };
        let http_status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        // Bounded read: at most MAX_BODY bytes, whatever the server sends. A body that
        // is cut off or fails midway leaves the status to speak for itself.
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(MAX_BODY as u64)
            .read_to_end(&mut body);
        drop(response);
        self.log(LogLevel::Debug, || {
            format!(
                "DELETE {uri} -> HTTP {http_status} in {} us",
                t0.elapsed().as_micros()
            )
        });
        let result =
            response::classify_with(http_status, &body, call_uuid, &|s: &str| self.key.redact(s))
                .map(|()| http_status);
        let failure = match http_status {
            429 => Failure::RateLimited { retry_after },
            s if response::is_retryable_server_status(s) => Failure::Unavailable,
            _ => Failure::Final,
        };
        Attempt { result, failure }
    }
}

/// Maps a failure before any response to a status, a retry class and a plain description.
/// `tls`: the connection was (to be) secured, so a malformed-data failure is TLS's.
fn transport_error(e: &ureq::Error, tls: bool) -> (Status, Failure, &'static str) {
    use ureq::Error as E;
    match e {
        E::Timeout(ureq::Timeout::Connect) | E::Timeout(ureq::Timeout::Resolve) => (
            Status::Timeout,
            Failure::Connection,
            "timed out connecting to the server",
        ),
        E::Timeout(_) => (
            Status::Timeout,
            Failure::Final,
            "the deadline passed waiting for the server",
        ),
        E::HostNotFound => (
            Status::NetworkError,
            Failure::Final,
            "the server's host name did not resolve",
        ),
        E::ConnectionFailed => (
            Status::NetworkError,
            Failure::Connection,
            "could not connect to the server",
        ),
        E::ConnectProxyFailed(_) | E::InvalidProxyUrl => (
            Status::NetworkError,
            Failure::Final,
            "the proxy refused or failed the connection",
        ),
        E::Tls(_) | E::Pem(_) | E::Rustls(_) => {
            (Status::TlsError, Failure::Final, "TLS handshake failed")
        }
        E::Io(io) if tls && is_tls_io(io) => {
            (Status::TlsError, Failure::Final, "TLS handshake failed")
        }
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            Status::NetworkError,
            Failure::Connection,
            "connection refused",
        ),
        E::Io(_) => (
            Status::NetworkError,
            Failure::Connection,
            "the connection failed before a response arrived",
        ),
        E::LargeResponseHeader(..) => (
            Status::ProtocolError,
            Failure::Final,
            "the server's response head is larger than the 16 KiB allowed",
        ),
        E::Protocol(_) => (
            Status::ProtocolError,
            Failure::Final,
            "the server's answer is not valid HTTP",
        ),
        _ => (Status::ProtocolError, Failure::Final, "the request failed"),
    }
}

/// rustls reports a certificate or handshake failure met while reading or writing as an
/// io error of kind `InvalidData` wrapping its own error (`rustls::Error`, documented on
/// its `Connection::read_tls`/`process_new_packets`). Matching the kind, not the type,
/// keeps this independent of which rustls version ureq resolved to; the TLS tests (a bad
/// certificate, an unknown CA) fail if that ever changes.
fn is_tls_io(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::InvalidData && io.get_ref().is_some()
}
