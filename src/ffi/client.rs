//! The client: `tryvox_client_new`, `tryvox_client_new_with_options` and
//! `tryvox_client_free`.

use std::ffi::c_char;

use tryvox_core::{Client, Options};

use super::boundary::{self, invalid};
use super::options::tryvox_options;

/// A client for one TryVox account: credentials, settings and a connection pool.
/// Opaque. Create with `tryvox_client_new*`, release with `tryvox_client_free`.
/// Safe to use from any number of threads at once.
pub struct tryvox_client(pub(super) Client);

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
/// Connecting: the host name is looked up on a helper thread (one lookup per name at a
/// time, shared by concurrent hangups; answers cached 30 s; a hangup waits for it no
/// longer than its deadline). The addresses are tried as RFC 8305 (Happy Eyeballs) says:
/// families alternate, the next address starts 250 ms after the previous one (at once if
/// it failed), the first to connect wins, and an address that failed or lost moves to the
/// back of the cached list; all within the connect timeout and the deadline.
///
/// File descriptors: all clients of the process together hold at most half of what the
/// host leaves free, `(soft RLIMIT_NOFILE - descriptors the host has open) / 2`, re-read
/// at most once a second while connections are opened and when the budget is found full;
/// every socket counts (connections of every path, each address a connect races, the
/// engine's epoll and eventfd). The other half is always the host's. A hangup that finds
/// the budget full waits (queued, holding nothing) until a descriptor frees up or its
/// deadline passes (then TRYVOX_TIMEOUT, its message saying it waited for a file
/// descriptor, nothing sent); idle keep-alive connections of every client give theirs up
/// then, and a client busy enough to reuse each of its connections at once closes one
/// when its exchange ends, rather than reusing it, while another client waits: no client
/// starves another. Connections leave the budget's last two places to engines: a client's engine
/// (started on its first async, bulk or scheduled hangup, and again after it idled out)
/// takes two descriptors of the budget when it starts; if even those are in use, that
/// hangup is refused with TRYVOX_BUSY, nothing sent (the library could not take it
/// without touching the host's half), and may be retried.
///
/// fork(): a client may be used in a child of `fork()` (Python multiprocessing, pre-fork
/// servers) and works there as a fresh one: at the fork, the child closes every
/// descriptor the library had open (nothing is sent or read on them; the parent's
/// connections stay the parent's), and the child's first use starts its own threads,
/// connections and name lookups. The parent's pending work is not the child's: callbacks
/// of async hangups, bulk calls and scheduled hangups the parent had pending never run in
/// the child (`tryvox_timer_cancel` on a parent's timer returns TRYVOX_BUSY there: the
/// parent still sends that hangup), and the child's statistics start from the parent's
/// counts, except the gauges `in_flight` and `connections_open`, which count only the
/// child's own (the parent's never end there). A callback that forks: in the child, the
/// callback's return ends that library thread's work (its thread exits); no other
/// callback, log line or job of the parent's runs there. TLS sessions are not resumed
/// across the fork (the child makes full handshakes).
/// The parent is unaffected. The cost is the parent's state leaked once in the child (a
/// few KiB per client). Call nothing in the child while another of its threads could be
/// forking, as with any library.
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
            .map_err(|_| invalid("api_key is NULL or not ASCII"))?;
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
/// bounded by its deadline) and delivers their callbacks before returning. Queued hangups
/// are all started at once (up to 1024 threads), so free takes about one deadline of the
/// slowest, whatever the queue's length; no callback
/// runs after it returns, and no library thread of this client is left running, with one
/// exception: a host name lookup stuck in the system resolver is not waited for (free
/// would hang with it). Its thread holds no client state and no key, keeps libtryvox
/// loaded until the resolver answers, and then exits. The API key is wiped from the
/// library's memory. Using the client afterwards is undefined.
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
