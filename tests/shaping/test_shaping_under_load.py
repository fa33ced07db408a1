"""The agent's plan against real bufferbloat: lan - router - modem (tbf 8 Mbit/s, 400 kB) - server.

A bulk upload from the LAN fills the modem's buffer (about 400 ms). With the agent's plan on
the router's uplink the queue forms in the router instead, where the voip-like probe (DSCP EF,
UDP 5060) goes first and the bulk class holds only its target delay. Senders: cubic (what
most hosts use) and BBR; offloads on (the default) and off; and the router's own TCP, whose
64 kB GSO super-packets starve a small byte-limited queue unless the leaf splits them.
"""
import threading
import time

import pytest

import shaping_rig
from rtk_qos.shaping import apply, capabilities, plan, tcstate
from rtk_qos.shaping.transaction import ShapingError, Shaper

SECONDS = 10.0
# Before the plan only the bloat's median is asserted (far above its bound): 250 probes of each kind.
BEFORE_SECONDS = 5.0
GOALS = ["minimize_latency"]


def _router(rig):
    from pyroute2 import NetNS
    return NetNS(rig.router.name)


def agent_plan(rig):
    with _router(rig) as ipr:
        caps = capabilities.probe(ipr)
    return plan.build_auto(rig.uplink, shaping_rig.BOTTLENECK_BPS, "test", caps, GOALS, ["voip"])


def shape(rig, tmp_path, p=None):
    p = p or agent_plan(rig)
    shaper = Shaper(str(tmp_path), ipr_factory=lambda: _router(rig))
    result = shaper.apply(p, "test")
    shaper.confirm(result["transaction"])
    return p


def class_counters(rig, p) -> dict:
    with _router(rig) as ipr:
        tree = tcstate.read(ipr, rig.uplink)
    names = {c.classid: c.name for c in p.interfaces[0].classes}
    return {names[key[1]]: c for key, c in tree.counters.items() if key[0] == "class" and key[1] in names}


def assert_fixed(idle, loaded, p, margin_p95=5.0):
    margin_p50 = 2.0
    assert loaded["voip"]["p50"] <= idle["voip"]["p50"] + margin_p50, (idle, loaded)
    assert loaded["voip"]["p95"] <= idle["voip"]["p95"] + margin_p95, (idle, loaded)
    assert loaded["ping"]["p95"] <= idle["ping"]["p95"] + margin_p95, (idle, loaded)
    # The load's own class holds about its target; far from the modem's 400 ms.
    assert loaded["bulk"]["p50"] <= 2 * p.target_delay_ms, loaded
    assert loaded["throughput_fraction"] >= 0.85, loaded


def test_cubic_upload_bloats_the_modem_and_the_plan_removes_it(rig, tmp_path):
    idle = rig.measure(5, load=False)
    before = rig.measure(BEFORE_SECONDS, cc="cubic")
    assert before["voip"]["p50"] > 100 and before["bulk"]["p50"] > 100  # the modem's buffer, full
    p = shape(rig, tmp_path)
    start = class_counters(rig, p)
    after = rig.measure(SECONDS, cc="cubic")
    assert_fixed(idle, after, p)
    end = class_counters(rig, p)
    moved = {name: (end[name].packets - start[name].packets, end[name].bytes - start[name].bytes) for name in end}
    # Classification proven by the kernel's per-class counters: the voip probe (500 packets)
    # and ping (100) in express, the upload in the default class, nothing of it in express.
    total_bytes = moved.pop("root")[1]
    assert moved["express"][0] >= 600 and moved["express"][1] < 0.02 * total_bytes
    assert moved[plan.DEFAULT_CLASS][1] > 0.95 * total_bytes
    assert sum(b for _p, b in moved.values()) == total_bytes  # every byte in exactly one leaf


@pytest.mark.parametrize("cc,offloads", [("bbr", True), ("cubic", False), ("bbr", False)])
def test_the_plan_holds_with_bbr_and_with_offloads_off(rig, tmp_path, cc, offloads):
    rig.offloads(offloads)
    idle = rig.measure(5, load=False)
    p = shape(rig, tmp_path)
    assert_fixed(idle, rig.measure(SECONDS, cc=cc), p)


def test_gso_super_packets_from_the_router_itself_do_not_starve_the_leaf(rig, tmp_path):
    """The router's own BBR upload with offloads on: the leaf must split 64 kB super-packets."""
    idle = rig.measure(5, load=False)
    p = shape(rig, tmp_path)
    assert p.leaf == "tbf"
    assert_fixed(idle, rig.measure(SECONDS, cc="bbr", local=True), p)


def _apply_with_upload_starting(rig, shaper, p):
    """Apply while the router's own BBR upload starts just after the tree is in place (a flow
    that starts against a small queue, as every new connection does, sends 64 kB super-packets
    at first; one that was already running paces small ones)."""
    uploads = []
    timer = threading.Timer(0.3, lambda: uploads.append(rig.upload(8, "bbr", local=True)))
    timer.start()
    try:
        return shaper.apply(p, "test")
    finally:
        timer.join()
        for proc in uploads:
            proc.kill()
            proc.wait()


def test_health_check_reverts_a_shaper_that_collapses_throughput(rig, tmp_path):
    """The trap itself: a 30 kB bfifo leaf against the router's GSO super-packets: the health
    check sees the collapse and restores; the agent's own plan passes the same check."""
    good = agent_plan(rig)
    tree = good.interfaces[0]
    naive = plan.InterfacePlan(tree.ifname, [tree.qdiscs[0]] + [
        plan.Qdisc("bfifo", q.handle, q.parent, (("limit", 30000),)) for q in tree.qdiscs[1:]],
        tree.classes, tree.filters)
    trap = plan.Plan([naive], good.capacity_bps, "test", good.shaped_bps, good.target_delay_ms, "bfifo", "",
                     good.ingress, [])
    with _router(rig) as ipr:
        before = tcstate.read(ipr, rig.uplink)
    with pytest.raises(ShapingError, match="throughput collapse") as failed:
        _apply_with_upload_starting(rig, Shaper(str(tmp_path), ipr_factory=lambda: _router(rig)), trap)
    assert failed.value.details["rolled_back"][rig.uplink]["exact"] is True
    with _router(rig) as ipr:
        assert tcstate.read(ipr, rig.uplink).signature() == before.signature()
    time.sleep(1)
    result = _apply_with_upload_starting(rig, Shaper(str(tmp_path / "good"), ipr_factory=lambda: _router(rig)), good)
    assert result["state"] == "pending"
    with _router(rig) as ipr:
        assert apply.matches(tree, tcstate.read(ipr, rig.uplink))


def test_a_download_bloats_the_modem_and_the_ifb_shaper_removes_it(download_rig, tmp_path):
    """Ingress shaping: arriving packets redirected (mirred) to an ifb and shaped there below
    the modem's rate, so the modem's downstream queue stays empty."""
    rig = download_rig
    idle = rig.measure(5, load=False)
    before = rig.measure(BEFORE_SECONDS, cc="cubic", download=True)
    assert before["voip"]["p50"] > 100  # the replies wait in the modem's downstream queue
    p = shape(rig, tmp_path)
    assert p.ingress["shaped"]
    after = rig.measure(SECONDS, cc="cubic", download=True)
    # Shaping arriving packets acts after the modem: a sender's bursts still queue there briefly
    # before TCP slows down, so the tail is wider than upstream's (bench: p95 9.5 ms).
    assert_fixed(idle, after, p, margin_p95=20.0)
