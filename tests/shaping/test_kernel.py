"""Capability probe, tc state, apply and the transaction against the real kernel, in a namespace."""
import errno
import time

import pytest

from rtk_qos.shaping import apply, capabilities, plan, render, tcstate
from rtk_qos.shaping.transaction import ShapingError, Shaper, read_record

HERE_KERNEL = {"qdiscs": {"htb": True, "tbf": True, "pfifo": True, "bfifo": True, "ingress": True},
               "classifiers": {"u32": True}, "actions": {}, "links": {"ifb": True}}


def tc(space, line: str):
    return space.run(*line.split("#")[0].split())


def test_capability_probe_agrees_with_the_tc_binary_and_leaves_nothing(ns):
    caps = capabilities.probe(ns.ipr)
    for kind in ("htb", "tbf", "pfifo", "bfifo", "fq_codel", "cake", "sfq"):
        params = ["rate", "1mbit", "burst", "3200", "limit", "10000"] if kind == "tbf" else []
        reference = ns.run("tc", "qdisc", "add", "dev", "p1", "root", "handle", "1:", kind, *params, check=False)
        ns.run("tc", "qdisc", "del", "dev", "p1", "root", check=False)
        assert caps["qdiscs"][kind] == (reference.returncode == 0), kind
    assert caps["classifiers"]["u32"] and caps["links"]["ifb"]
    links = ns.run("ip", "-o", "link").stdout
    assert "rtkqcap" not in links
    assert "qdisc:htb" in capabilities.supported(caps)


def test_a_tree_built_with_tc_reads_back_decoded(ns):
    for line in ("tc qdisc add dev v0 root handle 1: htb default 30",
                 "tc class add dev v0 parent 1: classid 1:1 htb rate 8mbit",
                 "tc class add dev v0 parent 1:1 classid 1:30 htb rate 1mbit ceil 8mbit prio 2",
                 "tc qdisc add dev v0 parent 1:30 handle 30: bfifo limit 30000",
                 "tc filter add dev v0 parent 1: protocol ip prio 2 u32 match ip dport 5060 0xffff "
                 "match ip protocol 17 0xff flowid 1:30"):
        tc(ns, line)
    tree = tcstate.read(ns.ipr, "v0")
    described = {(d["type"], d.get("handle")): d for d in tree.describe() if d["type"] != "filter"}
    assert described[("qdisc", "1:")]["default"] == "30"
    assert described[("class", "1:30")] | {} == {"type": "class", "kind": "htb", "parent": "1:1", "handle": "1:30",
                                                  "rate_bps": 1_000_000, "ceil_bps": 8_000_000, "prio": 2,
                                                  "quantum": 12500}
    assert described[("qdisc", "30:")]["limit"] == 30000
    keyed = [d for d in tree.describe() if d["type"] == "filter" and "match" in d]
    assert keyed == [{"type": "filter", "kind": "u32", "parent": "1:", "prio": 2,
                      "match": {"9": "11/ff", "22": "13/ff", "23": "c4/ff"}, "flowid": "1:30"}]


def test_pyroute2_apply_builds_the_tree_the_rendered_tc_lines_build(ns):
    p = plan.build_auto("v0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], ["voip"])
    index = apply.ifindex_of(ns.ipr, "v0")
    for step in apply.plan_ops(p.interfaces[0], tcstate.read(ns.ipr, "v0")):
        apply.execute(ns.ipr, step, index)
    for line in render.plan_lines(plan.build_auto("p0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"],
                                                  ["voip"]).interfaces[0]):
        tc(ns, line)
    ours, theirs = tcstate.read(ns.ipr, "v0"), tcstate.read(ns.ipr, "p0")
    assert apply.matches(p.interfaces[0], ours)
    assert apply.tree_meaning(ours) == apply.tree_meaning(theirs)
    assert apply.plan_ops(p.interfaces[0], ours) == []  # nothing left to change


def _existing_tree(space):
    """Someone else's tree: htb with a tbf leaf, u32 filters, and an ingress qdisc."""
    for line in ("tc qdisc add dev v0 root handle 5: htb default 2",
                 "tc class add dev v0 parent 5: classid 5:1 htb rate 5mbit",
                 "tc class add dev v0 parent 5:1 classid 5:2 htb rate 3mbit ceil 5mbit",
                 "tc qdisc add dev v0 parent 5:2 handle 52: tbf rate 3mbit burst 4000 limit 20000",
                 "tc filter add dev v0 parent 5: protocol ip prio 4 u32 match ip protocol 6 0xff flowid 5:2",
                 "tc filter add dev v0 parent 5: protocol ip prio 4 u32 match ip tos 0xb8 0xfc flowid 5:1",
                 "tc qdisc add dev v0 ingress",
                 "tc qdisc add dev other root handle 7: bfifo limit 12345"):
        tc(space, line)


def _shaper(space, tmp_path, **kwargs):
    from pyroute2 import NetNS
    events = []
    shaper = Shaper(str(tmp_path), lambda kind, payload: events.append((kind, payload)),
                    ipr_factory=lambda: NetNS(space.name), **kwargs)
    return shaper, events


def test_apply_then_revert_restores_the_snapshot_exactly_and_touches_nothing_else(ns, tmp_path):
    _existing_tree(ns)
    before, other = tcstate.read(ns.ipr, "v0"), tcstate.read(ns.ipr, "other")
    shaper, events = _shaper(ns, tmp_path)
    p = plan.build_auto("v0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], [])
    result = shaper.apply(p, "test")
    assert result["changed"] and result["state"] == "pending"
    assert read_record(str(tmp_path))["snapshot"]["v0"] == before.as_json()
    assert apply.matches(p.interfaces[0], tcstate.read(ns.ipr, "v0"))
    assert shaper.apply(p, "test") == {"changed": False,
                                       "note": "the tree on the interface already matches the plan"}
    reverted = shaper.revert("test over")
    assert reverted["restored"]["v0"]["exact"] is True
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert tcstate.read(ns.ipr, "other").signature() == other.signature()
    assert read_record(str(tmp_path))["state"] == "reverted" and events[-1][0] == "shaping_reverted"


def test_a_kernel_error_midway_rolls_back_with_a_typed_error(ns, tmp_path):
    _existing_tree(ns)
    before = tcstate.read(ns.ipr, "v0")
    shaper, _ = _shaper(ns, tmp_path)
    # A plan for a kernel with fq_codel: this one has none, so the first leaf fails after the
    # root and the classes went in.
    wrong = {**HERE_KERNEL, "qdiscs": {**HERE_KERNEL["qdiscs"], "fq_codel": True}}
    with pytest.raises(ShapingError) as failed:
        shaper.apply(plan.build_auto("v0", 8_000_000, "test", wrong, ["minimize_latency"], []), "test")
    details = failed.value.details
    assert details["error"]["errno"] == errno.ENOENT and details["error"]["error"] == "ENOENT"
    assert "fq_codel" in details["error"]["step"]
    # The old root out, the new root, its class and five classes in; then the first leaf failed.
    assert len(details["applied_before_error"]) == 8
    assert details["applied_before_error"][0] == "tc qdisc del dev v0 root handle 5:"
    assert not any("ingress" in step for step in details["rolled_back"]["v0"]["steps"])  # left alone
    assert details["rolled_back"]["v0"]["exact"] is True
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert read_record(str(tmp_path))["state"] == "rolled_back"


def test_unconfirmed_change_reverts_by_itself_and_a_confirmed_one_stays(ns, tmp_path):
    before = tcstate.read(ns.ipr, "v0")
    shaper, events = _shaper(ns, tmp_path, confirm_timeout_s=1.5)
    p = plan.build_auto("v0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], [])
    shaper.apply(p, "test")
    deadline = time.monotonic() + 10
    while read_record(str(tmp_path))["state"] != "reverted" and time.monotonic() < deadline:
        time.sleep(0.1)
    record = read_record(str(tmp_path))
    assert record["state"] == "reverted" and record["reason"] == "not confirmed within 1.5 s"
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert events and events[-1][1]["reason"] == "not confirmed within 1.5 s"
    tx = shaper.apply(p, "test")["transaction"]
    with pytest.raises(LookupError):
        shaper.confirm("another")
    assert shaper.confirm(tx) == {"transaction": tx, "state": "confirmed"}
    time.sleep(2.0)
    assert read_record(str(tmp_path))["state"] == "confirmed"
    assert apply.matches(p.interfaces[0], tcstate.read(ns.ipr, "v0"))


def test_a_pending_change_found_at_start_is_reverted(ns, tmp_path):
    _existing_tree(ns)
    before = tcstate.read(ns.ipr, "v0")
    first, _ = _shaper(ns, tmp_path)
    first.apply(plan.build_auto("v0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], []), "test")
    first._timer.cancel()  # as if the process had been killed
    restarted, events = _shaper(ns, tmp_path)
    result = restarted.recover()
    assert result["restored"]["v0"]["exact"] is True
    assert "agent restarted while the change was pending" == events[-1][1]["reason"]
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert restarted.recover() is None


@pytest.mark.parametrize("leaf", ["bfifo", "pfifo"])
def test_fifo_leaves_get_their_parent_and_limit(ns, leaf):
    """A kernel with only fifos: the plan's leaves land under their classes with their limits."""
    only = {**HERE_KERNEL, "qdiscs": {"htb": True, leaf: True}}
    p = plan.build_auto("v0", 8_000_000, "test", only, ["minimize_latency"], [])
    index = apply.ifindex_of(ns.ipr, "v0")
    for step in apply.plan_ops(p.interfaces[0], tcstate.read(ns.ipr, "v0")):
        apply.execute(ns.ipr, step, index)
    tree = tcstate.read(ns.ipr, "v0")
    leaves = {o.parent: tcstate.decode_options(o.what, o.kind, o.options)["limit"] for o in tree.of("qdisc")
              if o.kind == leaf}
    assert leaves == {q.parent: q.param("limit") for q in p.interfaces[0].qdiscs[1:]}
    assert apply.matches(p.interfaces[0], tree)


def test_a_confirmed_plan_comes_back_after_a_link_flap_and_follows_its_time_window(ns, tmp_path):
    from datetime import datetime
    before = tcstate.read(ns.ipr, "v0")
    shaper, events = _shaper(ns, tmp_path)
    p = plan.build_auto("v0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], [], "peak_hours")
    monday_evening, monday_noon = datetime(2026, 11, 23, 20, 0), datetime(2026, 11, 23, 12, 0)
    shaper.confirm(shaper.apply(p, "test")["transaction"])
    assert shaper.maintain({}, monday_evening) is None  # in place, in its window: nothing to do
    # A link that goes away and comes back loses its qdiscs, as a real reconnect does.
    ns.run("ip", "link", "del", "v0")
    ns.run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "p0")
    ns.run("ip", "link", "set", "v0", "up")
    assert tcstate.read(ns.ipr, "v0").configured() == []
    assert shaper.maintain({}, monday_evening) == "re-applied"
    assert apply.matches(p.interfaces[0], tcstate.read(ns.ipr, "v0"))
    assert shaper.maintain({}, monday_noon) == "removed: outside peak_hours"
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert shaper.maintain({"peak_hours": "11:00-13:00"}, monday_noon) == "applied: peak_hours began"
    assert events[-1][1]["action"] == "applied: peak_hours began"


def test_time_windows_in_local_time():
    from datetime import datetime
    saturday_ten, monday_ten = datetime(2026, 11, 28, 10, 0), datetime(2026, 11, 30, 10, 0)
    assert plan.in_window("business_hours", {}, monday_ten) and not plan.in_window("business_hours", {}, saturday_ten)
    assert plan.in_window("off_peak", {}, datetime(2026, 11, 28, 2, 30))  # wraps past midnight
    assert not plan.in_window("off_peak", {}, datetime(2026, 11, 28, 12, 0))
    assert plan.in_window("always", {}, saturday_ten)


def test_ingress_through_an_ifb_where_the_kernel_has_mirred_and_its_exact_revert(ns, tmp_path):
    caps = capabilities.probe(ns.ipr)
    assert caps["actions"]["mirred"]  # this kernel has tc actions: ingress is planned, not refused
    ns.run("tc", "qdisc", "add", "dev", "v0", "ingress")  # someone's ingress qdisc, to be put back
    before = tcstate.read(ns.ipr, "v0")
    shaper, _ = _shaper(ns, tmp_path)
    p = plan.build_auto("v0", 8_000_000, "test", caps, ["minimize_latency"], ["voip"])
    assert p.ingress["shaped"] and p.ingress["ifb"] == "ifb4v0"
    egress, inbound = p.interfaces
    assert egress.redirect_to == "ifb4v0" and inbound.create == "ifb"
    # On the ifb the remote end's port is the source: voip's SIP port matched as sport there.
    sip = [f for f in inbound.filters if "5060-5061" in f.why]
    assert sip and all(20 in {off for off, _v, _m in f.match} for f in sip)
    result = shaper.apply(p, "test")
    assert result["steps"][0] == "ip link add ifb4v0 type ifb && ip link set ifb4v0 up"
    assert result["steps"][-1].endswith("action mirred egress redirect dev ifb4v0")
    assert apply.matches(inbound, tcstate.read(ns.ipr, "ifb4v0"))
    assert apply.has_redirect(tcstate.read(ns.ipr, "v0"))
    assert shaper.apply(p, "test")["changed"] is False
    reverted = shaper.revert("done")
    assert reverted["restored"] == {"v0": reverted["restored"]["v0"], "ifb4v0": {"exact": True,
                                                                              "steps": ["ip link del ifb4v0"]}}
    assert reverted["restored"]["v0"]["exact"] is True
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
    assert apply.ifindex_of(ns.ipr, "ifb4v0") is None
