/*
 * libtryvox: hang up calls on the TryVox voice API.
 *
 * This file is generated from the Rust sources by cbindgen (see build.rs); do not edit it
 * by hand. Regenerate with `make header`. A test fails when it differs from the sources.
 *
 * General rules (each item below repeats what applies to it):
 * - Every fallible function returns an int that is one of the tryvox_status values.
 * - Strings passed in are NUL-terminated UTF-8/ASCII, borrowed only for the call: the
 *   library copies what it keeps.
 * - Strings returned are owned by the library; never free them.
 * - A NULL pointer where a value is required is TRYVOX_INVALID_ARGUMENT, never a crash.
 * - No message produced by the library ever contains the API key.
 */

#ifndef TRYVOX_H
#define TRYVOX_H

#include <stddef.h>
#include <stdint.h>

struct tryvox_sweep;

/**
 * Status codes returned by every fallible function (as an `int`). The numbers are part
 * of the ABI and never change meaning; new values may be added after the last one.
 */
typedef enum tryvox_status {
  /**
   * Success: the API answered 2xx (204 No Content: the call is ended).
   */
  TRYVOX_OK = 0,
  /**
   * 404: no such call (`call_not_found`, nested `NOT_FOUND`, or a 404 with no usable
   * body). A caller who only asks "is the call gone?" treats this like ALREADY_ENDED.
   */
  TRYVOX_NOT_FOUND = 1,
  /**
   * 404 `call_already_ended` (flat or nested form): the call was over already. Also the
   * outcome when a retry meets a call an earlier, unanswered attempt had ended.
   */
  TRYVOX_ALREADY_ENDED = 2,
  /**
   * A NULL pointer, an empty or malformed id, a key or header value with control
   * characters, a bad URL, a bad option value. Nothing was sent.
   */
  TRYVOX_INVALID_ARGUMENT = 3,
  /**
   * 401: the API key is missing, wrong or expired.
   */
  TRYVOX_UNAUTHORIZED = 4,
  /**
   * 403: the key may not do this.
   */
  TRYVOX_FORBIDDEN = 5,
  /**
   * 429, and no retry (the wait and a useful attempt after it) fitted within the
   * deadline.
   */
  TRYVOX_RATE_LIMITED = 6,
  /**
   * 5xx after the retries were spent.
   */
  TRYVOX_SERVER_ERROR = 7,
  /**
   * The deadline passed (connect or total) before any response's status line arrived.
   * The call may or may not have been ended. (A status line that did arrive is the
   * outcome even if its body never came: a 2xx is OK, its owed body waited for 250 ms
   * at most; a 404 NOT_FOUND, and so on, with its HTTP status.)
   */
  TRYVOX_TIMEOUT = 8,
  /**
   * DNS failure, refused or reset connection, proxy failure, or a connection (TLS
   * included: a corrupt record, an alert) that failed after the request was sent and
   * before its answer; the request may have reached the server, and is retried like
   * a reset.
   */
  TRYVOX_NETWORK_ERROR = 9,
  /**
   * Certificate or TLS handshake failure. The key was not sent.
   */
  TRYVOX_TLS_ERROR = 10,
  /**
   * Any other HTTP status (e.g. 400, 418, a redirect), or a response that is not HTTP
   * (e.g. an SSH banner: not retried).
   */
  TRYVOX_PROTOCOL_ERROR = 11,
  /**
   * A bug in the library, caught at the boundary. The host process and the client
   * live on; please report it.
   */
  TRYVOX_INTERNAL_ERROR = 12,
  /**
   * The library could not take the request, and nothing was sent: the client is being
   * freed (a callback running while the client is freed asked for more work), or the
   * library could not start a thread or open a connection (the process is at its
   * thread, memory or file descriptor limit).
   * Not a bug; the host may retry later. Added after v1: treat unknown numbers above
   * 13 as failures too.
   */
  TRYVOX_BUSY = 13,
} tryvox_status;

/**
 * Which roots `tryvox_options_set_trust_store` selects (values of its `store`): part of
 * the ABI.
 */
typedef enum tryvox_trust_store {
  /**
   * The default: the system's trust store, as OpenSSL finds it (`SSL_CERT_FILE`,
   * `SSL_CERT_DIR`, else the distribution's bundle, e.g. Debian's
   * /etc/ssl/certs/ca-certificates.crt, which `update-ca-certificates` writes); where
   * the system has none, the roots compiled into the library (Mozilla's).
   */
  TRYVOX_TRUST_SYSTEM_OR_BUNDLED = 0,
  /**
   * The system's trust store only: `tryvox_client_new_with_options` fails with
   * TRYVOX_TLS_ERROR, its last error saying why, if it holds no usable certificate.
   */
  TRYVOX_TRUST_SYSTEM = 1,
  /**
   * Only the roots compiled into the library (Mozilla's, as of its build): the
   * system's store is not read.
   */
  TRYVOX_TRUST_BUNDLED = 2,
} tryvox_trust_store;

/**
 * A client for one TryVox account: credentials, settings and a connection pool.
 * Opaque. Create with `tryvox_client_new*`, release with `tryvox_client_free`.
 * Safe to use from any number of threads at once.
 */
typedef struct tryvox_client tryvox_client;

/**
 * Settings for `tryvox_client_new_with_options`. Opaque plain data for one thread:
 * do not share one options object between threads while setting it.
 */
typedef struct tryvox_options tryvox_options;

/**
 * A scheduled hangup, from `tryvox_hangup_after`. Opaque; release with
 * `tryvox_timer_free`. Safe to use from any thread, also after its client was freed.
 */
typedef struct tryvox_timer tryvox_timer;

/**
 * Receives the outcome of one `tryvox_hangup_async`.
 *
 * Runs exactly once per accepted request, on a thread the library owns. `call_uuid` is
 * the id that was passed in; `status` is a tryvox_status value; `http_status` is the last
 * HTTP status seen (0 if no response); `message` is "" on success, else a description.
 * The strings are valid only during the callback: copy what you keep. The callback may
 * call any library function except `tryvox_client_free` on the same client (sync, async
 * and bulk included: callbacks never run on the engine's thread); it should return
 * quickly: the outcomes that complete together are delivered in order on one of the
 * client's (at most 64) callback threads, so a slow callback delays those behind it.
 */
typedef void (*tryvox_hangup_callback)(void *user_data,
                                       const char *call_uuid,
                                       int status,
                                       int http_status,
                                       const char *message);

/**
 * Progress of a `tryvox_hangup_all` or `tryvox_hangup_each`: called on the calling
 * thread at least every 50 ms while it runs (a progress bar can redraw from it), after
 * each listing and at the end, with the caller's own `sweep`, whose counts are up to
 * date. It must not free the client; it may call any other function.
 */
typedef void (*tryvox_sweep_progress_callback)(void *user_data, const struct tryvox_sweep *sweep);

/**
 * A live call a sweep's listing found (see `tryvox_sweep.on_listed`): called on the
 * calling thread; `call_uuid` is valid only during the call.
 */
typedef void (*tryvox_sweep_listed_callback)(void *user_data, const char *call_uuid);

/**
 * What `tryvox_hangup_all` ends and what it did. Size-versioned: set `size` to
 * `sizeof(tryvox_sweep)` and zero the rest (`memset`, or `= {0}` then set `size`); later
 * versions add fields only after the last one here. The inputs are read, the counts
 * written, only where they fit in `size`.
 */
typedef struct tryvox_sweep {
  /**
   * In: `sizeof(tryvox_sweep)`.
   */
  size_t size;
  /**
   * In: only calls from this number (e.g. "+14155551234"); NULL for any. Copied.
   */
  const char *from;
  /**
   * In: only calls to this number; NULL for any.
   */
  const char *to;
  /**
   * In: "inbound" or "outbound"; NULL for any.
   */
  const char *direction;
  /**
   * In: hangups in flight at once (0 means 32; at most 1024).
   */
  uint32_t max_parallel;
  /**
   * In: the sweep's deadline in milliseconds (0 means 60000). Every request of the
   * sweep (listing pages and hangups) ends by it, whatever the client's timeout; no
   * hangup starts after it.
   */
  uint32_t timeout_ms;
  /**
   * In: optional progress callback, and its `user_data`, passed through untouched.
   */
  tryvox_sweep_progress_callback progress;
  void *user_data;
  /**
   * Out: calls this sweep hung up.
   */
  uint64_t ended;
  /**
   * Out: calls that had ended on their own when their hangup arrived (404).
   */
  uint64_t already_gone;
  /**
   * Out: calls whose hangup failed (not tried again by this sweep).
   */
  uint64_t failed;
  /**
   * Out: live calls left (0 on success).
   */
  uint64_t still_live;
  /**
   * Out: complete listings of the live calls made.
   */
  uint64_t listings;
  /**
   * In: called on the calling thread as each call's hangup settles, once per call, with
   * `user_data` (see tryvox_hangup_callback for the arguments): ended (TRYVOX_OK and
   * the HTTP status, 204), already gone (TRYVOX_NOT_FOUND or TRYVOX_ALREADY_ENDED, 404)
   * or failed. A call the server lists again after its hangup succeeded, and whose
   * next hangup fails, is reported again with that failure: the counts hold each call
   * under its latest outcome. A sweep reports the calls it sent a hangup for; `tryvox_hangup_each`
   * reports every id, those never sent too (TRYVOX_BUSY after `tryvox_sweep_stop`,
   * TRYVOX_TIMEOUT after the deadline; HTTP status 0; their message begins "not
   * sent"). NULL for none.
   */
  tryvox_hangup_callback on_call;
  /**
   * In: called on the calling thread once per live call a listing finds for the first
   * time in this sweep, before its hangup starts (with `dry_run`, instead of it), with
   * `user_data`. NULL for none.
   */
  tryvox_sweep_listed_callback on_listed;
  /**
   * In: hangups started per second at most (0: no limit). A retry is not a new
   * hangup: retries are bounded by the parallelism, which counts a hangup waiting out
   * a `Retry-After` as in flight.
   */
  uint32_t max_rate;
  /**
   * In: nonzero: `tryvox_hangup_all` lists the live calls, reports each to `on_listed`
   * and ends none: TRYVOX_OK, with `still_live` and `found` the number found. It lists
   * again until a listing finds no call it had not seen (5 listings at most): pages
   * shift while calls change state under a listing.
   */
  uint32_t dry_run;
  /**
   * In: nonzero asks the sweep to start no more hangups. Set it with
   * `tryvox_sweep_stop` (async-signal-safe) while the sweep runs; zero before a sweep.
   */
  uint32_t stop;
  /**
   * Out: 1 while a listing is in progress, else 0.
   */
  uint32_t listing;
  /**
   * Out: distinct live calls found so far (for `tryvox_hangup_each`, the number of
   * ids). It never decreases: the total of a progress bar.
   */
  uint64_t found;
  /**
   * Out: answers 429 (Too Many Requests) the hangups got, retried ones included.
   */
  uint64_t rate_limited;
  /**
   * Out: times a 429 halved the parallelism. The sweep lowers `max_parallel` by half
   * on a 429 (once per round trip) and raises it by one after as many answers as it
   * allows again (additive increase, multiplicative decrease), never above it.
   */
  uint64_t backoffs;
  /**
   * Out: hangups in flight at once now.
   */
  uint64_t parallel;
} tryvox_sweep;

/**
 * A snapshot of a client's statistics, filled by `tryvox_client_stats`.
 *
 * Size-versioned: set `size` to `sizeof(tryvox_stats)` before the call. The library
 * writes only the fields that fit whole in `size` bytes (fields added in later versions
 * come after the last one here), so a program built against this header keeps working
 * with a newer library, and a newer program with this one (it sees `size` unchanged and
 * the fields beyond it untouched). A field that `size` ends inside is left untouched,
 * never written in part; `hangups_by_status` is one field, written whole or not at all.
 *
 * Counters only grow over the client's life: diff two snapshots for a window.
 * `in_flight` and `connections_open` are gauges (of this process: in a forked child,
 * the child's own only). Latencies are whole hangups (retries
 * and waits included) in microseconds; percentiles are upper edges of log-linear
 * buckets (four per power of two, so at most 19% above the true value), 0 before the
 * first hangup; `latency_max_us` is exact.
 */
typedef struct tryvox_stats {
  /**
   * Set by the caller: `sizeof(tryvox_stats)`.
   */
  size_t size;
  /**
   * Finished hangups by final status: `hangups_by_status[TRYVOX_NOT_FOUND]` etc.
   */
  uint64_t hangups_by_status[32];
  /**
   * HTTP attempts (one per hangup, plus one per retry).
   */
  uint64_t attempts;
  /**
   * Retries after a connection failed before any response.
   */
  uint64_t retries_connection;
  /**
   * Retries after a 429.
   */
  uint64_t retries_rate_limited;
  /**
   * Retries after a 500, 502, 503 or 504.
   */
  uint64_t retries_server_error;
  /**
   * Hangups running now, including any waiting to retry (such a wait holds no
   * connection, so a bulk call may have more hangups in flight than `max_parallel`;
   * never more requests).
   */
  uint64_t in_flight;
  /**
   * TCP connections open now.
   */
  uint64_t connections_open;
  /**
   * TCP connections opened over the client's life.
   */
  uint64_t connections_opened;
  /**
   * Latency percentiles and maximum of finished hangups, in microseconds.
   */
  uint64_t latency_p50_us;
  uint64_t latency_p90_us;
  uint64_t latency_p99_us;
  uint64_t latency_max_us;
} tryvox_stats;

/**
 * Receives the library's log lines.
 *
 * `level` is 0 error, 1 warn, 2 info, 3 debug. `message` is valid only during the call
 * and never contains the API key. The callback runs on the caller's thread for
 * `tryvox_hangup` (and listings). Lines of async and bulk hangups are never written on
 * the engine's thread: they are queued, in order (past 10,000 queued lines the rest are
 * counted and reported as dropped), and written on one of the client's callback threads
 * before the completion callbacks that follow them, or on the thread of
 * `tryvox_hangup_many` before it returns; if another thread is writing the queue at that
 * moment, it writes them instead, and they may then arrive during or after the callback.
 * It may run on several threads at once: it must be thread-safe and should return
 * quickly. It may call into the library, but must not free the client.
 */
typedef void (*tryvox_log_callback)(void *user_data, int level, const char *message);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Creates a client for account `auth_id` with API key `api_key` and default options:
 * base URL https://api.tryvox.io, 10 s total timeout per hangup, 3 s connect timeout,
 * 2 retries.
 *
 * `auth_id` must be 1 to 128 characters from `A-Z a-z 0-9 - _ . ~` (not `.` or `..`);
 * `api_key` 1 to 512 visible ASCII characters (0x21-0x7E). Both are copied: the caller
 * may free them when this returns.
 *
 * Returns a new client, owned by the caller and released with `tryvox_client_free`; or
 * NULL on bad input (NULL pointers included), with the thread's last error set.
 * Thread-safe.
 */
struct tryvox_client *tryvox_client_new(const char *auth_id, const char *api_key);

/**
 * As `tryvox_client_new`, with `options` (NULL means the defaults).
 *
 * Everything is copied, and files (the CA file) are read now: the caller may free the
 * strings and the options when this returns. A plain `http` base URL to a host that is
 * not loopback is refused here unless `tryvox_options_allow_insecure_http` was set.
 *
 * Connecting: the host name is looked up on a helper thread (one lookup per name at a
 * time, shared by concurrent hangups; answers cached 30 s; a hangup waits for it no
 * longer than its deadline). The addresses are tried as RFC 8305 (Happy Eyeballs) says:
 * families alternate, the next address starts 250 ms after the previous one (at once if
 * it failed), the first to connect wins, and an address that failed or lost moves to the
 * back of the cached list; all within the connect timeout and the deadline.
 *
 * File descriptors: all clients of the process together hold at most half of what the
 * host leaves free, `(soft RLIMIT_NOFILE - descriptors the host has open) / 2`, re-read
 * at most once a second while connections are opened and when the budget is found full;
 * every socket counts (connections of every path, each address a connect races, the
 * engine's epoll and eventfd). The other half is always the host's. A hangup that finds
 * the budget full waits (queued, holding nothing) until a descriptor frees up or its
 * deadline passes (then TRYVOX_TIMEOUT, its message saying it waited for a file
 * descriptor, nothing sent); idle keep-alive connections of every client give theirs up
 * then, and a client busy enough to reuse each of its connections at once closes one
 * when its exchange ends, rather than reusing it, while another client waits: no client
 * starves another. Connections leave the budget's last two places to engines: a client's engine
 * (started on its first async, bulk or scheduled hangup, and again after it idled out)
 * takes two descriptors of the budget when it starts; if even those are in use, that
 * hangup is refused with TRYVOX_BUSY, nothing sent (the library could not take it
 * without touching the host's half), and may be retried.
 *
 * fork(): a client may be used in a child of `fork()` (Python multiprocessing, pre-fork
 * servers) and works there as a fresh one: at the fork, the child closes every
 * descriptor the library had open (nothing is sent or read on them; the parent's
 * connections stay the parent's), and the child's first use starts its own threads,
 * connections and name lookups. The parent's pending work is not the child's: callbacks
 * of async hangups, bulk calls and scheduled hangups the parent had pending never run in
 * the child (`tryvox_timer_cancel` on a parent's timer returns TRYVOX_BUSY there: the
 * parent still sends that hangup), and the child's statistics start from the parent's
 * counts, except the gauges `in_flight` and `connections_open`, which count only the
 * child's own (the parent's never end there). A callback that forks: in the child, the
 * callback's return ends that library thread's work (its thread exits); no other
 * callback, log line or job of the parent's runs there. TLS sessions are not resumed
 * across the fork (the child makes full handshakes).
 * The parent is unaffected. The cost is the parent's state leaked once in the child (a
 * few KiB per client). Call nothing in the child while another of its threads could be
 * forking, as with any library.
 *
 * Returns a new client (free with `tryvox_client_free`) or NULL with the thread's last
 * error set. Thread-safe, but `options` must not be modified by another thread during the
 * call.
 */
struct tryvox_client *tryvox_client_new_with_options(const char *auth_id,
                                                     const char *api_key,
                                                     const struct tryvox_options *options);

/**
 * Frees a client. NULL is a no-op.
 *
 * Waits for the client's queued and running asynchronous hangups to finish (each is
 * bounded by its deadline) and delivers their callbacks before returning. Queued hangups
 * are all started at once (up to 1024 threads), so free takes about one deadline of the
 * slowest, whatever the queue's length; no callback
 * runs after it returns, and no library thread of this client is left running, with one
 * exception: a host name lookup stuck in the system resolver is not waited for (free
 * would hang with it). Its thread holds no client state and no key, keeps libtryvox
 * loaded until the resolver answers, and then exits. The API key is wiped from the
 * library's memory. Using the client afterwards is undefined.
 * Must not be called while another thread is still using the client, nor from a callback
 * of the same client.
 */
void tryvox_client_free(struct tryvox_client *client);

/**
 * Hangs up call `call_uuid`: sends `DELETE {base}/v1/voice/accounts/{auth_id}/calls/{call_uuid}`
 * with the key as a Bearer token. Blocks until an outcome or the deadline (the total
 * timeout, retries included): do not call it on a media or event-loop thread; use
 * `tryvox_hangup_async` there.
 *
 * `call_uuid` must be 1 to 128 characters from `A-Z a-z 0-9 - _ . ~`, not `.` or `..`;
 * anything else is TRYVOX_INVALID_ARGUMENT and nothing is sent. It is borrowed for the
 * call only.
 *
 * Retries (up to max_retries, within the deadline): a connection that failed before any
 * response, 429 (waiting Retry-After if it fits, else TRYVOX_RATE_LIMITED at once), and
 * 500/502/503/504 with backoff and jitter. Nothing else. A wait "fits" when the wait and
 * a useful attempt after it (as long as the failed attempt took, 100 ms to 1 s) end
 * before the deadline; otherwise the failure in hand is returned at once, and its message
 * says why no retry was made.
 *
 * Returns TRYVOX_OK when the call was ended, TRYVOX_NOT_FOUND / TRYVOX_ALREADY_ENDED
 * when there was nothing to end, or another tryvox_status; the thread's last error,
 * server code and HTTP status describe it. Thread-safe: any number of threads may hang
 * up on one client at once, sharing its connections.
 */
int tryvox_hangup(struct tryvox_client *client, const char *call_uuid);

/**
 * Queues a hangup of `call_uuid` and returns at once; the caller's thread never blocks
 * on the network (safe on a media or event-loop thread).
 *
 * Returns TRYVOX_OK when queued: `callback` then runs exactly once, on a library thread,
 * with the outcome (see tryvox_hangup_callback). Any other return means the request was
 * refused and the callback will never run: TRYVOX_INVALID_ARGUMENT for a NULL client or
 * callback or an invalid id; TRYVOX_BUSY when the client is being freed (a callback
 * running inside `tryvox_client_free` cannot queue more work on its client) or the
 * engine's thread could not be started.
 * `call_uuid` is copied; `user_data` is passed through untouched. The hangup follows
 * the same validation, retry and deadline rules as `tryvox_hangup`. The caller's thread
 * only validates and enqueues (a lock and a push, about a microsecond); the client's
 * engine, one event-loop thread, runs up to 1,024 async hangups at once (more wait in
 * order), each on its own keep-alive connection; a retry's wait holds no connection.
 * The engine and callback threads start on demand and exit after 5 s without work: an
 * idle client holds none. `tryvox_client_free` lets every queued hangup start at once,
 * waits for the last (so it takes one deadline, not the queue drained in turns), and
 * delivers every callback. Thread-safe.
 */
int tryvox_hangup_async(struct tryvox_client *client,
                        const char *call_uuid,
                        tryvox_hangup_callback callback,
                        void *user_data);

/**
 * Schedules a hangup of `call_uuid` after `delay_ms` milliseconds (a maximum call
 * duration reached, a prepaid balance run out) and returns at once.
 *
 * Pending hangups cost no thread each: one timer thread per client holds them all (it
 * starts with the first and exits 5 s after the last). When the time comes, the hangup
 * runs exactly as a `tryvox_hangup_async` of it would (same rules, same worker threads),
 * and `callback` runs exactly once with the outcome, unless `tryvox_timer_cancel`
 * returned TRYVOX_OK first. If the client is freed while the hangup is pending,
 * nothing is sent and `callback` runs once, during `tryvox_client_free`, with
 * TRYVOX_BUSY.
 *
 * `timer_out` may be NULL (the hangup cannot then be cancelled); otherwise it receives a
 * handle the caller owns and releases with `tryvox_timer_free`. It is written just before
 * this returns, and with a short delay the callback may already have run by then: keep
 * `*timer_out` valid until the call returns. `call_uuid` is copied.
 * Returns TRYVOX_OK when scheduled; TRYVOX_INVALID_ARGUMENT for a NULL client or
 * callback or a bad id (nothing scheduled, `*timer_out` set to NULL); TRYVOX_BUSY while
 * the client is being freed or when no timer thread can start. Thread-safe.
 */
int tryvox_hangup_after(struct tryvox_client *client,
                        const char *call_uuid,
                        uint32_t delay_ms,
                        tryvox_hangup_callback callback,
                        void *user_data,
                        struct tryvox_timer **timer_out);

/**
 * Cancels a scheduled hangup. Returns TRYVOX_OK when it was cancelled before it fired:
 * nothing is sent and its callback never runs. Returns TRYVOX_BUSY when it is too late
 * (the hangup is firing or fired, or its client was freed): its callback runs, or ran,
 * exactly once. TRYVOX_INVALID_ARGUMENT for NULL. A second cancel returns TRYVOX_BUSY.
 * Cancel and firing never both win. Thread-safe; the handle stays valid until
 * `tryvox_timer_free`.
 */
int tryvox_timer_cancel(struct tryvox_timer *timer);

/**
 * Releases a timer handle. It does not cancel the hangup (call `tryvox_timer_cancel`
 * first for that). NULL is a no-op. Valid before or after the client is freed.
 */
void tryvox_timer_free(struct tryvox_timer *timer);

/**
 * Hangs up `count` calls, at most `max_parallel` at once (0 means 32; values above 1024
 * are capped at 1024), and blocks until all are done. This is the emergency-shutdown
 * path. The batch runs on the client's engine (its event-loop thread) with a budget of
 * its own, beside queued async hangups, never behind them; the calling thread only
 * waits. Each hangup in flight holds one connection, so parallelism is also capped at
 * half the file descriptors the process has free (a hangup that finds the process's
 * descriptor budget full waits for one, until its deadline: see
 * `tryvox_client_new_with_options`); a hangup waiting to retry holds none and its slot goes to the next id.
 *
 * `call_uuids` points to `count` NUL-terminated ids (borrowed for the call);
 * `statuses_out` to `count` ints, where the outcome of `call_uuids[i]` is written to
 * `statuses_out[i]`. Each hangup follows the rules of `tryvox_hangup`, with its own
 * deadline.
 *
 * Returns TRYVOX_OK once every entry is written (individual failures are in
 * `statuses_out`, not in the return value). Returns TRYVOX_INVALID_ARGUMENT, with nothing
 * sent and `statuses_out` untouched, when the client, `call_uuids` or `statuses_out` is
 * NULL (both may be NULL when `count` is 0) or any id is NULL or invalid (the last error
 * names the first bad index). Returns TRYVOX_BUSY, with nothing sent and `statuses_out`
 * untouched, when called from a callback while the client is being freed (as
 * `tryvox_hangup_async` is refused then). Thread-safe.
 */
int tryvox_hangup_many(struct tryvox_client *client,
                       const char *const *call_uuids,
                       size_t count,
                       int *statuses_out,
                       uint32_t max_parallel);

/**
 * Ends every live call (`ringing` or `in-progress`) of the client's account, within its
 * tenant when one is set, or those `sweep`'s filters select: lists them page by page (100
 * a page), hangs them up as `tryvox_hangup_many` does, and lists again until a listing
 * comes back empty. Listing requests follow the retry and deadline rules of
 * `tryvox_hangup`, as each hangup does, and every one of them also ends by the sweep's
 * deadline (`timeout_ms`). Calls that end on their own meanwhile
 * are counted as gone, not as failures; a call still answered 429 after its retries is
 * tried again in up to 3 later rounds before it counts as failed. Bounded whatever the server says: a round keeps
 * at most 100,000 listed ids, pages that only repeat known calls end a listing, and a
 * round that settles no call waits (50 ms, doubling to 1 s) before listing again.
 * Blocks until done: not for a media thread.
 *
 * `sweep` may be NULL (every live call, the defaults); otherwise see tryvox_sweep. Its
 * strings are borrowed for the call. While it runs, the calling thread hears of each
 * call found (`on_listed`) and settled (`on_call`, with its HTTP status) and of the
 * counts at least every 50 ms (`progress`); `max_rate` paces the hangups; a 429 halves
 * the parallelism (`backoffs`); `dry_run` lists and ends nothing; `tryvox_sweep_stop`
 * (from a signal handler or another thread) stops it starting hangups.
 *
 * Returns TRYVOX_OK only when a final listing found no live call (a dry run: when its
 * listing completed). TRYVOX_TIMEOUT when the sweep's deadline passed first;
 * TRYVOX_BUSY, once the hangups in flight are in, when `tryvox_sweep_stop` stopped it. The status of a listing's failure. When only calls
 * that could not be ended are left, one of their statuses, chosen by a fixed order so
 * that the same failures give the same status on every run: TRYVOX_UNAUTHORIZED,
 * TRYVOX_FORBIDDEN, TRYVOX_TLS_ERROR, TRYVOX_PROTOCOL_ERROR, TRYVOX_INVALID_ARGUMENT,
 * TRYVOX_INTERNAL_ERROR, TRYVOX_SERVER_ERROR, TRYVOX_RATE_LIMITED, TRYVOX_NETWORK_ERROR,
 * TRYVOX_TIMEOUT, TRYVOX_BUSY (what no later sweep cures and the caller must act on
 * first, then the passing failures from the most to the least telling); the last error,
 * HTTP status and code are those of the smallest call id with that status, and the
 * message counts the failures by status. TRYVOX_INVALID_ARGUMENT,
 * with nothing sent, for a NULL client, a `size` too small for the inputs or a bad
 * filter; TRYVOX_BUSY from a callback while the client is being freed. The counts in
 * `sweep` are right in every case, and the last error says what happened.
 * Thread-safe.
 */
int tryvox_hangup_all(struct tryvox_client *client,
                      struct tryvox_sweep *sweep);

/**
 * Hangs up exactly the `count` ids of `call_uuids` (borrowed for the call), steered as
 * a sweep is: `sweep`'s `max_parallel` (lowered on 429 and raised again), `max_rate`,
 * `timeout_ms` (0 here means no deadline of its own: each hangup has the client's
 * timeout; no hangup starts after a nonzero one), `progress`, `on_call` (every id, as it
 * settles: the way to see outcomes and HTTP statuses while a large batch runs) and
 * `stop`; `from`, `to`, `direction` and `dry_run` must be unset. `sweep` may be NULL
 * (the defaults, nothing reported). Blocks until done: not for a media thread.
 *
 * `statuses_out` and `http_statuses_out`, each NULL or `count` ints, receive the outcome
 * of `call_uuids[i]` at index i: its status, and the last HTTP status seen (0 if none).
 * An id never sent (stopped, or the deadline passed first) has TRYVOX_BUSY or
 * TRYVOX_TIMEOUT and HTTP status 0. The counts in `sweep`: `ended`, `already_gone`,
 * `failed` (the never-sent included), `still_live` (never sent), `found` (`count`),
 * `rate_limited`, `backoffs`, `parallel`.
 *
 * Returns TRYVOX_OK once every entry is written (outcomes are in the arrays, not in the
 * return value). TRYVOX_INVALID_ARGUMENT, with nothing sent and nothing written, for a
 * NULL client, `call_uuids` NULL with `count` > 0, an invalid id (the last error names
 * the first bad index), a `size` too small, or a filter or `dry_run` set; TRYVOX_BUSY,
 * nothing sent, from a callback while the client is being freed. Thread-safe.
 */
int tryvox_hangup_each(struct tryvox_client *client,
                       const char *const *call_uuids,
                       size_t count,
                       int *statuses_out,
                       int *http_statuses_out,
                       struct tryvox_sweep *sweep);

/**
 * Asks the `tryvox_hangup_all` or `tryvox_hangup_each` running with `sweep` to start no
 * more hangups: it sees the request within about 50 ms; hangups in flight finish and are
 * reported (`on_call`, the counts), then it returns (a sweep: TRYVOX_BUSY, "the sweep
 * was stopped"). Async-signal-safe (an atomic store: no lock, no allocation, the
 * thread's last error untouched): call it from a SIGINT handler or any thread. Setting
 * `stop` before a sweep starts makes it start none. Returns TRYVOX_OK, or
 * TRYVOX_INVALID_ARGUMENT when `sweep` is NULL, misaligned, or its `size` does not
 * reach `stop`.
 */
int tryvox_sweep_stop(struct tryvox_sweep *sweep);

/**
 * Fills `out` with `client`'s statistics (see tryvox_stats); set `out->size` first.
 *
 * Returns TRYVOX_OK, or TRYVOX_INVALID_ARGUMENT when `client` or `out` is NULL or
 * `out->size` is smaller than the `size` field itself (nothing written then). Reading
 * takes no lock: it may run on any thread while hangups are running, as often as wanted.
 * Thread-safe.
 */
int tryvox_client_stats(const struct tryvox_client *client, struct tryvox_stats *out);

/**
 * The message of this thread's last fallible library call: "" if it succeeded, else a
 * sentence a person can act on. Never NULL, never contains the API key.
 *
 * The pointer is owned by the library and stays valid until the next library call on
 * the same thread; copy it to keep it. Threads never see each other's errors.
 */
const char *tryvox_last_error(void);

/**
 * The server's error code from this thread's last fallible call (e.g. "call_not_found",
 * "call_already_ended", "NOT_FOUND"), or "" if there was none. Never NULL; valid until
 * the next library call on the same thread.
 */
const char *tryvox_last_error_code(void);

/**
 * The last HTTP status this thread's last fallible call saw (e.g. 204, 404), or 0 if no
 * response arrived (bad input, network failure, timeout before an answer).
 */
int tryvox_last_http_status(void);

/**
 * A short static description of a status, e.g. "call not found". Unknown numbers give
 * "unknown status". Never NULL; never free it. Thread-safe.
 */
const char *tryvox_status_str(int status);

/**
 * The library's version, e.g. "0.1.0". Static; never NULL; never free it.
 */
const char *tryvox_version(void);

/**
 * Creates an options object with the defaults (see each setter). Owned by the caller:
 * release it with `tryvox_options_free` (it may be freed as soon as a client was built
 * from it). Returns NULL only if memory is exhausted.
 */
struct tryvox_options *tryvox_options_new(void);

/**
 * Frees an options object. NULL is a no-op. Clients built from it are unaffected.
 */
void tryvox_options_free(struct tryvox_options *options);

/**
 * Sets the API base URL (default "https://api.tryvox.io"): `http` or `https`, a host, an
 * optional port and an optional path prefix; no user info, query or fragment. Plain http
 * is accepted here but refused when the client is built, unless the host is loopback
 * (127.0.0.0/8, ::1, localhost) or `tryvox_options_allow_insecure_http` was set.
 * At most 8192 bytes. The string is copied. Returns TRYVOX_OK or
 * TRYVOX_INVALID_ARGUMENT (NULL, bad or too long URL).
 */
int tryvox_options_set_base_url(struct tryvox_options *o, const char *url);

/**
 * Sets the total time for one hangup, retries and waits included, in milliseconds
 * (default 10000). 0 is TRYVOX_INVALID_ARGUMENT.
 */
int tryvox_options_set_timeout_ms(struct tryvox_options *o, uint32_t ms);

/**
 * Sets the time allowed to set up one connection (TCP, proxy, TLS), in milliseconds
 * (default 3000; never more than what is left of the total timeout). 0 is
 * TRYVOX_INVALID_ARGUMENT.
 */
int tryvox_options_set_connect_timeout_ms(struct tryvox_options *o, uint32_t ms);

/**
 * Sets how many more attempts a hangup may make after the first (default 2; 0 disables
 * retries; at most 100, above is TRYVOX_INVALID_ARGUMENT). All attempts share the one
 * total timeout.
 */
int tryvox_options_set_max_retries(struct tryvox_options *o, uint32_t n);

/**
 * Sets the most connections async hangups (tryvox_hangup_async, scheduled hangups) hold
 * to the server at once (default 64; 1 to 1024, else TRYVOX_INVALID_ARGUMENT). A client
 * talks to one host, so this is its per-host limit, so a burst does not overrun a small
 * server (or a proxy's client limit): hangups beyond it wait, in order and within their
 * own timeout, for a connection to come free (a keep-alive connection goes to the next
 * waiting hangup at once). A tryvox_hangup_many call uses its own `max_parallel`
 * connections beside them (it never waits behind async backlog; an explicit value above
 * this limit is honoured). Whatever the limit, new connections are set up within a
 * connect window, as TCP's slow start: 4 connects in progress at first, one more for
 * each that succeeds (up to 256), half as many after one times out; so a server with a
 * small listen backlog is not sent more connects than it can queue, and a fast one gets
 * its connections within a few round trips. The blocking tryvox_hangup uses one
 * connection per calling thread, outside this limit. tryvox_client_free starts every
 * queued async hangup.
 *
 * A queued hangup's timeout runs while it waits: an async hangup still queued behind the
 * limit when its timeout passes ends with TRYVOX_TIMEOUT without any request having been
 * sent for it (the call was not ended by it; hanging it up again is safe). A burst
 * larger than the limit can take as long as (burst / limit) server round trips: raise
 * the limit, or the timeout, so that the whole burst fits in its timeout at the
 * server's latency.
 */
int tryvox_options_set_max_connections(struct tryvox_options *o, uint32_t n);

/**
 * Sends `X-Tenant-ID: tenant` with every request. `tenant` must be 1 to 512 visible ASCII
 * characters (0x21-0x7E); it is copied. Returns TRYVOX_OK or TRYVOX_INVALID_ARGUMENT.
 */
int tryvox_options_set_tenant_id(struct tryvox_options *o, const char *tenant);

/**
 * Appends `product` (e.g. "my-pbx/2.3") to the library's User-Agent, which becomes
 * "libtryvox/<version> <product>". 1 to 256 printable ASCII characters; copied.
 * Returns TRYVOX_OK or TRYVOX_INVALID_ARGUMENT.
 */
int tryvox_options_set_user_agent(struct tryvox_options *o, const char *product);

/**
 * Chooses the roots trusted for the API's certificate when no CA file is set (a CA file
 * replaces them all): one of the tryvox_trust_store values; the default is
 * TRYVOX_TRUST_SYSTEM_OR_BUNDLED. The roots are read once, by
 * `tryvox_client_new*` for an https base URL (a certificate installed later
 * counts for clients built later), bounded: regular files only (a FIFO or device named
 * by SSL_CERT_FILE is skipped unread, never waited on), at most 4 MiB a file and 64 MiB
 * or 100,000 directory entries in all. The options' log callback, if any, receives one
 * info line (level 2) then saying which roots the client trusts and how many, and a
 * warn line (level 1) naming the directory if the store was read only in part. Returns
 * TRYVOX_OK, or TRYVOX_INVALID_ARGUMENT for another value (nothing changed).
 */
int tryvox_options_set_trust_store(struct tryvox_options *o, int store);

/**
 * Trusts the certificates in the PEM file at `pem_path` instead of any trust store (see
 * `tryvox_options_set_trust_store`). The path is copied; the file is read by `tryvox_client_new_with_options`,
 * which fails at once with TRYVOX_INVALID_ARGUMENT, nothing sent and the last error
 * naming the path, if it is not a regular file (a FIFO, device, socket or directory is
 * refused, never waited on or read), is larger than 1 MiB (a bundle of every public CA
 * is about 220 KiB), cannot be read or holds no certificate.
 */
int tryvox_options_set_ca_file(struct tryvox_options *o,
                               const char *pem_path);

/**
 * Sends requests through the HTTP proxy `proxy_url` ("http://host:port", or
 * "http://user:password@host:port" for Basic `Proxy-Authorization`, percent-encoded
 * as in any URL). https requests are tunnelled with CONNECT, so the proxy never sees
 * the key; plain-http requests go to the proxy itself in absolute form
 * (`DELETE http://host:port/path HTTP/1.1`, as libcurl sends them: proxies such as
 * Squid allow CONNECT to port 443 only), key included. Environment variables such as
 * HTTPS_PROXY are never consulted. Copied. Returns TRYVOX_OK or
 * TRYVOX_INVALID_ARGUMENT. A proxy that cannot be reached gives TRYVOX_NETWORK_ERROR
 * at hangup time, with a message naming the proxy's host and port (never its
 * credentials); so does a proxy that refuses the request: a CONNECT answered with
 * anything but 2xx, or a 407 (Proxy Authentication Required) to a plain-http request,
 * whose HTTP status is then 407; neither is retried. A forwarding proxy's 502 or 504
 * (it could not reach the API) is TRYVOX_SERVER_ERROR, retried as one, its message
 * naming the proxy.
 */
int tryvox_options_set_proxy(struct tryvox_options *o, const char *proxy_url);

/**
 * Non-zero allows a plain `http` base URL to a host that is not loopback (default 0):
 * the API key then crosses the network in clear text. Only for trusted networks.
 */
int tryvox_options_allow_insecure_http(struct tryvox_options *o, int allow);

/**
 * Sends the library's log lines to `cb` with `user_data` (see tryvox_log_callback).
 * NULL `cb` turns logging off (the default). `user_data` is passed through untouched and
 * must stay valid for as long as any client built from these options exists.
 */
int tryvox_options_set_log_callback(struct tryvox_options *o,
                                    tryvox_log_callback cb,
                                    void *user_data);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* TRYVOX_H */
