"""Plan -> kernel through pyroute2 (IPRoute.tc), the diff against what is there, and the exact
restore of a snapshot (the dumped bytes sent back, whatever the qdisc kind).

The diff is by tree: a tree that already matches the plan (read back, compared by meaning:
rates, ceilings, priorities, limits, u32 matches) is left alone, so applying the same plan
twice changes nothing; otherwise the root is replaced whole. Every kernel error comes back as
a `KernelError` naming the step, the errno and the object.
"""
from __future__ import annotations

import errno as errno_names
import functools
import struct
from dataclasses import dataclass
from typing import Optional

from . import render
from .plan import Filter, HtbClass, InterfacePlan, Qdisc, protocol_info
from .tcstate import (TC_H_INGRESS, TC_H_ROOT, TcObject, TcTree, decode_options, fmt_handle, nla_iter,
                      u32_selector)

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER = 36, 37, 40, 44
NEW_TYPE = {"qdisc": RTM_NEWQDISC, "class": RTM_NEWTCLASS, "filter": RTM_NEWTFILTER}
ETH_P_ALL = 0x0003
TCA_U32_ACT = 7


class KernelError(Exception):
    """The kernel refused a step: which step, the errno by name, and the message."""

    def __init__(self, step: str, code: int):
        self.step = step
        self.errno = code
        self.name = errno_names.errorcode.get(code, str(code))
        super().__init__(f"{step}: {self.name} ({code})")

    def as_json(self) -> dict:
        return {"step": self.step, "errno": self.errno, "error": self.name}


@dataclass(frozen=True)
class Op:
    """One change: `action` is add or delete; `obj` a plan object, or a TcObject to restore."""
    action: str
    what: str
    obj: object
    ifname: str

    def line(self) -> str:
        return render.op_line(self)


def _call(step: str, fn, *args, **kwargs):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return fn(*args, **kwargs)
    except NetlinkError as exc:
        raise KernelError(step, exc.code) from None


# ---- comparing a plan with a tree by meaning -------------------------------------------------------

def _qdisc_meaning(q: Qdisc) -> dict:
    if q.kind == "htb":
        return {"default": f"{q.param('default'):x}"}
    if q.kind in ("bfifo", "pfifo"):
        return {"limit": q.param("limit")}
    if q.kind == "tbf":
        return {"rate_bps": q.param("rate_bps") // 8 * 8, "limit": q.param("limit")}
    return {}


def _filter_meaning(f: Filter) -> dict:
    return {"bytes": tuple(sorted((off, (value, mask)) for off, value, mask in f.match)), "classid": f.classid}


def plan_meaning(plan: InterfacePlan) -> set:
    out = set()
    for q in plan.qdiscs:
        out.add(("qdisc", q.handle, q.parent, q.kind, repr(sorted(_qdisc_meaning(q).items()))))
    for c in plan.classes:
        # The kernel reports a class attached to the qdisc itself as a child of root.
        parent = TC_H_ROOT if c.parent & 0xFFFF == 0 else c.parent
        out.add(("class", c.classid, parent, "htb", repr((c.rate_bps // 8 * 8, c.ceil_bps // 8 * 8, c.prio))))
    for f in plan.filters:
        out.add(("filter", f.parent, protocol_info(f.prio), "u32", repr(sorted(_filter_meaning(f).items()))))
    if plan.redirect_to:
        out.add(("redirect",))
    return out


def has_redirect(tree: TcTree) -> bool:
    """An ingress qdisc with a u32 filter carrying an action: arriving packets are redirected."""
    return any(o.what == "filter" and o.parent == TC_H_INGRESS & 0xFFFF0000 and o.kind == "u32"
               and any(attr == TCA_U32_ACT for attr, _ in nla_iter(o.options)) for o in tree.objects)


def tree_meaning(tree: TcTree, ingress: bool = False) -> set:
    """The egress tree's meaning, and with `ingress` whether arriving packets are redirected
    (a plan without a redirect leaves the ingress side as it is)."""
    out = {("redirect",)} if ingress and has_redirect(tree) else set()
    for o in tree.configured():
        if _is_ingress(o):
            continue
        decoded = decode_options(o.what, o.kind, o.options)
        if o.what == "qdisc":
            keys = {"htb": ("default",), "bfifo": ("limit",), "pfifo": ("limit",), "tbf": ("rate_bps", "limit")}
            meaning = {k: decoded.get(k) for k in keys.get(o.kind, ())}
            out.add(("qdisc", o.handle, o.parent, o.kind, repr(sorted(meaning.items()))))
        elif o.what == "class":
            out.add(("class", o.handle, o.parent, o.kind,
                     repr((decoded.get("rate_bps"), decoded.get("ceil_bps"), decoded.get("prio")))))
        elif o.kind == "u32":
            sel = u32_selector(o.options)
            if sel["divisor"] is not None:
                continue  # the hash table u32 makes for itself
            meaning = {"bytes": tuple(sorted(sel["bytes"].items())), "classid": sel["classid"]}
            out.add(("filter", o.parent, o.info, "u32", repr(sorted(meaning.items()))))
        else:
            out.add(("filter", o.parent, o.info, o.kind, o.options.hex()))
    return out


def matches(plan: InterfacePlan, tree: TcTree) -> bool:
    return plan_meaning(plan) == tree_meaning(tree, ingress=plan.redirect_to is not None)


# ---- the diff ---------------------------------------------------------------------------------------

def plan_ops(plan: InterfacePlan, tree: Optional[TcTree]) -> list[Op]:
    """What turns `tree` (None: the link does not exist yet) into `plan`: nothing when it
    already matches, else replace the root; the ingress redirect, when planned, goes in last
    (arriving packets reach the ifb only once its tree is built)."""
    ops = []
    if tree is None:
        ops.append(Op("add", "link", plan.create, plan.ifname))
        tree = TcTree(plan.ifname, 0)
    if plan_meaning(plan) - {("redirect",)} != tree_meaning(tree):
        root = tree.root
        if root is not None and root.handle != 0:
            ops.append(Op("delete", "qdisc", root, plan.ifname))
        ops += [Op("add", "qdisc", plan.qdiscs[0], plan.ifname)]
        ops += [Op("add", "class", c, plan.ifname) for c in plan.classes]
        ops += [Op("add", "qdisc", q, plan.ifname) for q in plan.qdiscs[1:]]
        ops += [Op("add", "filter", f, plan.ifname) for f in plan.filters]
    if plan.redirect_to and not has_redirect(tree):
        ops += [Op("delete", "qdisc", o, plan.ifname) for o in tree.configured()
                if o.what == "qdisc" and o.parent == TC_H_INGRESS]  # someone's ingress: restored on revert
        ops.append(Op("add", "redirect", plan.redirect_to, plan.ifname))
    return ops


def _is_ingress(o: TcObject) -> bool:
    return o.parent == TC_H_INGRESS or (o.what == "filter" and o.parent == TC_H_INGRESS & 0xFFFF0000)


def restore_ops(snapshot: TcTree, tree: TcTree) -> list[Op]:
    """What turns `tree` back into `snapshot`, per side (egress, ingress) that differs: drop the
    configured top qdisc now there (its classes, leaves and filters go with it), then re-create
    the snapshot's objects, each after its parent. A side that did not change is not touched; a
    snapshot whose root was the kernel's default needs only the delete."""
    ops = []
    for ingress in (False, True):
        then = [o for o in snapshot.objects if _is_ingress(o) == ingress]
        now = [o for o in tree.objects if _is_ingress(o) == ingress]
        if sorted((o.key, o.kind, o.options) for o in then) == sorted((o.key, o.kind, o.options) for o in now):
            continue
        ops += [Op("delete", "qdisc", o, tree.ifname) for o in now
                if o.what == "qdisc" and o.handle != 0 and o.parent in (TC_H_ROOT, TC_H_INGRESS)]
        ops += _create_in_order([o for o in then if not (o.what == "qdisc" and o.handle == 0)], snapshot, tree.ifname)
    return ops


def _create_in_order(objects: list[TcObject], snapshot: TcTree, ifname: str) -> list[Op]:
    pending = [o for o in objects
               if not (o.what == "filter" and o.kind == "u32" and u32_selector(o.options)["divisor"] is not None
                       and (o.handle & 0x000FFFFF) == 0 and _root_hash_table(o, snapshot))]
    present = {TC_H_ROOT, TC_H_INGRESS}
    ops = []
    while pending:
        ready = [o for o in pending if _parent_of(o) in present]
        if not ready:
            raise ValueError(f"snapshot of {snapshot.ifname}: objects whose parent is missing: "
                             + ", ".join(f"{o.what} {fmt_handle(o.handle)}" for o in pending))
        for o in ready:
            pending.remove(o)
            ops.append(Op("add", o.what, o, ifname))
            if o.what != "filter":
                present.add(o.handle)
    return ops


def _parent_of(o: TcObject) -> int:
    if o.what == "class" and o.parent == TC_H_ROOT:
        return o.handle & 0xFFFF0000  # a top class: its qdisc
    return o.parent


def _root_hash_table(o: TcObject, snapshot: TcTree) -> bool:
    """u32 makes one hash table per priority by itself (800:, 801:, ...): not re-created by hand."""
    same_prio = [f for f in snapshot.of("filter") if f.parent == o.parent and f.info == o.info and f is not o]
    return all(u32_selector(f.options)["hash"] in (None, o.handle) for f in same_prio)


# ---- executing -------------------------------------------------------------------------------------

def execute(ipr, op: Op, ifindex: Optional[int]) -> None:
    step = op.line()
    if op.what == "link":
        _call(step, ipr.link, "add", ifname=op.ifname, kind=op.obj)
        _call(step, ipr.link, "set", index=ifindex_of(ipr, op.ifname), state="up")
        return
    if op.what == "redirect":
        _call(step, ipr.tc, "add", "ingress", ifindex, 0xFFFF0000)
        _call(step, ipr.tc, "add-filter", "u32", ifindex, parent=0xFFFF0000, prio=1, protocol=ETH_P_ALL,
              target=0x10001, keys=["0x0/0x0+0"],
              action={"kind": "mirred", "direction": "egress", "action": "redirect",
                      "ifindex": ifindex_of(ipr, op.obj)})
        return
    if op.action == "delete":
        delete_qdisc(ipr, ifindex, op.obj.handle, op.obj.parent, step)
        return
    if isinstance(op.obj, TcObject):
        o = op.obj
        send(ipr, NEW_TYPE[o.what], NLM_F_CREATE | NLM_F_EXCL, ifindex, o.handle, o.parent, o.info, o.kind,
             o.options, step)
    elif isinstance(op.obj, Qdisc) and op.obj.kind == "bfifo":
        # pyroute2 has no bfifo plugin: its tc() would drop the parent and the limit.
        q = op.obj
        send(ipr, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex, q.handle, q.parent, 0, "bfifo",
             struct.pack("=I", q.param("limit")), step)
    elif isinstance(op.obj, Qdisc):
        _call(step, ipr.tc, "add", op.obj.kind, ifindex, op.obj.handle, **_qdisc_kwargs(op.obj))
    elif isinstance(op.obj, HtbClass):
        c = op.obj
        _call(step, ipr.tc, "add-class", "htb", ifindex, c.classid, parent=c.parent, rate=f"{c.rate_bps}bit",
              ceil=f"{c.ceil_bps}bit", prio=c.prio, burst=_burst(c.ceil_bps), cburst=_burst(c.ceil_bps))
    elif isinstance(op.obj, Filter):
        f = op.obj
        _call(step, ipr.tc, "add-filter", "u32", ifindex, parent=f.parent, prio=f.prio, protocol=0x0800,
              target=f.classid, keys=f.keys())


def _burst(rate_bps: int) -> int:
    # HTB's burst: what the class may send at once; 1 ms at its rate, never under two frames
    # (tc's default is one timer tick plus an MTU).
    return max(3200, rate_bps // 8000)


def _qdisc_kwargs(q: Qdisc) -> dict:
    parent = {} if q.parent == TC_H_ROOT else {"parent": q.parent}
    if q.kind == "htb":
        return {**parent, "default": q.param("default"), "r2q": q.param("r2q")}
    if q.kind == "pfifo":
        return {**parent, "limit": q.param("limit")}
    if q.kind == "tbf":
        return {**parent, "rate": f"{q.param('rate_bps')}bit", "burst": q.param("burst"), "limit": q.param("limit")}
    if q.kind == "fq_codel":
        return {**parent, "fqc_target": f"{q.param('target_us')}us", "fqc_limit": q.param("limit")}
    if q.kind == "sfq":
        return {**parent, "limit": q.param("limit")}
    return parent


def send(ipr, msg_type: int, flags: int, ifindex: int, handle: int, parent: int, info: int = 0,
         kind: Optional[str] = None, options: bytes = b"", step: str = "") -> None:
    """One tc message with the options as raw bytes: re-creates a snapshotted object from what
    the kernel dumped, or deletes by handle whatever its kind (pyroute2's tc() wants the kind's
    parameters even to delete)."""
    send_all(ipr, [tc_message(msg_type, flags, ifindex, handle, parent, info, kind, options)], step)


def send_all(ipr, messages: list, step: str) -> None:
    """tc messages (tc_message()) in one batch: one system call, each acknowledged."""
    # The batch call, not nlm_request: the latter fails on a NetNS socket in pyroute2 0.9.
    _call(step, ipr.nlm_request_batch, messages)


@functools.lru_cache(maxsize=1)
def _raw_tc_class():
    from pyroute2.netlink import nlmsg
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    class rawtc(nlmsg):
        fields = tcmsg.fields
        nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"), ("TCA_OPTIONS", "cdata"))
    return rawtc


def tc_message(msg_type: int, flags: int, ifindex: int, handle: int, parent: int, info: int = 0,
               kind: Optional[str] = None, options: bytes = b""):
    msg = _raw_tc_class()()
    msg["family"] = 0
    msg["index"] = ifindex
    msg["handle"] = handle
    msg["parent"] = parent
    msg["info"] = info
    msg["attrs"] = ([["TCA_KIND", kind]] if kind else []) + ([["TCA_OPTIONS", options]] if options else [])
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return msg


def delete_qdisc(ipr, ifindex: int, handle: int, parent: int, step: str = "") -> None:
    send(ipr, RTM_DELQDISC, 0, ifindex, handle, parent, step=step or f"delete qdisc {fmt_handle(handle)}")


def ifindex_of(ipr, ifname: str) -> Optional[int]:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None
