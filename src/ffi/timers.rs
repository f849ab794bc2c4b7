//! Scheduled hangups: `tryvox_hangup_after` and its handle, `tryvox_timer`.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use super::boundary::{self, CallId};
use super::client::tryvox_client;
use super::hangup::{deliver, tryvox_hangup_callback};

/// A scheduled hangup, from `tryvox_hangup_after`. Opaque; release with
/// `tryvox_timer_free`. Safe to use from any thread, also after its client was freed.
pub struct tryvox_timer(tryvox_core::ScheduledHangup);

/// Schedules a hangup of `call_uuid` after `delay_ms` milliseconds (a maximum call
/// duration reached, a prepaid balance run out) and returns at once.
///
/// Pending hangups cost no thread each: one timer thread per client holds them all (it
/// starts with the first and exits 5 s after the last). When the time comes, the hangup
/// runs exactly as a `tryvox_hangup_async` of it would (same rules, same worker threads),
/// and `callback` runs exactly once with the outcome, unless `tryvox_timer_cancel`
/// returned TRYVOX_OK first. If the client is freed while the hangup is pending,
/// nothing is sent and `callback` runs once, during `tryvox_client_free`, with
/// TRYVOX_BUSY.
///
/// `timer_out` may be NULL (the hangup cannot then be cancelled); otherwise it receives a
/// handle the caller owns and releases with `tryvox_timer_free`. It is written just before
/// this returns, and with a short delay the callback may already have run by then: keep
/// `*timer_out` valid until the call returns. `call_uuid` is copied.
/// Returns TRYVOX_OK when scheduled; TRYVOX_INVALID_ARGUMENT for a NULL client or
/// callback or a bad id (nothing scheduled, `*timer_out` set to NULL); TRYVOX_BUSY while
/// the client is being freed or when no timer thread can start. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup_after(
    client: *mut tryvox_client,
    call_uuid: *const c_char,
    delay_ms: u32,
    callback: tryvox_hangup_callback,
    user_data: *mut c_void,
    timer_out: *mut *mut tryvox_timer,
) -> c_int {
    if !timer_out.is_null() {
        // SAFETY: a writable pointer by the contract.
        unsafe { timer_out.write(std::ptr::null_mut()) };
    }
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        let call_uuid = unsafe { boundary::str_arg("call_uuid", call_uuid) }?;
        let done = deliver(callback, user_data)?;
        let handle = client.0.hangup_after(
            CallId::new(call_uuid),
            Duration::from_millis(delay_ms.into()),
            done,
        )?;
        if !timer_out.is_null() {
            // SAFETY: as above.
            unsafe { timer_out.write(Box::into_raw(Box::new(tryvox_timer(handle)))) };
        }
        Ok(0)
    })
}

/// Cancels a scheduled hangup. Returns TRYVOX_OK when it was cancelled before it fired:
/// nothing is sent and its callback never runs. Returns TRYVOX_BUSY when it is too late
/// (the hangup is firing or fired, or its client was freed): its callback runs, or ran,
/// exactly once. TRYVOX_INVALID_ARGUMENT for NULL. A second cancel returns TRYVOX_BUSY.
/// Cancel and firing never both win. Thread-safe; the handle stays valid until
/// `tryvox_timer_free`.
#[no_mangle]
pub unsafe extern "C" fn tryvox_timer_cancel(timer: *mut tryvox_timer) -> c_int {
    boundary::status(|| {
        // SAFETY: a handle from tryvox_hangup_after, or NULL (refused).
        let timer = unsafe { boundary::obj("timer", timer) }?;
        if timer.0.cancel() {
            Ok(0)
        } else {
            Err(tryvox_core::Error::new(
                tryvox_core::Status::Busy,
                "too late to cancel: the hangup fired (or its client was freed); its callback runs once",
            ))
        }
    })
}

/// Releases a timer handle. It does not cancel the hangup (call `tryvox_timer_cancel`
/// first for that). NULL is a no-op. Valid before or after the client is freed.
#[no_mangle]
pub unsafe extern "C" fn tryvox_timer_free(timer: *mut tryvox_timer) {
    if timer.is_null() {
        return;
    }
    boundary::infallible(|| {
        // SAFETY: a handle from tryvox_hangup_after, freed once.
        drop(unsafe { Box::from_raw(timer) });
    });
}
