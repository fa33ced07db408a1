"""What this kernel can shape with, found by trying (sqm-scripts' verify_qdisc): each qdisc,
classifier and action a plan may name is added to a throwaway ifb (a veth pair when ifb is
missing) and the device is deleted. Asking also loads the module where the kernel can.

The answer does not change while the kernel runs, so it is cached for the process.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from .apply import delete_qdisc, has_redirect
from .tcstate import TC_H_INGRESS, TC_H_ROOT, read

QDISCS = ("htb", "hfsc", "tbf", "cake", "fq_codel", "sfq", "pfifo", "bfifo", "ingress")
_cache: Optional[dict] = None
_lock = threading.Lock()


def _try(step) -> bool:
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        step()
        return True
    except (NetlinkError, OSError, ValueError, KeyError):
        return False


def _device(ipr) -> tuple[str, bool, Optional[str]]:
    """A throwaway device: (name, whether ifb exists, a second name to delete)."""
    name = f"rtkqcap{os.getpid() % 100000}"
    if _try(lambda: ipr.link("add", ifname=name, kind="ifb")):
        return name, True, None
    peer = name + "p"
    ipr.link("add", ifname=name, kind="veth", peer=peer)
    return name, False, peer


def _probe_qdisc(ipr, index: int, kind: str) -> bool:
    if kind == "ingress":
        ok = _try(lambda: ipr.tc("add", "ingress", index, 0xFFFF0000))
        if ok:
            delete_qdisc(ipr, index, 0xFFFF0000, TC_H_INGRESS)
        return ok
    kwargs = {"tbf": {"rate": "1mbit", "burst": 3200, "limit": 10000}, "pfifo": {"limit": 10},
              "bfifo": {"limit": 10000}, "hfsc": {"default": 1}}.get(kind, {})
    ok = _try(lambda: ipr.tc("add", kind, index, 0x10000, **kwargs))
    if ok:
        delete_qdisc(ipr, index, 0x10000, TC_H_ROOT)
    return ok


def probe(ipr) -> dict:
    """{"qdiscs": {kind: bool}, "classifiers": {...}, "actions": {...}, "links": {"ifb": bool}, "device": ...}."""
    name, has_ifb, peer = _device(ipr)
    try:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, state="up")
        qdiscs = {kind: _probe_qdisc(ipr, index, kind) for kind in QDISCS}
        classifiers, actions = {"u32": False, "matchall": False}, {"mirred": False}
        if qdiscs["htb"] and _try(lambda: ipr.tc("add", "htb", index, 0x10000, default=0x10)):
            _try(lambda: ipr.tc("add-class", "htb", index, 0x10010, parent=0x10000, rate="1mbit"))
            classifiers["u32"] = _try(lambda: ipr.tc("add-filter", "u32", index, parent=0x10000, prio=1,
                                                     protocol=0x0800, target=0x10010, keys=["0x0/0x0+0"]))
            classifiers["matchall"] = _try(lambda: ipr.tc("add-filter", "matchall", index, parent=0x10000,
                                                          prio=2, classid=0x10010))
            delete_qdisc(ipr, index, 0x10000, TC_H_ROOT)
        if qdiscs["ingress"] and classifiers["u32"]:
            ipr.tc("add", "ingress", index, 0xFFFF0000)
            added = _try(lambda: ipr.tc(
                "add-filter", "u32", index, parent=TC_H_INGRESS & 0xFFFF0000, prio=1, protocol=0x0003,
                target=0x1, keys=["0x0/0x0+0"],
                action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": index}))
            # Read back: the filter must carry the action, not merely exist.
            actions["mirred"] = added and has_redirect(read(ipr, name))
            delete_qdisc(ipr, index, 0xFFFF0000, TC_H_INGRESS)
        return {"qdiscs": qdiscs, "classifiers": classifiers, "actions": actions, "links": {"ifb": has_ifb},
                "probed_on": "ifb" if has_ifb else "veth"}
    finally:
        ipr.link("del", ifname=name)


def capabilities(ipr=None) -> dict:
    """The cached probe of this kernel (probed on first use)."""
    global _cache
    with _lock:
        if _cache is None:
            if ipr is None:
                from pyroute2 import IPRoute
                with IPRoute() as own:
                    _cache = probe(own)
            else:
                _cache = probe(ipr)
        return _cache


def cached() -> Optional[dict]:
    return _cache


def supported(caps: dict) -> list[str]:
    """Flat list for the agent's state: 'qdisc:htb', 'classifier:u32', 'action:mirred', 'link:ifb'."""
    out = []
    for group, prefix in (("qdiscs", "qdisc"), ("classifiers", "classifier"), ("actions", "action"),
                          ("links", "link")):
        out += [f"{prefix}:{name}" for name, present in caps[group].items() if present]
    return out
