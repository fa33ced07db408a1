"""Plans and changes as the equivalent `tc` command lines: for the dry run, the logs and people.

Nothing here runs them: the agent applies through pyroute2 (apply.py); these lines say what
that does in the notation everyone reads.
"""
from __future__ import annotations

from .plan import Filter, HtbClass, InterfacePlan, Qdisc
from .tcstate import TC_H_INGRESS, TC_H_ROOT, TcObject, decode_options, fmt_handle


def _parent(parent: int) -> str:
    if parent == TC_H_ROOT:
        return "root"
    if parent == TC_H_INGRESS:
        return "ingress"
    return f"parent {fmt_handle(parent)}"


def qdisc_line(ifname: str, q: Qdisc, verb: str = "add") -> str:
    head = f"tc qdisc {verb} dev {ifname} {_parent(q.parent)} handle {fmt_handle(q.handle)} {q.kind}"
    if q.kind == "htb":
        return f"{head} default {q.param('default'):x} r2q {q.param('r2q')}"
    if q.kind in ("bfifo", "pfifo", "sfq"):
        return f"{head} limit {q.param('limit')}"
    if q.kind == "tbf":
        return f"{head} rate {q.param('rate_bps')}bit burst {q.param('burst')} limit {q.param('limit')}"
    if q.kind == "fq_codel":
        return f"{head} target {q.param('target_us')}us limit {q.param('limit')}"
    if q.kind == "cake":
        return f"{head} unlimited besteffort"
    return head


def class_line(ifname: str, c: HtbClass) -> str:
    return (f"tc class add dev {ifname} parent {fmt_handle(c.parent)} classid {fmt_handle(c.classid)} htb "
            f"rate {c.rate_bps}bit ceil {c.ceil_bps}bit prio {c.prio}")


def filter_line(ifname: str, f: Filter) -> str:
    matches = " ".join(f"match u32 0x{v:08x} 0x{m:08x} at {off}" for off, v, m in f.words())
    return (f"tc filter add dev {ifname} parent {fmt_handle(f.parent)} protocol ip prio {f.prio} u32 {matches} "
            f"flowid {fmt_handle(f.classid)}  # {f.why}")


def plan_lines(plan: InterfacePlan) -> list[str]:
    create = [f"ip link add {plan.ifname} type {plan.create}", f"ip link set {plan.ifname} up"] if plan.create else []
    redirect = [f"tc qdisc add dev {plan.ifname} ingress",
                f"tc filter add dev {plan.ifname} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred "
                f"egress redirect dev {plan.redirect_to}"] if plan.redirect_to else []
    return (create + [qdisc_line(plan.ifname, plan.qdiscs[0])] + [class_line(plan.ifname, c) for c in plan.classes]
            + [qdisc_line(plan.ifname, q) for q in plan.qdiscs[1:]]
            + [filter_line(plan.ifname, f) for f in plan.filters] + redirect)


def object_line(ifname: str, o: TcObject, verb: str) -> str:
    params = " ".join(f"{k} {v}" for k, v in decode_options(o.what, o.kind, o.options).items()
                      if not isinstance(v, dict))
    if o.what == "filter":
        return (f"tc filter {verb} dev {ifname} parent {fmt_handle(o.parent)} prio {o.prio} handle "
                f"{o.handle:x} {o.kind} {params}".rstrip())
    name = "classid" if o.what == "class" else "handle"
    return f"tc {o.what} {verb} dev {ifname} {_parent(o.parent)} {name} {fmt_handle(o.handle)} {o.kind} {params}".rstrip()


def op_line(op) -> str:
    obj = op.obj
    if op.what == "link":
        return f"ip link add {op.ifname} type {obj} && ip link set {op.ifname} up"
    if op.what == "redirect":
        return (f"tc qdisc add dev {op.ifname} ingress && tc filter add dev {op.ifname} parent ffff: protocol all "
                f"prio 1 u32 match u32 0 0 action mirred egress redirect dev {obj}")
    if op.action == "delete":
        return f"tc qdisc del dev {op.ifname} {_parent(obj.parent)}" + (
            f" handle {fmt_handle(obj.handle)}" if obj.handle else "")
    if isinstance(obj, TcObject):
        return object_line(op.ifname, obj, "add")
    if isinstance(obj, Qdisc):
        return qdisc_line(op.ifname, obj)
    if isinstance(obj, HtbClass):
        return class_line(op.ifname, obj)
    return filter_line(op.ifname, obj)
