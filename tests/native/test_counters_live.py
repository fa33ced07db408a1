"""Both counter paths read the same links from a live kernel, in a namespace of our own."""
import json
import sys

import pytest

# Kernel-facing: also run on the router kernel of the guest rig (tests/guest).
pytestmark = pytest.mark.guest(host=True)

READ_BOTH = """
import json
from rtk_qos import _core
netlink, procfs = _core.CounterReader(), _core.CounterReader(force_procfs=True)
print(json.dumps({"sources": [netlink.source, procfs.source],
                  "netlink": netlink.read(), "procfs": procfs.read(), "netlink_after": netlink.read()}))
"""


def test_netlink_and_procfs_paths_agree_on_every_link(netns_pair):
    ns = netns_pair.a
    ns.run("ip", "-batch", "-", input="".join(
        f"link add l{i}a type veth peer name l{i}b\n" for i in range(10)))
    # Known traffic on the pair link so counters are not all zero.
    ns.run("ping", "-c", "3", "-i", "0.2", "-q", netns_pair.b_addr)
    out = json.loads(ns.run(sys.executable, "-c", READ_BOTH).stdout)
    assert out["sources"] == ["netlink", "procfs"]
    by_index = lambda rows: {row[0]: row for row in rows}
    netlink, procfs, after = by_index(out["netlink"]), by_index(out["procfs"]), by_index(out["netlink_after"])
    assert len(netlink) == 1 + 1 + 20  # lo, the pair's end, ten veth pairs
    assert netlink.keys() == procfs.keys()
    for ifindex, row in netlink.items():
        assert procfs[ifindex][1] == row[1]  # same name
        # Counters only grow between the three reads, and nothing crosses these links meanwhile
        # except, at most, a few background frames.
        for k in range(2, 10):
            assert row[k] <= procfs[ifindex][k] <= after[ifindex][k]
    assert netlink[next(i for i, r in netlink.items() if r[1] == netns_pair.a_if)][4] >= 3  # rx_packets
