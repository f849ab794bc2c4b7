//! One hangup: blocking (`tryvox_hangup`) or queued (`tryvox_hangup_async`), and the
//! delivery of an async or scheduled outcome to its C callback.

use std::ffi::{c_char, c_int, c_void};

use tryvox_core::Error;

use super::boundary::{self, invalid, CallId};
use super::client::tryvox_client;

/// Receives the outcome of one `tryvox_hangup_async`.
///
/// Runs exactly once per accepted request, on a thread the library owns. `call_uuid` is
/// the id that was passed in; `status` is a tryvox_status value; `http_status` is the last
/// HTTP status seen (0 if no response); `message` is "" on success, else a description.
/// The strings are valid only during the callback: copy what you keep. The callback may
/// call any library function except `tryvox_client_free` on the same client (sync, async
/// and bulk included: callbacks never run on the engine's thread); it should return
/// quickly: the outcomes that complete together are delivered in order on one of the
/// client's (at most 64) callback threads, so a slow callback delays those behind it.
pub type tryvox_hangup_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        call_uuid: *const c_char,
        status: c_int,
        http_status: c_int,
        message: *const c_char,
    ),
>;

/// Hangs up call `call_uuid`: sends `DELETE {base}/v1/voice/accounts/{auth_id}/calls/{call_uuid}`
/// with the key as a Bearer token. Blocks until an outcome or the deadline (the total
/// timeout, retries included): do not call it on a media or event-loop thread; use
/// `tryvox_hangup_async` there.
///
/// `call_uuid` must be 1 to 128 characters from `A-Z a-z 0-9 - _ . ~`, not `.` or `..`;
/// anything else is TRYVOX_INVALID_ARGUMENT and nothing is sent. It is borrowed for the
/// call only.
///
/// Retries (up to max_retries, within the deadline): a connection that failed before any
/// response, 429 (waiting Retry-After if it fits, else TRYVOX_RATE_LIMITED at once), and
/// 500/502/503/504 with backoff and jitter. Nothing else. A wait "fits" when the wait and
/// a useful attempt after it (as long as the failed attempt took, 100 ms to 1 s) end
/// before the deadline; otherwise the failure in hand is returned at once, and its message
/// says why no retry was made.
///
/// Returns TRYVOX_OK when the call was ended, TRYVOX_NOT_FOUND / TRYVOX_ALREADY_ENDED
/// when there was nothing to end, or another tryvox_status; the thread's last error,
/// server code and HTTP status describe it. Thread-safe: any number of threads may hang
/// up on one client at once, sharing its connections.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup(
    client: *mut tryvox_client,
    call_uuid: *const c_char,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        let call_uuid = unsafe { boundary::str_arg("call_uuid", call_uuid) }?;
        client.0.hangup(call_uuid)
    })
}

/// Queues a hangup of `call_uuid` and returns at once; the caller's thread never blocks
/// on the network (safe on a media or event-loop thread).
///
/// Returns TRYVOX_OK when queued: `callback` then runs exactly once, on a library thread,
/// with the outcome (see tryvox_hangup_callback). Any other return means the request was
/// refused and the callback will never run: TRYVOX_INVALID_ARGUMENT for a NULL client or
/// callback or an invalid id; TRYVOX_BUSY when the client is being freed (a callback
/// running inside `tryvox_client_free` cannot queue more work on its client) or the
/// engine's thread could not be started.
/// `call_uuid` is copied; `user_data` is passed through untouched. The hangup follows
/// the same validation, retry and deadline rules as `tryvox_hangup`. The caller's thread
/// only validates and enqueues (a lock and a push, about a microsecond); the client's
/// engine, one event-loop thread, runs up to 1,024 async hangups at once (more wait in
/// order), each on its own keep-alive connection; a retry's wait holds no connection.
/// The engine and callback threads start on demand and exit after 5 s without work: an
/// idle client holds none. `tryvox_client_free` lets every queued hangup start at once,
/// waits for the last (so it takes one deadline, not the queue drained in turns), and
/// delivers every callback. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup_async(
    client: *mut tryvox_client,
    call_uuid: *const c_char,
    callback: tryvox_hangup_callback,
    user_data: *mut c_void,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        let call_uuid = unsafe { boundary::str_arg("call_uuid", call_uuid) }?;
        let done = deliver(callback, user_data)?;
        // The id is copied once, as the C string the callback will be handed back.
        client.0.hangup_async(CallId::new(call_uuid), done)?;
        Ok(0)
    })
}

/// The one way an async or scheduled outcome reaches C: `callback` with `user_data`,
/// the caller's id as it was copied, and the outcome as (status, HTTP status, message).
pub(super) fn deliver(
    callback: tryvox_hangup_callback,
    user_data: *mut c_void,
) -> Result<impl FnOnce(CallId, tryvox_core::HangupResult) + Send + 'static, Error> {
    let cb = callback.ok_or_else(|| invalid("callback is NULL"))?;
    let user_data = user_data as usize; // passed through untouched; the caller owns it
    Ok(move |id: CallId, result: tryvox_core::HangupResult| {
        let (status, http, message) = boundary::outcome(&result);
        let message = boundary::c_string(message);
        // SAFETY: the caller's callback, with strings valid for its duration.
        unsafe {
            cb(
                user_data as *mut c_void,
                id.as_c_str().as_ptr(),
                status,
                http,
                message.as_ptr(),
            )
        };
    })
}
