"""Numenta Anomaly Benchmark (NAB) scoring in plain Python, with reference detectors measured in
the same run.

    python bench/nab.py [--data DIR] [--halves] [--generated] [--seeds 1,2,3] [--sweep KEY=V1,V2 ...]
                        [--output FILE]

Scores our detector (`rtk_qos.detect.make_detector`, when importable) beside NAB's windowed
Gaussian, a seeded random detector and the null detector on the NAB files in --data (with --halves
also on its even- and odd-numbered files in name order as corpora of their own: the design and
held-out halves the detector was designed with), and with --generated on the labelled traffic-like week of bench/labelled.py (a separate corpus with its own
threshold). Prints normalised scores per detector and profile and our per-file detections; writes
everything as JSON with --output. Each --sweep KEY=V1,V2,... scores our detector again on every
corpus with that one setting changed (`rtk-qos detect --set` names), so the report shows how much
the figures depend on it.

Scoring follows NAB's own scorer (nab/sweeper.py, nab/runner.py) row for row, so that on NAB's
data this script and `../shared/anomaly-data/nab-score.sh` give the same scores:
  * A detection is a row whose score is >= the threshold; a NaN score (a gap) never is.
  * Probation: rows before min(floor(15 % of the rows), 750) count for nothing, in or out of a
    window. A window with no row after the probation neither earns nor costs anything.
  * A window [start, end] covers the rows from the first at or after `start` to the last at or
    before `end` (rows left..right, width = right - left + 1). Windows must not overlap.
  * Inside a window, row i sits at y = -(right - i + 1) / width: -1 at the left edge, -1/width
    at the right edge. Past a window, y = (i - right) / (width - 1) from the nearest preceding one.
  * sigma(y) = 2 / (1 + exp(5y)) - 1, and -1 for y > 3.
  * The first detection in a window is a TP worth A_tp * sigma(y) / sigma(-1). Later detections
    in that window count for nothing.
  * A detection outside every window is an FP costing A_fp * sigma(y) past a window, or the full
    A_fp when no window precedes it. Every such row counts: a score that stays high is many FPs.
  * Each window with no TP costs A_fn.
  * One threshold for every file of a corpus, per profile, maximising the raw total. The search is
    exact: every distinct score in the corpus is a candidate, and so is "never fire" (reported as
    1.1, NAB's starting value, above any score). Ties go to the higher threshold.
  * Normalised = 100 (raw - null) / (perfect - null) with null = -A_fn * (windows that count) and
    perfect = A_tp * (every window), as NAB's runner computes them.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import random
import tempfile
import time
from bisect import bisect_left, bisect_right
from collections import namedtuple
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from operator import itemgetter

from report import write as write_report

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "anomaly-data",
                            "nab-dev")

Profile = namedtuple("Profile", "tp fn fp")
PROFILES = {
    "standard": Profile(tp=1.0, fn=1.0, fp=0.11),
    "reward_low_FP_rate": Profile(tp=1.0, fn=1.0, fp=0.22),
    "reward_low_FN_rate": Profile(tp=1.0, fn=2.0, fp=0.11),
}
NEVER = 1.1  # the threshold that means "never fire"


def sigmoid(y: float) -> float:
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


MAX_TP = sigmoid(-1.0)


def probation_rows(rows: int) -> int:
    return min(rows * 15 // 100, 750)


def epoch(t) -> float:
    """Seconds since the epoch of a number or an ISO 8601 string (naive strings are UTC, as NAB's)."""
    if isinstance(t, (int, float)):
        return float(t)
    when = datetime.fromisoformat(t)
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class Series:
    name: str
    timestamps: list[float]  # epoch seconds
    values: list[float]
    windows: list[tuple[float, float]]  # [start, end] in epoch seconds


@dataclass
class FileScore:
    tp: int
    fp: int
    fn: int
    raw: float
    # Per window in time order: the share of the TP weight earned, None when missed.
    windows: list[float | None] = field(default_factory=list)


@dataclass
class CorpusScore:
    profile: str
    score: float  # normalised, 0 = null detector, 100 = perfect
    threshold: float
    raw: float
    null: float
    perfect: float
    files: dict[str, FileScore]


def load_corpus(directory: str) -> list[Series]:
    """The series of a NAB-layout directory: `windows.json` beside the CSVs (keys may carry NAB's
    category prefix, as in "artificialWithAnomaly/x.csv"), or a NAB checkout's
    labels/combined_windows.json with the CSVs under data/."""
    labels = os.path.join(directory, "windows.json")
    data = directory
    if not os.path.exists(labels):
        labels = os.path.join(directory, "labels", "combined_windows.json")
        data = os.path.join(directory, "data")
    with open(labels) as fh:
        windows = json.load(fh)
    corpus = []
    for name, spans in windows.items():
        path = os.path.join(data, name)
        if not os.path.exists(path):
            path = os.path.join(data, os.path.basename(name))
        with open(path, newline="") as fh:
            rows = csv.reader(fh)
            if next(rows) != ["timestamp", "value"]:
                raise ValueError(f"{path}: header is not timestamp,value")
            stamps, values = [], []
            for stamp, value in rows:
                stamps.append(epoch(stamp))
                values.append(float(value))
        corpus.append(Series(name, stamps, values, [(epoch(a), epoch(b)) for a, b in spans]))
    return corpus


@dataclass
class _Rows:
    """The rows of one file that can count, each as (anomaly score, unit value)."""
    inside: list[list[tuple[float, float]]]  # per window after the probation: TP reward / A_tp
    outside: list[tuple[float, float]]  # FP cost / A_fp, in [-1, 0]
    windows: int  # every labelled window, including those inside the probation


def _rows(timestamps, scores, windows) -> _Rows:
    stamps = [epoch(t) for t in timestamps]
    if len(stamps) != len(scores):
        raise ValueError(f"{len(stamps)} timestamps for {len(scores)} scores")
    bounds = []
    for start, end in sorted((epoch(a), epoch(b)) for a, b in windows):
        left, right = bisect_left(stamps, start), bisect_right(stamps, end) - 1
        if left > right or (bounds and left <= bounds[-1][1]):
            raise ValueError(f"window {start}..{end} covers no row or overlaps another")
        bounds.append((left, right))
    probation = probation_rows(len(stamps))
    rows = _Rows([[] for left, right in bounds if right >= probation], [], len(bounds))
    first = len(bounds) - len(rows.inside)  # the windows before it lie inside the probation
    w = 0  # the window the row is in, or the next one
    for i in range(probation, len(stamps)):
        s = scores[i]
        if s != s:
            continue
        while w < len(bounds) and bounds[w][1] < i:
            w += 1
        if w < len(bounds) and bounds[w][0] <= i:
            left, right = bounds[w]
            rows.inside[w - first].append((s, sigmoid(-(right - i + 1) / (right - left + 1)) / MAX_TP))
        elif w:
            left, right = bounds[w - 1]
            rows.outside.append((s, sigmoid((i - right) / max(right - left, 1))))
        else:
            rows.outside.append((s, -1.0))
    return rows


def _file_score(rows: _Rows, threshold: float, p: Profile) -> FileScore:
    costs = [c for s, c in rows.outside if s >= threshold]
    # The reward falls with the row, so the first detection in a window is the best one.
    earned = [max((r for s, r in window if s >= threshold), default=None) for window in rows.inside]
    hits = [r for r in earned if r is not None]
    missed = len(earned) - len(hits)
    return FileScore(len(hits), len(costs), missed,
                     p.tp * sum(hits) - p.fn * missed + p.fp * sum(costs), earned)


def _events(rows: _Rows, p: Profile) -> list[tuple[float, float]]:
    """(score, change of the file's raw total when the threshold falls to that score)."""
    events = [(s, p.fp * c) for s, c in rows.outside]
    for window in rows.inside:
        best = None
        for s, r in sorted(window, key=itemgetter(0), reverse=True):
            if best is None:
                events.append((s, p.tp * r + p.fn))  # the window stops being a miss
                best = r
            elif r > best:  # an earlier row joins: the TP moves forward
                events.append((s, p.tp * (r - best)))
                best = r
    return events


def score_corpus(scored: dict, profile: str | Profile) -> CorpusScore:
    """Score {file name: (timestamps, anomaly scores, windows)} with one threshold for all files.
    Timestamps and window ends are epoch seconds or ISO strings; `profile` a PROFILES name."""
    name, p = (profile, PROFILES[profile]) if isinstance(profile, str) else ("custom", profile)
    files = {key: _rows(*value) for key, value in scored.items()}
    windows = sum(rows.windows for rows in files.values())
    if not windows:
        raise ValueError("no labelled window in the corpus: the score is undefined")
    null, perfect = -p.fn * sum(len(rows.inside) for rows in files.values()), p.tp * windows

    events = [e for rows in files.values() for e in _events(rows, p)]
    events.sort(key=itemgetter(0), reverse=True)
    total, best, threshold = null, null, NEVER
    for k, (s, change) in enumerate(events):
        total += change
        # Only after every row with this score has joined is the total one threshold's.
        if (k + 1 == len(events) or events[k + 1][0] != s) and total > best:
            best, threshold = total, s

    # Report sums computed afresh at the chosen threshold, not the running total's rounding.
    per_file = {key: _file_score(rows, threshold, p) for key, rows in files.items()}
    raw = sum(f.raw for f in per_file.values())
    return CorpusScore(name, 100 * (raw - null) / (perfect - null), threshold, raw, null, perfect, per_file)


def run(detector_factory, corpus: list[Series]) -> dict:
    """Score every row of every series causally, a fresh detector per series; returns the
    `scored` mapping score_corpus takes."""
    scored = {}
    for series in corpus:
        detector = detector_factory()
        scores = [detector.update(t, x) for t, x in zip(series.timestamps, series.values)]
        scored[series.name] = (series.timestamps, scores, series.windows)
    return scored


# ---- reference detectors ----

class WindowedGaussian:
    """NAB's windowed Gaussian: the score of x is 1 - Q(|x - mean| / std), Q the standard normal
    upper tail, mean and (population) std those of the trailing `size` values before x. As in NAB,
    size 6400 and, once the window is full, the statistics refreshed every `step` = 100 rows; a
    zero std counts as 1e-6; the first row scores 0."""

    def __init__(self, size: int = 6400, step: int = 100):
        self.size, self.step = size, step
        self.values, self.pending = [], []
        self.mean = self.m2 = 0.0
        self.std = 1e-6

    def update(self, t: float, x: float) -> float:
        score = 0.0 if not self.values else 1.0 - 0.5 * math.erfc(abs(x - self.mean) / self.std / math.sqrt(2))
        if len(self.values) < self.size:
            # Welford's update: exact statistics every row without rescanning the window.
            self.values.append(x)
            delta = x - self.mean
            self.mean += delta / len(self.values)
            self.m2 += delta * (x - self.mean)
            self.std = math.sqrt(self.m2 / len(self.values)) or 1e-6
        else:
            self.pending.append(x)
            if len(self.pending) == self.step:
                self.values = self.values[self.step:] + self.pending
                self.pending = []
                self.mean = math.fsum(self.values) / self.size
                self.std = math.sqrt(math.fsum((v - self.mean) ** 2 for v in self.values) / self.size) or 1e-6
        return score


class RandomDetector:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def update(self, t: float, x: float) -> float:
        return self.rng.random()


class NullDetector:
    def update(self, t: float, x: float) -> float:
        return 0.0


def baselines() -> dict:
    """Fresh reference factories (the random one seeds each file differently, reproducibly)."""
    seeds = itertools.count(42)
    return {"windowed_gaussian": WindowedGaussian,
            "random": lambda: RandomDetector(next(seeds)),
            "null": NullDetector}


# ---- CLI ----

def evaluate(corpus: list[Series], detectors: dict) -> dict:
    results = {}
    for name, factory in detectors.items():
        started = time.perf_counter()
        scored = run(factory, corpus)
        seconds = time.perf_counter() - started
        results[name] = {"seconds": seconds,
                         "profiles": {p: score_corpus(scored, p) for p in PROFILES}}
    return results


def show(title: str, corpus: list[Series], results: dict, primary: str) -> None:
    rows = sum(len(s.values) for s in corpus)
    windows = sum(len(s.windows) for s in corpus)
    print(f"\n{title}: {len(corpus)} files, {rows} rows, {windows} windows")
    print(f"  {'detector':18s}" + "".join(f"{p:>28s}" for p in PROFILES) + "   rows/s")
    for name, result in results.items():
        cells = "".join(f"{s.score:14.1f} @ {s.threshold:<11.6g}" for s in result["profiles"].values())
        print(f"  {name:18s}{cells}{rows / result['seconds']:9.0f}")
    standard = results[primary]["profiles"]["standard"]
    print(f"  {primary}, standard profile, threshold {standard.threshold:.6g}:")
    print(f"    {'file':52s} TP  FP  FN     raw  windows (TP share earned)")
    for name, f in standard.files.items():
        shares = " ".join("miss" if w is None else f"{w:.2f}" for w in f.windows)
        print(f"    {name:52s}{f.tp:3d}{f.fp:4d}{f.fn:4d}{f.raw:8.3f}  {shares}")


def sweep(corpora: dict, sweeps: list) -> dict:
    """Normalised scores per profile of our detector with one setting changed at a time."""
    from rtk_qos.detect import make_detector, _settings
    out: dict = {}
    for key, values in sweeps:
        for value in values:
            settings = _settings([f"{key}={value}"])
            label = f"{key}={value}"
            out[label] = {}
            for name, (_source, corpus) in corpora.items():
                scored = run(lambda: make_detector(**settings), corpus)
                out[label][name] = {p: round(score_corpus(scored, p).score, 1) for p in PROFILES}
            print(f"  sweep {label:24s}" + "".join(
                f"  {name}: " + " / ".join(f"{v:.1f}" for v in scores.values()) for name, scores in out[label].items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="NAB-layout directory (default: %(default)s)")
    parser.add_argument("--halves", action="store_true",
                        help="also score the even- and odd-numbered NAB files (name order) apart")
    parser.add_argument("--generated", action="store_true", help="also score bench/labelled.py's set")
    parser.add_argument("--seeds", default="1,2,3",
                        help="seeds of the generated sets, scored as one corpus (default: %(default)s): "
                             "one set has too few windows for a stable figure")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="also score our detector with KEY set to each value in turn")
    parser.add_argument("--output", help="write the JSON report here")
    args = parser.parse_args()
    sweeps = [(key, values.split(",")) for key, _, values in (s.partition("=") for s in args.sweep)]

    detectors = {}
    try:
        from rtk_qos.detect import make_detector
        detectors["rtk_qos"] = make_detector
        ours = "rtk_qos.detect.make_detector"
    except ImportError as exc:
        ours = f"unavailable ({exc}): baselines only"
    print(f"our detector: {ours}")

    corpora = {"nab": (args.data, load_corpus(args.data))}
    if args.halves:
        ordered = sorted(corpora["nab"][1], key=lambda s: s.name)
        corpora["nab_even"] = (f"{args.data}, files 0, 2, 4, ... in name order (design)", ordered[0::2])
        corpora["nab_odd"] = (f"{args.data}, files 1, 3, 5, ... in name order (held out)", ordered[1::2])
    if args.generated:
        import labelled
        seeds = [int(x) for x in args.seeds.split(",")]
        manifest, generated = {}, []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                directory = os.path.join(tmp, f"seed{seed}")
                for name, anomalies in labelled.generate(directory, seed=seed).items():
                    manifest[f"seed{seed}/{name}"] = anomalies
                generated += [replace(s, name=f"seed{seed}/{s.name}") for s in load_corpus(directory)]
        corpora["generated"] = (f"bench/labelled.py seeds {args.seeds}", generated)

    report = {"detector": ours, "corpora": {}}
    for key, (source, corpus) in corpora.items():
        results = evaluate(corpus, {**detectors, **baselines()})
        show(f"{key} ({source})", corpus, results, next(iter(results)))
        report["corpora"][key] = {
            "source": source,
            "files": len(corpus),
            "windows": sum(len(s.windows) for s in corpus),
            "detectors": {name: {"seconds": r["seconds"],
                                 "profiles": {p: asdict(s) for p, s in r["profiles"].items()}}
                          for name, r in results.items()},
        }
    if args.generated:
        report["corpora"]["generated"]["anomalies"] = manifest
    if sweeps and "rtk_qos" in detectors:
        report["sweep"] = sweep(corpora, sweeps)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
