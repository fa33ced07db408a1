"""Bufferbloat made for real: a tbf queue on the agent's uplink (4 Mbit/s, 150 KB of queue, so
about 300 ms when full) filled by a UDP flood for 20 s of a 60 s monitor of the gateway. The
monitor must see the latency rise with the uplink busy and point to shaping."""
import subprocess
import sys
import time

from mqtt_harness import flat_request, online

FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2])
payload = b"z" * 1000
while time.monotonic() < end:
    for _ in range(10):
        s.sendto(payload, (sys.argv[1], 9))
    time.sleep(0.01)  # about 8 Mbit/s offered: twice what the queue drains
"""


def test_latency_under_load_is_diagnosed_as_bufferbloat(start_agent, controller, agent_host):
    agent_host.ns.run("tc", "qdisc", "add", "dev", agent_host.agent_if, "root", "tbf", "rate", "4mbit",
                      "burst", "5kb", "limit", "150kb")
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt", f"{agent.base}/evt/#")
    online(ctl, agent)
    request = flat_request("qos_performance_monitor", {
        "monitor_duration": 60, "metrics": ["latency", "throughput", "packet_loss"],
        "alert_thresholds": {"latency_ms": 100, "throughput_mbps": 2}})
    ctl.publish(f"{agent.base}/cmd/req", request)
    ctl.wait_reply(request["id"], "ack", timeout=5)
    time.sleep(15)
    agent_host.ns.run(sys.executable, "-c", FLOOD, agent_host.gateway, "20", timeout=60)
    opened = [m for m in ctl.messages if m.topic.endswith("/evt/qos_alert") and m.body["metric"] == "latency"]
    assert opened and opened[0].body["state"] == "open"  # seen while the flood ran
    body = ctl.wait_reply(request["id"], "result", timeout=60).json["result"]
    gateway = body["hosts"][0]
    assert gateway["host"] == agent_host.gateway and gateway["method"] == "icmp-raw"
    # Queued behind up to 150 KB at 4 Mbit/s: up to about 300 ms (less when the probe finds the
    # queue part drained; a probe that finds it full is dropped).
    assert 120 <= gateway["latency"]["max_ms"] <= 400 and gateway["latency"]["p50_ms"] < 5
    throughput = body["performance_metrics"]["throughput"]
    assert not throughput.get("idle") and 3.4 <= throughput["max_mbps"] <= 4.6
    assert throughput["consistency_percent"] < 50  # busy a third of the time
    latency_alerts = [a for a in body["alerts"] if a["metric"] == "latency"]
    assert len(latency_alerts) == 1 and 12 <= latency_alerts[0]["duration_s"] <= 28
    assert any("bufferbloat" in r and "qos_auto_optimization" in r for r in body["recommendations"]), \
        body["recommendations"]
