"""qos_performance_monitor through the agent, with targets it cannot tell from real hosts:

  reflector.lab  a namespace whose ICMP answers come from tests/reflector.py: 20 ms of delay,
                 150 ms for probes 20-31, probes 5, 15, 25, ... dropped and a burst 40-43 dropped
  tcp-only       a namespace that ignores ICMP and listens on TCP port 80
  unreachable    an address on a link where nobody answers ARP
  nowhere.invalid a name the resolver cannot resolve

The monitor lasts 60 s (the protocol's minimum), so one run checks everything, and alert
events are checked on the broker while it is still running.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from mqtt_harness import online
from mqtt_harness import flat_request

REFLECTOR = Path(__file__).resolve().parents[1] / "reflector.py"
SCHEDULE = {"base_ms": 20, "slow": [[20, 31, 150]], "drop_every": [10, 5], "drop": [40, 41, 42, 43]}
PROBES = 60
DROPPED = {s for s in range(PROBES) if s % 10 == 5} | {40, 41, 42, 43}


def _target(agent_host, name, octet, index):
    ns = netns.Netns(f"{netns.PREFIX}-{os.getpid()}-{name}{index}")
    here, there = f"10.{81 + index}.{octet}.1", f"10.{81 + index}.{octet}.2"
    subprocess.run(["ip", "-n", agent_host.ns.name, "link", "add", f"t{index}", "type", "veth", "peer", "name",
                    "eth0", "netns", ns.name], check=True)
    agent_host.ns.run("ip", "addr", "add", f"{here}/24", "dev", f"t{index}")
    agent_host.ns.run("ip", "link", "set", f"t{index}", "up")
    ns.run("ip", "addr", "add", f"{there}/24", "dev", "eth0")
    ns.run("ip", "link", "set", "eth0", "up")
    ns.run("ip", "route", "add", "default", "via", here)
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
    return ns, there


@pytest.fixture
def targets(agent_host):
    octet = os.getpid() % 250 + 1
    reflector_ns, reflector_addr = _target(agent_host, "refl", octet, 0)
    tcp_ns, tcp_addr = _target(agent_host, "tcp", octet, 1)
    procs = [reflector_ns.popen(sys.executable, str(REFLECTOR), json.dumps(SCHEDULE), stdout=subprocess.PIPE),
             tcp_ns.popen(sys.executable, "-c", "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 80));"
                          " s.listen(128); print('ready', flush=True)\nwhile True: s.accept()[0].close()",
                          stdout=subprocess.PIPE)]
    for proc in procs:
        assert proc.stdout.readline().strip() == b"ready"
    # Name resolution in the agent's namespace: a hosts entry, and a resolver that refuses at once.
    etc = Path("/etc/netns") / agent_host.ns.name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n{reflector_addr} reflector.lab\n")
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    yield {"reflector": reflector_addr, "tcp": tcp_addr, "unreachable": f"10.82.{octet}.99"}
    for proc in procs:
        proc.kill()
        proc.wait()
    for ns in (reflector_ns, tcp_ns):
        ns.delete()
    for name in ("hosts", "resolv.conf"):
        (etc / name).unlink()
    etc.rmdir()


def test_monitor_measures_what_the_targets_do_and_alerts_live(start_agent, controller, targets):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/evt/#", f"{agent.base}/lwt")
    online(ctl, agent)
    hosts = ["reflector.lab", targets["tcp"], targets["unreachable"], "nowhere.invalid"]
    request = flat_request("qos_performance_monitor", {
        "monitor_duration": PROBES, "metrics": ["latency", "jitter", "packet_loss", "throughput"],
        "target_hosts": hosts,
        "alert_thresholds": {"latency_ms": 100, "packet_loss_percent": 25, "throughput_mbps": 5}})
    ctl.publish(f"{agent.base}/cmd/req", request)
    assert ctl.wait_reply(request["id"], "ack", timeout=5).json["estimated_duration_ms"] == 63000

    # The latency episode (probes 20-31 at 150 ms) opens and closes while the monitor runs.
    def alert(state, metric):
        return lambda m: (m.topic.endswith("/evt/qos_alert") and m.body["state"] == state
                          and m.body["metric"] == metric and m.body["command_id"] == request["id"])
    opened = ctl.wait_for(alert("open", "latency"), timeout=45)[0]
    assert opened.body["host"] == "reflector.lab" and opened.body["threshold"] == 100
    closed = ctl.wait_for(alert("closed", "latency"), timeout=30)[0]
    assert ctl.replies(request["id"], "result") == []  # still running when the episode closed
    assert 8 <= closed.body["duration_s"] <= 16 and closed.body["value"] >= 120
    thresholds = [m for m in ctl.messages if m.topic.endswith("/evt/threshold")]
    assert {m.body["threshold_type"] for m in thresholds} == {"max"}
    assert len(thresholds) >= 2 and all(m.body["sensor_type"] == "network" for m in thresholds)

    result = ctl.wait_reply(request["id"], "result", timeout=40).json
    assert result["status"] == "completed", result
    body = result["result"]
    by_host = {h["host"]: h for h in body["hosts"]}

    reflector = by_host["reflector.lab"]
    assert reflector["address"] == targets["reflector"] and reflector["method"] == "icmp-raw"
    assert reflector["sent"] == PROBES and reflector["received"] == PROBES - len(DROPPED)
    loss = reflector["packet_loss"]
    assert loss["lost"] == len(DROPPED) and loss["percent"] == pytest.approx(100 * len(DROPPED) / PROBES, abs=0.01)
    assert loss["max_consecutive_loss"] == 4 and loss["burst_events"] == 7
    latency = reflector["latency"]
    # 36 answers at 20 ms, 12 at 150 ms (probes 25 is dropped): the delays the reflector made.
    assert 20.0 <= latency["p50_ms"] <= 23.0 and 150.0 <= latency["max_ms"] <= 156.0
    assert 20.0 <= latency["min_ms"] <= 22.0
    assert reflector["jitter"]["ipdv_max_ms"] == pytest.approx(130, abs=6)

    tcp = by_host[targets["tcp"]]
    assert tcp["method"] == "tcp-connect:80" and tcp["no_answer_from"] == ["icmp-raw"]
    # Three ICMP probes go unanswered, and two more leave before the third times out (2 s).
    assert tcp["sent"] == PROBES - 5 and tcp["received"] == tcp["sent"] and tcp["timestamps"] == "user"
    assert tcp["latency"]["max_ms"] < 20

    unreachable = by_host[targets["unreachable"]]
    assert unreachable["received"] == 0 and "no answer to any probe" in unreachable["error"]
    # Our own stack's "host unreachable" (ARP failed) is no answer, so no latency for it either.
    assert unreachable["latency"] is None
    assert by_host["nowhere.invalid"]["error"].startswith("cannot resolve 'nowhere.invalid'")

    alerts = body["alerts"]
    latency_alerts = [a for a in alerts if a["metric"] == "latency" and a["host"] == "reflector.lab"]
    assert len(latency_alerts) == 1 and latency_alerts[0]["ongoing"] is False
    assert latency_alerts[0]["severity"] == "error"  # a peak of 150+ ms is 1.5x the threshold or more
    loss_alerts = [a for a in alerts if a["metric"] == "packet_loss" and a["host"] == "reflector.lab"]
    assert len(loss_alerts) == 1 and loss_alerts[0]["value"] >= 40
    # The unreachable host loses everything once discovery ends: an open loss alert at the end.
    assert any(a["metric"] == "packet_loss" and a["host"] == targets["unreachable"] for a in alerts)
    assert body["monitoring_summary"]["alerts_triggered"] == len(alerts)

    throughput = body["performance_metrics"]["throughput"]
    assert throughput["interface"] == agent.host.agent_if and throughput["idle"] is True
    assert "absence of demand" in throughput["note"] and not [a for a in alerts if a["metric"] == "throughput"]
    assert body["performance_metrics"]["packet_loss"]["probes_sent"] == sum(h.get("sent", 0) for h in body["hosts"])
    recommendations = " ".join(body["recommendations"])
    assert "Latency to reflector.lab exceeded 100" in recommendations
    assert "Loss to reflector.lab reached" in recommendations and "link drops" in recommendations
    assert "nowhere.invalid: cannot resolve" in recommendations
    assert "was idle during the monitor" in recommendations
    assert 0 <= body["monitoring_summary"]["overall_health_score"] < 100


def test_a_cancelled_monitor_returns_what_it_measured(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    request = flat_request("qos_performance_monitor", {"monitor_duration": 600, "metrics": ["latency", "packet_loss"]})
    ctl.publish(f"{agent.base}/cmd/req", request)
    ctl.wait_reply(request["id"], "ack", timeout=5)
    time.sleep(5)
    ctl.publish(f"{agent.base}/cmd/req", flat_request("qos_cancel", {"id": request["id"]}))
    result = ctl.wait_reply(request["id"], "result", timeout=15).json
    assert result["status"] == "cancelled"
    body = result["result"]
    # Targets defaulted to the gateway (the test's end of the veth) and the broker host (the same).
    assert body["monitoring_summary"]["targets"] == [agent_host.gateway]
    assert body["monitoring_summary"]["targets_source"] == "default: gateway and broker"
    gateway = body["hosts"][0]
    assert 4 <= gateway["sent"] <= 7 and gateway["received"] == gateway["sent"]
    assert body["performance_metrics"]["packet_loss"]["total_percent"] == 0
    assert any("stopped early (cancelled)" in w for w in body["warnings"])
