"""The store on both backends (SQLite, and a real PostgreSQL the tests start): versioned migrations,
exact tiers, idempotent ingest, late samples, retention."""
import random
import threading

import pytest

from rtk_qos.controller.store import HOUR_MS, MINUTE_MS, Retention, SessionConflict, StoreError, open_store
from rtk_qos.controller.store import postgres, sqlite

DEVICE = "aabbccddeeff"
NAME = "probe.gateway.latency_ms"
T0 = 1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS  # an hour boundary


MIGRATIONS = {"sqlite": sqlite.MIGRATIONS, "postgresql": postgres.MIGRATIONS}


def _store(backend, **retention):
    return open_store(backend.url, Retention(**retention))


def _samples(hours=3, seed=7):
    rng = random.Random(seed)
    return [(DEVICE, NAME, T0 + i * 1000, rng.uniform(1, 50)) for i in range(hours * 3600)]


def _roll(store, now_ms):
    """A rollup pass spreads over calls (1000 series each) and completes on the next: three calls
    finish the minute and the hour tier of one series."""
    for _ in range(3):
        store.rollup(now_ms)


def _means(rows, start, end, step):
    buckets = {}
    for _, _, ts, value in rows:
        if start <= ts < end:
            buckets.setdefault(start + (ts - start) // step * step, []).append(value)
    return {ts: sum(v) / len(v) for ts, v in buckets.items()}


def test_migrations_are_versioned_and_run_once(backend):
    latest = len(MIGRATIONS[backend.name])
    store = _store(backend)
    assert store.schema_version == latest
    store.close()
    store = _store(backend)  # reopening runs nothing again (a second CREATE TABLE would fail)
    assert store.schema_version == latest
    store.close()
    backend.query(f"PRAGMA user_version = {latest + 1}" if backend.name == "sqlite" else
                  f"INSERT INTO schema_migrations VALUES ({latest + 1}, 0)")
    with pytest.raises(StoreError, match="newer than this controller's"):
        _store(backend)


def test_tiers_answer_exactly_what_the_raw_samples_say(backend):
    store = _store(backend)
    rows = _samples()
    with store.transaction():
        assert store.add_samples(rows) == len(rows)
        assert store.add_samples(rows[:500]) == 0  # the same samples again change nothing
        _roll(store, T0 + 3 * HOUR_MS + 2 * MINUTE_MS)
    for step in (MINUTE_MS, 5 * MINUTE_MS, HOUR_MS):
        got = {ts: agg.mean for ts, agg in store.series(DEVICE, NAME, T0, T0 + 3 * HOUR_MS, step)}
        assert got == pytest.approx(_means(rows, T0, T0 + 3 * HOUR_MS, step), rel=1e-12)
    # A window starting mid-minute and ending past the rollup: raw, minute tier and raw again.
    start, end = T0 + 90_000, T0 + 3 * HOUR_MS
    (agg,) = store.stats("probe.*.latency_ms", start, end).values()
    expected = [v for _, _, ts, v in rows if start <= ts < end]
    assert agg.count == len(expected) and agg.mean == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    assert (agg.low, agg.high) == (min(expected), max(expected))


def test_a_late_sample_is_rolled_up_again(backend):
    store = _store(backend)
    rows = [r for r in _samples(hours=2) if (r[2] - T0) % 10_000]  # every tenth second missing
    with store.transaction():
        store.add_samples(rows)
        _roll(store, T0 + 2 * HOUR_MS + 2 * MINUTE_MS)
    late = (DEVICE, NAME, T0 + 30 * MINUTE_MS, 1000.0)
    with store.transaction():
        store.add_samples([late])
        _roll(store, T0 + 2 * HOUR_MS + 3 * MINUTE_MS)
    rows.append(late)
    for step in (MINUTE_MS, HOUR_MS):
        got = {ts: agg.mean for ts, agg in store.series(DEVICE, NAME, T0, T0 + 2 * HOUR_MS, step)}
        assert got == pytest.approx(_means(rows, T0, T0 + 2 * HOUR_MS, step), rel=1e-12)


def test_retention_keeps_the_coarser_tiers(backend):
    store = _store(backend, raw_hours=1)
    rows = _samples()
    with store.transaction():
        store.add_samples(rows)
        _roll(store, T0 + 3 * HOUR_MS + 2 * MINUTE_MS)
        removed = store.prune(T0 + 3 * HOUR_MS)
    assert removed == 2 * 3600  # the raw samples of the first two hours
    assert store.raw(DEVICE, NAME, T0, T0 + 2 * HOUR_MS) == []
    got = {ts: agg.mean for ts, agg in store.series(DEVICE, NAME, T0, T0 + 3 * HOUR_MS, MINUTE_MS)}
    assert len(got) == 180 and got == pytest.approx(_means(rows, T0, T0 + 3 * HOUR_MS, MINUTE_MS), rel=1e-12)


def test_the_store_refuses_a_second_active_session(backend):
    store = _store(backend)
    session = {"id": "a", "device_id": DEVICE, "status": "active", "config": {}, "started_ms": T0, "ends_ms": T0 + 1,
               "progress": {}, "evaluations": 0}
    with store.transaction():
        store.save_session(session)
    with pytest.raises(SessionConflict), store.transaction():
        store.save_session({**session, "id": "b"})
    assert [s["id"] for s in store.sessions()] == ["a"]  # the failed transaction left nothing
    with store.transaction():
        store.save_session({**session, "status": "completed"})
        store.save_session({**session, "id": "b"})
    assert sorted(s["status"] for s in store.sessions()) == ["active", "completed"]


def test_a_rollup_pass_spreads_over_calls_and_stays_exact(backend):
    store = _store(backend)
    rows = [(f"{d:012x}", NAME, T0 + i * 1000, float(d * 1000 + i)) for d in range(5) for i in range(600)]
    now = T0 + 20 * MINUTE_MS
    with store.transaction():
        store.add_samples(rows)
    for calls in range(1, 5):  # 2 series a call: three calls cover them, the fourth ends the pass
        with store.transaction():
            store.rollup(now, max_series=2)
        tiers = {d: agg for d, agg in store.stats("probe.*", T0, T0 + 10 * MINUTE_MS).items()}
        assert sum(a.count for a in tiers.values()) == len(rows), calls  # exact at every step
        ((minutes,),) = backend.query("SELECT COUNT(*) FROM samples_minute")
        ((watermark,),) = backend.query("SELECT value FROM meta WHERE key = 'samples_minute'")
        assert minutes == min(5, 2 * calls) * 10
        # The watermark moves only when the pass ends: to the last minute complete 15 s before `now`.
        assert watermark == (T0 + 19 * MINUTE_MS if calls == 4 else T0)


def test_fleet_series_buckets_every_device_across_the_tiers(backend):
    store = _store(backend)
    rows = [(f"{d:012x}", name, T0 + i * 1000, float((d + 1) * (i % 97)))
            for d in range(3) for name in (NAME, "probe.dns.latency_ms", "probe.gateway.loss_pct")
            for i in range(40 * 60)]
    with store.transaction():
        store.add_samples(rows)
        _roll(store, T0 + 20 * MINUTE_MS)  # minutes rolled up to T0 + 19 min; the rest from raw
    step = 5 * MINUTE_MS
    fleet = store.fleet_series("probe.*.latency_ms", T0, T0 + 40 * MINUTE_MS, step)
    for d in range(3):
        mine = [r for r in rows if r[0] == f"{d:012x}" and r[1].endswith(".latency_ms")]
        expected = {}
        for _, _, ts, value in mine:
            expected.setdefault(T0 + (ts - T0) // step * step, []).append(value)
        got = fleet[f"{d:012x}"]
        assert sorted(got) == sorted(expected)
        for bucket, values in expected.items():
            agg = got[bucket]
            assert (agg.count, agg.low, agg.high) == (len(values), min(values), max(values))
            assert agg.mean == pytest.approx(sum(values) / len(values), rel=1e-12)


def test_events_alerts_and_commands_are_stored_once_and_read_back(backend):
    store = _store(backend)
    with store.transaction():
        assert store.add_event(DEVICE, "link_flap", T0, "info", -42, {"seq": 1}) is True
        assert store.add_event(DEVICE, "link_flap", T0, "info", -42, {"seq": 1}) is False  # a redelivery
        alert = {"key": "k1", "source": "session", "device_id": DEVICE, "severity": "warning", "state": "open",
                 "opened_ms": T0, "updated_ms": T0, "detail": {"why": ["latency"]}}
        first = store.save_alert(alert)
        assert store.save_alert({**alert, "state": "closed", "closed_ms": T0 + 5, "opened_ms": T0 + 1}) == first
        store.save_command({"id": "c1", "target": DEVICE, "op": "get_status", "args": {"a": 1}, "dialect": "flat",
                            "sent_ms": T0, "deadline_ms": T0 + 30_000, "status": "sent", "updated_ms": T0})
        store.save_reply({"command_id": "c1", "device_id": DEVICE, "accepted": 1, "ack": {"ok": True},
                          "acked_ms": T0 + 1, "duplicates": 0, "late": 0})
        store.save_reply({"command_id": "c1", "device_id": DEVICE, "accepted": 1, "ack": {"ok": True},
                          "acked_ms": T0 + 1, "duplicates": 1, "late": 0})
    assert [(e["payload"], e["digest"]) for e in store.events(DEVICE)] == [({"seq": 1}, -42)]
    (stored,) = store.alerts(DEVICE)
    assert (stored["id"], stored["state"], stored["opened_ms"], stored["detail"]) == (first, "closed", T0,
                                                                                     {"why": ["latency"]})
    command = store.command("c1")
    assert command["args"] == {"a": 1}
    assert [(r["ack"], r["duplicates"]) for r in command["replies"]] == [({"ok": True}, 1)]
    assert [c["id"] for c in store.recent_commands(T0)] == ["c1"] and store.recent_commands(T0 + 60_000) == []


def test_two_instances_ingesting_the_same_messages_store_each_sample_once(postgres_server):
    """Several controllers over one PostgreSQL: a message redelivered to another instance (after a
    crash) is ingested by both, concurrently, and rollups run while they do."""
    url = postgres_server.create_database()
    stores = [open_store(url) for _ in range(2)]
    rows = [(f"{d:012x}", NAME, T0 + i * 1000, float(i)) for d in range(20) for i in range(30 * 60)]
    added = [0, 0]
    failures = []

    def ingest(index):
        store = stores[index]
        try:
            for chunk in range(0, len(rows), 1000):
                with store.transaction():
                    added[index] += store.add_samples(rows[chunk:chunk + 1000])
                with store.transaction():  # rollups interleave with the other instance's ingest
                    store.rollup(T0 + 20 * MINUTE_MS, max_series=5)
        except Exception as exc:  # surfaced by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert sum(added) == len(rows)  # each sample counted new by exactly one instance
    for _ in range(10):
        with stores[0].transaction():
            stores[0].rollup(T0 + 40 * MINUTE_MS, max_series=5)
    stats = stores[1].stats("probe.*", T0, T0 + 30 * MINUTE_MS)
    assert {d: a.count for d, a in stats.items()} == {f"{d:012x}": 30 * 60 for d in range(20)}
    for d in range(20):  # the minute tier (rolled up while samples arrived) is exact
        got = {ts: agg.mean for ts, agg in stores[1].series(f"{d:012x}", NAME, T0, T0 + 19 * MINUTE_MS, MINUTE_MS)}
        assert got == pytest.approx(_means([r for r in rows if r[0] == f"{d:012x}"], T0, T0 + 19 * MINUTE_MS,
                                           MINUTE_MS), rel=1e-12)
    for store in stores:
        store.close()
    postgres_server.drop_database(url)


def test_instances_starting_together_migrate_once(postgres_server):
    url = postgres_server.create_database()
    opened, failures = [], []

    def start():
        try:
            opened.append(open_store(url))
        except Exception as exc:  # surfaced by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and [s.schema_version for s in opened] == [len(postgres.MIGRATIONS)] * 4
    with pytest.raises(StoreError, match=r"\[\.\.\.\] classes are not supported"):
        opened[0].stats("probe.[ab].latency_ms", T0, T0 + MINUTE_MS)
    for store in opened:
        store.close()
    postgres_server.drop_database(url)


def test_the_writer_restarts_a_wal_the_checkpointer_cannot_catch_up_with(tmp_path, monkeypatch):
    """Commits back to back, each rewriting a leaf per series: the checkpointer's passes (every 10
    ms here) always end behind the last commit, so without the writer's own pass the WAL never
    starts again from its beginning and grows by every commit (measured: 28,000 of the 30,000
    pages written)."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_S", 0.01)
    monkeypatch.setattr(sqlite, "WAL_RESTART_FRAMES", 64)
    store = open_store(f"sqlite://{tmp_path}/c.db", writer=True)
    series = [(f"{d:012x}", NAME) for d in range(100)]
    with store.transaction():  # 200 samples a series: a leaf of its own each
        store.add_samples((d, n, T0 + i * 1000, 1.0) for d, n in series for i in range(200))
    commits = 300
    for c in range(commits):
        with store.transaction():
            store.add_samples((d, n, T0 + HOUR_MS + c * 1000, 2.0) for d, n in series)
    wal_pages = (tmp_path / "c.db-wal").stat().st_size // (4096 + 24)  # the file: as long as it ever grew
    store.close()
    assert wal_pages < commits * len(series) / 4
