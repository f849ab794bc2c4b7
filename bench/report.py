"""Turns bench/run.sh's JSON lines into the BENCHMARKS.md table (and writes it with --write)."""
import datetime
import json
import os
import platform
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
write = "--write" in sys.argv[2:]


def get(server, what):
    return next((r for r in rows if r["server"] == server and r["what"] == what), None)


out = []
out.append(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs "
           f"({platform.machine()}), loopback, HTTP/1.1 keep-alive. Command: `make bench`.\n")
for server, label in [("nginx", "nginx 1 worker, `return 204`"), ("sim", "tryvox-sim")]:
    curl = get(server, "curl seq")
    out.append(f"### Sequential hangups on one connection: {label}\n")
    out.append("| client | hangups | failed | hangups/s | CPU us/hangup | wall ratio to libcurl (lower is better) | CPU ratio to libcurl |")
    out.append("|---|---|---|---|---|---|---|")
    for what, name in [("tryvox seq", "libtryvox `tryvox_hangup`"), ("curl seq", "libcurl easy handle, reused"),
                       ("requests seq", "Python requests.Session")]:
        r = get(server, what)
        if not r:
            continue
        wall_ratio = curl["per_sec"] / r["per_sec"]
        cpu_ratio = r["cpu_us"] / curl["cpu_us"]
        out.append(f"| {name} | {r['n']} | {r['failed']} | {r['per_sec']:,} | {r['cpu_us']:.1f} | {wall_ratio:.2f} | {cpu_ratio:.2f} |")
    bulk, wrk = get(server, "tryvox bulk"), get(server, "wrk -c32")
    out.append(f"\n### Bulk: {label}\n")
    out.append("| client | hangups | failed | hangups/s | ratio to wrk |")
    out.append("|---|---|---|---|---|")
    out.append(f"| libtryvox `tryvox_hangup_many`, 32 in flight | {bulk['n']} | {bulk['failed']} | {bulk['per_sec']:,} | {bulk['per_sec'] / wrk['per_sec']:.2f} |")
    out.append(f"| wrk -t2 -c32 (the server's ceiling) | {wrk['total']:,} | {wrk['non2xx']} non-2xx | {wrk['per_sec']:,} | 1.00 |\n")
mem = get("nginx", "tryvox mem")
if mem:
    growth = (mem["rss_after_kb"] - mem["rss_before_kb"]) / 1024
    out.append("### Memory (libtryvox, nginx)\n")
    out.append("| hangups | failed | peak RSS | RSS after warm-up | RSS at end | growth per million |")
    out.append("|---|---|---|---|---|---|")
    out.append(f"| {mem['n']:,} | {mem['failed']} | {mem['max_rss_kb'] / 1024:.1f} MiB | {mem['rss_before_kb'] / 1024:.1f} MiB | "
               f"{mem['rss_after_kb'] / 1024:.1f} MiB | {growth * 1e6 / mem['n']:.2f} MiB |")
text = "\n".join(out) + "\n"
print(text)
if write:
    head = open("BENCHMARKS.md").read().split("<!-- results -->")[0] if os.path.exists("BENCHMARKS.md") else ""
    open("BENCHMARKS.md", "w").write(head + "<!-- results -->\n\n" + text)
