import os
import time

import pytest

import netns
import shaping_rig


def _running(download: bool):
    if os.geteuid() != 0:
        pytest.fail("shaping tests need root (network namespaces)")
    built = shaping_rig.make_rig(download=download)
    servers = built.start_servers()
    yield built
    for proc in servers:
        proc.kill()
    built.delete()


@pytest.fixture
def rig():
    """The bufferbloat topology (shaping_rig.py) with its iperf3 and echo servers running."""
    yield from _running(download=False)


@pytest.fixture
def download_rig():
    """The same with the modem's deep queue in both directions."""
    yield from _running(download=True)


@pytest.fixture
def ns():
    """A namespace with two veth pairs (v0/p0 and other/p1) and a pyroute2 socket in it (`.ipr`)."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root")
    space = netns.Netns(f"{netns.PREFIX}-{os.getpid()}-shp{time.monotonic_ns() % 100000}")
    for a, b in (("v0", "p0"), ("other", "p1")):
        space.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for name in (a, b):
            space.run("ip", "link", "set", name, "up")
    from pyroute2 import NetNS
    ipr = NetNS(space.name)
    space.ipr = ipr
    yield space
    ipr.close()
    space.delete()
