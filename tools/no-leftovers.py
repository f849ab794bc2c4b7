#!/usr/bin/env python3
"""Run a command and fail if any process it started outlives it.

usage: no-leftovers.py COMMAND [ARG...]

This process becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER): every process the
command starts, however it detaches (double fork, daemon mode), is re-parented here when
its own parent exits instead of escaping to init. Once the command has exited, anything
still parented here after a short grace period (a SIGKILL in flight, PR_SET_PDEATHSIG) was
left behind by the test suite: it is listed, killed, and the exit status is 1.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 5.0


def children():
    """(pid, state, command line) of every process whose parent is this one."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        found.append((int(name), fields[0], cmd))
    return found


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"no-leftovers: prctl failed: {os.strerror(ctypes.get_errno())}")
    rc = subprocess.call(sys.argv[1:])
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        reap_zombies()
        left = [c for c in children() if c[1] != "Z"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        print(f"no-leftovers: {len(left)} process(es) outlived `{' '.join(sys.argv[1:])}`:",
              file=sys.stderr)
        for pid, state, cmd in left:
            print(f"  pid {pid} [{state}]: {cmd}", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap_zombies()
        return rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
