// Tests for the C# binding against a TryVox simulator (tryvox-sim): HangupAsync under
// load, cancellation, refusals, Dispose with hangups in flight, every option setter, and
// Stats (counts equal to the outcomes seen, read from other threads during a bulk run).
// usage: mono Tryvox.Tests.exe (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY;
// optional TRYVOX_TLS_BASE_URL and TRYVOX_TLS_CA: a simulator serving https with a
// certificate of that private CA, for the trust store test)
// Exit code 0 when every check passed; `make csharp-test` and tests/pkg_go_csharp.rs run it.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Tryvox;

static class TryvoxTests
{
    static int failures = 0;
    static string baseUrl, account, key;
    static int seq = 0;

    static void Expect(bool ok, string what)
    {
        if (!ok) { Interlocked.Increment(ref failures); Console.Error.WriteLine("FAIL: " + what); }
    }

    /// <summary>A WebClient without keep-alive: each control request on a new connection.</summary>
    sealed class SimClient : WebClient
    {
        protected override WebRequest GetWebRequest(Uri address)
        {
            var r = (HttpWebRequest)base.GetWebRequest(address);
            r.KeepAlive = false;
            r.Proxy = null;
            return r;
        }
    }

    /// <summary>
    /// A control request to the simulator. Mono's WebClient now and then aborts one on
    /// loopback ("Operation aborted" reading the response, seen on the 204 answers to
    /// scripts; it failed about one run in eight of these tests before stats existed): a
    /// transport failure is retried, which is safe because both control requests are
    /// idempotent (a seed re-creates the same live calls, a script replaces the call's
    /// script). An HTTP error status is not retried.
    /// </summary>
    static void Post(string path, string json)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                using (var w = new SimClient())
                {
                    w.Headers[HttpRequestHeader.ContentType] = "application/json";
                    w.UploadString(baseUrl + path, "POST", json);
                }
                return;
            }
            catch (WebException e) when (e.Status != WebExceptionStatus.ProtocolError && attempt < 5)
            {
                Console.Error.WriteLine("retrying POST " + path + ": " + e.Message +
                    (e.InnerException == null ? "" : " (" + e.InnerException.Message + ")"));
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>Creates n live calls (of tenant, if given) and returns their ids.</summary>
    static string[] Seed(int n, string tenant = null)
    {
        string prefix = "cs-" + Process.GetCurrentProcess().Id + "-" + Interlocked.Increment(ref seq) + "-";
        Post("/_sim/seed", "{\"count\":" + n + ",\"id_prefix\":\"" + prefix + "\"" +
             (tenant == null ? "" : ",\"tenant\":\"" + tenant + "\"") + "}");
        return Enumerable.Range(0, n).Select(i => prefix + i).ToArray();
    }

    /// <summary>The simulator answers the next hangup of id with this status after ms.</summary>
    static void Script(string id, int ms, int status)
    {
        Post("/_sim/calls/" + id + "/faults", "{\"responses\":[{\"delay_ms\":" + ms + ",\"status\":" + status + "}]}");
    }

    static TryvoxClient Client(TryvoxOptions o = null)
    {
        o = o ?? new TryvoxOptions();
        o.BaseUrl = o.BaseUrl ?? baseUrl;
        return new TryvoxClient(account, key, o);
    }

    static int Main()
    {
        baseUrl = Environment.GetEnvironmentVariable("TRYVOX_BASE_URL");
        account = Environment.GetEnvironmentVariable("TRYVOX_ACCOUNT_ID");
        key = Environment.GetEnvironmentVariable("TRYVOX_API_KEY");
        if (string.IsNullOrEmpty(baseUrl) || string.IsNullOrEmpty(account) || string.IsNullOrEmpty(key))
        {
            Console.Error.WriteLine("set TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID and TRYVOX_API_KEY to a simulator");
            return 2;
        }
        var tests = new Dictionary<string, Action>
        {
            { "blocking hangups", Blocking },
            { "HangupAsync, many at once", AsyncConcurrent },
            { "HangupAsync refusals", AsyncRefused },
            { "HangupAsync cancellation", AsyncCancellation },
            { "Dispose completes pending tasks", DisposeCompletesPending },
            { "every option", EveryOption },
            { "bad option values", BadOptions },
            { "trust store", TrustStores },
            { "stats", StatsCounts },
        };
        foreach (var t in tests)
        {
            int before = failures;
            var sw = Stopwatch.StartNew();
            try { t.Value(); }
            catch (Exception e)
            {
                Expect(false, t.Key + ": " + e.GetType().Name + ": " + e.Message +
                    (e.InnerException == null ? "" : " (" + e.InnerException.Message + ")"));
            }
            Console.WriteLine((failures == before ? "ok   " : "FAIL ") + t.Key + " (" + sw.ElapsedMilliseconds + " ms)");
        }
        Console.WriteLine("C# tests: " + (failures == 0 ? "ok (libtryvox " + TryvoxClient.Version + ")" : failures + " FAILED"));
        return failures == 0 ? 0 : 1;
    }

    static void Blocking()
    {
        var id = Seed(1)[0];
        using (var c = Client())
        {
            c.Hangup(id);
            try { c.Hangup(id); Expect(false, "second hangup must throw"); }
            catch (TryvoxException e)
            {
                Expect(e.Status == Status.AlreadyEnded && e.HttpStatus == 404 && e.ServerCode == "call_already_ended" && e.CallIsGone,
                    "already ended: " + e.Message);
            }
            Expect(c.TryHangup("no-such-call") == Status.NotFound, "not found");
            Expect(c.TryHangup("a/b") == Status.InvalidArgument, "bad id");
            Expect(TryvoxClient.StatusText(Status.NotFound) == "call not found", "status text");
        }
    }

    static void AsyncConcurrent()
    {
        const int n = 300;
        var ids = Seed(n);
        using (var c = Client())
        {
            for (int round = 0; round < 2; round++)
            {
                // Queued from many thread-pool threads at once.
                var tasks = ids.Select(id => Task.Run(() => c.HangupAsync(id))).ToArray();
                Expect(Task.WaitAll(tasks, 30000), "round " + round + " finished in time");
                var want = round == 0 ? Status.Ok : Status.AlreadyEnded;
                int wrong = tasks.Count(t => t.Status != TaskStatus.RanToCompletion || t.Result != want);
                Expect(wrong == 0, "round " + round + ": " + wrong + " of " + n + " not " + want);
            }
            // Continuations run asynchronously (never inline on the library's callback
            // thread), even when they ask for ExecuteSynchronously.
            var more = Seed(1);
            var cont = c.HangupAsync(more[0]).ContinueWith(t => t.Result, TaskContinuationOptions.ExecuteSynchronously);
            Expect(cont.Wait(10000) && cont.Result == Status.Ok, "continuation");
        }
    }

    static void AsyncRefused()
    {
        using (var c = Client())
        {
            var t = c.HangupAsync("a/b");
            Expect(t.IsCompleted && t.Result == Status.InvalidArgument, "invalid id completes at once");
            t = c.HangupAsync("");
            Expect(t.IsCompleted && t.Result == Status.InvalidArgument, "empty id");
        }
        var disposed = Client();
        disposed.Dispose();
        try { disposed.HangupAsync("x"); Expect(false, "disposed client must throw"); }
        catch (ObjectDisposedException) { }
    }

    static void AsyncCancellation()
    {
        var ids = Seed(4);
        var c = Client(new TryvoxOptions { TimeoutMs = 5000 });
        try
        {
            // Already cancelled: nothing is sent, the call lives on.
            var cts = new CancellationTokenSource();
            cts.Cancel();
            var t = c.HangupAsync(ids[0], cts.Token);
            Expect(t.IsCanceled, "pre-cancelled token cancels the task");
            Expect(c.TryHangup(ids[0]) == Status.Ok, "the call must still be live");

            // Cancelled in flight: the task is cancelled at once.
            Script(ids[1], 1500, 204);
            var inflight = new CancellationTokenSource(150);
            var sw = Stopwatch.StartNew();
            t = c.HangupAsync(ids[1], inflight.Token);
            try { t.Wait(5000); Expect(false, "in-flight cancel must cancel the task"); }
            catch (AggregateException e) { Expect(e.InnerException is TaskCanceledException, "cancelled: " + e.InnerException); }
            Expect(t.IsCanceled && sw.ElapsedMilliseconds < 1000, "cancelled in " + sw.ElapsedMilliseconds + " ms");

            // A token that is never cancelled changes nothing.
            var never = new CancellationTokenSource(60000);
            t = c.HangupAsync(ids[2], never.Token);
            Expect(t.Wait(10000) && t.Result == Status.Ok, "token not cancelled");
            // Await works as usual.
            var awaited = Task.Run(async () => await c.HangupAsync(ids[2], never.Token));
            Expect(awaited.Wait(10000) && awaited.Result == Status.AlreadyEnded, "await");
        }
        finally
        {
            // Waits for the abandoned request (its 1.5 s delay), then returns.
            var sw = Stopwatch.StartNew();
            c.Dispose();
            Expect(sw.ElapsedMilliseconds < 3000, "Dispose took " + sw.ElapsedMilliseconds + " ms");
        }
    }

    static void DisposeCompletesPending()
    {
        var ids = Seed(5);
        var c = Client();
        foreach (var id in ids) Script(id, 300, 204);
        var tasks = ids.Select(id => c.HangupAsync(id)).ToArray();
        c.Dispose();
        Expect(tasks.All(t => t.IsCompleted && t.Result == Status.Ok), "every task completed by Dispose");
    }

    static void StatsCounts()
    {
        var ids = Seed(12);
        var seen = new ulong[Stats.StatusSlots];
        ulong sent = 0;  // hangups that reached the network: all but the invalid id
        Action<Status> saw = s => { seen[(int)s]++; if (s != Status.InvalidArgument) sent++; };
        var c = Client(new TryvoxOptions { TimeoutMs = 5000 });
        using (c)
        {
            var fresh = c.Stats();
            Expect(fresh.Size == (UIntPtr)Marshal.SizeOf(typeof(Stats)) && (ulong)fresh.Size == (ulong)(IntPtr.Size + 43 * 8),
                "Size is sizeof(tryvox_stats): " + fresh.Size);
            Expect(fresh.TotalHangups == 0 && fresh.Attempts == 0 && fresh.LatencyMax == TimeSpan.Zero, "a new client");

            Script(ids[0], 0, 503);  // one 503, then the simulator's normal answer: a retry
            for (int i = 4; i < 8; i++) Script(ids[i], 150, 204);
            saw(c.TryHangup(ids[0]));
            saw(c.TryHangup(ids[0]));
            saw(c.TryHangup("no-such-call"));
            saw(c.TryHangup("a/b"));  // refused before sending: counted as InvalidArgument
            var tasks = new[] { c.HangupAsync(ids[1]), c.HangupAsync(ids[2]) };
            Expect(Task.WaitAll(tasks, 10000), "async hangups in time");
            foreach (var t in tasks) saw(t.Result);
            Expect(c.HangupAsync("a/b").Result == Status.InvalidArgument, "refused async: not counted");

            // Readers on other threads while a bulk run is in flight.
            var stop = new ManualResetEventSlim();
            long maxInFlight = 0, reads = 0;
            var readers = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
            {
                try
                {
                    var prev = c.Stats();
                    while (!stop.IsSet)
                    {
                        var st = c.Stats();
                        Interlocked.Increment(ref reads);
                        Expect(st.TotalHangups >= prev.TotalHangups && st.Attempts >= prev.Attempts &&
                               st.ConnectionsOpened >= prev.ConnectionsOpened && st.InFlight <= 4,
                            "a counter went back, or too many in flight: " + st.InFlight);
                        long m;
                        while ((m = Interlocked.Read(ref maxInFlight)) < (long)st.InFlight &&
                               Interlocked.CompareExchange(ref maxInFlight, (long)st.InFlight, m) != m) { }
                        prev = st;
                        Thread.Sleep(1);
                    }
                }
                catch (Exception e) { Expect(false, "reader: " + e); }
            })).ToList();
            readers.ForEach(r => r.Start());
            var bulk = ids.Skip(3).Concat(new[] { ids[1], "nope" }).ToArray();
            var many = c.HangupMany(bulk, 4);
            stop.Set();
            readers.ForEach(r => r.Join());
            foreach (var s in many) saw(s);

            var stats = c.Stats();
            Console.WriteLine("stats: " + stats.TotalHangups + " hangups (" +
                string.Join(", ", Enumerable.Range(0, Stats.StatusSlots).Where(i => stats.HangupsByStatus[i] > 0)
                    .Select(i => (Status)i + " " + stats.HangupsByStatus[i])) +
                "), " + stats.Attempts + " attempts, " + stats.Retries + " retries, " + stats.InFlight + " in flight, " +
                stats.ConnectionsOpen + " of " + stats.ConnectionsOpened + " connections open, latency p50 " +
                stats.LatencyP50.TotalMilliseconds + " ms, p99 " + stats.LatencyP99.TotalMilliseconds + " ms, max " +
                stats.LatencyMax.TotalMilliseconds + " ms; " + Interlocked.Read(ref reads) + " reads during the bulk run");
            for (int i = 0; i < Stats.StatusSlots; i++)
                Expect(stats.HangupsByStatus[i] == seen[i],
                    "hangups " + (Status)i + ": stats " + stats.HangupsByStatus[i] + ", seen " + seen[i]);
            Expect(stats.Hangups(Status.Ok) == 12 && stats.Hangups(Status.AlreadyEnded) == 2 &&
                   stats.Hangups(Status.NotFound) == 2 && stats.Hangups(Status.InvalidArgument) == 1 &&
                   stats.TotalHangups == 17 && stats.Hangups((Status)99) == 0, "the expected outcomes");
            Expect(stats.RetriesServerError == 1 && stats.Attempts == sent + stats.Retries,
                stats.Attempts + " attempts, " + stats.RetriesServerError + " retries after a 5xx, " + sent + " sent");
            Expect(stats.InFlight == 0 && stats.ConnectionsOpened > 0 && stats.ConnectionsOpen <= stats.ConnectionsOpened, "gauges");
            Expect(Interlocked.Read(ref maxInFlight) > 0, "a reader saw hangups in flight");
            Expect(stats.LatencyMax >= TimeSpan.FromMilliseconds(150) && stats.LatencyMax < TimeSpan.FromSeconds(5) &&
                   stats.LatencyP50 > TimeSpan.Zero && stats.LatencyP50 <= stats.LatencyP90 && stats.LatencyP90 <= stats.LatencyP99,
                "latencies");
        }
        try { c.Stats(); Expect(false, "Stats after Dispose must throw"); }
        catch (ObjectDisposedException) { }
    }

    const string TestCa = @"-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUTlScszxYBum5HZWqV0K2at7MkkQwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVdHJ5dm94IGNzaGFycCB0ZXN0IENBMCAXDTI2MTIwMjIwMjIw
OVoYDzIxMjYxMTA4MjAyMjA5WjAgMR4wHAYDVQQDDBV0cnl2b3ggY3NoYXJwIHRl
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATm83JOU5NdQS1d4KdN20tL
tNsCoYwRXkelHq5SaBOeopXU2oQGnc5+VxD+yOGbuV8T297EUFXO/lUemh8ZRCSy
o1MwUTAdBgNVHQ4EFgQUKeMQ5+hASWQ7LiqUvbajHVTIJyYwHwYDVR0jBBgwFoAU
KeMQ5+hASWQ7LiqUvbajHVTIJyYwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiBRax4VbLGoOwMO7pJBh5x/q/rXIccqg8wzlZm99+56uQIhAOqaz3XK
SepobECDyDVlrEDEsV0VP4jb6yIZkaFK6kVk
-----END CERTIFICATE-----
";

    static void EveryOption()
    {
        var ca = Path.Combine(Path.GetTempPath(), "tryvox-cs-ca-" + Process.GetCurrentProcess().Id + ".pem");
        File.WriteAllText(ca, TestCa);
        var proxy = new ConnectProxy();
        var lines = new List<string>();
        var ids = Seed(5, "tenant-cs");
        try
        {
            var o = new TryvoxOptions
            {
                BaseUrl = baseUrl,
                TimeoutMs = 800,
                ConnectTimeoutMs = 500,
                MaxRetries = 0,
                TenantId = "tenant-cs",
                UserAgent = "csharp-options-test/2.0",
                CaFile = ca,
                Proxy = "http://127.0.0.1:" + proxy.Port,
                AllowInsecureHttp = true,
                Log = (level, msg) => { lock (lines) lines.Add(level + ": " + msg); },
            };
            using (var c = new TryvoxClient(account, key, o))
            {
                Expect(c.TryHangup(ids[0]) == Status.Ok, "tenant call (X-Tenant-ID)");
                var t = c.HangupAsync(ids[1]);
                Expect(t.Wait(10000) && t.Result == Status.Ok, "async tenant call");
                Script(ids[2], 0, 503);
                Expect(c.TryHangup(ids[2]) == Status.ServerError, "MaxRetries = 0: no retry after a 503");
                Script(ids[3], 2000, 204);
                var sw = Stopwatch.StartNew();
                Expect(c.TryHangup(ids[3]) == Status.Timeout && sw.ElapsedMilliseconds < 1800,
                    "TimeoutMs = 800: timed out in " + sw.ElapsedMilliseconds + " ms");
            }
            // The default client carries no tenant: the tenant's call is not found.
            using (var plain = Client())
                Expect(plain.TryHangup(ids[4]) == Status.NotFound, "calls of another tenant are invisible");
            string sent = proxy.Sent().ToLowerInvariant();
            // Plain http goes to the proxy in absolute form, never through a tunnel.
            int hangups = CountOf(sent, "delete " + baseUrl.ToLowerInvariant() + "/v1/voice/accounts/");
            Expect(proxy.Connects == 0 && hangups == 4, "the proxy carried " + hangups + " hangups in absolute form and "
                + proxy.Connects + " tunnels, want 4 and 0");
            Expect(CountOf(sent, "x-tenant-id: tenant-cs\r\n") == hangups, "X-Tenant-ID on every request");
            // Not printed on failure: the requests hold the key.
            Expect(sent.Contains("user-agent: libtryvox/") && sent.Contains(" csharp-options-test/2.0\r\n"), "User-Agent");
            lock (lines)
            {
                Expect(lines.Count > 0, "log lines arrive");
                Expect(!lines.Any(l => l.Contains(key)), "no log line holds the key");
            }
        }
        finally
        {
            proxy.Stop();
            File.Delete(ca);
        }
    }

    static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }

    static void BadOptions()
    {
        var bad = new Dictionary<string, TryvoxOptions>
        {
            { "base URL", new TryvoxOptions { BaseUrl = "ftp://example.com" } },
            { "max retries", new TryvoxOptions { MaxRetries = 101 } },
            { "CA file", new TryvoxOptions { CaFile = "/nonexistent/ca.pem" } },
            { "tenant", new TryvoxOptions { TenantId = "a b" } },
            { "user agent", new TryvoxOptions { UserAgent = "bad\nagent" } },
            { "proxy", new TryvoxOptions { Proxy = "not a url" } },
            { "plain http off loopback", new TryvoxOptions { BaseUrl = "http://192.0.2.1:8080" } },
            { "log and a bad URL", new TryvoxOptions { BaseUrl = "ftp://x", Log = (l, m) => { } } },
        };
        foreach (var b in bad)
        {
            try { Client(b.Value).Dispose(); Expect(false, b.Key + " must be refused"); }
            catch (TryvoxException e) { Expect(e.Status == Status.InvalidArgument, b.Key + ": " + e.Status); }
        }
        using (Client(new TryvoxOptions { BaseUrl = "http://192.0.2.1:8080", AllowInsecureHttp = true })) { }
        try { new TryvoxClient("AC1", "bad key").Dispose(); Expect(false, "bad key must throw"); }
        catch (TryvoxException e) { Expect(e.Status == Status.InvalidArgument, "bad key"); }
    }

    /// <summary>
    /// TrustStore chooses the roots a client trusts (its log says which), CaFile replaces
    /// them, a value outside the enum is refused. tests/pkg_go_csharp.rs sets
    /// TRYVOX_TLS_BASE_URL, TRYVOX_TLS_CA and SSL_CERT_FILE (the CA as the system's store).
    /// </summary>
    static void TrustStores()
    {
        try { Client(new TryvoxOptions { TrustStore = (TrustStore)3 }).Dispose(); Expect(false, "TrustStore 3 must be refused"); }
        catch (TryvoxException e) { Expect(e.Status == Status.InvalidArgument, "TrustStore 3: " + e.Status); }
        string tlsBase = Environment.GetEnvironmentVariable("TRYVOX_TLS_BASE_URL");
        string ca = Environment.GetEnvironmentVariable("TRYVOX_TLS_CA");
        if (string.IsNullOrEmpty(tlsBase) || string.IsNullOrEmpty(ca))
        {
            Console.WriteLine("trust store: SKIPPED the https part (no TRYVOX_TLS_BASE_URL, TRYVOX_TLS_CA)");
            return;
        }
        // The outcome of one hangup by a client with these roots, and its "TLS: trusting" lines.
        Func<TrustStore, string, Tuple<Status, List<string>>> hangup = (store, caFile) =>
        {
            var said = new List<string>();
            var o = new TryvoxOptions
            {
                BaseUrl = tlsBase, TrustStore = store, CaFile = caFile, MaxRetries = 0,
                Log = (level, msg) =>
                {
                    if (msg.Contains(key)) Expect(false, "a log line holds the key");
                    if (level == LogLevel.Info && msg.StartsWith("TLS: trusting ", StringComparison.Ordinal))
                        lock (said) said.Add(msg);
                },
            };
            Status st;
            using (var c = new TryvoxClient(account, key, o)) st = c.TryHangup("cs-trust-call");
            lock (said) return Tuple.Create(st, new List<string>(said));
        };
        // Mozilla's roots do not know the private CA: the handshake fails, nothing is sent.
        var r = hangup(TrustStore.Bundled, null);
        Expect(r.Item1 == Status.TlsError && r.Item2.Count == 1 && r.Item2[0].Contains(" bundled roots (Mozilla's)"),
            "bundled: " + r.Item1 + " " + string.Join(" | ", r.Item2));
        // A CA file replaces every store: the request reaches the simulator (no such call).
        r = hangup(TrustStore.Bundled, ca);
        Expect(r.Item1 == Status.NotFound && r.Item2.Count == 1 && r.Item2[0].Contains("of the CA file"),
            "CA file: " + r.Item1 + " " + string.Join(" | ", r.Item2));
        if (Environment.GetEnvironmentVariable("SSL_CERT_FILE") != ca)
        {
            Console.WriteLine("trust store: SKIPPED the system part (SSL_CERT_FILE is not TRYVOX_TLS_CA)");
            return;
        }
        // The system's store is the private CA: trusted by default and by System.
        foreach (var store in new[] { TrustStore.SystemOrBundled, TrustStore.System })
        {
            r = hangup(store, null);
            Expect(r.Item1 == Status.NotFound && r.Item2.Count == 1 &&
                   r.Item2[0] == "TLS: trusting 1 roots of the system's trust store",
                store + ": " + r.Item1 + " " + string.Join(" | ", r.Item2));
        }
    }

    /// <summary>A proxy on loopback (CONNECT tunnels and absolute-form requests)
    /// recording what clients send through it.</summary>
    sealed class ConnectProxy
    {
        readonly TcpListener listener = new TcpListener(IPAddress.Loopback, 0);
        readonly MemoryStream sent = new MemoryStream();
        readonly List<TcpClient> open = new List<TcpClient>();
        int connects;
        public int Port => ((IPEndPoint)listener.LocalEndpoint).Port;
        public int Connects => Volatile.Read(ref connects);

        public ConnectProxy()
        {
            listener.Start();
            new Thread(Accept) { IsBackground = true }.Start();
        }

        public string Sent() { lock (sent) return Encoding.ASCII.GetString(sent.ToArray()); }

        public void Stop()
        {
            listener.Stop();
            lock (open) foreach (var c in open) c.Close();
        }

        void Accept()
        {
            try
            {
                while (true)
                {
                    var client = listener.AcceptTcpClient();
                    lock (open) open.Add(client);
                    new Thread(() => Serve(client)) { IsBackground = true }.Start();
                }
            }
            catch (Exception) { }  // stopped
        }

        void Serve(TcpClient client)
        {
            try
            {
                var s = client.GetStream();
                var head = new StringBuilder();
                while (!head.ToString().EndsWith("\r\n\r\n"))
                {
                    int b = s.ReadByte();
                    if (b < 0) return;
                    head.Append((char)b);
                }
                // CONNECT host:port HTTP/1.1 (https), or plain http's request itself in
                // absolute form: DELETE http://host:port/path HTTP/1.1.
                var target = head.ToString().Split(' ')[1];
                bool tunnel = head.ToString().StartsWith("CONNECT ");
                if (!tunnel)
                {
                    var authority = target.Substring("http://".Length);
                    target = authority.Substring(0, authority.IndexOf('/'));
                }
                int colon = target.LastIndexOf(':');
                var up = new TcpClient(target.Substring(0, colon), int.Parse(target.Substring(colon + 1)));
                lock (open) open.Add(up);
                var u = up.GetStream();
                if (tunnel)
                {
                    Interlocked.Increment(ref connects);
                    var ok = Encoding.ASCII.GetBytes("HTTP/1.1 200 Connection established\r\n\r\n");
                    s.Write(ok, 0, ok.Length);
                }
                else
                {
                    // The origin takes absolute form too (RFC 9112 3.2.2): the head as it
                    // came, and what follows on this connection relayed to the same origin.
                    var h = Encoding.ASCII.GetBytes(head.ToString());
                    lock (sent) sent.Write(h, 0, h.Length);
                    u.Write(h, 0, h.Length);
                }
                new Thread(() => Pipe(u, s, false)) { IsBackground = true }.Start();
                Pipe(s, u, true);
            }
            catch (Exception) { }  // a closed tunnel
        }

        void Pipe(Stream from, Stream to, bool record)
        {
            var buf = new byte[16384];
            try
            {
                int n;
                while ((n = from.Read(buf, 0, buf.Length)) > 0)
                {
                    if (record) lock (sent) sent.Write(buf, 0, n);
                    to.Write(buf, 0, n);
                }
            }
            catch (Exception) { }
            finally { to.Close(); }
        }
    }
}
