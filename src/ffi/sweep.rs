//! Sweeps: `tryvox_hangup_all` (the live calls, listed), `tryvox_hangup_each` (given ids,
//! steered as a sweep) and `tryvox_sweep_stop`; the caller's `tryvox_sweep`, read and
//! written only where it fits in its `size`.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use tryvox_core::Error;

use super::boundary::{self, invalid};
use super::client::tryvox_client;
use super::hangup::tryvox_hangup_callback;

/// Progress of a `tryvox_hangup_all` or `tryvox_hangup_each`: called on the calling
/// thread at least every 50 ms while it runs (a progress bar can redraw from it), after
/// each listing and at the end, with the caller's own `sweep`, whose counts are up to
/// date. It must not free the client; it may call any other function.
pub type tryvox_sweep_progress_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, sweep: *const tryvox_sweep)>;

/// A live call a sweep's listing found (see `tryvox_sweep.on_listed`): called on the
/// calling thread; `call_uuid` is valid only during the call.
pub type tryvox_sweep_listed_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, call_uuid: *const c_char)>;

/// What `tryvox_hangup_all` ends and what it did. Size-versioned: set `size` to
/// `sizeof(tryvox_sweep)` and zero the rest (`memset`, or `= {0}` then set `size`); later
/// versions add fields only after the last one here. The inputs are read, the counts
/// written, only where they fit in `size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tryvox_sweep {
    /// In: `sizeof(tryvox_sweep)`.
    pub size: usize,
    /// In: only calls from this number (e.g. "+14155551234"); NULL for any. Copied.
    pub from: *const c_char,
    /// In: only calls to this number; NULL for any.
    pub to: *const c_char,
    /// In: "inbound" or "outbound"; NULL for any.
    pub direction: *const c_char,
    /// In: hangups in flight at once (0 means 32; at most 1024).
    pub max_parallel: u32,
    /// In: the sweep's deadline in milliseconds (0 means 60000). Every request of the
    /// sweep (listing pages and hangups) ends by it, whatever the client's timeout; no
    /// hangup starts after it.
    pub timeout_ms: u32,
    /// In: optional progress callback, and its `user_data`, passed through untouched.
    pub progress: tryvox_sweep_progress_callback,
    pub user_data: *mut c_void,
    /// Out: calls this sweep hung up.
    pub ended: u64,
    /// Out: calls that had ended on their own when their hangup arrived (404).
    pub already_gone: u64,
    /// Out: calls whose hangup failed (not tried again by this sweep).
    pub failed: u64,
    /// Out: live calls left (0 on success).
    pub still_live: u64,
    /// Out: complete listings of the live calls made.
    pub listings: u64,
    /// In: called on the calling thread as each call's hangup settles, once per call, with
    /// `user_data` (see tryvox_hangup_callback for the arguments): ended (TRYVOX_OK and
    /// the HTTP status, 204), already gone (TRYVOX_NOT_FOUND or TRYVOX_ALREADY_ENDED, 404)
    /// or failed. A call the server lists again after its hangup succeeded, and whose
    /// next hangup fails, is reported again with that failure: the counts hold each call
    /// under its latest outcome. A sweep reports the calls it sent a hangup for; `tryvox_hangup_each`
    /// reports every id, those never sent too (TRYVOX_BUSY after `tryvox_sweep_stop`,
    /// TRYVOX_TIMEOUT after the deadline; HTTP status 0; their message begins "not
    /// sent"). NULL for none.
    pub on_call: tryvox_hangup_callback,
    /// In: called on the calling thread once per live call a listing finds for the first
    /// time in this sweep, before its hangup starts (with `dry_run`, instead of it), with
    /// `user_data`. NULL for none.
    pub on_listed: tryvox_sweep_listed_callback,
    /// In: hangups started per second at most (0: no limit). A retry is not a new
    /// hangup: retries are bounded by the parallelism, which counts a hangup waiting out
    /// a `Retry-After` as in flight.
    pub max_rate: u32,
    /// In: nonzero: `tryvox_hangup_all` lists the live calls, reports each to `on_listed`
    /// and ends none: TRYVOX_OK, with `still_live` and `found` the number found. It lists
    /// again until a listing finds no call it had not seen (5 listings at most): pages
    /// shift while calls change state under a listing.
    pub dry_run: u32,
    /// In: nonzero asks the sweep to start no more hangups. Set it with
    /// `tryvox_sweep_stop` (async-signal-safe) while the sweep runs; zero before a sweep.
    pub stop: u32,
    /// Out: 1 while a listing is in progress, else 0.
    pub listing: u32,
    /// Out: distinct live calls found so far (for `tryvox_hangup_each`, the number of
    /// ids). It never decreases: the total of a progress bar.
    pub found: u64,
    /// Out: answers 429 (Too Many Requests) the hangups got, retried ones included.
    pub rate_limited: u64,
    /// Out: times a 429 halved the parallelism. The sweep lowers `max_parallel` by half
    /// on a 429 (once per round trip) and raises it by one after as many answers as it
    /// allows again (additive increase, multiplicative decrease), never above it.
    pub backoffs: u64,
    /// Out: hangups in flight at once now.
    pub parallel: u64,
}

/// Ends every live call (`ringing` or `in-progress`) of the client's account, within its
/// tenant when one is set, or those `sweep`'s filters select: lists them page by page (100
/// a page), hangs them up as `tryvox_hangup_many` does, and lists again until a listing
/// comes back empty. Listing requests follow the retry and deadline rules of
/// `tryvox_hangup`, as each hangup does, and every one of them also ends by the sweep's
/// deadline (`timeout_ms`). Calls that end on their own meanwhile
/// are counted as gone, not as failures; a call still answered 429 after its retries is
/// tried again in up to 3 later rounds before it counts as failed. Bounded whatever the server says: a round keeps
/// at most 100,000 listed ids, pages that only repeat known calls end a listing, and a
/// round that settles no call waits (50 ms, doubling to 1 s) before listing again.
/// Blocks until done: not for a media thread.
///
/// `sweep` may be NULL (every live call, the defaults); otherwise see tryvox_sweep. Its
/// strings are borrowed for the call. While it runs, the calling thread hears of each
/// call found (`on_listed`) and settled (`on_call`, with its HTTP status) and of the
/// counts at least every 50 ms (`progress`); `max_rate` paces the hangups; a 429 halves
/// the parallelism (`backoffs`); `dry_run` lists and ends nothing; `tryvox_sweep_stop`
/// (from a signal handler or another thread) stops it starting hangups.
///
/// Returns TRYVOX_OK only when a final listing found no live call (a dry run: when its
/// listing completed). TRYVOX_TIMEOUT when the sweep's deadline passed first;
/// TRYVOX_BUSY, once the hangups in flight are in, when `tryvox_sweep_stop` stopped it. The status of a listing's failure. When only calls
/// that could not be ended are left, one of their statuses, chosen by a fixed order so
/// that the same failures give the same status on every run: TRYVOX_UNAUTHORIZED,
/// TRYVOX_FORBIDDEN, TRYVOX_TLS_ERROR, TRYVOX_PROTOCOL_ERROR, TRYVOX_INVALID_ARGUMENT,
/// TRYVOX_INTERNAL_ERROR, TRYVOX_SERVER_ERROR, TRYVOX_RATE_LIMITED, TRYVOX_NETWORK_ERROR,
/// TRYVOX_TIMEOUT, TRYVOX_BUSY (what no later sweep cures and the caller must act on
/// first, then the passing failures from the most to the least telling); the last error,
/// HTTP status and code are those of the smallest call id with that status, and the
/// message counts the failures by status. TRYVOX_INVALID_ARGUMENT,
/// with nothing sent, for a NULL client, a `size` too small for the inputs or a bad
/// filter; TRYVOX_BUSY from a callback while the client is being freed. The counts in
/// `sweep` are right in every case, and the last error says what happened.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup_all(
    client: *mut tryvox_client,
    sweep: *mut tryvox_sweep,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        // SAFETY: the caller's struct, at least its `size` bytes.
        let (opts, mut observer) = unsafe { CSweep::read(sweep, true) }?;
        let (report, result) = client.0.hangup_all_observed(&opts, &mut observer);
        observer.write(&report);
        result.map(|()| 0)
    })
}

/// Hangs up exactly the `count` ids of `call_uuids` (borrowed for the call), steered as
/// a sweep is: `sweep`'s `max_parallel` (lowered on 429 and raised again), `max_rate`,
/// `timeout_ms` (0 here means no deadline of its own: each hangup has the client's
/// timeout; no hangup starts after a nonzero one), `progress`, `on_call` (every id, as it
/// settles: the way to see outcomes and HTTP statuses while a large batch runs) and
/// `stop`; `from`, `to`, `direction` and `dry_run` must be unset. `sweep` may be NULL
/// (the defaults, nothing reported). Blocks until done: not for a media thread.
///
/// `statuses_out` and `http_statuses_out`, each NULL or `count` ints, receive the outcome
/// of `call_uuids[i]` at index i: its status, and the last HTTP status seen (0 if none).
/// An id never sent (stopped, or the deadline passed first) has TRYVOX_BUSY or
/// TRYVOX_TIMEOUT and HTTP status 0. The counts in `sweep`: `ended`, `already_gone`,
/// `failed` (the never-sent included), `still_live` (never sent), `found` (`count`),
/// `rate_limited`, `backoffs`, `parallel`.
///
/// Returns TRYVOX_OK once every entry is written (outcomes are in the arrays, not in the
/// return value). TRYVOX_INVALID_ARGUMENT, with nothing sent and nothing written, for a
/// NULL client, `call_uuids` NULL with `count` > 0, an invalid id (the last error names
/// the first bad index), a `size` too small, or a filter or `dry_run` set; TRYVOX_BUSY,
/// nothing sent, from a callback while the client is being freed. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_hangup_each(
    client: *mut tryvox_client,
    call_uuids: *const *const c_char,
    count: usize,
    statuses_out: *mut c_int,
    http_statuses_out: *mut c_int,
    sweep: *mut tryvox_sweep,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked here and by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        // SAFETY: the caller's struct, at least its `size` bytes.
        let (opts, mut observer) = unsafe { CSweep::read(sweep, false) }?;
        if count > 0 && call_uuids.is_null() {
            return Err(invalid("call_uuids is NULL"));
        }
        let ptrs: &[*const c_char] = if count == 0 {
            &[]
        } else {
            // SAFETY: the caller promises `count` readable pointers.
            unsafe { std::slice::from_raw_parts(call_uuids, count) }
        };
        let ids = ptrs
            .iter()
            .enumerate()
            // SAFETY: NUL-terminated strings by the contract, NULL-checked by str_arg.
            .map(|(i, &p)| unsafe { boundary::str_arg(&format!("call_uuids[{i}]"), p) })
            .collect::<Result<Vec<&str>, Error>>()?;
        let (report, results) = client.0.hangup_each(&ids, &opts, &mut observer);
        let results = results?; // refused: nothing sent, nothing written
        observer.write(&report);
        for (out, pick) in [(statuses_out, 0), (http_statuses_out, 1)] {
            if out.is_null() || count == 0 {
                continue;
            }
            // SAFETY: the caller promises `count` writable ints.
            let out = unsafe { std::slice::from_raw_parts_mut(out, count) };
            for (slot, r) in out.iter_mut().zip(&results) {
                let (status, http, _) = boundary::outcome(r);
                *slot = if pick == 0 { status } else { http };
            }
        }
        Ok(0)
    })
}

/// Asks the `tryvox_hangup_all` or `tryvox_hangup_each` running with `sweep` to start no
/// more hangups: it sees the request within about 50 ms; hangups in flight finish and are
/// reported (`on_call`, the counts), then it returns (a sweep: TRYVOX_BUSY, "the sweep
/// was stopped"). Async-signal-safe (an atomic store: no lock, no allocation, the
/// thread's last error untouched): call it from a SIGINT handler or any thread. Setting
/// `stop` before a sweep starts makes it start none. Returns TRYVOX_OK, or
/// TRYVOX_INVALID_ARGUMENT when `sweep` is NULL, misaligned, or its `size` does not
/// reach `stop`.
#[no_mangle]
pub unsafe extern "C" fn tryvox_sweep_stop(sweep: *mut tryvox_sweep) -> c_int {
    match stop_flag(sweep) {
        Some(flag) => {
            flag.store(1, std::sync::atomic::Ordering::Relaxed);
            0
        }
        None => tryvox_core::Status::InvalidArgument.code(),
    }
}

/// The caller's `stop` field, if `sweep` has one.
fn stop_flag<'a>(sweep: *mut tryvox_sweep) -> Option<&'a std::sync::atomic::AtomicU32> {
    if sweep.is_null() || sweep as usize % std::mem::align_of::<u64>() != 0 {
        return None;
    }
    // SAFETY: `sweep` points to at least its `size` bytes, `size` first.
    let size = unsafe { std::ptr::addr_of!((*sweep).size).read() };
    if size < std::mem::offset_of!(tryvox_sweep, stop) + 4 {
        return None;
    }
    // SAFETY: an aligned u32 inside the caller's struct, only ever accessed atomically
    // while a sweep runs (the library reads it, `tryvox_sweep_stop` writes it).
    Some(unsafe { std::sync::atomic::AtomicU32::from_ptr(std::ptr::addr_of_mut!((*sweep).stop)) })
}

/// A caller's `tryvox_sweep`: its inputs read, its counts written and its callbacks
/// called, each field only where it fits in the caller's `size`.
struct CSweep {
    sweep: *mut tryvox_sweep,
    size: usize,
    progress: tryvox_sweep_progress_callback,
    on_call: tryvox_hangup_callback,
    on_listed: tryvox_sweep_listed_callback,
    user_data: *mut c_void,
}

impl CSweep {
    /// Reads the inputs (`filters`: whether `from`, `to`, `direction`, `dry_run` may be
    /// set). NULL: the defaults.
    ///
    /// # Safety
    /// `sweep` is NULL or points to at least its `size` bytes.
    unsafe fn read(
        sweep: *mut tryvox_sweep,
        filters: bool,
    ) -> Result<(tryvox_core::Sweep, CSweep), Error> {
        let mut c = CSweep {
            sweep,
            size: 0,
            progress: None,
            on_call: None,
            on_listed: None,
            user_data: std::ptr::null_mut(),
        };
        let mut opts = tryvox_core::Sweep::default();
        if sweep.is_null() {
            return Ok((opts, c));
        }
        // SAFETY: `size` is the first field.
        c.size = unsafe { std::ptr::addr_of!((*sweep).size).read_unaligned() };
        if c.size < std::mem::offset_of!(tryvox_sweep, ended) {
            return Err(invalid(
                "sweep->size is too small: set it to sizeof(tryvox_sweep)",
            ));
        }
        macro_rules! field {
            ($f:ident, $default:expr) => {
                if std::mem::offset_of!(tryvox_sweep, $f) + std::mem::size_of_val(&$default)
                    <= c.size
                {
                    // SAFETY: within the caller's `size` bytes.
                    unsafe { std::ptr::addr_of!((*sweep).$f).read_unaligned() }
                } else {
                    $default
                }
            };
        }
        let text = |what: &str, p: *const c_char| -> Result<Option<String>, Error> {
            if p.is_null() {
                return Ok(None);
            }
            // SAFETY: a NUL-terminated string by the contract.
            Ok(Some(unsafe { boundary::str_arg(what, p) }?.to_owned()))
        };
        opts.from = text("sweep->from", field!(from, std::ptr::null::<c_char>()))?;
        opts.to = text("sweep->to", field!(to, std::ptr::null::<c_char>()))?;
        opts.direction = text(
            "sweep->direction",
            field!(direction, std::ptr::null::<c_char>()),
        )?;
        opts.max_parallel = field!(max_parallel, 0u32) as usize;
        let timeout_ms = field!(timeout_ms, 0u32);
        opts.timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()));
        c.progress = field!(progress, None as tryvox_sweep_progress_callback);
        c.user_data = field!(user_data, std::ptr::null_mut::<c_void>());
        c.on_call = field!(on_call, None as tryvox_hangup_callback);
        c.on_listed = field!(on_listed, None as tryvox_sweep_listed_callback);
        opts.max_rate = field!(max_rate, 0u32);
        opts.dry_run = field!(dry_run, 0u32) != 0;
        if !filters
            && (opts.from.is_some()
                || opts.to.is_some()
                || opts.direction.is_some()
                || opts.dry_run)
        {
            return Err(invalid(
                "sweep->from, to, direction and dry_run select calls to list: leave them unset for given ids; nothing was sent",
            ));
        }
        Ok((opts, c))
    }

    /// Writes the counts that fit in the caller's struct.
    fn write(&self, r: &tryvox_core::SweepReport) {
        if self.sweep.is_null() {
            return;
        }
        let fields = [
            (std::mem::offset_of!(tryvox_sweep, ended), r.ended),
            (
                std::mem::offset_of!(tryvox_sweep, already_gone),
                r.already_gone,
            ),
            (std::mem::offset_of!(tryvox_sweep, failed), r.failed),
            (std::mem::offset_of!(tryvox_sweep, still_live), r.still_live),
            (std::mem::offset_of!(tryvox_sweep, listings), r.listings),
            (std::mem::offset_of!(tryvox_sweep, found), r.found),
            (
                std::mem::offset_of!(tryvox_sweep, rate_limited),
                r.rate_limited,
            ),
            (std::mem::offset_of!(tryvox_sweep, backoffs), r.backoffs),
            (std::mem::offset_of!(tryvox_sweep, parallel), r.parallel),
        ];
        let base = self.sweep.cast::<u8>();
        for (offset, value) in fields {
            if offset + 8 <= self.size {
                // SAFETY: within the caller's `size` bytes.
                unsafe { base.add(offset).cast::<u64>().write_unaligned(value) };
            }
        }
        let listing = std::mem::offset_of!(tryvox_sweep, listing);
        if listing + 4 <= self.size {
            // SAFETY: within the caller's `size` bytes.
            unsafe {
                base.add(listing)
                    .cast::<u32>()
                    .write_unaligned(u32::from(r.listing))
            };
        }
    }
}

impl tryvox_core::SweepObserver for CSweep {
    fn progress(&mut self, report: &tryvox_core::SweepReport) {
        self.write(report);
        if let Some(cb) = self.progress {
            // SAFETY: the caller's callback with its own struct.
            unsafe { cb(self.user_data, self.sweep) };
        }
    }

    fn listed(&mut self, call_uuid: &str) {
        if let Some(cb) = self.on_listed {
            let id = boundary::c_string(call_uuid);
            // SAFETY: the caller's callback; the string lives through the call.
            unsafe { cb(self.user_data, id.as_ptr()) };
        }
    }

    fn settled(&mut self, call_uuid: &str, result: &tryvox_core::HangupResult) {
        if let Some(cb) = self.on_call {
            let (status, http, message) = boundary::outcome(result);
            let id = boundary::c_string(call_uuid);
            let message = boundary::c_string(message);
            // SAFETY: the caller's callback; the strings live through the call.
            unsafe { cb(self.user_data, id.as_ptr(), status, http, message.as_ptr()) };
        }
    }

    fn stop_requested(&mut self) -> bool {
        stop_flag(self.sweep).is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed) != 0)
    }
}
