//! The status table: the one place where every outcome class, its stable number and its
//! short text are declared.
//!
//! Everything else is generated from the `statuses!` invocation below: the Rust
//! [`Status`] enum here, and in the C library (whose `build.rs` reads this file) the C
//! enum `tryvox_status` of the header, the texts of `tryvox_status_str`, and through the
//! header the checks of every language binding. The numbers are part of the v1 C ABI:
//! they never change meaning or value; new statuses are added after the last one.
//!
//! Format, which `build.rs` parses: doc lines (`///`), then `Name = number, "text";` on
//! one line. The C name is `TRYVOX_` and the name in upper snake case.

use std::fmt;

macro_rules! statuses {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal, $text:literal;)*) => {
        /// The outcome class of a hangup or any other operation. The discriminants are
        /// the C library's `TRYVOX_*` numbers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Status {
            $($(#[doc = $doc])* $name = $code,)*
        }

        impl Status {
            /// Every status, in number order (the numbers run from 0 without a gap).
            pub const ALL: &'static [Status] = &[$(Status::$name),*];

            /// A short static description, e.g. "call not found".
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Status::$name => $text,)*
                }
            }

            /// The status with this number, if there is one.
            pub const fn from_code(code: i32) -> Option<Status> {
                match code {
                    $($code => Some(Status::$name),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// Success: the API answered 2xx (204 No Content: the call is ended).
    Ok = 0, "ok";
    /// 404: no such call (`call_not_found`, nested `NOT_FOUND`, or a 404 with no usable
    /// body). A caller who only asks "is the call gone?" treats this like ALREADY_ENDED.
    NotFound = 1, "call not found";
    /// 404 `call_already_ended` (flat or nested form): the call was over already. Also the
    /// outcome when a retry meets a call an earlier, unanswered attempt had ended.
    AlreadyEnded = 2, "call already ended";
    /// A NULL pointer, an empty or malformed id, a key or header value with control
    /// characters, a bad URL, a bad option value. Nothing was sent.
    InvalidArgument = 3, "invalid argument";
    /// 401: the API key is missing, wrong or expired.
    Unauthorized = 4, "unauthorized (bad or expired API key)";
    /// 403: the key may not do this.
    Forbidden = 5, "forbidden";
    /// 429, and no retry (the wait and a useful attempt after it) fitted within the
    /// deadline.
    RateLimited = 6, "rate limited";
    /// 5xx after the retries were spent.
    ServerError = 7, "server error";
    /// The deadline passed (connect or total) before any response's status line arrived.
    /// The call may or may not have been ended. (A status line that did arrive is the
    /// outcome even if its body never came: a 2xx is OK, its owed body waited for 250 ms
    /// at most; a 404 NOT_FOUND, and so on, with its HTTP status.)
    Timeout = 8, "timed out";
    /// DNS failure, refused or reset connection, proxy failure, or a connection (TLS
    /// included: a corrupt record, an alert) that failed after the request was sent and
    /// before its answer; the request may have reached the server, and is retried like
    /// a reset.
    NetworkError = 9, "network error";
    /// Certificate or TLS handshake failure. The key was not sent.
    TlsError = 10, "TLS error";
    /// Any other HTTP status (e.g. 400, 418, a redirect), or a response that is not HTTP
    /// (e.g. an SSH banner: not retried).
    ProtocolError = 11, "unexpected response";
    /// A bug in the library, caught at the boundary. The host process and the client
    /// live on; please report it.
    InternalError = 12, "internal error";
    /// The library could not take the request, and nothing was sent: the client is being
    /// freed (a callback running while the client is freed asked for more work), or the
    /// library could not start a thread or open a connection (the process is at its
    /// thread, memory or file descriptor limit).
    /// Not a bug; the host may retry later. Added after v1: treat unknown numbers above
    /// 13 as failures too.
    Busy = 13, "busy: request not taken";
}

impl Status {
    /// The stable number (the C `TRYVOX_*` value).
    pub const fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frozen v1 numbers: a status deleted or renumbered in the table fails here.
    #[test]
    fn numbers_are_the_contract() {
        let expected = [
            (Status::Ok, 0),
            (Status::NotFound, 1),
            (Status::AlreadyEnded, 2),
            (Status::InvalidArgument, 3),
            (Status::Unauthorized, 4),
            (Status::Forbidden, 5),
            (Status::RateLimited, 6),
            (Status::ServerError, 7),
            (Status::Timeout, 8),
            (Status::NetworkError, 9),
            (Status::TlsError, 10),
            (Status::ProtocolError, 11),
            (Status::InternalError, 12),
            (Status::Busy, 13),
        ];
        for (s, n) in expected {
            assert_eq!(s.code(), n);
            assert_eq!(Status::from_code(n), Some(s));
        }
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.code() as usize, i, "numbers run from 0 without a gap");
        }
        assert_eq!(Status::from_code(Status::ALL.len() as i32), None);
        assert_eq!(Status::from_code(-1), None);
    }
}
