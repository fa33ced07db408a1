"""Nothing is lost: broker outages, agent crashes, and the outbox's bound."""
import json
import signal
import time

import pytest

from mqtt_harness import online
from mqtt_harness import flat_request
from rtk_qos.agent.outbox import Outbox
from rtk_qos.durable import KEEP_ASIDE
from rtk_qos.history import HistoryStore


def _outbox_files(agent, kind="result"):
    """Queued messages of one kind (telemetry falling due while the broker is away queues too)."""
    path = agent.state_dir / "outbox"
    if not path.exists():
        return []
    return sorted(p.name for p in path.iterdir()
                  if p.name.endswith(".msg") and p.read_bytes().split(b" ", 2)[1] == kind.encode())


def test_broker_restart_mid_command_loses_no_result(start_agent, controller, broker):
    agent = start_agent()
    # A persistent controller session, as a real controller has: the broker keeps its
    # subscription and queues what arrives while it reconnects.
    ctl = controller(client_id="lab-controller-1", persistent=True)
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    request = flat_request("qos_traffic_analysis", {"duration": 3, "analysis_type": "basic"})
    ctl.publish(f"{agent.base}/cmd/req", request)
    ctl.wait_reply(request["id"], "ack", timeout=5)
    broker.stop()
    # The result is produced while the broker is down: it waits on disk.
    deadline = time.monotonic() + 10
    while not _outbox_files(agent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_outbox_files(agent)) == 1
    time.sleep(1.0)
    broker.start()
    result = ctl.wait_reply(request["id"], "result", timeout=30)
    assert result.json["status"] == "completed" and result.json["result"]["analysis_summary"]["samples"] == 3
    deadline = time.monotonic() + 5
    while _outbox_files(agent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _outbox_files(agent) == []  # removed once the broker acknowledged it
    assert "connection lost" in agent.log() and agent.log().count("connected to") >= 2


def test_agent_killed_with_results_queued_sends_them_after_restart(start_agent, controller, broker):
    agent = start_agent()
    ctl = controller(client_id="lab-controller-2", persistent=True)
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    ids = []
    for _ in range(3):
        request = flat_request("qos_traffic_analysis", {"duration": 1, "analysis_type": "basic"})
        ctl.publish(f"{agent.base}/cmd/req", request)
        ids.append(request["id"])
    for command_id in ids:
        ctl.wait_reply(command_id, "ack", timeout=5)
    broker.stop()
    deadline = time.monotonic() + 10
    while len(_outbox_files(agent)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    queued = _outbox_files(agent)
    assert len(queued) == 3
    # The order results entered the outbox (the order the commands ended) is the order they leave.
    queued_ids = [json.loads((agent.state_dir / "outbox" / name).read_bytes().split(b"\n", 1)[1])["id"]
                  for name in queued]
    assert sorted(queued_ids) == sorted(ids)
    kept = len(list((agent.state_dir / "outbox").glob("*.msg")))
    agent.stop(signal.SIGKILL)  # a crash: nothing flushed, nothing said
    broker.start()
    agent.start()
    results = ctl.wait_for(lambda m: m.topic.endswith("/cmd/res") and m.body.get("id") in ids, timeout=30, count=3)
    assert [m.body["id"] for m in results] == queued_ids
    assert f"outbox: {kept} messages kept from before the restart" in agent.log()


def test_commands_sent_while_the_agent_is_away_still_arrive(start_agent, controller, broker):
    agent = start_agent()
    ctl = controller()
    ctl.subscribe(f"{agent.base}/cmd/#", f"{agent.base}/lwt")
    online(ctl, agent)
    agent.stop()
    request = flat_request("qos_traffic_analysis", {"duration": 1, "analysis_type": "basic"})
    ctl.publish(f"{agent.base}/cmd/req", request)  # queued by the broker for the persistent session
    agent.start()
    assert ctl.wait_reply(request["id"], "result", timeout=30).json["status"] == "completed"


def test_outbox_bound_drops_telemetry_first_then_events_results_last(tmp_path):
    box = Outbox(str(tmp_path / "box"), max_messages=4, max_bytes=10**6)
    box.put("result", "t/res", b"r1")
    box.put("telemetry", "t/tel", b"t1")
    box.put("event", "t/evt", b"e1")
    box.put("telemetry", "t/tel", b"t2")
    box.put("result", "t/res", b"r2")      # 5 > 4: the oldest telemetry goes
    assert box.dropped == {"telemetry": 1, "event": 0, "state": 0, "reply": 0, "result": 0}
    box.put("result", "t/res", b"r3")      # the other telemetry goes
    box.put("result", "t/res", b"r4")      # then the event
    assert box.dropped["telemetry"] == 2 and box.dropped["event"] == 1
    box.put("result", "t/res", b"r5")      # only results left: the oldest result goes
    assert box.dropped["result"] == 1
    remaining = []
    while (entry := box.oldest(timeout=0)) is not None:
        remaining.append(entry.payload)
        box.remove(entry.seq)
    assert remaining == [b"r2", b"r3", b"r4", b"r5"]


def test_outbox_survives_reopen_in_order_and_sets_aside_damage(tmp_path):
    path = tmp_path / "box"
    box = Outbox(str(path), max_messages=100, max_bytes=10**6)
    for i in range(5):
        box.put("event", "t/evt", f"e{i}".encode(), correlation=b"\x00\x01" if i == 2 else None)
    (path / "0000000000000099.msg.tmp").write_bytes(b"half a message")  # a write cut by a crash
    (path / "0000000000000050.msg").write_bytes(b"not a header")        # damaged
    reopened = Outbox(str(path), max_messages=100, max_bytes=10**6)
    assert len(reopened) == 5
    assert not (path / "0000000000000099.msg.tmp").exists()
    assert len(list(path.glob("0000000000000050.msg.bad-*"))) == 1
    entries = []
    while (entry := reopened.oldest(timeout=0)) is not None:
        entries.append(entry)
        reopened.remove(entry.seq)
    assert [e.payload for e in entries] == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert entries[2].correlation == b"\x00\x01" and entries[0].correlation is None
    assert reopened.put("event", "t/evt", b"next").seq == 6  # after the last good one


def test_outbox_byte_bound(tmp_path):
    box = Outbox(str(tmp_path / "box"), max_messages=100, max_bytes=300)
    for i in range(5):
        box.put("result", "t", bytes(100))
    assert len(box) == 2 and box.bytes <= 300 and box.dropped["result"] == 3
    with pytest.raises(ValueError):
        box.put("gossip", "t", b"x")


def test_damaged_files_set_aside_are_kept_only_the_newest_few(tmp_path):
    path = tmp_path / "box"
    Outbox(str(path))
    for i in range(KEEP_ASIDE + 4):
        (path / f"{i + 1:016d}.msg").write_bytes(b"not a header")
        Outbox(str(path))  # each restart sets the damaged one aside
    kept = sorted(p.name.split(".bad-")[0] for p in path.iterdir())
    assert kept == [f"{i + 1:016d}.msg" for i in range(4, KEEP_ASIDE + 4)]
    history = tmp_path / "history.bin"
    for _ in range(KEEP_ASIDE + 2):
        history.write_bytes(b"RTKQHIST damaged")
        assert "set aside" in HistoryStore.load(str(history))[1]
    assert len(list(tmp_path.glob("history.bin.bad-*"))) == KEEP_ASIDE


def test_replies_are_queued_in_memory_only(tmp_path):
    path = tmp_path / "box"
    box = Outbox(str(path))
    box.put("reply", "t/res", b"rejected")
    assert list(path.iterdir()) == []  # no flash write for a reply the controller can ask again
    box.put("result", "t/res", b"measured")
    assert len(list(path.glob("*.msg"))) == 1
    entries = [box.oldest(timeout=0)]
    box.remove(entries[0].seq)
    entries.append(box.oldest(timeout=0))
    assert [(e.payload, e.path is None) for e in entries] == [(b"rejected", True), (b"measured", False)]
