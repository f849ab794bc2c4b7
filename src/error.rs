//! The error type and its one-to-one mapping onto the C status numbers.
//!
//! The numbers are part of the v1 ABI: they never change meaning or value.

use std::fmt;

/// The outcome class of an operation; the discriminants are the C `TRYVOX_*` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// Success (any 2xx; the API answers 204 No Content).
    Ok = 0,
    /// 404: no such call (flat `call_not_found`, nested `NOT_FOUND`, or no usable body).
    NotFound = 1,
    /// 404 `call_already_ended` (flat or nested form).
    AlreadyEnded = 2,
    /// Bad input; nothing was sent.
    InvalidArgument = 3,
    /// 401.
    Unauthorized = 4,
    /// 403.
    Forbidden = 5,
    /// 429 and no retry (the wait and a useful attempt) fitted in the deadline.
    RateLimited = 6,
    /// 5xx after the retries were spent.
    ServerError = 7,
    /// The deadline passed (connect or total).
    Timeout = 8,
    /// DNS failure, refused or reset connection, proxy failure.
    NetworkError = 9,
    /// Certificate or handshake failure.
    TlsError = 10,
    /// Any other HTTP status, or a response that is not HTTP.
    ProtocolError = 11,
    /// A bug caught at the boundary (a Rust panic).
    InternalError = 12,
    /// The library could not take the request (the client is being freed, or no thread
    /// could be started); nothing was sent. Not a bug: try again, or on another client.
    Busy = 13,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 14] = [
        Status::Ok,
        Status::NotFound,
        Status::AlreadyEnded,
        Status::InvalidArgument,
        Status::Unauthorized,
        Status::Forbidden,
        Status::RateLimited,
        Status::ServerError,
        Status::Timeout,
        Status::NetworkError,
        Status::TlsError,
        Status::ProtocolError,
        Status::InternalError,
        Status::Busy,
    ];

    /// The C status number (`TRYVOX_*`).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status for a C status number, if it is one.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// A short static description, as `tryvox_status_str` returns it.
    pub fn as_str(self) -> &'static str {
        self.as_cstr().to_str().unwrap_or("")
    }

    /// The same text as a NUL-terminated static string, for the C layer.
    pub fn as_cstr(self) -> &'static std::ffi::CStr {
        match self {
            Status::Ok => c"ok",
            Status::NotFound => c"call not found",
            Status::AlreadyEnded => c"call already ended",
            Status::InvalidArgument => c"invalid argument",
            Status::Unauthorized => c"unauthorized (bad or expired API key)",
            Status::Forbidden => c"forbidden",
            Status::RateLimited => c"rate limited",
            Status::ServerError => c"server error",
            Status::Timeout => c"timed out",
            Status::NetworkError => c"network error",
            Status::TlsError => c"TLS error",
            Status::ProtocolError => c"unexpected response",
            Status::InternalError => c"internal error",
            Status::Busy => c"busy: request not taken",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed operation: its status, the HTTP status seen (0 if none), the server's error
/// code ("" if none) and a message a person can act on. Never contains the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    http_status: u16,
    server_code: String,
    message: String,
}

impl Error {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
        debug_assert!(status != Status::Ok);
        Error {
            status,
            http_status: 0,
            server_code: String::new(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    pub(crate) fn busy(message: impl Into<String>) -> Error {
        Error::new(Status::Busy, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Error {
        Error::new(Status::InternalError, message)
    }

    pub(crate) fn with_http(mut self, http_status: u16, server_code: impl Into<String>) -> Error {
        self.http_status = http_status;
        self.server_code = server_code.into();
        self
    }

    /// The same error with `more` appended to its message.
    pub(crate) fn append(mut self, more: &str) -> Error {
        self.message.push_str(more);
        self
    }

    /// The status class; never `Status::Ok`.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The HTTP status of the last response seen, or 0 when none arrived.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The server's error code (e.g. `call_not_found`, `NOT_FOUND`), or "" if none.
    pub fn server_code(&self) -> &str {
        &self.server_code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for `NotFound` and `AlreadyEnded`: either way the call is not running.
    pub fn call_is_gone(&self) -> bool {
        matches!(self.status, Status::NotFound | Status::AlreadyEnded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Status::from_code(14), None);
        assert_eq!(Status::from_code(-1), None);
    }
}
