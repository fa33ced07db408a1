import os

import pytest

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
