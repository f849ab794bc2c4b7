//! One HTTP attempt of a hangup, and the mapping of what it met (a response, or a
//! failure before any response) onto a status and a retry class. The engine maps its
//! attempts with the same functions.

use ureq_proto::http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use ureq_proto::http::{Method, Request, Uri};

use crate::contract::error::{Error, Status};
use crate::contract::options::LogLevel;
use crate::net::conn::AttemptError;
use crate::net::conn::{Fail, Via};
use crate::net::resolve::ResolveError;
pub(crate) use crate::net::wire::Answer;
use crate::net::wire::WireError;
use crate::policy::response;
use crate::policy::retry::Failure;
use crate::state::Core;

/// The result of one HTTP attempt, with its retry class.
pub(crate) struct Attempt<T = u16> {
    pub(crate) result: Result<T, Error>,
    pub(crate) failure: Failure,
}

impl Answer {
    /// The retry class of this response.
    pub(crate) fn failure(&self) -> Failure {
        Failure::of_response(self.http_status, self.retry_after)
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

    /// `text` (a peer's words) without the key or the proxy's credentials.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.route.redact(&self.key.redact(text))
    }

    /// What a response says, for a hangup and a listing alike: a 407 on a route that
    /// sends its requests to a proxy is the proxy's answer (RFC 9110 15.5.8: only a proxy
    /// sends it), the same outcome as the proxy refusing a CONNECT, named as the proxy's,
    /// never retried (the credentials will not change); any other status is classified,
    /// the peer's words redacted, a forwarding proxy's 502/504 worded as its.
    pub(crate) fn judge(&self, answer: &Answer, call_uuid: &str) -> Attempt<()> {
        if let (407, Via::Forward(p)) = (answer.http_status, self.route.via()) {
            let e = Error::new(
                Status::NetworkError,
                format!(
                    "the proxy {p} refused or failed the connection (the proxy answered \
                     407: it wants credentials, user:password@ in the proxy URL)"
                ),
            );
            return Attempt {
                result: Err(e.with_http(407, "")),
                failure: Failure::Final,
            };
        }
        let result = response::classify_with(answer.http_status, &answer.body, call_uuid, &|s| {
            self.redact(s)
        })
        .map_err(|e| self.in_the_proxys_words(e));
        Attempt {
            result,
            failure: answer.failure(),
        }
    }

    /// The outcome of a hangup's response.
    pub(crate) fn hangup_outcome(&self, answer: &Answer, call_uuid: &str) -> Attempt {
        let Attempt { result, failure } = self.judge(answer, call_uuid);
        let result = result
            .map(|()| answer.http_status)
            .map_err(|e| match answer.cut {
                // The status stands; the message says why the server's words may be missing
                // (a proxy's refusal, NETWORK_ERROR, never came from the server).
                Some(why) if e.status() != Status::NetworkError => e.append(&format!(" ({why})")),
                _ => e,
            });
        Attempt { result, failure }
    }

    /// Through a forwarding proxy, a 502 or 504 without the API's error code is most
    /// likely the proxy's word that it could not reach the API (or not in time), or a
    /// gateway's behind it: the status and the retries are a server error's, the message
    /// names the proxy without claiming which of the two answered.
    fn in_the_proxys_words(&self, e: Error) -> Error {
        match (self.route.via(), e.http_status()) {
            (Via::Forward(p), s @ (502 | 504)) if e.server_code().is_empty() => {
                let what = if s == 502 {
                    "could not reach"
                } else {
                    "timed out reaching"
                };
                let words = e.message().split_once(": ").map_or("", |(_, w)| w);
                let mut m = format!(
                    "the proxy {p} answered {s}: it, or a gateway behind it, {what} the \
                     TryVox server"
                );
                if !words.is_empty() {
                    m.push_str(": ");
                    m.push_str(words);
                }
                Error::new(e.status(), m).with_http(s, "")
            }
            _ => e,
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
        let (status, failure, msg) = describe(e, self.route.via());
        let msg = self.redact(&msg);
        self.log(LogLevel::Debug, || format!("{method} {uri}: {msg}"));
        Attempt {
            result: Err(Error::new(status, msg)),
            failure,
        }
    }
}

/// Maps a failure before any response to a status, a retry class and a description.
/// Through a proxy, what may be the proxy's failure names it (`host:port`: the proxy
/// URL's credentials never appear), so that a dead proxy is not taken for the server.
pub(crate) fn describe(e: &AttemptError, via: Via) -> (Status, Failure, String) {
    let proxy = match via {
        Via::Direct => None,
        Via::Forward(p) | Via::Tunnel(p) => Some(p),
    };
    // Whose host name, whose connection.
    let host = match proxy {
        None => "the server's host name".to_owned(),
        Some(p) => format!("the proxy's host name ({p})"),
    };
    let (status, failure, what): (Status, Failure, String) = match e {
        AttemptError::ConnectTimeout => (
            Status::Timeout,
            Failure::Connection,
            match via {
                Via::Direct => "timed out connecting to the server".into(),
                Via::Forward(p) => format!("timed out connecting to the proxy {p}"),
                // The tunnel and the TLS handshake in it count as connecting.
                Via::Tunnel(p) => format!("timed out connecting through the proxy {p}"),
            },
        ),
        AttemptError::Deadline => (
            Status::Timeout,
            Failure::Final,
            "the deadline passed waiting for the server".into(),
        ),
        AttemptError::NoDescriptor => (
            Status::Timeout,
            Failure::Final,
            crate::host::fds::WAITED_FOR_DESCRIPTOR.into(),
        ),
        AttemptError::Resolve(ResolveError::Timeout) => (
            Status::Timeout,
            Failure::Connection,
            format!("timed out resolving {host}"),
        ),
        AttemptError::Resolve(ResolveError::NotFound) => (
            Status::NetworkError,
            Failure::Final,
            match proxy {
                None => "the server's host name did not resolve".into(),
                Some(p) => {
                    format!("could not connect to the proxy {p}: its host name did not resolve")
                }
            },
        ),
        AttemptError::Resolve(ResolveError::Spawn(e)) => (
            Status::Busy,
            Failure::Connection,
            format!("no thread could be started to resolve {host} ({e})"),
        ),
        AttemptError::Conn(Fail::Io(io)) if crate::net::transport::is_out_of_descriptors(io) => (
            Status::Busy,
            Failure::Connection,
            "no connection could be opened: the process has no file descriptor free \
             (too many open files)"
                .into(),
        ),
        AttemptError::Conn(Fail::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            Status::NetworkError,
            Failure::Connection,
            match proxy {
                None => "could not connect to the server: connection refused".into(),
                Some(p) => format!("could not connect to the proxy {p}: connection refused"),
            },
        ),
        AttemptError::Conn(Fail::Io(io)) => (
            Status::NetworkError,
            Failure::Connection,
            match proxy {
                None => format!("the connection failed before a response arrived ({io})"),
                Some(p) => format!(
                    "the connection to the proxy {p} failed before a response arrived ({io})"
                ),
            },
        ),
        AttemptError::Conn(Fail::Closed) => (
            Status::NetworkError,
            Failure::Connection,
            match via {
                Via::Forward(p) => {
                    format!("the proxy {p} closed the connection before a response arrived")
                }
                _ => "the server closed the connection before a response arrived".into(),
            },
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
            format!(
                "the proxy {} refused or failed the connection ({why})",
                proxy.unwrap_or_default()
            ),
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
            let (status, failure, what) = describe(&e, Via::Direct);
            assert_eq!(status, Status::Busy);
            assert_eq!(failure, Failure::Connection);
            assert!(what.contains("file descriptor"));
        }
        let refused = AttemptError::Conn(Fail::Io(std::io::ErrorKind::ConnectionRefused.into()));
        assert_eq!(describe(&refused, Via::Direct).0, Status::NetworkError);
    }

    #[test]
    fn a_failure_to_reach_a_proxy_names_it() {
        let refused = || AttemptError::Conn(Fail::Io(std::io::ErrorKind::ConnectionRefused.into()));
        let (status, _, what) = describe(&refused(), Via::Forward("127.0.0.1:3128"));
        assert_eq!(status, Status::NetworkError);
        assert_eq!(
            what,
            "could not connect to the proxy 127.0.0.1:3128: connection refused"
        );
        let (_, _, what) = describe(&refused(), Via::Tunnel("[::1]:8080"));
        assert_eq!(
            what,
            "could not connect to the proxy [::1]:8080: connection refused"
        );
        let (_, _, what) = describe(&refused(), Via::Direct);
        assert_eq!(what, "could not connect to the server: connection refused");
        let gone = AttemptError::Resolve(ResolveError::NotFound);
        let (_, _, what) = describe(&gone, Via::Forward("proxy.invalid:3128"));
        assert!(what.contains("proxy proxy.invalid:3128"), "{what}");
        let (_, _, what) = describe(&AttemptError::ConnectTimeout, Via::Forward("10.9.9.9:3128"));
        assert_eq!(what, "timed out connecting to the proxy 10.9.9.9:3128");
    }
}
