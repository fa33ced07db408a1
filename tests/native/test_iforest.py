"""The native Isolation Forest (native/iforest.c) against scikit-learn's.

The data is a week of per-minute link metrics with about 1 % anomalous minutes
(`week_of_minutes`, also used by bench/iforest.py). Both forests get the same
matrix, scikit-learn's StandardScaler output (an Isolation Forest is invariant to
per-feature affine maps anyway). Two forests with different seeds rank the many
ordinary minutes differently, so single forests are compared with the agreement
of two scikit-learn forests, and means over SEEDS forests with each other.
"""
from array import array

import numpy as np
import pytest

from rtk_qos._core import IsolationForest

MINUTES = 7 * 1440
CONTAMINATIONS = (0.01, 0.05, 0.1)
SEEDS = range(10)
ANOMALY_KINDS = ("spike", "outage", "latency", "loss", "night_peak", "upload")


def week_of_minutes(seed=0):
    """(X, labels): 7 days x 1440 minutes of rx and tx bytes/s, round-trip time (ms)
    and loss (%), each following a daily cycle (quiet at 4 am, a daytime hump, the
    peak at 9 pm, busier weekend days) with noise, then the time of day as sin and
    cos. 40 anomalous episodes of 1 to 4 minutes (about 1 % of the rows) cycle through
    ANOMALY_KINDS: traffic spikes, outages (traffic to 5 %), latency spikes, loss
    bursts, peak-hour traffic in the night (ordinary values at an odd hour), and
    uploads as big as downloads (ordinary levels, odd ratio)."""
    rng = np.random.default_rng(seed)
    minute = np.arange(MINUTES)
    tod = (minute % 1440) / 1440.0
    weekend = minute // 1440 >= 5
    load = (0.5 - 0.4 * np.cos(2 * np.pi * (tod - 1 / 6)) + 0.15 * np.exp(-(((tod - 0.875) / 0.05) ** 2))
            + np.where(weekend, 0.1 * np.sin(np.pi * tod), 0.0))
    rx = 40e6 * load * rng.lognormal(0.0, 0.15, MINUTES)
    tx = 0.18 * rx * rng.lognormal(0.0, 0.1, MINUTES)
    rtt = 12 + 25 * load ** 2 + rng.gamma(2.0, 1.5, MINUTES)
    loss = 0.05 + 0.4 * load ** 3 + np.abs(rng.normal(0.0, 0.05, MINUTES))
    metrics = np.column_stack([rx, tx, rtt, loss])
    labels = np.zeros(MINUTES, bool)
    starts = rng.choice(np.arange(10, MINUTES - 10), size=40, replace=False)
    for n, start in enumerate(starts):
        rows = np.arange(start, start + rng.integers(1, 5))
        kind = ANOMALY_KINDS[n % len(ANOMALY_KINDS)]
        if kind == "spike":
            metrics[rows, 0] *= rng.uniform(2.5, 4.0)
            metrics[rows, 1] *= rng.uniform(2.0, 3.0)
        elif kind == "outage":
            metrics[rows, :2] *= 0.05
        elif kind == "latency":
            metrics[rows, 2] += rng.uniform(60, 150)
        elif kind == "loss":
            metrics[rows, 3] += rng.uniform(2, 6)
        elif kind == "night_peak":
            metrics[rows, 0] = 40e6 * rng.lognormal(0.0, 0.15, len(rows))
            metrics[rows, 1] = 0.18 * metrics[rows, 0]
        else:  # upload
            metrics[rows, 1] = metrics[rows, 0] * rng.uniform(1.0, 1.5)
        labels[rows] = True
    X = np.column_stack([metrics, np.sin(2 * np.pi * tod), np.cos(2 * np.pi * tod)])
    return X, labels


def f1(predicted, labels):
    hits = np.count_nonzero(predicted & labels)
    return 2 * hits / (np.count_nonzero(predicted) + np.count_nonzero(labels))


@pytest.fixture(scope="module")
def week():
    from sklearn.preprocessing import StandardScaler

    X, labels = week_of_minutes(0)
    return np.ascontiguousarray(StandardScaler().fit_transform(X)), labels


@pytest.fixture(scope="module")
def scores(week):
    """Training scores, higher = more anomalous, of SEEDS forests of each kind."""
    from sklearn.ensemble import IsolationForest as SkForest

    Z, _ = week
    native = [np.asarray(IsolationForest(100, 256, seed=s).fit(Z).score(Z)) for s in SEEDS]
    models = [SkForest(n_estimators=100, max_samples=256, contamination=CONTAMINATIONS[0],
                       random_state=s).fit(Z) for s in SEEDS]
    # scikit-learn's own decision at its contamination is ours below: score above
    # the (1 - c) quantile of the training scores.
    sk = [-m.score_samples(Z) for m in models]
    assert np.array_equal(models[0].predict(Z) == -1, sk[0] > -models[0].offset_)
    return np.array(native), np.array(sk)


def test_detection_matches_scikit_learn(week, scores, capsys):
    _, labels = week
    native, sk = scores
    base = labels.mean()
    lines = [f"{len(labels)} minutes, {labels.sum()} anomalous; F1 over {len(SEEDS)} forests each:"]
    for c in CONTAMINATIONS:
        f1_native = np.mean([f1(s > IsolationForest.threshold(s, c), labels) for s in native])
        f1_sk = np.mean([f1(s > np.percentile(s, 100 * (1 - c)), labels) for s in sk])
        chance = 2 * base * c / (base + c)  # flagging a random fraction c
        best = 2 * min(base, c) / (base + c)  # flagging every anomaly first
        lines.append(f"  contamination {c:.2f}: native {f1_native:.3f}  scikit-learn {f1_sk:.3f}  "
                     f"(chance {chance:.3f}, best possible {best:.3f})")
        assert abs(f1_native - f1_sk) <= 0.05
        assert min(f1_native, f1_sk) >= max(0.4 * best, 5 * chance)
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_scores_rank_like_scikit_learn(scores, capsys):
    from scipy.stats import spearmanr

    native, sk = scores
    n = len(SEEDS)
    pair = np.mean([spearmanr(native[i], sk[i])[0] for i in range(n)])
    sk_pair = np.mean([spearmanr(sk[i], sk[(i + 1) % n])[0] for i in range(n)])
    native_pair = np.mean([spearmanr(native[i], native[(i + 1) % n])[0] for i in range(n)])
    means = spearmanr(native.mean(axis=0), sk.mean(axis=0))[0]
    with capsys.disabled():
        print(f"\nSpearman rho of single forests: native vs scikit-learn {pair:.3f}, scikit-learn vs "
              f"scikit-learn {sk_pair:.3f}, native vs native {native_pair:.3f}; of the mean scores "
              f"of {n} forests each: {means:.3f}")
    # A native forest agrees with a scikit-learn one as well as two scikit-learn ones do.
    assert pair >= sk_pair - 0.05 and pair > 0.7
    assert means > 0.95


def test_threshold_is_numpy_percentile(scores):
    s = scores[0][0]
    for c in CONTAMINATIONS + (0.5,):
        assert IsolationForest.threshold(s, c) == pytest.approx(np.percentile(s, 100 * (1 - c)), rel=1e-12)
    assert IsolationForest.threshold(array("d", [0.25]), 0.1) == 0.25


def test_numpy_memoryview_and_flat_array_agree(week):
    Z = week[0][:3000]
    flat = array("d", Z.ravel())
    matrix = memoryview(flat).cast("B").cast("d", (3000, 6))  # 2-D without numpy
    by_numpy = IsolationForest(50, 128, seed=3).fit(Z)
    by_flat = IsolationForest(50, 128, seed=3).fit(flat, n_features=6)
    by_view = IsolationForest(50, 128, seed=3).fit(matrix)
    expected = by_numpy.score(Z)
    assert isinstance(expected, array) and expected.typecode == "d" and len(expected) == 3000
    assert by_flat.score(flat, 6) == expected
    assert by_view.score(matrix) == expected
    assert by_numpy.score(flat, n_features=6) == expected
    assert IsolationForest(50, 128, seed=4).fit(Z).score(Z) != expected
    assert by_numpy.n_features == 6 and by_numpy.n_trees == 50 and by_numpy.sample_size == 128


def test_threads_share_a_forest(week):
    """fit and score release the GIL; a lock keeps a refit from racing a score."""
    from concurrent.futures import ThreadPoolExecutor

    Z = week[0][:2000]
    forest = IsolationForest(50, 128, seed=5).fit(Z)
    expected = forest.score(Z)
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(forest.fit if i % 2 else forest.score, Z) for i in range(16)]
        results = [job.result() for job in jobs]
    assert all(r == expected for r in results[::2])


def test_memory_is_the_arena():
    forest = IsolationForest()
    assert forest.memory_bytes == 0 and forest.n_features is None
    forest.fit(array("d", range(60)), 6)
    assert forest.memory_bytes == 463_896  # the figure native/iforest.h states
    assert forest.fit(array("d", range(60)), 2).memory_bytes < 463_896


def test_tiny_inputs():
    one = IsolationForest(seed=1).fit(array("d", [1.0, 2.0]), 2)
    assert list(one.score(array("d", [1.0, 2.0, 50.0, -3.0]), 2)) == [0.5, 0.5]
    constant = IsolationForest(seed=1).fit(array("d", [3.0] * 40), 2)
    scores = constant.score(array("d", [3.0, 3.0, 9.0, 9.0]), 2)
    assert scores[0] == scores[1] == pytest.approx(0.5)


@pytest.mark.parametrize("rows, n_features, message", [
    (np.zeros((0, 6)), None, "empty"),
    (np.zeros((5, 0)), None, "empty"),
    (array("d"), 3, "empty"),
    (array("d", range(6)), None, "shape"),           # flat without n_features
    (array("d", range(7)), 3, "n_features=3"),
    (array("d", range(6)), 0, "n_features must be"),
    (np.zeros((4, 6), np.float32), None, "float64"),
    (np.zeros((4, 12))[:, ::2], None, "contiguous"),
    ([[1.0, 2.0], [3.0, 4.0]], None, "buffer"),
    (np.array([[1.0, np.nan]]), None, "NaN"),
    (np.array([[1.0, np.inf]]), None, "infinity"),
])
def test_bad_input_is_a_value_error(rows, n_features, message):
    with pytest.raises(ValueError, match=message):
        IsolationForest().fit(rows, n_features)


def test_scoring_errors():
    with pytest.raises(ValueError, match="not fitted"):
        IsolationForest().score(np.zeros((2, 2)))
    forest = IsolationForest().fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="3 features, the forest was fitted on 2"):
        forest.score(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="empty"):
        forest.score(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN"):
        forest.score(np.array([[0.0, np.nan]]))
    for bad in (0.0, 0.6, float("nan")):
        with pytest.raises(ValueError, match="contamination"):
            IsolationForest.threshold(array("d", [0.5]), bad)
    with pytest.raises(ValueError, match="scores"):
        IsolationForest.threshold(array("d"), 0.1)
    for shape in ({"n_trees": 0}, {"sample_size": 0}, {"sample_size": 2 ** 24 + 1}):
        with pytest.raises(ValueError, match="n_trees"):
            IsolationForest(**shape)
