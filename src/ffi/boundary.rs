//! The one panic boundary every `extern "C"` function goes through, and the per-thread
//! last error it records.
//!
//! Each exported function is `boundary::status(|| ...)` or `boundary::pointer(|| ...)`
//! around safe core calls: a `Result` becomes a status number and the thread's last error;
//! a panic becomes `TRYVOX_INTERNAL_ERROR` and never unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Status};

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

fn panicked() -> Error {
    Error::internal(
        "internal error: a bug in libtryvox was caught at the API boundary; \
         the process and the client are intact (please report it)",
    )
}

/// Runs `f` behind the panic boundary; its error (or `Ok`'s HTTP status) becomes the
/// thread's last error, and the status number is returned.
pub(crate) fn status(f: impl FnOnce() -> Result<u16, Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(http)) => {
            record_ok(http);
            Status::Ok.code()
        }
        Ok(Err(e)) => {
            record_error(&e);
            e.status().code()
        }
        Err(_) => {
            record_error(&panicked());
            Status::InternalError.code()
        }
    }
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
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Borrows a non-NULL object pointer.
///
/// # Safety
/// `p` is NULL or a live pointer the library handed out.
pub(crate) unsafe fn obj<'a, T>(what: &str, p: *const T) -> Result<&'a T, Error> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

/// As [`obj`], mutably.
///
/// # Safety
/// `p` is NULL or a live pointer the library handed out, used by one thread at a time.
pub(crate) unsafe fn obj_mut<'a, T>(what: &str, p: *mut T) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

pub(crate) fn last_message() -> *const c_char {
    LAST.try_with(|c| c.borrow().message.as_ptr())
        .unwrap_or(c"".as_ptr())
}

pub(crate) fn last_code() -> *const c_char {
    LAST.try_with(|c| c.borrow().code.as_ptr())
        .unwrap_or(c"".as_ptr())
}

pub(crate) fn last_http_status() -> c_int {
    LAST.try_with(|c| c.borrow().http_status).unwrap_or(0)
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
