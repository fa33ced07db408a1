"""One probe service per process: a command that wants the gateway's figures subscribes to the
agent's continuous probe instead of probing the gateway a second time."""
import re

from mqtt_harness import flat_request, online

DURATION = 10


def _echo_requests(agent_host) -> int:
    listing = agent_host.ns.run("nft", "list", "table", "inet", "rtkq_count").stdout
    return int(re.search(r"counter packets (\d+)", listing).group(1))


def test_a_traffic_analysis_shares_the_agents_gateway_probe(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    # Count the echo requests leaving the agent's namespace for its gateway.
    agent_host.ns.run("nft", "-f", "-", input=(
        "table inet rtkq_count { chain out { type filter hook output priority 0; "
        f"ip daddr {agent_host.gateway} icmp type echo-request counter; }}; }}"))
    request = flat_request("qos_traffic_analysis", {"duration": DURATION, "analysis_type": "comprehensive"})
    ctl.publish(f"{agent.base}/cmd/req", request)
    result = ctl.wait_reply(request["id"], "result", timeout=DURATION + 15).json
    sent = _echo_requests(agent_host)
    qos = result["result"]["qos_metrics"]
    assert qos["latency_target"] == agent_host.gateway and qos["probe_method"] == "icmp-raw"
    assert DURATION - 2 <= qos["probes_sent"] <= DURATION + 1 and qos["packet_loss_percent"] == 0
    assert qos["avg_latency_ms"] is not None
    # One probe a second in all (the agent's), not one for the agent and one for the command.
    assert DURATION - 1 <= sent <= DURATION + 4, sent
