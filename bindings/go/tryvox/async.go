package tryvox

/*
#include <stdlib.h>
#include <stdint.h>
#include "tryvox.h"

// bridge.c
int tryvoxgo_hangup_async(tryvox_client *client, const char *call_uuid, uintptr_t handle);
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// Result is the outcome of one asynchronous hangup.
type Result struct {
	CallUUID string
	// Err is nil when the call was ended, else an *Error (IsGone tells whether the call
	// is over anyway). Its Code is empty: the library's callback carries no server code.
	Err error
}

// HangupAsync queues a hangup of callUUID and returns at once; the calling goroutine
// never waits on the network.
//
// On success the returned channel receives exactly one Result and is then closed. It is
// buffered, so the library thread delivering the result never blocks, and a caller that
// stops listening leaks nothing. A non-nil error means the request was refused (an
// invalid id: ErrInvalidArgument; the client is being closed: ErrBusy), nothing was sent,
// and the channel is nil. The hangup follows the rules of Hangup (validation, retries,
// the client's timeout). Close waits for every queued hangup and delivers its result.
func (c *Client) HangupAsync(callUUID string) (<-chan Result, error) {
	if c == nil || c.p == nil {
		return nil, errClosed
	}
	ch := make(chan Result, 1)
	h := cgo.NewHandle(ch)
	cs := C.CString(callUUID)
	defer C.free(unsafe.Pointer(cs))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := lastError(C.tryvoxgo_hangup_async(c.p, cs, C.uintptr_t(h))); err != nil {
		h.Delete() // refused: the callback will never run
		return nil, err
	}
	return ch, nil
}

// tryvoxGoHangupDone runs once per accepted HangupAsync, on a library thread (see
// bridge.c). It takes the channel out of its handle, frees the handle, and delivers.
//
//export tryvoxGoHangupDone
func tryvoxGoHangupDone(handle C.uintptr_t, callUUID *C.char, status C.int, httpStatus C.int, message *C.char) {
	h := cgo.Handle(handle)
	ch := h.Value().(chan Result)
	h.Delete()
	r := Result{CallUUID: C.GoString(callUUID)}
	if status != C.TRYVOX_OK {
		r.Err = &Error{Status: Status(status), HTTPStatus: int(httpStatus), Message: C.GoString(message)}
	}
	ch <- r // never blocks: the buffer holds one result and this is the only send
	close(ch)
}

// tryvoxGoLog forwards one log line to Options.Log (see bridge.c).
//
//export tryvoxGoLog
func tryvoxGoLog(handle C.uintptr_t, level C.int, message *C.char) {
	f := cgo.Handle(handle).Value().(func(LogLevel, string))
	f(LogLevel(level), C.GoString(message))
}

// HangupContext ends call callUUID as Hangup does, and also returns as soon as ctx is
// cancelled or its deadline passes, with ctx.Err().
//
// What cancelling means. A context that is done before the call sends nothing: the
// result is ctx.Err() and the call is untouched. Once the request has been handed to the
// library it cannot be recalled (it may already be on the wire, and the API may end the
// call whatever the caller does next). Cancelling then returns ctx.Err() at once, while
// the request finishes in the background, bounded by the client's timeout (TimeoutMs,
// retries included); its outcome is discarded, and Close waits for it. So
// context.Canceled or context.DeadlineExceeded means "not known whether the call was
// ended"; a hangup is idempotent, so hang up again (and check IsGone) to find out. When
// the outcome and the cancellation race, an outcome that has arrived is returned.
//
// Deadlines. HangupContext returns by ctx's deadline whatever the library is doing. The
// library's own work is capped by the client's timeout, set once per client (the C API
// has no per-request deadline): give the client a TimeoutMs no longer than the deadlines
// you use, and the background work ends by then too.
//
// The request runs on the library's worker threads (as HangupAsync), so a goroutine
// waiting here holds no OS thread.
func (c *Client) HangupContext(ctx context.Context, callUUID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch, err := c.HangupAsync(callUUID)
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		select {
		case r := <-ch:
			return r.Err
		default:
			return ctx.Err()
		}
	}
}
