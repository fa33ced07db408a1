"""Bufferbloat before and after the agent's plan, in one run, with real packets.

Topology (tests/shaping_rig.py): lan - router - modem (bridge, tbf 8 Mbit/s, 400 kB buffer) -
server. A bulk upload from the LAN (iperf3, cubic: what most hosts use; then BBR) saturates the
modem (then a download, with the modem's queue in both directions and the plan's ifb shaper); a voip-like probe (UDP 5060, DSCP EF, 50/s) and a probe in the upload's own class (UDP
40000, unmarked) measure latency; iperf3's receiver gives the goodput. Same run: without a
shaper (before), then with the agent's plan applied on the router's uplink (after).

Also timed: applying the plan (the kernel steps only; the transaction's 3 s health window is
not counted), reverting it, and building the same tree with the `tc` binary (`tc -batch` and one
process per line) against pyroute2: the ratio is pyroute2's time over tc's.

Usage: bench/shaping.py [--output bench/shaping-report.json] [--seconds 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import shaping_rig  # noqa: E402
from report import write as write_report  # noqa: E402

from rtk_qos.shaping import apply, capabilities, plan, render, tcstate  # noqa: E402
from rtk_qos.shaping.transaction import Shaper  # noqa: E402

GOALS = ["minimize_latency"]
REPEATS = 5


def _router(rig):
    from pyroute2 import NetNS
    return NetNS(rig.router.name)


def _figures(result: dict) -> dict:
    return {"voip": {k: result["voip"][k] for k in ("p50", "p95")},
            "bulk": {k: result["bulk"][k] for k in ("p50", "p95")},
            "ping": {k: result["ping"][k] for k in ("p50", "p95")},
            "throughput_fraction": result.get("throughput_fraction")}


def _build_times(rig, p) -> dict:
    """The same tree built REPEATS times on a scratch veth in the router: pyroute2 vs tc."""
    rig.router.run("ip", "link", "add", "scratch0", "type", "veth", "peer", "name", "scratch1")
    rig.router.run("ip", "link", "set", "scratch0", "up")
    # The egress tree alone (no ifb, no redirect): the same objects both tools can build.
    tree = plan.InterfacePlan("scratch0", p.interfaces[0].qdiscs, p.interfaces[0].classes, p.interfaces[0].filters)
    lines = [line.split("  #")[0] for line in render.plan_lines(tree)]
    batch = tempfile.NamedTemporaryFile("w", suffix=".tc", delete=False)
    batch.write("\n".join(line[len("tc "):] for line in lines) + "\n")
    batch.close()
    times = {"pyroute2": [], "tc_batch": [], "tc_per_line": []}
    with _router(rig) as ipr:
        index = apply.ifindex_of(ipr, "scratch0")

        def clear():
            rig.router.run("tc", "qdisc", "del", "dev", "scratch0", "root", check=False)

        for _ in range(REPEATS):
            clear()
            start = time.perf_counter()
            for step in apply.plan_ops(tree, tcstate.read(ipr, "scratch0")):
                apply.execute(ipr, step, index)
            times["pyroute2"].append(time.perf_counter() - start)
            assert apply.matches(tree, tcstate.read(ipr, "scratch0"))
            clear()
            start = time.perf_counter()
            subprocess.run(rig.router.argv("tc", "-batch", batch.name), check=True)
            times["tc_batch"].append(time.perf_counter() - start)
            assert apply.matches(tree, tcstate.read(ipr, "scratch0"))
            clear()
            start = time.perf_counter()
            for line in lines:
                subprocess.run(rig.router.argv(*line.split()), check=True)
            times["tc_per_line"].append(time.perf_counter() - start)
            assert apply.matches(tree, tcstate.read(ipr, "scratch0"))
    os.unlink(batch.name)
    rig.router.run("ip", "link", "del", "scratch0")
    med = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {"objects": len(lines), "repeats": REPEATS,
            "median_ms": {name: round(value, 2) for name, value in med.items()},
            "ratio_pyroute2_over_tc_batch": round(med["pyroute2"] / med["tc_batch"], 3),
            "ratio_pyroute2_over_tc_per_line": round(med["pyroute2"] / med["tc_per_line"], 3),
            "note": "tc per line includes `ip netns exec` per process; tc -batch is one process"}


def run(seconds: float, cc: str, state_dir: str, download: bool = False) -> dict:
    rig = shaping_rig.make_rig(download=download)
    servers = rig.start_servers()
    try:
        idle = rig.measure(8, load=False)
        before = rig.measure(seconds, cc=cc, download=download)
        with _router(rig) as ipr:
            caps = capabilities.probe(ipr)
            original = tcstate.read(ipr, rig.uplink)
        p = plan.build_auto(rig.uplink, shaping_rig.BOTTLENECK_BPS, "the modem's tbf rate", caps, GOALS, ["voip"])
        shaper = Shaper(state_dir, ipr_factory=lambda: _router(rig))
        applied = shaper.apply(p, "bench")
        shaper.confirm(applied["transaction"])
        after = rig.measure(seconds, cc=cc, download=download)
        start = time.perf_counter()
        reverted = shaper.revert("bench done")
        revert_ms = (time.perf_counter() - start) * 1000
        with _router(rig) as ipr:
            exact = tcstate.read(ipr, rig.uplink).signature() == original.signature()
        out = {"idle": _figures(idle), "before": _figures(before), "after": _figures(after),
               "apply_ms": applied["apply_ms"], "apply_steps": len(applied["steps"]),
               "revert_ms": round(revert_ms, 1), "revert_exact": exact and reverted["restored"][rig.uplink]["exact"],
               "plan": {"leaf": p.leaf, "shaped_mbps": p.shaped_bps / 1e6, "target_delay_ms": p.target_delay_ms}}
        if cc == "cubic" and not download:
            out["build"] = _build_times(rig, p)
        return out
    finally:
        for proc in servers:
            proc.kill()
        rig.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the JSON report here")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of each loaded measurement")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        cubic = run(ns.seconds, "cubic", os.path.join(state, "cubic"))
        bbr = run(ns.seconds, "bbr", os.path.join(state, "bbr"))
        down = run(ns.seconds, "cubic", os.path.join(state, "download"), download=True)

    def pair(probe: str) -> dict:
        return {"before": cubic["before"][probe], "after": cubic["after"][probe]}

    report = {
        "command": "bench/shaping.py --output bench/shaping-report.json",
        "kernel": os.uname().release,
        "topology": f"lan - router (agent's plan on wan0) - modem bridge (tbf {shaping_rig.BOTTLENECK_BPS / 1e6:g} "
                    f"Mbit/s, {shaping_rig.BUFFER_BYTES // 1000} kB) - server; iperf3 upload from lan",
        "sender": "cubic",
        "idle_latency_ms": cubic["idle"]["voip"],
        "latency_under_load_ms": pair("voip"),
        "bulk_latency_under_load_ms": pair("bulk"),
        "ping_under_load_ms": pair("ping"),
        "throughput_fraction": {"before": cubic["before"]["throughput_fraction"],
                                "after": cubic["after"]["throughput_fraction"]},
        "apply_ms": cubic["apply_ms"], "apply_steps": cubic["apply_steps"], "revert_ms": cubic["revert_ms"],
        "revert_exact": cubic["revert_exact"],
        "plan": cubic["plan"],
        "pyroute2_vs_tc": cubic["build"],
        "bbr": {k: bbr[k] for k in ("idle", "before", "after")},
        "download": {"note": "the modem's queue in both directions; the server sends (iperf3 -R, cubic); the "
                             "plan shapes arriving packets on an ifb (mirred redirect)",
                     **{k: down[k] for k in ("idle", "before", "after")}},
        "notes": {"latency_under_load_ms": "the voip-like probe: UDP 5060, DSCP EF, 160 bytes every 20 ms",
                  "bulk_latency_under_load_ms": "a probe in the class the upload lands in (unclassified: the "
                                                "default class), UDP 40000 every 20 ms",
                  "throughput_fraction": "iperf3 receiver goodput / the modem's 8 Mbit/s",
                  "apply_ms": "kernel steps of the transaction (snapshot, health window and confirm not counted)"},
    }
    for name in ("idle_latency_ms", "latency_under_load_ms", "bulk_latency_under_load_ms", "throughput_fraction"):
        print(f"{name}: {report[name]}")
    print(f"apply {report['apply_ms']} ms, revert {report['revert_ms']} ms, pyroute2/tc -batch "
          f"{report['pyroute2_vs_tc']['ratio_pyroute2_over_tc_batch']}")
    write_report(report, ns.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
