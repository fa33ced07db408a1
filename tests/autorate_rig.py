"""Adaptive shaping on the bufferbloat rig (shaping_rig.py), for the tests and bench/autorate.py.

The agent's side runs where an agent would, in the router's namespace: `python autorate_rig.py
STATE_DIR CONFIG` builds the plan for wan0 (qos_auto_optimization's, voip promoted), adds the
adaptive arguments (none: the fixed plan), applies and confirms it through the Shaper, says
"ready", and on "stop" on its stdin runs the agent's periodic maintenance once, stops adaptive
shaping (fixed rates back), prints what the maintenance did, the rates read back from the kernel
and the controller's CPU time as JSON, and reverts.

The test's side changes the modem's rate in place (tbf change: the queue and its packets stay)
while a bulk upload runs, and measures the voip-like probe per phase.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEM_BUFFER_BYTES = 400_000


def set_modem_rate(rig, rate_bps: int) -> None:
    rig.modem.run("tc", "qdisc", "change", "dev", "m_out", "root", "tbf", "rate", str(rate_bps), "burst", "5000",
                  "limit", str(MODEM_BUFFER_BYTES))


class Agent:
    """The router-side process (below): start with the plan's capacity and adaptive arguments."""

    def __init__(self, rig, state_dir: Path, capacity_bps: int, adaptive=None, params=None):
        self.state_dir = state_dir
        config = {"uplink": rig.uplink, "capacity_bps": capacity_bps, "adaptive": adaptive, "params": params or {}}
        self.proc = rig.router.popen(sys.executable, str(HERE / "autorate_rig.py"), str(state_dir),
                                     json.dumps(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"the router-side agent did not start: {line!r}")
        self.started = time.monotonic()

    def decisions(self) -> list[dict]:
        path = self.state_dir / "autorate.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def events(self) -> list[dict]:
        path = self.state_dir / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def rate_mbps(self, direction: str = "upload") -> float | None:
        rates = [d["new_mbps"] for d in self.decisions() if d.get("event") == "rate" and d["direction"] == direction]
        return rates[-1] if rates else None

    def stop(self) -> dict:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        return json.loads(out)


def add_reflectors(rig, n: int) -> list[str]:
    """n more addresses on the server (beyond the modem, like the gateway) to probe."""
    base = rig.server_addr.rsplit(".", 1)[0]
    out = [f"{base}.{10 + i}" for i in range(n)]
    for address in out:
        rig.server.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    return out


def run_phases(rig, phases: list[tuple], settle_s: float, cc: str = "cubic"
               ) -> tuple[list[dict], list[tuple[float, float]], int]:
    """A bulk upload through every phase (modem rate, seconds[, its own settling time]). Returns
    per phase the voip-like probe's round trips after `settle_s` (or the phase's own) into it and
    the upload's goodput over the same span; when each change was made (monotonic time, Mbit/s);
    the bytes the upload sent."""
    from shaping_rig import PROBE
    total = sum(phase[1] for phase in phases)
    set_modem_rate(rig, phases[0][0])
    upload = rig.lan.popen("iperf3", "-c", rig.server_addr, "-t", str(total + 1), "-C", cc, "-J", "-i", "0.5",
                           stdout=subprocess.PIPE, text=True)
    start = time.monotonic()
    results, changes = [], []
    at = 0.0
    for rate, seconds, *own_settle in phases:
        settle = own_settle[0] if own_settle else settle_s
        wait = start + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if at:
            set_modem_rate(rig, rate)
            changes.append((time.monotonic(), rate / 1e6))
        time.sleep(settle)
        measured = seconds - settle - 0.5
        probe = rig.lan.popen(sys.executable, "-c", PROBE, rig.server_addr, "5060", str(0xB8),
                              str(int(measured / 0.02)), "0.02", stdout=subprocess.PIPE, text=True)
        out, _ = probe.communicate(timeout=measured + 30)
        data = json.loads(out)
        results.append({"bottleneck_mbps": rate / 1e6, "from_s": at + settle, "to_s": at + settle + measured,
                        **percentiles_full(data["rtts"]), "lost": data["lost"], "sent": data["sent"]})
        at += seconds
    out, _ = upload.communicate(timeout=total + 60)
    report = json.loads(out)
    intervals = report["intervals"]
    for phase in results:
        bits = [i["sum"]["bits_per_second"] for i in intervals
                if phase["from_s"] <= i["sum"]["start"] and i["sum"]["end"] <= phase["to_s"] + 0.5]
        phase["goodput_mbps"] = round(sum(bits) / len(bits) / 1e6, 3) if bits else None
    return results, changes, report["end"]["sum_sent"]["bytes"]


def settling(agent, changes: list[tuple[float, float]]) -> list[float]:
    """Per link change (monotonic time, new Mbit/s): seconds until the shaper's rate was within
    80-100 % of it for the first time (a drop: the first cut; a rise: the raises)."""
    decisions = [d for d in agent.decisions() if d.get("event") == "rate"]
    out = []
    for at, mbps in changes:
        at_ms = (time.time() - (time.monotonic() - at)) * 1000
        hits = [d["time_ms"] for d in decisions if d["time_ms"] >= at_ms and 0.8 * mbps <= d["new_mbps"] <= mbps]
        out.append(round((hits[0] - at_ms) / 1000, 2) if hits else None)
    return out


def percentiles_full(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)
    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99)}


def idle_latency_ms(rig, seconds: float = 3.0) -> dict:
    from shaping_rig import PROBE
    probe = rig.lan.popen(sys.executable, "-c", PROBE, rig.server_addr, "5060", str(0xB8), str(int(seconds / 0.02)),
                          "0.02", stdout=subprocess.PIPE, text=True)
    out, _ = probe.communicate(timeout=seconds + 30)
    return percentiles_full(json.loads(out)["rtts"])


# ---- the router's side ----------------------------------------------------------------------------

def _router_main(state_dir: str, config: dict) -> None:
    from pyroute2 import IPRoute

    from rtk_qos import _core
    from rtk_qos.shaping import autorate, capabilities, plan as shaping_plan, tcstate
    from rtk_qos.shaping.transaction import Shaper

    events = open(os.path.join(state_dir, "events.jsonl"), "a")
    lock = threading.Lock()

    def event(kind: str, payload: dict) -> None:
        with lock:
            events.write(json.dumps({"type": kind, **payload}) + "\n")
            events.flush()

    with IPRoute() as ipr:
        caps = capabilities.probe(ipr)
    plan = shaping_plan.build_auto(config["uplink"], config["capacity_bps"], "test", caps, ["minimize_latency"],
                                   ["voip"])
    if config["adaptive"]:
        adaptive = dict({"mode": "active", "active_reflectors": 6}, **config["adaptive"])
        plan.adaptive = autorate.check_args(adaptive, plan)
    shaper = Shaper(state_dir, event)
    shaper.autorate_params = config["params"]
    applied = shaper.apply(plan, "test")
    shaper.confirm(applied["transaction"])
    print("ready", flush=True)
    process_cpu = time.process_time()
    sys.stdin.readline()
    process_cpu = time.process_time() - process_cpu
    # The agent's periodic check: a tree whose rates adaptive shaping moved is not a lost tree.
    with IPRoute() as ipr:
        moved = _root_ceiling(ipr, config["uplink"])
        maintained = shaper.maintain({})
        kept = _root_ceiling(ipr, config["uplink"]) == moved
    running = shaper.autorate
    loop_cpu = running.loop_cpu_s if running else None
    elapsed = _core.monotonic() - running.started if running else None
    if running:
        running.stop(restore=True)
        shaper.autorate = None
    with IPRoute() as ipr:
        tree = tcstate.read(ipr, config["uplink"])
    rates = {o.handle: tcstate.decode_options(o.what, o.kind, o.options).get("ceil_bps") for o in tree.objects
             if o.what == "class"}
    planned = {c.classid: c.ceil_bps for c in plan.interfaces[0].classes}
    shaper.revert("test over")
    # CPU while deciding: the tick loop's thread alone, and the whole process (the probe threads too)
    print(json.dumps({"restored_exactly": all(rates.get(k) == v // 8 * 8 for k, v in planned.items()),
                      "maintained": maintained, "maintain_kept_the_rate": kept,
                      "loop_cpu_s": loop_cpu, "process_cpu_s": process_cpu, "elapsed_s": elapsed,
                      "reflectors": running.pool.addresses() if running else None}), flush=True)


def _root_ceiling(ipr, ifname: str) -> int:
    from rtk_qos.shaping import tcstate
    root = next(o for o in tcstate.read(ipr, ifname).objects if o.what == "class" and o.handle == 0x10001)
    return tcstate.decode_options(root.what, root.kind, root.options)["ceil_bps"]


if __name__ == "__main__":
    _router_main(sys.argv[1], json.loads(sys.argv[2]))
