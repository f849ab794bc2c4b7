package tryvox

/*
#include "tryvox.h"
*/
import "C"

import (
	"math"
	"runtime"
	"time"
	"unsafe"
)

// Stats is a snapshot of a client's statistics (tryvox_client_stats).
//
// Counters only grow over the client's life: subtract two snapshots for a window.
// InFlight and ConnectionsOpen are gauges. Latencies are whole hangups (retries and waits
// included); the percentiles are upper edges of log-linear buckets (at most 19% above
// the true value), 0 before the first hangup; LatencyMax is exact.
type Stats struct {
	// HangupsByStatus counts finished hangups by final status: HangupsByStatus[NotFound]
	// etc. (Hangups(s) reads it). A Hangup refused for an invalid id counts as
	// InvalidArgument; a HangupAsync or HangupMany refused as a whole counts nothing.
	HangupsByStatus [32]uint64
	// Attempts counts HTTP attempts: one per hangup sent, plus one per retry.
	Attempts uint64
	// RetriesConnection counts retries after a connection failed before any response.
	RetriesConnection uint64
	// RetriesRateLimited counts retries after a 429.
	RetriesRateLimited uint64
	// RetriesServerError counts retries after a 500, 502, 503 or 504.
	RetriesServerError uint64
	// InFlight is the number of hangups running now.
	InFlight uint64
	// ConnectionsOpen is the number of TCP connections open now.
	ConnectionsOpen uint64
	// ConnectionsOpened counts TCP connections opened over the client's life.
	ConnectionsOpened uint64
	// Latency percentiles and maximum of finished hangups.
	LatencyP50, LatencyP90, LatencyP99, LatencyMax time.Duration
}

// Hangups returns how many hangups finished with status s (0 for an unknown number).
func (s Stats) Hangups(st Status) uint64 {
	if st < 0 || int(st) >= len(s.HangupsByStatus) {
		return 0
	}
	return s.HangupsByStatus[st]
}

// TotalHangups returns how many hangups finished, whatever their status.
func (s Stats) TotalHangups() uint64 {
	var n uint64
	for _, v := range s.HangupsByStatus {
		n += v
	}
	return n
}

// Retries returns the retries made for any cause.
func (s Stats) Retries() uint64 {
	return s.RetriesConnection + s.RetriesRateLimited + s.RetriesServerError
}

// micros converts microseconds to a Duration, saturating at the largest Duration.
func micros(us C.uint64_t) time.Duration {
	if uint64(us) > uint64(math.MaxInt64/int64(time.Microsecond)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(us) * time.Microsecond
}

// Stats returns the client's statistics now. It takes no lock in the library: any
// number of goroutines may call it, as often as wanted, while hangups run (but not
// concurrently with Close, like every other method).
func (c *Client) Stats() (Stats, error) {
	if c == nil || c.p == nil {
		return Stats{}, errClosed
	}
	var cs C.tryvox_stats
	cs.size = C.size_t(unsafe.Sizeof(cs))
	runtime.LockOSThread() // the last error is per OS thread
	rc := C.tryvox_client_stats(c.p, &cs)
	err := lastError(rc)
	runtime.UnlockOSThread()
	if err != nil {
		return Stats{}, err
	}
	s := Stats{
		Attempts:           uint64(cs.attempts),
		RetriesConnection:  uint64(cs.retries_connection),
		RetriesRateLimited: uint64(cs.retries_rate_limited),
		RetriesServerError: uint64(cs.retries_server_error),
		InFlight:           uint64(cs.in_flight),
		ConnectionsOpen:    uint64(cs.connections_open),
		ConnectionsOpened:  uint64(cs.connections_opened),
		LatencyP50:         micros(cs.latency_p50_us),
		LatencyP90:         micros(cs.latency_p90_us),
		LatencyP99:         micros(cs.latency_p99_us),
		LatencyMax:         micros(cs.latency_max_us),
	}
	for i, v := range cs.hangups_by_status {
		s.HangupsByStatus[i] = uint64(v)
	}
	return s, nil
}
