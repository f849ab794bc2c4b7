// Package tryvox hangs up TryVox calls through libtryvox (cgo).
//
// Build with the header and library on the compiler's paths, e.g. after `make install`:
//
//	CGO_CFLAGS="$(pkg-config --cflags tryvox)" CGO_LDFLAGS="$(pkg-config --libs tryvox)" go build
//
// A Client is safe for concurrent use by any number of goroutines; they share one
// connection pool. Hangup blocks the calling goroutine (not the Go scheduler's other
// goroutines: cgo calls run on their own OS thread).
package tryvox

/*
#cgo LDFLAGS: -ltryvox
#include <stdlib.h>
#include "tryvox.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
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
	HTTPStatus int
	Code       string // the server's error code, e.g. "call_not_found"
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

// Options configure a Client; zero values mean the library's defaults.
type Options struct {
	BaseURL          string
	TimeoutMs        uint32
	ConnectTimeoutMs uint32
	MaxRetries       *uint32
	TenantID         string
	UserAgent        string
	CAFile           string
	Proxy            string
	AllowInsecureHTTP bool
}

// Client is a libtryvox client. Close it when done.
type Client struct {
	p *C.tryvox_client
}

// NewClient creates a client for account authID.
func NewClient(authID, apiKey string, o *Options) (*Client, error) {
	runtime.LockOSThread() // the last error is per OS thread
	defer runtime.UnlockOSThread()
	opts := C.tryvox_options_new()
	defer C.tryvox_options_free(opts)
	set := func(rc C.int) error { return lastError(rc) }
	str := func(f func(*C.tryvox_options, *C.char) C.int, v string) error {
		if v == "" {
			return nil
		}
		cs := C.CString(v)
		defer C.free(unsafe.Pointer(cs))
		return set(f(opts, cs))
	}
	if o != nil {
		steps := []func() error{
			func() error {
				return str(func(p *C.tryvox_options, s *C.char) C.int { return C.tryvox_options_set_base_url(p, s) }, o.BaseURL)
			},
			func() error {
				return str(func(p *C.tryvox_options, s *C.char) C.int { return C.tryvox_options_set_tenant_id(p, s) }, o.TenantID)
			},
			func() error {
				return str(func(p *C.tryvox_options, s *C.char) C.int { return C.tryvox_options_set_user_agent(p, s) }, o.UserAgent)
			},
			func() error {
				return str(func(p *C.tryvox_options, s *C.char) C.int { return C.tryvox_options_set_ca_file(p, s) }, o.CAFile)
			},
			func() error {
				return str(func(p *C.tryvox_options, s *C.char) C.int { return C.tryvox_options_set_proxy(p, s) }, o.Proxy)
			},
			func() error {
				if o.TimeoutMs == 0 {
					return nil
				}
				return set(C.tryvox_options_set_timeout_ms(opts, C.uint32_t(o.TimeoutMs)))
			},
			func() error {
				if o.ConnectTimeoutMs == 0 {
					return nil
				}
				return set(C.tryvox_options_set_connect_timeout_ms(opts, C.uint32_t(o.ConnectTimeoutMs)))
			},
			func() error {
				if o.MaxRetries == nil {
					return nil
				}
				return set(C.tryvox_options_set_max_retries(opts, C.uint32_t(*o.MaxRetries)))
			},
			func() error {
				if !o.AllowInsecureHTTP {
					return nil
				}
				return set(C.tryvox_options_allow_insecure_http(opts, 1))
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
		}
	}
	cAuth, cKey := C.CString(authID), C.CString(apiKey)
	defer C.free(unsafe.Pointer(cAuth))
	defer func() {
		// The key's copy in Go-allocated C memory is wiped before it is freed.
		b := unsafe.Slice((*byte)(unsafe.Pointer(cKey)), len(apiKey))
		for i := range b {
			b[i] = 0
		}
		C.free(unsafe.Pointer(cKey))
	}()
	p := C.tryvox_client_new_with_options(cAuth, cKey, opts)
	if p == nil {
		return nil, lastError(C.TRYVOX_INVALID_ARGUMENT)
	}
	return &Client{p: p}, nil
}

// Hangup ends call callUUID. nil means the call was ended.
func (c *Client) Hangup(callUUID string) error {
	if c == nil || c.p == nil {
		return &Error{Status: InvalidArgument, Message: "client is closed"}
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
		return nil, &Error{Status: InvalidArgument, Message: "client is closed"}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	arr := (*[1 << 28]*C.char)(C.malloc(C.size_t(len(ids)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))[:len(ids):len(ids)]
	defer C.free(unsafe.Pointer(&arr[0]))
	for i, id := range ids {
		arr[i] = C.CString(id)
	}
	defer func() {
		for _, p := range arr {
			C.free(unsafe.Pointer(p))
		}
	}()
	out := make([]C.int, len(ids))
	rc := C.tryvox_hangup_many(c.p, &arr[0], C.size_t(len(ids)), &out[0], C.uint32_t(maxParallel))
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

// Close frees the client. Do not use it afterwards, nor while other goroutines use it.
func (c *Client) Close() {
	if c != nil && c.p != nil {
		C.tryvox_client_free(c.p)
		c.p = nil
	}
}

// Version is the library's version.
func Version() string { return C.GoString(C.tryvox_version()) }
