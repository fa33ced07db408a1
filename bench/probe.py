"""Prober benchmarks on a veth path between two namespaces, references measured in the same run.

  RTT accuracy: rtk-qos's ICMP prober and iputils `ping` probe the same host at the
  same time; the difference of their mean RTTs (target: under 50 us);
  CPU cost: 50 hosts at 10 probes/s each, against 50 `ping -i 0.1` processes doing
  the same work.

Run as root (it builds the namespaces). Writes a JSON report with --output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import write as write_report  # noqa: E402
PREFIX = f"rtkpb{os.getpid()}"
HOSTS = 50


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output")
    parser.add_argument("--accuracy-probes", type=int, default=300)
    parser.add_argument("--cpu-seconds", type=float, default=20.0)
    ns = parser.parse_args()
    a, b = PREFIX + "a", PREFIX + "b"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "link", "add", "p0", "netns", a, "type", "veth", "peer", "name", "p1", "netns", b)
        batch_a = ["addr add 10.90.0.1/16 dev p0", "link set p0 up", "link set lo up"]
        batch_b = ["link set p1 up", "link set lo up"] + [f"addr add 10.90.1.{i + 1}/16 dev p1" for i in range(HOSTS)]
        sh("ip", "-n", a, "-batch", "-", input="\n".join(batch_a) + "\n")
        sh("ip", "-n", b, "-batch", "-", input="\n".join(batch_b) + "\n")
        out = sh("ip", "netns", "exec", a, sys.executable, str(HERE / "probe_worker.py"),
                 str(ns.accuracy_probes), str(ns.cpu_seconds), str(HOSTS)).stdout
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)
    report = json.loads(out)
    print(json.dumps(report, indent=2))
    write_report(report, ns.output)


if __name__ == "__main__":
    main()
