"""How busy the machine was apart from the benchmark: bench/run.sh calls this at the start
and after every round, with its own pid. Prints one JSON line: the CPU time (clock ticks)
of the whole machine, of the benchmark's process tree (run.sh, its servers and clients,
finished children included through their parents' cutime/cstime), and the other processes
that used the most CPU since the previous mark (kept in STATE).
Usage: cpumark.py PID STATE LABEL
"""
import json
import os
import sys
import time

root, state_path, label = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def machine():
    f = open("/proc/stat").readline().split()[1:]
    # Interrupt and softirq time too: a process's own times include the softirqs (the
    # loopback traffic) run in its context. Not steal (no process here ran then).
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in f[:7])
    return user + nice + system + irq + softirq


procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        raw = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()
    # After the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    procs[int(d)] = (int(f[1]), comm, int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
children = {}
for pid, (ppid, _, _, _) in procs.items():
    children.setdefault(ppid, []).append(pid)
ours, todo = set(), [root]
while todo:
    p = todo.pop()
    if p in procs and p not in ours:
        ours.add(p)
        todo.extend(children.get(p, []))
ours_ticks = sum(procs[p][2] + procs[p][3] for p in ours)
others = {p: (procs[p][1], procs[p][2] + procs[p][3]) for p in procs if p not in ours}
try:
    prev = json.load(open(state_path))
except (OSError, ValueError):
    prev = {}
top = {}
for p, (comm, ticks) in others.items():
    if not prev:
        break  # the first mark: nothing to compare with
    # A process new since the last mark counts whole (it started since).
    used = ticks - prev[str(p)][1] if str(p) in prev else ticks
    if used > 0:
        top[comm] = top.get(comm, 0) + used
json.dump({str(p): v for p, v in others.items()}, open(state_path, "w"))
print(json.dumps({"what": "cpu", "label": label, "t": time.monotonic(), "machine_ticks": machine(),
                  "ours_ticks": ours_ticks, "hz": os.sysconf("SC_CLK_TCK"), "cpus": os.cpu_count(),
                  "top_others": sorted(top.items(), key=lambda kv: -kv[1])[:3]}))
