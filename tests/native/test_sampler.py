"""The sampler pipeline (deltas, rates, slots) equals the reference, and keeps true totals."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rtk_qos import _core

import reference as ref

METRICS = _core.METRICS


def sampler(history=64, window=8, capacity=16):
    return _core.Sampler(capacity=capacity, history=history, window=window, open_reader=False)


@st.composite
def scenarios(draw):
    """Ticks of a few links that grow, wrap at 2^32, reset, vanish and come back."""
    nlinks = draw(st.integers(1, 4))
    wide = [draw(st.booleans()) for _ in range(nlinks)]  # 64-bit or 32-bit driver
    values = [[draw(st.integers(0, 2**32 - 1))] * 8 for _ in range(nlinks)]
    ifindex = list(range(2, 2 + nlinks))
    next_index = 2 + nlinks
    present = [True] * nlinks
    ticks, t = [], 0.0
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.floats(0.001, 5.0))
        snap = []
        for i in range(nlinks):
            event = draw(st.sampled_from(["grow"] * 8 + ["reset", "vanish", "return"]))
            if event == "vanish":
                present[i] = False
            elif event == "return" and not present[i]:
                present[i], ifindex[i] = True, next_index
                next_index += 1
            elif event == "reset":
                values[i] = [draw(st.integers(0, 1000)) for _ in range(8)]
            else:
                step = [draw(st.integers(0, 2**31)) for _ in range(8)]
                mod = 2**64 if wide[i] else 2**32
                values[i] = [(v + s) % mod for v, s in zip(values[i], step)]
            if present[i]:
                snap.append((ifindex[i], f"eth{i}", *values[i]))
        ticks.append((snap, t))
    return ticks


@given(scenarios())
@settings(max_examples=200, deadline=None)
def test_sampler_matches_reference_through_wraps_resets_and_vanishing_links(ticks):
    native, py = sampler(), ref.Sampler()
    for snap, t in ticks:
        native.ingest(snap, t)
        py.ingest(snap, t)
    slots = native.slots()
    assert len(slots) == len(py.slots)
    for got, want in zip(slots, py.slots):
        assert (got["ifindex"], got["name"], got["state"]) == (want["ifindex"], want["name"], want["state"])
        assert list(got["totals"].values()) == want["total"]
        for m, metric in enumerate(METRICS):
            series = list(native.series(got["slot"], metric))
            assert len(series) == len(want["series"][m])
            assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(series, want["series"][m]))


def test_32bit_counters_wrapping_many_times_keep_the_true_total():
    s = sampler(history=1024)
    true_total, counter, step = 0, 2**32 - 5000, 700_000_000
    for tick in range(200):
        s.ingest([(3, "wan", counter, 0, 0, 0, 0, 0, 0, 0)], float(tick))
        if tick:
            true_total += step
        counter = (counter + step) % 2**32
    slot = s.slots()[0]
    assert slot["totals"]["rx_bytes"] == true_total
    assert slot["wraps"] > 20 and slot["resets"] == 0


def test_rates_use_the_time_actually_elapsed_not_the_nominal_interval():
    s = sampler()
    s.ingest([(3, "wan", 0, 0, 0, 0, 0, 0, 0, 0)], 10.0)
    s.ingest([(3, "wan", 1000, 0, 0, 0, 0, 0, 0, 0)], 10.5)   # a tick that came early
    s.ingest([(3, "wan", 4000, 0, 0, 0, 0, 0, 0, 0)], 12.0)   # and one that came late
    assert list(s.series(0, "rx_bytes")) == [2000.0, 2000.0]


def test_a_snapshot_not_later_than_the_last_is_ignored():
    s = sampler()
    s.ingest([(3, "wan", 0, 0, 0, 0, 0, 0, 0, 0)], 5.0)
    s.ingest([(3, "wan", 100, 0, 0, 0, 0, 0, 0, 0)], 5.0)
    assert s.ticks == 1 and s.slots()[0]["totals"]["rx_bytes"] == 0


def test_vanished_link_keeps_its_totals_and_a_recreated_one_gets_a_new_slot():
    s = sampler()
    s.ingest([(3, "wan", 0, 0, 0, 0, 0, 0, 0, 0)], 1.0)
    s.ingest([(3, "wan", 500, 0, 0, 0, 0, 0, 0, 0)], 2.0)
    s.ingest([], 3.0)
    assert s.vanished == 1
    s.ingest([(9, "wan", 10, 0, 0, 0, 0, 0, 0, 0)], 4.0)
    assert s.appeared == 1
    states = [(x["ifindex"], x["state"], x["totals"]["rx_bytes"]) for x in s.slots()]
    assert states == [(3, "gone", 500), (9, "active", 0)]


def test_track_ignores_other_links_and_capacity_overflow_is_counted():
    s = sampler(capacity=1)
    s.track(["wan"])
    s.ingest([(2, "lan", 0, 0, 0, 0, 0, 0, 0, 0), (3, "wan", 0, 0, 0, 0, 0, 0, 0, 0)], 1.0)
    assert [x["name"] for x in s.slots()] == ["wan"] and s.overflow == 0
    full = sampler(capacity=1)
    full.ingest([(2, "lan", 0, 0, 0, 0, 0, 0, 0, 0), (3, "wan", 0, 0, 0, 0, 0, 0, 0, 0)], 1.0)
    assert full.overflow == 1


def test_sum_series_aligns_links_that_started_at_different_ticks():
    s = sampler()
    s.ingest([(2, "a", 0, 0, 0, 0, 0, 0, 0, 0)], 1.0)
    s.ingest([(2, "a", 10, 0, 0, 0, 0, 0, 0, 0), (3, "b", 0, 0, 0, 0, 0, 0, 0, 0)], 2.0)
    s.ingest([(2, "a", 20, 0, 0, 0, 0, 0, 0, 0), (3, "b", 5, 0, 0, 0, 0, 0, 0, 0)], 3.0)
    assert list(s.sum_series([0, 1], "rx_bytes", 1, 2)) == [10.0, 15.0]


def test_history_keeps_only_the_newest_samples():
    s = sampler(history=4, window=2)
    for t in range(10):
        s.ingest([(2, "a", t * 100, 0, 0, 0, 0, 0, 0, 0)], float(t))
    assert s.history == 4 and list(s.series(0, 0)) == [100.0] * 4
    assert s.summary(0, "rx_bytes")["n"] == 2  # the rolling window
