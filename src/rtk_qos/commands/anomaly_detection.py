"""qos_anomaly_detection: the detection window against a baseline, both read from the history.

Data flow: the agent's history (1 s for the last hour, 1 min for 7 days) already
holds every metric's min/mean/max per minute and the streaming detector's score;
this command reads the 1-minute buckets of the detection window and of the
baseline before it, and runs the requested methods on them:

- `statistical`: each minute's mean (and, for metrics where only high is bad, its
  max) as a robust z against the baseline: median and MAD, per half-hour of the
  day once the baseline covers two days (a regular evening peak is expected),
  else over the whole baseline. The guide's thresholds: 3.0 / 2.5 / 2.0 sigma.
- `ml_based`: an Isolation Forest over per-minute feature vectors (one mean per
  series, plus the time of day as a point on a circle) of the baseline and the
  window; a window minute is anomalous above the baseline minutes' (1 -
  contamination) score quantile, contamination 0.01 / 0.05 / 0.1. The native forest
  by default; scikit-learn's StandardScaler + IsolationForest when the agent is
  configured with `ml_backend = "sklearn"` and it is installed.

Anomalous minutes of any series and method are grouped into episodes; each says
which metrics and methods agreed and the streaming detector's top score in it.
An episode still open at the end of the window is published as an event.
"""
from __future__ import annotations

import math
import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Optional

from .. import _core
from ..history import HistoryStore
from ..vocab.severity import Severity, distribution, grade, worst
from .base import CommandSpec, Context, register

OP = "qos_anomaly_detection"
STEP_S = 60                 # the history tier read: 1-minute buckets
TIER = 1
Z_THRESHOLDS = {"low": 3.0, "medium": 2.5, "high": 2.0}
CONTAMINATION = {"low": 0.01, "medium": 0.05, "high": 0.1}
TOD_BINS = 48               # half-hours of the day
TOD_MIN_DAYS = 2.0          # the time-of-day baseline needs two days of history
TOD_MIN_POINTS = 20         # per half-hour bin; fewer fall back to the whole baseline
MIN_BASELINE_POINTS = 30    # minutes of baseline before a series is judged at all
MIN_FOREST_ROWS = 120       # minutes of baseline before a forest is trained
EPISODE_GAP = 2             # anomalous minutes this close belong to one episode
STREAM_ANOMALOUS = 0.5      # a streaming score this high counts as the detector agreeing
FOREST = {"n_trees": 100, "sample_size": 256, "seed": 42}
# Severity of a statistical point: error from 1.5x the sensitivity's z threshold, critical from 2x;
# of a forest point: error when its score passes the threshold by more than FOREST_ERROR_MARGIN.
Z_ERROR_AT, Z_CRITICAL_AT = 1.5, 2.0
FOREST_ERROR_MARGIN = 0.1

# metric -> (series suffix, only high values are bad, unit, least scale). The least scale is the
# smallest deviation (in the unit) that counts as one standard deviation, however flat the
# baseline: an error rate of 0 all day must not make the first dropped packet a z of 10^5.
# Chosen as effect sizes that matter: at the high sensitivity (2 sigma) an error rate must pass
# 1 % (where the agent's health turns to warning), latency rise 2 ms, jitter 1 ms, traffic
# 0.2 Mbit/s (background chatter of an idle link stays below it).
METRICS = {
    "throughput": ((".rx_mbps", ".tx_mbps"), False, "Mbit/s", 0.1),
    "error_rate": ((".error_rate",), True, "%", 0.5),
    "latency": ((".latency_ms",), True, "ms", 1.0),
    "jitter": ((".jitter_ms",), True, "ms", 0.5),
}


# What the work costs, measured by bench/anomaly.py on its x86-64 machine (bench/anomaly-report.json,
# "estimate_basis", rounded up): per 1-minute row of one series, the whole command with the
# statistical method (reading, judging, episodes, the result); per row of the forest's table,
# the whole command with the forest.
SERIES_ROW_NS = 71
FOREST_ROW_NS = 1120
# The most series the agent's history holds per metric at its default budget: 16 interfaces with rx and tx
# and an error rate each; the gateway and up to 8 probe targets.
MAX_SERIES = {"throughput": 32, "error_rate": 16, "latency": 9, "jitter": 9}


def estimate_ms(args: dict, series: Optional[int] = None) -> int:
    """The run time for the window and baseline asked, with `series` series (by default the most
    the history can hold for the metrics asked, so the estimate bounds the run on the bench's CPU)."""
    rows = (args["detection_window"] + args["baseline_period"]) // STEP_S
    if series is None:
        series = sum(MAX_SERIES[m] for m in set(args["metrics"]))
    ns = rows * series * SERIES_ROW_NS
    if "ml_based" in args["detection_methods"]:
        ns += rows * FOREST_ROW_NS
    return math.ceil(ns / 1e6)


@dataclass
class Series:
    """One metric series over [first, last] in 1-minute buckets (NaN = no data); the first
    `n_base` buckets are the baseline, the rest the detection window. All series of a query
    share the range, so bucket i is the same minute in each."""
    name: str
    metric: str
    upper_only: bool
    first: int
    n_base: int
    mean: array
    high: array
    score: array
    _usual: Optional[_core.TimeOfDayBaseline] = None

    @property
    def split(self) -> int:
        return self.first + self.n_base

    def base(self, column: array) -> array:
        return column[:self.n_base]

    def window(self, column: array) -> array:
        return column[self.n_base:]

    def usual(self, column: Optional[array] = None) -> _core.TimeOfDayBaseline:
        """Median and scale of the baseline (of the means unless told), per half-hour of the
        day and overall; the means' is computed once."""
        if column is None:
            if self._usual is None:
                self._usual = self.usual(self.mean)
            return self._usual
        return _core.TimeOfDayBaseline(self.base(column), self.first, STEP_S, METRICS[self.metric][3], TOD_BINS,
                                       TOD_MIN_POINTS)


@dataclass
class Point:
    bucket: int
    series: str
    metric: str
    method: str
    value: float
    expected: Optional[float] = None
    z: Optional[float] = None
    score: Optional[float] = None
    severity: Severity = Severity.WARNING


@dataclass
class AnomalySpan:
    """Anomalous minutes no more than EPISODE_GAP apart, reported as one anomaly."""
    first: int
    last: int
    points: list = field(default_factory=list)


# ---- reading the history -------------------------------------------------------------------------

def _store(ctx: Context) -> tuple[HistoryStore, Optional[str]]:
    """The agent's live history, or (one-shot runs) the saved file, read without touching it."""
    if ctx.history is not None:
        return ctx.history, None
    path = ctx.settings.get("history_path")
    if not path or not os.path.exists(path):
        return HistoryStore(), f"no saved history at {path}" if path else "no history available"
    try:
        with open(path, "rb") as f:
            return HistoryStore.from_bytes(f.read()), None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return HistoryStore(), f"history {path} unreadable: {exc}"


def _series_names(store: HistoryStore, metric: str) -> list[str]:
    suffixes = METRICS[metric][0]
    names = sorted(n for n in list(store.series) if n.endswith(suffixes))
    # Loopback carries the host's own chatter, not the network's.
    return [n for n in names if not n.startswith("lo.")]


def _read(store: HistoryStore, name: str, metric: str, first: int, split: int, last: int) -> Series:
    _lo, mean, high, score = store.series[name].read_columns(TIER, first, last)
    return Series(name, metric, METRICS[metric][1], first, split - first, mean, high, score)


def _present(values) -> list:
    return [v for v in values if v == v]


def _time_of_day(usual: _core.TimeOfDayBaseline) -> bool:
    return usual.days >= TOD_MIN_DAYS


def _severity(z: float, threshold: float) -> Severity:
    return grade(z / threshold, Z_ERROR_AT, Z_CRITICAL_AT)


def statistical(series: Series, threshold: float) -> list[Point]:
    usual = series.usual()
    by_bin = _time_of_day(usual)
    z_mean = usual.z(series.window(series.mean), series.split, by_bin)
    if series.upper_only:
        # A burst inside the minute shows in its max before it moves the mean.
        usual_high = series.usual(series.high)
        z_high = usual_high.z(series.window(series.high), series.split, by_bin)
    points = []
    for i, z in enumerate(z_mean):
        bucket, k = series.split + i, series.n_base + i
        if series.upper_only and z_high[i] > z and z_high[i] > threshold:
            points.append(Point(bucket, series.name, series.metric, "statistical", series.high[k],
                                usual_high.at(bucket, by_bin)[0], z_high[i], severity=_severity(z_high[i], threshold)))
        elif (z if series.upper_only else abs(z)) > threshold:
            points.append(Point(bucket, series.name, series.metric, "statistical", series.mean[k],
                                usual.at(bucket, by_bin)[0], z, severity=_severity(abs(z), threshold)))
    return points


# ---- Isolation Forest ----------------------------------------------------------------------------

def _time_of_day_columns(first: int, rows: range) -> tuple[array, array]:
    """sin and cos of each row's minute of the day: one day's table, rotated and repeated."""
    day = 86400 // STEP_S
    angles = [2 * math.pi * k / day for k in range(day)]
    start = (first + rows.start) % day
    repeat = len(rows) // day + 2
    sin = array("d", map(math.sin, angles)) * repeat
    cos = array("d", map(math.cos, angles)) * repeat
    return sin[start:start + len(rows)], cos[start:start + len(rows)]


def _features(series: list[Series], rows: range) -> tuple[array, int]:
    """Row-major per-minute vectors: each series' mean (a missing minute takes the baseline
    median), then the time of day as sin/cos, so a forest sees what is usual when. Built a
    column at a time (strided slice assignment) rather than a value at a time."""
    d = len(series) + 2
    out = array("d", bytes(8 * d * len(rows)))
    for j, s in enumerate(series):
        usual = s.usual().overall[0]
        out[j::d] = array("d", [v if v == v else usual for v in s.mean[rows.start:rows.stop]])
    out[d - 2::d], out[d - 1::d] = _time_of_day_columns(series[0].first, rows)
    return out, d


def _quantile(values, q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    k = int(pos)
    return ordered[k] + (pos - k) * (ordered[min(k + 1, len(ordered) - 1)] - ordered[k])


def _forest_scores(train: array, test: array, d: int, backend: str, contamination: float):
    """(window scores, threshold), higher = more anomalous, in (0, 1].

    The forest is grown on the baseline and the window together: a value beyond anything in
    the baseline is isolated at once only if it is among the data the trees split (trained on
    the baseline alone, it would land in the leaf of the baseline's most extreme minutes and
    score no higher than they do). The threshold is the baseline's own (1 - contamination)
    score quantile: contamination is the share of usual minutes that would be flagged."""
    both = train + test
    n_train = len(train) // d
    if backend == "sklearn":
        import numpy as np
        from sklearn.ensemble import IsolationForest
        from sklearn.preprocessing import StandardScaler
        x = StandardScaler().fit(np.frombuffer(train, dtype=np.float64).reshape(-1, d)).transform(
            np.frombuffer(both, dtype=np.float64).reshape(-1, d))
        model = IsolationForest(n_estimators=FOREST["n_trees"], max_samples=FOREST["sample_size"],
                                random_state=FOREST["seed"]).fit(x)
        scores = -model.score_samples(x)
    else:
        # No scaler: a forest's splits are uniform between a feature's min and max, so
        # rescaling a feature changes nothing.
        forest = _core.IsolationForest(**FOREST)
        forest.fit(both, d)
        scores = forest.score(both, d)
    return scores[n_train:], _quantile(scores[:n_train], 1 - contamination)


def ml_based(series: list[Series], contamination: float, backend: str) -> tuple[list[Point], dict]:
    n_base, n = series[0].n_base, len(series[0].mean)

    def known(i: int) -> bool:
        return any(s.mean[i] == s.mean[i] for s in series)
    # Training starts at the first minute with data; a minute some series missed takes that
    # series' usual value. A window minute with no data at all (the agent was down) is not judged.
    base_known = max(s.usual().overall[2] for s in series)
    win_known = any(known(i) for i in range(n_base, n))
    info = {"backend": backend, "training_rows": base_known, "contamination": contamination}
    if base_known < MIN_FOREST_ROWS or not win_known:
        info["status"] = "insufficient_history"
        info["note"] = (f"a forest needs {MIN_FOREST_ROWS} baseline minutes, {base_known} exist"
                        if win_known else "no data in the detection window")
        return [], info
    base_first = min(next(i for i, v in enumerate(s.mean) if v == v) for s in series)
    base_rows, win_rows = range(base_first, n_base), range(n_base, n)
    train, d = _features(series, base_rows)
    test, _ = _features(series, win_rows)
    scores, threshold = _forest_scores(train, test, d, backend, contamination)
    info.update(status="ok", features=[s.name for s in series] + ["time_of_day_sin", "time_of_day_cos"],
                threshold=round(float(threshold), 4))
    usual = [s.usual() for s in series]
    by_bin = [_time_of_day(u) for u in usual]
    points = []
    for k, i in enumerate(win_rows):
        score = float(scores[k])
        if score <= threshold or not known(i):
            continue
        # The forest says the minute is unusual, not why: name the series furthest from what
        # is usual at that time of day.
        bucket = series[0].first + i
        row = test[k * d:(k + 1) * d]
        expected = [u.at(bucket, tod) for u, tod in zip(usual, by_bin)]
        z = [(row[j] - c) / sd for j, (c, sd) in enumerate(expected)]
        j = max(range(len(series)), key=lambda m: abs(z[m]))
        severity = Severity.ERROR if score - threshold > FOREST_ERROR_MARGIN else Severity.WARNING
        points.append(Point(bucket, series[j].name, series[j].metric, "ml_based", row[j], expected[j][0],
                            z[j], score, severity))
    return points, info


# ---- episodes and the result --------------------------------------------------------------------

def _spans(points: list[Point]) -> list[AnomalySpan]:
    out: list[AnomalySpan] = []
    for p in sorted(points, key=lambda p: p.bucket):
        if out and p.bucket - out[-1].last <= EPISODE_GAP:
            out[-1].last = max(out[-1].last, p.bucket)
            out[-1].points.append(p)
        else:
            out.append(AnomalySpan(p.bucket, p.bucket, [p]))
    return out


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(value, digits)


def _describe(episode: AnomalySpan, by_name: dict, window_last: int) -> dict:
    stat = [p for p in episode.points if p.method == "statistical"]
    peak = max(stat, key=lambda p: abs(p.z)) if stat else max(episode.points, key=lambda p: p.score)
    stream = [sc for name in {p.series for p in episode.points}
              for sc in by_name[name].score[episode.first - by_name[name].first:episode.last - by_name[name].first + 1]
              if sc == sc]
    stream_top = max(stream) if stream else None
    methods = sorted({p.method for p in episode.points})
    if stream_top is not None and stream_top >= STREAM_ANOMALOUS:
        methods.append("streaming")
    severity = worst(p.severity for p in episode.points).guide
    return {
        "start": episode.first * STEP_S * 1000, "end": (episode.last + 1) * STEP_S * 1000,
        "duration_s": (episode.last - episode.first + 1) * STEP_S,
        "ongoing": episode.last >= window_last - 1,
        "metrics": sorted({p.metric for p in episode.points}),
        "series": sorted({p.series for p in episode.points}),
        "methods": methods, "severity": severity, "anomalous_minutes": len({p.bucket for p in episode.points}),
        "peak": {"timestamp": peak.bucket * STEP_S * 1000, "metric": peak.metric, "series": peak.series,
                 "method": peak.method, "value": _round(peak.value), "expected": _round(peak.expected),
                 "z_score": _round(peak.z, 2), "forest_score": _round(peak.score, 4),
                 "unit": METRICS[peak.metric][2]},
        "streaming_score_max": _round(stream_top, 3),
    }


def _summary(series: list[Series]) -> dict:
    out: dict = {}
    for s in series:
        window = _present(s.window(s.mean))
        entry = {"unit": METRICS[s.metric][2], "minutes": len(window)}
        if window:
            entry.update(mean=_round(sum(window) / len(window)), max=_round(max(_present(s.window(s.high)))),
                         last=_round(window[-1]))
        center, _scale, n = s.usual().overall
        if n:
            entry["baseline_median"] = _round(center)
        out.setdefault(s.metric, {})[s.name] = entry
    return out


def _recommendations(episodes: list[dict], coverage: dict) -> list[str]:
    out = []
    for e in episodes:
        peak = e["peak"]
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e["start"] / 1000))
        what = (f"{peak['series']} at {peak['value']} {peak['unit']} against a usual {peak['expected']} "
                f"{peak['unit']}" if peak["expected"] is not None else peak["series"])
        agreed = " and ".join(e["methods"])
        lead = f"{when}, {e['duration_s'] // 60} min{' (ongoing)' if e['ongoing'] else ''}: {what} ({agreed})"
        metrics = set(e["metrics"])
        if "latency" in metrics and "throughput" in metrics:
            out.append(f"{lead}: delay rose with unusual traffic, the signature of queueing at the bottleneck; "
                       "shape egress just below the uplink rate (qos_auto_optimization, minimize_latency).")
        elif "latency" in metrics or "jitter" in metrics:
            out.append(f"{lead}: delay changed without unusual traffic here, so the cause is on the path "
                       "(gateway, upstream link or route); compare with qos_performance_monitor to other hosts.")
        elif "error_rate" in metrics:
            out.append(f"{lead}: errored or dropped packets above their usual rate point to the link itself "
                       "(cable, duplex mismatch, radio interference) or a full queue; check the interface.")
        else:
            out.append(f"{lead}: traffic far from its usual level for this time; if unexpected, "
                       "qos_traffic_analysis shows which protocols and flows carry it.")
    if not episodes and coverage["sufficient"]:
        out.append("No anomaly in the detection window: every metric stayed within its usual range.")
    if not coverage["sufficient"]:
        out.append(coverage["note"])
    return out


def run(args: dict, ctx: Context) -> dict:
    window_s, baseline_s = args["detection_window"], args["baseline_period"]
    sensitivity, methods = args["sensitivity"], list(dict.fromkeys(args["detection_methods"]))
    store, problem = _store(ctx)
    now = int(ctx.clock.wall_ms() // 1000)
    last = now // STEP_S
    split = last - window_s // STEP_S + 1
    first = split - baseline_s // STEP_S

    with store.lock:  # every series as of one instant: the agent's monitor pushes meanwhile
        series = [_read(store, name, metric, first, split, last)
                  for metric in dict.fromkeys(args["metrics"]) for name in _series_names(store, metric)]
    missing = [m for m in args["metrics"] if not any(s.metric == m for s in series)]
    usual = {s.name: s.usual() for s in series}
    judged = [s for s in series if usual[s.name].overall[2] >= MIN_BASELINE_POINTS and _present(s.window(s.mean))]
    baseline_minutes = max((usual[s.name].overall[2] for s in series), default=0)
    coverage = {
        "requested_s": baseline_s, "available_s": baseline_minutes * STEP_S,
        "needed_s": MIN_BASELINE_POINTS * STEP_S, "time_of_day_after_s": int(TOD_MIN_DAYS * 86400),
        "time_of_day": any(_time_of_day(usual[s.name]) for s in judged),
        "resolution_s": STEP_S, "sufficient": bool(judged),
    }
    if not judged:
        coverage["note"] = (f"Not enough history yet: the baseline holds {baseline_minutes} min of data "
                            f"and at least {MIN_BASELINE_POINTS} min are needed (the agent records every second "
                            f"while it runs; the requested baseline is {baseline_s // 60} min).")
    elif baseline_minutes * STEP_S < baseline_s:
        coverage["note"] = (f"The baseline covers {baseline_minutes} of the requested {baseline_s // 60} min: "
                            "results use what exists.")
    if problem:
        coverage["problem"] = problem

    points: list[Point] = []
    method_info: dict = {}
    if "statistical" in methods:
        threshold = Z_THRESHOLDS[sensitivity]
        for s in judged:
            points.extend(statistical(s, threshold))
        method_info["statistical"] = {"status": "ok" if judged else "insufficient_history",
                                      "threshold_sigma": threshold, "series": len(judged)}
    if "ml_based" in methods:
        backend = ctx.settings.get("ml_backend", "native")
        if judged:
            ml_points, info = ml_based(judged, CONTAMINATION[sensitivity], backend)
            points.extend(ml_points)
        else:
            info = {"status": "insufficient_history", "backend": backend}
        method_info["ml_based"] = info

    by_name = {s.name: s for s in series}
    episodes = [_describe(e, by_name, last) for e in _spans(points)]
    for e in episodes:
        if e["ongoing"]:
            # The event schema's severity names, not the result's (after **e, so they win).
            ctx.event("qos_anomaly", {**e, "event_type": "qos_anomaly", "state": "open", "command_id": ctx.command_id,
                                      "severity": Severity.from_guide(e["severity"]).wire})
    severity_counts = distribution((Severity.from_guide(e["severity"]) for e in episodes), guide=True)
    return {
        "detection_summary": {
            "status": "ok" if judged else "insufficient_history",
            "total_anomalies": len(episodes),
            "anomalous_points": len(points),
            "detection_methods": methods,
            "methods": method_info,
            "severity_distribution": severity_counts,
            "affected_metrics": sorted({m for e in episodes for m in e["metrics"]}),
            "detection_window": {"start": split * STEP_S * 1000, "end": (last + 1) * STEP_S * 1000,
                                 "seconds": window_s},
            "baseline": coverage,
            "metrics_without_data": missing,
        },
        "anomalies": episodes,
        "current_metrics_summary": _summary(series),
        "recommendations": _recommendations(episodes, coverage),
    }


SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms,
                            summary="Compare the recent window with the history: statistical and Isolation Forest"))
