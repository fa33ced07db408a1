"""Hostile and malformed requests: a precise error where an id can be recovered, a logged drop
otherwise, and the agent keeps serving."""
import json

import pytest

from mqtt_harness import online
from mqtt_harness import enveloped_request, flat_request

VALID_ARGS = {"duration": 1, "analysis_type": "basic"}


@pytest.fixture
def served(start_agent, controller):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/ack", f"{agent.base}/cmd/res", f"{agent.base}/lwt")
    online(ctl, agent)
    yield agent, ctl
    # Still serving after everything thrown at it.
    check = flat_request("qos_traffic_analysis", VALID_ARGS)
    ctl.publish(f"{agent.base}/cmd/req", check)
    assert ctl.wait_reply(check["id"], "result", timeout=15).json["status"] == "completed"
    assert agent.proc.poll() is None


# Found only when the command runs (the interface table is read then): accepted, then failed.
FAILS_AT_RUN = {"h-11"}


def _error_for(ctl, agent, payload, command_id):
    ctl.publish(f"{agent.base}/cmd/req", payload)
    ack = ctl.wait_reply(command_id, "ack", timeout=5).json
    error = ctl.wait_reply(command_id, "result", timeout=5).json
    assert ack["accepted"] is (command_id in FAILS_AT_RUN)
    assert error["schema"] == "cmd.error/1.0" and error["status"] == "failed"
    return error


CASES = [
    # (name, raw payload, id, code, message fragment)
    ("not json", b'{"id": "h-1", "op": qos_traffic_analysis', "h-1", 1001, "payload is not valid JSON"),
    ("not utf-8", b'{"id": "h-2", "op": "\xff\xfe"}', "h-2", 1001, "payload is not UTF-8: byte 0xff at offset 21"),
    ("1 MB", b'{"id": "h-3", "op": "qos_traffic_analysis", "args": {"pad": "' + b"x" * 2**20 + b'"}}', "h-3", 1001,
     "above the 65536-byte limit"),
    ("deep nesting", json.dumps({"id": "h-4", "op": "qos_traffic_analysis",
                                 "args": {"duration": 1, "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}),
     "h-4", 1001, "nests deeper than 32 levels"),
    ("wrong type", json.dumps(flat_request("qos_traffic_analysis", {"duration": "5"}, "h-5")), "h-5", 1001,
     "args.duration: expected an integer, got string '5'"),
    ("out of range", json.dumps(flat_request("qos_traffic_analysis", {"duration": 0}, "h-6")), "h-6", 1001,
     "args.duration: 0 is below the minimum 1"),
    ("unknown arg", json.dumps(flat_request("qos_traffic_analysis", {"duration": 1, "rm -rf /": 1}, "h-7")), "h-7",
     1001, "args.rm -rf /: unknown argument"),
    ("unknown op", json.dumps(flat_request("qos_reboot_everything", {}, "h-8")), "h-8", 1002,
     "op: 'qos_reboot_everything' is not a supported operation"),
    ("router change on a read-only agent", json.dumps(flat_request("qos_config", {"policy": "gaming"}, "h-9")),
     "h-9", 1003, "qos_config changes the router configuration"),
    ("id too long", json.dumps(flat_request("qos_traffic_analysis", VALID_ARGS, "h" * 129)), "h" * 129, 1001,
     "id: 129 characters, above the maximum 128"),
    ("hostile interface", json.dumps(flat_request("qos_traffic_analysis", {"duration": 1,
                                                                           "interfaces": ["eth0; reboot"]}, "h-10")),
     "h-10", 1001, "args.interfaces[0]: 'eth0; reboot' is not a network interface name"),
    ("missing interface", json.dumps(flat_request("qos_traffic_analysis", {"duration": 1, "interfaces": ["wan9"]},
                                                  "h-11")), "h-11", 1006, "no interface named 'wan9'"),
    ("bad timeout", json.dumps(flat_request("qos_traffic_analysis", VALID_ARGS, "h-12", timeout_ms=10)), "h-12", 1001,
     "timeout_ms: 10 is outside 1000-600000"),
    ("args not an object", json.dumps(flat_request("qos_traffic_analysis", [1, 2], "h-13")), "h-13", 1001,
     "args: expected an object, got array"),
    ("unknown top-level field", json.dumps({**flat_request("qos_traffic_analysis", VALID_ARGS, "h-14"), "sudo": 1}),
     "h-14", 1001, "sudo: unknown field"),
    ("schema names another op", json.dumps({**flat_request("qos_traffic_analysis", VALID_ARGS, "h-15"),
                                            "schema": "cmd.qos_config/1.0"}), "h-15", 1001,
     "does not name op 'qos_traffic_analysis'"),
]


@pytest.mark.parametrize("name, payload, command_id, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_a_precise_error(served, name, payload, command_id, code, fragment):
    agent, ctl = served
    error = _error_for(ctl, agent, payload, command_id)
    assert error["error_code"] == code and fragment in error["error"], error
    assert error["id"] == command_id


def test_enveloped_errors_use_the_error_schema(served):
    agent, ctl = served
    request = enveloped_request("qos_traffic_analysis", {"duration": 99999}, agent.device_id, "h-env")
    ctl.publish(f"{agent.base}/cmd/req", request)
    ack = ctl.wait_reply("h-env", "ack", timeout=5).json
    assert ack["payload"]["status"] == "rejected" and "above the maximum 3600" in ack["payload"]["reason"]
    error = ctl.wait_reply("h-env", "result", timeout=5).json
    assert error["payload"]["error"] == {
        "code": 1001, "message": "E_INVALID_COMMAND: args.duration: 99999 is above the maximum 3600", "details": ""}


@pytest.mark.parametrize("payload, logged", [
    (b"\x00\x01\x02garbage", "payload is not valid JSON"),
    (b"[1, 2, 3]", "payload is a JSON list, not an object"),
    (json.dumps({"op": "qos_traffic_analysis", "args": {}}).encode(), "request without a usable id"),
    (json.dumps({"id": 42, "op": "qos_traffic_analysis", "args": {}}).encode(), "request without a usable id (int)"),
    (b"x" * 2**20, "above the 65536-byte limit"),
])
def test_unanswerable_messages_are_logged_and_dropped(served, payload, logged):
    agent, ctl = served
    ctl.publish(f"{agent.base}/cmd/req", payload)
    follow = flat_request("qos_traffic_analysis", VALID_ARGS)
    ctl.publish(f"{agent.base}/cmd/req", follow)
    ctl.wait_reply(follow["id"], "ack", timeout=5)
    assert [m for m in ctl.messages if m.topic.endswith("/cmd/res") and m.body.get("id") != follow["id"]] == []
    assert "dropped a request" in agent.log() and logged in agent.log()
