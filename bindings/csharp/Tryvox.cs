// Tryvox.cs: P/Invoke bindings for libtryvox (Mono's mcs or .NET).
//
// The native library is found as "tryvox" (libtryvox.so on Linux: put it on
// LD_LIBRARY_PATH or install it). TryvoxClient is thread-safe; dispose it when done
// (Dispose waits for queued async hangups, like tryvox_client_free).
using System;
using System.Runtime.InteropServices;

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

    internal static class Native
    {
        const string Lib = "tryvox";
        [DllImport(Lib)] internal static extern IntPtr tryvox_client_new_with_options(
            [MarshalAs(UnmanagedType.LPStr)] string authId, [MarshalAs(UnmanagedType.LPStr)] string apiKey, IntPtr options);
        [DllImport(Lib)] internal static extern void tryvox_client_free(IntPtr client);
        [DllImport(Lib)] internal static extern int tryvox_hangup(ClientHandle client, [MarshalAs(UnmanagedType.LPStr)] string callUuid);
        [DllImport(Lib)] internal static extern int tryvox_hangup_many(ClientHandle client,
            [In, MarshalAs(UnmanagedType.LPArray, ArraySubType = UnmanagedType.LPStr)] string[] ids,
            UIntPtr count, [Out] int[] statuses, uint maxParallel);
        [DllImport(Lib)] internal static extern IntPtr tryvox_last_error();
        [DllImport(Lib)] internal static extern IntPtr tryvox_last_error_code();
        [DllImport(Lib)] internal static extern int tryvox_last_http_status();
        [DllImport(Lib)] internal static extern IntPtr tryvox_status_str(int status);
        [DllImport(Lib)] internal static extern IntPtr tryvox_version();
        [DllImport(Lib)] internal static extern IntPtr tryvox_options_new();
        [DllImport(Lib)] internal static extern void tryvox_options_free(IntPtr options);
        [DllImport(Lib)] internal static extern int tryvox_options_set_base_url(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_timeout_ms(IntPtr o, uint v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_tenant_id(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);
        [DllImport(Lib)] internal static extern int tryvox_options_set_user_agent(IntPtr o, [MarshalAs(UnmanagedType.LPStr)] string v);

        internal static string Str(IntPtr p) => p == IntPtr.Zero ? "" : Marshal.PtrToStringAnsi(p);

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
        public ClientHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid => handle == IntPtr.Zero;
        protected override bool ReleaseHandle()
        {
            Native.tryvox_client_free(handle);
            return true;
        }
        internal void Set(IntPtr p) => SetHandle(p);
    }

    /// <summary>Options for a client; null or zero fields keep the library's defaults.</summary>
    public class TryvoxOptions
    {
        public string BaseUrl;
        public uint TimeoutMs;
        public string TenantId;
        public string UserAgent;
    }

    /// <summary>A TryVox client. Safe to use from many threads at once.</summary>
    public sealed class TryvoxClient : IDisposable
    {
        readonly ClientHandle handle = new ClientHandle();

        public TryvoxClient(string authId, string apiKey, TryvoxOptions options = null)
        {
            IntPtr o = Native.tryvox_options_new();
            try
            {
                if (options?.BaseUrl != null) Native.Check(Native.tryvox_options_set_base_url(o, options.BaseUrl));
                if (options != null && options.TimeoutMs != 0) Native.Check(Native.tryvox_options_set_timeout_ms(o, options.TimeoutMs));
                if (options?.TenantId != null) Native.Check(Native.tryvox_options_set_tenant_id(o, options.TenantId));
                if (options?.UserAgent != null) Native.Check(Native.tryvox_options_set_user_agent(o, options.UserAgent));
                IntPtr p = Native.tryvox_client_new_with_options(authId, apiKey, o);
                if (p == IntPtr.Zero) Native.Check((int)Status.InvalidArgument);
                handle.Set(p);
            }
            finally
            {
                Native.tryvox_options_free(o);
            }
        }

        /// <summary>Hangs up; throws TryvoxException unless the call was ended.</summary>
        public void Hangup(string callUuid) => Native.Check(Native.tryvox_hangup(handle, callUuid));

        /// <summary>Hangs up without throwing.</summary>
        public Status TryHangup(string callUuid) => (Status)Native.tryvox_hangup(handle, callUuid);

        /// <summary>Hangs up every id, at most maxParallel at once (0 = default).</summary>
        public Status[] HangupMany(string[] ids, uint maxParallel = 0)
        {
            var outp = new int[ids.Length];
            if (ids.Length == 0) return new Status[0];
            Native.Check(Native.tryvox_hangup_many(handle, ids, (UIntPtr)ids.Length, outp, maxParallel));
            return Array.ConvertAll(outp, s => (Status)s);
        }

        public static string Version => Native.Str(Native.tryvox_version());
        public static string StatusText(Status s) => Native.Str(Native.tryvox_status_str((int)s));

        public void Dispose() => handle.Dispose();
    }
}
