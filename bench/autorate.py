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

With --sweep (bench/autorate-sweep-report.json): the constants the main trace cannot tell apart,
each at 2-3 values around the chosen one (the others at their defaults), on short traces of the
same rig made for it:
  cut_refractory_s, drain_s  the upload through 20 -> 5 Mbit/s, measured from 1 s after the drop;
  decay_per_s                the upload at 5 Mbit/s (cut), IDLE_S of idle, then the upload again
                             with the link still at 5 or back at 15 Mbit/s;
  stall_s                    the upload at 5 Mbit/s, every reflector silent (echo ignored at the
                             server: the link itself fine) for SILENT_S, then answering again;
                             and, without adaptive shaping (the plan for 20 Mbit/s) through
                             20 -> 5, the longest gap between a gateway ping's replies (20/s)
                             under the modem's full queue: the silence bufferbloat alone makes.

Usage: bench/autorate.py [--output bench/autorate-report.json]
       bench/autorate.py --sweep [--repeat 2] [--output bench/autorate-sweep-report.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import autorate_rig  # noqa: E402
import shaping_rig  # noqa: E402
from report import write as write_report  # noqa: E402

from rtk_qos import _core  # noqa: E402
from rtk_qos.shaping.autorate import TICK_S  # noqa: E402

LOAD_AT_START = round(os.getloadavg()[0], 2)

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


# The sweep (--sweep): values per constant, the chosen one among them.
SWEEP = {"cut_refractory_s": [0.3, 0.6, 1.2], "drain_s": [0.0, 2.0, 4.0], "decay_per_s": [0.03, 0.1, 0.3],
         "stall_s": [1.5, 3.0, 6.0]}
LOADED_S = 6.0   # decay: the upload before the idle period
IDLE_S = 10.0
RESUMED_S = 5.0  # decay: measured span of the upload after it
SILENT_S = 8.0


def trace(rig, state: str, capacity_bps: int, adaptive, params=None) -> dict:
    agent = autorate_rig.Agent(rig, Path(state), capacity_bps, adaptive, params)
    try:
        results, changes, _ = autorate_rig.run_phases(rig, [(rate, PHASE_S) for _, rate in PHASES], SETTLE_S)
    finally:
        final = agent.stop()
    return {"phases": results, "settling_s": autorate_rig.settling(agent, changes) if adaptive else None,
            "final": final, "decisions": len([d for d in agent.decisions() if d.get("event") == "rate"])}


def _rate_decisions(agent, from_monotonic: float = 0.0, to_monotonic: Optional[float] = None) -> list[dict]:
    """The rate decisions made from from_monotonic until to_monotonic (or the end)."""
    lo = autorate_rig.wall_ms(from_monotonic)
    hi = autorate_rig.wall_ms(to_monotonic) if to_monotonic is not None else float("inf")
    return [d for d in agent.decisions() if d.get("event") == "rate" and lo <= d["time_ms"] < hi]


def _after(decisions: list[dict], monotonic_at: float, reason: str):
    """Seconds from monotonic_at to the first decision for `reason` (None: there was none)."""
    at_ms = autorate_rig.wall_ms(monotonic_at)
    hits = [d["time_ms"] for d in decisions if d["reason"] == reason and d["time_ms"] >= at_ms]
    return round((hits[0] - at_ms) / 1000, 2) if hits else None


def drop_run(rig, state: Path, reflectors: list[str], params: dict) -> dict:
    """The upload through 20 -> 5 Mbit/s (8 s, 12 s), measured from 1 s after the drop."""
    agent = autorate_rig.Agent(rig, state, 20_000_000, {**ADAPTIVE, "reflectors": reflectors}, params)
    try:
        results, changes, _ = autorate_rig.run_phases(rig, [(20_000_000, 8, 3), (5_000_000, 12, 1)], SETTLE_S)
    finally:
        agent.stop()
    after = _rate_decisions(agent, changes[0][0])
    return {"after_the_drop": {**_shaper(results[1]), "lost": results[1]["lost"]},
            "settling_s": autorate_rig.settling(agent, changes)[0],
            "cuts_after_the_drop": len([d for d in after if d["reason"] == "cut"]),
            "lowest_mbps_after_the_drop": min(d["new_mbps"] for d in after) if after else None}


def decay_run(rig, state: Path, reflectors: list[str], params: dict, resume_bps: int) -> dict:
    """The upload at 5 Mbit/s, idle, and the upload again on a link at `resume_bps`."""
    autorate_rig.set_modem_rate(rig, 5_000_000)
    agent = autorate_rig.Agent(rig, state, 20_000_000, {**ADAPTIVE, "reflectors": reflectors}, params)
    try:
        autorate_rig.bulk_transfer(rig, LOADED_S).communicate(timeout=LOADED_S + 30)
        idle_from = time.monotonic()
        autorate_rig.set_modem_rate(rig, resume_bps)  # the link changes while nothing is sent
        time.sleep(IDLE_S)
        resumed = time.monotonic()
        rate_at_resume = agent.rate_mbps()
        upload = autorate_rig.bulk_transfer(rig, RESUMED_S + 1)
        probe = autorate_rig.voip_probe_result(autorate_rig.voip_probe(rig, RESUMED_S), RESUMED_S)
        iperf = json.loads(upload.communicate(timeout=RESUMED_S + 30)[0])
    finally:
        agent.stop()
    return {"rate_at_resume_mbps": rate_at_resume,
            "decay_decisions_while_idle": len([d for d in _rate_decisions(agent, idle_from, resumed)
                                               if d["reason"] == "decay"]),
            "resumed": {**autorate_rig.percentiles_full(probe["rtts"]), "lost": probe["lost"],
                        "goodput_mbps": autorate_rig.goodput_mbps(iperf, 0, RESUMED_S)},
            "settling_s": autorate_rig.settling(agent, [(resumed, resume_bps / 1e6)])[0]}


def stall_run(rig, state: Path, reflectors: list[str], params: dict) -> dict:
    """The upload at 5 Mbit/s: 6 s, every reflector silent for SILENT_S, 6 s answering again."""
    autorate_rig.set_modem_rate(rig, 5_000_000)
    agent = autorate_rig.Agent(rig, state, 20_000_000, {**ADAPTIVE, "reflectors": reflectors}, params)
    try:
        upload = autorate_rig.bulk_transfer(rig, 6 + SILENT_S + 6 + 1)
        time.sleep(6)
        silent = time.monotonic()
        rig.server.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        time.sleep(SILENT_S)
        back = time.monotonic()
        rig.server.sysctl("net.ipv4.icmp_echo_ignore_all", "0")
        iperf = json.loads(upload.communicate(timeout=6 + 30)[0])
    finally:
        rig.server.sysctl("net.ipv4.icmp_echo_ignore_all", "0")
        agent.stop()
    decisions = _rate_decisions(agent)
    return {"minimum_after_s": _after(decisions, silent, "stall"),
            "stalls_before_the_silence": len([d for d in _rate_decisions(agent, 0, silent)
                                              if d["reason"] == "stall"]),
            "goodput_silent_mbps": autorate_rig.goodput_mbps(iperf, 6, 6 + SILENT_S - 0.5),
            "first_raise_after_replies_s": _after(decisions, back, "raise"),
            "goodput_after_mbps": autorate_rig.goodput_mbps(iperf, 6 + SILENT_S + 1, 6 + SILENT_S + 5.5)}


def bloat_reply_gap(rig, state: Path) -> dict:
    """The plan for 20 Mbit/s without adaptive shaping through 20 -> 5 (6 s, 12 s): the gateway
    pinged from the router 20 times a second; the longest time without a reply."""
    agent = autorate_rig.Agent(rig, state, 20_000_000)
    try:
        ping = rig.router.popen("ping", "-n", "-D", "-i", "0.05", "-W", "2", "-c", str(int(18 / 0.05)),
                                rig.server_addr, stdout=subprocess.PIPE, text=True)
        autorate_rig.run_phases(rig, [(20_000_000, 6, 2), (5_000_000, 12, 1)], SETTLE_S)
        out, _ = ping.communicate(timeout=60)
    finally:
        agent.stop()
    replies = [(float(line[1:line.index("]")]), float(line.rsplit("time=", 1)[1].split()[0]))
               for line in out.splitlines() if line.startswith("[") and "time=" in line]
    arrivals = [at for at, _ in replies]
    return {"replies": len(replies), "sent": int(18 / 0.05), "max_rtt_ms": max(rtt for _, rtt in replies),
            "longest_gap_s": round(max(b - a for a, b in zip(arrivals, arrivals[1:])), 2)}


def sweep(rig, state: str, reflectors: list[str], repeat: int) -> dict:
    """Per constant and value, `repeat` runs of its scenario (the values taken in turn)."""
    defaults = _core.autorate_defaults()
    runs: dict = {name: [] for name in SWEEP}
    count = itertools.count()

    def run(name: str, value: float, scenario, *args) -> dict:
        path = Path(state) / f"{name}-{value}-{next(count)}"
        path.mkdir()
        out = scenario(rig, path, reflectors, {name: value}, *args)
        print(name, value, out, flush=True)
        return out
    for _ in range(repeat):
        for name in ("cut_refractory_s", "drain_s"):
            for value in SWEEP[name]:
                if name == "drain_s" and value == defaults["drain_s"]:
                    continue  # the defaults' run is cut_refractory_s's
                runs[name].append({"value": value, **run(name, value, drop_run)})
                if name == "cut_refractory_s" and value == defaults["cut_refractory_s"]:
                    runs["drain_s"].append(runs[name][-1] | {"value": defaults["drain_s"]})
        for value in SWEEP["decay_per_s"]:
            runs["decay_per_s"].append({"value": value, **{
                f"link_{rate // 1_000_000}_mbps": run("decay_per_s", value, decay_run, rate)
                for rate in (5_000_000, 15_000_000)}})
        for value in SWEEP["stall_s"]:
            runs["stall_s"].append({"value": value, **run("stall_s", value, stall_run)})
    (Path(state) / "bloat").mkdir()
    gap = bloat_reply_gap(rig, Path(state) / "bloat")
    print("bloat reply gap", gap)
    return {"constants": {name: {"chosen": defaults[name], "runs": runs[name]} for name in SWEEP},
            "reply_gap_under_bufferbloat": gap}


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
    parser.add_argument("--sweep", action="store_true", help="sweep the constants (see above) instead")
    parser.add_argument("--repeat", type=int, default=2, help="--sweep: runs per value (default 2)")
    ns = parser.parse_args()
    rig = shaping_rig.make_rig(rate_bps=PHASES[0][1])
    servers = rig.start_servers()
    try:
        reflectors = autorate_rig.add_reflectors(rig, 5)
        if ns.sweep:
            return sweep_main(rig, reflectors, ns.repeat, ns.output)
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


def sweep_main(rig, reflectors: list[str], repeat: int, output) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as state:
        swept = sweep(rig, state, reflectors, repeat)
    report = {
        "command": "bench/autorate.py --sweep --output bench/autorate-sweep-report.json",
        "kernel": os.uname().release,
        "load_average_1m_at_start_and_end": [LOAD_AT_START, round(os.getloadavg()[0], 2)],
        "wall_s": round(time.monotonic() - started, 1),
        "runs_per_value": repeat,
        **swept,
        "defaults": _core.autorate_defaults(),
        "notes": {
            "scenarios": "cut_refractory_s, drain_s: the cubic upload through 20 -> 5 Mbit/s (8 s, 12 s), the voip "
                         "probe and goodput from 1 s after the drop (after_the_drop); decay_per_s: the upload at 5 "
                         f"Mbit/s for {LOADED_S:g} s, {IDLE_S:g} s idle while the link stays at 5 (link_5_mbps) or goes "
                         f"to 15 (link_15_mbps), then the upload again, measured over its first {RESUMED_S:g} s "
                         "(resumed); stall_s: the upload at 5 Mbit/s, every reflector silent (echo ignored at "
                         f"the server, the link fine) for {SILENT_S:g} s from 6 s in, then answering",
            "settling_s": "seconds from the link's change (decay: from the upload's return) until the shaper's rate "
                          "was first within 80-100 % of the link",
            "minimum_after_s": "seconds from the silence's start to the stall decision (the minimum rate)",
            "reply_gap_under_bufferbloat": "no adaptive shaping (the plan for 20 Mbit/s), the modem through 20 -> 5 "
                                           "with the upload: ping of the gateway from the router every 50 ms, the "
                                           "longest time between two replies (the modem's full 400 kB queue)",
            "adaptive": "min 2, base 15, max 30 Mbit/s, six reflectors; every other constant at its default"},
    }
    write_report(report, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
