// Package tryvox hangs up TryVox calls through libtryvox (cgo).
//
// The package finds the library with pkg-config (`#cgo pkg-config: tryvox`): install it
// with `make install PREFIX=...` (or use the in-tree build, `make go-pkgconfig`) and put
// the directory holding tryvox.pc on PKG_CONFIG_PATH unless it is one pkg-config searches
// already (e.g. /usr/local/lib/pkgconfig). bindings/go/README.md has the exact commands.
//
// A Client is safe for concurrent use by any number of goroutines; they share one
// connection pool. Three ways to hang up:
//
//   - Hangup blocks the calling goroutine (cgo calls run on their own OS thread, so other
//     goroutines keep running) until an outcome or the client's timeout.
//   - HangupContext also returns when the context is cancelled or its deadline passes.
//   - HangupAsync returns at once with a channel that receives the outcome.
package tryvox

/*
#cgo pkg-config: tryvox
#include <stdlib.h>
#include <stdint.h>
#include "tryvox.h"

// bridge.c: C trampolines from the library's callbacks into the exported Go functions.
int tryvoxgo_set_log(tryvox_options *o, uintptr_t handle);
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// Status is a libtryvox status number.
type Status int

const (
	OK              Status = C.TRYVOX_OK
	NotFound        Status = C.TRYVOX_NOT_FOUND
	AlreadyEnded    Status = C.TRYVOX_ALREADY_ENDED
	InvalidArgument Status = C.TRYVOX_INVALID_ARGUMENT
	Unauthorized    Status = C.TRYVOX_UNAUTHORIZED
	Forbidden       Status = C.TRYVOX_FORBIDDEN
	RateLimited     Status = C.TRYVOX_RATE_LIMITED
	ServerError     Status = C.TRYVOX_SERVER_ERROR
	Timeout         Status = C.TRYVOX_TIMEOUT
	NetworkError    Status = C.TRYVOX_NETWORK_ERROR
	TLSError        Status = C.TRYVOX_TLS_ERROR
	ProtocolError   Status = C.TRYVOX_PROTOCOL_ERROR
	InternalError   Status = C.TRYVOX_INTERNAL_ERROR
	Busy            Status = C.TRYVOX_BUSY
)

func (s Status) String() string { return C.GoString(C.tryvox_status_str(C.int(s))) }

// Sentinel errors, for errors.Is.
var (
	ErrNotFound        = &Error{Status: NotFound}
	ErrAlreadyEnded    = &Error{Status: AlreadyEnded}
	ErrInvalidArgument = &Error{Status: InvalidArgument}
	ErrUnauthorized    = &Error{Status: Unauthorized}
	ErrForbidden       = &Error{Status: Forbidden}
	ErrRateLimited     = &Error{Status: RateLimited}
	ErrServerError     = &Error{Status: ServerError}
	ErrTimeout         = &Error{Status: Timeout}
	ErrNetwork         = &Error{Status: NetworkError}
	ErrTLS             = &Error{Status: TLSError}
	ErrProtocol        = &Error{Status: ProtocolError}
	ErrInternal        = &Error{Status: InternalError}
	ErrBusy            = &Error{Status: Busy}
)

// Error is a failed libtryvox call. errors.Is(err, tryvox.ErrNotFound) matches on Status.
type Error struct {
	Status     Status
	HTTPStatus int    // the last HTTP status seen; 0 if no response arrived
	Code       string // the server's error code, e.g. "call_not_found" (Hangup and NewClient only)
	Message    string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "tryvox: " + e.Status.String()
	}
	return "tryvox: " + e.Message
}

// Is reports whether target is an *Error with the same Status.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Status == e.Status
}

// IsGone reports whether err means the call is not running (nil, NotFound, AlreadyEnded).
func IsGone(err error) bool {
	return err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAlreadyEnded)
}

// lastError reads this OS thread's last error; the caller holds runtime.LockOSThread.
func lastError(rc C.int) error {
	if rc == C.TRYVOX_OK {
		return nil
	}
	return &Error{
		Status:     Status(rc),
		HTTPStatus: int(C.tryvox_last_http_status()),
		Code:       C.GoString(C.tryvox_last_error_code()),
		Message:    C.GoString(C.tryvox_last_error()),
	}
}

// LogLevel is the severity of a library log line.
type LogLevel int

// The library's log levels (the C callback's `level`).
const (
	LogError LogLevel = 0
	LogWarn  LogLevel = 1
	LogInfo  LogLevel = 2
	LogDebug LogLevel = 3
)

func (l LogLevel) String() string {
	switch l {
	case LogError:
		return "error"
	case LogWarn:
		return "warn"
	case LogInfo:
		return "info"
	case LogDebug:
		return "debug"
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// TrustStore chooses the roots that verify the API's certificate when no CAFile is set
// (tryvox_options_set_trust_store). The zero value is the library's default.
type TrustStore int

const (
	// TrustSystemOrBundled: the system's trust store (SSL_CERT_FILE, SSL_CERT_DIR, else
	// the distribution's bundle, where update-ca-certificates installs a company CA),
	// else the roots compiled into the library (Mozilla's). The default.
	TrustSystemOrBundled TrustStore = C.TRYVOX_TRUST_SYSTEM_OR_BUNDLED
	// TrustSystem: the system's trust store only; NewClient fails with ErrTLS if it
	// holds no usable certificate.
	TrustSystem TrustStore = C.TRYVOX_TRUST_SYSTEM
	// TrustBundled: only the roots compiled into the library; the system's are not read.
	TrustBundled TrustStore = C.TRYVOX_TRUST_BUNDLED
)

func (t TrustStore) String() string {
	switch t {
	case TrustSystemOrBundled:
		return "system-or-bundled"
	case TrustSystem:
		return "system"
	case TrustBundled:
		return "bundled"
	}
	return fmt.Sprintf("TrustStore(%d)", int(t))
}

// Options configure a Client; zero values mean the library's defaults. Each field maps
// to one tryvox_options_* setter of include/tryvox.h, whose comment says what it does.
type Options struct {
	BaseURL           string  // default https://api.tryvox.io
	TimeoutMs         uint32  // total per hangup, retries included (default 10000)
	ConnectTimeoutMs  uint32  // default 3000
	MaxRetries        *uint32 // nil: the default (2); a pointer to 0 disables retries
	TenantID          string  // sent as X-Tenant-ID
	UserAgent         string  // appended to the library's User-Agent, e.g. "my-pbx/2.3"
	CAFile            string  // PEM roots to trust instead of any trust store
	Proxy             string  // http://host:port
	AllowInsecureHTTP bool    // plain http to a host that is not loopback
	// TrustStore: the roots trusted when CAFile is empty (zero: TrustSystemOrBundled).
	// Another value than the constants makes NewClient fail with ErrInvalidArgument.
	// The client's Log gets an info line saying which roots it trusts and how many.
	TrustStore TrustStore
	// Log receives the library's log lines (never the API key). It runs on library
	// threads, possibly on several at once, so it must be safe for concurrent use, and
	// it should return quickly. It must not call Close on the client.
	Log func(level LogLevel, message string)
}

// Uint32 returns a pointer to v, for Options.MaxRetries.
func Uint32(v uint32) *uint32 { return &v }

// Client is a libtryvox client. Close it when done.
type Client struct {
	p   *C.tryvox_client
	log cgo.Handle // the Log func; lives as long as the C client
}

// NewClient creates a client for account authID. o may be nil (all defaults).
func NewClient(authID, apiKey string, o *Options) (*Client, error) {
	runtime.LockOSThread() // the last error is per OS thread
	defer runtime.UnlockOSThread()
	opts := C.tryvox_options_new()
	if opts == nil {
		return nil, &Error{Status: InternalError, Message: "tryvox: out of memory"}
	}
	defer C.tryvox_options_free(opts)
	var logHandle cgo.Handle
	if o != nil {
		var err error
		if logHandle, err = applyOptions(opts, o); err != nil {
			return nil, err
		}
	}
	cAuth, cKey := C.CString(authID), C.CString(apiKey)
	defer C.free(unsafe.Pointer(cAuth))
	defer func() {
		// The key's copy in C memory is wiped before it is freed.
		b := unsafe.Slice((*byte)(unsafe.Pointer(cKey)), len(apiKey))
		for i := range b {
			b[i] = 0
		}
		C.free(unsafe.Pointer(cKey))
	}()
	p := C.tryvox_client_new_with_options(cAuth, cKey, opts)
	if p == nil {
		if logHandle != 0 {
			logHandle.Delete()
		}
		return nil, lastError(C.TRYVOX_INVALID_ARGUMENT)
	}
	return &Client{p: p, log: logHandle}, nil
}

// applyOptions calls one setter per non-zero field; the caller holds LockOSThread.
// It returns the handle of the Log func (0 if none), owned by the caller.
func applyOptions(opts *C.tryvox_options, o *Options) (cgo.Handle, error) {
	str := func(v string, f func(*C.char) C.int) error {
		if v == "" {
			return nil
		}
		cs := C.CString(v)
		defer C.free(unsafe.Pointer(cs))
		return lastError(f(cs))
	}
	steps := []func() error{
		func() error {
			return str(o.BaseURL, func(s *C.char) C.int { return C.tryvox_options_set_base_url(opts, s) })
		},
		func() error {
			if o.TimeoutMs == 0 {
				return nil
			}
			return lastError(C.tryvox_options_set_timeout_ms(opts, C.uint32_t(o.TimeoutMs)))
		},
		func() error {
			if o.ConnectTimeoutMs == 0 {
				return nil
			}
			return lastError(C.tryvox_options_set_connect_timeout_ms(opts, C.uint32_t(o.ConnectTimeoutMs)))
		},
		func() error {
			if o.MaxRetries == nil {
				return nil
			}
			return lastError(C.tryvox_options_set_max_retries(opts, C.uint32_t(*o.MaxRetries)))
		},
		func() error {
			return str(o.TenantID, func(s *C.char) C.int { return C.tryvox_options_set_tenant_id(opts, s) })
		},
		func() error {
			return str(o.UserAgent, func(s *C.char) C.int { return C.tryvox_options_set_user_agent(opts, s) })
		},
		func() error {
			if o.TrustStore == TrustSystemOrBundled {
				return nil
			}
			if int64(o.TrustStore) != int64(C.int(o.TrustStore)) {
				// Truncated to a C int it could become a valid store: refused here.
				return &Error{Status: InvalidArgument, Message: fmt.Sprintf("trust store %d is not a TrustStore", int(o.TrustStore))}
			}
			return lastError(C.tryvox_options_set_trust_store(opts, C.int(o.TrustStore)))
		},
		func() error {
			return str(o.CAFile, func(s *C.char) C.int { return C.tryvox_options_set_ca_file(opts, s) })
		},
		func() error {
			return str(o.Proxy, func(s *C.char) C.int { return C.tryvox_options_set_proxy(opts, s) })
		},
		func() error {
			if !o.AllowInsecureHTTP {
				return nil
			}
			return lastError(C.tryvox_options_allow_insecure_http(opts, 1))
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return 0, err
		}
	}
	if o.Log == nil {
		return 0, nil
	}
	h := cgo.NewHandle(o.Log)
	if err := lastError(C.tryvoxgo_set_log(opts, C.uintptr_t(h))); err != nil {
		h.Delete()
		return 0, err
	}
	return h, nil
}

var errClosed = &Error{Status: InvalidArgument, Message: "client is closed"}

// Hangup ends call callUUID, blocking until an outcome or the client's timeout. nil
// means the call was ended; IsGone(err) also accepts a call that was over already.
func (c *Client) Hangup(callUUID string) error {
	if c == nil || c.p == nil {
		return errClosed
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cs := C.CString(callUUID)
	defer C.free(unsafe.Pointer(cs))
	return lastError(C.tryvox_hangup(c.p, cs))
}

// HangupMany ends every call with at most maxParallel in flight (0: the default) and
// returns one error (nil for success) per id, in order.
func (c *Client) HangupMany(ids []string, maxParallel uint32) ([]error, error) {
	if c == nil || c.p == nil {
		return nil, errClosed
	}
	if len(ids) == 0 {
		return nil, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ptrSize := C.size_t(unsafe.Sizeof((*C.char)(nil)))
	base := (**C.char)(C.malloc(C.size_t(len(ids)) * ptrSize))
	defer C.free(unsafe.Pointer(base))
	arr := unsafe.Slice(base, len(ids))
	for i, id := range ids {
		arr[i] = C.CString(id)
	}
	defer func() {
		for _, p := range arr {
			C.free(unsafe.Pointer(p))
		}
	}()
	out := make([]C.int, len(ids))
	rc := C.tryvox_hangup_many(c.p, base, C.size_t(len(ids)), &out[0], C.uint32_t(maxParallel))
	if err := lastError(rc); err != nil {
		return nil, err
	}
	errs := make([]error, len(ids))
	for i, s := range out {
		if s != C.TRYVOX_OK {
			errs[i] = &Error{Status: Status(s), Message: fmt.Sprintf("%s: %s", ids[i], Status(s))}
		}
	}
	return errs, nil
}

// Close frees the client. It waits for the client's hangups still in flight (those of
// HangupAsync, and those HangupContext left running when its context ended), each
// bounded by the client's timeout, and delivers their results before it returns.
// Do not use the client afterwards, nor call Close while other goroutines use it.
func (c *Client) Close() {
	if c != nil && c.p != nil {
		C.tryvox_client_free(c.p)
		c.p = nil
		if c.log != 0 {
			c.log.Delete() // no log line can arrive once the C client is freed
			c.log = 0
		}
	}
}

// Version is the library's version.
func Version() string { return C.GoString(C.tryvox_version()) }
