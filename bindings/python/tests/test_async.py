"""The asyncio API of the installed tryvox package, against the TryVox simulator.

usage: test_async.py (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY; the base URL
must be a tryvox-sim, whose /_sim/ endpoints seed calls and script slow answers).
Prints "async tests: ok" and exits 0, or lists the failures and exits 1.
"""
import asyncio
import collections
import json
import logging
import os
import sys
import time
import urllib.request
import uuid

import tryvox

BASE = os.environ["TRYVOX_BASE_URL"].rstrip("/")
ACCOUNT = os.environ["TRYVOX_ACCOUNT_ID"]
KEY = os.environ["TRYVOX_API_KEY"]
failures = []


def expect(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def sim(path, body):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = r.read()
    return json.loads(data) if data else None


def seed(n):
    return sim("/_sim/seed", {"count": n})["call_uuids"]


def slow_id(delay_ms):
    """An id whose next hangup the simulator answers 204 after delay_ms."""
    i = "slow-" + uuid.uuid4().hex
    sim(f"/_sim/calls/{i}/faults", {"responses": [{"status": 204, "delay_ms": delay_ms}]})
    return i


def client(**kw):
    return tryvox.Client(ACCOUNT, KEY, base_url=BASE, **kw)


def loop_errors(loop):
    """Records what the loop's exception handler sees (a future set twice, a failing callback)."""
    seen = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx.get("message")))
    return seen


# Counts every delivery the bridge makes, per future: exactly once each.
deliveries = collections.Counter()
_real_settle = tryvox._settle


def counting_settle(fut, *args):
    deliveries[id(fut)] += 1
    _real_settle(fut, *args)


tryvox._settle = counting_settle


async def concurrent_hangups_exactly_once():
    errors = loop_errors(asyncio.get_running_loop())
    ids = seed(60)
    deliveries.clear()
    async with client() as c:
        results = await asyncio.gather(*(c.hangup_async(i) for i in ids), return_exceptions=True)
        expect(results == [204] * len(ids), f"concurrent hangups: {results}")
        expect(len(deliveries) == len(ids) and set(deliveries.values()) == {1},
               f"one delivery per request: {len(deliveries)} futures, counts {set(deliveries.values())}")
        expect(c.pending_async == 0, f"nothing pending: {c.pending_async}")
        # Each call was ended by its own request, once: all are over now.
        again = await c.hangup_many_async(ids)
        expect(again == [tryvox.ALREADY_ENDED] * len(ids), f"second round: {set(again)}")
    expect(not errors, f"loop errors: {errors}")


async def errors_are_raised():
    async with client() as c:
        try:
            await c.hangup_async("no-such-call-" + uuid.uuid4().hex)
            expect(False, "not-found id must raise")
        except tryvox.NotFound as e:
            expect(isinstance(e, tryvox.CallGone) and e.status == tryvox.NOT_FOUND and e.http_status == 404,
                   f"not found details {e!r}")
        [i] = seed(1)
        expect(await c.hangup_async(i) == 204, "hangup")
        try:
            await c.hangup_async(i)
            expect(False, "ended call must raise")
        except tryvox.AlreadyEnded as e:
            expect(e.status == tryvox.ALREADY_ENDED, f"already ended {e!r}")
        try:
            await c.hangup_async("a/b")  # refused at once by the library, nothing sent
            expect(False, "invalid id must raise")
        except tryvox.InvalidArgument as e:
            expect(isinstance(e, ValueError) and e.status == tryvox.INVALID_ARGUMENT, f"invalid {e!r}")
        expect(c.pending_async == 0, "nothing left pending")


async def bulk_does_not_block_the_loop():
    """A counter task ticks whenever the loop runs it. While the bulk call is awaited the
    counter must advance, and async hangups must complete on the same loop: a blocked loop
    could do neither. One id is answered only after 1.5 s, so the bulk is surely in flight."""
    errors = loop_errors(asyncio.get_running_loop())
    ids = seed(150) + [slow_id(1500)]
    side = seed(5)
    state = {"in_bulk": False, "ticks": 0, "ticks_in_bulk": 0, "done_in_bulk": 0, "stop": False}

    async def ticker():
        while not state["stop"]:
            state["ticks"] += 1
            if state["in_bulk"]:
                state["ticks_in_bulk"] += 1
            await asyncio.sleep(0.001)

    async def side_hangups(c):
        while not state["in_bulk"]:
            await asyncio.sleep(0)
        for i in side:
            code = await c.hangup_async(i)
            if state["in_bulk"] and code == 204:
                state["done_in_bulk"] += 1

    async with client() as c:
        tick = asyncio.ensure_future(ticker())
        other = asyncio.ensure_future(side_hangups(c))
        await asyncio.sleep(0)
        state["in_bulk"] = True
        statuses = await c.hangup_many_async(ids, max_parallel=16)
        state["in_bulk"] = False
        await other
        state["stop"] = True
        await tick
    expect(statuses == [tryvox.OK] * len(ids), f"bulk statuses {collections.Counter(statuses)}")
    expect(state["ticks_in_bulk"] > 0, f"the counter never ticked during the bulk call: {state}")
    expect(state["done_in_bulk"] > 0, f"no async hangup completed during the bulk call: {state}")
    expect(not errors, f"loop errors: {errors}")
    print(f"bulk of {len(ids)}: counter ticked {state['ticks_in_bulk']} times, "
          f"{state['done_in_bulk']} async hangups completed meanwhile")


def never_calls_into_a_closed_loop():
    """A request whose loop is closed before its answer: the answer is dropped quietly."""
    c = client()
    i = slow_id(500)
    loop = asyncio.new_event_loop()
    errors = loop_errors(loop)
    task = loop.create_task(c.hangup_async(i))
    loop.run_until_complete(asyncio.sleep(0.01))  # the request is queued in the library
    expect(c.pending_async == 1, f"one pending: {c.pending_async}")
    task.cancel()
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    loop.close()
    deadline = time.monotonic() + 10
    while c.pending_async and time.monotonic() < deadline:
        time.sleep(0.02)
    expect(c.pending_async == 0, "the callback ran after the loop closed")
    expect(not errors, f"loop errors: {errors}")
    c.close()


async def close_delivers_pending_results():
    """aclose() waits for queued hangups; their results still reach the open loop."""
    c = client()
    slow = [slow_id(300) for _ in range(8)]
    tasks = [asyncio.ensure_future(c.hangup_async(i)) for i in slow]
    await asyncio.sleep(0)
    await c.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    expect(results == [204] * len(slow), f"results after close: {results}")
    try:
        await c.hangup_async("x")
        expect(False, "a closed client must refuse")
    except tryvox.InvalidArgument:
        pass


def options():
    lines = []
    with client(connect_timeout_ms=2000, timeout_ms=5000, max_retries=1, tenant_id=None,
                user_agent="pkg-test/1.0", allow_insecure_http=True,
                log_callback=lambda level, msg: lines.append((level, msg))) as c:
        [i] = seed(1)
        expect(c.hangup(i) == 204, "hangup with every option")
    expect(lines and all(tryvox.LOG_ERROR <= lv <= tryvox.LOG_DEBUG for lv, _ in lines),
           f"log lines: {lines[:3]}")
    expect(not any(KEY in m for _, m in lines), "a log line holds the key")
    logger = logging.getLogger("tryvox-test")
    with client(log_callback=logger):
        pass
    try:
        tryvox.Client(ACCOUNT, KEY, base_url="http://192.0.2.1:8080")
        expect(False, "plain http to a remote host must be refused")
    except tryvox.InvalidArgument as e:
        expect("allow_insecure_http" in str(e), f"message names the option: {e}")
    # Allowed: the client is built (nothing is sent).
    tryvox.Client(ACCOUNT, KEY, base_url="http://192.0.2.1:8080", allow_insecure_http=True).close()
    for bad in [dict(timeout_ms=-1), dict(max_retries=2**32), dict(connect_timeout_ms=0)]:
        try:
            client(**bad)
            expect(False, f"{bad} must be refused")
        except tryvox.InvalidArgument:
            pass


async def main():
    await concurrent_hangups_exactly_once()
    await errors_are_raised()
    await bulk_does_not_block_the_loop()
    await close_delivers_pending_results()


here = os.path.dirname(os.path.abspath(tryvox.__file__))
print("tryvox", tryvox.version(), "from", here, "library", tryvox.library_path())
options()
asyncio.run(main())
never_calls_into_a_closed_loop()
print("async tests:", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
