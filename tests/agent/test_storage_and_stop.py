"""What the agent does when its storage fails or stalls, and how it stops: a full state
directory (a tmpfs of a few pages), flash that stops answering (a frozen ext4 on a loop
device), and a stop under load with the broker hung, within systemd's stop timeout."""
import contextlib
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mqtt_harness import flat_request, online
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rtk_qos.agent.session import delivered
from rtk_qos.history import HistoryStore

UNIT = Path(__file__).resolve().parents[2] / "cross" / "systemd" / "rtk-qos.service"
LONG = {"duration": 60, "analysis_type": "basic", "interfaces": ["eth0"]}


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


class Disk:
    """A file system the test mounted at `path`."""

    def __init__(self, path: Path):
        self.path = path
        self.frozen = False

    def fill(self) -> None:
        """Take its last free byte."""
        for chunk in (bytes(4096), b"x"):
            with contextlib.suppress(OSError), open(self.path / "filler", "ab", buffering=0) as f:
                while True:
                    f.write(chunk)

    def freeze(self) -> None:
        """Every write blocks, as flash that stops answering does, until the fixture ends."""
        _run("fsfreeze", "--freeze", str(self.path))
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            subprocess.run(["fsfreeze", "--unfreeze", str(self.path)], capture_output=True)
            self.frozen = False


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs."""
    disk = Disk(tmp_path / "small")
    disk.path.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(disk.path))
    yield disk
    subprocess.run(["umount", "-l", str(disk.path)], capture_output=True)


@pytest.fixture
def freezable_disk(tmp_path):
    """ext4 on a loop device (tmpfs cannot be frozen)."""
    image, disk = tmp_path / "flash.img", Disk(tmp_path / "flash")
    disk.path.mkdir()
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    _run("mkfs.ext4", "-q", str(image))
    _run("mount", "-o", "loop", str(image), str(disk.path))
    try:
        yield disk
    finally:
        disk.thaw()
        subprocess.run(["umount", "-l", str(disk.path)], capture_output=True)


def _states(ctl, agent, after):
    return [m.body for m in ctl.messages if m.topic == f"{agent.base}/state" and m.at > after]


def test_a_full_state_dir_loses_no_reply_and_the_log_says_why(small_disk, start_agent, controller):
    agent = start_agent(state_dir=str(small_disk.path), telemetry={"state_period_s": 1})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt", f"{agent.base}/state")
    online(ctl, agent)
    small_disk.fill()
    bad = flat_request("qos_traffic_analysis", {"duration": 0})
    ctl.publish(f"{agent.base}/cmd/req", bad)
    rejected = ctl.wait_reply(bad["id"], "result", timeout=10).json
    assert rejected["error_code"] == 1001  # a rejection needs no file: the full disk is no matter
    good = flat_request("qos_traffic_analysis", {"duration": 1, "analysis_type": "basic"})
    ctl.publish(f"{agent.base}/cmd/req", good)
    result = ctl.wait_reply(good["id"], "result", timeout=15).json
    assert result["status"] == "completed" and result["result"]["analysis_summary"]["samples"] == 1
    assert re.search(r"outbox: result #\d+ for \S+ not written to disk \(.*No space left on device\): kept in "
                     r"memory only", agent.log())
    mark = time.monotonic()
    ctl.wait_for(lambda m: m.topic == f"{agent.base}/state" and m.at > mark and m.body["health"] == "warning",
                 timeout=20)
    reasons = _states(ctl, agent, mark)[-1]["health_reasons"]
    assert any("outbox not writable" in r and "No space left on device" in r for r in reasons), reasons


def test_stalled_flash_does_not_stall_sampling(freezable_disk, start_agent, controller):
    agent = start_agent(history={"path": str(freezable_disk.path / "history.bin"), "save_every_s": 1},
                        telemetry={"state_period_s": 1})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/state", f"{agent.base}/lwt")
    online(ctl, agent)
    ctl.wait_for(lambda m: m.topic == f"{agent.base}/state" and m.body["agent"]["history"]["saved_at"], timeout=20)
    freezable_disk.freeze()  # the next save blocks in the kernel until the disk thaws
    try:
        time.sleep(2)
        mark = time.monotonic()
        states = ctl.wait_for(lambda m: m.topic == f"{agent.base}/state" and m.at > mark, timeout=20, count=3)
    finally:
        freezable_disk.thaw()  # before the agent stops: a thread blocked in the kernel would keep it alive
    samples = [m.body["agent"]["history"]["samples"] for m in states]
    # Still sampling once a second while the save waits.
    assert samples[0] < samples[1] < samples[2], samples


def test_stop_under_load_with_a_hung_broker_ends_within_the_unit_timeout_and_saves(
        start_agent, controller, broker, agent_host):
    timeout_s = float(re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M).group(1))
    agent = start_agent(limits={"max_running": 4, "max_queued": 8})
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt", f"{agent.base}/state")
    online(ctl, agent)
    ids = []
    for _ in range(8):  # four running, four queued
        request = flat_request("qos_traffic_analysis", LONG)
        ctl.publish(f"{agent.base}/cmd/req", request)
        ids.append(request["id"])
    for command_id in ids:
        ctl.wait_reply(command_id, "ack", timeout=10)
    agent_host.ns.run("ping", "-c", "3", "-i", "0.5", "-q", agent_host.gateway)
    broker.proc.send_signal(signal.SIGSTOP)  # hung: the connection stays up, nothing is acknowledged
    try:
        time.sleep(1)
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(timeout=timeout_s + 10)
        took = time.monotonic() - started
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    assert took < timeout_s, f"stop took {took:.1f} s, systemd kills after {timeout_s:.0f} s"
    assert agent.proc.returncode == 0
    store, problem = HistoryStore.load(str(agent.state_dir / "history.bin"))
    assert problem is None and sum(s.samples for s in store.series.values()) >= 3
    log = agent.log()
    # Saved first, before anything slow (commands, a hung broker) can use up the stop timeout.
    assert -1 < log.rfind("history saved") < log.find("stop: cancelling 8 running or queued commands")
    # Every cancelled command's result waits in the outbox for the broker.
    queued = [p.read_bytes() for p in (agent.state_dir / "outbox").glob("*.msg")]
    assert all(any(command_id.encode() in q for q in queued) for command_id in ids)



def test_a_publish_paho_reports_failed_is_not_delivered_and_raises_nothing(broker):
    # A stopping agent publishes "offline" and waits for it; when the broker dies under it (a
    # Ctrl-C that reached the broker too), paho marks the publish failed and raises from its
    # checks. For the session it is a message not delivered (the outbox keeps a result), no crash.
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.plain_port)
    client.loop_start()
    try:
        assert delivered(client.publish("t/sent", b"x", qos=1), 5.0)
        broker.stop()
        deadline = time.monotonic() + 10
        while client.is_connected():
            assert time.monotonic() < deadline, "paho never saw the broker go"
            time.sleep(0.05)
        lost = client.publish("t/lost", b"x", qos=1)
        with pytest.raises(RuntimeError):
            lost.is_published()
        assert not delivered(lost) and not delivered(lost, 0.2)
    finally:
        client.loop_stop()
