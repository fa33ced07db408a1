"""Feeds the agent's 1 Hz measurements into the metric history, each with its anomaly score, and saves it rarely.

Per interface: `<if>.rx_mbps`, `<if>.tx_mbps` and `<if>.error_rate` (errored and
dropped packets, percent of packets; no sample in a second without packets).
Per probe target (`gateway`, or a configured host as written): `probe.<target>.latency_ms`,
`probe.<target>.jitter_ms` and `probe.<target>.loss_pct` (see `probing.py`).
Each kind has its own budget of series, so new interfaces cannot crowd out the
probe or the reverse: 3 per interface (`history.max_interfaces`), 3 per probe
target; series loaded from the file count in their kind's budget.

Every sample is scored as it arrives by a streaming `Detector` of its own series
and the score (in [0, 1]) is stored beside the value (a bucket keeps the largest
score that fell in it); a gap has no sample and so no score. The detector's
defaults suit per-minute series; the 1 Hz series use `DETECTOR_SETTINGS`: robust
windows of 2 minutes (120 samples), scores 0 for the first minute, the long-run
distribution of surprise over 10 minutes (600 samples), and a time-of-day
baseline of 48 half-hour bins over 7 days (used once two days are seen), and of
7 x 48 time-of-week bins over 4 weeks (once two weeks are seen). That is
`DETECTOR_BYTES` per series beside the 253,440 of the series' history. Each detector's
state is saved with the history and restored at start (a state this build cannot
restore, or none, gives a fresh detector that re-warms in minutes), so a restart
keeps the days of time-of-day learning. Times of day are the router's local time
(its time zone, daylight saving included), not UTC.

Threads: the monitor thread records (the detectors and the budgets are its own);
a saver thread of its own writes the file every `history.save_every_s` and once
more when the agent stops, so a save (megabytes, fsynced, slow on flash) never
delays a tick; commands read the store. The store's lock gives the saver and the
readers every series, and the detectors' states, as of one instant.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Optional

from .._core import Detector
from ..history import HistoryStore, history_path

log = logging.getLogger(__name__)
SERIES_PER_INTERFACE = 3
SERIES_PER_TARGET = 3
DETECTOR_SETTINGS = {"window": 120, "warmup": 60, "bins": 48, "days": 7, "history": 600}
DETECTOR_BYTES = Detector.memory_bytes(**DETECTOR_SETTINGS)


def _is_probe(name: str) -> bool:
    return name.startswith("probe.")


class HistoryRecorder:
    def __init__(self, config: dict, probe_targets: int = 0):
        """probe_targets: how many targets the continuous probe has (its series' budget)."""
        settings = config["history"]
        self.path = history_path(config)
        self.save_every_s = settings["save_every_s"]
        self.max_interfaces = settings["max_interfaces"]
        self.store, self.problem = HistoryStore.load(self.path)
        self.budget = {False: self.max_interfaces * SERIES_PER_INTERFACE, True: probe_targets * SERIES_PER_TARGET}
        self.store.max_series = sum(self.budget.values())
        self.used = {kind: sum(1 for name in self.store.series if _is_probe(name) == kind) for kind in self.budget}
        self.detectors: dict[str, Detector] = {}
        for name, state in self.store.detector_states.items():
            detector = Detector(**DETECTOR_SETTINGS)
            try:
                detector.restore(state)
            except ValueError as exc:
                log.info("history: detector of %s starts afresh: %s", name, exc)
                continue
            self.detectors[name] = detector
        self.store.detector_state_source = lambda: {name: d.state() for name, d in self.detectors.items()}
        if self.problem:
            log.warning("%s", self.problem)
        elif self.store.series:
            log.info("history: %d series loaded from %s", len(self.store.series), self.path)
        self.saved_at: Optional[int] = None  # wall ms of the last save, written by the saver thread
        self._saver: Optional[threading.Thread] = None

    def start(self, stop: threading.Event) -> None:
        """Save every `save_every_s` on a thread of its own, and once more when `stop` is set."""
        def saver() -> None:
            while not stop.wait(self.save_every_s):
                self.save()
            self.save()
        self._saver = threading.Thread(target=saver, name="rtk-qos-history", daemon=True)
        self._saver.start()

    def join(self, timeout: float) -> bool:
        """Wait for the final save; False if it has not finished within `timeout` (stalled storage)."""
        if self._saver is None:
            return True
        self._saver.join(timeout)
        return not self._saver.is_alive()

    def record(self, rates: dict, t: int) -> None:
        """rates: interface -> {rx_mbps, tx_mbps, rx_pps, tx_pps, errors_ps, drops_ps}."""
        for name, r in rates.items():
            packets = r["rx_pps"] + r["tx_pps"]
            error_rate = 100.0 * (r["errors_ps"] + r["drops_ps"]) / packets if packets > 0 else math.nan
            for metric, value in (("rx_mbps", r["rx_mbps"]), ("tx_mbps", r["tx_mbps"]), ("error_rate", error_rate)):
                self.push(f"{name}.{metric}", t, value)

    def record_probes(self, samples: dict, t: int) -> None:
        """samples: target -> {latency_ms, jitter_ms, loss_pct}, NaN where that second has none."""
        for target, values in samples.items():
            for metric, value in values.items():
                self.push(f"probe.{target}.{metric}", t, value)

    def push(self, name: str, t: int, value: float) -> None:
        """Score the sample with its series' detector and store both; NaN (a gap) stores nothing."""
        if math.isnan(value):
            return
        with self.store.lock:  # a save reads the detectors' states with the series
            self._push(name, t, value)

    def _push(self, name: str, t: int, value: float) -> None:
        detector = self.detectors.get(name)
        if detector is None:
            if name not in self.store.series:
                kind = _is_probe(name)
                if self.used[kind] >= self.budget[kind]:
                    self.store.refused += 1  # past its kind's budget: neither a series nor a detector
                    return
                self.used[kind] += 1
            detector = self.detectors[name] = Detector(**DETECTOR_SETTINGS)
        # The detector's seasons follow the local clock: an office's 9 o'clock is local.
        self.store.push(name, t, value, detector.update(t + time.localtime(t).tm_gmtoff, value))

    def save(self) -> None:
        try:
            size = self.store.save(self.path)
        except OSError as exc:
            log.warning("history not saved to %s: %s", self.path, exc.strerror or exc)
            return
        self.saved_at = int(time.time() * 1000)
        log.info("history saved: %d series, %d bytes, %s", len(self.store.names()), size, self.path)

    def summary(self) -> dict:
        return {"series": len(self.store.names()), "memory_bytes": self.store.memory_bytes(),
                "detector_memory_bytes": len(self.detectors) * DETECTOR_BYTES,
                "samples": self.store.samples(), "path": self.path,
                "saved_at": self.saved_at, "problem": self.problem}
