"""The asyncio API of the installed tryvox package, against the TryVox simulator.

usage: test_async.py (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY; the base URL
must be a tryvox-sim, whose /_sim/ endpoints seed calls and script slow answers; optional
TRYVOX_TLS_BASE_URL and TRYVOX_TLS_CA: a tryvox-sim serving https with a certificate of
that private CA, for the trust store tests).
Prints "async tests: ok" and exits 0, or lists the failures and exits 1.
"""
import asyncio
import collections
import json
import logging
import os
import sys
import threading
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


def seed(n, from_=None):
    body = {"count": n}
    if from_ is not None:
        body["from"] = from_
    return sim("/_sim/seed", body)["call_uuids"]


def script(call_uuid, *responses):
    """The simulator's next answers to call_uuid's hangup, in order."""
    sim(f"/_sim/calls/{call_uuid}/faults", {"responses": list(responses)})


def unique_number():
    """A caller number no other test seeds calls from (+1555 and 7 random digits)."""
    return "+1555" + str(uuid.uuid4().int % 10**7).zfill(7)


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


def trust_store():
    """trust_store chooses the roots a client trusts (its log says which); a CA file
    replaces them; a bad value is refused before anything is built."""
    for bad in ["System", "", 1, True]:
        try:
            client(trust_store=bad)
            expect(False, f"trust_store={bad!r} must be refused")
        except tryvox.InvalidArgument as e:
            expect("trust_store" in str(e), f"the message names the option: {e}")
    tls_base, ca = os.environ.get("TRYVOX_TLS_BASE_URL"), os.environ.get("TRYVOX_TLS_CA")
    if not tls_base or not ca:
        print("trust store: SKIPPED the https part (no TRYVOX_TLS_BASE_URL, TRYVOX_TLS_CA)")
        return

    def tls_client(**kw):
        lines = []
        c = tryvox.Client(ACCOUNT, KEY, base_url=tls_base, max_retries=0, timeout_ms=5000,
                          log_callback=lambda level, msg: lines.append((level, msg)), **kw)
        return c, lines

    def tls_lines(lines):
        return [m for lv, m in lines if lv == tryvox.LOG_INFO and m.startswith("TLS: trusting ")]

    # Mozilla's roots do not know the private CA: the handshake fails, nothing is sent.
    c, lines = tls_client(trust_store="bundled")
    with c:
        expect(outcome(lambda: c.hangup("trust-bundled")) == tryvox.TLS_ERROR,
               "bundled roots must not trust the private CA")
    said = tls_lines(lines)
    expect(len(said) == 1 and " bundled roots (Mozilla's)" in said[0], f"bundled: {said}")
    # A CA file replaces every store: the request reaches the simulator (no such call).
    c, lines = tls_client(trust_store=tryvox.TRUST_BUNDLED, ca_file=ca)
    with c:
        expect(outcome(lambda: c.hangup("trust-ca-file")) == tryvox.NOT_FOUND, "CA file")
    expect(any("of the CA file" in m for m in tls_lines(lines)), f"CA file: {lines}")
    # The system's store, when it is the private CA (the Rust harness, tests/pkg_python.rs,
    # points SSL_CERT_FILE at it): trusted by default and by "system".
    if os.environ.get("SSL_CERT_FILE") == ca:
        for store in [None, tryvox.TRUST_SYSTEM_OR_BUNDLED, tryvox.TRUST_SYSTEM]:
            c, lines = tls_client(trust_store=store)
            with c:
                expect(outcome(lambda: c.hangup("trust-system")) == tryvox.NOT_FOUND,
                       f"trust_store={store!r} with the CA as the system's store")
            said = tls_lines(lines)
            expect(said == ["TLS: trusting 1 roots of the system's trust store"],
                   f"trust_store={store!r}: {said}")
    else:
        print("trust store: SKIPPED the system part (SSL_CERT_FILE is not TRYVOX_TLS_CA)")
    expect(not any(KEY in m for _, m in lines), "a log line holds the key")


def outcome(call):
    """The status number a blocking call ended with (OK when it returned)."""
    try:
        call()
        return tryvox.OK
    except tryvox.TryvoxError as e:
        return e.status


async def stats_count_a_mixed_run():
    """Client.stats() after a small mixed run equals the outcomes the run saw, status by
    status; attempts are the hangups sent plus one per retry, one retry of each kind."""
    async with client(timeout_ms=5000) as c:
        s0 = c.stats()
        expect(s0.total_hangups == 0 and s0.attempts == 0 and s0.latency_max == 0.0
               and len(s0.hangups_by_status) == 32, f"a new client: {s0}")
        ids = seed(20)
        script(ids[0], {"status": 503})                     # one retry after a 5xx
        script(ids[1], {"status": 429, "retry_after": "0"})  # one retry after a 429
        script(ids[2], {"status": 204, "delay_ms": 200})    # a slow answer: the maximum latency
        seen = collections.Counter()
        seen[outcome(lambda: c.hangup(ids[3]))] += 1
        seen[outcome(lambda: c.hangup(ids[3]))] += 1              # ALREADY_ENDED
        seen[outcome(lambda: c.hangup("no-such-" + uuid.uuid4().hex))] += 1  # NOT_FOUND
        seen[outcome(lambda: c.hangup("a/b"))] += 1               # INVALID_ARGUMENT, not sent
        seen[outcome(lambda: c.hangup(ids[1]))] += 1              # OK after a 429
        try:
            await c.hangup_async(ids[4])
            seen[tryvox.OK] += 1
        except tryvox.TryvoxError as e:
            seen[e.status] += 1
        # Refused as a whole: counted nowhere.
        expect(outcome(lambda: c.hangup_many([ids[5], "a/b"])) == tryvox.INVALID_ARGUMENT,
               "a bad id in hangup_many")
        bulk = [ids[0], ids[2]] + ids[5:] + [ids[3], "nope-" + uuid.uuid4().hex]
        statuses = await c.hangup_many_async(bulk, max_parallel=4)
        seen.update(statuses)
        want = [tryvox.OK] * (len(bulk) - 2) + [tryvox.ALREADY_ENDED, tryvox.NOT_FOUND]
        expect(statuses == want, f"bulk statuses {statuses}")
        st = c.stats()
    counts = [seen[i] for i in range(32)]
    expect(list(st.hangups_by_status) == counts,
           f"hangups by status {st.hangups_by_name()}, outcomes seen {dict(seen)}")
    expect(st.hangups(tryvox.OK) == 20 and st.hangups(tryvox.ALREADY_ENDED) == 2
           and st.hangups(tryvox.NOT_FOUND) == 2 and st.hangups(tryvox.INVALID_ARGUMENT) == 1
           and st.hangups(99) == 0 and st.hangups(-1) == 0, f"counts {st.hangups_by_name()}")
    expect(st.hangups_by_name() == {"OK": 20, "NOT_FOUND": 2, "ALREADY_ENDED": 2, "INVALID_ARGUMENT": 1},
           f"by name {st.hangups_by_name()}")
    sent = st.total_hangups - st.hangups(tryvox.INVALID_ARGUMENT)
    expect(st.retries_server_error == 1 and st.retries_rate_limited == 1
           and st.attempts == sent + st.retries,
           f"{st.attempts} attempts for {sent} hangups sent; retries: connection "
           f"{st.retries_connection}, 429 {st.retries_rate_limited}, 5xx {st.retries_server_error}")
    expect(st.in_flight == 0 and 0 < st.connections_opened and st.connections_open <= st.connections_opened,
           f"gauges: {st.in_flight} in flight, {st.connections_open} of {st.connections_opened} open")
    # Latencies in seconds: one answer took 0.2 s, the rest a few milliseconds.
    expect(0 < st.latency_p50 <= st.latency_p90 <= st.latency_p99 <= st.latency_max * 1.2
           and 0.2 <= st.latency_max < 5 and st.latency_p50 < 0.2,
           f"latencies p50 {st.latency_p50} p90 {st.latency_p90} p99 {st.latency_p99} max {st.latency_max}")
    try:
        c.stats()
        expect(False, "stats on a closed client must raise")
    except tryvox.InvalidArgument:
        pass
    print(f"stats after a mixed run: {st.hangups_by_name()}, {st.attempts} attempts, "
          f"{st.retries} retries, p50 {st.latency_p50 * 1000:.1f} ms, max {st.latency_max * 1000:.0f} ms")


def hangup_all_ends_seeded_calls():
    """hangup_all with a filter ends every seeded call from that number and nothing else;
    its progress callback sees the counts grow; failures raise with the counts attached."""
    number = unique_number()
    ours = seed(40, from_=number)
    others = seed(3, from_=unique_number())
    updates = []
    with client() as c:
        before = c.stats()

        def progress(r):
            updates.append(r)
            c.stats()  # any other call is allowed from the callback

        r = c.hangup_all(from_=number, max_parallel=8, timeout=30, progress=progress)
        expect(isinstance(r, tryvox.SweepResult), f"result type {type(r)}")
        expect(r.ended == 40 and r.already_gone == 0 and r.failed == 0 and r.still_live == 0
               and r.listings >= 1, f"sweep {r}")
        expect(updates and updates[-1] == r, f"last progress {updates[-1:]} vs {r}")
        expect(all(a.ended <= b.ended and a.listings <= b.listings for a, b in zip(updates, updates[1:])),
               f"progress went back: {updates}")
        expect(c.stats().hangups(tryvox.OK) - before.hangups(tryvox.OK) == 40, "stats count the sweep")
        again = c.hangup_many(ours)
        expect(again == [tryvox.ALREADY_ENDED] * 40, f"after the sweep: {collections.Counter(again)}")
        expect(c.hangup_many(others) == [tryvox.OK] * 3, "calls from another number were left live")
        # Nothing left from that number: an empty sweep is a success with nothing ended.
        r = c.hangup_all(from_=number, to=None, direction="outbound")
        expect(r.ended == 0 and r.listings == 1, f"empty sweep {r}")

        # A hangup that fails: raised as the blocking API does, the counts on the error.
        number = unique_number()
        pair = seed(2, from_=number)
        script(pair[0], {"status": 403})
        try:
            c.hangup_all(from_=number)
            expect(False, "a failed hangup must raise")
        except tryvox.TryvoxError as e:
            expect(e.status == tryvox.FORBIDDEN and e.sweep is not None and e.sweep.failed == 1
                   and e.sweep.ended == 1 and e.sweep.still_live >= 1, f"failed sweep {e!r} {e.sweep}")
        # Bad filters: InvalidArgument (a ValueError), nothing sent.
        for bad in [dict(direction="sideways"), dict(from_=""), dict(timeout=0), dict(max_parallel=-1),
                    dict(to="a\0b")]:
            try:
                c.hangup_all(**bad)
                expect(False, f"{bad} must be refused")
            except tryvox.InvalidArgument as e:
                expect(isinstance(e, ValueError), f"{bad}: {e!r}")
        # An exception in progress: re-raised after the sweep, which still ran to its end.
        number = unique_number()
        doomed = seed(5, from_=number)

        def boom(_r):
            raise LookupError("from progress")
        try:
            c.hangup_all(from_=number, progress=boom)
            expect(False, "the progress exception must be re-raised")
        except LookupError:
            pass
        expect(c.hangup_many(doomed) == [tryvox.ALREADY_ENDED] * 5, "the sweep ran to its end")

        def closer(_r):
            c.close()
        number = unique_number()
        seed(1, from_=number)
        try:
            c.hangup_all(from_=number, progress=closer)
            expect(False, "close from progress must raise")
        except RuntimeError:
            pass
    try:
        c.hangup_all()
        expect(False, "hangup_all on a closed client must raise")
    except tryvox.InvalidArgument:
        pass
    print(f"hangup_all: 40 calls ended, {len(updates)} progress updates")


async def hangup_all_async_keeps_the_loop_running():
    """The sweep runs in the executor: the loop ticks meanwhile. Its progress callback runs
    on the executor's thread and takes 0.1 s each time, so the sweep surely lasts a while.
    (A scripted 204 would not do: the simulator answers it without ending the call.)"""
    number = unique_number()
    seed(30, from_=number)
    ticks = 0
    stop = False
    loop_thread = threading.get_ident()
    progress_threads = set()

    def slow_progress(_r):
        progress_threads.add(threading.get_ident())
        time.sleep(0.1)

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.005)

    async with client() as c:
        t = asyncio.ensure_future(ticker())
        r = await c.hangup_all_async(from_=number, max_parallel=4, progress=slow_progress)
        stop = True
        await t
        expect(r.ended == 30 and r.still_live == 0, f"async sweep {r}")
        try:
            await c.hangup_all_async(direction="up")
            expect(False, "a bad direction must raise")
        except tryvox.InvalidArgument:
            pass
    expect(ticks >= 20, f"the loop ran {ticks} ticks during a sweep of at least 0.3 s")
    expect(progress_threads and loop_thread not in progress_threads, "progress ran on the loop's thread")


async def main():
    await concurrent_hangups_exactly_once()
    await errors_are_raised()
    await bulk_does_not_block_the_loop()
    await close_delivers_pending_results()
    await stats_count_a_mixed_run()
    await hangup_all_async_keeps_the_loop_running()


here = os.path.dirname(os.path.abspath(tryvox.__file__))
print("tryvox", tryvox.version(), "from", here, "library", tryvox.library_path())
options()
trust_store()
asyncio.run(main())
never_calls_into_a_closed_loop()
hangup_all_ends_seeded_calls()
print("async tests:", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
