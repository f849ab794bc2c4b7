"""Turns bench/run.sh's JSON lines into the BENCHMARKS.md table (and writes it with --write)."""
import datetime
import json
import os
import platform
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
write = "--write" in sys.argv[2:]


def get(server, what):
    """The median run (by rate) of a measurement that was repeated."""
    runs = sorted((r for r in rows if r["server"] == server and r["what"] == what), key=lambda r: r["per_sec"])
    return runs[len(runs) // 2] if runs else None


def spread(server, what):
    rates = [r["per_sec"] for r in rows if r["server"] == server and r["what"] == what]
    return f"{min(rates):,}-{max(rates):,}" if len(rates) > 1 else ""


out = []
out.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
           f"({platform.machine()}), loopback, HTTP/1.1 keep-alive. Command: `make bench`. Each row is the "
           f"median of {max(1, len([r for r in rows if r['what'] == 'curl seq' and r['server'] == 'nginx']))} "
           "interleaved runs (by rate); the range of all runs is in the last column.\n")
for server, label in [("nginx", "nginx 1 worker, `return 204`"), ("sim", "tryvox-sim")]:
    curl = get(server, "curl seq")
    out.append(f"### Sequential hangups on one connection: {label}\n")
    out.append("| client | hangups | failed | hangups/s | CPU us/hangup | wall ratio to libcurl (lower is better) | CPU ratio to libcurl | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|---|---|")
    for what, name in [("tryvox seq", "libtryvox `tryvox_hangup`"), ("curl seq", "libcurl easy handle, reused"),
                       ("requests seq", "Python requests.Session")]:
        r = get(server, what)
        if not r:
            continue
        wall_ratio = curl["per_sec"] / r["per_sec"]
        cpu_ratio = r["cpu_us"] / curl["cpu_us"]
        out.append(f"| {name} | {r['n']} | {r['failed']} | {r['per_sec']:,} | {r['cpu_us']:.1f} | {wall_ratio:.2f} | {cpu_ratio:.2f} | {spread(server, what)} |")
    bulk, wrk = get(server, "tryvox bulk"), get(server, "wrk -c32")
    out.append(f"\n### Bulk: {label}\n")
    out.append("| client | hangups | failed | hangups/s | ratio to wrk | hangups/s, all runs |")
    out.append("|---|---|---|---|---|---|")
    # Against the simulator the 2,000 warm-up ids are not live calls: only the timed ids count.
    out.append(f"| libtryvox `tryvox_hangup_many`, 32 in flight | {bulk['n']} | {bulk['failed']} | {bulk['per_sec']:,} | {bulk['per_sec'] / wrk['per_sec']:.2f} | {spread(server, 'tryvox bulk')} |")
    out.append(f"| wrk -t2 -c32 (the server's ceiling) | {wrk['total']:,} | {wrk['non2xx']} non-2xx | {wrk['per_sec']:,} | 1.00 | {spread(server, 'wrk -c32')} |\n")
mem = get("nginx", "tryvox mem")
if mem:
    mib = lambda kb: kb / 1024
    whole = mib(mem["rss_after_kb"] - mem["rss_before_kb"]) * 1e6 / mem["n"]
    second_half = mib(mem["rss_after_kb"] - mem["rss_mid_kb"]) * 1e6 / (mem["n"] / 2)
    out.append("### Memory (libtryvox, nginx)\n")
    out.append("| hangups | failed | peak RSS | RSS after warm-up | RSS at half | RSS at end | growth per million, whole run | growth per million, second half |")
    out.append("|---|---|---|---|---|---|---|---|")
    out.append(f"| {mem['n']:,} | {mem['failed']} | {mib(mem['max_rss_kb']):.1f} MiB | {mib(mem['rss_before_kb']):.1f} MiB | "
               f"{mib(mem['rss_mid_kb']):.1f} MiB | {mib(mem['rss_after_kb']):.1f} MiB | {whole:.2f} MiB | {second_half:.2f} MiB |")
    out.append("\nA leak grows with the number of hangups; a one-time step (worker threads, pooled "
               "connections, allocator arenas reaching their steady size) does not. RSS is read after "
               "a 100,000-hangup warm-up, at half-way and at the end, so the second-half figure is the "
               "leak measure.")
text = "\n".join(out) + "\n"
print(text)
if write:
    head = open("BENCHMARKS.md").read().split("<!-- results -->")[0] if os.path.exists("BENCHMARKS.md") else ""
    open("BENCHMARKS.md", "w").write(head + "<!-- results -->\n\n" + text)
