"""The dispatcher in-process, for the rules no op of this device exercises yet: router-changing
ops refused unless allowed, same-resource commands rejected or serialised without holding a
worker while they wait, a bounded shutdown, and which replies need crash safety."""
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
        self.acks, self.results, self.durable = [], [], []
        self.done = threading.Condition()

    def ack(self, request, message):
        self.acks.append(message)

    def result(self, request, message, durable=True):
        with self.done:
            self.results.append(message)
            self.durable.append(durable)
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


def _request(command_id, duration=1, op=OP):
    args = ({"duration": duration, "analysis_type": "basic", "interfaces": ["lo"]} if op == OP
            else {"detection_window": 300, "metrics": ["latency"]})
    return json.dumps({"id": command_id, "op": op, "args": args}).encode()


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


def test_a_command_waiting_for_its_resource_holds_no_worker(patched_spec):
    # Two workers: "first" holds the resource, "second" waits for it; a command needing no
    # resource must get the second worker at once rather than queue behind the wait.
    patched_spec(resource="shaping")
    replies = Recorder()
    dispatcher = Dispatcher(_config(resource_conflict="queue", max_running=2), "aabbccddeeff", replies)
    dispatcher.handle(_request("first", duration=3))
    dispatcher.handle(_request("second", duration=1))
    dispatcher.handle(_request("other", op="qos_anomaly_detection"))
    results = replies.wait_results(3)
    assert [r["id"] for r in results] == ["other", "first", "second"]
    assert [r["status"] for r in results] == ["completed"] * 3, results[0]
    dispatcher.shutdown(1.0)


def test_cancelling_a_command_queued_for_its_resource_answers_at_once(patched_spec):
    patched_spec(resource="shaping")
    replies = Recorder()
    dispatcher = Dispatcher(_config(resource_conflict="queue"), "aabbccddeeff", replies)
    dispatcher.handle(_request("first", duration=60))
    dispatcher.handle(_request("second", duration=1))
    dispatcher.handle(json.dumps({"id": "stop-2", "op": "qos_cancel", "args": {"id": "second"}}).encode())
    first_two = replies.wait_results(2)
    assert [r["id"] for r in first_two] == ["stop-2", "second"]  # not after first's 60 s
    assert first_two[0]["result"]["was"] == "queued" and first_two[1]["status"] == "cancelled"
    assert dispatcher.shutdown(10.0) == []
    assert replies.wait_results(3)[2]["id"] == "first"


def test_shutdown_returns_within_wait_s_and_names_a_command_that_ignores_its_cancel(patched_spec):
    release = threading.Event()

    def deaf(args, ctx):  # a command that never polls its cancel
        release.wait(60)
        return {}
    patched_spec(run=deaf)
    replies = Recorder()
    dispatcher = Dispatcher(_config(), "aabbccddeeff", replies)
    dispatcher.handle(_request("deaf"))
    while not dispatcher.running() or dispatcher.running()[0]["state"] != "running":
        time.sleep(0.01)
    started = time.monotonic()
    stuck = dispatcher.shutdown(wait_s=0.5)
    # Bounded by wait_s (a generous margin for a loaded machine), not by the command's 60 s.
    assert time.monotonic() - started < 10
    assert stuck == ["qos_traffic_analysis deaf"]
    release.set()
    assert replies.wait_results(1)[0]["id"] == "deaf"


def test_only_results_of_executed_commands_need_crash_safety(patched_spec):
    replies = Recorder()
    dispatcher = Dispatcher(_config(max_running=1, max_queued=0), "aabbccddeeff", replies)
    dispatcher.handle(b"{not json")  # dropped: no id to answer
    dispatcher.handle(_request("bad", duration=0))  # rejected
    dispatcher.handle(_request("ran"))
    replies.wait_results(2)
    dispatcher.handle(_request("ran"))  # redelivered: its stored result again
    dispatcher.handle(json.dumps({"id": "c", "op": "qos_cancel", "args": {"id": "ran"}}).encode())
    results = replies.wait_results(4)
    assert [r["id"] for r in results] == ["bad", "ran", "ran", "c"]
    assert replies.durable == [False, True, False, False]
    assert dispatcher.request_counts() == {"accepted": 1, "rejected": 2, "dropped": 1, "duplicates": 1,
                                           "completed": 1, "failed": 0}
    dispatcher.shutdown(1.0)
