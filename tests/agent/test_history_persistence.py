"""The agent's metric history outlives a restart, and a damaged history file costs nothing but itself."""
import time

from mqtt_harness import online
from rtk_qos.history import HistoryStore


def _state(ctl, agent, after=0.0, timeout=20):
    return ctl.wait_for(lambda m: m.topic == f"{agent.base}/state" and m.at > after, timeout)[-1].body


def test_history_survives_a_restart(start_agent, controller, agent_host):
    agent = start_agent(history={"save_every_s": 2}, telemetry={"state_period_s": 2})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/state", f"{agent.base}/lwt")
    online(ctl, agent)
    agent_host.ns.run("ping", "-c", "4", "-i", "0.5", "-q", agent_host.gateway)
    time.sleep(3)
    before = _state(ctl, agent, time.monotonic())["agent"]["history"]
    # 3 per interface, 3 from the continuous gateway probe
    assert before["series"] == 6 and before["samples"] >= 12 and before["problem"] is None
    agent.stop()  # a clean stop saves
    store, problem = HistoryStore.load(str(agent.state_dir / "history.bin"))
    assert problem is None
    assert sorted(store.series) == [f"{agent_host.agent_if}.{m}" for m in ("error_rate", "rx_mbps", "tx_mbps")] + [
        f"probe.gateway.{m}" for m in ("jitter_ms", "latency_ms", "loss_pct")]
    rx = store.series[f"{agent_host.agent_if}.rx_mbps"]
    saved = sum(series.samples for series in store.series.values())
    # The pings' replies are in the 1 s tier: some second saw traffic.
    newest = rx.newest(0)
    assert any(b[2] > 0 for b in rx.read(0, newest - 30, newest) if b[2] == b[2])
    mark = time.monotonic()
    agent.start()
    after = _state(ctl, agent, mark)["agent"]["history"]
    assert after["problem"] is None and after["samples"] >= saved  # loaded, then growing
    assert "history: 6 series loaded" in agent.log()


def test_a_damaged_history_file_is_set_aside(start_agent, controller, tmp_path):
    path = tmp_path / "flash" / "history.bin"
    path.parent.mkdir()
    path.write_bytes(b"RTKQHIST" + b"\x01\x00\x00\x00" + b"\xff" * 64)
    agent = start_agent(history={"path": str(path)}, telemetry={"state_period_s": 2})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/state", f"{agent.base}/lwt")
    online(ctl, agent)
    history = _state(ctl, agent, time.monotonic())["agent"]["history"]
    assert "set aside" in history["problem"] and history["path"] == str(path)
    assert len(list(path.parent.glob("history.bin.bad-*"))) == 1
    assert agent.proc.poll() is None
