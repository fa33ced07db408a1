"""Adaptive shaping against fixed shapers on a link whose rate changes, in one run, with real packets.

Topology (tests/shaping_rig.py, tests/autorate_rig.py): lan - router - modem (bridge, tbf with a
400 kB buffer) - server, five more addresses on the server as reflectors beside the gateway (six
reflectors). A cubic bulk upload from the LAN runs while the modem's rate goes 20 -> 5 -> 15
Mbit/s (tbf changed in place), PHASE_S each; the voip-like probe (UDP 5060, DSCP EF, 50/s) is
measured from SETTLE_S into each phase, iperf3's receiver gives the goodput over the same span.
The same trace is run with each shaper on the router's uplink (the agent's plan, voip promoted):
adaptive (min 2, base 15, max 30 Mbit/s), fixed_high (the plan for 20 Mbit/s), fixed_low (the
plan for 5 Mbit/s), and adaptive with cake-autorate's default constants (its thresholds, window,
cut and raise sizes; no cut to the achieved rate, no drain rule) for comparison.

Also: when the adaptive shaper reached 80-100 % of each new rate (settling), the noise of the
probe's round trip under load without a modem queue (fixed_low: p95 and p99 - idle p50, what a
delay threshold must stay above), and the CPU of the controller (its 5 Hz loop thread, and its
whole process: the six reflectors' probing too) as a percent of one core, on an idle link and
under the upload.

Usage: bench/autorate.py [--output bench/autorate-report.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import autorate_rig  # noqa: E402
import shaping_rig  # noqa: E402
from report import write as write_report  # noqa: E402

from rtk_qos import _core  # noqa: E402
from rtk_qos.shaping.autorate import TICK_S  # noqa: E402

PHASES = [("20", 20_000_000), ("5", 5_000_000), ("15", 15_000_000)]
PHASE_S = 20.0
SETTLE_S = 6.0
IDLE_CPU_S = 30.0
ADAPTIVE = {"upload": {"min_mbps": 2, "base_mbps": 15, "max_mbps": 30}}
# cake-autorate's defaults (its config defaults: dl/ul delay thresholds 30 ms, bufferbloat 3 of 6,
# cuts 1-25 % scaled over 30-60 ms, raise 4 % above 75 % load with delta under 10 ms, decay 1 %,
# minimum rate after 10 s without replies, 300 ms refractory); what it has no counterpart for
# is turned off.
CAKE_AUTORATE = {"delay_ms": 30.0, "window_n": 6, "bloat_k": 3, "cut_min": 0.01, "cut_max": 0.25,
                 "cut_lo_ms": 30.0, "cut_hi_ms": 60.0, "cut_load_factor": 1e9, "drain_s": 0.0,
                 "cut_refractory_s": 0.3, "high_load": 0.75, "raise_min": 0.04, "raise_max": 0.04,
                 "raise_growth": 1.0, "raise_delta_ms": 10.0, "stall_s": 10.0}


def trace(rig, state: str, capacity_bps: int, adaptive, params=None) -> dict:
    agent = autorate_rig.Agent(rig, Path(state), capacity_bps, adaptive, params)
    try:
        results, changes, _ = autorate_rig.run_phases(rig, [(rate, PHASE_S) for _, rate in PHASES], SETTLE_S)
    finally:
        final = agent.stop()
    return {"phases": results, "settling_s": autorate_rig.settling(agent, changes) if adaptive else None,
            "final": final, "decisions": len([d for d in agent.decisions() if d.get("event") == "rate"])}


def idle_cpu(rig, state: str, reflectors: list[str]) -> dict:
    """Adaptive shaping with six reflectors on an idle link for IDLE_CPU_S: the controller's own
    CPU (under load the kernel also charges forwarding work to whichever thread it interrupts)."""
    agent = autorate_rig.Agent(rig, Path(state), 20_000_000, {**ADAPTIVE, "reflectors": reflectors})
    time.sleep(IDLE_CPU_S)
    return agent.stop()


def _cpu(final: dict) -> dict:
    return {"loop_thread_percent_of_core": round(100 * final["loop_cpu_s"] / final["elapsed_s"], 3),
            "process_percent_of_core": round(100 * final["process_cpu_s"] / final["elapsed_s"], 3),
            "seconds": round(final["elapsed_s"], 1)}


def _shaper(phase: dict) -> dict:
    return {k: phase[k] for k in ("p50_ms", "p95_ms", "p99_ms", "goodput_mbps")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the JSON report here")
    ns = parser.parse_args()
    rig = shaping_rig.make_rig(rate_bps=PHASES[0][1])
    servers = rig.start_servers()
    try:
        reflectors = autorate_rig.add_reflectors(rig, 5)
        idle = autorate_rig.idle_latency_ms(rig, 10.0)
        with tempfile.TemporaryDirectory() as state:
            runs = {}
            for name, capacity, adaptive, params in (
                    ("adaptive", 20_000_000, {**ADAPTIVE, "reflectors": reflectors}, None),
                    ("fixed_high", 20_000_000, None, None),
                    ("fixed_low", 5_000_000, None, None),
                    ("cake_autorate_defaults", 20_000_000, {**ADAPTIVE, "reflectors": reflectors}, CAKE_AUTORATE)):
                os.makedirs(os.path.join(state, name))
                runs[name] = trace(rig, os.path.join(state, name), capacity, adaptive, params)
                print(name, runs[name]["phases"], runs[name]["settling_s"])
            os.makedirs(os.path.join(state, "idle"))
            idle_final = idle_cpu(rig, os.path.join(state, "idle"), reflectors)
    finally:
        for proc in servers:
            proc.kill()
        rig.delete()
    final = runs["adaptive"]["final"]
    report = {
        "command": "bench/autorate.py --output bench/autorate-report.json",
        "kernel": os.uname().release,
        "topology": "lan - router (agent's plan on wan0) - modem bridge (tbf, "
                    f"{autorate_rig.MODEM_BUFFER_BYTES // 1000} kB buffer, rate changed in place) - server; cubic "
                    "iperf3 upload from lan",
        "idle_latency_ms": idle,
        "phases": [{"name": f"{label} Mbit/s", "bottleneck_mbps": rate / 1e6,
                    **{shaper: _shaper(runs[shaper]["phases"][i]) for shaper in runs}}
                   for i, (label, rate) in enumerate(PHASES)],
        "adaptive_settling_s": runs["adaptive"]["settling_s"],
        "cake_autorate_defaults_settling_s": runs["cake_autorate_defaults"]["settling_s"],
        "decisions": {name: runs[name]["decisions"] for name in ("adaptive", "cake_autorate_defaults")},
        "delay_noise_under_load_ms": {
            q: [round(p[f"{q}_ms"] - idle["p50_ms"], 2) for p in runs["fixed_low"]["phases"]] for q in ("p95", "p99")},
        "controller_cpu": {"reflectors": len(final["reflectors"]), "tick_hz": 1 / TICK_S,
                           "idle_link": _cpu(idle_final), "under_the_upload": _cpu(final)},
        "defaults": _core.autorate_defaults(),
        "notes": {"phases": f"each phase {PHASE_S:g} s; latency and goodput from {SETTLE_S:g} s into it",
                  "p50_ms": "the voip-like probe's round trip: UDP 5060, DSCP EF, 160 bytes every 20 ms",
                  "goodput_mbps": "iperf3 receiver, mean of its 0.5 s intervals inside the measured span",
                  "adaptive_settling_s": "per change (20->5, 5->15): seconds until the shaper's rate was first "
                                         "within 80-100 % of the new link rate",
                  "delay_noise_under_load_ms": "fixed_low (no modem queue): the probe's p95 and p99 minus its idle "
                                               "p50, per phase",
                  "controller_cpu": "CPU time over wall time of the router-side process, whose only work then is "
                                    "adaptive shaping: its 5 Hz loop thread, and the whole process (the probing "
                                    "too); idle_link: no traffic, under_the_upload: the adaptive run (the kernel "
                                    "charges some of the forwarding of the upload to the threads it interrupts)"},
    }
    for phase in report["phases"]:
        print(phase)
    print("cpu", report["controller_cpu"])
    write_report(report, ns.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
