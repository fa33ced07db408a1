"""Measures one namespace's per-tick costs; run inside it by bench/run.py.

Prints one JSON object: nanoseconds per call of the raw RTM_GETSTATS dump (the
floor), the whole native pipeline tick, psutil's per-NIC read, and the QoS
guide's approach (one per-NIC read per interface per tick).
"""
import json
import sys
import time

import psutil

from rtk_qos import _core


def per_call_ns(fn, calls: int, repeats: int) -> float:
    """Median over repeats of the mean cost of `calls` back-to-back calls."""
    means = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter_ns() - start) / calls)
    means.sort()
    return means[len(means) // 2]


def main() -> None:
    calls, repeats = int(sys.argv[1]), int(sys.argv[2])
    reader = _core.CounterReader()
    names = [row[1] for row in reader.read()]
    sampler = _core.Sampler(capacity=len(names) + 8, history=4096, window=60)
    sampler.tick()

    def guide_tick():
        for name in names:
            psutil.net_io_counters(pernic=True)[name]

    # Interleave the contenders per repeat so machine noise hits them alike.
    results = {"links": len(names), "counter_source": reader.source}
    for _ in range(2):  # warm-up: caches, lazy imports, page faults in the rings
        reader.raw_dump(), sampler.tick(), psutil.net_io_counters(pernic=True)
    results["raw_dump_ns"] = per_call_ns(reader.raw_dump, calls, repeats)
    results["pipeline_tick_ns"] = per_call_ns(sampler.tick, calls, repeats)
    results["psutil_pernic_ns"] = per_call_ns(lambda: psutil.net_io_counters(pernic=True),
                                              max(calls // 20, 3), repeats)
    results["guide_tick_ns"] = per_call_ns(guide_tick, max(3, calls // (20 * len(names))), 3)
    results["read_parse_ns"] = per_call_ns(reader.read, calls, repeats)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
