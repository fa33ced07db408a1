"""qos_auto_optimization, qos_config and qos_shaping_confirm end to end: the one-shot CLI in a
bloated router, and the agent over MQTT (apply, confirm, enable: false, SIGKILL while pending)."""
import json
import os
import signal
import subprocess
import sys
import time

from mqtt_harness import flat_request, online
from rtk_qos.shaping import tcstate


def tree_of(ns, ifname):
    from pyroute2 import NetNS
    with NetNS(ns.name) as ipr:
        return tcstate.read(ipr, ifname)


def test_dry_run_under_load_measures_the_bloat_plans_and_changes_nothing(rig, tmp_path):
    before = tree_of(rig.router, rig.uplink)
    upload = rig.upload(25, "cubic")
    time.sleep(3)
    args = {"optimization_goals": ["minimize_latency"],
            "constraints": {"max_bandwidth_mbps": 8, "priority_applications": ["voip"]}}
    env = {**os.environ, "RTK_QOS_STATE_DIR": str(tmp_path)}
    proc = subprocess.run(rig.router.argv(sys.executable, "-m", "rtk_qos", "run", "qos_auto_optimization",
                                          "--args", json.dumps(args), "--compact"),
                          capture_output=True, text=True, timeout=60, env=env)
    upload.kill()
    assert proc.returncode == 0, proc.stderr
    message = json.loads(proc.stdout)
    assert message["status"] == "completed"
    result = message["result"]
    state = result["current_state"]
    assert state["uplink"] == rig.uplink and state["capacity_source"] == "constraints.max_bandwidth_mbps"
    assert state["condition"] == "loaded" and state["measurement"]["latency_ms"]["p50"] > 100
    kinds = {issue["type"] for issue in result["identified_issues"]}
    assert {"bufferbloat", "no_queue_management"} <= kinds
    plan = result["optimization_plan"]
    assert plan["leaf_queue"]["kind"] == "tbf" and plan["root"]["shaped_rate_mbps"] == 7.6
    assert plan["ingress"]["shaped"] and plan["ingress"]["ifb"] == "ifb4wan0"  # this kernel has mirred
    steps = result["diff"]["steps"]
    assert steps[0] == "ip link add ifb4wan0 type ifb && ip link set ifb4wan0 up"
    assert steps[-1].endswith("action mirred egress redirect dev ifb4wan0")
    assert [line for line in plan["tc_commands"] if line.startswith("tc ") and "ingress" not in line
            and "mirred" not in line] == steps[1:-1]
    improvement = result["estimated_improvement"]
    assert improvement["latency_reduction_ms"] == round(
        state["measurement"]["latency_ms"]["p50"] - plan["leaf_queue"]["target_delay_ms"], 2)
    assert result["bufferbloat"]["grade"] is None and "idle" in result["bufferbloat"]["reason"]
    assert result["execution_result"] == {"status": "simulated", "changes": "none"}
    assert tree_of(rig.router, rig.uplink).signature() == before.signature()


def _request(ctl, agent, op, args, timeout=60):
    request = flat_request(op, args)
    ctl.publish(f"{agent.base}/cmd/req", request)
    return ctl.wait_reply(request["id"], "result", timeout=timeout).json


def test_router_changes_are_refused_unless_allowed_and_dry_run_is_not(start_agent, controller, agent_host):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    args = {"optimization_goals": ["minimize_latency"], "constraints": {"max_bandwidth_mbps": 100}}
    refused = _request(ctl, agent, "qos_auto_optimization", {**args, "dry_run": False})
    assert refused["error_code"] == 1003
    refused = _request(ctl, agent, "qos_config", {"policy": "gaming"})
    assert refused["error_code"] == 1003
    dry = _request(ctl, agent, "qos_auto_optimization", args)
    assert dry["status"] == "completed" and dry["result"]["execution_result"]["status"] == "simulated"
    assert tree_of(agent_host.ns, agent_host.agent_if).configured() == []


def _wait_state(ctl, agent, shaping_state, timeout=30):
    return ctl.wait_for(lambda m: m.topic == f"{agent.base}/state"
                        and m.body["agent"]["shaping"]["state"] == shaping_state, timeout=timeout)[-1].body


def test_agent_applies_confirms_reverts_and_reverts_at_restart_after_sigkill(start_agent, controller, agent_host):
    agent = start_agent(security={"allow_router_changes": True})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt", f"{agent.base}/state", f"{agent.base}/evt/#")
    online(ctl, agent)
    ifname = agent_host.agent_if
    before = tree_of(agent_host.ns, ifname)
    args = {"optimization_goals": ["minimize_latency"], "constraints": {"max_bandwidth_mbps": 100},
            "dry_run": False}
    applied = _request(ctl, agent, "qos_auto_optimization", args, timeout=90)
    execution = applied["result"]["execution_result"]
    assert execution["state"] == "pending" and execution["confirm_timeout_s"] == 120.0
    assert applied["result"]["verification"]["after"]["latency_ms"] is not None
    assert tree_of(agent_host.ns, ifname).root.kind == "htb"
    state = _wait_state(ctl, agent, "pending")
    assert "qdisc:htb" in state["agent"]["shaping"]["features"]
    confirmed = _request(ctl, agent, "qos_shaping_confirm", {"transaction": execution["transaction"]})
    assert confirmed["result"] == {"transaction": execution["transaction"], "state": "confirmed"}
    # qos_config on top keeps the original snapshot: enable false returns to what was there first.
    configured = _request(ctl, agent, "qos_config", {"policy": "work", "rules": [
        {"name": "ssh", "match": {"protocol": "tcp", "port_range": "22"}, "priority": "high"}]}, timeout=30)
    assert "result" in configured and configured["result"]["execution_result"]["state"] == "pending", (
        configured.get("error"), configured.get("error_details"))
    assert any("rule ssh -> high" in line for line in configured["result"]["tc_commands"])
    disabled = _request(ctl, agent, "qos_config", {"policy": "balanced", "enable": False})
    assert disabled["result"]["revert"]["restored"][ifname]["exact"] is True
    assert tree_of(agent_host.ns, ifname).signature() == before.signature()
    # Pending, then killed: the next start reverts it.
    _request(ctl, agent, "qos_auto_optimization", args, timeout=90)
    agent.stop(signal.SIGKILL)
    assert tree_of(agent_host.ns, ifname).root.kind == "htb"
    agent.start()
    event = ctl.wait_for(lambda m: m.topic == f"{agent.base}/evt/shaping_reverted"
                         and m.body["reason"].startswith("agent restarted"), timeout=30)[0].body
    assert event["reason"] == "agent restarted while the change was pending"
    assert event["restored"][ifname]["exact"] is True
    assert tree_of(agent_host.ns, ifname).signature() == before.signature()
    _wait_state(ctl, agent, "reverted")
