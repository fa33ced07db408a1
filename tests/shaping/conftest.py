import os

import pytest

import shaping_rig


@pytest.fixture
def rig():
    """The bufferbloat topology (shaping_rig.py) with its iperf3 and echo servers running."""
    if os.geteuid() != 0:
        pytest.fail("shaping tests need root (network namespaces)")
    built = shaping_rig.make_rig()
    servers = built.start_servers()
    yield built
    for proc in servers:
        proc.kill()
    built.delete()
