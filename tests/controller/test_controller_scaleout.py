"""Several controller instances over one PostgreSQL and one mosquitto (scaleout.py), with a
simulated fleet streaming at QoS 1: kill -9 one instance mid-stream and every telemetry message
and event the broker acknowledged is stored exactly once, the dead instance's partitions (and
the monitoring sessions and open alert episodes of their devices) move to a survivor, every
instance's API answers the same, and an instance joining takes its share."""
import collections
import concurrent.futures
import signal
import threading
import time

import pytest

from fleet_sim import FleetSim, Stream, device_ids, sse
from rtk_qos.controller import config as config_mod
from rtk_qos.controller.partitions import assign, partition_of
from rtk_qos.controller.store import StoreError, open_store
from rtk_qos.settings import ConfigError

PARTITIONS = 8
# Short leases: a dead instance's partitions are taken over within about 3 s.
SCALE = {"partitions": PARTITIONS, "lease_s": 2.0, "renew_s": 0.5}


@pytest.fixture
def database(postgres_server):
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _instances(start_controller, database, count):
    return [start_controller(store={"url": database}, scale=SCALE) for _ in range(count)]


def _shares(ctls) -> dict:
    return {ctl: ctl.http.get("/api/status")["scale"]["partitions"] for ctl in ctls}


def _wait_balanced(ctls, timeout: float = 30) -> dict:
    """Every partition held by exactly one of `ctls`, at most ceil(P / n) each."""
    cap = -(-PARTITIONS // len(ctls))
    deadline = time.monotonic() + timeout
    while True:
        shares = _shares(ctls)
        held = sorted(p for parts in shares.values() for p in parts)
        if held == list(range(PARTITIONS)) and all(len(parts) <= cap for parts in shares.values()):
            return shares
        assert time.monotonic() < deadline, f"partitions not dealt: {list(shares.values())}"
        time.sleep(0.2)


def _owner(ctls, device_id):
    part = partition_of(device_id, PARTITIONS)
    return next(ctl for ctl, parts in _shares(ctls).items() if part in parts)


def _announce(broker, ctls, devices) -> None:
    """The fleet announces itself (retained lwt and state) and waits until the controllers list it."""
    sim = FleetSim(broker.plain_port)
    for device_id in devices:
        sim.online(device_id)
    sim.close()
    for ctl in ctls:
        ctl.http.wait("/api/devices", lambda body: sum(d["status"] == "online" for d in body["devices"]) == len(devices))


def _streaming(broker, start_controller, database, instances: int, devices: int):
    """Instances with the partitions dealt, and an announced fleet streaming at 10 Hz (an event a second)."""
    ctls = _instances(start_controller, database, instances)
    _wait_balanced(ctls)
    fleet = device_ids(devices)
    _announce(broker, ctls, fleet)
    stream = Stream(broker.plain_port, fleet, hz=10, event_every=10)
    stream.start()
    return ctls, stream


def _stored(ctl) -> tuple[dict, dict]:
    """(device -> samples stored, device -> events stored), from the database itself."""
    with ctl.db() as db:
        samples = dict(db.execute("SELECT s.device_id, COUNT(*) FROM samples_raw r JOIN series s ON s.id = r.series_id "
                                  "GROUP BY 1").fetchall())
        events = dict(db.execute("SELECT device_id, COUNT(*) FROM events GROUP BY 1").fetchall())
    return samples, events


def _wait_all_stored(ctl, stream, timeout: float = 60) -> None:
    telemetry = {d: stream.published[(d, "telemetry")] for d in stream.devices}
    events = {d: stream.published[(d, "event")] for d in stream.devices}
    deadline = time.monotonic() + timeout
    while True:
        samples, stored_events = _stored(ctl)
        if samples == telemetry and stored_events == events:
            return
        missing = {d: telemetry[d] - samples.get(d, 0) for d in telemetry if samples.get(d, 0) != telemetry[d]}
        assert all(n > 0 for n in missing.values()), f"more stored than published: {missing}"
        assert time.monotonic() < deadline, (f"samples missing per device: {missing}; events stored "
                                             f"{sum(stored_events.values())} of {sum(events.values())}")
        time.sleep(0.5)


def _live_alerts(ctl) -> list:
    """The alert notes of `ctl`'s /api/events, as they come (a thread fills the list)."""
    seen: list = []
    ready = threading.Event()

    def read():
        for kind, data in sse(ctl.http.url, ready, timeout=120):
            if kind == "alert":
                seen.append(data)
    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(10)
    return seen


def _same_answers(ctls) -> None:
    for path in ("/api/devices", "/api/sessions", "/api/alerts"):
        answers = [ctl.http.get(path) for ctl in ctls]
        assert all(answer == answers[0] for answer in answers[1:]), path


def test_kill_9_one_of_three_loses_nothing_and_its_sessions_and_episodes_move(database, broker, start_controller):
    ctls, stream = _streaming(broker, start_controller, database, 3, 24)
    watched = stream.devices[0]
    victim = _owner(ctls, watched)
    other = next(ctl for ctl in ctls if ctl is not victim)
    live = _live_alerts(other)
    # Asked of an instance that does not own the device: passed on to the owner.
    session = other.http.post("/api/sessions", {"device_id": watched, "duration": 600, "sampling_interval": 1,
                                                "metrics": ["latency"], "thresholds": {"latency_ms": 100}}, 201)
    assert victim.http.get("/api/status")["active_sessions"] == 1
    stream.latency_ms[watched] = 300.0  # three 1 s evaluations past the threshold open an episode
    victim.http.wait(f"/api/alerts?session_id={session['id']}&state=open", lambda body: len(body["alerts"]) == 1,
                     timeout=30)
    deadline = time.monotonic() + 10
    while not any(alert["session_id"] == session["id"] for alert in live):  # the owner's note, on other's stream
        assert time.monotonic() < deadline, live
        time.sleep(0.1)
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    survivors = [ctl for ctl in ctls if ctl is not victim]
    shares = _wait_balanced(survivors)
    heir = _owner(survivors, watched)
    assert heir.http.get("/api/status")["active_sessions"] == 1  # the session moved with its partition
    stream.latency_ms[watched] = 20.0  # back inside: the heir closes the episode the victim opened
    heir.http.wait(f"/api/alerts?session_id={session['id']}&state=closed", lambda body: len(body["alerts"]) == 1,
                   timeout=30)
    stream.finish()
    alerts = heir.http.get(f"/api/alerts?session_id={session['id']}")["alerts"]
    assert [a["state"] for a in alerts] == ["closed"], alerts  # one episode, opened by one, closed by the other
    assert heir.http.get(f"/api/sessions/{session['id']}")["status"] == "active"
    bystander = next(ctl for ctl in survivors if ctl is not heir)
    assert bystander.http.post(f"/api/sessions/{session['id']}/stop", {})["status"] == "stopped"
    _wait_all_stored(heir, stream)
    assert stream.total("telemetry") > 0 and stream.total("event") > 0
    assert sorted(p for parts in shares.values() for p in parts) == list(range(PARTITIONS))
    _same_answers(survivors)


def test_two_instances_kill_9_then_a_joining_instance_takes_its_share(database, broker, start_controller):
    ctls, stream = _streaming(broker, start_controller, database, 2, 16)
    time.sleep(2.0)
    victim, survivor = ctls
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _wait_balanced([survivor])[survivor] == list(range(PARTITIONS))
    joiner = start_controller(store={"url": database}, scale=SCALE)
    shares = _wait_balanced([survivor, joiner])
    assert len(shares[joiner]) == PARTITIONS // 2
    time.sleep(2.0)  # the joiner ingests its share of the stream
    stream.finish()
    _wait_all_stored(joiner, stream)
    assert joiner.http.get("/api/status")["counts"]["in_telemetry"] > 0
    _same_answers([survivor, joiner])


def test_partitions_are_dealt_evenly_and_a_joiner_moves_only_its_share():
    devices = device_ids(10000)
    sizes = collections.Counter(partition_of(d, 32) for d in devices)
    assert len(sizes) == 32 and max(sizes.values()) < 2 * min(sizes.values())
    two, three = assign(32, ["a", "b"]), assign(32, ["a", "b", "c"])
    assert sorted(collections.Counter(two.values()).values()) == [16, 16]
    assert sorted(collections.Counter(three.values()).values()) == [10, 11, 11]
    moved = [p for p in range(32) if two[p] != three[p]]
    assert all(three[p] == "c" for p in moved) and len(moved) == 10  # only what the newcomer takes
    assert assign(32, ["b", "a"]) == two  # every instance computes the same from the same members


def test_several_instances_need_postgresql_and_one_partition_count(database):
    with pytest.raises(ConfigError, match="scale.partitions: several instances need a PostgreSQL store"):
        config_mod.load(environ={}, flags={"state_dir": "/tmp/x", "scale": {"partitions": 8}})
    with pytest.raises(ConfigError, match="scale.lease_s: 1.0 must be at least twice scale.renew_s"):
        config_mod.load(environ={}, flags={"store": {"url": database}, "scale": {"partitions": 8, "lease_s": 1.0}})
    store = open_store(database)
    try:
        store.setup_partitions(8)
        store.setup_partitions(8)  # the same count again: fine
        with pytest.raises(StoreError, match="scale.partitions: 16, but .* is split into 8 partitions"):
            store.setup_partitions(16)
    finally:
        store.close()


def test_a_taken_over_lease_fences_the_old_owner_out(database):
    a, b = open_store(database), open_store(database)
    try:
        a.setup_partitions(2)
        assert a.acquire_lease(0, "a", 300) == 1
        assert b.acquire_lease(0, "b", 300) is None  # held
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with a.transaction():
                assert a.fence("a") == {0: 1}
                time.sleep(0.5)  # a's lease expires, but its fence's row lock holds b off until a commits
                taken = pool.submit(b.acquire_lease, 0, "b", 5000)
                time.sleep(0.5)
                assert not taken.done()
            assert taken.result(10) == 2
        with a.transaction():
            assert a.fence("a") == {}  # a's next ingest transaction finds partition 0 gone: LeaseLost
        assert b.renew_leases("b", 5000) == {0: 2}
    finally:
        a.close()
        b.close()
