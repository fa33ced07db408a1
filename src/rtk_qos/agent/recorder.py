"""Feeds the agent's 1 Hz measurements into the metric history and saves it rarely.

Per interface: `<if>.rx_mbps`, `<if>.tx_mbps` and `<if>.error_rate` (errored and
dropped packets, percent of packets; no sample in a second without packets).
Anomaly scores are stored as NaN until the streaming detector scores them.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Optional

from ..history import HistoryStore

log = logging.getLogger(__name__)
SERIES_PER_INTERFACE = 3


class HistoryRecorder:
    def __init__(self, config: dict):
        settings = config["history"]
        self.path = settings["path"] or os.path.join(config["state_dir"], "history.bin")
        self.save_every_s = settings["save_every_s"]
        self.max_interfaces = settings["max_interfaces"]
        self.store, self.problem = HistoryStore.load(self.path)
        self.store.max_series = self.max_interfaces * SERIES_PER_INTERFACE
        if self.problem:
            log.warning("%s", self.problem)
        elif self.store.series:
            log.info("history: %d series loaded from %s", len(self.store.series), self.path)
        self.saved_at: Optional[int] = None
        self._next_save = time.monotonic() + self.save_every_s

    def record(self, rates: dict, t: int) -> None:
        """rates: interface -> {rx_mbps, tx_mbps, rx_pps, tx_pps, errors_ps, drops_ps}."""
        for name, r in rates.items():
            packets = r["rx_pps"] + r["tx_pps"]
            error_rate = 100.0 * (r["errors_ps"] + r["drops_ps"]) / packets if packets > 0 else math.nan
            for metric, value in (("rx_mbps", r["rx_mbps"]), ("tx_mbps", r["tx_mbps"]), ("error_rate", error_rate)):
                if not math.isnan(value):
                    self.store.push(f"{name}.{metric}", t, value, math.nan)

    def maybe_save(self) -> None:
        if time.monotonic() >= self._next_save:
            self.save()

    def save(self) -> None:
        self._next_save = time.monotonic() + self.save_every_s
        try:
            size = self.store.save(self.path)
        except OSError as exc:
            log.warning("history not saved to %s: %s", self.path, exc.strerror or exc)
            return
        self.saved_at = int(time.time() * 1000)
        log.info("history saved: %d series, %d bytes, %s", len(self.store.series), size, self.path)

    def summary(self) -> dict:
        return {"series": len(self.store.series), "memory_bytes": self.store.memory_bytes(),
                "samples": sum(s.samples for s in self.store.series.values()), "path": self.path,
                "saved_at": self.saved_at, "problem": self.problem}
