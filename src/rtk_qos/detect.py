"""`rtk-qos detect`: the agent's streaming detector run offline over a CSV series.

Reads `timestamp,value` rows (a header line is optional; timestamps are Unix
seconds or ISO 8601 such as `2014-04-01 00:05:00`, taken as UTC), scores each
row as it is read with the same native detector the agent runs on its metrics,
and writes `timestamp,value,anomaly_score`, plus `label` (1 inside a labelled
window, else 0) when given a windows file. Row by row: a score never depends on
a later row, and the output is flushed as it goes so it can follow a pipe.

A windows file is JSON: a list of `[start, end]` pairs, or NAB's layout (an
object mapping file names to such lists, matched on the input's file name).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from datetime import datetime, timezone
from typing import Iterable, Iterator, Optional, TextIO

from ._core import DETECTOR_FIELDS, Detector, detector_defaults


def make_detector(**settings) -> Detector:
    """A fresh detector (defaults suit per-minute series; see `detector_defaults()`)."""
    return Detector(**settings)


def parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def load_windows(path: str, series_name: str) -> list[tuple[float, float]]:
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        matches = [v for k, v in data.items() if os.path.basename(k) == series_name]
        if not matches:
            raise ValueError(f"{path} has no windows for {series_name}")
        data = matches[0]
    return [(parse_time(str(a)), parse_time(str(b))) for a, b in data]


def score_rows(rows: Iterable[list[str]], detector: Detector,
               windows: Optional[list[tuple[float, float]]] = None) -> Iterator[list[str]]:
    """Scores `timestamp,value` rows as they come; bad rows raise ValueError naming the line."""
    for line, row in enumerate(rows, start=1):
        if not row or (line == 1 and row[0].strip().lower() == "timestamp"):
            continue
        if len(row) < 2:
            raise ValueError(f"line {line}: expected timestamp,value, got {','.join(row)!r}")
        try:
            t, value = parse_time(row[0]), float(row[1]) if row[1].strip() else math.nan
        except ValueError as exc:
            raise ValueError(f"line {line}: {exc}") from None
        score = detector.update(t, value)
        out = [row[0], row[1], "" if math.isnan(score) else f"{score:.6f}"]
        if windows is not None:
            out.append("1" if any(a <= t <= b for a, b in windows) else "0")
        yield out


def _settings(pairs: list[str]) -> dict:
    defaults = detector_defaults()
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in DETECTOR_FIELDS:
            raise ValueError(f"unknown setting {key!r} (settings: {', '.join(DETECTOR_FIELDS)})")
        settings[key] = type(defaults[key])(value)
    return settings


def run(ns: argparse.Namespace) -> int:
    try:
        detector = make_detector(**_settings(ns.set))
        windows = load_windows(ns.windows, os.path.basename(ns.input)) if ns.windows else None
        source: TextIO = sys.stdin if ns.input == "-" else open(ns.input, newline="")
        sink: TextIO = sys.stdout if ns.output == "-" else open(ns.output, "w", newline="")
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with source, sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(["timestamp", "value", "anomaly_score"] + (["label"] if windows is not None else []))
        try:
            for out in score_rows(csv.reader(source), detector, windows):
                writer.writerow(out)
                if sink is sys.stdout:
                    sink.flush()
        except ValueError as exc:
            print(f"error: {ns.input}: {exc}", file=sys.stderr)
            return 2
    return 0


def add_parser(commands) -> None:
    p = commands.add_parser("detect", help="score a timestamp,value CSV with the streaming anomaly detector",
                            description=__doc__.split("\n\n")[1])
    p.add_argument("--input", required=True, help="CSV of timestamp,value ('-': stdin)")
    p.add_argument("--output", default="-", help="scored CSV (default: stdout)")
    p.add_argument("--windows", help="labelled anomaly windows (JSON) to add a label column")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"detector setting ({', '.join(DETECTOR_FIELDS)})")
    p.set_defaults(handler=run)
