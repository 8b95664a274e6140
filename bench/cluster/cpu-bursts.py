#!/usr/bin/env python3
"""Short CPU bursts at a fixed period, for SECONDS: what the gateway's relay, the client and the cache
manager do once per token beside a decode step on a shared machine. Run a few beside the in-process
engine (`llmctl bench`) to see what such bursts cost a step whose threads wait for each other
(bench/RESULTS.md, issue 17).
Usage: python3 bench/cluster/cpu-bursts.py PERIOD_MS BUSY_MS SECONDS"""
import sys
import time

period, busy, seconds = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3, float(sys.argv[3])
end = time.time() + seconds
while time.time() < end:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(period)
