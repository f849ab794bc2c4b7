//! One HTTP attempt of a hangup, and the mapping of what it met (a response, or a
//! failure before any response) onto a status and a retry class. The engine maps its
//! attempts with the same functions.

use std::time::Instant;

use ureq_proto::http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use ureq_proto::http::{Method, Request, Uri};

use crate::blocking::AttemptError;
use crate::client::Core;
use crate::conn::Fail;
use crate::error::{Error, Status};
use crate::options::LogLevel;
use crate::resolve::ResolveError;
use crate::response::{self, MAX_BODY};
use crate::retry::Failure;
pub(crate) use crate::wire::Answer;
use crate::wire::WireError;

/// The result of one HTTP attempt, with its retry class.
pub(crate) struct Attempt<T = u16> {
    pub(crate) result: Result<T, Error>,
    pub(crate) failure: Failure,
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
    /// The request of one attempt: the key (and tenant) and our User-Agent.
    pub(crate) fn request(&self, method: Method, uri: &Uri) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = method;
        *r.uri_mut() = uri.clone();
        let h = r.headers_mut();
        h.insert(AUTHORIZATION, self.key.header().clone());
        h.insert(USER_AGENT, self.user_agent.clone());
        h.insert(ACCEPT, ureq_proto::http::HeaderValue::from_static("*/*"));
        if let Some(t) = &self.tenant {
            h.insert("x-tenant-id", t.clone());
        }
        r
    }

    /// The outcome of a hangup's response.
    pub(crate) fn hangup_outcome(&self, answer: &Answer, call_uuid: &str) -> Attempt {
        let http_status = answer.http_status;
        let result = response::classify_with(http_status, &answer.body, call_uuid, &|s: &str| {
            self.key.redact(s)
        })
        .map(|()| http_status)
        .map_err(|e| match answer.cut {
            // The status stands; the message says why the server's words may be missing.
            Some(why) => e.append(&format!(" ({why})")),
            None => e,
        });
        Attempt {
            result,
            failure: answer.failure(),
        }
    }

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

    /// An attempt that got no response: its status, retry class and a message (the
    /// words of a peer in it redacted like any server text), logged.
    pub(crate) fn no_response<T>(
        &self,
        method: &Method,
        uri: &Uri,
        e: &AttemptError,
    ) -> Attempt<T> {
        let (status, failure, msg) = describe(e);
        let msg = self.key.redact(&msg);
        self.log(LogLevel::Debug, || format!("{method} {uri}: {msg}"));
        Attempt {
            result: Err(Error::new(status, msg)),
            failure,
        }
    }
}

/// Maps a failure before any response to a status, a retry class and a description.
pub(crate) fn describe(e: &AttemptError) -> (Status, Failure, String) {
    let (status, failure, what): (Status, Failure, String) = match e {
        AttemptError::ConnectTimeout => (
            Status::Timeout,
            Failure::Connection,
            "timed out connecting to the server".into(),
        ),
        AttemptError::Deadline => (
            Status::Timeout,
            Failure::Final,
            "the deadline passed waiting for the server".into(),
        ),
        AttemptError::NoDescriptor => (
            Status::Timeout,
            Failure::Final,
            crate::fds::WAITED_FOR_DESCRIPTOR.into(),
        ),
        AttemptError::Resolve(ResolveError::Timeout) => (
            Status::Timeout,
            Failure::Connection,
            "timed out resolving the server's host name".into(),
        ),
        AttemptError::Resolve(ResolveError::NotFound) => (
            Status::NetworkError,
            Failure::Final,
            "the server's host name did not resolve".into(),
        ),
        AttemptError::Resolve(ResolveError::Spawn(e)) => (
            Status::Busy,
            Failure::Connection,
            format!("no thread could be started to resolve the server's host name ({e})"),
        ),
        AttemptError::Conn(Fail::Io(io)) if crate::transport::is_out_of_descriptors(io) => (
            Status::Busy,
            Failure::Connection,
            "no connection could be opened: the process has no file descriptor free \
             (too many open files)"
                .into(),
        ),
        AttemptError::Conn(Fail::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            Status::NetworkError,
            Failure::Connection,
            "could not connect to the server: connection refused".into(),
        ),
        AttemptError::Conn(Fail::Io(io)) => (
            Status::NetworkError,
            Failure::Connection,
            format!("the connection failed before a response arrived ({io})"),
        ),
        AttemptError::Conn(Fail::Closed) => (
            Status::NetworkError,
            Failure::Connection,
            "the server closed the connection before a response arrived".into(),
        ),
        AttemptError::Conn(Fail::Tls(e)) => (
            Status::TlsError,
            Failure::Final,
            format!("TLS handshake failed ({e})"),
        ),
        // Not TLS_ERROR, whose promise is that the key was not sent: the request went
        // out, and the connection broke before its answer, as a reset after sending
        // does (a DELETE is idempotent: retried like one).
        AttemptError::Conn(Fail::TlsAfterRequest(e)) => (
            Status::NetworkError,
            Failure::Connection,
            format!("the TLS connection failed after the request was sent ({e})"),
        ),
        AttemptError::Conn(Fail::Proxy(why)) => (
            Status::NetworkError,
            Failure::Final,
            format!("the proxy refused or failed the connection ({why})"),
        ),
        AttemptError::Conn(Fail::Wire(WireError::HeadTooLarge)) => (
            Status::ProtocolError,
            Failure::Final,
            "the server's response head is larger than the 16 KiB allowed".into(),
        ),
        AttemptError::Conn(Fail::Wire(WireError::Invalid(why))) => (
            Status::ProtocolError,
            Failure::Final,
            format!("the server's answer is not valid HTTP ({why})"),
        ),
    };
    (status, failure, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_is_busy_and_retried() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let e = AttemptError::Conn(Fail::Io(std::io::Error::from_raw_os_error(errno)));
            let (status, failure, what) = describe(&e);
            assert_eq!(status, Status::Busy);
            assert_eq!(failure, Failure::Connection);
            assert!(what.contains("file descriptor"));
        }
        let refused = AttemptError::Conn(Fail::Io(std::io::ErrorKind::ConnectionRefused.into()));
        assert_eq!(describe(&refused).0, Status::NetworkError);
    }
}
