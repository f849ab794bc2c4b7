//! The C ABI (v1). Each function is one conversion around a core call, behind the panic
//! boundary of [`boundary`]. The doc comments here become `include/tryvox.h`.
#![allow(non_camel_case_types)]
// The safety contract of every function (pointers NULL or live, strings NUL-terminated) is
// stated in its C-facing doc comment, which becomes the header; a Rust "# Safety" heading
// there would only add noise for C readers.
#![allow(clippy::missing_safety_doc)]

mod boundary;

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Status};
use crate::options::{LogLevel, Options};

/// Status codes returned by every fallible function (as an `int`). The numbers are part
/// of the ABI and never change meaning; new values may be added after the last one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tryvox_status {
    /// Success: the API answered 2xx (204 No Content: the call is ended).
    TRYVOX_OK = 0,
    /// 404: no such call (`call_not_found`, nested `NOT_FOUND`, or a 404 with no usable
    /// body). A caller who only asks "is the call gone?" treats this like ALREADY_ENDED.
    TRYVOX_NOT_FOUND = 1,
    /// 404 `call_already_ended` (flat or nested form): the call was over already. Also the
    /// outcome when a retry meets a call an earlier, unanswered attempt had ended.
    TRYVOX_ALREADY_ENDED = 2,
    /// A NULL pointer, an empty or malformed id, a key or header value with control
    /// characters, a bad URL, a bad option value. Nothing was sent.
    TRYVOX_INVALID_ARGUMENT = 3,
    /// 401: the API key is missing, wrong or expired.
    TRYVOX_UNAUTHORIZED = 4,
    /// 403: the key may not do this.
    TRYVOX_FORBIDDEN = 5,
    /// 429, and no retry fitted within the deadline.
    TRYVOX_RATE_LIMITED = 6,
    /// 5xx after the retries were spent.
    TRYVOX_SERVER_ERROR = 7,
    /// The deadline passed (connect or total). The call may or may not have been ended.
    TRYVOX_TIMEOUT = 8,
    /// DNS failure, refused or reset connection, proxy failure.
    TRYVOX_NETWORK_ERROR = 9,
    /// Certificate or TLS handshake failure. The key was not sent.
    TRYVOX_TLS_ERROR = 10,
    /// Any other HTTP status (e.g. 400, 418, a redirect), or a response that is not HTTP.
    TRYVOX_PROTOCOL_ERROR = 11,
    /// A bug in the library, caught at the boundary. The host process and the client
    /// live on; please report it.
    TRYVOX_INTERNAL_ERROR = 12,
    /// The library could not take the request, and nothing was sent: the client is being
    /// freed (a callback running inside `tryvox_client_free` asked for more work), or the
    /// library could not start a thread (the process is at its thread or memory limit).
    /// Not a bug; the host may retry later. Added after v1: treat unknown numbers above
    /// 13 as failures too.
    TRYVOX_BUSY = 13,
}

/// A client for one TryVox account: credentials, settings and a connection pool.
/// Opaque. Create with `tryvox_client_new*`, release with `tryvox_client_free`.
/// Safe to use from any number of threads at once.
pub struct tryvox_client(Client);

/// Settings for `tryvox_client_new_with_options`. Opaque plain data for one thread:
/// do not share one options object between threads while setting it.
pub struct tryvox_options(Options);

/// Receives the library's log lines.
///
/// `level` is 0 error, 1 warn, 2 info, 3 debug. `message` is valid only during the call
/// and never contains the API key. The callback runs on whichever thread performs the
/// work (the caller's thread for `tryvox_hangup`, a library thread for async and bulk
/// hangups), possibly on several threads at once: it must be thread-safe and should return
/// quickly. It must not free the client.
pub type tryvox_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: c_int, message: *const c_char)>;

/// Receives the outcome of one `tryvox_hangup_async`.
///
/// Runs exactly once per accepted request, on a thread the library owns. `call_uuid` is
/// the id that was passed in; `status` is a tryvox_status value; `http_status` is the last
/// HTTP status seen (0 if no response); `message` is "" on success, else a description.
/// The strings are valid only during the callback: copy what you keep. The callback may
/// call any library function except `tryvox_client_free` on the same client; it should
/// return quickly, since it occupies one of the client's worker threads.
pub type tryvox_hangup_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        call_uuid: *const c_char,
        status: c_int,
        http_status: c_int,
        message: *const c_char,
    ),
>;

/// Creates a client for account `auth_id` with API key `api_key` and default options:
/// base URL https://api.tryvox.io, 10 s total timeout per hangup, 3 s connect timeout,
/// 2 retries.
///
/// `auth_id` must be 1 to 128 characters from `A-Z a-z 0-9 - _ . ~` (not `.` or `..`);
/// `api_key` 1 to 512 visible ASCII characters (0x21-0x7E). Both are copied: the caller
/// may free them when this returns.
///
/// Returns a new client, owned by the caller and released with `tryvox_client_free`; or
/// NULL on bad input (NULL pointers included), with the thread's last error set.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_client_new(
    auth_id: *const c_char,
    api_key: *const c_char,
) -> *mut tryvox_client {
    // SAFETY: NULL is refused by the callee; options may be NULL.
    unsafe { tryvox_client_new_with_options(auth_id, api_key, std::ptr::null()) }
}

/// As `tryvox_client_new`, with `options` (NULL means the defaults).
///
/// Everything is copied, and files (the CA file) are read now: the caller may free the
/// strings and the options when this returns. A plain `http` base URL to a host that is
/// not loopback is refused here unless `tryvox_options_allow_insecure_http` was set.
///
/// Returns a new client (free with `tryvox_client_free`) or NULL with the thread's last
/// error set. Thread-safe, but `options` must not be modified by another thread during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn tryvox_client_new_with_options(
    auth_id: *const c_char,
    api_key: *const c_char,
    options: *const tryvox_options,
) -> *mut tryvox_client {
    boundary::pointer(|| {
        // SAFETY: C strings and options from the caller, NULL-checked by the helpers.
        let auth_id = unsafe { boundary::str_arg("auth_id", auth_id) }?;
        let api_key = unsafe { boundary::str_arg("api_key", api_key) }
            .map_err(|_| Error::invalid("api_key is NULL or not ASCII"))?;
        let defaults = Options::default();
        let options = match unsafe { options.as_ref() } {
            Some(o) => &o.0,
            None => &defaults,
        };
        let client = Client::with_options(auth_id, api_key, options)?;
        Ok(Box::into_raw(Box::new(tryvox_client(client))))
    })
}

/// Frees a client. NULL is a no-op.
///
/// Waits for the client's queued and running asynchronous hangups to finish (each is
/// bounded by its deadline) and delivers their callbacks before returning; no callback
/// runs after it returns, and no library thread of this client is left running. The API
/// key is wiped from the library's memory. Using the client afterwards is undefined.
/// Must not be called while another thread is still using the client, nor from a callback
/// of the same client.
#[no_mangle]
pub unsafe extern "C" fn tryvox_client_free(client: *mut tryvox_client) {
    if client.is_null() {
        return;
    }
    boundary::infallible(|| {
        // SAFETY: a pointer from tryvox_client_new*, freed once, as the contract says.
        drop(unsafe { Box::from_raw(client) });
    });
}

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
/// running inside `tryvox_client_free` cannot queue more work on its client) or no
/// worker thread could be started.
/// `call_uuid` is copied; `user_data` is passed through untouched. The hangup follows
/// the same validation, retry and deadline rules as `tryvox_hangup`. The client runs at
/// most 64 hangups at once from its worker threads; more are queued in memory.
/// `tryvox_client_free` waits for every queued hangup. Thread-safe.
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
        let cb = callback.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let user_data = user_data as usize; // passed through untouched; the caller owns it
        client.0.hangup_async(call_uuid, move |id, result| {
            let (status, http, message) = match &result {
                Ok(http) => (0, c_int::from(*http), String::new()),
                Err(e) => (
                    e.status().code(),
                    c_int::from(e.http_status()),
                    e.message().to_owned(),
                ),
            };
            let id = boundary::c_string(id);
            let message = boundary::c_string(&message);
            // SAFETY: the caller's callback, with strings valid for its duration.
            unsafe {
                cb(
                    user_data as *mut c_void,
                    id.as_ptr(),
                    status,
                    http,
                    message.as_ptr(),
                )
            };
        })?;
        Ok(0)
    })
}

/// Hangs up `count` calls, at most `max_parallel` at once (0 means 32; values above 65
/// are capped at 65), and blocks until all are done. This is the emergency-shutdown path.
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
/// names the first bad index). Thread-safe.
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
            return Err(Error::invalid("call_uuids is NULL"));
        }
        if statuses_out.is_null() {
            return Err(Error::invalid("statuses_out is NULL"));
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
            *slot = match r {
                Ok(_) => Status::Ok.code(),
                Err(e) => e.status().code(),
            };
        }
        Ok(0)
    })
}

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
    match Status::from_code(status) {
        Some(s) => s.as_cstr().as_ptr(),
        None => c"unknown status".as_ptr(),
    }
}

/// The library's version, e.g. "0.1.0". Static; never NULL; never free it.
#[no_mangle]
pub extern "C" fn tryvox_version() -> *const c_char {
    const V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}

/// Creates an options object with the defaults (see each setter). Owned by the caller:
/// release it with `tryvox_options_free` (it may be freed as soon as a client was built
/// from it). Returns NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn tryvox_options_new() -> *mut tryvox_options {
    boundary::pointer(|| Ok(Box::into_raw(Box::new(tryvox_options(Options::default())))))
}

/// Frees an options object. NULL is a no-op. Clients built from it are unaffected.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_free(options: *mut tryvox_options) {
    if options.is_null() {
        return;
    }
    boundary::infallible(|| {
        // SAFETY: a pointer from tryvox_options_new, freed once.
        drop(unsafe { Box::from_raw(options) });
    });
}

/// Applies `f` to the options behind `o`, behind the boundary.
fn with_options(
    o: *mut tryvox_options,
    f: impl FnOnce(&mut Options) -> Result<(), Error>,
) -> c_int {
    boundary::status(|| {
        // SAFETY: a live options pointer from tryvox_options_new, or NULL (refused).
        let o = unsafe { boundary::obj_mut("options", o) }?;
        f(&mut o.0)?;
        Ok(0)
    })
}

/// Converts a string argument, then applies `f` to the options.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn set_str(
    o: *mut tryvox_options,
    what: &str,
    s: *const c_char,
    f: impl FnOnce(&mut Options, &str) -> Result<(), Error>,
) -> c_int {
    with_options(o, |opts| {
        // SAFETY: per this function's contract.
        let s = unsafe { boundary::str_arg(what, s) }?;
        f(opts, s)
    })
}

/// Sets the API base URL (default "https://api.tryvox.io"): `http` or `https`, a host, an
/// optional port and an optional path prefix; no user info, query or fragment. Plain http
/// is accepted here but refused when the client is built, unless the host is loopback
/// (127.0.0.0/8, ::1, localhost) or `tryvox_options_allow_insecure_http` was set.
/// The string is copied. Returns TRYVOX_OK or TRYVOX_INVALID_ARGUMENT (NULL, bad URL).
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_base_url(
    o: *mut tryvox_options,
    url: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "base URL", url, Options::set_base_url) }
}

/// Sets the total time for one hangup, retries and waits included, in milliseconds
/// (default 10000). 0 is TRYVOX_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_timeout_ms(o: *mut tryvox_options, ms: u32) -> c_int {
    with_options(o, |opts| opts.set_timeout(Duration::from_millis(ms.into())))
}

/// Sets the time allowed to set up one connection (TCP, proxy, TLS), in milliseconds
/// (default 3000; never more than what is left of the total timeout). 0 is
/// TRYVOX_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_connect_timeout_ms(
    o: *mut tryvox_options,
    ms: u32,
) -> c_int {
    with_options(o, |opts| {
        opts.set_connect_timeout(Duration::from_millis(ms.into()))
    })
}

/// Sets how many more attempts a hangup may make after the first (default 2; 0 disables
/// retries; at most 100, above is TRYVOX_INVALID_ARGUMENT). All attempts share the one
/// total timeout.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_max_retries(o: *mut tryvox_options, n: u32) -> c_int {
    with_options(o, |opts| opts.set_max_retries(n))
}

/// Sends `X-Tenant-ID: tenant` with every request. `tenant` must be 1 to 512 visible ASCII
/// characters (0x21-0x7E); it is copied. Returns TRYVOX_OK or TRYVOX_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_tenant_id(
    o: *mut tryvox_options,
    tenant: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "tenant id", tenant, Options::set_tenant_id) }
}

/// Appends `product` (e.g. "my-pbx/2.3") to the library's User-Agent, which becomes
/// "libtryvox/<version> <product>". 1 to 256 printable ASCII characters; copied.
/// Returns TRYVOX_OK or TRYVOX_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_user_agent(
    o: *mut tryvox_options,
    product: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "user agent", product, Options::set_user_agent) }
}

/// Trusts the certificates in the PEM file at `pem_path` instead of the built-in roots
/// (Mozilla's). The path is copied; the file is read by `tryvox_client_new_with_options`,
/// which fails with TRYVOX_INVALID_ARGUMENT if it cannot be read or holds no certificate.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_ca_file(
    o: *mut tryvox_options,
    pem_path: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "CA file path", pem_path, Options::set_ca_file) }
}

/// Sends requests through the HTTP proxy `proxy_url` ("http://host:port"); https
/// requests are tunnelled with CONNECT, so the proxy never sees the key. Environment
/// variables such as HTTPS_PROXY are never consulted. Copied. Returns TRYVOX_OK or
/// TRYVOX_INVALID_ARGUMENT. A proxy that cannot be reached gives TRYVOX_NETWORK_ERROR
/// at hangup time.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_proxy(
    o: *mut tryvox_options,
    proxy_url: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "proxy URL", proxy_url, Options::set_proxy) }
}

/// Non-zero allows a plain `http` base URL to a host that is not loopback (default 0):
/// the API key then crosses the network in clear text. Only for trusted networks.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_allow_insecure_http(
    o: *mut tryvox_options,
    allow: c_int,
) -> c_int {
    with_options(o, |opts| {
        opts.allow_insecure_http(allow != 0);
        Ok(())
    })
}

/// Sends the library's log lines to `cb` with `user_data` (see tryvox_log_callback).
/// NULL `cb` turns logging off (the default). `user_data` is passed through untouched and
/// must stay valid for as long as any client built from these options exists.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_log_callback(
    o: *mut tryvox_options,
    cb: tryvox_log_callback,
    user_data: *mut c_void,
) -> c_int {
    with_options(o, |opts| {
        let user_data = user_data as usize; // passed through untouched; the caller owns it
        opts.set_log_fn(cb.map(|cb| {
            Arc::new(move |level: LogLevel, message: &str| {
                let m = boundary::c_string(message);
                // SAFETY: the caller's callback, with a string valid for its duration.
                unsafe { cb(user_data as *mut c_void, level as c_int, m.as_ptr()) };
            }) as crate::options::LogFn
        }));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_enum_matches_core_status() {
        use tryvox_status::*;
        let pairs = [
            (TRYVOX_OK, Status::Ok),
            (TRYVOX_NOT_FOUND, Status::NotFound),
            (TRYVOX_ALREADY_ENDED, Status::AlreadyEnded),
            (TRYVOX_INVALID_ARGUMENT, Status::InvalidArgument),
            (TRYVOX_UNAUTHORIZED, Status::Unauthorized),
            (TRYVOX_FORBIDDEN, Status::Forbidden),
            (TRYVOX_RATE_LIMITED, Status::RateLimited),
            (TRYVOX_SERVER_ERROR, Status::ServerError),
            (TRYVOX_TIMEOUT, Status::Timeout),
            (TRYVOX_NETWORK_ERROR, Status::NetworkError),
            (TRYVOX_TLS_ERROR, Status::TlsError),
            (TRYVOX_PROTOCOL_ERROR, Status::ProtocolError),
            (TRYVOX_INTERNAL_ERROR, Status::InternalError),
            (TRYVOX_BUSY, Status::Busy),
        ];
        assert_eq!(pairs.len(), Status::ALL.len());
        for (c, s) in pairs {
            assert_eq!(c as i32, s.code());
        }
    }
}
