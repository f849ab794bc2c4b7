//! One HTTP attempt of a hangup, and the mapping of what it met (a response, or a
//! failure before any response) onto a status and a retry class.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::header::{AUTHORIZATION, RETRY_AFTER};
use ureq::http::{Method, Uri};

use crate::client::Core;
use crate::error::{Error, Status};
use crate::options::LogLevel;
use crate::response::{self, MAX_BODY};
use crate::retry::Failure;

/// The result of one HTTP attempt, with its retry class.
pub(crate) struct Attempt<T = u16> {
    pub(crate) result: Result<T, Error>,
    pub(crate) failure: Failure,
}

/// A response as one exchange saw it: status, `Retry-After`, and the body read up to its
/// bound.
pub(crate) struct Answer {
    pub(crate) http_status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The retry class of this response.
    pub(crate) fn failure(&self) -> Failure {
        match self.http_status {
            429 => Failure::RateLimited {
                retry_after: self.retry_after,
            },
            s if response::is_retryable_server_status(s) => Failure::Unavailable,
            _ => Failure::Final,
        }
    }
}

impl Core {
    /// One DELETE on the pooled agent, bounded by `budget` (None: the agent's own total
    /// timeout, which is the whole budget of a first attempt).
    pub(crate) fn attempt(&self, uri: &Uri, call_uuid: &str, budget: Option<Duration>) -> Attempt {
        let answer = match self.exchange(Method::DELETE, uri, budget, MAX_BODY) {
            Ok(a) => a,
            Err(attempt) => return attempt,
        };
        let http_status = answer.http_status;
        let result = response::classify_with(http_status, &answer.body, call_uuid, &|s: &str| {
            self.key.redact(s)
        })
        .map(|()| http_status);
        Attempt {
            result,
            failure: answer.failure(),
        }
    }

    /// One request with the key (and tenant) on the pooled agent, its body read up to
    /// `body_limit` bytes; a failure before any response is mapped to its status and retry
    /// class here.
    pub(crate) fn exchange<T>(
        &self,
        method: Method,
        uri: &Uri,
        budget: Option<Duration>,
        body_limit: usize,
    ) -> Result<Answer, Attempt<T>> {
        let t0 = Instant::now();
        let request = ureq::http::Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(AUTHORIZATION, self.key.header().clone());
        let request = match &self.tenant {
            Some(t) => request.header("X-Tenant-ID", t.clone()),
            None => request,
        };
        let request = request.body(()).map_err(|e| Attempt {
            result: Err(Error::internal(format!("request not built: {e}"))),
            failure: Failure::Final,
        })?;
        let sent = match budget {
            // A per-request config clones the agent's; only retries need one.
            Some(left) => self.agent.run(
                self.agent
                    .configure_request(request)
                    .timeout_global(Some(left))
                    .build(),
            ),
            None => self.agent.run(request),
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let tls = uri.scheme_str() == Some("https");
                let (status, failure, what) = transport_error(&e, tls);
                // ureq's words may quote a peer (a proxy's status line, a bad header):
                // redacted like any server text.
                let msg = self.key.redact(&format!("{what} ({e})"));
                self.log(LogLevel::Debug, || format!("{method} {uri}: {msg}"));
                return Err(Attempt {
                    result: Err(Error::new(status, msg)),
                    failure,
                });
            }
        };
        let http_status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        // Bounded read: at most `body_limit` bytes, whatever the server sends. A body that
        // is cut off or fails midway leaves the status to speak for itself.
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(body_limit as u64)
            .read_to_end(&mut body);
        drop(response);
        self.log(LogLevel::Debug, || {
            format!(
                "{method} {uri} -> HTTP {http_status} in {} us",
                t0.elapsed().as_micros()
            )
        });
        Ok(Answer {
            http_status,
            retry_after,
            body,
        })
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
        #[cfg(unix)]
        E::Io(io) if crate::transport::is_out_of_descriptors(io) => (
            Status::Busy,
            Failure::Connection,
            "no connection could be opened: the process has no file descriptor free \
             (too many open files)",
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn out_of_descriptors_is_busy_and_retried() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let e = ureq::Error::Io(std::io::Error::from_raw_os_error(errno));
            let (status, failure, what) = transport_error(&e, false);
            assert_eq!(status, Status::Busy);
            assert_eq!(failure, Failure::Connection);
            assert!(what.contains("file descriptor"));
        }
        let refused = ureq::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(transport_error(&refused, false).0, Status::NetworkError);
    }
}
