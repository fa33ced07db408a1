"""Metric history: tiers against a plain-Python reference, persistence, damaged files."""
import math
import os

import pytest
from hypothesis import given, settings, strategies as st

from rtk_qos._core import HISTORY_TIERS, History
from rtk_qos.history import HistoryStore

SMALL = ((16, 1), (8, 5), (4, 20))


def reference(samples, step):
    """Per bucket: min, mean, max, max score, from the raw samples."""
    buckets = {}
    for t, value, score in samples:
        buckets.setdefault(t // step, []).append((value, score))
    return {b: (min(v for v, _ in rows), sum(v for v, _ in rows) / len(rows), max(v for v, _ in rows),
                max(s for _, s in rows)) for b, rows in buckets.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-1e3, 1e3, width=32), st.floats(0, 1, width=32)),
                min_size=1, max_size=120))
def test_every_tier_holds_min_mean_max_and_peak_score(steps):
    history = History(SMALL)
    samples, t = [], 10_000
    for gap, value, score in steps:
        t += gap  # time order, gaps of 0-5 s
        samples.append((t, value, score))
        assert history.push(t, value, score)
    for tier, (cap, step) in enumerate(SMALL):
        want = reference(samples, step)
        newest = t // step
        got = history.read(tier, newest - cap + 1, newest)
        for offset, bucket in enumerate(got):
            number = newest - cap + 1 + offset
            if number not in want:
                assert all(math.isnan(x) for x in bucket)
                continue
            lo, mean, hi, score = want[number]
            assert bucket[0] == pytest.approx(lo) and bucket[2] == pytest.approx(hi)
            assert bucket[1] == pytest.approx(mean, rel=1e-5, abs=1e-3) and bucket[3] == pytest.approx(score)


def test_default_shape_and_memory():
    assert HISTORY_TIERS == ((3600, 1), (10080, 60), (2160, 3600))
    assert History.memory_bytes() == (3600 + 10080 + 2160) * 16 == 253_440


def test_store_round_trip_and_atomic_write(tmp_path):
    store = HistoryStore(SMALL)
    for t in range(1000, 1100):
        store.push("eth0.rx_mbps", t, t % 7, 0.1)
        store.push("eth0.errors", t, 0.0)
    assert not store.push("eth0.errors", 999, 1.0) and store.refused == 1
    path = str(tmp_path / "state" / "history.bin")
    written = store.save(path)
    assert os.path.getsize(path) == written and not os.path.exists(path + ".tmp")
    back, problem = HistoryStore.load(path, SMALL)
    assert problem is None and sorted(back.series) == ["eth0.errors", "eth0.rx_mbps"]
    for name in back.series:
        assert str(back.series[name].read(1, 190, 219)) == str(store.series[name].read(1, 190, 219))  # NaN-safe
    assert back.series["eth0.rx_mbps"].samples == 100


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:len(b) // 2], "checksum mismatch"),
    (lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:], "checksum mismatch"),
    (lambda b: b[:8] + bytes([2]) + b[9:], "format version 2"),
    (lambda b: b"GIF89a" + b[6:], "bad magic"),
    (lambda b: b"", "too short"),
])
def test_a_damaged_file_is_set_aside_not_a_crash(tmp_path, damage, reason):
    store = HistoryStore(SMALL)
    store.push("x", 1000, 1.0)
    path = tmp_path / "history.bin"
    path.write_bytes(damage(store.to_bytes()))
    back, problem = HistoryStore.load(str(path), SMALL)
    assert back.series == {} and reason in problem and "set aside" in problem
    assert not path.exists() and len(list(tmp_path.glob("history.bin.bad-*"))) == 1


def test_a_history_of_another_shape_is_refused(tmp_path):
    store = HistoryStore(SMALL)
    store.push("x", 1000, 1.0)
    path = tmp_path / "history.bin"
    store.save(str(path))
    back, problem = HistoryStore.load(str(path), HISTORY_TIERS)
    assert back.series == {} and "differ from this agent's" in problem


def test_no_file_is_an_empty_history(tmp_path):
    assert HistoryStore.load(str(tmp_path / "none.bin"))[1] is None
