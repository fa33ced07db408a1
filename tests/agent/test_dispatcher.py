"""The dispatcher in-process, for the rules no op of this device exercises yet: router-changing
ops refused unless allowed, and same-resource commands rejected or serialised."""
import copy
import dataclasses
import json
import threading
import time

import pytest

from rtk_qos.agent.config import DEFAULTS
from rtk_qos.agent.dispatcher import Dispatcher
from rtk_qos.commands import REGISTRY, load_all

OP = "qos_traffic_analysis"


class Recorder:
    def __init__(self):
        self.acks, self.results = [], []
        self.done = threading.Condition()

    def ack(self, request, message):
        self.acks.append(message)

    def result(self, request, message):
        with self.done:
            self.results.append(message)
            self.done.notify_all()

    def progress(self, request, op, payload):
        pass

    def event(self, event_type, payload, request):
        pass

    def wait_results(self, n, timeout=20):
        with self.done:
            assert self.done.wait_for(lambda: len(self.results) >= n, timeout), self.results
        return self.results


def _config(**limits):
    config = copy.deepcopy(DEFAULTS)
    config["limits"].update(limits)
    return config


def _request(command_id, duration=1):
    return json.dumps({"id": command_id, "op": OP, "args": {"duration": duration, "analysis_type": "basic",
                                                            "interfaces": ["lo"]}}).encode()


@pytest.fixture
def patched_spec(monkeypatch):
    load_all()

    def patch(**changes):
        monkeypatch.setitem(REGISTRY, OP, dataclasses.replace(REGISTRY[OP], **changes))
    return patch


def test_router_changing_ops_are_refused_unless_allowed(patched_spec):
    patched_spec(changes_router=True)
    replies = Recorder()
    Dispatcher(_config(), "aabbccddeeff", replies).handle(_request("c-1"))
    error = replies.wait_results(1)[0]
    assert error["error_code"] == 1003 and "configured read-only" in error["error"]
    assert "allow_router_changes" in error["error_details"] and replies.acks[0]["accepted"] is False
    allowed = _config()
    allowed["security"]["allow_router_changes"] = True
    replies = Recorder()
    Dispatcher(allowed, "aabbccddeeff", replies).handle(_request("c-2"))
    assert replies.wait_results(1)[0]["status"] == "completed"


def test_same_resource_commands_are_rejected_by_default(patched_spec):
    patched_spec(resource="shaping")
    replies = Recorder()
    dispatcher = Dispatcher(_config(), "aabbccddeeff", replies)
    dispatcher.handle(_request("first", duration=2))
    dispatcher.handle(_request("second"))
    busy = replies.wait_results(1)[0]
    assert busy["id"] == "second" and busy["error_code"] == 1004
    assert "shaping is in use by qos_traffic_analysis first" in busy["error"]
    assert replies.wait_results(2)[1]["id"] == "first"


def test_same_resource_commands_wait_their_turn_when_configured(patched_spec):
    patched_spec(resource="shaping")
    replies = Recorder()
    dispatcher = Dispatcher(_config(resource_conflict="queue"), "aabbccddeeff", replies)
    start = time.monotonic()
    dispatcher.handle(_request("first", duration=1))
    dispatcher.handle(_request("second", duration=1))
    results = replies.wait_results(2)
    assert [r["id"] for r in results] == ["first", "second"]
    assert all(r["status"] == "completed" for r in results)
    assert time.monotonic() - start >= 2.0  # one after the other, never together
