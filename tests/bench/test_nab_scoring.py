"""NAB scoring (bench/nab.py) against hand-computed figures.

The series have one row a minute. With n = 1000 rows the probation is the first 150 rows. The
usual window covers rows 400..499 (100 rows), so, as in NAB's sweeper, y = -(499 - i + 1) / 100,
and since 2/(1+e^(5y)) - 1 = -tanh(5y/2), a detection at row i earns
tanh(2.5 (500 - i) / 100) / tanh(2.5) of the TP weight.
Standard profile: TP 1, FN 1, FP 0.11; one window means null = -1, perfect = +1, so
normalised = 50 (raw + 1).
"""
import importlib.util
import math
import os
import random
import sys
from datetime import datetime, timezone

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import labelled  # noqa: E402
import nab  # noqa: E402

T0 = 1_700_000_000  # any epoch second: the scorer works in rows


def series(fires, rows=1000, windows=((400, 499),), score=1.0):
    """(timestamps, scores, windows) with `score` at the rows in `fires` (a row -> score mapping
    or a collection of rows) and 0 elsewhere; windows given as row ranges."""
    fires = fires if isinstance(fires, dict) else dict.fromkeys(fires, score)
    stamps = [T0 + 60 * i for i in range(rows)]
    return (stamps, [fires.get(i, 0.0) for i in range(rows)],
            [(stamps[a], stamps[b]) for a, b in windows])


def share(row, left=400, right=499):
    return math.tanh(2.5 * (right - row + 1) / (right - left + 1)) / math.tanh(2.5)


def test_null_detector_scores_zero():
    result = nab.score_corpus({"a": series([]), "clean": series([], windows=())}, "standard")
    assert result.score == 0
    assert result.threshold == nab.NEVER
    assert (result.raw, result.null, result.perfect) == (-1, -1, 1)
    a = result.files["a"]
    assert (a.tp, a.fp, a.fn, a.raw, a.windows) == (0, 0, 1, -1, [None])


@pytest.mark.parametrize("profile", list(nab.PROFILES))
def test_perfect_detector_scores_100(profile):
    scored = {"a": series([300, 700], windows=((300, 349), (700, 799))),
              "b": series([500], windows=((500, 599),)),
              "clean": series([], windows=())}
    result = nab.score_corpus(scored, profile)
    assert result.score == pytest.approx(100)
    assert result.raw == pytest.approx(3)
    assert result.files["a"].windows == pytest.approx([1, 1])
    assert (result.files["b"].tp, result.files["b"].fp, result.files["b"].fn) == (1, 0, 0)


def test_detection_at_right_edge_earns_little_but_is_no_miss():
    result = nab.score_corpus({"a": series([499])}, "standard")
    a = result.files["a"]
    assert (a.tp, a.fn) == (1, 0)
    assert a.raw == pytest.approx(share(499)) and share(499) < 0.026  # y = -1/100
    # About halfway between never firing (-1) and perfect (+1)...
    assert result.score == pytest.approx(50 * (1 + share(499)))
    # ...and two thirds of the way when a miss costs 2.
    assert nab.score_corpus({"a": series([499])}, "reward_low_FN_rate").score == pytest.approx(
        100 * (2 + share(499)) / 3)


def test_reward_falls_along_the_window():
    # rows 400..499 (100 rows): y = -(499 - 450 + 1) / 100 = -0.5, reward tanh(1.25) / tanh(2.5) = 0.8598
    result = nab.score_corpus({"a": series([450])}, "standard")
    assert result.raw == pytest.approx(math.tanh(1.25) / math.tanh(2.5))
    assert result.raw == pytest.approx(0.8598, abs=1e-4)


def test_only_the_first_detection_in_a_window_counts():
    result = nab.score_corpus({"a": series([420, 430, 499])}, "standard")
    a = result.files["a"]
    assert (a.tp, a.fp, a.fn) == (1, 0, 0)
    assert a.raw == pytest.approx(share(420))


def test_detections_in_probation_are_ignored():
    # Row 149 is the last probation row of 1000; row 150 is scored and is a full-cost FP.
    assert nab.score_corpus({"a": series([149, 400])}, "standard").score == pytest.approx(100)
    late = nab.score_corpus({"a": series([150, 400])}, "standard")
    assert late.files["a"].fp == 1
    assert late.score == pytest.approx(50 * (1 - 0.11 + 1))
    # The probation is capped at 750 rows: 15 % of 10000 would be 1500.
    big = dict(rows=10_000, windows=((5000, 5099),))
    assert nab.score_corpus({"a": series([749, 5000], **big)}, "standard").score == pytest.approx(100)
    assert nab.score_corpus({"a": series([750, 5000], **big)}, "standard").files["a"].fp == 1


def test_a_window_inside_the_probation_neither_earns_nor_costs():
    # As NAB's runner: the null detector loses only the windows that count, perfect earns them all.
    result = nab.score_corpus({"a": series([400], windows=((100, 140), (400, 499)))}, "standard")
    assert (result.null, result.perfect) == (-1, 2)
    assert result.files["a"].fn == 0 and result.raw == pytest.approx(share(400))


NAB_DEV = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "anomaly-data", "nab-dev")


def test_agrees_with_nabs_own_sweeper_on_the_development_corpus():
    """NAB's scorer (../shared, pure Python) and ours, on NAB's files and labels with seeded
    random scores in three resolutions (so thresholds tie): the same optimum for every profile."""
    if not os.path.isdir(NAB_DEV):
        pytest.fail(f"{NAB_DEV} is missing: the comparison needs NAB's scorer")
    spec = importlib.util.spec_from_file_location("nab_sweeper", os.path.join(NAB_DEV, "nab", "sweeper.py"))
    sweeper_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweeper_module)
    Sweeper = sweeper_module.Sweeper
    corpus = nab.load_corpus(NAB_DEV)
    for digits in (1, 2, 6):
        rng = random.Random(digits)
        scored = {s.name: (s.timestamps, [round(rng.random() ** 8, digits) for _ in s.values], s.windows)
                  for s in corpus}
        for profile, p in nab.PROFILES.items():
            sweeper = Sweeper(probationPercent=0.15,
                              costMatrix={"tpWeight": p.tp, "fnWeight": p.fn, "fpWeight": p.fp})
            rows = []
            for s in corpus:
                rows += sweeper.calcSweepScore(s.timestamps, scored[s.name][1], s.windows, s.name)
            theirs = max(sweeper.calcScoreByThreshold(rows), key=lambda r: r.score)
            ours = nab.score_corpus(scored, profile)
            assert ours.raw == pytest.approx(theirs.score, abs=1e-9)
            assert ours.threshold == theirs.threshold


@pytest.mark.parametrize("profile, fp_weight", [("standard", 0.11), ("reward_low_FP_rate", 0.22)])
def test_false_positive_far_from_windows_costs_the_full_weight(profile, fp_weight):
    # Row 200 precedes every window; row 895 is 4 window lengths (99 rows) past row 499.
    for fp_row in (200, 895):
        result = nab.score_corpus({"a": series([fp_row, 400])}, profile)
        assert result.files["a"].fp == 1
        assert result.raw == 1 - fp_weight
        assert result.score == pytest.approx(50 * (2 - fp_weight))


def test_false_positive_just_after_a_window_costs_little():
    # Row 500: y = 1/99, cost 0.11 * tanh(2.5 / 99) = 0.0028; the window is hit at its left edge.
    result = nab.score_corpus({"a": series([400, 500])}, "standard")
    assert result.raw == pytest.approx(1 - 0.11 * math.tanh(2.5 / 99))


def test_file_without_windows_or_detections_scores_zero():
    # The clean file's scores (0.3) all fall below the threshold the hit (1.0) sets.
    result = nab.score_corpus({"a": series([400]), "clean": series(range(1000), windows=(), score=0.3)},
                              "standard")
    assert result.threshold == 1.0
    clean = result.files["clean"]
    assert (clean.tp, clean.fp, clean.fn, clean.raw) == (0, 0, 0, 0)


def test_one_threshold_serves_every_file():
    # Threshold 0.7 would take only b's FP (-1.11); 0.6 takes the hit too (1 - 0.11); never firing
    # is -1. A threshold per file would have dropped the FP.
    result = nab.score_corpus({"a": series({400: 0.6}), "b": series({300: 0.7}, windows=())}, "standard")
    assert result.threshold == 0.6
    assert result.raw == pytest.approx(0.89)
    assert result.files["b"].fp == 1
    # With enough FPs in b at the hit's score, never firing wins.
    worse = nab.score_corpus({"a": series({400: 0.6}), "b": series(range(200, 220), windows=(), score=0.6)},
                             "standard")
    assert (worse.threshold, worse.score) == (nab.NEVER, 0)


def test_iso_timestamps_and_windows_score_like_epoch_seconds():
    stamps, scores, windows = series([420, 450])
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    as_iso = ([iso(t) for t in stamps], scores, [(iso(a), iso(b)) for a, b in windows])
    assert nab.score_corpus({"a": as_iso}, "standard").raw == pytest.approx(share(420))


def test_generated_set_round_trips_in_nab_layout(tmp_path):
    manifest = labelled.generate(str(tmp_path / "a"), seed=3, days=2)
    corpus = nab.load_corpus(str(tmp_path / "a"))
    assert [s.name for s in corpus] == list(manifest)
    for s in corpus:
        assert len(s.values) == 2 * 1440
        assert len(s.windows) == len(manifest[s.name])
        rows = [(s.timestamps.index(a), s.timestamps.index(b)) for a, b in s.windows]
        # Windows after the probation, apart, 10 % of the rows between them, around the onsets.
        assert all(left >= nab.probation_rows(2880) for left, _ in rows)
        assert all(r1 < l2 for (_, r1), (l2, _) in zip(rows, rows[1:]))
        assert sum(r - l + 1 for l, r in rows) <= 288
        for (left, right), anomaly in zip(rows, manifest[s.name]):
            assert left < s.timestamps.index(nab.epoch(anomaly["onset"])) < right
    assert labelled.generate(str(tmp_path / "b"), seed=3, days=2) == manifest
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in manifest)
    assert labelled.generate(str(tmp_path / "c"), seed=4, days=2) != manifest
