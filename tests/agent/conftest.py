import itertools
import os

import pytest

import netns
from mqtt_harness import AgentHost, AgentProcess, Broker, Controller

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


def online(ctl, agent, timeout=20):
    """Wait for the agent's retained lwt `online`."""
    return ctl.wait_for(lambda m: m.topic == f"{agent.base}/lwt" and m.body.get("status") == "online", timeout)
