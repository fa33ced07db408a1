"""The receiver process (controller/receiver.py) against a real mosquitto: several sessions, acks
only of the connection a message came on, close without acknowledging, publishing; and inside the
controller: a killed receiver is started again without losing anything, a killed controller leaves
no receiver behind."""
import json
import os
import select
import signal
import threading
import time
from pathlib import Path

from mqtt_harness import Controller
from rtk_qos.controller.receiver import Batch, Down, Receiver, Subscribed, Up

BROKER_TABLE = {"host": "127.0.0.1", "keepalive_s": 30}


def _collect(receiver: Receiver, until, timeout: float = 10.0) -> list:
    """Events until `until(events)` holds."""
    events: list = []
    deadline = time.monotonic() + timeout
    while not until(events):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {events}"
        if select.select([receiver.fileno()], [], [], left)[0]:
            events += receiver.read()
    return events


def _messages(events: list, session: str) -> list:
    return [m for e in events if isinstance(e, Batch) and e.session == session for m in e.messages]


def _resumed(session: str, count: int):
    """Its `count` messages again, and its Up (which may come after them)."""
    return lambda ev: len(_messages(ev, session)) == count and any(isinstance(e, Up) and e.session == session
                                                                   for e in ev)


def _open(receiver: Receiver, port: int, name: str, topics: list[str]) -> None:
    receiver.open(name, {**BROKER_TABLE, "port": port}, f"test-receiver-{name}-{os.getpid()}", topics, 600, 100)


def test_sessions_are_separate_and_only_an_ack_of_the_live_connection_counts(broker):
    device = Controller(broker.plain_port)
    device.subscribe("out/#")
    receiver = Receiver("warning")
    receiver.start()
    try:
        _open(receiver, broker.plain_port, "a", ["a/#"])
        _open(receiver, broker.plain_port, "b", ["b/#"])
        events = _collect(receiver, lambda ev: {e.session for e in ev if isinstance(e, Up)} == {"a", "b"})
        for i in range(5):
            device.client.publish(f"a/{i}", f"to a {i}", qos=1)
            device.client.publish(f"b/{i}", f"to b {i}", qos=1).wait_for_publish(5)
        events = _collect(receiver, lambda ev: len(_messages(ev, "a")) == 5 and len(_messages(ev, "b")) == 5)
        assert [(t, p, q) for t, p, q, _mid in _messages(events, "a")] == [(f"a/{i}", f"to a {i}".encode(), 1)
                                                                         for i in range(5)]
        assert all(t.startswith("b/") for t, *_ in _messages(events, "b"))
        a_link = next(e.link for e in events if isinstance(e, Batch) and e.session == "a")
        b_batches = [e for e in events if isinstance(e, Batch) and e.session == "b"]
        receiver.ack(a_link, [mid for *_, mid in _messages(events, "a")])

        # b closes without acknowledging: resumed, the broker sends its five again, on a new connection.
        receiver.close("b")
        _collect(receiver, lambda ev: any(isinstance(e, Down) and e.session == "b" for e in ev))
        _open(receiver, broker.plain_port, "b", ["b/#"])
        again = _collect(receiver, _resumed("b", 5))
        assert sorted(p for _t, p, *_ in _messages(again, "b")) == [f"to b {i}".encode() for i in range(5)]
        new_link = next(e.link for e in again if isinstance(e, Batch))
        assert new_link != b_batches[0].link
        # An ack of the old connection's ids is discarded: they come a third time.
        for batch in b_batches:
            receiver.ack(batch.link, [mid for *_, mid in batch.messages])
        receiver.close("b")
        _open(receiver, broker.plain_port, "b", ["b/#"])
        third = _collect(receiver, _resumed("b", 5))
        for batch in (e for e in third if isinstance(e, Batch)):
            receiver.ack(batch.link, [mid for *_, mid in batch.messages])
        # Acknowledged on their own connection: gone for good (a was acknowledged before).
        receiver.close("b")
        receiver.close("a")
        _open(receiver, broker.plain_port, "a", ["a/#"])
        _open(receiver, broker.plain_port, "b", ["b/#"])
        _collect(receiver, lambda ev: {e.session for e in ev if isinstance(e, Up)} == {"a", "b"})
        receiver.subscribe("a", ["extra/#"])
        _collect(receiver, lambda ev: any(isinstance(e, Subscribed) and e.topics == ["extra/#"] for e in ev))
        receiver.publish("out/x", b"from a", 1, session="a")
        device.client.publish("extra/1", "late", qos=1).wait_for_publish(5)
        rest = _collect(receiver, lambda ev: _messages(ev, "a"))
        time.sleep(0.5)
        rest += receiver.read()
        assert [(t, p) for t, p, *_ in _messages(rest, "a")] == [("extra/1", b"late")]
        assert _messages(rest, "b") == []
        assert device.wait_for(lambda m: m.topic == "out/x")[0].raw == b"from a"
    finally:
        receiver.stop()
        device.close()


def _receiver_pid(controller_pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{controller_pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise AssertionError("the controller started no receiver")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


DEVICE = "0a0b0c0d0e02"


def test_a_killed_receiver_is_started_again_and_nothing_is_lost(broker, start_controller):
    ctl = start_controller()
    device = Controller(broker.plain_port)
    total = 300
    published = threading.Event()

    def publish():
        for seq in range(total):
            time.sleep(0.01)
            event = {"schema": "evt.link_flap/1.0", "ts": int(time.time() * 1000), "device_id": DEVICE,
                     "payload": {"event_type": "link_flap", "severity": "info", "seq": seq}}
            device.client.publish(f"rtk/v1/lab/bench/{DEVICE}/evt/link_flap", json.dumps(event), qos=1)
        published.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    first = _receiver_pid(ctl.proc.pid)
    ctl.http.wait("/api/status", lambda s: s["counts"].get("in_evt", 0) > 20, every=0.02)
    os.kill(first, signal.SIGKILL)
    status = ctl.http.wait("/api/status", lambda s: s["counts"].get("receiver_restarts") == 1 and s["connected"])
    assert status["counts"]["receiver_restarts"] == 1
    publisher.join(30)
    assert published.is_set()
    with ctl.db() as db:
        deadline = time.monotonic() + 30
        while db.execute("SELECT COUNT(*) FROM events").fetchone()[0] < total:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        seqs = sorted(json.loads(p)["seq"] for (p,) in db.execute("SELECT payload FROM events"))
    assert seqs == list(range(total))  # none lost, none twice
    assert _receiver_pid(ctl.proc.pid) != first
    assert "receiver process ended" in ctl.log()
    device.close()


def test_a_killed_controller_leaves_no_receiver(broker, start_controller):
    ctl = start_controller()
    receiver = _receiver_pid(ctl.proc.pid)
    assert not _gone(receiver)
    ctl.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _gone(receiver):
        assert time.monotonic() < deadline, "the receiver outlived its controller"
        time.sleep(0.05)
