//! The error type: a [`Status`] with the details a person needs to act on it.

use std::fmt;

pub use crate::contract::status::Status;

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
    /// An error of `status` (never `Status::Ok`) with `message`, no HTTP status and no
    /// server code. For layers built over this crate, such as the C library's checks of
    /// its arguments; the message must not contain the API key.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
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

    /// What a panic caught inside the library (a bug) is reported as, wherever it is
    /// caught: on a worker thread of this crate or at the C library's boundary.
    pub fn caught_panic() -> Error {
        Error::internal(
            "internal error: a bug in libtryvox was caught; the process and the client are \
             intact (please report it)",
        )
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

/// The outcome of one hangup: the HTTP status of the success (204 from the API), or why
/// the call could not be hung up.
pub type HangupResult = Result<u16, Error>;
