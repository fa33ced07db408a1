"""Smoke checks of rtk_qos._core on a (possibly emulated) target.

Known values are asserted here; the deterministic results are also printed as JSON
(--json) so test_wheel.sh can compare a target's output with the x86_64 host's.
"""
import json
import math
from array import array
import sys
import time

from rtk_qos import _core as c


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def main():
    out = {}
    # quantile: numpy's linear interpolation.
    assert c.quantile([1, 2, 3, 4], 0.5) == 2.5
    assert close(c.quantile(range(1, 11), 0.9), 9.1)
    assert c.quantile([], 0.5) == 0.0
    assert c.median_mad([1, 1, 2, 2, 4, 6, 9]) == (2.0, 1.0)
    assert c.median_mad([]) == (0.0, 0.0)
    # RFC 3550 jitter by hand: |d| = 2, 1, 4; J += (|d| - J) / 16.
    j = c.Jitter()
    j.extend([10, 12, 11, 15])
    assert close(j.jitter, 0.41845703125) and close(j.ipdv_mean, 7 / 3), (j.jitter, j.ipdv_mean)
    assert (j.ipdv_max, j.n) == (4.0, 4)
    # 64-bit counter arithmetic (word size and endianness matter here).
    assert c.counter_delta(2**32 - 10, 5) == (15, "wrap32")
    assert c.counter_delta(100, 50) == (50, "reset")
    assert c.counter_delta(2**40, 2**40 + 7) == (7, "ok")
    out["stats"] = [c.quantile([3.5, 1.25, 9.0, 2.0, 7.75], q) for q in (0.1, 0.5, 0.95)]

    # Deterministic sampler run: quadratic rx growth and a 32-bit counter wrap on 'wan'.
    s = c.Sampler(capacity=8, history=16, window=4, open_reader=False)
    for t in range(6):
        s.ingest([(1, "eth0", 1000 * t * t, 500 * t, 10 * t, 5 * t, 0, 0, 0, 0),
                  (2, "wan", (2**32 - 250 + 100 * t) % 2**32, 0, 0, 0, 0, 0, 0, 0)], float(t))
    slots = s.slots()
    assert [x["name"] for x in slots] == ["eth0", "wan"]
    assert slots[0]["totals"]["rx_bytes"] == 25000 and slots[1]["totals"]["rx_bytes"] == 500
    assert slots[1]["wraps"] == 1, slots[1]
    assert s.last_rates(0)[:4] == (9000.0, 500.0, 10.0, 5.0)
    out["sampler"] = {"slots": slots, "last_rates": s.last_rates(0),
                      "summary": s.summary(0, "rx_bytes"), "rolling": s.rolling(0, "rx_bytes")}
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast"
            "|bytes packets errs drop fifo colls carrier compressed\n"
            "    lo: 4294967301 12 0 0 0 0 0 0 4294967301 12 0 0 0 0 0 0\n"
            "  eth0: 18446744073709551615 3 1 2 0 0 0 0 77 4 5 6 0 0 0 0\n")
    out["procfs"] = c.parse_proc_net_dev(text)
    assert out["procfs"][1][2] == 2**64 - 1, out["procfs"]

    # Anomaly detection: a deterministic series with a daily peak and a spike, scored by the
    # streaming detector; robust time-of-day baselines; the forest (bit-identical trees).
    series = [10.0 + (40.0 if 1140 <= i % 1440 < 1260 else 0.0) + ((i * 7919) % 101) / 50.0
              for i in range(3 * 1440)]
    series[4000] += 60.0
    scores = c.Detector().run([60.0 * i for i in range(len(series))], series)
    assert all(0.0 <= x <= 1.0 for x in scores) and scores[4000] > max(scores[3000:4000]), scores[4000]
    out["detector"] = {"spike": scores[4000], "sum": math.fsum(scores), "max_before": max(scores[:4000])}
    usual = c.TimeOfDayBaseline(series, 0, 60, 0.1)  # min_scale: far below this series' spread
    assert usual.days == 3.0 and close(usual.at(1150)[0], 51.0, rel=0.05), usual.at(1150)
    out["baseline"] = [usual.overall, usual.at(1150), list(usual.z(series[:3], 0))]
    rows = [[float((i * 31 + j * 17) % 97) for j in range(3)] for i in range(300)] + [[500.0, 500.0, 500.0]]
    flat = [v for row in rows for v in row]
    forest = c.IsolationForest(n_trees=50, sample_size=64, seed=3).fit(array("d", flat), 3)
    forest_scores = forest.score(array("d", flat), 3)
    assert forest_scores[-1] == max(forest_scores), forest_scores[-1]
    out["forest"] = {"outlier": forest_scores[-1], "sum": math.fsum(forest_scores)}

    # Live counters from this kernel (netlink, or /proc/net/dev when netlink is refused).
    r = c.CounterReader()
    rows = r.read()
    assert rows and any(row[1] == "lo" for row in rows), rows
    live = c.Sampler(capacity=16, history=64, window=8)
    n1 = live.tick()
    time.sleep(0.05)
    n2 = live.tick()
    assert n1 > 0 and n2 > 0 and live.ticks == 2 and live.active_slots()
    print(f"reader={r.source} links={len(rows)} sampler_ticks={live.ticks} "
          f"active={[n for _, n in live.active_slots()]}", file=sys.stderr)
    if "--json" in sys.argv:
        print(json.dumps(out, sort_keys=True))
    print("check_core: all checks passed", file=sys.stderr)


if __name__ == "__main__":
    main()
