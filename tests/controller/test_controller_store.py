"""The store on both backends (SQLite, and a real PostgreSQL the tests start): versioned migrations,
exact tiers, idempotent ingest, late samples, retention."""
import random

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
