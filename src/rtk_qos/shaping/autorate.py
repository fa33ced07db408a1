"""Adaptive shaping: the shaper's rate follows a link whose capacity moves (cake-autorate's job).

Inputs: the round trips to a few reflectors (reflectors.py: the agent's prober, rotated when one
misbehaves) fed to the native controller as they arrive, and each direction's achieved rate from
the native link sampler, ticked `TICK_S` apart. The controller (native/autorate.c) decides; here
each decision becomes a rate-only kernel update through pyroute2 (an htb class change of every
class of the plan's tree, scaled, or a cake qdisc's bandwidth: never a tree rebuild), a line in
a bounded log in the state directory, and an event. In monitor mode it decides and logs but
changes nothing. Stopping puts the plan's fixed rates back.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from dataclasses import replace
from typing import Callable, Optional

from .. import _core
from ..protocol.argspec import ArgError
from ..services.sampling import LinkSampler
from . import apply
from .plan import InterfacePlan, Plan
from .reflectors import ReflectorPool

log = logging.getLogger(__name__)
TICK_S = 0.2                 # 5 Hz: a cut reaches the kernel within 0.2 s of the samples that call for it
SAMPLES_PER_S = 20.0         # replies a second from all reflectors together (each probed n / 20 s apart)
PROBE_TIMEOUT_S = 1.0
ACTIVE_REFLECTORS = 6
CHECK_EVERY_S = 1.0          # reflector rotation
EVENT_EVERY_S = 1.0          # decisions are published in batches at most this often
LOG_FILE = "autorate.jsonl"
LOG_MAX_BYTES = 512 * 1024   # then it becomes autorate.jsonl.1 (one older file kept): 1 MB at most
DIRECTIONS = {"download": 0, "upload": 1}
TCA_CAKE_BASE_RATE64 = 2
TCA_HTB_PARMS = 1
TC_LINKLAYER_ETHERNET = 1
PSCHED_SHIFT = 6             # the kernel's psched tick: 64 ns


def check_args(adaptive: dict, plan: Optional[Plan] = None) -> dict:
    """What the argument table cannot say: min <= base <= max, at least one direction, and a
    download direction only with ingress shaping in the plan. ArgError names the field."""
    path = "args.adaptive"
    if not any(d in adaptive for d in DIRECTIONS):
        raise ArgError(path, "needs upload, download or both ({min_mbps, base_mbps, max_mbps})")
    for direction in DIRECTIONS:
        rates = adaptive.get(direction)
        if rates and not rates["min_mbps"] <= rates["base_mbps"] <= rates["max_mbps"]:
            raise ArgError(f"{path}.{direction}", f"needs min_mbps <= base_mbps <= max_mbps, got {rates['min_mbps']}"
                                                  f" / {rates['base_mbps']} / {rates['max_mbps']}")
    if plan is not None and "download" in adaptive and len(plan.interfaces) < 2:
        raise ArgError(f"{path}.download", f"needs ingress shaping, and the plan has none: {plan.ingress['reason']}")
    return adaptive


def scaled(target: InterfacePlan, planned_bps: int, rate_bps: float) -> InterfacePlan:
    """The plan's tree with every class's rate and ceiling scaled from the planned shaped rate
    to `rate_bps` (the guarantees keep their shares; the leaves are left as they are)."""
    factor = rate_bps / planned_bps
    return replace(target, classes=[replace(c, rate_bps=max(8, int(c.rate_bps * factor)),
                                            ceil_bps=max(8, int(c.ceil_bps * factor))) for c in target.classes])


def htb_class_options(rate_bps: int, ceil_bps: int, prio: int) -> bytes:
    """TCA_OPTIONS of an htb class: TCA_HTB_PARMS (struct tc_htb_opt) alone. The rate tables
    pyroute2 computes (and tc sends) are left out: the kernel ignores them for a rate whose
    link layer is set, and computing them was most of a change's CPU time."""
    burst = apply._burst(ceil_bps)
    rate, ceil = rate_bps // 8, ceil_bps // 8           # bytes/s; under 2^32 up to 34 Gbit/s

    def ratespec(bytes_per_s: int) -> bytes:  # cell_log, linklayer, overhead, cell_align, mpu, rate
        return struct.pack("=BBHhHI", 0, TC_LINKLAYER_ETHERNET, 0, 0, 0, bytes_per_s)

    def ticks(size: int, bytes_per_s: int) -> int:  # the time to send `size` at the rate, in psched ticks
        return int(size * 1e9 / bytes_per_s) >> PSCHED_SHIFT
    opt = ratespec(rate) + ratespec(ceil) + struct.pack("=IIIII", ticks(burst, rate), ticks(burst, ceil), 0, 0, prio)
    return struct.pack("=HH", 4 + len(opt), TCA_HTB_PARMS) + opt


class HtbActuator:
    """Changes the classes of the plan's htb tree on one interface in place (tc class change)."""

    def __init__(self, target: InterfacePlan, planned_bps: int):
        self.target, self.planned_bps = target, planned_bps
        self.ifname = target.ifname

    def set(self, ipr, rate_bps: float) -> None:
        index = apply.ifindex_of(ipr, self.ifname)
        classes = scaled(self.target, self.planned_bps, rate_bps).classes
        apply.send_all(ipr, [apply.tc_message(apply.RTM_NEWTCLASS, 0, index, c.classid, c.parent, 0, "htb",
                                              htb_class_options(c.rate_bps, c.ceil_bps, c.prio)) for c in classes],
                       f"tc class change dev {self.ifname} htb: {len(classes)} classes scaled to "
                       f"{int(rate_bps)}bit")

    def restore(self, ipr) -> None:
        self.set(ipr, self.planned_bps)


class CakeActuator:
    """Changes a cake qdisc's bandwidth in place: a change message carrying only the base rate,
    so every other cake setting stays as it is."""

    def __init__(self, ifname: str, handle: int, parent: int, planned_bps: int):
        self.ifname, self.handle, self.parent, self.planned_bps = ifname, handle, parent, planned_bps

    def set(self, ipr, rate_bps: float) -> None:
        option = struct.pack("=HHQ", 12, TCA_CAKE_BASE_RATE64, int(rate_bps) // 8)  # cake counts bytes/s
        apply.send(ipr, apply.RTM_NEWQDISC, 0, apply.ifindex_of(ipr, self.ifname), self.handle, self.parent, 0,
                   "cake", option, f"tc qdisc change dev {self.ifname} cake bandwidth {int(rate_bps)}bit")

    def restore(self, ipr) -> None:
        self.set(ipr, self.planned_bps)


class DecisionLog:
    """One JSON line per decision in <state_dir>/autorate.jsonl; past LOG_MAX_BYTES it becomes
    autorate.jsonl.1 (replacing the older one)."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, LOG_FILE)

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            if os.path.getsize(self.path) + len(line) > LOG_MAX_BYTES:
                os.replace(self.path, self.path + ".1")
        except FileNotFoundError:
            pass
        with open(self.path, "a") as f:
            f.write(line)


class Autorate:
    """One adaptive shaper: started with the plan, stopped (fixed rates back) with it."""

    def __init__(self, adaptive: dict, actuators: dict, state_dir: str, ipr_factory: Callable,
                 event: Callable[[str, dict], None] = lambda _t, _p: None, candidates: Optional[list[str]] = None,
                 **params):
        self.mode = adaptive.get("mode", "active")
        self.directions = {d: adaptive[d] for d in DIRECTIONS if d in adaptive}
        # direction -> HtbActuator / CakeActuator; the link it shapes sends that direction's traffic
        self.actuators = actuators
        self.event = event
        self.ipr_factory = ipr_factory
        self.log = DecisionLog(state_dir)
        # bit/s per direction in the native order; a direction not adapted takes the other's (never ticked)
        fallback = next(iter(self.directions.values()))
        rates = {k: [(adaptive.get(d) or fallback)[k] * 1e6 for d in DIRECTIONS]
                 for k in ("min_mbps", "base_mbps", "max_mbps")}
        self.ctl = _core.Autorate(rates["min_mbps"], rates["base_mbps"], rates["max_mbps"], _core.monotonic(),
                                  **params)
        active = adaptive.get("active_reflectors", ACTIVE_REFLECTORS)
        self.pool = ReflectorPool(candidates or [], active, active / SAMPLES_PER_S, PROBE_TIMEOUT_S,
                                  self.ctl.sample, self.ctl.reset_reflector, _core.AUTORATE_REFLECTORS,
                                  clock=_core.monotonic)
        self.sampler = LinkSampler(history=10)
        self.lock = threading.Lock()                   # held while the kernel's rates change
        self.applied = {d: None for d in self.directions}  # rate in the kernel, None: the plan's
        self._stop = threading.Event()
        self._pending: list[dict] = []
        self._thread: Optional[threading.Thread] = None
        self.decisions = 0
        self.started: Optional[float] = None
        self.loop_cpu_s = 0.0                          # thread CPU time spent in ticks

    # ---- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.started = _core.monotonic()
        self.pool.start()
        self._record({"event": "started", "mode": self.mode, "reflectors": self.pool.addresses(),
                      "directions": self.directions})
        # The controller counts from base_mbps: the kernel must hold that rate too, not the plan's
        # fixed one, or an idle link would keep the plan's rate until a first decision.
        with self.ipr_factory() as ipr:
            for direction in self.directions:
                planned, base = self.actuators[direction].planned_bps, self.ctl.rate(DIRECTIONS[direction])
                if planned != base:
                    self._decided(ipr, direction, "start", planned, base, 0.0)
        self._thread = threading.Thread(target=self._run, name="rtk-qos-autorate", daemon=True)
        self._thread.start()

    def stop(self, restore: bool = True) -> None:
        """Stop deciding; with `restore`, put the plan's fixed rates back (a revert that rebuilds
        the tree anyway passes False)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.pool.stop()
        restored = []
        if restore and self.mode == "active":
            with self.lock, self.ipr_factory() as ipr:
                for direction, actuator in self.actuators.items():
                    if self.applied.get(direction) is not None:
                        actuator.restore(ipr)
                        restored.append(direction)
                self.applied = {d: None for d in self.directions}
        self._record({"event": "stopped", "restored": restored})
        self._flush_events()

    def status(self) -> dict:
        return {"mode": self.mode, "reflectors": self.pool.addresses(), "decisions": self.decisions,
                "rates_mbps": {d: round(self.ctl.rate(DIRECTIONS[d]) / 1e6, 3) for d in self.directions}}

    def current(self, ifname: str) -> Optional[float]:
        """The rate this controller holds in the kernel on `ifname`, None when it is the plan's."""
        for direction, actuator in self.actuators.items():
            if actuator.ifname == ifname:
                return self.applied.get(direction)
        return None

    # ---- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        due = _core.monotonic()
        next_check = due + CHECK_EVERY_S
        next_event = due + EVENT_EVERY_S
        with self.ipr_factory() as ipr:
            while not self._stop.is_set():
                cpu = time.thread_time()
                now = _core.monotonic()
                try:
                    self.tick(ipr, now)
                    if now >= next_check:
                        next_check += CHECK_EVERY_S
                        for rotation in self.pool.check(lambda slot: self.ctl.reflector(slot)[1]):
                            self._record({"event": "reflector_rotated", **rotation})
                except Exception:  # a kernel error or a bug in one tick must not end adaptive shaping
                    log.exception("adaptive shaping tick failed")
                self.loop_cpu_s += time.thread_time() - cpu
                if now >= next_event:
                    next_event += EVENT_EVERY_S
                    self._flush_events()
                due += TICK_S
                self._stop.wait(max(0.0, due - _core.monotonic()))

    def tick(self, ipr, now: float) -> None:
        rates = self.sampler.tick().rates
        for direction, rates_mbps in self.directions.items():
            d = DIRECTIONS[direction]
            link_rates = rates.get(self.actuators[direction].ifname)
            load_bps = link_rates[1] * 8 if link_rates else 0.0  # tx_bytes per second
            old = self.ctl.rate(d)
            reason = self.ctl.tick(d, load_bps, now)
            new = self.ctl.rate(d)
            if new != old:
                self._decided(ipr, direction, reason, old, new, load_bps)

    def _decided(self, ipr, direction: str, reason: str, old: float, new: float, load_bps: float) -> None:
        if self.mode == "active":
            with self.lock:
                self.actuators[direction].set(ipr, new)
                self.applied[direction] = new
        self.decisions += 1
        self._record({"event": "rate", "direction": direction, "reason": reason,
                      "old_mbps": round(old / 1e6, 3), "new_mbps": round(new / 1e6, 3),
                      "load_mbps": round(load_bps / 1e6, 3), "delayed": self.ctl.delayed,
                      "mean_delta_ms": round(self.ctl.mean_delta_ms, 2),
                      "reflectors": len(self.pool.addresses()), "applied": self.mode == "active"})

    def _record(self, record: dict) -> None:
        record = {"time_ms": time.time_ns() // 1_000_000, **record}
        self.log.write(record)
        self._pending.append(record)

    def _flush_events(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self.event("autorate", {"event_type": "autorate", "severity": "info", "mode": self.mode,
                                    "decisions": batch})


def controller(plan: Plan, state_dir: str, ipr_factory: Callable, event: Callable[[str, dict], None],
               gateway: Optional[str], **params) -> Autorate:
    """The Autorate of an applied plan: the htb trees' classes as actuators (egress: upload, the
    ifb: download), the gateway first among the reflectors, then the configured ones."""
    adaptive = plan.adaptive
    actuators = {}
    if "upload" in adaptive:
        actuators["upload"] = HtbActuator(plan.interfaces[0], plan.shaped_bps)
    if "download" in adaptive:
        actuators["download"] = HtbActuator(plan.interfaces[1], plan.shaped_bps)
    candidates = ([gateway] if gateway else []) + list(adaptive.get("reflectors", []))
    if not candidates:
        raise ArgError("args.adaptive.reflectors", "none given and there is no default gateway to probe")
    return Autorate(adaptive, actuators, state_dir, ipr_factory, event, candidates, **params)
