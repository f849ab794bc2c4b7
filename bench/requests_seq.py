"""Sequential DELETEs with a requests.Session (the usual Python way), for comparison."""
import json
import resource
import sys
import time

import requests

base, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = requests.Session()
s.headers.update({"Authorization": "Bearer tvx_sk_test_simulator", "User-Agent": "bench-requests"})
failed = 0
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.monotonic()
for i in range(n):
    r = s.delete(f"{base}/v1/voice/accounts/AC123456/calls/{prefix}{i}", timeout=10)
    failed += r.status_code != 204
wall = time.monotonic() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"what": "requests seq", "n": n, "failed": failed, "seconds": round(wall, 3),
                  "per_sec": round(n / wall), "cpu_us": round(cpu * 1e6 / n, 2),
                  "max_rss_kb": r1.ru_maxrss}))
