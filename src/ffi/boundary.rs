//! The one panic boundary of the C ABI, and the per-thread last error it records.
//!
//! Every exported function that does work is `boundary::status(|| ...)`,
//! `boundary::pointer(|| ...)` or `boundary::infallible(|| ...)` around safe core calls: a
//! `Result` becomes a status number (through [`outcome`], the one result-to-status
//! conversion) and the thread's last error; a panic becomes `TRYVOX_INTERNAL_ERROR` with
//! the core's one panic message and never unwinds into C. The getters
//! (`tryvox_last_error*`, `tryvox_status_str`, `tryvox_version`) are not wrapped: they
//! only index a static table or read this thread's slot with `try_with`/`try_borrow`,
//! which cannot panic, and they have no status to return.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use tryvox_core::{Error, HangupResult, Status};

struct LastError {
    message: CString,
    code: CString,
    http_status: c_int,
}

thread_local! {
    static LAST: RefCell<LastError> = RefCell::new(LastError {
        message: CString::default(),
        code: CString::default(),
        http_status: 0,
    });
}

/// Text for C: interior NULs (impossible from our own messages) are dropped, not fatal.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn record(message: &str, code: &str, http_status: u16) {
    // `try_with`: during thread teardown the slot may be gone; losing the text then is
    // better than aborting the host.
    let _ = LAST.try_with(|cell| {
        if let Ok(mut last) = cell.try_borrow_mut() {
            last.message = c_string(message);
            last.code = c_string(code);
            last.http_status = c_int::from(http_status);
        }
    });
}

pub(crate) fn record_ok(http_status: u16) {
    record("", "", http_status);
}

pub(crate) fn record_error(e: &Error) {
    record(e.message(), e.server_code(), e.http_status());
}

/// An argument the C caller got wrong: TRYVOX_INVALID_ARGUMENT, nothing sent.
pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArgument, message)
}

/// The one conversion of an outcome for C: (status number, HTTP status, message).
pub(crate) fn outcome(r: &HangupResult) -> (c_int, c_int, &str) {
    match r {
        Ok(http) => (Status::Ok.code(), c_int::from(*http), ""),
        Err(e) => (e.status().code(), c_int::from(e.http_status()), e.message()),
    }
}

/// Runs `f` behind the panic boundary; its error (or `Ok`'s HTTP status) becomes the
/// thread's last error, and the status number is returned.
pub(crate) fn status(f: impl FnOnce() -> HangupResult) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::caught_panic()));
    match &r {
        Ok(http) => record_ok(*http),
        Err(e) => record_error(e),
    }
    outcome(&r).0
}

/// As [`status`] for constructors: NULL on error.
pub(crate) fn pointer<T>(f: impl FnOnce() -> Result<*mut T, Error>) -> *mut T {
    let mut out = std::ptr::null_mut();
    status(|| {
        out = f()?;
        Ok(0)
    });
    out
}

/// Runs `f` behind the boundary for functions that cannot fail (free functions).
pub(crate) fn infallible(f: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Borrows a C string argument as UTF-8 text; NULL or invalid UTF-8 is INVALID_ARGUMENT.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the returned lifetime.
pub(crate) unsafe fn str_arg<'a>(what: &str, p: *const c_char) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Borrows a non-NULL object pointer.
///
/// # Safety
/// `p` is NULL or a live pointer the library handed out.
pub(crate) unsafe fn obj<'a, T>(what: &str, p: *const T) -> Result<&'a T, Error> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// As [`obj`], mutably.
///
/// # Safety
/// `p` is NULL or a live pointer the library handed out, used by one thread at a time.
pub(crate) unsafe fn obj_mut<'a, T>(what: &str, p: *mut T) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// Reads this thread's last error without any way to panic: a slot already destroyed
/// (thread teardown) or borrowed (impossible: nothing calls out while recording) reads as
/// the empty default.
fn read_last<T>(f: impl FnOnce(&LastError) -> T, default: T) -> T {
    LAST.try_with(|c| c.try_borrow().ok().map(|last| f(&last)))
        .ok()
        .flatten()
        .unwrap_or(default)
}

pub(crate) fn last_message() -> *const c_char {
    read_last(|l| l.message.as_ptr(), c"".as_ptr())
}

pub(crate) fn last_code() -> *const c_char {
    read_last(|l| l.code.as_ptr(), c"".as_ptr())
}

pub(crate) fn last_http_status() -> c_int {
    read_last(|l| l.http_status, 0)
}

/// A call id from C for an async hangup: copied once, into the C string the callback is
/// handed back (no conversion on the way out). The core reads it as `&str` through
/// `AsRef`, a UTF-8 check of at most 128 validated bytes.
pub(crate) struct CallId(CString);

impl CallId {
    pub(crate) fn new(id: &str) -> CallId {
        // A validated id holds no NUL; `c_string` covers the impossible case.
        CallId(CString::new(id).unwrap_or_else(|_| c_string(id)))
    }

    pub(crate) fn as_c_str(&self) -> &CStr {
        &self.0
    }
}

impl AsRef<str> for CallId {
    fn as_ref(&self) -> &str {
        // Built from a `&str`: always UTF-8.
        self.0.to_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_error() {
        let rc = status(|| panic!("deliberate test panic"));
        assert_eq!(rc, Status::InternalError.code());
        let msg = unsafe { CStr::from_ptr(last_message()) }.to_str().unwrap();
        assert!(msg.contains("internal error"), "{msg}");
        let p: *mut u8 = pointer(|| panic!("deliberate test panic"));
        assert!(p.is_null());
        assert_eq!(status(|| Ok(204)), 0);
        assert_eq!(unsafe { CStr::from_ptr(last_message()) }.to_bytes(), b"");
        assert_eq!(last_http_status(), 204);
    }
}
