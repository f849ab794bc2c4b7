// C# example and test against the simulator.
// usage: mono Tryvox.Example.exe LIVE_ID LIVE_ID LIVE_ID LIVE_ID... (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY)
using System;
using System.Linq;
using System.Threading.Tasks;
using Tryvox;

static class Program
{
    static int failures = 0;
    static void Expect(bool ok, string what)
    {
        if (!ok) { failures++; Console.Error.WriteLine("FAIL: " + what); }
    }

    static int Main(string[] ids)
    {
        if (ids.Length < 4) { Console.Error.WriteLine("need 4 live call ids"); return 2; }
        var opts = new TryvoxOptions { BaseUrl = Environment.GetEnvironmentVariable("TRYVOX_BASE_URL"), UserAgent = "csharp-example/1.0" };
        using (var c = new TryvoxClient(Environment.GetEnvironmentVariable("TRYVOX_ACCOUNT_ID"),
                                        Environment.GetEnvironmentVariable("TRYVOX_API_KEY"), opts))
        {
            c.Hangup(ids[0]);
            try { c.Hangup(ids[0]); Expect(false, "second hangup must throw"); }
            catch (TryvoxException e)
            {
                Expect(e.Status == Status.AlreadyEnded && e.HttpStatus == 404 && e.ServerCode == "call_already_ended", "already ended: " + e.Message);
                Expect(e.CallIsGone, "gone");
                Console.WriteLine("second hangup: " + TryvoxClient.StatusText(e.Status) + ": " + e.Message);
            }
            Expect(c.TryHangup("no-such-call") == Status.NotFound, "not found");
            Expect(c.TryHangup("a/b") == Status.InvalidArgument, "bad id");
            try { new TryvoxClient("AC1", "bad key").Dispose(); Expect(false, "bad key must throw"); }
            catch (TryvoxException e) { Expect(e.Status == Status.InvalidArgument, "bad key"); }

            // Tasks on the thread pool sharing one client.
            var tasks = ids.Skip(1).Take(ids.Length - 2).Select(id => Task.Run(() => c.TryHangup(id))).ToArray();
            Task.WaitAll(tasks);
            Expect(tasks.All(t => t.Result == Status.Ok), "parallel hangups");
            // Without blocking a thread: the task completes when the library calls back.
            var again = c.HangupAsync(ids[1]);
            Expect(again.Wait(10000) && again.Result == Status.AlreadyEnded, "async");
            var many = c.HangupMany(new[] { ids[ids.Length - 1], ids[0], "nope" }, 2);
            Expect(many[0] == Status.Ok && many[1] == Status.AlreadyEnded && many[2] == Status.NotFound, "many");
        }
        Console.WriteLine("C# example: " + (failures == 0 ? "ok (libtryvox " + TryvoxClient.Version + ")" : "FAILED"));
        return failures == 0 ? 0 : 1;
    }
}
