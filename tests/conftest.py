import itertools
import os
import shutil

import pytest

import netns
from mqtt_harness import AgentHost, AgentProcess, Broker, Controller

# The `guest` marker and `kernel_features` fixture: tests for the router-kernel guest (tests/guest).
pytest_plugins = ["guest.plugin"]


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


# ---- MQTT agent fixtures: a real mosquitto, the agent in its own namespace, controllers ----

_octets = itertools.count(1)


@pytest.fixture
def broker(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture
def agent_host():
    n = next(_octets)
    ns = netns.Netns(f"{netns.PREFIX}-{os.getpid()}-agent{n}")
    octet = (os.getpid() * 3 + n) % 250 + 1
    try:
        host = AgentHost(ns, octet)
    except Exception:
        ns.delete()
        raise
    yield host
    host.delete()


@pytest.fixture
def start_agent(agent_host, broker, tmp_path):
    agents = []

    def start(broker_=None, **overrides):
        workdir = tmp_path / f"agent{len(agents)}"
        workdir.mkdir()
        agent = AgentProcess(agent_host, broker_ or broker, workdir, **overrides)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def controller(broker):
    controllers = []

    def make(**kwargs):
        c = Controller(broker.plain_port, **kwargs)
        controllers.append(c)
        return c

    yield make
    for c in controllers:
        c.close()
    errors = [e for c in controllers for e in c.schema_errors]
    assert not errors, "uplink messages that fail the published schemas:\n" + "\n".join(errors)
