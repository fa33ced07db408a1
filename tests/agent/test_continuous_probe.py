"""The agent's continuous probe: gateway and configured hosts into the history, each sample scored."""
import math
import time

import pytest

from mqtt_harness import online
from rtk_qos.agent.config import ConfigError, load
from rtk_qos.agent.recorder import DETECTOR_SETTINGS, HistoryRecorder
from rtk_qos.history import HistoryStore

METRICS = ("latency_ms", "jitter_ms", "loss_pct")


def _state(ctl, agent, predicate=lambda body: True, timeout=20):
    """The first state (published from now on) whose payload satisfies predicate."""
    after = time.monotonic()
    return ctl.wait_for(lambda m: m.topic == f"{agent.base}/state" and m.at > after and predicate(m.body),
                        timeout)[-1].body


def _buckets(series, seconds=120):
    """(t, (min, mean, max, score)) of the 1 s tier's present buckets over the last `seconds`."""
    newest = series.newest(0)
    rows = series.read(0, newest - seconds, newest)
    return [(newest - seconds + k, b) for k, b in enumerate(rows) if not math.isnan(b[1])]


def test_gateway_latency_jitter_loss_and_scores_are_recorded(start_agent, controller, agent_host):
    agent = start_agent(probe={"timeout_s": 1.0}, telemetry={"state_period_s": 1})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/state", f"{agent.base}/lwt")
    online(ctl, agent)
    state = _state(ctl, agent, lambda p: p["agent"]["history"]["series"] >= 6)  # 3 interface + 3 probe
    assert state["agent"]["probe"]["targets"] == {"gateway": agent_host.gateway}
    assert state["agent"]["probe"]["problems"] == {}
    time.sleep(3)
    # The gateway stops answering: its echo replies are dropped on their way in.
    agent_host.ns.run("nft", "-f", "-", input="table inet rtkq { chain in { type filter hook input priority 0; "
                                               "icmp type echo-reply drop; }; }")
    dropped_at = int(time.time())
    time.sleep(4)
    agent.stop()  # a clean stop saves

    store, problem = HistoryStore.load(str(agent.state_dir / "history.bin"))
    assert problem is None
    names = {f"probe.gateway.{m}" for m in METRICS} | {f"{agent_host.agent_if}.{m}" for m in ("rx_mbps", "tx_mbps")}
    assert names <= set(store.series)
    latency = _buckets(store.series["probe.gateway.latency_ms"])
    jitter = _buckets(store.series["probe.gateway.jitter_ms"])
    loss = _buckets(store.series["probe.gateway.loss_pct"])
    answered = [b for t, b in latency if t < dropped_at]
    assert len(answered) >= 3 and all(0 < b[0] and b[2] < 100 for b in answered)  # a veth: well under 100 ms
    assert jitter and all(0 <= b[1] < 100 for t, b in jitter)
    assert all(b[2] == 0 for t, b in loss if t < dropped_at)
    assert loss[-1][1][1] > 0 and loss[-1][0] > latency[-1][0]  # lost probes: loss rises, no latency sample
    # Every stored sample carries its score, in [0, 1], beside its value (interfaces too).
    for name in names | {f"{agent_host.agent_if}.error_rate"} & set(store.series):
        for _t, (_lo, _mean, _hi, score) in _buckets(store.series[name]):
            assert 0.0 <= score <= 1.0, (name, score)
    assert "no default gateway" not in agent.log()


def test_no_gateway_is_reported_once_and_configured_hosts_are_still_probed(start_agent, controller, agent_host):
    agent_host.ns.run("ip", "route", "del", "default")  # the broker stays reachable on the link
    target = agent_host.gateway  # the other end of the veth, configured as an extra host
    agent = start_agent(history={"probe_targets": [target]}, telemetry={"state_period_s": 1})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/state", f"{agent.base}/lwt")
    online(ctl, agent)
    probe = _state(ctl, agent, lambda p: p["agent"]["probe"]["targets"])["agent"]["probe"]
    assert probe["targets"] == {target: target}
    assert probe["problems"] == {"gateway": "no default gateway to probe"}
    time.sleep(3)
    agent.stop()
    assert agent.log().count("no default gateway to probe") == 1
    store, problem = HistoryStore.load(str(agent.state_dir / "history.bin"))
    assert problem is None
    assert not any(name.startswith("probe.gateway.") for name in store.series)
    latency = _buckets(store.series[f"probe.{target}.latency_ms"])
    loss = _buckets(store.series[f"probe.{target}.loss_pct"])
    assert latency and all(0 < b[1] < 100 for t, b in latency)
    assert loss and all(b[2] == 0 for t, b in loss)


def test_scores_rise_at_a_change_and_are_saved_beside_the_values(tmp_path):
    """The recorder's detectors with the 1 Hz settings: warm-up scores 0, a latency step scores high."""
    config = load(None, environ={"RTK_QOS_DEVICE_ID": "aabbccddeeff", "RTK_QOS_STATE_DIR": str(tmp_path)})
    recorder = HistoryRecorder(config, probe_targets=1)
    t0 = 1_750_000_000
    for k in range(900):
        rtt = 0.3 + 0.02 * ((k * 7919) % 13) / 13  # calm, deterministic noise
        if k >= 880:
            rtt = 25.0  # bufferbloat
        recorder.record_probes({"gateway": {"latency_ms": rtt, "jitter_ms": math.nan, "loss_pct": 0.0}}, t0 + k)
    recorder.save()
    store, problem = HistoryStore.load(recorder.path)
    assert problem is None and set(store.series) == {"probe.gateway.latency_ms", "probe.gateway.loss_pct"}
    rows = store.series["probe.gateway.latency_ms"].read(0, t0, t0 + 899)
    scores = [b[3] for b in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores[:DETECTOR_SETTINGS["warmup"]]) == 0.0  # warming up
    assert max(scores[600:880]) < 0.5 < max(scores[880:])


def test_interfaces_and_probe_targets_have_their_own_budgets(tmp_path):
    config = load(None, environ={"RTK_QOS_DEVICE_ID": "aabbccddeeff", "RTK_QOS_STATE_DIR": str(tmp_path),
                                 "RTK_QOS_HISTORY_MAX_INTERFACES": "1"})
    recorder = HistoryRecorder(config, probe_targets=1)
    assert recorder.store.max_series == 6
    rates = {"eth0": {"rx_mbps": 1.0, "tx_mbps": 1.0, "rx_pps": 10.0, "tx_pps": 10.0, "errors_ps": 0, "drops_ps": 0}}
    recorder.record(rates, 1_750_000_000)
    recorder.record(dict(eth1=rates["eth0"]), 1_750_000_000)  # past max_interfaces: refused
    recorder.record_probes({"gateway": {"latency_ms": 1.0, "jitter_ms": 0.1, "loss_pct": 0.0}}, 1_750_000_000)
    recorder.record_probes({"10.0.0.9": {"latency_ms": 1.0, "jitter_ms": 0.1, "loss_pct": 0.0}}, 1_750_000_000)
    assert sorted(recorder.store.series) == sorted(recorder.detectors) == sorted(
        [f"eth0.{m}" for m in ("rx_mbps", "tx_mbps", "error_rate")] + [f"probe.gateway.{m}" for m in METRICS])
    assert recorder.store.refused == 6  # eth1 and the unbudgeted target, not the gateway


@pytest.mark.parametrize("history, message", [
    ({"probe_interval_s": 0.01}, "history.probe_interval_s: 0.01 is not 0 (off) or between 0.1 and 60.0"),
    ({"probe_interval_s": -1}, "history.probe_interval_s: -1.0 is not 0 (off)"),
    ({"probe_interval_s": 3600}, "history.probe_interval_s: 3600.0 is not 0 (off)"),
    ({"probe_interval_s": "fast"}, "history.probe_interval_s: expected number, got string"),
    ({"probe_targets": "8.8.8.8"}, "history.probe_targets: expected list, got string"),
    ({"probe_targets": [8]}, "history.probe_targets: 8 is not a host name or address"),
    ({"probe_targets": ["a host"]}, "history.probe_targets: 'a host' is not a host name or address"),
    ({"probe_targets": ["gateway"]}, "'gateway' names the default gateway"),
    ({"probe_targets": ["h1", "h1"]}, "a host is listed twice"),
    ({"probe_targets": [f"h{k}" for k in range(9)]}, "9 hosts, at most 8"),
])
def test_bad_probe_settings_are_named(history, message):
    with pytest.raises(ConfigError) as info:
        load(None, environ={"RTK_QOS_DEVICE_ID": "aabbccddeeff"}, flags={"history": history})
    assert message in str(info.value)


def test_probe_settings_from_the_environment():
    config = load(None, environ={"RTK_QOS_DEVICE_ID": "aabbccddeeff", "RTK_QOS_HISTORY_PROBE_TARGETS": "10.0.0.9,fe80::1%eth0",
                                 "RTK_QOS_HISTORY_PROBE_INTERVAL_S": "0"})
    assert config["history"]["probe_targets"] == ["10.0.0.9", "fe80::1%eth0"]
    assert config["history"]["probe_interval_s"] == 0.0
