import shutil

import pytest

import netns


def _require_root_networking():
    # Namespaces need root and iproute2; `make test` runs as root and installs iproute2,
    # so this only fires when someone runs pytest by hand as a normal user.
    import os
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("network tests need root and iproute2 (run `make test` as root)")


@pytest.fixture(scope="session", autouse=True)
def _stale_namespaces():
    if shutil.which("ip"):
        netns.remove_stale()


@pytest.fixture
def netns_pair():
    _require_root_networking()
    pair = netns.make_pair()
    yield pair
    pair.delete()


@pytest.fixture
def netns_chain():
    _require_root_networking()
    chain = netns.make_chain()
    yield chain
    chain.delete()
