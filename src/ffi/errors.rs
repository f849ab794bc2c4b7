//! The getters that are not behind the boundary (see `boundary.rs`): this thread's last
//! error, the text of a status and the library's version.

use std::ffi::{c_char, c_int};

use super::boundary;
use super::STATUS_TEXT;

/// The message of this thread's last fallible library call: "" if it succeeded, else a
/// sentence a person can act on. Never NULL, never contains the API key.
///
/// The pointer is owned by the library and stays valid until the next library call on
/// the same thread; copy it to keep it. Threads never see each other's errors.
#[no_mangle]
pub extern "C" fn tryvox_last_error() -> *const c_char {
    boundary::last_message()
}

/// The server's error code from this thread's last fallible call (e.g. "call_not_found",
/// "call_already_ended", "NOT_FOUND"), or "" if there was none. Never NULL; valid until
/// the next library call on the same thread.
#[no_mangle]
pub extern "C" fn tryvox_last_error_code() -> *const c_char {
    boundary::last_code()
}

/// The last HTTP status this thread's last fallible call saw (e.g. 204, 404), or 0 if no
/// response arrived (bad input, network failure, timeout before an answer).
#[no_mangle]
pub extern "C" fn tryvox_last_http_status() -> c_int {
    boundary::last_http_status()
}

/// A short static description of a status, e.g. "call not found". Unknown numbers give
/// "unknown status". Never NULL; never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn tryvox_status_str(status: c_int) -> *const c_char {
    usize::try_from(status)
        .ok()
        .and_then(|i| STATUS_TEXT.get(i))
        .map_or(c"unknown status".as_ptr(), |text| text.as_ptr())
}

/// The library's version, e.g. "0.1.0". Static; never NULL; never free it.
#[no_mangle]
pub extern "C" fn tryvox_version() -> *const c_char {
    const V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}
