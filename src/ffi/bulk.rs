//! The blocking bulk hangup of given ids: `tryvox_hangup_many`.

use std::ffi::{c_char, c_int};

use tryvox_core::Error;

use super::boundary::{self, invalid};
use super::client::tryvox_client;

/// Hangs up `count` calls, at most `max_parallel` at once (0 means 32; values above 1024
/// are capped at 1024), and blocks until all are done. This is the emergency-shutdown
/// path. The batch runs on the client's engine (its event-loop thread) with a budget of
/// its own, beside queued async hangups, never behind them; the calling thread only
/// waits. Each hangup in flight holds one connection, so parallelism is also capped at
/// half the file descriptors the process has free (a hangup that finds the process's
/// descriptor budget full waits for one, until its deadline: see
/// `tryvox_client_new_with_options`); a hangup waiting to retry holds none and its slot goes to the next id.
///
/// `call_uuids` points to `count` NUL-terminated ids (borrowed for the call);
/// `statuses_out` to `count` ints, where the outcome of `call_uuids[i]` is written to
/// `statuses_out[i]`. Each hangup follows the rules of `tryvox_hangup`, with its own
/// deadline.
///
/// Returns TRYVOX_OK once every entry is written (individual failures are in
/// `statuses_out`, not in the return value). Returns TRYVOX_INVALID_ARGUMENT, with nothing
/// sent and `statuses_out` untouched, when the client, `call_uuids` or `statuses_out` is
/// NULL (both may be NULL when `count` is 0) or any id is NULL or invalid (the last error
/// names the first bad index). Returns TRYVOX_BUSY, with nothing sent and `statuses_out`
/// untouched, when called from a callback while the client is being freed (as
/// `tryvox_hangup_async` is refused then). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup_many(
    client: *mut tryvox_client,
    call_uuids: *const *const c_char,
    count: usize,
    statuses_out: *mut c_int,
    max_parallel: u32,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked here and by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        if count == 0 {
            return Ok(0);
        }
        if call_uuids.is_null() {
            return Err(invalid("call_uuids is NULL"));
        }
        if statuses_out.is_null() {
            return Err(invalid("statuses_out is NULL"));
        }
        // SAFETY: the caller promises `count` readable pointers and `count` writable ints.
        let ptrs = unsafe { std::slice::from_raw_parts(call_uuids, count) };
        let ids = ptrs
            .iter()
            .enumerate()
            .map(|(i, &p)| unsafe { boundary::str_arg(&format!("call_uuids[{i}]"), p) })
            .collect::<Result<Vec<&str>, Error>>()?;
        let results = client.0.hangup_many(&ids, max_parallel as usize)?;
        // SAFETY: as above; written only after every hangup is done.
        let out = unsafe { std::slice::from_raw_parts_mut(statuses_out, count) };
        for (slot, r) in out.iter_mut().zip(&results) {
            *slot = boundary::outcome(r).0;
        }
        Ok(0)
    })
}
