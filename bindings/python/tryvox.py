"""tryvox: hang up TryVox calls through libtryvox (ctypes).

The library is loaded from $TRYVOX_LIB (a path), else found as "tryvox" on the system's
library path. A Client is thread-safe (the GIL is released during a hangup, since ctypes
drops it around foreign calls); close it (or use `with`) when done.

    with tryvox.Client("AC123456", key) as c:
        try:
            c.hangup(call_uuid)
        except tryvox.CallGone:
            pass  # NotFound or AlreadyEnded: the call is not running either way
"""
import ctypes
import ctypes.util
import os

OK, NOT_FOUND, ALREADY_ENDED, INVALID_ARGUMENT, UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, \
    SERVER_ERROR, TIMEOUT, NETWORK_ERROR, TLS_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, BUSY = range(14)


def _load():
    path = os.environ.get("TRYVOX_LIB") or ctypes.util.find_library("tryvox") or "libtryvox.so.0"
    lib = ctypes.CDLL(path)
    c_char_p, c_int, c_void_p, c_uint32, c_size_t = ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "tryvox_client_new_with_options": (c_void_p, [c_char_p, c_char_p, c_void_p]),
        "tryvox_client_free": (None, [c_void_p]),
        "tryvox_hangup": (c_int, [c_void_p, c_char_p]),
        "tryvox_hangup_many": (c_int, [c_void_p, ctypes.POINTER(c_char_p), c_size_t, ctypes.POINTER(c_int), c_uint32]),
        "tryvox_last_error": (c_char_p, []),
        "tryvox_last_error_code": (c_char_p, []),
        "tryvox_last_http_status": (c_int, []),
        "tryvox_status_str": (c_char_p, [c_int]),
        "tryvox_version": (c_char_p, []),
        "tryvox_options_new": (c_void_p, []),
        "tryvox_options_free": (None, [c_void_p]),
        "tryvox_options_set_base_url": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_timeout_ms": (c_int, [c_void_p, c_uint32]),
        "tryvox_options_set_max_retries": (c_int, [c_void_p, c_uint32]),
        "tryvox_options_set_tenant_id": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_user_agent": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_ca_file": (c_int, [c_void_p, c_char_p]),
        "tryvox_options_set_proxy": (c_int, [c_void_p, c_char_p]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


_lib = _load()


class TryvoxError(Exception):
    """A failed call: .status (a number above), .http_status, .code (the server's), str() the message."""

    def __init__(self, status, message, http_status=0, code=""):
        super().__init__(message)
        self.status, self.http_status, self.code = status, http_status, code


class CallGone(TryvoxError):
    """The call is not running: base of NotFound and AlreadyEnded."""


class NotFound(CallGone):
    pass


class AlreadyEnded(CallGone):
    pass


class InvalidArgument(TryvoxError, ValueError):
    pass


_CLASSES = {NOT_FOUND: NotFound, ALREADY_ENDED: AlreadyEnded, INVALID_ARGUMENT: InvalidArgument}


def status_str(status):
    return _lib.tryvox_status_str(status).decode()


def version():
    return _lib.tryvox_version().decode()


def _check(rc):
    # ctypes calls run on this OS thread, so its last error is the one just set.
    if rc != OK:
        cls = _CLASSES.get(rc, TryvoxError)
        raise cls(rc, _lib.tryvox_last_error().decode(), _lib.tryvox_last_http_status(),
                  _lib.tryvox_last_error_code().decode())


def _enc(s):
    if "\0" in s:
        raise InvalidArgument(INVALID_ARGUMENT, "string contains NUL")
    return s.encode()


class Client:
    def __init__(self, auth_id, api_key, base_url=None, timeout_ms=None, max_retries=None,
                 tenant_id=None, user_agent=None, ca_file=None, proxy=None):
        o = _lib.tryvox_options_new()
        try:
            for setter, value in [(_lib.tryvox_options_set_base_url, base_url), (_lib.tryvox_options_set_tenant_id, tenant_id),
                                  (_lib.tryvox_options_set_user_agent, user_agent), (_lib.tryvox_options_set_ca_file, ca_file),
                                  (_lib.tryvox_options_set_proxy, proxy)]:
                if value is not None:
                    _check(setter(o, _enc(value)))
            if timeout_ms is not None:
                _check(_lib.tryvox_options_set_timeout_ms(o, timeout_ms))
            if max_retries is not None:
                _check(_lib.tryvox_options_set_max_retries(o, max_retries))
            self._p = _lib.tryvox_client_new_with_options(_enc(auth_id), _enc(api_key), o)
            if not self._p:
                _check(INVALID_ARGUMENT)
        finally:
            _lib.tryvox_options_free(o)

    def hangup(self, call_uuid):
        """Ends the call; returns the HTTP status (204). Raises TryvoxError otherwise."""
        _check(_lib.tryvox_hangup(self._p, _enc(call_uuid)))
        return _lib.tryvox_last_http_status()

    def hangup_many(self, call_uuids, max_parallel=0):
        """Ends every call; returns one status number per id, in order."""
        n = len(call_uuids)
        if n == 0:
            return []
        ids = (ctypes.c_char_p * n)(*[_enc(i) for i in call_uuids])
        out = (ctypes.c_int * n)()
        _check(_lib.tryvox_hangup_many(self._p, ids, n, out, max_parallel))
        return list(out)

    def close(self):
        if self._p:
            _lib.tryvox_client_free(self._p)
            self._p = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
