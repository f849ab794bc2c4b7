// Tryvox.cs: P/Invoke bindings for libtryvox (Mono's mcs, or .NET via Tryvox.csproj).
//
// The native library is found as "tryvox": libtryvox.so. The NuGet package carries it as
// runtimes/linux-x64/native/libtryvox.so, where .NET finds it; the Mono build (make
// csharp) puts it next to Tryvox.dll with a Tryvox.dll.config that maps "tryvox" to the
// same runtimes/ path. Otherwise put it on LD_LIBRARY_PATH or install it.
//
// TryvoxClient is thread-safe (Stats() may be read from any thread while hangups run);
// dispose it when done (Dispose waits for queued async hangups and completes their tasks,
// like tryvox_client_free).
using System;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Tryvox
{
    /// <summary>The libtryvox status numbers.</summary>
    public enum Status
    {
        Ok = 0,
        NotFound = 1,
        AlreadyEnded = 2,
        InvalidArgument = 3,
        Unauthorized = 4,
        Forbidden = 5,
        RateLimited = 6,
        ServerError = 7,
        Timeout = 8,
        NetworkError = 9,
        TlsError = 10,
        ProtocolError = 11,
        InternalError = 12,
        Busy = 13,
    }

    /// <summary>A failed libtryvox call.</summary>
    public class TryvoxException : Exception
    {
        public Status Status { get; }
        public int HttpStatus { get; }
        public string ServerCode { get; }

        public TryvoxException(Status status, string message, int httpStatus, string serverCode)
            : base(message)
        {
            Status = status;
            HttpStatus = httpStatus;
            ServerCode = serverCode;
        }

        /// <summary>NotFound or AlreadyEnded: either way the call is not running.</summary>
        public bool CallIsGone => Status == Status.NotFound || Status == Status.AlreadyEnded;
    }

    /// <summary>
    /// The roots that verify the API's certificate when no CaFile is set (the C
    /// tryvox_trust_store; TryvoxOptions.TrustStore). The client's Log gets an info line
    /// saying which roots it trusts and how many.
    /// </summary>
    public enum TrustStore
    {
        /// <summary>The default: the system's trust store (SSL_CERT_FILE, SSL_CERT_DIR, else the distribution's bundle), else the roots compiled into the library (Mozilla's).</summary>
        SystemOrBundled = 0,
        /// <summary>The system's trust store only: creating the client throws TryvoxException (Status.TlsError) if it has none.</summary>
        System = 1,
        /// <summary>Only the roots compiled into the library (Mozilla's); the system's store is not read.</summary>
        Bundled = 2,
    }

    /// <summary>Severity of a library log line (the C callback's level).</summary>
    public enum LogLevel
    {
        Error = 0,
        Warn = 1,
        Info = 2,
        Debug = 3,
    }

    /// <summary>
    /// A snapshot of a client's statistics (TryvoxClient.Stats): the C tryvox_stats, field
    /// for field. Counters only grow over the client's life (subtract two snapshots for a
    /// window); InFlight and ConnectionsOpen are gauges. Latencies are whole hangups
    /// (retries and waits included) in microseconds; the percentiles are upper edges of
    /// log-linear buckets (at most 19% above the true value), 0 before the first hangup;
    /// LatencyMaxUs is exact.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Stats
    {
        /// <summary>sizeof(tryvox_stats) as the library was asked to fill it.</summary>
        public UIntPtr Size;
        /// <summary>Finished hangups by final status, indexed by the Status number (see Hangups).</summary>
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = StatusSlots)]
        public ulong[] HangupsByStatus;
        /// <summary>HTTP attempts: one per hangup sent, plus one per retry.</summary>
        public ulong Attempts;
        /// <summary>Retries after a connection failed before any response.</summary>
        public ulong RetriesConnection;
        /// <summary>Retries after a 429.</summary>
        public ulong RetriesRateLimited;
        /// <summary>Retries after a 500, 502, 503 or 504.</summary>
        public ulong RetriesServerError;
        /// <summary>Hangups running now.</summary>
        public ulong InFlight;
        /// <summary>TCP connections open now.</summary>
        public ulong ConnectionsOpen;
        /// <summary>TCP connections opened over the client's life.</summary>
        public ulong ConnectionsOpened;
        /// <summary>Latency percentiles and maximum of finished hangups, in microseconds.</summary>
        public ulong LatencyP50Us, LatencyP90Us, LatencyP99Us, LatencyMaxUs;

        /// <summary>The length of HangupsByStatus (room for statuses added later).</summary>
        public const int StatusSlots = 32;

        /// <summary>Finished hangups whose final status is s (0 for an unknown number).</summary>
        public ulong Hangups(Status s)
        {
            int i = (int)s;
            return HangupsByStatus != null && i >= 0 && i < HangupsByStatus.Length ? HangupsByStatus[i] : 0;
        }

        /// <summary>Finished hangups, whatever their status.</summary>
        public ulong TotalHangups
        {
            get
            {
                ulong n = 0;
                if (HangupsByStatus != null) foreach (var v in HangupsByStatus) n += v;
                return n;
            }
        }

        /// <summary>Retries for any cause.</summary>
        public ulong Retries => RetriesConnection + RetriesRateLimited + RetriesServerError;

        public TimeSpan LatencyP50 => Span(LatencyP50Us);
        public TimeSpan LatencyP90 => Span(LatencyP90Us);
        public TimeSpan LatencyP99 => Span(LatencyP99Us);
        public TimeSpan LatencyMax => Span(LatencyMaxUs);

        static TimeSpan Span(ulong us) =>
            us >= (ulong)(TimeSpan.MaxValue.Ticks / 10) ? TimeSpan.MaxValue : TimeSpan.FromTicks((long)us * 10);
    }

    internal static class Native
    {
        const string Lib = "tryvox";

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void HangupCallback(IntPtr userData, IntPtr callUuid, int status, int httpStatus, IntPtr message);

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        internal delegate void LogCallback(IntPtr userData, int level, IntPtr message);

        [DllImport(Lib)] internal static extern IntPtr tryvox_client_new_with_options(
            [MarshalAs(UnmanagedType.LPStr)] string authId, [MarshalAs(UnmanagedType.LPStr)] string apiKey, IntPtr options);
        [DllImport(Lib)] internal static extern void tryvox_client_free(IntPtr client);
        [DllImport(Lib)] internal static extern int tryvox_hangup(ClientHandle client, [MarshalAs(UnmanagedType.LPStr)] string callUuid);
        [DllImport(Lib)] internal static extern int tryvox_hangup_async(ClientHandle client,
            [MarshalAs(UnmanagedType.LPStr)] string callUuid, HangupCallback callback, IntPtr userData);
        [DllImport(Lib)] internal static extern int tryvox_hangup_many(ClientHandle client,
            [In, MarshalAs(UnmanagedType.LPArray, ArraySubType = UnmanagedType.LPStr)] string[] ids,
            UIntPtr count, [Out] int[] statuses, uint maxParallel);
        [DllImport(Lib)] internal static extern int tryvox_client_stats(ClientHandle client, ref Stats stats);
        [DllImport(Lib)] internal static extern IntPtr tryvox_last_error();
        [DllImport(Lib)] internal static extern IntPtr tryvox_last_error_code();
        [DllImport(Lib)] internal static extern int tryvox_last_http_status();
        [DllImport(Lib)] internal static extern IntPtr tryvox_status_str(int status);
        [DllImport(Lib)] internal static extern IntPtr tryvox_version();
        [DllImport(Lib)] internal static extern IntPtr tryvox_options_new();
        [DllImport(Lib)] internal static extern void tryvox_options_free(IntPtr options);
        [DllImport(Lib)] internal static extern int tryvox_options_set_base_url(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_timeout_ms(IntPtr o, uint v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_connect_timeout_ms(IntPtr o, uint v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_max_retries(IntPtr o, uint v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_tenant_id(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_user_agent(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_trust_store(IntPtr o, int store);
        [DllImport(Lib)] internal static extern int tryvox_options_set_ca_file(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_proxy(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_allow_insecure_http(IntPtr o, int allow);
        [DllImport(Lib)] internal static extern int tryvox_options_set_log_callback(IntPtr o, LogCallback cb, IntPtr userData);

        /// <summary>A library-owned NUL-terminated UTF-8 string, copied.</summary>
        internal static string Str(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }

        // The last error is per OS thread; P/Invoke calls run on the caller's thread, so
        // reading it right after the call on the same thread is correct.
        internal static void Check(int rc)
        {
            if (rc != 0)
                throw new TryvoxException((Status)rc, Str(tryvox_last_error()), tryvox_last_http_status(),
                    Str(tryvox_last_error_code()));
        }
    }

    /// <summary>Owns a tryvox_client; released exactly once, even if Dispose is forgotten.</summary>
    public sealed class ClientHandle : SafeHandle
    {
        // The Options.Log delegate's handle: the library may call it until the client is
        // freed, so it is released only after tryvox_client_free.
        GCHandle log;

        public ClientHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid => handle == IntPtr.Zero;
        protected override bool ReleaseHandle()
        {
            Native.tryvox_client_free(handle);
            if (log.IsAllocated) log.Free();
            return true;
        }
        internal void Set(IntPtr p, GCHandle logHandle)
        {
            log = logHandle;
            SetHandle(p);
        }
    }

    /// <summary>
    /// Options for a client; null or zero fields keep the library's defaults. Each maps to
    /// one tryvox_options_* setter of include/tryvox.h.
    /// </summary>
    public class TryvoxOptions
    {
        /// <summary>API base URL (default https://api.tryvox.io).</summary>
        public string BaseUrl;
        /// <summary>Total time per hangup, retries included, in ms (default 10000).</summary>
        public uint TimeoutMs;
        /// <summary>Time to set up one connection, in ms (default 3000).</summary>
        public uint ConnectTimeoutMs;
        /// <summary>Extra attempts after the first (null: the default, 2; 0 disables retries; at most 100).</summary>
        public uint? MaxRetries;
        /// <summary>Sent as X-Tenant-ID.</summary>
        public string TenantId;
        /// <summary>Appended to the library's User-Agent, e.g. "my-pbx/2.3".</summary>
        public string UserAgent;
        /// <summary>PEM file of roots to trust instead of any trust store.</summary>
        public string CaFile;
        /// <summary>The roots trusted when CaFile is null (default TrustStore.SystemOrBundled); a value outside the enum throws TryvoxException (Status.InvalidArgument).</summary>
        public TrustStore TrustStore;
        /// <summary>HTTP proxy, "http://host:port" (CONNECT for https).</summary>
        public string Proxy;
        /// <summary>Allows a plain-http base URL to a host that is not loopback: the key then crosses the network in clear text.</summary>
        public bool AllowInsecureHttp;
        /// <summary>
        /// Receives the library's log lines (never the API key). Runs on library threads,
        /// possibly several at once: it must be thread-safe and return quickly, and must not
        /// dispose the client. Exceptions it throws are swallowed.
        /// </summary>
        public Action<LogLevel, string> Log;
    }

    /// <summary>A TryVox client. Safe to use from many threads at once.</summary>
    public sealed class TryvoxClient : IDisposable
    {
        readonly ClientHandle handle = new ClientHandle();

        // The two delegates the library calls. Static fields keep them (and the function
        // pointers marshalled from them) alive for the life of the process, so they are
        // alive whenever a callback runs; per-request state travels in a GCHandle.
        static readonly Native.HangupCallback HangupDone = OnHangupDone;
        static readonly Native.LogCallback LogLine = OnLog;

        public TryvoxClient(string authId, string apiKey, TryvoxOptions options = null)
        {
            IntPtr o = Native.tryvox_options_new();
            if (o == IntPtr.Zero) throw new OutOfMemoryException("tryvox_options_new");
            var log = default(GCHandle);
            try
            {
                if (options != null)
                {
                    if (options.BaseUrl != null) Native.Check(Native.tryvox_options_set_base_url(o, options.BaseUrl));
                    if (options.TimeoutMs != 0) Native.Check(Native.tryvox_options_set_timeout_ms(o, options.TimeoutMs));
                    if (options.ConnectTimeoutMs != 0) Native.Check(Native.tryvox_options_set_connect_timeout_ms(o, options.ConnectTimeoutMs));
                    if (options.MaxRetries.HasValue) Native.Check(Native.tryvox_options_set_max_retries(o, options.MaxRetries.Value));
                    if (options.TenantId != null) Native.Check(Native.tryvox_options_set_tenant_id(o, options.TenantId));
                    if (options.UserAgent != null) Native.Check(Native.tryvox_options_set_user_agent(o, options.UserAgent));
                    if (options.TrustStore != TrustStore.SystemOrBundled) Native.Check(Native.tryvox_options_set_trust_store(o, (int)options.TrustStore));
                    if (options.CaFile != null) Native.Check(Native.tryvox_options_set_ca_file(o, options.CaFile));
                    if (options.Proxy != null) Native.Check(Native.tryvox_options_set_proxy(o, options.Proxy));
                    if (options.AllowInsecureHttp) Native.Check(Native.tryvox_options_allow_insecure_http(o, 1));
                    if (options.Log != null)
                    {
                        log = GCHandle.Alloc(options.Log);
                        Native.Check(Native.tryvox_options_set_log_callback(o, LogLine, GCHandle.ToIntPtr(log)));
                    }
                }
                IntPtr p = Native.tryvox_client_new_with_options(authId, apiKey, o);
                if (p == IntPtr.Zero) Native.Check((int)Status.InvalidArgument);
                handle.Set(p, log);
            }
            catch
            {
                if (log.IsAllocated) log.Free();
                throw;
            }
            finally
            {
                Native.tryvox_options_free(o);
            }
        }

        /// <summary>Hangs up, blocking; throws TryvoxException unless the call was ended.</summary>
        public void Hangup(string callUuid) => Native.Check(Native.tryvox_hangup(handle, callUuid));

        /// <summary>Hangs up, blocking, without throwing.</summary>
        public Status TryHangup(string callUuid) => (Status)Native.tryvox_hangup(handle, callUuid);

        /// <summary>Hangs up every id, at most maxParallel at once (0 = default).</summary>
        public Status[] HangupMany(string[] ids, uint maxParallel = 0)
        {
            var outp = new int[ids.Length];
            if (ids.Length == 0) return new Status[0];
            Native.Check(Native.tryvox_hangup_many(handle, ids, (UIntPtr)ids.Length, outp, maxParallel));
            return Array.ConvertAll(outp, s => (Status)s);
        }

        /// <summary>
        /// The client's statistics now (tryvox_client_stats). Takes no lock in the library:
        /// call it from any thread, as often as wanted, while hangups run.
        /// Throws ObjectDisposedException after Dispose.
        /// </summary>
        public Stats Stats()
        {
            var s = new Stats
            {
                Size = (UIntPtr)Marshal.SizeOf(typeof(Stats)),
                HangupsByStatus = new ulong[Tryvox.Stats.StatusSlots],
            };
            Native.Check(Native.tryvox_client_stats(handle, ref s));
            return s;
        }

        sealed class Pending
        {
            internal readonly TaskCompletionSource<Status> Tcs =
                new TaskCompletionSource<Status>(TaskCreationOptions.RunContinuationsAsynchronously);
            internal CancellationTokenRegistration Registration;
        }

        /// <summary>
        /// Hangs up without blocking the calling thread (tryvox_hangup_async): the task
        /// completes with the outcome's Status (Ok when the call was ended) when the library's
        /// callback runs. Continuations never run on the library's thread.
        /// A request the library refuses (an invalid id: InvalidArgument; the client is being
        /// disposed: Busy) completes at once with that status, and nothing is sent.
        /// Cancellation: a token already cancelled sends nothing (the task is cancelled). A
        /// hangup already handed to the library cannot be recalled: cancelling the token then
        /// cancels the task at once, while the request finishes in the background (bounded by
        /// TimeoutMs) and its outcome is discarded; the call may or may not have been ended
        /// (hang up again to find out: a hangup is idempotent). Dispose waits for such requests.
        /// Throws ObjectDisposedException after Dispose.
        /// </summary>
        public Task<Status> HangupAsync(string callUuid, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested)
                return Task.FromCanceled<Status>(cancellationToken);
            var pending = new Pending();
            if (cancellationToken.CanBeCanceled)
                pending.Registration = cancellationToken.Register(
                    () => pending.Tcs.TrySetCanceled(cancellationToken), useSynchronizationContext: false);
            var state = GCHandle.Alloc(pending);
            int rc;
            try
            {
                rc = Native.tryvox_hangup_async(handle, callUuid, HangupDone, GCHandle.ToIntPtr(state));
            }
            catch
            {
                state.Free();
                pending.Registration.Dispose();
                throw;
            }
            if (rc != (int)Status.Ok)
            {
                // Refused: the callback will never run.
                state.Free();
                pending.Registration.Dispose();
                return Task.FromResult((Status)rc);
            }
            return pending.Tcs.Task;
        }

        // Runs once per accepted HangupAsync, on a library thread. Never throws into C.
        static void OnHangupDone(IntPtr userData, IntPtr callUuid, int status, int httpStatus, IntPtr message)
        {
            try
            {
                var state = GCHandle.FromIntPtr(userData);
                var pending = (Pending)state.Target;
                state.Free();
                pending.Registration.Dispose();
                pending.Tcs.TrySetResult((Status)status);
            }
            catch
            {
                // Nothing can be reported to the library; the task stays as it was.
            }
        }

        static void OnLog(IntPtr userData, int level, IntPtr message)
        {
            try
            {
                var log = (Action<LogLevel, string>)GCHandle.FromIntPtr(userData).Target;
                log((LogLevel)level, Native.Str(message));
            }
            catch
            {
                // A throwing log delegate must not unwind into the library.
            }
        }

        public static string Version => Native.Str(Native.tryvox_version());
        public static string StatusText(Status s) => Native.Str(Native.tryvox_status_str((int)s));

        /// <summary>Frees the client: waits for its queued async hangups and completes their tasks.</summary>
        public void Dispose() => handle.Dispose();
    }
}
