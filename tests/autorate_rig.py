"""Adaptive shaping on the bufferbloat rig (shaping_rig.py), for the tests and bench/autorate.py.

The agent's side runs where an agent would, in the router's namespace: `python autorate_rig.py
STATE_DIR CONFIG` builds the plan for wan0 (qos_auto_optimization's, voip promoted), adds the
adaptive arguments (none: the fixed plan), applies and confirms it through the Shaper, says
"ready", and on "stop" on its stdin runs the agent's periodic maintenance once, stops adaptive
shaping (fixed rates back), prints what the maintenance did, the rates read back from the kernel
and the controller's CPU time as JSON, and reverts. With `resume` in CONFIG it is an agent
restarted on the state dir of one killed before: it does what the agent does at start (recover,
then its periodic maintenance) and says "ready" with what that did; "revert" then reverts while
adaptive shaping runs and prints what was left.

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


def set_modem_rate(rig, rate_bps: int, download: bool = False) -> None:
    """The modem's line rate toward the server (upload) or toward the router (download: the rig
    made with a queue that way too), changed in place."""
    rig.modem.run("tc", "qdisc", "change", "dev", "m_in" if download else "m_out", "root", "tbf", "rate", str(rate_bps),
                  "burst", "5000", "limit", str(MODEM_BUFFER_BYTES))


class Agent:
    """The router-side process (below): start with the plan's capacity and adaptive arguments."""

    def __init__(self, rig, state_dir: Path, capacity_bps: int, adaptive=None, params=None, resume: bool = False):
        self.state_dir = state_dir
        config = {"uplink": rig.uplink, "capacity_bps": capacity_bps, "adaptive": adaptive, "params": params or {},
                  "resume": resume}
        self.proc = rig.router.popen(sys.executable, str(HERE / "autorate_rig.py"), str(state_dir),
                                     json.dumps(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"the router-side agent did not start: {line!r}")
        self.at_start = json.loads(line[len("ready"):].strip() or "null")  # resume: what the restart did
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

    def stop(self, how: str = "stop") -> dict:
        out, _ = self.proc.communicate(how + "\n", timeout=30)
        return json.loads(out)

    def kill(self) -> None:
        """An agent killed: nothing of it runs, the kernel keeps the rates it left."""
        self.proc.kill()
        self.proc.wait(10)


def add_reflectors(rig, n: int) -> list[str]:
    """n more addresses on the server (beyond the modem, like the gateway) to probe."""
    base = rig.server_addr.rsplit(".", 1)[0]
    out = [f"{base}.{10 + i}" for i in range(n)]
    for address in out:
        rig.server.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    return out


def run_phases(rig, phases: list[tuple], settle_s: float, cc: str = "cubic", download: bool = False
               ) -> tuple[list[dict], list[tuple[float, float]], int]:
    """A bulk upload (or download) through every phase (modem rate, seconds[, its own settling
    time]). Returns per phase the voip-like probe's round trips after `settle_s` (or the phase's
    own) into it and the transfer's goodput over the same span; when each change was made
    (monotonic time, Mbit/s); the bytes the sender sent."""
    total = sum(phase[1] for phase in phases)
    set_modem_rate(rig, phases[0][0], download)
    upload = bulk_transfer(rig, total + 1, cc, download)
    start = time.monotonic()
    results, changes = [], []
    at = 0.0
    for rate, seconds, *own_settle in phases:
        settle = own_settle[0] if own_settle else settle_s
        wait = start + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if at:
            set_modem_rate(rig, rate, download)
            changes.append((time.monotonic(), rate / 1e6))
        time.sleep(settle)
        measured = seconds - settle - 0.5
        data = voip_probe_result(voip_probe(rig, measured), measured)
        results.append({"bottleneck_mbps": rate / 1e6, "from_s": at + settle, "to_s": at + settle + measured,
                        **percentiles_full(data["rtts"]), "lost": data["lost"], "sent": data["sent"]})
        at += seconds
    out, _ = upload.communicate(timeout=total + 60)
    report = json.loads(out)
    for phase in results:
        phase["goodput_mbps"] = goodput_mbps(report, phase["from_s"], phase["to_s"])
    return results, changes, report["end"]["sum_sent"]["bytes"]


def goodput_mbps(iperf_report: dict, from_s: float, to_s: float) -> float | None:
    """The mean of iperf3's 0.5 s intervals between from_s and to_s (seconds into its run)."""
    bits = [i["sum"]["bits_per_second"] for i in iperf_report["intervals"]
            if from_s <= i["sum"]["start"] and i["sum"]["end"] <= to_s + 0.5]
    return round(sum(bits) / len(bits) / 1e6, 3) if bits else None


def settling(agent, changes: list[tuple[float, float]]) -> list[float]:
    """Per link change (monotonic time, new Mbit/s): seconds until the shaper's rate was within
    80-100 % of it for the first time (a drop: the first cut; a rise: the raises)."""
    decisions = [d for d in agent.decisions() if d.get("event") == "rate"]
    out = []
    for at, mbps in changes:
        at_ms = wall_ms(at)
        hits = [d["time_ms"] for d in decisions if d["time_ms"] >= at_ms and 0.8 * mbps <= d["new_mbps"] <= mbps]
        out.append(round((hits[0] - at_ms) / 1000, 2) if hits else None)
    return out


def wall_ms(monotonic_at: float) -> float:
    """A time.monotonic() instant as the decision log's time_ms (wall clock)."""
    return (time.time() - (time.monotonic() - monotonic_at)) * 1000


def percentiles_full(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)
    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99)}


def bulk_transfer(rig, seconds: float, cc: str = "cubic", download: bool = False) -> subprocess.Popen:
    """iperf3 from the LAN (`download`: the server sends), its JSON report with 0.5 s intervals
    on stdout."""
    return rig.lan.popen("iperf3", "-c", rig.server_addr, "-t", str(seconds), "-C", cc, "-J", "-i", "0.5",
                         *(["-R"] if download else []), stdout=subprocess.PIPE, text=True)


def voip_probe(rig, seconds: float) -> subprocess.Popen:
    """The voip-like probe (UDP 5060, DSCP EF, 160 bytes every 20 ms) from the LAN for `seconds`."""
    from shaping_rig import PROBE
    return rig.lan.popen(sys.executable, "-c", PROBE, rig.server_addr, "5060", str(0xB8), str(int(seconds / 0.02)),
                         "0.02", stdout=subprocess.PIPE, text=True)


def voip_probe_result(probe: subprocess.Popen, seconds: float) -> dict:
    out, _ = probe.communicate(timeout=seconds + 30)
    return json.loads(out)


def idle_latency_ms(rig, seconds: float = 3.0) -> dict:
    return percentiles_full(voip_probe_result(voip_probe(rig, seconds), seconds)["rtts"])


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

    if config["resume"]:
        _resumed_main(state_dir, config, event)
        return
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
        moved = [_root_ceiling(ipr, target.ifname) for target in plan.interfaces]
        maintained = shaper.maintain({})
        kept = [_root_ceiling(ipr, target.ifname) for target in plan.interfaces] == moved
    running = shaper.autorate
    loop_cpu = running.loop_cpu_s if running else None
    elapsed = _core.monotonic() - running.started if running else None
    if running:
        running.stop(restore=True)
        shaper.autorate = None
    restored = True
    with IPRoute() as ipr:
        for target in plan.interfaces:  # the uplink's tree, and the ifb's when arriving packets are shaped
            rates = {o.handle: tcstate.decode_options(o.what, o.kind, o.options).get("ceil_bps")
                     for o in tcstate.read(ipr, target.ifname).objects if o.what == "class"}
            restored = restored and all(rates.get(c.classid) == c.ceil_bps // 8 * 8 for c in target.classes)
    shaper.revert("test over")
    # CPU while deciding: the tick loop's thread alone, and the whole process (the probe threads too)
    print(json.dumps({"restored_exactly": restored,
                      "maintained": maintained, "maintain_kept_the_rate": kept,
                      "loop_cpu_s": loop_cpu, "process_cpu_s": process_cpu, "elapsed_s": elapsed,
                      "reflectors": running.pool.addresses() if running else None}), flush=True)


def _resumed_main(state_dir: str, config: dict, event) -> None:
    from rtk_qos.shaping.transaction import Shaper

    shaper = Shaper(state_dir, event)
    shaper.autorate_params = config["params"]
    at_start = {"recovered": shaper.recover(), "maintained": shaper.maintain({}),
                "adaptive": shaper.status().get("adaptive")}
    print("ready", json.dumps(at_start), flush=True)
    sys.stdin.readline()  # "revert", with adaptive shaping running
    running = shaper.autorate
    reverted = shaper.revert("test over")
    decided = running.decisions
    time.sleep(1.0)  # anything still running would decide or probe meanwhile
    print(json.dumps({"was_running": running is not None, "reverted": reverted, "state": shaper.record()["state"],
                      "autorate": shaper.autorate is not None, "decided_after": running.decisions - decided,
                      "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("rtk-qos"))}),
          flush=True)


def _root_ceiling(ipr, ifname: str) -> int:
    from rtk_qos.shaping import tcstate
    root = next(o for o in tcstate.read(ipr, ifname).objects if o.what == "class" and o.handle == 0x10001)
    return tcstate.decode_options(root.what, root.kind, root.options)["ceil_bps"]


if __name__ == "__main__":
    _router_main(sys.argv[1], json.loads(sys.argv[2]))
