"""The native streaming detector from Python: causal, gap-tolerant, and the same offline
(`rtk-qos detect`) as in the agent."""
import csv
import json
import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from rtk_qos._core import Detector, detector_defaults


def _series(n=3000, seed=4, spike_at=None):
    rng = random.Random(seed)
    t = [1_700_000_000 + 60 * i for i in range(n)]
    x = [20 + 5 * math.sin(i / 90) + rng.gauss(0, 1) for i in range(n)]
    if spike_at is not None:
        x[spike_at] += 25
    return t, x


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=1, max_value=1999), seed=st.integers(0, 10 ** 6))
def test_a_score_never_depends_on_later_samples(cut, seed):
    t, x = _series(2000, seed)
    whole = Detector().run(t, x)
    rng = random.Random(seed + 1)
    changed = x[:cut] + [rng.uniform(-1e3, 1e3) for _ in x[cut:]]
    assert list(Detector().run(t, changed))[:cut] == list(whole)[:cut]


def test_a_spike_scores_far_above_the_noise_around_it():
    t, x = _series(spike_at=2500)
    scores = Detector().run(t, x)
    assert scores[2500] > 0.6
    assert max(scores[800:2500]) < 0.45
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_gaps_are_skipped_not_scored():
    d = Detector()
    t, x = _series(500)
    for ti, xi in zip(t[:300], x[:300]):
        d.update(ti, xi)
    before = d.samples
    assert math.isnan(d.update(t[300], math.nan)) and d.samples == before
    assert d.explain()["baseline"] == "recent"


def test_settings_are_checked():
    assert detector_defaults()["window"] == 512
    with pytest.raises(TypeError, match="unknown detector settings: windw"):
        Detector(windw=3)
    with pytest.raises(ValueError, match="out of range"):
        Detector(days=1)
    assert Detector.memory_bytes(window=64, history=256) < Detector.memory_bytes()


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "rtk_qos", "detect", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_detect_cli_scores_a_csv_row_by_row_with_labels(tmp_path):
    t, x = _series(spike_at=2500)
    source = tmp_path / "series.csv"
    with open(source, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows(zip(t, x))
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({"data/series.csv": [[t[2490], t[2510]]]}))
    out = tmp_path / "scored.csv"
    done = _cli("--input", str(source), "--output", str(out), "--windows", str(windows))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(rows) == len(t)
    assert [float(r["anomaly_score"]) for r in rows] == pytest.approx(list(Detector().run(t, x)), abs=1e-6)
    assert sum(r["label"] == "1" for r in rows) == 21 and rows[2500]["label"] == "1"


def test_detect_cli_reads_iso_timestamps_from_stdin_and_names_a_bad_line():
    good = "timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,2.5\n"
    done = _cli("--input", "-", stdin=good)
    assert done.returncode == 0 and done.stdout.splitlines()[1] == "2014-04-01 00:00:00,1.5,0.000000"
    bad = good + "2014-04-01 00:10:00,lots\n"
    done = _cli("--input", "-", stdin=bad)
    assert done.returncode == 2 and "line 4" in done.stderr and "lots" in done.stderr
    done = _cli("--input", "-", "--set", "window=2", stdin=good)
    assert done.returncode == 2 and "out of range" in done.stderr


def _alarms(scores, level=5 / 13):
    """Rows whose tail probability crossed the detector's alarm level (p < 1e-5: 5 / (5 + 8))."""
    return [i for i, s in enumerate(scores) if s >= level]


def test_a_restart_mid_series_gives_the_scores_of_an_uninterrupted_run():
    # Three days with an evening peak, so the restart carries the time-of-day learning too.
    rng = random.Random(7)
    t = [1_700_000_000 + 60 * i for i in range(3 * 1440)]
    x = [10 + 30 * (1140 <= i % 1440 < 1260) + rng.gauss(0, 1) for i in range(len(t))]
    x[3900] += 40
    whole = list(Detector().run(t, x))
    before = Detector()
    before.run(t[:2500], x[:2500])
    after = Detector()
    after.restore(before.state())
    assert list(after.run(t[2500:], x[2500:])) == whole[2500:]
    assert after.explain()["baseline"] == "time_of_day"
    assert _alarms(whole[2500:]) != []
    with pytest.raises(ValueError, match="not a detector state"):
        Detector(quiet=10).restore(before.state())
    with pytest.raises(ValueError, match="not a detector state"):
        Detector().restore(before.state()[:-1])


def test_a_level_shift_alarms_once_then_becomes_the_new_normal():
    rng = random.Random(3)
    t = [1_700_000_000 + 60 * i for i in range(5000)]
    x = [100 + rng.gauss(0, 2) + (40 if i >= 2000 else 0) for i in range(len(t))]
    scores = Detector().run(t, x)
    assert max(scores[800:2000]) < 0.45  # noise stays above p = 1e-7
    alarms = _alarms(scores[2000:])
    assert alarms and alarms[0] < 5  # at the shift
    assert _alarms(scores[2000 + 500:]) == []  # the new level is normal again
    assert max(scores[3000:]) < 0.3


def test_the_same_series_in_other_units_gives_the_same_detections():
    t, x = _series(4000, seed=11, spike_at=2500)
    x[3000:] = [v + 15 for v in x[3000:]]
    small, large = Detector().run(t, x), Detector().run(t, [1000 * v for v in x])
    assert _alarms(small) == _alarms(large)
    assert _alarms(small)[:1] == [2500]
    # The seasonal views keep their bins' means as floats (24 bits): x1000 rounds them
    # differently in the last bit, and their tails, which bound the values' view, with them.
    assert list(large) == pytest.approx(list(small), abs=1e-6)


def test_the_weekly_view_expects_the_weekend_once_two_weeks_are_known():
    # Four weeks at 5-minute steps: busy office hours on weekdays, quiet weekends.
    rng = random.Random(5)
    t = [1_700_006_400 + 300 * i for i in range(4 * 7 * 288)]

    def value(ts):
        weekday = (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        busy = weekday < 5 and 9 * 3600 <= ts % 86400 < 17 * 3600
        return 20 + (60 if busy else 0) + rng.gauss(0, 2)
    x = [value(ts) for ts in t]
    fourth_week = slice(3 * 7 * 288, None)
    daily_only = Detector(weeks=0)
    assert _alarms(daily_only.run(t, x)[fourth_week]) != []  # a weekday's peak missing on a weekend
    weekly = Detector()
    assert _alarms(weekly.run(t, x)[fourth_week]) == []
    assert weekly.explain()["baseline"] == "time_of_week"
    assert Detector.memory_bytes(weeks=0) < Detector.memory_bytes()


def test_spikes_that_recur_about_as_high_stop_alarming_while_a_new_burst_alarms():
    # An idle server's CPU (quantised) at 1-minute steps, and a job's one-sample spike every
    # three hours or so whose height varies a little, as a real job's does.
    rng = random.Random(0)
    t = [1_700_000_000 + 60 * i for i in range(4000)]
    x = [rng.choice((0.066, 0.068, 0.134)) for _ in t]
    for i in range(300, 3500, 173):
        x[i + rng.randint(-20, 20)] = rng.uniform(1.3, 1.6)
    x[3700:3710] = [5.0] * 10  # a burst unlike the job
    alarms = _alarms(Detector().run(t, x))
    # Once two past spikes in the long-run window peaked about as high (90 %), a spike is
    # recurring, even when it is a little higher than those before it.
    assert [i for i in alarms if 1000 <= i < 3700] == []
    assert [i for i in alarms if i >= 3700][:1] in ([3700], [3701])


def test_a_daily_spike_the_time_of_day_view_expects_does_not_alarm_while_the_values_view_scores():
    # Five days at 5-minute steps from midnight, a job's one-sample spike at 08:00 every day.
    # From the third day the time-of-day view expects it while the values' view still scores
    # (the time-of-day view is not yet trusted): the values' surprise counts only as far as
    # the seasonal view agrees, so only the spike nothing expects alarms.
    rng = random.Random(0)
    t = [1_700_006_400 + 300 * i for i in range(5 * 288)]
    x = [10 + rng.gauss(0, 1) + (12 if ts % 86400 == 8 * 3600 else 0) for ts in t]
    unexpected = 3 * 288 + 168  # 14:00 on the fourth day
    x[unexpected] += 40
    d = Detector()
    scores = d.run(t, x)
    assert [i for i in _alarms(scores) if i >= 2 * 288] == [unexpected]
    d = Detector()
    for ts, v in zip(t[:unexpected + 1], x[:unexpected + 1]):
        d.update(ts, v)
    assert d.explain()["baseline"] == "recent"  # the values' view scored the unexpected spike


def test_a_value_beyond_every_value_seen_alarms_once_a_day_is_known():
    # A CPU-like series spread evenly over 20..60 % at 5-minute steps: 63 % on the first day and
    # 66 % later are ordinary distances from its median, each over 5 % of the range beyond anything
    # seen before it. On the first day (a series' rhythm still reaches new highs) that is no alarm
    # of itself.
    rng = random.Random(3)
    t = [1_700_006_400 + 300 * i for i in range(4 * 288)]
    x = [rng.uniform(20, 60) for _ in t]
    first_day, later = 200, 3 * 288
    x[first_day], x[later] = 63.0, 66.0
    for name, at in (("first day", first_day), ("later", later)):
        d = Detector()
        scores = [d.update(ts, v) for ts, v in zip(t[:at + 1], x[:at + 1])]
        assert d.explain()["beyond_range"] == (name == "later"), name
        assert (scores[-1] >= 0.5) == (name == "later"), (name, scores[-1])
