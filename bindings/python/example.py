"""Python example and test against the simulator: threads sharing one client, then asyncio.
usage: example.py LIVE_ID LIVE_ID LIVE_ID LIVE_ID... (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY)
Needs only the installed package (pip install the wheel): no PYTHONPATH, no TRYVOX_LIB."""
import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor

ids = sys.argv[1:]
ENV = ("TRYVOX_BASE_URL", "TRYVOX_ACCOUNT_ID", "TRYVOX_API_KEY")
if len(ids) < 4 or not all(os.environ.get(v) for v in ENV):
    print(f"usage: {sys.argv[0]} LIVE_ID LIVE_ID LIVE_ID LIVE_ID... (4 or more live call ids; "
          f"got {len(ids)})\n"
          "  env (all required): " + ", ".join(ENV), file=sys.stderr)
    sys.exit(2)

import tryvox  # noqa: E402 (after the usage check, which needs no package)

failures = []


def expect(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


with tryvox.Client(os.environ["TRYVOX_ACCOUNT_ID"], os.environ["TRYVOX_API_KEY"],
                   base_url=os.environ["TRYVOX_BASE_URL"], user_agent="python-example/1.0") as c:
    expect(c.hangup(ids[0]) == 204, "first hangup")
    try:
        c.hangup(ids[0])
        expect(False, "second hangup must raise")
    except tryvox.AlreadyEnded as e:
        expect(e.http_status == 404 and e.code == "call_already_ended", f"details {e!r}")
        print("second hangup:", tryvox.status_str(e.status) + ":", e)
    try:
        c.hangup("no-such-call")
        expect(False, "unknown must raise")
    except tryvox.CallGone as e:
        expect(isinstance(e, tryvox.NotFound), "NotFound")
    try:
        c.hangup("a/b")
        expect(False, "bad id must raise")
    except ValueError:
        pass
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(c.hangup, ids[1:-1]))
    expect(all(r == 204 for r in results), f"threads {results}")
    expect(c.hangup_many([ids[-1], ids[0], "nope"], 2) == [tryvox.OK, tryvox.ALREADY_ENDED, tryvox.NOT_FOUND], "many")


async def async_part():
    async with tryvox.Client(os.environ["TRYVOX_ACCOUNT_ID"], os.environ["TRYVOX_API_KEY"],
                             base_url=os.environ["TRYVOX_BASE_URL"]) as c:
        try:
            await c.hangup_async(ids[0])
            expect(False, "async hangup of an ended call must raise")
        except tryvox.AlreadyEnded as e:
            expect(e.http_status == 404, f"async details {e!r}")
        statuses = await c.hangup_many_async([ids[1], "nope"])
        expect(statuses == [tryvox.ALREADY_ENDED, tryvox.NOT_FOUND], f"many async {statuses}")


asyncio.run(async_part())
print("Python example:", "FAILED" if failures else f"ok (libtryvox {tryvox.version()})")
sys.exit(1 if failures else 0)
