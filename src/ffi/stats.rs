//! A client's statistics: `tryvox_client_stats` and the size-versioned `tryvox_stats`.

use std::ffi::c_int;

use super::boundary::{self, invalid};
use super::client::tryvox_client;

/// A snapshot of a client's statistics, filled by `tryvox_client_stats`.
///
/// Size-versioned: set `size` to `sizeof(tryvox_stats)` before the call. The library
/// writes only the fields that fit whole in `size` bytes (fields added in later versions
/// come after the last one here), so a program built against this header keeps working
/// with a newer library, and a newer program with this one (it sees `size` unchanged and
/// the fields beyond it untouched). A field that `size` ends inside is left untouched,
/// never written in part; `hangups_by_status` is one field, written whole or not at all.
///
/// Counters only grow over the client's life: diff two snapshots for a window.
/// `in_flight` and `connections_open` are gauges (of this process: in a forked child,
/// the child's own only). Latencies are whole hangups (retries
/// and waits included) in microseconds; percentiles are upper edges of log-linear
/// buckets (four per power of two, so at most 19% above the true value), 0 before the
/// first hangup; `latency_max_us` is exact.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tryvox_stats {
    /// Set by the caller: `sizeof(tryvox_stats)`.
    pub size: usize,
    /// Finished hangups by final status: `hangups_by_status[TRYVOX_NOT_FOUND]` etc.
    pub hangups_by_status: [u64; 32],
    /// HTTP attempts (one per hangup, plus one per retry).
    pub attempts: u64,
    /// Retries after a connection failed before any response.
    pub retries_connection: u64,
    /// Retries after a 429.
    pub retries_rate_limited: u64,
    /// Retries after a 500, 502, 503 or 504.
    pub retries_server_error: u64,
    /// Hangups running now, including any waiting to retry (such a wait holds no
    /// connection, so a bulk call may have more hangups in flight than `max_parallel`;
    /// never more requests).
    pub in_flight: u64,
    /// TCP connections open now.
    pub connections_open: u64,
    /// TCP connections opened over the client's life.
    pub connections_opened: u64,
    /// Latency percentiles and maximum of finished hangups, in microseconds.
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
}

/// Fills `out` with `client`'s statistics (see tryvox_stats); set `out->size` first.
///
/// Returns TRYVOX_OK, or TRYVOX_INVALID_ARGUMENT when `client` or `out` is NULL or
/// `out->size` is smaller than the `size` field itself (nothing written then). Reading
/// takes no lock: it may run on any thread while hangups are running, as often as wanted.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tryvox_client_stats(
    client: *const tryvox_client,
    out: *mut tryvox_stats,
) -> c_int {
    boundary::status(|| {
        // SAFETY: caller's pointers, NULL-checked by the helpers.
        let client = unsafe { boundary::obj("client", client) }?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: `out` points to at least `size` writable bytes, `size` first.
        let size = unsafe { std::ptr::addr_of!((*out).size).read_unaligned() };
        if size < std::mem::size_of::<usize>() {
            return Err(invalid(
                "out->size is smaller than the size field: set it to sizeof(tryvox_stats)",
            ));
        }
        let s = client.0.stats();
        let full = tryvox_stats {
            size,
            hangups_by_status: s.hangups_by_status,
            attempts: s.attempts,
            retries_connection: s.retries_connection,
            retries_rate_limited: s.retries_rate_limited,
            retries_server_error: s.retries_server_error,
            in_flight: s.in_flight,
            connections_open: s.connections_open,
            connections_opened: s.connections_opened,
            latency_p50_us: s.latency_p50_us,
            latency_p90_us: s.latency_p90_us,
            latency_p99_us: s.latency_p99_us,
            latency_max_us: s.latency_max_us,
        };
        let n = whole_stats_fields(size);
        // SAFETY: the caller promises `size` writable bytes at `out`; `n <= size` and
        // `n <= size_of::<tryvox_stats>()` bytes are read from `full`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&full as *const tryvox_stats).cast::<u8>(),
                out.cast::<u8>(),
                n,
            )
        };
        Ok(0)
    })
}

/// How many leading bytes of a `tryvox_stats` of `size` bytes hold only whole fields: the
/// end of the last field that fits entirely. A `size` ending inside a field (a caller's
/// struct of another layout, or a bad `size`) leaves that field, and all after it,
/// untouched: a half-written counter would be a wrong number, not a missing one.
/// `hangups_by_status` is one field (an array indexed by status), written whole or not.
fn whole_stats_fields(size: usize) -> usize {
    use std::mem::{offset_of, size_of};
    type S = tryvox_stats;
    let ends = [
        offset_of!(S, size) + size_of::<usize>(),
        offset_of!(S, hangups_by_status) + size_of::<[u64; 32]>(),
        offset_of!(S, attempts) + 8,
        offset_of!(S, retries_connection) + 8,
        offset_of!(S, retries_rate_limited) + 8,
        offset_of!(S, retries_server_error) + 8,
        offset_of!(S, in_flight) + 8,
        offset_of!(S, connections_open) + 8,
        offset_of!(S, connections_opened) + 8,
        offset_of!(S, latency_p50_us) + 8,
        offset_of!(S, latency_p90_us) + 8,
        offset_of!(S, latency_p99_us) + 8,
        offset_of!(S, latency_max_us) + 8,
    ];
    debug_assert_eq!(ends[ends.len() - 1], size_of::<S>());
    ends.into_iter()
        .filter(|&end| end <= size)
        .max()
        .unwrap_or(0)
}
