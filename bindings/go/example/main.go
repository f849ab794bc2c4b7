// Go example and test: goroutines sharing one client, against the simulator.
// usage: example LIVE_ID... (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tryvox/libtryvox/bindings/go/tryvox"
)

func main() {
	ids := os.Args[1:]
	if len(ids) < 4 {
		fmt.Fprintln(os.Stderr, "usage: example LIVE_ID LIVE_ID LIVE_ID LIVE_ID...")
		os.Exit(2)
	}
	failures := 0
	expect := func(ok bool, what string) {
		if !ok {
			failures++
			fmt.Fprintln(os.Stderr, "FAIL:", what)
		}
	}
	c, err := tryvox.NewClient(os.Getenv("TRYVOX_ACCOUNT_ID"), os.Getenv("TRYVOX_API_KEY"),
		&tryvox.Options{BaseURL: os.Getenv("TRYVOX_BASE_URL"), UserAgent: "go-example/1.0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()

	expect(c.Hangup(ids[0]) == nil, "first hangup")
	err = c.Hangup(ids[0])
	expect(errors.Is(err, tryvox.ErrAlreadyEnded), fmt.Sprint("second hangup: ", err))
	var te *tryvox.Error
	expect(errors.As(err, &te) && te.HTTPStatus == 404 && te.Code == "call_already_ended", "error details")
	err = c.Hangup("no-such-call")
	expect(errors.Is(err, tryvox.ErrNotFound) && tryvox.IsGone(err), fmt.Sprint("unknown: ", err))
	expect(errors.Is(c.Hangup("a/b"), tryvox.ErrInvalidArgument), "bad id")
	_, err = tryvox.NewClient("AC1", "bad key", nil)
	expect(errors.Is(err, tryvox.ErrInvalidArgument), "bad key")

	// Goroutines sharing one client, each bounded by its context.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]error, len(ids)-2)
	for i, id := range ids[1 : len(ids)-1] {
		wg.Add(1)
		go func(i int, id string) {
			defer wg.Done()
			results[i] = c.HangupContext(ctx, id)
		}(i, id)
	}
	wg.Wait()
	for i, r := range results {
		expect(r == nil, fmt.Sprintf("goroutine %d: %v", i, r))
	}
	// Non-blocking: the result arrives on a channel.
	ch, err := c.HangupAsync(ids[0])
	expect(err == nil, fmt.Sprint("async queued: ", err))
	if err == nil {
		r := <-ch
		expect(errors.Is(r.Err, tryvox.ErrAlreadyEnded) && r.CallUUID == ids[0], fmt.Sprint("async: ", r))
	}
	errs, err := c.HangupMany([]string{ids[len(ids)-1], ids[0], "nope"}, 2)
	expect(err == nil && errs[0] == nil && errors.Is(errs[1], tryvox.ErrAlreadyEnded) &&
		errors.Is(errs[2], tryvox.ErrNotFound), fmt.Sprint("many: ", errs, err))
	if failures > 0 {
		fmt.Println("Go example: FAILED")
		os.Exit(1)
	}
	fmt.Println("Go example: ok (libtryvox", tryvox.Version()+")")
}
