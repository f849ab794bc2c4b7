//! The options of `tryvox_client_new_with_options`: `tryvox_options_*`, the trust store
//! choice (`tryvox_trust_store`) and the log callback.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use tryvox_core::{Error, LogFn, LogLevel, Options, TrustStore};

use super::boundary::{self, invalid};

/// Settings for `tryvox_client_new_with_options`. Opaque plain data for one thread:
/// do not share one options object between threads while setting it.
pub struct tryvox_options(pub(super) Options);

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
///
/// # Safety
/// `o` is NULL or a live pointer from `tryvox_options_new`, used by one thread at a time.
unsafe fn with_options(
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
    let set = |opts: &mut Options| {
        // SAFETY: per this function's contract.
        let s = unsafe { boundary::str_arg(what, s) }?;
        f(opts, s)
    };
    // SAFETY: per this function's contract.
    unsafe { with_options(o, set) }
}

/// Sets the API base URL (default "https://api.tryvox.io"): `http` or `https`, a host, an
/// optional port and an optional path prefix; no user info, query or fragment. Plain http
/// is accepted here but refused when the client is built, unless the host is loopback
/// (127.0.0.0/8, ::1, localhost) or `tryvox_options_allow_insecure_http` was set.
/// At most 8192 bytes. The string is copied. Returns TRYVOX_OK or
/// TRYVOX_INVALID_ARGUMENT (NULL, bad or too long URL).
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
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe { with_options(o, |opts| opts.set_timeout(Duration::from_millis(ms.into()))) }
}

/// Sets the time allowed to set up one connection (TCP, proxy, TLS), in milliseconds
/// (default 3000; never more than what is left of the total timeout). 0 is
/// TRYVOX_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_connect_timeout_ms(
    o: *mut tryvox_options,
    ms: u32,
) -> c_int {
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe {
        with_options(o, |opts| {
            opts.set_connect_timeout(Duration::from_millis(ms.into()))
        })
    }
}

/// Sets how many more attempts a hangup may make after the first (default 2; 0 disables
/// retries; at most 100, above is TRYVOX_INVALID_ARGUMENT). All attempts share the one
/// total timeout.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_max_retries(o: *mut tryvox_options, n: u32) -> c_int {
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe { with_options(o, |opts| opts.set_max_retries(n)) }
}

/// Sets the most connections async hangups (tryvox_hangup_async, scheduled hangups) hold
/// to the server at once (default 64; 1 to 1024, else TRYVOX_INVALID_ARGUMENT). A client
/// talks to one host, so this is its per-host limit, so a burst does not overrun a small
/// server (or a proxy's client limit): hangups beyond it wait, in order and within their
/// own timeout, for a connection to come free (a keep-alive connection goes to the next
/// waiting hangup at once). A tryvox_hangup_many call uses its own `max_parallel`
/// connections beside them (it never waits behind async backlog; an explicit value above
/// this limit is honoured). Whatever the limit, new connections are set up within a
/// connect window, as TCP's slow start: 4 connects in progress at first, one more for
/// each that succeeds (up to 256), half as many after one times out; so a server with a
/// small listen backlog is not sent more connects than it can queue, and a fast one gets
/// its connections within a few round trips. The blocking tryvox_hangup uses one
/// connection per calling thread, outside this limit. tryvox_client_free starts every
/// queued async hangup.
///
/// A queued hangup's timeout runs while it waits: an async hangup still queued behind the
/// limit when its timeout passes ends with TRYVOX_TIMEOUT without any request having been
/// sent for it (the call was not ended by it; hanging it up again is safe). A burst
/// larger than the limit can take as long as (burst / limit) server round trips: raise
/// the limit, or the timeout, so that the whole burst fits in its timeout at the
/// server's latency.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_max_connections(
    o: *mut tryvox_options,
    n: u32,
) -> c_int {
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe { with_options(o, |opts| opts.set_max_connections(n as usize)) }
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

/// Which roots `tryvox_options_set_trust_store` selects (values of its `store`): part of
/// the ABI.
#[repr(C)]
#[allow(non_camel_case_types, clippy::enum_variant_names)]
pub enum tryvox_trust_store {
    /// The default: the system's trust store, as OpenSSL finds it (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`, else the distribution's bundle, e.g. Debian's
    /// /etc/ssl/certs/ca-certificates.crt, which `update-ca-certificates` writes); where
    /// the system has none, the roots compiled into the library (Mozilla's).
    TRYVOX_TRUST_SYSTEM_OR_BUNDLED = 0,
    /// The system's trust store only: `tryvox_client_new_with_options` fails with
    /// TRYVOX_TLS_ERROR, its last error saying why, if it holds no usable certificate.
    TRYVOX_TRUST_SYSTEM = 1,
    /// Only the roots compiled into the library (Mozilla's, as of its build): the
    /// system's store is not read.
    TRYVOX_TRUST_BUNDLED = 2,
}

/// Chooses the roots trusted for the API's certificate when no CA file is set (a CA file
/// replaces them all): one of the tryvox_trust_store values; the default is
/// TRYVOX_TRUST_SYSTEM_OR_BUNDLED. The roots are read once, by
/// `tryvox_client_new*` for an https base URL (a certificate installed later
/// counts for clients built later), bounded: regular files only (a FIFO or device named
/// by SSL_CERT_FILE is skipped unread, never waited on), at most 4 MiB a file and 64 MiB
/// or 100,000 directory entries in all. The options' log callback, if any, receives one
/// info line (level 2) then saying which roots the client trusts and how many, and a
/// warn line (level 1) naming the directory if the store was read only in part. Returns
/// TRYVOX_OK, or TRYVOX_INVALID_ARGUMENT for another value (nothing changed).
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_trust_store(
    o: *mut tryvox_options,
    store: c_int,
) -> c_int {
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe {
        with_options(o, |opts| {
            opts.set_trust_store(match store {
                0 => TrustStore::SystemOrBundled,
                1 => TrustStore::System,
                2 => TrustStore::Bundled,
                _ => {
                    return Err(invalid(format!(
                        "trust store must be 0, 1 or 2 (tryvox_trust_store), not {store}"
                    )))
                }
            });
            Ok(())
        })
    }
}

/// Trusts the certificates in the PEM file at `pem_path` instead of any trust store (see
/// `tryvox_options_set_trust_store`). The path is copied; the file is read by `tryvox_client_new_with_options`,
/// which fails at once with TRYVOX_INVALID_ARGUMENT, nothing sent and the last error
/// naming the path, if it is not a regular file (a FIFO, device, socket or directory is
/// refused, never waited on or read), is larger than 1 MiB (a bundle of every public CA
/// is about 220 KiB), cannot be read or holds no certificate.
#[no_mangle]
pub unsafe extern "C" fn tryvox_options_set_ca_file(
    o: *mut tryvox_options,
    pem_path: *const c_char,
) -> c_int {
    // SAFETY: caller's string, checked by set_str.
    unsafe { set_str(o, "CA file path", pem_path, Options::set_ca_file) }
}

/// Sends requests through the HTTP proxy `proxy_url` ("http://host:port", or
/// "http://user:password@host:port" for Basic `Proxy-Authorization`, percent-encoded
/// as in any URL). https requests are tunnelled with CONNECT, so the proxy never sees
/// the key; plain-http requests go to the proxy itself in absolute form
/// (`DELETE http://host:port/path HTTP/1.1`, as libcurl sends them: proxies such as
/// Squid allow CONNECT to port 443 only), key included. Environment variables such as
/// HTTPS_PROXY are never consulted. Copied. Returns TRYVOX_OK or
/// TRYVOX_INVALID_ARGUMENT. A proxy that cannot be reached gives TRYVOX_NETWORK_ERROR
/// at hangup time, with a message naming the proxy's host and port (never its
/// credentials); so does a proxy that refuses the request: a CONNECT answered with
/// anything but 2xx, or a 407 (Proxy Authentication Required) to a plain-http request,
/// whose HTTP status is then 407; neither is retried. A forwarding proxy's 502 or 504
/// (it could not reach the API) is TRYVOX_SERVER_ERROR, retried as one, its message
/// naming the proxy.
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
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe {
        with_options(o, |opts| {
            opts.allow_insecure_http(allow != 0);
            Ok(())
        })
    }
}

/// Receives the library's log lines.
///
/// `level` is 0 error, 1 warn, 2 info, 3 debug. `message` is valid only during the call
/// and never contains the API key. The callback runs on the caller's thread for
/// `tryvox_hangup` (and listings). Lines of async and bulk hangups are never written on
/// the engine's thread: they are queued, in order (past 10,000 queued lines the rest are
/// counted and reported as dropped), and written on one of the client's callback threads
/// before the completion callbacks that follow them, or on the thread of
/// `tryvox_hangup_many` before it returns; if another thread is writing the queue at that
/// moment, it writes them instead, and they may then arrive during or after the callback.
/// It may run on several threads at once: it must be thread-safe and should return
/// quickly. It may call into the library, but must not free the client.
pub type tryvox_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: c_int, message: *const c_char)>;

/// The C numbers of the log levels (see tryvox_log_callback): part of the ABI.
fn c_level(level: LogLevel) -> c_int {
    match level {
        LogLevel::Error => 0,
        LogLevel::Warn => 1,
        LogLevel::Info => 2,
        LogLevel::Debug => 3,
    }
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
    let user_data = user_data as usize; // passed through untouched; the caller owns it
    let log = cb.map(|cb| {
        Arc::new(move |level: LogLevel, message: &str| {
            let m = boundary::c_string(message);
            // SAFETY: the caller's callback, with a string valid for its duration.
            unsafe { cb(user_data as *mut c_void, c_level(level), m.as_ptr()) };
        }) as LogFn
    });
    // SAFETY: the caller's options pointer, NULL-checked by with_options.
    unsafe {
        with_options(o, |opts| {
            opts.set_log_fn(log);
            Ok(())
        })
    }
}
