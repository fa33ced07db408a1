"""The native core equals the plain-Python reference (tests/reference.py)."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtk_qos import _core

import reference as ref

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)


def close(a, b, scale=1.0):
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-6 * max(1.0, scale))


@given(st.lists(finite, max_size=300), st.integers(min_value=1, max_value=64))
@settings(max_examples=300, deadline=None)
def test_rolling_statistics_match_reference_for_every_window(values, window):
    native, py = _core.Rolling(window), ref.Rolling(window)
    scale = max((abs(v) for v in values), default=1.0)
    for x in values:
        spread = py.stats()[2]
        window_was_constant = len(set(py.values)) <= 1
        z_native, z_py = native.push(x), py.push(x)
        assert math.isfinite(z_native)
        if window_was_constant:
            assert z_native == 0.0  # no spread: 0, never a quotient of rounding residue
        # z divides by the spread, so compare it only where the spread is not rounding noise.
        elif spread > 1e-6 * scale:
            assert math.isclose(z_native, z_py, rel_tol=1e-5, abs_tol=1e-5)
    n, mean, var = py.stats()
    assert native.n == n
    assert close(native.mean, mean, scale)
    assert math.isclose(native.var, var, rel_tol=1e-6, abs_tol=1e-6 * scale * scale)
    assert native.min == (min(py.values) if n else 0.0)
    assert native.max == (max(py.values) if n else 0.0)
    if values:
        assert close(native.ewma, py.ewma, scale)
    assert list(native.values())[-n:] == list(py.values) if n else True


@given(st.lists(finite, max_size=200), st.integers(min_value=1, max_value=64))
@settings(max_examples=200, deadline=None)
def test_window_summary_quantiles_and_mad_match_reference(values, window):
    native = _core.Rolling(window)
    native.extend(values)
    tail = values[-window:] if values else []
    s = native.summary()
    assert s["n"] == len(tail)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert close(s[key], ref.quantile(tail, q), max(map(abs, tail), default=1.0))
    med, mad = ref.median_mad(tail)
    assert close(s["median"], med) and close(s["mad"], mad)
    for v in s.values():
        assert math.isfinite(v)  # an empty window reports zeros, never NaN


def test_empty_and_single_value_windows_are_nan_free():
    r = _core.Rolling(5)
    assert r.summary() == {k: 0 for k in r.summary()}
    assert (r.mean, r.var, r.std, r.min, r.max) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert r.push(42.0) == 0.0  # no window yet: z is 0, not NaN
    assert r.push(42.0) == 0.0  # no spread: z is 0, not inf
    assert r.std == 0.0


def test_sliding_variance_stays_exact_over_a_long_run():
    # Drift guard: a large offset with a tiny spread is where naive sliding sums fail.
    r, py = _core.Rolling(50), ref.Rolling(50)
    for i in range(100_000):
        x = 1e9 + (i % 7) * 0.001
        r.push(x)
        py.values.append(x)
    assert math.isclose(r.var, py.stats()[2], rel_tol=1e-4)


@given(st.lists(finite, min_size=1, max_size=200), st.floats(min_value=0, max_value=1))
def test_quantile_equals_reference(values, q):
    assert close(_core.quantile(values, q), ref.quantile(values, q), max(map(abs, values)))


def test_quantile_of_nothing_is_zero():
    assert _core.quantile([], 0.5) == 0.0
    assert _core.median_mad([]) == (0.0, 0.0)


@given(u64, u64)
def test_counter_delta_matches_reference(prev, cur):
    assert _core.counter_delta(prev, cur) == ref.counter_delta(prev, cur)


@given(u32, st.integers(min_value=0, max_value=2**31))
def test_counter_wrap_at_2_32_keeps_the_true_increment(start, step):
    assert _core.counter_delta(start, (start + step) % 2**32) == (step, "wrap32" if start + step >= 2**32 else "ok")


def test_counter_reset_counts_traffic_since_the_reset():
    # 64-bit counter well past 2^32 drops to a small value: only a reset explains it.
    assert _core.counter_delta(10 * 2**32, 5000) == (5000, "reset")


def test_a_reset_link_resets_every_counter_that_went_down():
    # Bytes alone would read as a plausible 32-bit wrap; packets cannot: the link reset.
    prev = [3_000_000_000, 0, 2_000_000, 0, 0, 0, 0, 0]
    cur = [1_000, 0, 10, 0, 0, 0, 0, 0]
    assert _core.link_deltas(prev, cur) == ([1_000, 0, 10, 0, 0, 0, 0, 0], "reset")


@given(st.lists(st.lists(u64, min_size=8, max_size=8), min_size=2, max_size=2))
def test_link_deltas_match_reference(pair):
    assert _core.link_deltas(pair[0], pair[1]) == ref.link_deltas(pair[0], pair[1])


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), max_size=200))
def test_jitter_matches_rfc3550_reference(delays):
    j = _core.Jitter()
    j.extend(delays)
    want_j, want_mean, want_max = ref.jitter(delays)
    assert close(j.jitter, want_j, 1e4) and close(j.ipdv_mean, want_mean, 1e4)
    assert j.ipdv_max == want_max and j.n == len(delays)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-@", min_size=1, max_size=15)


@given(st.lists(st.tuples(names, st.lists(u64, min_size=16, max_size=16)), max_size=40, unique_by=lambda t: t[0]))
def test_proc_net_dev_parser_matches_reference(rows):
    header = ("Inter-|   Receive                                                |  Transmit\n"
              " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n")
    text = header + "".join(f"{name:>6}: " + " ".join(map(str, f)) + "\n" for name, f in rows)
    assert _core.parse_proc_net_dev(text) == ref.parse_proc_net_dev(text)
