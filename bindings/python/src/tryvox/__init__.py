"""tryvox: hang up TryVox calls through libtryvox (ctypes).

Install the wheel (it bundles libtryvox.so.0) and import; nothing else to set:

    import asyncio, os, tryvox

    key = os.environ["TRYVOX_API_KEY"]
    with tryvox.Client("AC123456", key) as c:            # blocking API
        try:
            c.hangup("some-call-uuid")
        except tryvox.CallGone:                          # NotFound or AlreadyEnded
            pass

    async def main() -> None:                            # asyncio API
        async with tryvox.Client("AC123456", key) as c:
            await c.hangup_async("some-call-uuid")
            statuses = await c.hangup_many_async(["id-1", "id-2"])
            swept = await c.hangup_all_async(from_="+14155550100")   # every live call from it
            print(swept.ended, c.stats().hangups(tryvox.OK))

    asyncio.run(main())

The library is loaded from the package's own directory first (the copy the wheel bundles),
then from $TRYVOX_LIB (a path), then from the system's library path. A Client is
thread-safe: ctypes releases the GIL during each foreign call, so threads really do hang
up in parallel on one client. Close it (or use `with` / `async with`) when done.
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import ctypes.util
import functools
import itertools
import math
import logging
import os
import threading
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

__all__ = [
    "Client", "TryvoxError", "CallGone", "NotFound", "AlreadyEnded", "InvalidArgument",
    "Stats", "SweepResult", "SweepProgress", "STATUS_NAMES",
    "status_str", "version", "library_path", "LogCallback",
    "LOG_ERROR", "LOG_WARN", "LOG_INFO", "LOG_DEBUG",
    "TRUST_SYSTEM_OR_BUNDLED", "TRUST_SYSTEM", "TRUST_BUNDLED",
    "OK", "NOT_FOUND", "ALREADY_ENDED", "INVALID_ARGUMENT", "UNAUTHORIZED", "FORBIDDEN",
    "RATE_LIMITED", "SERVER_ERROR", "TIMEOUT", "NETWORK_ERROR", "TLS_ERROR",
    "PROTOCOL_ERROR", "INTERNAL_ERROR", "BUSY",
]

# Status numbers, in the order (and with the values) of include/tryvox.h's tryvox_status.
OK, NOT_FOUND, ALREADY_ENDED, INVALID_ARGUMENT, UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, \
    SERVER_ERROR, TIMEOUT, NETWORK_ERROR, TLS_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, BUSY = range(14)

#: The names of the status numbers above, indexed by number ("OK", "NOT_FOUND", ...).
STATUS_NAMES: Tuple[str, ...] = (
    "OK", "NOT_FOUND", "ALREADY_ENDED", "INVALID_ARGUMENT", "UNAUTHORIZED", "FORBIDDEN",
    "RATE_LIMITED", "SERVER_ERROR", "TIMEOUT", "NETWORK_ERROR", "TLS_ERROR", "PROTOCOL_ERROR",
    "INTERNAL_ERROR", "BUSY")

# Log levels passed to a log callback.
LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG = range(4)

# Values of Client's trust_store: which roots verify the API's certificate when no
# ca_file is set (include/tryvox.h's tryvox_trust_store). Strings, as hangup_all's
# direction: a repr or a config file reads the same.
#: The default: the system's trust store (SSL_CERT_FILE, SSL_CERT_DIR, else the
#: distribution's bundle), else the roots compiled into the library (Mozilla's).
TRUST_SYSTEM_OR_BUNDLED = "system_or_bundled"
#: The system's trust store only: Client() raises TryvoxError (TLS_ERROR) if it has none.
TRUST_SYSTEM = "system"
#: Only the roots compiled into the library (Mozilla's); the system's store is not read.
TRUST_BUNDLED = "bundled"
_TRUST_STORES = {TRUST_SYSTEM_OR_BUNDLED: 0, TRUST_SYSTEM: 1, TRUST_BUNDLED: 2}

#: A log callback: called with (level, message), on whichever thread does the work.
LogCallback = Callable[[int, str], None]

_HERE = os.path.dirname(os.path.abspath(__file__))
_BUNDLED_NAMES = ("libtryvox.so.0", "libtryvox.so", "libtryvox.0.dylib", "libtryvox.dylib", "tryvox.dll")

_HangupCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_char_p)
_LogCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

# The length of tryvox_stats.hangups_by_status (room for statuses added later).
_STATUS_SLOTS = 32


class _CStats(ctypes.Structure):
    """struct tryvox_stats, field for field (size-versioned: size = sizeof before the call)."""
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("hangups_by_status", ctypes.c_uint64 * _STATUS_SLOTS),
        ("attempts", ctypes.c_uint64),
        ("retries_connection", ctypes.c_uint64),
        ("retries_rate_limited", ctypes.c_uint64),
        ("retries_server_error", ctypes.c_uint64),
        ("in_flight", ctypes.c_uint64),
        ("connections_open", ctypes.c_uint64),
        ("connections_opened", ctypes.c_uint64),
        ("latency_p50_us", ctypes.c_uint64),
        ("latency_p90_us", ctypes.c_uint64),
        ("latency_p99_us", ctypes.c_uint64),
        ("latency_max_us", ctypes.c_uint64),
    ]


class _CSweep(ctypes.Structure):
    """struct tryvox_sweep (fields below, after the callback type that points to it)."""


_SweepProgressCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_CSweep))
_CSweep._fields_ = [
    ("size", ctypes.c_size_t),
    ("from_", ctypes.c_char_p),  # `from` in C
    ("to", ctypes.c_char_p),
    ("direction", ctypes.c_char_p),
    ("max_parallel", ctypes.c_uint32),
    ("timeout_ms", ctypes.c_uint32),
    ("progress", _SweepProgressCallback),
    ("user_data", ctypes.c_void_p),
    ("ended", ctypes.c_uint64),
    ("already_gone", ctypes.c_uint64),
    ("failed", ctypes.c_uint64),
    ("still_live", ctypes.c_uint64),
    ("listings", ctypes.c_uint64),
]


def _candidates() -> List[str]:
    found: List[str] = []
    for name in _BUNDLED_NAMES:
        path = os.path.join(_HERE, name)
        if os.path.isfile(path):
            found.append(path)
            break
    env = os.environ.get("TRYVOX_LIB")
    if env:
        found.append(env)
    system = ctypes.util.find_library("tryvox")
    if system:
        found.append(system)
    found.append("libtryvox.so.0")
    return found


def _load() -> ctypes.CDLL:
    errors = []
    lib = None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    if lib is None:
        raise OSError("libtryvox not found; install the tryvox wheel (it bundles the library), "
                      "or set TRYVOX_LIB to its path. Tried: " + "; ".join(errors))
    c_char_p, c_int, c_void_p, c_uint32, c_size_t = (ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                                                      ctypes.c_uint32, ctypes.c_size_t)
    sigs: Dict[str, Tuple[Any, List[Any]]] = {
        "tryvox_client_new_with_options": (c_void_p, [c_char_p, c_char_p, c_void_p]),
        "tryvox_client_free": (None, [c_void_p]),
        "tryvox_hangup": (c_int, [c_void_p, c_char_p]),
        "tryvox_hangup_async": (c_int, [c_void_p, c_char_p, _HangupCallback, c_void_p]),
        "tryvox_hangup_many": (c_int, [c_void_p, ctypes.POINTER(c_char_p), c_size_t, ctypes.POINTER(c_int),
                                       c_uint32]),
        "tryvox_hangup_all": (c_int, [c_void_p, ctypes.POINTER(_CSweep)]),
        "tryvox_client_stats": (c_int, [c_void_p, ctypes.POINTER(_CStats)]),
        "tryvox_last_error": (c_char_p, []),
        "tryvox_last_error_code": (c_char_p, []),
        "tryvox_last_http_status": (c_int, []),
        "tryvox_status_str": (c_char_p, [c_int]),
        "tryvox_version": (c_char_p, []),
        "tryvox_options_new": (c_void_p, []),
        "tryvox_options_free": (None, [c_void_p]),
        "tryvox_options_set_base_url": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_timeout_ms": (c_int, [c_void_p, c_uint32]),
        "tryvox_options_set_connect_timeout_ms": (c_int, [c_void_p, c_uint32]),
        "tryvox_options_set_max_retries": (c_int, [c_void_p, c_uint32]),
        "tryvox_options_set_tenant_id": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_user_agent": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_trust_store": (c_int, [c_void_p, c_int]),
        "tryvox_options_set_ca_file": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_proxy": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_allow_insecure_http": (c_int, [c_void_p, c_int]),
        "tryvox_options_set_log_callback": (c_int, [c_void_p, _LogCallback, c_void_p]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


_lib = _load()


def library_path() -> str:
    """The path (or name) libtryvox was loaded from."""
    return str(_lib._name)


class TryvoxError(Exception):
    """A failed call: .status (a number above), .http_status, .code (the server's), str() the message.

    Errors from hangup_async carry no server code (.code is ""). Errors from hangup_all
    carry what the sweep did in .sweep (a SweepResult; None for every other call)."""

    sweep: Optional["SweepResult"] = None

    def __init__(self, status: int, message: str, http_status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status, self.http_status, self.code = status, http_status, code


class CallGone(TryvoxError):
    """The call is not running: base of NotFound and AlreadyEnded."""


class NotFound(CallGone):
    """404: no such call."""


class AlreadyEnded(CallGone):
    """404 call_already_ended: the call was over already."""


class InvalidArgument(TryvoxError, ValueError):
    """A bad id, key, option value, or a closed client. Nothing was sent."""


_CLASSES = {NOT_FOUND: NotFound, ALREADY_ENDED: AlreadyEnded, INVALID_ARGUMENT: InvalidArgument}


def _error(status: int, message: str, http_status: int = 0, code: str = "") -> TryvoxError:
    return _CLASSES.get(status, TryvoxError)(status, message, http_status, code)


def status_str(status: int) -> str:
    """The library's text for a status number, e.g. "call not found"."""
    return (_lib.tryvox_status_str(status) or b"").decode()


def version() -> str:
    """The loaded libtryvox's version, e.g. "0.1.0"."""
    return (_lib.tryvox_version() or b"").decode()


def _last_error(rc: int) -> TryvoxError:
    # ctypes calls run on this OS thread, so its last error is the one just set.
    return _error(rc, (_lib.tryvox_last_error() or b"").decode(errors="replace"),
                  _lib.tryvox_last_http_status(),
                  (_lib.tryvox_last_error_code() or b"").decode(errors="replace"))


def _check(rc: int) -> None:
    if rc != OK:
        raise _last_error(rc)


@dataclass(frozen=True)
class Stats:
    """A snapshot of a client's statistics (tryvox_client_stats), from Client.stats().

    Counters only grow over the client's life: subtract two snapshots for a window.
    in_flight and connections_open are gauges. Latencies are whole hangups (retries and
    waits included) in SECONDS (floats, microsecond resolution); the percentiles are upper
    edges of log-linear buckets (at most 19% above the true value), 0.0 before the first
    hangup; latency_max is exact. A hangup refused for an invalid id counts as
    INVALID_ARGUMENT; a hangup_many or hangup_async refused as a whole counts nothing.
    """

    #: Finished hangups by final status, indexed by status number (32 slots): see hangups().
    hangups_by_status: Tuple[int, ...]
    #: HTTP attempts: one per hangup sent, plus one per retry.
    attempts: int
    #: Retries after a connection failed before any response.
    retries_connection: int
    #: Retries after a 429.
    retries_rate_limited: int
    #: Retries after a 500, 502, 503 or 504.
    retries_server_error: int
    #: Hangups running now (a gauge).
    in_flight: int
    #: TCP connections open now (a gauge).
    connections_open: int
    #: TCP connections opened over the client's life.
    connections_opened: int
    #: Latency of finished hangups, in seconds: percentiles and the (exact) maximum.
    latency_p50: float
    latency_p90: float
    latency_p99: float
    latency_max: float

    def hangups(self, status: int) -> int:
        """Finished hangups whose final status is `status` (e.g. tryvox.NOT_FOUND); 0 for a
        number out of range."""
        return self.hangups_by_status[status] if 0 <= status < len(self.hangups_by_status) else 0

    @property
    def total_hangups(self) -> int:
        """Finished hangups, whatever their status."""
        return sum(self.hangups_by_status)

    @property
    def retries(self) -> int:
        """Retries made for any cause."""
        return self.retries_connection + self.retries_rate_limited + self.retries_server_error

    def hangups_by_name(self) -> Dict[str, int]:
        """The non-zero counts keyed by status name ("OK", "NOT_FOUND", ...; "STATUS_<n>"
        for a number this package does not name)."""
        return {(STATUS_NAMES[i] if i < len(STATUS_NAMES) else f"STATUS_{i}"): n
                for i, n in enumerate(self.hangups_by_status) if n}


@dataclass(frozen=True)
class SweepResult:
    """What a hangup_all did (the counts of struct tryvox_sweep)."""

    #: Calls this sweep hung up.
    ended: int
    #: Calls that had ended on their own when their hangup arrived (404).
    already_gone: int
    #: Calls whose hangup failed (not tried again by this sweep).
    failed: int
    #: Live calls left (0 on success).
    still_live: int
    #: Complete listings of the live calls made.
    listings: int


#: A hangup_all progress callback: called with the counts so far after each listing and
#: each batch of hangups, on the thread running the sweep.
SweepProgress = Callable[[SweepResult], None]


def _sweep_result(s: "_CSweep") -> SweepResult:
    return SweepResult(int(s.ended), int(s.already_gone), int(s.failed), int(s.still_live),
                       int(s.listings))


def _opt_enc(name: str, value: Optional[str]) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    return _enc(value)


def _timeout_ms(timeout: Optional[float]) -> int:
    """Seconds to the sweep's timeout_ms (0: the library's default, 60 s)."""
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgument(INVALID_ARGUMENT, f"timeout must be a number of seconds above 0, not {timeout!r}")
    ms = math.ceil(timeout * 1000)
    if ms > 0xFFFFFFFF:
        raise InvalidArgument(INVALID_ARGUMENT, f"timeout must be at most {0xFFFFFFFF / 1000:.0f} s, not {timeout!r}")
    return ms


def _enc(s: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"expected str, got {type(s).__name__}")
    if "\0" in s:
        raise InvalidArgument(INVALID_ARGUMENT, "string contains NUL")
    return s.encode()


def _u32(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidArgument(INVALID_ARGUMENT, f"{name} must be an int from 0 to 2**32-1, not {value!r}")
    return value


# The asyncio bridge. One C callback for the whole module (a module global, so it lives as
# long as the library can call it); each request's user_data is a key into _pending, which
# holds the loop and the future until the callback pops it: a request is settled at most
# once, and the library guarantees its callback runs exactly once.
_pending: Dict[int, Tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]", "Client"]] = {}
_pending_lock = threading.Lock()
_keys = itertools.count(1)
_in_log_callback = threading.local()
_in_progress_callback = threading.local()


def _settle(fut: "asyncio.Future[int]", status: int, http_status: int, message: str) -> None:
    """Runs on the future's loop. A cancelled (or otherwise finished) future is left alone."""
    if fut.done():
        return
    if status == OK:
        fut.set_result(http_status)
    else:
        fut.set_exception(_error(status, message, http_status))


def _on_hangup(user_data: Optional[int], call_uuid: Optional[bytes], status: int, http_status: int,
               message: Optional[bytes]) -> None:
    # Runs on a library thread. Never raises into C; never calls into a closed loop.
    try:
        with _pending_lock:
            entry = _pending.pop(user_data or 0, None)
            if entry is not None:
                entry[2]._in_flight -= 1
        if entry is None:
            return
        loop, fut, _ = entry
        if loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_settle, fut, status, http_status,
                                      (message or b"").decode(errors="replace"))
        except RuntimeError:
            pass  # the loop closed between the check and the call: nobody is waiting
    except BaseException:  # noqa: B036 - an exception cannot cross into the library
        pass


_HANGUP_CB = _HangupCallback(_on_hangup)

_PY_LEVELS = {LOG_ERROR: logging.ERROR, LOG_WARN: logging.WARNING, LOG_INFO: logging.INFO,
              LOG_DEBUG: logging.DEBUG}


def _log_trampoline(fn: LogCallback) -> Any:
    def call(_user_data: Optional[int], level: int, message: Optional[bytes]) -> None:
        _in_log_callback.active = True
        try:
            fn(level, (message or b"").decode(errors="replace"))
        finally:
            _in_log_callback.active = False
    return _LogCallback(call)


_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Free clients while the interpreter still runs threads: a library thread delivering a
    # callback during finalization could otherwise wait forever for the GIL.
    for c in list(_live_clients):
        c.close()


class Client:
    """A client for one TryVox account. Thread-safe; usable from any number of threads and
    event loops at once. Every option of the C API is a keyword argument; None (or False)
    keeps the library's default."""

    def __init__(self, auth_id: str, api_key: str, base_url: Optional[str] = None,
                 timeout_ms: Optional[int] = None, max_retries: Optional[int] = None,
                 tenant_id: Optional[str] = None, user_agent: Optional[str] = None,
                 ca_file: Optional[str] = None, proxy: Optional[str] = None, *,
                 connect_timeout_ms: Optional[int] = None, allow_insecure_http: bool = False,
                 log_callback: Union[LogCallback, logging.Logger, None] = None,
                 trust_store: Optional[str] = None) -> None:
        """auth_id: the account id; api_key: its secret key (never logged nor kept in Python).

        base_url: default "https://api.tryvox.io"; plain http only to loopback unless
        allow_insecure_http=True. timeout_ms: total per hangup, retries included (default
        10000). connect_timeout_ms: per connection (default 3000). max_retries: default 2.
        tenant_id: sent as X-Tenant-ID. user_agent: appended to the library's.
        trust_store: the roots that verify the API's certificate: TRUST_SYSTEM_OR_BUNDLED
        ("system_or_bundled", the default: the system's trust store, else Mozilla's roots
        compiled into the library), TRUST_SYSTEM ("system": the system's only; Client()
        raises TryvoxError, status TLS_ERROR, if it has none) or TRUST_BUNDLED ("bundled");
        anything else raises InvalidArgument. ca_file: a PEM file of roots to trust instead
        of any trust store. proxy: "http://host:port".
        log_callback: fn(level, message) (levels LOG_ERROR..LOG_DEBUG), or a logging.Logger;
        it runs on library threads too, must be thread-safe, and must not close this client.
        """
        self._p: Optional[int] = None
        self._cond = threading.Condition()
        self._users = 0
        self._closing = False
        self._in_flight = 0
        self._log_cb: Any = None
        if isinstance(log_callback, logging.Logger):
            logger = log_callback
            log_callback = lambda level, msg: logger.log(_PY_LEVELS.get(level, logging.DEBUG), "%s", msg)  # noqa: E731
        # Checked before anything is built: an unknown store is a caller's bug, never a default.
        store = _TRUST_STORES.get(trust_store) if isinstance(trust_store, str) else None
        if trust_store is not None and store is None:
            raise InvalidArgument(INVALID_ARGUMENT, f"trust_store must be one of {sorted(_TRUST_STORES)}, "
                                                    f"not {trust_store!r}")
        o = _lib.tryvox_options_new()
        if not o:
            raise MemoryError("tryvox_options_new failed")
        try:
            for setter, value in [(_lib.tryvox_options_set_base_url, base_url),
                                  (_lib.tryvox_options_set_tenant_id, tenant_id),
                                  (_lib.tryvox_options_set_user_agent, user_agent),
                                  (_lib.tryvox_options_set_ca_file, ca_file),
                                  (_lib.tryvox_options_set_proxy, proxy)]:
                if value is not None:
                    _check(setter(o, _enc(value)))
            for setter, name, number in [(_lib.tryvox_options_set_timeout_ms, "timeout_ms", timeout_ms),
                                         (_lib.tryvox_options_set_connect_timeout_ms, "connect_timeout_ms",
                                          connect_timeout_ms),
                                         (_lib.tryvox_options_set_max_retries, "max_retries", max_retries)]:
                if number is not None:
                    _check(setter(o, _u32(name, number)))
            if allow_insecure_http:
                _check(_lib.tryvox_options_allow_insecure_http(o, 1))
            if store is not None:
                _check(_lib.tryvox_options_set_trust_store(o, store))
            if log_callback is not None:
                # Kept on the client until tryvox_client_free has returned.
                self._log_cb = _log_trampoline(log_callback)
                _check(_lib.tryvox_options_set_log_callback(o, self._log_cb, None))
            p = _lib.tryvox_client_new_with_options(_enc(auth_id), _enc(api_key), o)
            if not p:
                _check(INVALID_ARGUMENT)
            self._p = p
        finally:
            _lib.tryvox_options_free(o)
        _live_clients.add(self)

    # A close() waits for every native call in progress on this client (a bulk call left
    # running in an executor after its awaiting task was cancelled, for one) before it
    # frees the client; calls after close() raise InvalidArgument.
    def _acquire(self) -> int:
        with self._cond:
            if self._p is None or self._closing:
                raise InvalidArgument(INVALID_ARGUMENT, "the client is closed")
            self._users += 1
            return self._p

    def _release(self) -> None:
        with self._cond:
            self._users -= 1
            if self._users == 0:
                self._cond.notify_all()

    def hangup(self, call_uuid: str) -> int:
        """Ends the call; returns the HTTP status (204). Raises TryvoxError otherwise
        (CallGone when there was no running call). Blocks: on an event loop use hangup_async."""
        uid = _enc(call_uuid)
        p = self._acquire()
        try:
            _check(_lib.tryvox_hangup(p, uid))
            return int(_lib.tryvox_last_http_status())
        finally:
            self._release()

    def hangup_many(self, call_uuids: Iterable[str], max_parallel: int = 0) -> List[int]:
        """Ends every call, at most max_parallel at once (0: the library's default); returns
        one status number per id, in order (OK, NOT_FOUND, ...). Raises InvalidArgument,
        with nothing sent, if any id is invalid. Blocks: on an event loop use hangup_many_async."""
        return self._hangup_many([_enc(i) for i in call_uuids], max_parallel)

    def _hangup_many(self, ids: List[bytes], max_parallel: int) -> List[int]:
        n = len(ids)
        if n == 0:
            return []
        arr = (ctypes.c_char_p * n)(*ids)
        out = (ctypes.c_int * n)()
        p = self._acquire()
        try:
            _check(_lib.tryvox_hangup_many(p, arr, n, out, _u32("max_parallel", max_parallel)))
        finally:
            self._release()
        return list(out)

    async def hangup_async(self, call_uuid: str) -> int:
        """As hangup, without blocking the event loop: the request is queued in the library
        and its callback settles the awaited future through loop.call_soon_threadsafe.
        Cancelling the await does not stop the request (a hangup cannot be taken back)."""
        uid = _enc(call_uuid)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        key = next(_keys)
        p = self._acquire()
        try:
            with _pending_lock:
                _pending[key] = (loop, fut, self)
                self._in_flight += 1
            rc = _lib.tryvox_hangup_async(p, uid, _HANGUP_CB, key)
            if rc != OK:
                # Refused: the callback will never run. Read this thread's error first.
                err = _error(rc, (_lib.tryvox_last_error() or b"").decode(errors="replace"))
                with _pending_lock:
                    if _pending.pop(key, None) is not None:
                        self._in_flight -= 1
                raise err
        finally:
            self._release()
        return await fut

    async def hangup_many_async(self, call_uuids: Iterable[str], max_parallel: int = 0,
                                executor: Optional[Executor] = None) -> List[int]:
        """As hangup_many, run in `executor` (default: the loop's) so the loop keeps running.
        If the await is cancelled the bulk call still completes; close() waits for it."""
        ids = [_enc(i) for i in call_uuids]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._hangup_many, ids, max_parallel)

    def stats(self) -> Stats:
        """The client's statistics now (tryvox_client_stats). Takes no lock in the library:
        call it from any thread, as often as wanted, while hangups run. Raises
        InvalidArgument on a closed client."""
        out = _CStats()
        out.size = ctypes.sizeof(_CStats)
        p = self._acquire()
        try:
            _check(_lib.tryvox_client_stats(p, ctypes.byref(out)))
        finally:
            self._release()
        us = 1_000_000  # microseconds to seconds (a division: 862 us prints as 0.000862)
        return Stats(hangups_by_status=tuple(int(n) for n in out.hangups_by_status),
                     attempts=int(out.attempts),
                     retries_connection=int(out.retries_connection),
                     retries_rate_limited=int(out.retries_rate_limited),
                     retries_server_error=int(out.retries_server_error),
                     in_flight=int(out.in_flight),
                     connections_open=int(out.connections_open),
                     connections_opened=int(out.connections_opened),
                     latency_p50=out.latency_p50_us / us,
                     latency_p90=out.latency_p90_us / us,
                     latency_p99=out.latency_p99_us / us,
                     latency_max=out.latency_max_us / us)

    def hangup_all(self, from_: Optional[str] = None, to: Optional[str] = None,
                   direction: Optional[str] = None, max_parallel: int = 0,
                   timeout: Optional[float] = None,
                   progress: Optional[SweepProgress] = None) -> SweepResult:
        """Ends every live call (ringing or in-progress) of the account, within the client's
        tenant, or those the filters select (tryvox_hangup_all): it lists them, hangs them up
        at most max_parallel at once (0: 32; at most 1024), and lists again until a listing
        comes back empty.

        from_ / to: only calls from / to this number (e.g. "+14155551234"); direction:
        "inbound" or "outbound"; None for any. timeout: the sweep's deadline in seconds
        (None: 60 s); every listing page and hangup of the sweep ends by it. progress: called
        with a SweepResult (the counts so far) after each listing and each batch, on this
        thread; it must not close the client. An exception it raises is re-raised once the
        sweep is over (the sweep itself cannot be stopped from it).

        Returns the counts (a SweepResult) when a final listing found no live call. Raises
        as hangup does otherwise (TryvoxError, status TIMEOUT when the deadline passed
        first, or, when only calls that could not be ended are left, their status first in
        tryvox_hangup_all's fixed order, the same every run; InvalidArgument, nothing sent,
        for a bad filter);
        the exception's .sweep holds the counts, which are right in every case. Blocks: on
        an event loop use hangup_all_async."""
        s = _CSweep()
        s.size = ctypes.sizeof(_CSweep)
        s.from_ = _opt_enc("from_", from_)
        s.to = _opt_enc("to", to)
        s.direction = _opt_enc("direction", direction)
        s.max_parallel = _u32("max_parallel", max_parallel)
        s.timeout_ms = _timeout_ms(timeout)
        raised: List[BaseException] = []
        if progress is not None:
            fn = progress

            def on_progress(_user_data: Optional[int], sweep: Any) -> None:
                # Runs on this thread, inside tryvox_hangup_all. Never raises into C.
                if raised:
                    return
                _in_progress_callback.active = True
                try:
                    fn(_sweep_result(sweep.contents))
                except BaseException as e:  # noqa: B036 - kept and re-raised after the sweep
                    raised.append(e)
                finally:
                    _in_progress_callback.active = False
            cb = _SweepProgressCallback(on_progress)  # alive until the call returns
            s.progress = cb
        p = self._acquire()
        try:
            rc = _lib.tryvox_hangup_all(p, ctypes.byref(s))
            err = _last_error(rc) if rc != OK else None
        finally:
            self._release()
        result = _sweep_result(s)
        if raised:
            raise raised[0]
        if err is not None:
            err.sweep = result
            raise err
        return result

    async def hangup_all_async(self, from_: Optional[str] = None, to: Optional[str] = None,
                               direction: Optional[str] = None, max_parallel: int = 0,
                               timeout: Optional[float] = None,
                               progress: Optional[SweepProgress] = None,
                               executor: Optional[Executor] = None) -> SweepResult:
        """As hangup_all, run in `executor` (default: the loop's) so the loop keeps running.
        `progress` then runs on the executor's thread (use loop.call_soon_threadsafe to
        reach the loop from it). If the await is cancelled the sweep still completes;
        close() waits for it."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.hangup_all, from_, to, direction, max_parallel, timeout, progress)
        return await loop.run_in_executor(executor, call)

    @property
    def pending_async(self) -> int:
        """How many hangup_async requests are queued or running (their callback not yet run)."""
        with _pending_lock:
            return self._in_flight

    @property
    def closed(self) -> bool:
        return self._p is None

    def close(self) -> None:
        """Frees the client: waits for native calls in progress and for queued async hangups
        (whose results are still delivered to loops that are open). Idempotent. Must not be
        called from a log callback."""
        if getattr(_in_log_callback, "active", False):
            raise RuntimeError("a tryvox log callback must not close a client")
        if getattr(_in_progress_callback, "active", False):
            raise RuntimeError("a hangup_all progress callback must not close a client")
        cond = getattr(self, "_cond", None)
        if cond is None:
            return
        with cond:
            if self._p is None or self._closing:
                return
            self._closing = True
            while self._users:
                cond.wait()
            p = self._p
        _lib.tryvox_client_free(p)
        with cond:
            self._p = None
            self._log_cb = None  # no callback runs after tryvox_client_free returns
        _live_clients.discard(self)

    async def aclose(self) -> None:
        """close() in the loop's executor, so waiting for in-flight work does not block the loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<tryvox.Client {'closed' if self._p is None else 'open'}>"
