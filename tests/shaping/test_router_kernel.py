"""On a router kernel (the guest: cake, fq_codel, ifb, mirred) the same capability probe that
picks htb with fifo leaves on this machine picks fq_codel leaves and shapes ingress through an
ifb; the transaction applies and reverts it exactly."""
import pytest

from rtk_qos.shaping import apply, capabilities, plan, tcstate
from rtk_qos.shaping.transaction import Shaper

pytestmark = pytest.mark.guest(needs=["cake", "fq_codel", "ifb", "mirred", "u32", "htb"])


def test_the_plan_chooses_fq_codel_and_an_ifb_and_the_transaction_reverts_it(ns, tmp_path):
    from pyroute2 import NetNS
    caps = capabilities.probe(ns.ipr)
    assert caps["qdiscs"]["fq_codel"] and caps["qdiscs"]["cake"] and caps["actions"]["mirred"]
    p = plan.build_auto("v0", 50_000_000, "test", caps, ["minimize_latency"], ["voip"])
    assert p.leaf == "fq_codel" and p.ingress["shaped"] and p.ingress["ifb"] == "ifb4v0"
    before = tcstate.read(ns.ipr, "v0")
    shaper = Shaper(str(tmp_path), ipr_factory=lambda: NetNS(ns.name))
    result = shaper.apply(p, "test")
    assert result["state"] == "pending"
    for target in p.interfaces:
        tree = tcstate.read(ns.ipr, target.ifname)
        assert apply.matches(target, tree)
        leaves = [o for o in tree.of("qdisc") if o.parent not in (tcstate.TC_H_ROOT, tcstate.TC_H_INGRESS)]
        assert {o.kind for o in leaves} == {"fq_codel"} and len(leaves) == 5
    assert apply.has_redirect(tcstate.read(ns.ipr, "v0"))
    reverted = shaper.revert("done")
    assert reverted["restored"]["v0"]["exact"] and reverted["restored"]["ifb4v0"]["exact"]
    assert tcstate.read(ns.ipr, "v0").signature() == before.signature()
