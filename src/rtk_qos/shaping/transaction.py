"""Change the router and never leave it worse: snapshot, apply, health check, confirm or revert.

1. Before any change, every touched interface's qdiscs, classes and filters are read and the
   snapshot is written to `<state_dir>/shaping.json` (temporary file, fsync, rename).
2. The plan is applied step by step; a kernel error at any step restores the snapshot and
   answers with the error and what was rolled back.
3. The tree is read back and compared with the plan, then watched for `HEALTH_WINDOW_S`: the
   root's counters must move when the link carries traffic, the shaper must not be starving
   its senders (the GSO trap: most packets dropped while sending under half its rate), and the
   default gateway and the broker must still answer. Anything else: revert at once.
4. The change is then *pending* until confirmed (`qos_shaping_confirm`) within the confirm
   timeout (default 120 s, netplan try's: long enough for a controller to see the result and
   measure, short enough that a router cut off by the change comes back within two minutes).
   Unconfirmed, it is reverted and a `shaping_reverted` event says why.
5. An agent killed while a change is pending finds the file at start and reverts it.

A revert deletes the roots now on the interface and re-creates the snapshot from the bytes the
kernel dumped, then reads back and checks it equals the snapshot.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Callable, Optional

from . import apply, tcstate
from . import plan as plan_module
from .autorate import HtbActuator, scaled as autorate_scaled
from .plan import Plan

log = logging.getLogger(__name__)
CONFIRM_TIMEOUT_S = 120.0
HEALTH_WINDOW_S = 3.0
# A leaf that drops while its class sends under half its ceiling is not full because of load:
# its packets do not fit (64 kB GSO super-packets against a small byte limit), senders starve.
COLLAPSE_RATE_FRACTION = 0.5
COLLAPSE_MIN_DROPS = 5
BUSY_LINK_BYTES = 20_000       # a link that sent this much in the window was carrying traffic
FILE = "shaping.json"


class ShapingError(Exception):
    """A change failed and was rolled back (or could not be): `details` says what happened."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    dirfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _ipr():
    from pyroute2 import IPRoute
    return IPRoute()


def read_record(state_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(state_dir, FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class Shaper:
    """The one writer of shaping state in a process: applies, confirms, reverts (thread-safe)."""

    def __init__(self, state_dir: str, event: Callable[[str, dict], None] = lambda _t, _p: None,
                 confirm_timeout_s: float = CONFIRM_TIMEOUT_S, ipr_factory=_ipr):
        self.path = os.path.join(state_dir, FILE)
        os.makedirs(state_dir, exist_ok=True)
        self.event = event
        self.confirm_timeout_s = confirm_timeout_s
        self.ipr_factory = ipr_factory
        self._lock = threading.RLock()
        self._timer: Optional[threading.Timer] = None
        self.autorate = None  # the applied plan's adaptive shaping (autorate.Autorate), when it has one
        self.autorate_params: dict = {}  # the controller's constants other than native/autorate.c's defaults

    # ---- status ------------------------------------------------------------------------------

    def record(self) -> Optional[dict]:
        with self._lock:
            try:
                with open(self.path) as f:
                    return json.load(f)
            except FileNotFoundError:
                return None

    def status(self) -> dict:
        record = self.record()
        if record is None:
            return {"state": "none"}
        out = {k: record.get(k) for k in ("id", "state", "op", "interfaces", "applied_ms", "confirm_by_ms",
                                          "reason", "summary")}
        running = self.autorate
        return {**out, "adaptive": running.status()} if running else out

    # ---- apply -------------------------------------------------------------------------------

    def apply(self, plan: Plan, op: str, health: Callable[[], Optional[str]] = lambda: None,
              interfaces_up: Optional[Callable] = None) -> dict:
        """Apply `plan`; return what changed and the pending transaction, or raise ShapingError."""
        with self._lock, self.ipr_factory() as ipr:
            self._stop_autorate(restore=True)  # the plans compared below have their fixed rates
            trees = {p.ifname: read_or_none(ipr, p) for p in plan.interfaces}
            ops = [op_ for p in plan.in_order() for op_ in apply.plan_ops(p, trees[p.ifname])]
            if not ops:
                previous = self.record()
                if plan.adaptive and previous and previous.get("state") in ("pending", "confirmed"):
                    previous["plan_data"] = plan_module.to_json(plan)
                    previous["plan"] = plan.summary()
                    _write(self.path, previous)
                    self._start_autorate(plan)
                unchanged = {"changed": False, "note": "the tree on the interface already matches the plan"}
                return {**unchanged, "adaptive": self.autorate.status()} if self.autorate else unchanged
            previous = self.record()
            if previous and previous.get("state") in ("pending", "confirmed") and set(previous["interfaces"]) & set(trees):
                # Keep the original snapshot: reverting this change returns to what was there before us.
                snapshot = previous["snapshot"]
            else:
                snapshot = {name: tree.as_json() if tree else {"ifname": name, "objects": [], "absent": True}
                             for name, tree in trees.items()}
            tx = {"id": uuid.uuid4().hex[:12], "state": "applying", "op": op, "interfaces": sorted(trees),
                  "snapshot": snapshot, "applied_ms": _now_ms(), "plan": plan.summary(),
                  "plan_data": plan_module.to_json(plan), "active": True, "summary": None, "reason": None}
            _write(self.path, tx)
            start = time.monotonic()
            done = []
            for step in ops:
                try:
                    apply.execute(ipr, step, apply.ifindex_of(ipr, step.ifname))
                    done.append(step.line())
                except apply.KernelError as exc:
                    rolled = self._restore(ipr, tx, f"kernel error: {exc}")
                    raise ShapingError(f"{exc}; the snapshot was restored", {
                        "error": exc.as_json(), "applied_before_error": done, "rolled_back": rolled}) from None
            apply_ms = round((time.monotonic() - start) * 1000, 1)
            readback = {p.ifname: tcstate.read(ipr, p.ifname) for p in plan.interfaces}
            mismatch = [p.ifname for p in plan.interfaces if not apply.matches(p, readback[p.ifname])]
            problem = f"read back differs from the plan on {', '.join(mismatch)}" if mismatch else None
            problem = problem or self._watch(ipr, plan, health)
            if problem:
                rolled = self._restore(ipr, tx, f"health check: {problem}")
                raise ShapingError(f"health check failed: {problem}; the snapshot was restored",
                                   {"rolled_back": rolled, "applied": done})
            tx.update(state="pending", confirm_by_ms=_now_ms() + int(self.confirm_timeout_s * 1000),
                      summary={"steps": len(done), "apply_ms": apply_ms})
            _write(self.path, tx)
            self._arm(tx["id"])
            adaptive = {}
            if plan.adaptive:
                self._start_autorate(plan)
                adaptive = {"adaptive": self.autorate.status()}
            return {**adaptive, "changed": True, "transaction": tx["id"], "state": "pending", "steps": done,
                    "apply_ms": apply_ms, "confirm_timeout_s": self.confirm_timeout_s,
                    "confirm_by_ms": tx["confirm_by_ms"],
                    "confirm_with": {"op": "qos_shaping_confirm", "args": {"transaction": tx["id"]}}}

    def _watch(self, ipr, plan: Plan, health: Callable[[], Optional[str]]) -> Optional[str]:
        """Counters over the health window, then the caller's reachability check."""
        main = plan.interfaces[0].ifname
        before = tcstate.read(ipr, main)
        link_before = _tx_bytes(ipr, main)
        time.sleep(HEALTH_WINDOW_S)
        after = tcstate.read(ipr, main)
        link_sent = _tx_bytes(ipr, main) - link_before
        root_before = _by_handle(before, "qdisc").get(0x10000)
        root_after = _by_handle(after, "qdisc").get(0x10000)
        if root_before and root_after and link_sent > BUSY_LINK_BYTES and root_after.bytes == root_before.bytes:
            return f"{main} sent {link_sent} bytes but none through the shaper"
        classes0, classes1 = _by_handle(before, "class"), _by_handle(after, "class")
        leaves0, leaves1 = _by_parent(before), _by_parent(after)
        for cls in plan.interfaces[0].classes[1:]:
            if cls.classid not in classes1 or cls.classid not in leaves1:
                continue
            drops = leaves1[cls.classid].drops - leaves0.get(cls.classid, tcstate.Counters()).drops
            rate = (classes1[cls.classid].bytes - classes0.get(cls.classid, tcstate.Counters()).bytes) * 8 \
                / HEALTH_WINDOW_S
            if drops >= COLLAPSE_MIN_DROPS and rate < COLLAPSE_RATE_FRACTION * cls.ceil_bps:
                return (f"throughput collapse in class {cls.name}: its queue dropped {drops} packets while it "
                        f"sent {rate / 1e6:.2f} Mbit/s of its {cls.ceil_bps / 1e6:.2f} (packets too large for "
                        "the queue)")
        return health()

    # ---- confirm and revert --------------------------------------------------------------------

    def _arm(self, tx_id: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.confirm_timeout_s, self._expire, args=(tx_id,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, tx_id: str) -> None:
        with self._lock:
            record = self.record()
            if record and record["id"] == tx_id and record["state"] == "pending":
                self.revert(f"not confirmed within {self.confirm_timeout_s:g} s")

    def confirm(self, tx_id: Optional[str]) -> dict:
        with self._lock:
            record = self.record()
            if record is None or record["state"] != "pending":
                raise LookupError("no shaping change is pending")
            if tx_id and tx_id != record["id"]:
                raise LookupError(f"the pending change is {record['id']}, not {tx_id}")
            if self._timer is not None:
                self._timer.cancel()
            record.update(state="confirmed", confirmed_ms=_now_ms())
            _write(self.path, record)
            return {"transaction": record["id"], "state": "confirmed"}

    def revert(self, reason: str) -> dict:
        """Restore the snapshot of the current transaction (pending, applying or confirmed)."""
        with self._lock, self.ipr_factory() as ipr:
            record = self.record()
            if record is None or record["state"] in ("reverted", "rolled_back"):
                raise LookupError("no shaping change to revert")
            if self._timer is not None:
                self._timer.cancel()
            return {"transaction": record["id"], "state": "reverted", "reason": reason,
                    "restored": self._restore(ipr, record, reason, state="reverted")}

    def _start_autorate(self, plan: Plan) -> None:
        from ..collectors.probe import gateway_address
        from .autorate import controller
        self.autorate = controller(plan, os.path.dirname(self.path), self.ipr_factory, self.event,
                                   gateway_address()[0], **self.autorate_params)
        self.autorate.start()

    def _stop_autorate(self, restore: bool) -> None:
        if self.autorate is not None:
            self.autorate.stop(restore)
            self.autorate = None

    def _restore(self, ipr, record: dict, reason: str, state: str = "rolled_back") -> dict:
        self._stop_autorate(restore=False)  # the snapshot replaces the tree whole
        out = {}
        # The uplink (and its redirect) first, then the links we created are deleted.
        for name, data in sorted(record["snapshot"].items(), key=lambda item: bool(item[1].get("absent"))):
            snapshot = tcstate.TcTree(name, 0, [tcstate.TcObject.from_json(o) for o in data["objects"]])
            if data.get("absent"):
                if apply.ifindex_of(ipr, name) is not None:
                    ipr.link("del", ifname=name)
                out[name] = {"exact": apply.ifindex_of(ipr, name) is None, "steps": [f"ip link del {name}"]}
                continue
            if apply.ifindex_of(ipr, name) is None:
                out[name] = {"exact": None, "note": "interface gone; nothing to restore"}
                continue
            steps = apply.restore_ops(snapshot, tcstate.read(ipr, name))
            index = apply.ifindex_of(ipr, name)
            for step in steps:
                apply.execute(ipr, step, index)
            exact = tcstate.read(ipr, name).signature() == snapshot.signature()
            out[name] = {"exact": exact, "steps": [s.line() for s in steps]}
        record.update(state=state, reason=reason, reverted_ms=_now_ms(), restored=out)
        _write(self.path, record)
        log.warning("shaping %s %s: %s", record["id"], state, reason)
        self.event("shaping_reverted", {"event_type": "shaping_reverted", "severity": "warning",
                                        "transaction": record["id"], "state": state, "reason": reason,
                                        "restored": out})
        return out

    def maintain(self, hours: dict, now=None) -> Optional[str]:
        """Keep the confirmed plan where it belongs: re-applied when the tree is gone (the link
        went down and up, or was re-created), removed outside its time window and back inside
        it. Returns what it did, or None. Called by the agent every few seconds."""
        with self._lock:
            record = self.record()
            if not record or record["state"] != "confirmed" or "plan_data" not in record:
                return None
            plan = plan_module.from_json(record["plan_data"])
            active = plan_module.in_window(plan.time_window, hours, now or datetime.now())
            if not active:
                self._stop_autorate(restore=False)
            with self.ipr_factory() as ipr, self._adaptive_rates() as rate_of:
                done = None
                for target in plan.in_order():
                    if rate_of(target.ifname) is not None:  # adaptive shaping moved its rates
                        target = autorate_scaled(target, plan.shaped_bps, rate_of(target.ifname))
                    index = apply.ifindex_of(ipr, target.ifname)
                    if index is None and not (active and target.create):
                        continue  # gone for now; put back when it returns
                    tree = tcstate.read(ipr, target.ifname) if index is not None else None
                    if active and plan.adaptive and self.autorate is None and tree is not None \
                            and not apply.matches(target, tree):
                        tree = _fixed_rates_in_place(ipr, target, plan.shaped_bps, tree)
                    if active and (tree is None or not apply.matches(target, tree)):
                        for step in apply.plan_ops(target, tree):
                            apply.execute(ipr, step, apply.ifindex_of(ipr, target.ifname))
                        done = "re-applied" if record.get("active", True) else f"applied: {plan.time_window} began"
                    elif not active and target.create:
                        ipr.link("del", ifname=target.ifname)
                        done = f"removed: outside {plan.time_window}"
                    elif not active and apply.matches(target, tree):
                        snapshot = tcstate.TcTree(target.ifname, 0, [tcstate.TcObject.from_json(o) for o in
                                                                     record["snapshot"][target.ifname]["objects"]])
                        for step in apply.restore_ops(snapshot, tree):
                            apply.execute(ipr, step, index)
                        done = f"removed: outside {plan.time_window}"
            if active and plan.adaptive and self.autorate is None:
                self._start_autorate(plan)  # after a restart, or back inside the time window
            if done:
                record.update(active=active, maintained_ms=_now_ms(), maintained=done)
                _write(self.path, record)
                log.info("shaping %s %s", record["id"], done)
                self.event("shaping_maintained", {"event_type": "shaping_maintained", "severity": "info",
                                                  "transaction": record["id"], "action": done})
            return done

    @contextlib.contextmanager
    def _adaptive_rates(self):
        """ifname -> the rate adaptive shaping holds there (None: the plan's), with its changes
        held off meanwhile."""
        running = self.autorate
        if running is None:
            yield lambda _ifname: None
            return
        with running.lock:
            yield running.current

    def recover(self) -> Optional[dict]:
        """At start: a change left applying or pending by a killed agent is reverted."""
        record = self.record()
        if record and record["state"] in ("applying", "pending"):
            return self.revert(f"agent restarted while the change was {record['state']}")
        return None


def _fixed_rates_in_place(ipr, target, shaped_bps: int, tree: tcstate.TcTree) -> tcstate.TcTree:
    """After a restart, the rates the previous process's adaptive shaping left in the tree are
    put back to the plan's by a rate-only change (its queues and counters kept); the tree read
    again is then the plan's unless something else changed it too."""
    try:
        HtbActuator(target, shaped_bps).restore(ipr)
    except apply.KernelError:  # not the plan's classes: rebuilt as any other tree
        return tree
    return tcstate.read(ipr, target.ifname)


def read_or_none(ipr, target) -> Optional[tcstate.TcTree]:
    """The interface's tree; None for a link the plan creates that does not exist yet."""
    if target.create and apply.ifindex_of(ipr, target.ifname) is None:
        return None
    return tcstate.read(ipr, target.ifname)


def _by_handle(tree: tcstate.TcTree, what: str) -> dict:
    return {key[1]: c for key, c in tree.counters.items() if key[0] == what}


def _by_parent(tree: tcstate.TcTree) -> dict:
    """Leaf qdisc counters by the class they hang from."""
    return {key[2]: c for key, c in tree.counters.items() if key[0] == "qdisc"}


def _tx_bytes(ipr, ifname: str) -> int:
    index = apply.ifindex_of(ipr, ifname)
    stats = ipr.get_links(index)[0].get_attr("IFLA_STATS64") if index is not None else None
    return stats["tx_bytes"] if stats else 0


_shapers: dict[str, Shaper] = {}
_shapers_lock = threading.Lock()


def shaper(state_dir: str, event: Callable[[str, dict], None] = lambda _t, _p: None,
           confirm_timeout_s: float = CONFIRM_TIMEOUT_S) -> Shaper:
    """The process's one Shaper for `state_dir` (its confirm timer outlives the command)."""
    with _shapers_lock:
        found = _shapers.get(state_dir)
        if found is None:
            found = _shapers[state_dir] = Shaper(state_dir, event, confirm_timeout_s)
        found.event, found.confirm_timeout_s = event, confirm_timeout_s
        return found
