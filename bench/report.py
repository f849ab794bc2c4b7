"""Turns bench/run.sh's JSON lines into the BENCHMARKS.md table (and writes it with --write).

Every figure is the median of the REPEAT interleaved rounds of one run (by rate), and
every ratio is one of two such medians; the last column gives the range of the per-round
ratios (or of the per-round figures), to show the noise.
"""
import datetime
import json
import os
import platform
import statistics
import sys
FAULT = (f"max_retries {os.environ['FAULT_RETRIES']}, timeout 60 s" if os.environ.get("FAULT_RETRIES")
         else "the default max_retries 2 and timeout 10 s")

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
write = "--write" in sys.argv[2:]
errors = [r for r in rows if r["what"] == "error"]
marks = [r for r in rows if r["what"] == "cpu"]
rows = [r for r in rows if r["what"] not in ("error", "cpu")]
STATUS = ["OK", "NOT_FOUND", "ALREADY_ENDED", "INVALID_ARGUMENT", "UNAUTHORIZED", "FORBIDDEN", "RATE_LIMITED",
          "SERVER_ERROR", "TIMEOUT", "NETWORK_ERROR", "TLS_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "BUSY"]
NA = "n/a"
LAT_MS = os.environ.get("BENCH_LAT_MS", "100")


def runs(server, what):
    return [r for r in rows if r["server"] == server and r["what"] == what]


def get(server, what, key="per_sec"):
    """The median run (by `key`) of a measurement that was repeated."""
    rs = sorted(runs(server, what), key=lambda r: r[key])
    return rs[len(rs) // 2] if rs else None


def spread(server, what, key="per_sec", fmt="{:,}"):
    vals = [r[key] for r in runs(server, what)]
    return f"{fmt.format(min(vals))}-{fmt.format(max(vals))}" if len(vals) > 1 else ""


def by_round(server, what):
    return {r["round"]: r for r in runs(server, what)}


def ratio_spread(a, b, f):
    """Range of f(run of a, run of b) over the rounds that have both."""
    ra, rb = by_round(*a), by_round(*b)
    vals = [f(ra[k], rb[k]) for k in sorted(ra) if k in rb]
    return f"{min(vals):.2f}-{max(vals):.2f}" if len(vals) > 1 else ""


def rate(r):
    return f"{r['per_sec']:,}/s" if r else NA


def statuses(r):
    st = r and (r.get("statuses") or r.get("inner", {}).get("statuses"))
    if not st:
        return NA
    return ", ".join(f"{STATUS[int(k)] if int(k) < len(STATUS) else k} {v:,}" for k, v in
                     sorted(st.items(), key=lambda kv: int(kv[0])))


def threads(c):
    names = ", ".join(f"{v} {k}" for k, v in sorted(c["by_name"].items()))
    return f"{c['total']} ({names})" if names else f"{c['total']} (no tryvox-*)"


n_rounds = len({r["round"] for r in rows if r["round"]})
out = []
built = os.environ.get("BENCH_BUILT", "")
elapsed = os.environ.get("BENCH_ELAPSED")
out.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
           f"({platform.machine()}), loopback, HTTP/1.1 keep-alive. Command: `make bench`"
           + (f"; library: {built}" if built else "") + ". "
           f"Each figure is the median of {n_rounds} interleaved rounds (by rate) and each ratio one of two "
           "such medians from the same run; the last column is the range over the rounds"
           + (f". Measuring took {int(elapsed) // 60} min {int(elapsed) % 60} s" if elapsed else "") + ".\n")
if len(marks) > 1:
    # The machine's CPU time minus the benchmark's own, per interval between marks.
    def busy(a, b):
        span = (b["t"] - a["t"]) * b["hz"] * b["cpus"]
        return 100 * (b["machine_ticks"] - a["machine_ticks"] - (b["ours_ticks"] - a["ours_ticks"])) / span

    parts = []
    for a, b in zip(marks, marks[1:]):
        names = ", ".join(n for n, _ in b["top_others"][:2])
        pct = busy(a, b)
        parts.append(f"{b['label']} {max(pct, 0):.0f}%" + (f" ({names})" if pct >= 5 and names else ""))
    whole = max(busy(marks[0], marks[-1]), 0)
    out.append(f"Other processes on the machine used {whole:.0f}% of its CPU time during the measurements: "
               + "; ".join(parts) + "."
               + (" **The machine was not quiet: compare with a quiet run before drawing conclusions.**"
                  if whole >= 5 else "") + "\n")
if os.environ.get("BENCH_SETTINGS"):
    out.append(f"Settings: `{os.environ['BENCH_SETTINGS']}`.\n")


# ---- the summary: one line per question, every ratio from this run ----
def per(a, b):
    return a["per_sec"] / b["per_sec"]


summary = []


def ratio_row(num, what, a, b, ref_name, better="higher"):
    ra, rb = get(*a), get(*b)
    ratio = f"{per(ra, rb):.2f}" if ra and rb else NA
    summary.append(f"| {num} | {what} | {rate(ra)} | {ref_name}: {rate(rb)} | {ratio} ({better} is better) | "
                   f"{ratio_spread(a, b, per) if ra and rb else ''} |")


B = f"{get('nginx', 'bulk warm')['n']:,}" if get("nginx", "bulk warm") else "20,000"
ratio_row(1, f"bulk `tryvox_hangup_many`, {B} ids, 32 in flight, nginx: **cold** process (start, client, "
          "connections included)", ("nginx", "bulk cold"), ("nginx", "wrk -t2 -c32"), "wrk -t2 -c32")
ratio_row(1, "the same, cold, vs wrk with one thread", ("nginx", "bulk cold"), ("nginx", "wrk -t1 -c32"), "wrk -t1 -c32")
ratio_row(1, "the same, **warm** (in-process, after a 2,000-id warm-up)", ("nginx", "bulk warm"),
          ("nginx", "wrk -t2 -c32"), "wrk -t2 -c32")
ratio_row(1, "the same, warm, vs wrk with one thread", ("nginx", "bulk warm"), ("nginx", "wrk -t1 -c32"), "wrk -t1 -c32")
ratio_row(1, "the same bulk against tryvox-sim, cold", ("sim", "bulk cold"), ("sim", "wrk -t2 -c32"), "wrk -t2 -c32")
ratio_row(1, "the same bulk against tryvox-sim, warm", ("sim", "bulk warm"), ("sim", "wrk -t2 -c32"), "wrk -t2 -c32")
ratio_row(2, "bulk over TLS 1.3 (nginx, private CA), **cold** process: 32 handshakes included",
          ("nginx-tls", "bulk cold"), ("nginx-tls", "wrk -t2 -c32"), "wrk -t2 -c32 https")
ratio_row(2, "bulk over TLS 1.3, warm", ("nginx-tls", "bulk warm"), ("nginx-tls", "wrk -t2 -c32"), "wrk -t2 -c32 https")


def seq_rows(num, label, server):
    t, c = get(server, "tryvox seq"), get(server, "curl seq")
    if not (t and c):
        summary.append(f"| {num} | sequential {label}: `tryvox_hangup` loop vs libcurl easy handle | {NA} | {NA} | {NA} | |")
        return
    summary.append(f"| {num} | sequential {label}: `tryvox_hangup` loop, **wall** time vs a reused libcurl easy handle | "
                   f"{rate(t)} | libcurl: {rate(c)} | {c['per_sec'] / t['per_sec']:.2f} (lower is better) | "
                   f"{ratio_spread((server, 'curl seq'), (server, 'tryvox seq'), per)} |")
    summary.append(f"| {num} | sequential {label}: **CPU** time (getrusage) vs libcurl | {t['cpu_us']:.1f} us/hangup | "
                   f"libcurl: {c['cpu_us']:.1f} us/hangup | {t['cpu_us'] / c['cpu_us']:.2f} (lower is better) | "
                   f"{ratio_spread((server, 'tryvox seq'), (server, 'curl seq'), lambda a, b: a['cpu_us'] / b['cpu_us'])} |")


seq_rows(3, "over TLS 1.3 keep-alive (nginx; libcurl with OpenSSL)", "nginx-tls")
lat = get("sim-latency", "bulk warm")
ratio_row(4, f"{lat['n']:,} ids at {lat['par']:,} in flight, tryvox-sim with {LAT_MS} ms latency (warm)" if lat else
          f"10,000 ids at 1,000 in flight, tryvox-sim with {LAT_MS} ms latency", ("sim-latency", "bulk warm"),
          ("sim-latency", f"wrk -t2 -c{lat['par'] if lat else 1000}"), f"wrk -t2 -c{lat['par'] if lat else 1000}")
ratio_row(5, "fault mix (10% 503, 5% 429 with Retry-After 0, 5% dropped connections), " + FAULT + ": "
          "bulk vs the same bulk without faults", ("sim-faults", "bulk warm"), ("sim-nofaults", "bulk warm"),
          "no faults")
f = get("sim-faults", "bulk warm")
summary.append(f"| 5 | fault mix: final statuses (median run) | {statuses(f)} | no faults: "
               f"{statuses(get('sim-nofaults', 'bulk warm'))} | | |")
a = get("nginx", "async", "call_us_p50")
if a:
    summary.append(f"| 6 | the caller's cost of one `tryvox_hangup_async` ({a['n']:,} calls, nginx, warm client), "
                   f"each call timed | median {a['call_us_p50']:.2f} us, p99 {a['call_us_p99']:.2f} us | | | "
                   f"median {spread('nginx', 'async', 'call_us_p50', '{:.2f}')}, "
                   f"p99 {spread('nginx', 'async', 'call_us_p99', '{:.2f}')} us |")
else:
    summary.append(f"| 6 | the caller's cost of one `tryvox_hangup_async` | {NA} | | | |")
seq_rows(7, "plain http (nginx)", "nginx")
seq_rows(7, "plain http (tryvox-sim)", "sim")
mem = get("nginx", "tryvox mem")
if mem:
    mib = lambda kb: kb / 1024
    second_half = mib(mem["rss_after_kb"] - mem["rss_mid_kb"]) * 1e6 / (mem["n"] / 2)
    whole = mib(mem["rss_after_kb"] - mem["rss_before_kb"]) * 1e6 / mem["n"]
    summary.append(f"| 8 | memory: RSS growth per million hangups (bulk, nginx), second half (whole run) | "
                   f"{second_half:.2f} MiB ({whole:.2f} MiB) | | | |")
else:
    summary.append(f"| 8 | memory: RSS growth per million hangups | {NA} | | | |")
th = get("nginx", "threads", "n")
if th:
    summary.append(f"| 8 | threads of the process (all, and the library's by name): idle after client creation / "
                   f"busy (most seen during a bulk of {th['n']:,} at {th['par']}) / {th['after_s']:.0f} s after | "
                   f"{threads(th['idle'])} / {threads(th['busy'])} / {threads(th['after'])} | | | |")
else:
    summary.append(f"| 8 | threads idle / busy / after | {NA} | | | |")

out.append("### Summary\n")
out.append("| # | measure | libtryvox | reference | ratio | per-round ratios |")
out.append("|---|---|---|---|---|---|")
out.extend(summary)
out.append("")


# ---- the detail tables ----
def seq_table(server, label, with_py=True):
    curl = get(server, "curl seq")
    out.append(f"### Sequential hangups on one connection: {label}\n")
    out.append("| client | hangups | failed | hangups/s | CPU us/hangup | wall ratio to libcurl (lower is better) | CPU ratio to libcurl | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|---|---|")
    for what, name in [("tryvox seq", "libtryvox `tryvox_hangup`"), ("curl seq", "libcurl easy handle, reused"),
                       ("requests seq", "Python requests.Session")]:
        r = get(server, what)
        if not r:
            continue
        wall_ratio = f"{curl['per_sec'] / r['per_sec']:.2f}" if curl else NA
        cpu_ratio = f"{r['cpu_us'] / curl['cpu_us']:.2f}" if curl else NA
        out.append(f"| {name} | {r['n']} | {r['failed']} | {r['per_sec']:,} | {r['cpu_us']:.1f} | {wall_ratio} | {cpu_ratio} | {spread(server, what)} |")
    out.append("")


def bulk_table(server, label, wrks):
    wrk = get(server, wrks[0])
    out.append(f"### Bulk: {label}\n")
    out.append(f"| client | hangups | failed | hangups/s | ratio to {wrks[0]} | CPU us/hangup | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|---|")
    for what, name in [("bulk cold", "libtryvox `tryvox_hangup_many`, 32 in flight, cold process"),
                       ("bulk warm", "libtryvox `tryvox_hangup_many`, 32 in flight, warm")]:
        r = get(server, what)
        if r:
            ratio = f"{r['per_sec'] / wrk['per_sec']:.2f}" if wrk else NA
            out.append(f"| {name} | {r['n']} | {r['failed']} | {r['per_sec']:,} | {ratio} | {r['cpu_us']:.1f} | {spread(server, what)} |")
    for w in wrks:
        r = get(server, w)
        if r:
            ratio = f"{r['per_sec'] / wrk['per_sec']:.2f}" if wrk else NA
            errs = f", {r['socket_errors']} socket errors" if r.get("socket_errors") else ""
            out.append(f"| {w} (the server's ceiling) | {r['total']:,} | {r['non2xx']} non-2xx{errs} | {r['per_sec']:,} | {ratio} | | {spread(server, w)} |")
    cold = get(server, "bulk cold")
    if cold:
        i = cold["inner"]
        out.append(f"\nCold, median run: the whole process {cold['seconds'] * 1e3:.0f} ms (fork to exit), of which "
                   f"client creation {i['create_ms']:.1f} ms and `tryvox_hangup_many` {i['seconds'] * 1e3:.0f} ms "
                   f"({i['connections_opened']} connections opened); CPU {cold['cpu_us']:.1f} us/hangup, peak RSS "
                   f"{cold['max_rss_kb'] / 1024:.1f} MiB.")
    out.append("")


seq_table("nginx", "nginx 1 worker, `return 204`")
bulk_table("nginx", "nginx 1 worker, `return 204`", ["wrk -t2 -c32", "wrk -t1 -c32"])
seq_table("nginx-tls", "nginx over TLS 1.3 (ECDSA P-256 certificate from a private CA)")
bulk_table("nginx-tls", "nginx over TLS 1.3", ["wrk -t2 -c32"])
seq_table("sim", "tryvox-sim")
bulk_table("sim", "tryvox-sim", ["wrk -t2 -c32"])

if lat:
    lat_wrk = f"wrk -t2 -c{lat['par']}"
    w = get("sim-latency", lat_wrk)
    out.append(f"### Many in flight: tryvox-sim answering after {LAT_MS} ms\n")
    out.append("| client | hangups | failed | hangups/s | ratio to wrk | CPU us/hangup | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|---|")
    out.append(f"| libtryvox `tryvox_hangup_many`, {lat['par']:,} in flight, warm | {lat['n']:,} | {lat['failed']} | "
               f"{lat['per_sec']:,} | {lat['per_sec'] / w['per_sec']:.2f} | {lat['cpu_us']:.1f} | "
               f"{spread('sim-latency', 'bulk warm')} |" if w else
               f"| libtryvox `tryvox_hangup_many`, {lat['par']:,} in flight | {lat['n']:,} | {lat['failed']} | {lat['per_sec']:,} | {NA} | {lat['cpu_us']:.1f} | |")
    if w:
        errs = f", {w['socket_errors']} socket errors" if w.get("socket_errors") else ""
        out.append(f"| wrk -t2 -c{lat['par']} | {w['total']:,} | {w['non2xx']} non-2xx{errs} | {w['per_sec']:,} | 1.00 | | "
                   f"{spread('sim-latency', lat_wrk)} |")
    out.append(f"\nStatuses (median run): {statuses(lat)}.\n")

if f:
    nf = get("sim-nofaults", "bulk warm")
    out.append("### Fault mix: tryvox-sim with 10% 503, 5% 429 (Retry-After: 0), 5% dropped connections\n")
    out.append("| run | hangups | hangups/s | ratio to no faults | final statuses | HTTP attempts | retries: connection / 429 / 5xx | connections opened | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for name, srv, r in [("with faults", "sim-faults", f), ("no faults (the same options)", "sim-nofaults", nf)]:
        if r:
            ratio = f"{r['per_sec'] / nf['per_sec']:.2f}" if nf else NA
            out.append(f"| {name} | {r['n']:,} | {r['per_sec']:,} | {ratio} | {statuses(r)} | {r['attempts']:,} | "
                       f"{r['retries_connection']:,} / {r['retries_rate_limited']:,} / {r['retries_server_error']:,} | "
                       f"{r['connections_opened']:,} | {spread(srv, 'bulk warm')} |")
    out.append(f"\n`tryvox_hangup_many`, 32 in flight, {FAULT}, after a 2,000-id warm-up.\n")

if a:
    out.append("### The caller's cost of `tryvox_hangup_async` (nginx)\n")
    out.append("| calls | refused | failed | p50 us | p90 us | p99 us | p99.9 us | max us | all submitted in | all done in | completions/s | CPU us/hangup | most threads while pending |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    out.append(f"| {a['n']:,} | {a['refused']} | {a['failed']} | {a['call_us_p50']:.2f} | {a['call_us_p90']:.2f} | "
               f"{a['call_us_p99']:.2f} | {a['call_us_p999']:.1f} | {a['call_us_max']:.0f} | {a['submit_seconds'] * 1e3:.0f} ms | "
               f"{a['seconds'] * 1e3:.0f} ms | {a['per_sec']:,} | {a['cpu_us']:.1f} | {threads(a['threads_max'])} |")
    out.append("\nEach call timed alone with clock_gettime (median run by p50), after 2,000 async hangups as a "
               "warm-up; the callbacks count completions.\n")

if th:
    out.append("### Threads (nginx)\n")
    out.append("| before the client | idle, after client creation | busy: most seen during the bulk | "
               f"{th['after_s']:.0f} s after the bulk |")
    out.append("|---|---|---|---|")
    out.append(f"| {threads(th['before_client'])} | {threads(th['idle'])} | {threads(th['busy'])} | {threads(th['after'])} |")
    out.append(f"\nCounted from /proc/self/task (the sampler thread excluded), every millisecond during a "
               f"`tryvox_hangup_many` of {th['n']:,} ids at {th['par']} in flight ({th['samples']} samples); "
               "the library names its threads tryvox-*.\n")

if mem:
    out.append("### Memory (libtryvox, nginx)\n")
    out.append("| hangups | failed | peak RSS | RSS after warm-up | RSS at half | RSS at end | growth per million, whole run | growth per million, second half |")
    out.append("|---|---|---|---|---|---|---|---|")
    out.append(f"| {mem['n']:,} | {mem['failed']} | {mib(mem['max_rss_kb']):.1f} MiB | {mib(mem['rss_before_kb']):.1f} MiB | "
               f"{mib(mem['rss_mid_kb']):.1f} MiB | {mib(mem['rss_after_kb']):.1f} MiB | {whole:.2f} MiB | {second_half:.2f} MiB |")
    out.append("\nA leak grows with the number of hangups; a one-time step (worker threads, pooled "
               "connections, allocator arenas reaching their steady size) does not. RSS is read after "
               "a 100,000-hangup warm-up, at half-way and at the end, so the second-half figure is the "
               "leak measure.")

if errors:
    out.append("\n### Measurements that failed in this run\n")
    for e in errors:
        out.append(f"- [{e['server']}, round {e['round']}] exit {e['rc']}: `{e['cmd']}`: {e['stderr'].strip()[-200:] or 'no output'}")
text = "\n".join(out) + "\n"
print(text)
if write:
    head = open("BENCHMARKS.md").read().split("<!-- results -->")[0] if os.path.exists("BENCHMARKS.md") else ""
    open("BENCHMARKS.md", "w").write(head + "<!-- results -->\n\n" + text)
