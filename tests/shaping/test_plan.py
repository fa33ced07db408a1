"""The plan and its rendering are pure data: checked without root."""
import pytest

from rtk_qos.shaping import plan, render
from rtk_qos.shaping.apply import plan_meaning

HERE_KERNEL = {"qdiscs": {"htb": True, "tbf": True, "pfifo": True, "bfifo": True, "ingress": True,
                          "fq_codel": False, "cake": False, "sfq": False},
               "classifiers": {"u32": True}, "actions": {"mirred": False}, "links": {"ifb": True}}
FULL_KERNEL = {"qdiscs": {**HERE_KERNEL["qdiscs"], "fq_codel": True, "cake": True, "sfq": True},
               "classifiers": {"u32": True}, "actions": {"mirred": True}, "links": {"ifb": True}}


def _with(**qdiscs):
    return {**HERE_KERNEL, "qdiscs": {k: False for k in HERE_KERNEL["qdiscs"]} | {"htb": True, **qdiscs}}


def test_leaf_follows_the_kernel_and_says_why():
    assert plan.choose_leaf(FULL_KERNEL)[0] == "fq_codel"
    assert plan.choose_leaf(HERE_KERNEL)[0] == "tbf"  # fifo behind a GSO-splitting tbf
    assert plan.choose_leaf(_with(bfifo=True))[0] == "bfifo"
    assert plan.choose_leaf(_with(pfifo=True))[0] == "pfifo"
    with pytest.raises(plan.PlanError, match="no leaf queue"):
        plan.choose_leaf(_with())


def test_byte_fifo_leaf_holds_a_gso_super_packet():
    p = plan.build_auto("wan0", 8_000_000, "test", _with(bfifo=True), ["minimize_latency"], [])
    limits = [q.param("limit") for q in p.interfaces[0].qdiscs[1:]]
    assert limits and all(limit >= plan.GSO_MAX + plan.MTU for limit in limits)


def test_tbf_leaf_holds_the_target_delay_at_the_class_ceiling():
    p = plan.build_auto("wan0", 8_000_000, "test", HERE_KERNEL, ["minimize_latency"], [])
    tree = p.interfaces[0]
    ceil = {c.classid: c.ceil_bps for c in tree.classes}
    for leaf in tree.qdiscs[1:]:
        assert leaf.kind == "tbf"
        expected = max(plan.MIN_LEAF_BYTES, int(ceil[leaf.parent] / 8 * 0.010))
        assert leaf.param("limit") == expected
        assert leaf.param("rate_bps") == ceil[leaf.parent] * plan.SEGMENTER_RATE_FACTOR


def test_root_shapes_below_capacity_and_guarantees_fit_in_it():
    p = plan.build_auto("wan0", 100_000_000, "test", HERE_KERNEL, ["improve_reliability"],
                        ["voip", "video_conference", "gaming", "streaming"])
    tree = p.interfaces[0]
    root = tree.classes[0]
    assert root.rate_bps == root.ceil_bps == 95_000_000 == p.shaped_bps
    assert sum(c.rate_bps for c in tree.classes[1:]) <= root.rate_bps
    assert all(c.ceil_bps <= root.ceil_bps and c.rate_bps <= c.ceil_bps for c in tree.classes[1:])
    express = next(c for c in tree.classes if c.name == "express")
    assert express.ceil_bps == int(root.ceil_bps * plan.EXPRESS_CEIL)
    assert [c.prio for c in tree.classes[1:]] == [0, 1, 2, 3, 4]


def test_goals_change_the_target_delay():
    delays = {goal: plan.build_auto("wan0", 8_000_000, "t", HERE_KERNEL, [goal], []).target_delay_ms
              for goal in ("minimize_latency", "maximize_throughput", "improve_reliability")}
    assert delays == {"minimize_latency": 10.0, "maximize_throughput": 25.0, "improve_reliability": 15.0}


def test_priority_applications_are_promoted():
    base = plan.build_auto("wan0", 8_000_000, "t", HERE_KERNEL, ["minimize_latency"], [])
    promoted = plan.build_auto("wan0", 8_000_000, "t", HERE_KERNEL, ["minimize_latency"], ["streaming"])
    classes = {c.name: c.classid for c in base.interfaces[0].classes}

    def streaming_class(p):
        return {f.classid for f in p.interfaces[0].filters if f.why.startswith("streaming")}

    assert streaming_class(base) == {classes["medium"]}
    assert streaming_class(promoted) == {classes["high"]}


@pytest.mark.parametrize("low,high", [(0, 0), (80, 80), (3000, 4000), (10000, 20000), (1, 65535), (5060, 5061)])
def test_port_blocks_cover_exactly_the_range(low, high):
    blocks = plan.port_blocks(low, high)
    covered = [port for port in range(65536) if any(port & mask == value for value, mask in blocks)]
    assert covered == list(range(low, high + 1))


def test_filter_words_are_aligned_u32_keys():
    f = plan.Filter(0x10000, 3, 0x10010, tuple(plan.match_protocol("udp") + plan.match_ports("dport", 5060, 5060)[0]),
                    "x")
    assert f.words() == [(0, 0x45000000, 0xFF000000), (8, 0x00110000, 0x00FF0000), (20, 0x000013C4, 0x0000FFFF)]
    assert f.keys() == ["0x45000000/0xff000000+0", "0x00110000/0x00ff0000+8", "0x000013c4/0x0000ffff+20"]


def test_qos_config_rules_by_device_port_and_address():
    rules = [{"name": "console", "match": {"device_mac": "AA:BB:CC:DD:EE:01", "protocol": "udp"}, "priority": "high"},
             {"name": "backup", "match": {"protocol": "tcp", "port_range": "3000-3001", "dst_ip": "10.0.0.9"},
              "priority": "low", "bandwidth_limit": 2}]
    devices = {"aa:bb:cc:dd:ee:01": ["192.168.1.20", "192.168.1.21"]}
    p = plan.build_config("wan0", 20_000_000, "t", HERE_KERNEL, "gaming", rules, devices)
    tree = p.interfaces[0]
    ids = {c.name: c.classid for c in tree.classes}
    console = [f for f in tree.filters if f.why == "rule console -> high"]
    assert [f.classid for f in console] == [ids["high"]] * 2
    assert {f.match for f in console} == {tuple(plan.match_protocol("udp") + plan.match_address("src", a))
                                          for a in devices["aa:bb:cc:dd:ee:01"]}
    backup = [f for f in tree.filters if f.why.startswith("rule backup")]
    assert len(backup) == 1 and backup[0].classid == ids["bulk"]  # 3000-3001 is one aligned block
    assert next(c for c in tree.classes if c.name == "bulk").ceil_bps == 2_000_000
    assert min(f.prio for f in tree.filters if not f.why.startswith("rule")) > 1  # rules are looked at first


def test_a_rule_that_matches_everything_is_refused():
    with pytest.raises(plan.PlanError, match="matches every packet"):
        plan.build_config("wan0", 8_000_000, "t", HERE_KERNEL, "custom",
                          [{"name": "all", "match": {"protocol": "any"}, "priority": "high"}], {})


def test_ingress_says_why_it_is_not_shaped():
    assert "mirred action" in plan.build_auto("wan0", 8_000_000, "t", HERE_KERNEL, ["minimize_latency"], []
                                              ).ingress["reason"]


def test_rendered_lines_are_tc_syntax_for_every_object():
    p = plan.build_auto("wan0", 8_000_000, "t", HERE_KERNEL, ["minimize_latency"], ["voip"])
    lines = render.plan_lines(p.interfaces[0])
    tree = p.interfaces[0]
    assert len(lines) == len(tree.qdiscs) + len(tree.classes) + len(tree.filters)
    assert lines[0] == "tc qdisc add dev wan0 root handle 1: htb default 40 r2q 10"
    assert "tc class add dev wan0 parent 1: classid 1:1 htb rate 7600000bit ceil 7600000bit prio 0" in lines
    assert len(plan_meaning(tree)) == len(lines)  # every object distinct
