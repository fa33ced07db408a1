"""Both request dialects end to end through a real broker, and the lifecycle messages around them."""
import time

import pytest

from mqtt_harness import online
from mqtt_harness import enveloped_request, flat_request


@pytest.mark.guest(host=True)  # the agent end to end on the guest rig's kernel too (tests/guest)
def test_flat_request_gets_a_fast_ack_and_a_measured_result(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/#")
    online(ctl, agent)
    request = flat_request("qos_traffic_analysis", {"duration": 2, "interfaces": [agent_host.agent_if],
                                                     "analysis_type": "basic"},
                           trace={"req_id": "r-1", "trace_id": "tr-9"})
    sent = ctl.publish(f"{agent.base}/cmd/req", request)
    ack = ctl.wait_reply(request["id"], "ack", timeout=5)
    assert ack.topic == f"{agent.base}/cmd/ack"
    assert ack.at - sent < 1.0  # the protocol's bound on an ack
    assert ack.json["accepted"] is True and ack.json["reason"] is None
    assert ack.json["estimated_duration_ms"] == 2500 and ack.json["trace"] == request["trace"]
    result = ctl.wait_reply(request["id"], "result", timeout=15)
    message = result.json
    assert result.topic == f"{agent.base}/cmd/res"
    assert message["schema"] == "cmd.qos_traffic_analysis.result/1.0" and message["status"] == "completed"
    assert message["error"] is None and message["trace"] == request["trace"]
    assert 1900 <= message["execution"]["duration_ms"] <= 5000
    stats = message["result"]["interface_stats"]
    assert [s["interface"] for s in stats] == [agent_host.agent_if]
    assert message["result"]["analysis_summary"]["samples"] == 2
    if not ctl.schemas.available:
        pytest.skip(ctl.schemas.reason)
    assert ctl.checked.get("flat:cmd.ack") and ctl.checked.get("flat:cmd.result")
    assert ctl.checked.get("result:qos_traffic_analysis")


def test_enveloped_request_is_answered_enveloped_and_schema_valid(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/#")
    online(ctl, agent)
    request = enveloped_request("qos_traffic_analysis", {"duration": 3}, agent.device_id, timeout_ms=60000,
                                expect="result")
    command_id = request["payload"]["id"]
    ctl.publish(f"{agent.base}/cmd/req", request)
    ack = ctl.wait_reply(command_id, "ack", timeout=5)
    assert ack.json["device_id"] == agent.device_id
    assert ack.json["payload"] == {"id": command_id, "status": "accepted"}
    result = ctl.wait_reply(command_id, "result", timeout=20)
    payload = result.json["payload"]
    assert set(payload) == {"id", "status", "result", "error"} and payload["status"] == "completed"
    assert result.json["meta"]["execution"]["duration_ms"] >= 2900
    qos = payload["result"]["qos_metrics"]
    # The agent's gateway is this test's side of the veth: probed for real during the run.
    assert qos["latency_target"] == agent_host.gateway and qos["probes_sent"] >= 2
    assert qos["avg_latency_ms"] is not None and qos["packet_loss_percent"] == 0
    assert payload["result"]["analysis_summary"]["interfaces"] == [agent_host.agent_if]
    if not ctl.schemas.available:
        pytest.skip(ctl.schemas.reason)
    assert ctl.checked.get("cmd-ack.json") and ctl.checked.get("cmd-result.json")
    assert ctl.checked.get("result:qos_traffic_analysis")


def test_lifecycle_messages_describe_the_device_and_validate(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/#")
    lwt = online(ctl, agent)[0]
    assert lwt.json["schema"] == "lwt/1.0"
    attr = ctl.wait_for(lambda m: m.topic == f"{agent.base}/attr")[0].json
    assert attr["payload"]["device_type"] == "router"
    assert attr["payload"]["mac_address"] == agent_host.mac and "qos" in attr["payload"]["capabilities"]
    state = ctl.wait_for(lambda m: m.topic == f"{agent.base}/state")[0].json["payload"]
    assert state["health"] in ("ok", "warning") and state["connection_status"] == "connected"
    assert "qos_traffic_analysis" in state["capabilities"]["diagnostics"]
    assert "qos_cancel" in state["capabilities"]["diagnostics"]
    assert "qos_config" not in state["capabilities"]["diagnostics"]  # not implemented yet: not claimed
    telemetry = ctl.wait_for(lambda m: m.topic == f"{agent.base}/telemetry/network", timeout=10)[0].json
    names = [i["name"] for i in telemetry["payload"]["interfaces"]]
    assert names == [agent_host.agent_if]
    # Retained: a controller arriving later still learns the device is online and what it is.
    late = controller()
    late.subscribe(f"{agent.base}/lwt", f"{agent.base}/attr", f"{agent.base}/state")
    late.wait_for(lambda m: m.topic.endswith("/lwt") and m.body.get("status") == "online", timeout=5)
    late.wait_for(lambda m: m.topic.endswith("/attr"), timeout=5)
    # A clean stop says offline (reason normal) so the Last Will is not needed.
    agent.stop()
    offline = late.wait_for(lambda m: m.topic.endswith("/lwt") and m.body.get("status") == "offline", timeout=10)
    assert offline[-1].body["reason"] == "normal"
    if not ctl.schemas.available:
        pytest.skip(ctl.schemas.reason)
    assert {"lwt.json", "attr.json", "state.json", "telemetry-network.json"} <= set(ctl.checked)


def test_last_will_reports_a_crashed_agent_offline(start_agent, controller, broker):
    agent = start_agent(broker={"keepalive_s": 2})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/lwt")
    online(ctl, agent)
    agent.proc.kill()  # no clean offline: the broker must publish the will
    will = ctl.wait_for(lambda m: m.body.get("status") == "offline", timeout=15)[0]
    assert will.body["reason"] == "timeout" and will.body["last_seen"] <= int(time.time() * 1000)
