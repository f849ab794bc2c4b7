package tryvox_test

// Tests against a TryVox simulator (tryvox-sim). They read TRYVOX_BASE_URL,
// TRYVOX_ACCOUNT_ID and TRYVOX_API_KEY and skip when these are unset; `make go-test` and
// the Rust test tests/pkg_go_csharp.rs start a simulator and set them. Run with -race.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tryvox/libtryvox/bindings/go/tryvox"
)

type sim struct {
	base, account, key string
}

func simulator(t *testing.T) sim {
	t.Helper()
	s := sim{os.Getenv("TRYVOX_BASE_URL"), os.Getenv("TRYVOX_ACCOUNT_ID"), os.Getenv("TRYVOX_API_KEY")}
	if s.base == "" || s.account == "" || s.key == "" {
		t.Skip("SKIPPED: set TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID and TRYVOX_API_KEY to a simulator (make go-test does)")
	}
	return s
}

var idSeq int64

// seed creates n live calls (of tenant, if not empty) and returns their ids.
func (s sim) seed(t *testing.T, n int, tenant string) []string {
	t.Helper()
	prefix := fmt.Sprintf("go-%d-%d-", time.Now().UnixNano(), atomic.AddInt64(&idSeq, 1))
	body := map[string]interface{}{"count": n, "id_prefix": prefix}
	if tenant != "" {
		body["tenant"] = tenant
	}
	s.post(t, "/_sim/seed", body)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return ids
}

// delay makes the simulator wait ms milliseconds before answering the next hangup of id.
func (s sim) delay(t *testing.T, id string, ms int) {
	t.Helper()
	s.post(t, "/_sim/calls/"+id+"/faults",
		map[string]interface{}{"responses": []interface{}{map[string]interface{}{"delay_ms": ms, "status": 204}}})
}

func (s sim) post(t *testing.T, path string, body interface{}) {
	t.Helper()
	b, _ := json.Marshal(body)
	r, err := http.Post(s.base+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(r.Body)
		t.Fatalf("POST %s: %d %s", path, r.StatusCode, msg)
	}
}

func (s sim) client(t *testing.T, o *tryvox.Options) *tryvox.Client {
	t.Helper()
	if o == nil {
		o = &tryvox.Options{}
	}
	if o.BaseURL == "" {
		o.BaseURL = s.base
	}
	c, err := tryvox.NewClient(s.account, s.key, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHangupBlocking(t *testing.T) {
	s := simulator(t)
	c := s.client(t, &tryvox.Options{UserAgent: "go-test/1.0"})
	defer c.Close()
	id := s.seed(t, 1, "")[0]
	if err := c.Hangup(id); err != nil {
		t.Fatal("first hangup:", err)
	}
	err := c.Hangup(id)
	var te *tryvox.Error
	if !errors.Is(err, tryvox.ErrAlreadyEnded) || !errors.As(err, &te) || te.HTTPStatus != 404 ||
		te.Code != "call_already_ended" || !tryvox.IsGone(err) {
		t.Fatalf("second hangup: %#v", err)
	}
	if err := c.Hangup("no-such-call"); !errors.Is(err, tryvox.ErrNotFound) {
		t.Fatal("unknown id:", err)
	}
	if err := c.Hangup("a/b"); !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Fatal("bad id:", err)
	}
	if _, err := tryvox.NewClient("AC1", "bad key", nil); !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Fatal("bad key:", err)
	}
	if tryvox.Version() == "" || tryvox.NotFound.String() != "call not found" {
		t.Fatal("version or status text")
	}
}

func TestHangupMany(t *testing.T) {
	s := simulator(t)
	c := s.client(t, nil)
	defer c.Close()
	ids := s.seed(t, 3, "")
	errs, err := c.HangupMany(append(ids, ids[0], "nope"), 2)
	if err != nil || errs[0] != nil || errs[1] != nil || errs[2] != nil ||
		!errors.Is(errs[3], tryvox.ErrAlreadyEnded) || !errors.Is(errs[4], tryvox.ErrNotFound) {
		t.Fatal("many:", errs, err)
	}
	if _, err := c.HangupMany([]string{"ok", "a/b"}, 0); !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Fatal("bad id in many:", err)
	}
}

// Many goroutines queue hangups at once; each channel yields exactly one result and is
// then closed.
func TestHangupAsyncConcurrent(t *testing.T) {
	s := simulator(t)
	c := s.client(t, nil)
	defer c.Close()
	const n = 200
	ids := s.seed(t, n, "")
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for round := 0; round < 2; round++ {
		for _, id := range ids {
			wg.Add(1)
			go func(round int, id string) {
				defer wg.Done()
				ch, err := c.HangupAsync(id)
				if err != nil {
					errs <- fmt.Errorf("%s refused: %v", id, err)
					return
				}
				r, ok := <-ch
				if !ok || r.CallUUID != id {
					errs <- fmt.Errorf("%s: got %+v (ok=%v)", id, r, ok)
					return
				}
				if _, more := <-ch; more {
					errs <- fmt.Errorf("%s: a second result", id)
				}
				if round == 0 && r.Err != nil {
					errs <- fmt.Errorf("%s: %v", id, r.Err)
				}
				var te *tryvox.Error
				if round == 1 && (!errors.Is(r.Err, tryvox.ErrAlreadyEnded) || !errors.As(r.Err, &te) || te.HTTPStatus != 404) {
					errs <- fmt.Errorf("%s again: %#v", id, r.Err)
				}
			}(round, id)
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ch, err := c.HangupAsync("a/b"); ch != nil || !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Fatal("bad id must be refused:", err)
	}
}

// Close delivers the results of hangups still queued or running.
func TestCloseDeliversPending(t *testing.T) {
	s := simulator(t)
	c := s.client(t, nil)
	ids := s.seed(t, 5, "")
	var chans []<-chan tryvox.Result
	for _, id := range ids {
		s.delay(t, id, 300)
		ch, err := c.HangupAsync(id)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	c.Close()
	for i, ch := range chans {
		select {
		case r := <-ch:
			if r.Err != nil {
				t.Error(ids[i], r.Err)
			}
		default:
			t.Error(ids[i], "no result after Close")
		}
	}
	if _, err := c.HangupAsync(ids[0]); err == nil {
		t.Error("a closed client must refuse")
	}
}

func TestHangupContext(t *testing.T) {
	s := simulator(t)
	c := s.client(t, &tryvox.Options{TimeoutMs: 5000})
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	ids := s.seed(t, 5, "")

	// Plain success.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HangupContext(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := c.HangupContext(ctx, ids[0]); !errors.Is(err, tryvox.ErrAlreadyEnded) {
		t.Fatal("again:", err)
	}

	// Cancelled before the call: nothing is sent, the call lives on.
	done, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if err := c.HangupContext(done, ids[1]); !errors.Is(err, context.Canceled) {
		t.Fatal("cancelled context:", err)
	}
	if err := c.Hangup(ids[1]); err != nil {
		t.Fatal("the call must still be live:", err)
	}

	// A deadline that passes while the server is slow: DeadlineExceeded on time.
	s.delay(t, ids[2], 1500)
	short, cancelShort := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancelShort()
	t0 := time.Now()
	err := c.HangupContext(short, ids[2])
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > time.Second {
		t.Fatalf("deadline: %v after %v", err, time.Since(t0))
	}

	// Cancelled while the request is in flight: Canceled at once.
	s.delay(t, ids[3], 1500)
	inflight, cancelInflight := context.WithCancel(context.Background())
	time.AfterFunc(150*time.Millisecond, cancelInflight)
	t0 = time.Now()
	err = c.HangupContext(inflight, ids[3])
	if !errors.Is(err, context.Canceled) || time.Since(t0) > time.Second {
		t.Fatalf("cancel in flight: %v after %v", err, time.Since(t0))
	}

	// Many goroutines with contexts, sharing the client.
	more := s.seed(t, 50, "")
	var wg sync.WaitGroup
	var failed int32
	for _, id := range more {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.HangupContext(ctx, id); err != nil {
				atomic.AddInt32(&failed, 1)
				t.Error(id, err)
			}
		}(id)
	}
	wg.Wait()

	// Close waits for the two abandoned requests (bounded by the 1.5 s delays).
	t0 = time.Now()
	c.Close()
	closed = true
	if time.Since(t0) > 3*time.Second {
		t.Fatal("Close took", time.Since(t0))
	}
}

// selfSignedPEM writes a CA certificate for the CAFile option.
func selfSignedPEM(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tryvox go test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A proxy on loopback that records what clients send through it: the bytes in its
// CONNECT tunnels (https), and the head of each request it forwards (plain http, sent
// to a proxy in absolute form, as the simulator here serves it).
type recordingProxy struct {
	mu       sync.Mutex
	connects int
	sent     bytes.Buffer
}

func (p *recordingProxy) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent.Write(b)
}

func (p *recordingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.forward(w, r)
		return
	}
	up, err := net.DialTimeout("tcp", r.Host, 2*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.connects++
	p.mu.Unlock()
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	go func() {
		_, _ = io.Copy(conn, up)
		conn.Close()
	}()
	_, _ = io.Copy(io.MultiWriter(up, p), buf)
}

// forward relays a request sent in absolute form to its origin, recording its head.
func (p *recordingProxy) forward(w http.ResponseWriter, r *http.Request) {
	if !r.URL.IsAbs() {
		http.Error(w, "a proxy takes absolute-form requests", http.StatusBadRequest)
		return
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s %s\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Proto, r.Host)
	_ = r.Header.Write(&head)
	head.WriteString("\r\n")
	_, _ = p.Write(head.Bytes())
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// Every option, each shown to take effect where the simulator or a proxy can see it.
func TestEveryOption(t *testing.T) {
	s := simulator(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &recordingProxy{}
	srv := &http.Server{Handler: proxy}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	var mu sync.Mutex
	var lines []string
	c := s.client(t, &tryvox.Options{
		BaseURL:           s.base,
		TimeoutMs:         4000,
		ConnectTimeoutMs:  1000,
		MaxRetries:        tryvox.Uint32(0),
		TenantID:          "tenant-go",
		UserAgent:         "go-options-test/2.0",
		CAFile:            selfSignedPEM(t),
		Proxy:             "http://" + ln.Addr().String(),
		AllowInsecureHTTP: true,
		Log: func(level tryvox.LogLevel, msg string) {
			mu.Lock()
			lines = append(lines, level.String()+": "+msg)
			mu.Unlock()
		},
	})
	ids := s.seed(t, 3, "tenant-go")
	if err := c.Hangup(ids[0]); err != nil {
		t.Fatal("tenant call:", err)
	}
	ch, err := c.HangupAsync(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if r := <-ch; r.Err != nil {
		t.Fatal("async tenant call:", r.Err)
	}
	// One scripted 503 and no retries: the failure comes back at once.
	s.post(t, "/_sim/calls/"+ids[2]+"/faults",
		map[string]interface{}{"responses": []interface{}{map[string]interface{}{"status": 503}}})
	if err := c.Hangup(ids[2]); !errors.Is(err, tryvox.ErrServerError) {
		t.Fatal("max retries 0:", err)
	}
	c.Close()

	srv.Close()
	proxy.mu.Lock()
	sent, connects := strings.ToLower(proxy.sent.String()), proxy.connects
	proxy.mu.Unlock()
	// Plain http goes to the proxy in absolute form, never through a tunnel.
	hangups := strings.Count(sent, "delete "+strings.ToLower(s.base)+"/v1/voice/accounts/")
	if connects != 0 || hangups != 3 {
		t.Fatalf("the proxy saw %d tunnels and %d hangups in absolute form, want 0 and 3",
			connects, hangups)
	}
	if strings.Count(sent, "x-tenant-id: tenant-go\r\n") != 3 || !strings.Contains(sent, " go-options-test/2.0\r\n") {
		// Not printed: the requests hold the key.
		t.Fatal("X-Tenant-ID or User-Agent missing from the requests through the proxy")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) == 0 {
		t.Fatal("no log lines")
	}
	for _, l := range lines {
		if strings.Contains(l, s.key) {
			t.Fatal("a log line holds the key")
		}
	}

	// Bad values are refused with the setter's status.
	for name, o := range map[string]*tryvox.Options{
		"base URL":    {BaseURL: "ftp://example.com"},
		"max retries": {BaseURL: s.base, MaxRetries: tryvox.Uint32(101)},
		"CA file":     {BaseURL: s.base, CAFile: filepath.Join(t.TempDir(), "missing.pem")},
		"tenant":      {BaseURL: s.base, TenantID: "a b"},
		"insecure":    {BaseURL: "http://192.0.2.1:8080"},
		"with log":    {BaseURL: "ftp://x", Log: func(tryvox.LogLevel, string) {}},
	} {
		if _, err := tryvox.NewClient(s.account, s.key, o); !errors.Is(err, tryvox.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Allowed explicitly, a plain-http base URL off loopback builds a client.
	ok, err := tryvox.NewClient(s.account, s.key, &tryvox.Options{BaseURL: "http://192.0.2.1:8080", AllowInsecureHTTP: true})
	if err != nil {
		t.Fatal("allow insecure http:", err)
	}
	ok.Close()
}

// statusOf is the Status an outcome carries (OK for nil).
func statusOf(t *testing.T, err error) tryvox.Status {
	t.Helper()
	if err == nil {
		return tryvox.OK
	}
	var te *tryvox.Error
	if !errors.As(err, &te) {
		t.Fatalf("not a *tryvox.Error: %#v", err)
	}
	return te.Status
}

// Stats counts exactly the outcomes of a mixed run (blocking, async and bulk; success,
// already ended, not found, an invalid id, a retried 503), and goroutines reading it
// while HangupMany runs see counters that never go back and a bounded in-flight gauge.
func TestStats(t *testing.T) {
	s := simulator(t)
	c := s.client(t, &tryvox.Options{TimeoutMs: 5000})
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	if st, err := c.Stats(); err != nil || st.TotalHangups() != 0 || st.Attempts != 0 {
		t.Fatalf("a new client: %+v %v", st, err)
	}

	ids := s.seed(t, 40, "")
	// ids[0]: one 503, then the simulator's normal answer: a retry, then success.
	s.post(t, "/_sim/calls/"+ids[0]+"/faults",
		map[string]interface{}{"responses": []interface{}{map[string]interface{}{"status": 503}}})
	// Slow answers keep the bulk run in flight long enough for the readers to see it.
	for _, id := range ids[4:12] {
		s.delay(t, id, 150)
	}

	var seen [32]uint64
	sent := uint64(0) // hangups that reached the network (all but the invalid id)
	record := func(err error) {
		st := statusOf(t, err)
		seen[st]++
		if st != tryvox.InvalidArgument {
			sent++
		}
	}
	record(c.Hangup(ids[1]))
	record(c.Hangup(ids[1]))
	record(c.Hangup("no-such-call"))
	record(c.Hangup("a/b")) // refused before sending: counted as InvalidArgument
	ch, err := c.HangupAsync(ids[2])
	if err != nil {
		t.Fatal(err)
	}
	record((<-ch).Err)
	// Refused as a whole: nothing is counted.
	if _, err := c.HangupMany([]string{ids[3], "a/b"}, 0); !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Fatal("bad id in many:", err)
	}
	if ch, err := c.HangupAsync("a/b"); ch != nil || err == nil {
		t.Fatal("bad async id must be refused")
	}

	// Readers on other goroutines during the bulk run.
	const maxParallel = 8
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var maxInFlight, reads uint64
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var prev tryvox.Stats
			for {
				st, err := c.Stats()
				if err != nil {
					t.Error("Stats during HangupMany:", err)
					return
				}
				atomic.AddUint64(&reads, 1)
				for i := range st.HangupsByStatus {
					if st.HangupsByStatus[i] < prev.HangupsByStatus[i] {
						t.Errorf("hangups with status %d went back: %d after %d", i, st.HangupsByStatus[i], prev.HangupsByStatus[i])
					}
				}
				if st.Attempts < prev.Attempts || st.Retries() < prev.Retries() ||
					st.ConnectionsOpened < prev.ConnectionsOpened || st.LatencyMax < prev.LatencyMax {
					t.Errorf("a counter went back: %+v after %+v", st, prev)
				}
				// At most maxParallel requests are on the wire; ids[0] (one 503) waits
				// for its retry holding no slot, so one more hangup may be in flight.
				if st.InFlight > maxParallel+1 {
					t.Errorf("%d in flight, at most %d expected", st.InFlight, maxParallel+1)
				}
				for {
					m := atomic.LoadUint64(&maxInFlight)
					if st.InFlight <= m || atomic.CompareAndSwapUint64(&maxInFlight, m, st.InFlight) {
						break
					}
				}
				prev = st
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
	}
	bulk := append(append([]string{ids[0]}, ids[3:]...), ids[1], "nope")
	errs, err := c.HangupMany(bulk, maxParallel)
	close(stop)
	readers.Wait()
	if err != nil {
		t.Fatal("many:", err)
	}
	for i, e := range errs {
		record(e)
		want := tryvox.OK
		if bulk[i] == ids[1] {
			want = tryvox.AlreadyEnded
		} else if bulk[i] == "nope" {
			want = tryvox.NotFound
		}
		if statusOf(t, e) != want {
			t.Errorf("%s: %v, want %v", bulk[i], e, want)
		}
	}

	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v (%d reads during HangupMany, at most %d in flight)", st, atomic.LoadUint64(&reads), atomic.LoadUint64(&maxInFlight))
	if st.HangupsByStatus != seen {
		t.Errorf("hangups by status %v, the outcomes seen %v", st.HangupsByStatus, seen)
	}
	total := uint64(len(bulk) + 5)
	if st.TotalHangups() != total || st.Hangups(tryvox.OK) != 40 || st.Hangups(tryvox.AlreadyEnded) != 2 ||
		st.Hangups(tryvox.NotFound) != 2 || st.Hangups(tryvox.InvalidArgument) != 1 || st.Hangups(tryvox.Status(99)) != 0 {
		t.Errorf("want %d hangups: 40 ok, 2 already ended, 2 not found, 1 invalid: %v", total, st.HangupsByStatus)
	}
	if st.RetriesServerError != 1 || st.Attempts != sent+st.Retries() {
		t.Errorf("%d attempts, %d retries after a 5xx, %d retries in all; %d hangups sent",
			st.Attempts, st.RetriesServerError, st.Retries(), sent)
	}
	if st.InFlight != 0 || st.ConnectionsOpened == 0 || st.ConnectionsOpen > st.ConnectionsOpened {
		t.Errorf("gauges: %d in flight, %d of %d connections open", st.InFlight, st.ConnectionsOpen, st.ConnectionsOpened)
	}
	if atomic.LoadUint64(&maxInFlight) == 0 {
		t.Error("no reader saw a hangup in flight")
	}
	// Eight answers took 150 ms: the maximum (exact) and p99 say so, in the right unit.
	if st.LatencyMax < 150*time.Millisecond || st.LatencyMax > 5*time.Second ||
		st.LatencyP50 == 0 || st.LatencyP50 > st.LatencyP90 || st.LatencyP90 > st.LatencyP99 ||
		st.LatencyP99 < 100*time.Millisecond {
		t.Errorf("latencies: p50 %v p90 %v p99 %v max %v", st.LatencyP50, st.LatencyP90, st.LatencyP99, st.LatencyMax)
	}

	c.Close()
	closed = true
	if _, err := c.Stats(); !errors.Is(err, tryvox.ErrInvalidArgument) {
		t.Error("Stats on a closed client:", err)
	}
}

// TrustStore chooses the roots a client trusts (its Log says which), CAFile replaces
// them, and a value other than the constants is refused. The https part needs
// TRYVOX_TLS_BASE_URL, a simulator serving a certificate of the private CA
// TRYVOX_TLS_CA (tests/pkg_go_csharp.rs sets both, and SSL_CERT_FILE to that CA).
func TestTrustStore(t *testing.T) {
	s := simulator(t)
	for _, bad := range []tryvox.TrustStore{3, -1, 1<<32 + 1} {
		_, err := tryvox.NewClient(s.account, s.key, &tryvox.Options{BaseURL: s.base, TrustStore: bad})
		if !errors.Is(err, tryvox.ErrInvalidArgument) {
			t.Errorf("TrustStore %v: %v", bad, err)
		}
	}
	if tryvox.TrustBundled.String() != "bundled" || tryvox.TrustStore(7).String() != "TrustStore(7)" {
		t.Error("TrustStore.String")
	}
	base, ca := os.Getenv("TRYVOX_TLS_BASE_URL"), os.Getenv("TRYVOX_TLS_CA")
	if base == "" || ca == "" {
		t.Skip("SKIPPED the https part: set TRYVOX_TLS_BASE_URL and TRYVOX_TLS_CA (tests/pkg_go_csharp.rs does)")
	}
	// hangup returns the "TLS: trusting" log lines of a client and its one hangup's outcome.
	hangup := func(store tryvox.TrustStore, caFile string) ([]string, error) {
		t.Helper()
		var mu sync.Mutex
		var said []string
		c, err := tryvox.NewClient(s.account, s.key, &tryvox.Options{
			BaseURL: base, TrustStore: store, CAFile: caFile, MaxRetries: tryvox.Uint32(0),
			Log: func(level tryvox.LogLevel, msg string) {
				if strings.Contains(msg, s.key) {
					t.Error("a log line holds the key")
				}
				if level == tryvox.LogInfo && strings.HasPrefix(msg, "TLS: trusting ") {
					mu.Lock()
					said = append(said, msg)
					mu.Unlock()
				}
			},
		})
		if err != nil {
			t.Fatalf("%v: %v", store, err)
		}
		err = c.Hangup("go-trust-call")
		c.Close()
		mu.Lock()
		defer mu.Unlock()
		return said, err
	}
	// Mozilla's roots do not know the private CA: the handshake fails, nothing is sent.
	said, err := hangup(tryvox.TrustBundled, "")
	if !errors.Is(err, tryvox.ErrTLS) || len(said) != 1 || !strings.Contains(said[0], " bundled roots (Mozilla's)") {
		t.Errorf("bundled: %v %q", err, said)
	}
	// A CA file replaces every store: the request reaches the simulator (no such call).
	said, err = hangup(tryvox.TrustBundled, ca)
	if !errors.Is(err, tryvox.ErrNotFound) || len(said) != 1 || !strings.Contains(said[0], "of the CA file") {
		t.Errorf("CA file: %v %q", err, said)
	}
	// The system's store, when it is the private CA: trusted by default and by TrustSystem.
	if os.Getenv("SSL_CERT_FILE") != ca {
		t.Skip("SKIPPED the system part: SSL_CERT_FILE is not TRYVOX_TLS_CA")
	}
	for _, store := range []tryvox.TrustStore{tryvox.TrustSystemOrBundled, tryvox.TrustSystem} {
		said, err := hangup(store, "")
		if !errors.Is(err, tryvox.ErrNotFound) || len(said) != 1 || said[0] != "TLS: trusting 1 roots of the system's trust store" {
			t.Errorf("%v with the CA as the system's store: %v %q", store, err, said)
		}
	}
}
