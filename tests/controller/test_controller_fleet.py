"""Discovery from the retained lifecycle messages, offline through the Last Will, a session ended by
its device going away, and commands to a real agent in both dialects."""
import signal

import pytest


def test_discovery_last_will_and_device_gone(start_agent, start_controller):
    agent = start_agent(telemetry={"qos_period_s": 1.0})
    ctl = start_controller()
    http = ctl.http
    device = http.wait("/api/devices", lambda b: b["devices"] and b["devices"][0]["health"] is not None)["devices"][0]
    assert device["device_id"] == agent.device_id and device["status"] == "online"
    assert "qos_performance_monitor" in device["capabilities"]["diagnostics"]
    assert device["attr"]["mac_address"] == agent.host.mac and device["last_seen_ms"] > 0
    one = http.wait(f"/api/devices/{agent.device_id}", lambda d: "probe.gateway.latency_ms" in d["series"])
    assert f"{agent.host.agent_if}.rx_mbps" in one["series"] and "uplink.throughput_mbps" in one["series"]
    session = http.post("/api/sessions", {"device_id": agent.device_id, "duration": 600, "metrics": ["latency"]},
                        expect=201)

    # A controller started later still discovers the device: lwt, state and attr are retained.
    late = start_controller(broker={"client_id": "test-ctl-late"})
    assert [d["device_id"] for d in late.http.wait("/api/devices", lambda b: b["devices"])["devices"]] == [
        agent.device_id]

    agent.stop(signal.SIGKILL)  # no clean offline: the broker publishes the Last Will (keepalive 5 s)
    gone = http.wait(f"/api/devices/{agent.device_id}", lambda d: d["status"] == "offline", timeout=20)
    assert gone["reason"] == "timeout"
    stopped = http.wait(f"/api/sessions/{session['id']}", lambda s: s["status"] != "active", timeout=10)
    assert (stopped["status"], stopped["stop_reason"]) == ("stopped", "device_gone")
    assert stopped["stopped_ms"] - gone["status_since_ms"] >= 3000  # fleet.gone_after_s in the test config


@pytest.mark.parametrize("dialect", ["flat", "enveloped"])
def test_commands_to_a_real_agent(start_agent, start_controller, dialect):
    agent = start_agent()
    ctl = start_controller()
    http = ctl.http
    http.wait("/api/devices", lambda b: any(d["status"] == "online" for d in b["devices"]))
    command = http.post("/api/commands", {"device_id": agent.device_id, "op": "qos_traffic_analysis",
                                          "args": {"duration": 1, "analysis_type": "basic"}, "dialect": dialect,
                                          "wait_s": 20})
    assert command["status"] == "completed" and command["dialect"] == dialect
    (reply,) = command["replies"]
    assert reply["device_id"] == agent.device_id and reply["accepted"] == 1 and reply["status"] == "completed"
    body = reply["result"]["payload"] if dialect == "enveloped" else reply["result"]
    assert body["id"] == command["id"] and body["result"]["analysis_summary"]["analysis_duration"] >= 1

    # The agent's own rejection comes back as a failed command with its reason.
    refused = http.post("/api/commands", {"device_id": agent.device_id, "op": "qos_cancel", "args": {"id": "nope"},
                                          "dialect": dialect, "wait_s": 20})
    # wait_s ends at the rejecting ack ("rejected"); the agent's result with the reason may come in a later batch.
    refused = http.wait(f"/api/commands/{refused['id']}", lambda c: c["replies"][0].get("result"), timeout=20)
    (reply,) = refused["replies"]
    assert (refused["status"], reply["accepted"], reply["status"]) == ("failed", 0, "failed")
    error = reply["result"]["payload"]["error"]["message"] if dialect == "enveloped" else reply["result"]["error"]
    assert "no command 'nope' is running or queued" in error
