"""rtk-qos benchmarks: every figure is printed beside a reference measured in the same run.

  per-tick pipeline (snapshot + deltas + rolling stats + z-scores) for 1, 16, 64
  and 256 links in a network namespace, against the raw RTM_GETSTATS dump (the
  floor), psutil.net_io_counters(pernic=True), and the QoS guide's approach;
  rolling-statistics update cost per metric per sample, against the plain-Python
  reference.

Targets (reported, never asserted): pipeline <= 1.5x the floor at 64 links;
rolling update < 50 ns. Writes a JSON report with --output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from rtk_qos import _core

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import reference  # noqa: E402  (the tests' plain-Python reference)
from report import write as write_report  # noqa: E402

NAMESPACE = f"rtkbench{os.getpid()}"
LINK_COUNTS = (1, 16, 64, 256)


def sh(*argv, input_text=None):
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input_text)


def links_in_namespace(total: int) -> None:
    """Grow the namespace to `total` links (lo included) with veth pairs, in one batch."""
    have = int(sh("ip", "netns", "exec", NAMESPACE, "sh", "-c", "ls /sys/class/net | wc -l").stdout)
    batch, index = [], have
    while have < total:
        batch.append(f"link add b{index}a type veth peer name b{index}b")
        have, index = have + 2, index + 1
    if batch:
        sh("ip", "-n", NAMESPACE, "-batch", "-", input_text="\n".join(batch) + "\n")


def tick_costs(calls: int, repeats: int) -> list[dict]:
    rows = []
    sh("ip", "netns", "add", NAMESPACE)
    try:
        for count in LINK_COUNTS:
            links_in_namespace(count)
            out = sh("ip", "netns", "exec", NAMESPACE, sys.executable,
                     os.path.join(HERE, "tick_worker.py"), str(calls), str(repeats)).stdout
            row = json.loads(out)
            row["pipeline_vs_floor"] = row["pipeline_tick_ns"] / row["raw_dump_ns"]
            row["psutil_vs_pipeline"] = row["psutil_pernic_ns"] / row["pipeline_tick_ns"]
            row["guide_vs_pipeline"] = row["guide_tick_ns"] / row["pipeline_tick_ns"]
            rows.append(row)
            print(f"  {row['links']:4d} links: floor {row['raw_dump_ns'] / 1e3:8.1f} us | "
                  f"pipeline {row['pipeline_tick_ns'] / 1e3:8.1f} us ({row['pipeline_vs_floor']:.2f}x floor) | "
                  f"psutil pernic {row['psutil_pernic_ns'] / 1e3:9.1f} us ({row['psutil_vs_pipeline']:.0f}x pipeline) | "
                  f"guide {row['guide_tick_ns'] / 1e6:9.2f} ms ({row['guide_vs_pipeline']:.0f}x pipeline)",
                  flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE], check=False)
    return rows


def rolling_cost(pushes: int) -> dict:
    native = _core.Rolling(60, ewma_alpha=0.1)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        native.bench_push(pushes)
        best = min(best, (time.perf_counter_ns() - start) / pushes)
    py = reference.Rolling(60)
    count = 20_000
    start = time.perf_counter_ns()
    for i in range(count):
        py.push(float(i & 7))
    py_ns = (time.perf_counter_ns() - start) / count
    row = {"native_ns_per_update": best, "python_reference_ns_per_update": py_ns,
           "speedup_vs_python": py_ns / best, "window": 60}
    print(f"  rolling update: {best:.1f} ns per metric per sample (target < 50 ns); "
          f"plain-Python reference {py_ns:.0f} ns ({row['speedup_vs_python']:.0f}x slower)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="write the JSON report here")
    parser.add_argument("--calls", type=int, default=2000, help="calls per timing repeat")
    parser.add_argument("--repeats", type=int, default=7)
    opts = parser.parse_args()
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("per-tick cost (median of repeats; references measured in the same run):", flush=True)
    report["tick"] = tick_costs(opts.calls, opts.repeats)
    print("rolling statistics:", flush=True)
    report["rolling"] = rolling_cost(10_000_000)
    at64 = next(r for r in report["tick"] if r["links"] >= 64)
    report["targets"] = {
        "pipeline_vs_floor_at_64": {"value": round(at64["pipeline_vs_floor"], 3), "target": 1.5,
                                    "met": at64["pipeline_vs_floor"] <= 1.5},
        "rolling_update_ns": {"value": round(report["rolling"]["native_ns_per_update"], 2), "target": 50,
                              "met": report["rolling"]["native_ns_per_update"] < 50},
    }
    print("targets:", json.dumps(report["targets"]), flush=True)
    write_report(report, opts.output)


if __name__ == "__main__":
    main()
