"""The process's one link sampler: every link's kernel counters once a second, shared by all.

Its owner ticks it (the agent's monitor loop, or the thread `run()` starts for a one-shot CLI
run); after each tick every subscriber is called with the `Reading`: the counters as read and
the last second's per-link rates. A command that wants the uplink's throughput each second takes
the rates; one that keeps series of its own (the traffic analysis) ingests the counters into its
own native Sampler: the kernel is read once, however many commands run.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from .. import _core

log = logging.getLogger(__name__)
LINKS = 64           # links tracked at once by default; past it (churn) a fresh sampler starts
WINDOW = 60          # samples in the rolling statistics
Rates = tuple        # the native sampler's per-second rates: rx/tx bytes, packets, errors, drops


@dataclass(frozen=True)
class Reading:
    when: float                  # monotonic time of the read
    counters: list               # CounterReader.read(): one tuple per link, as Sampler.ingest() takes
    rates: dict[str, Rates]      # name -> the last second's rates (empty on the first tick)


Listener = Callable[[Reading], None]


class LinkSampler:
    def __init__(self, history: int = 60, capacity: int = LINKS):
        self._history = max(2, history)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._sampler: Optional[_core.Sampler] = None
        self._reader: Optional[_core.CounterReader] = None
        self._read_lock = threading.Lock()  # the reader's buffers serve one read at a time

    @property
    def source(self) -> Optional[str]:
        """Where the counters come from: netlink, or procfs."""
        return self._reader.source if self._reader else None

    def tick(self) -> Reading:
        """Read every link's counters once and hand them out. OSError when they cannot be read."""
        if self._sampler is None or self._sampler.overflow:  # links churned past capacity: start afresh
            self._sampler = _core.Sampler(capacity=self._capacity, history=self._history, window=WINDOW, open_reader=False)
        counters, when = self._read()
        self._sampler.ingest(counters, when)
        reading = Reading(when, counters, self.rates())
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(reading)
            except Exception:  # one subscriber's bug must not stop the sampling for the others
                log.exception("link sampler subscriber failed")
        return reading

    def _read(self) -> tuple[list, float]:
        with self._read_lock:
            if self._reader is None:
                self._reader = _core.CounterReader()
            return self._reader.read(), _core.monotonic()

    def read_now(self) -> Reading:
        """The counters read now, for a run that starts between ticks (not handed to subscribers)."""
        counters, when = self._read()
        return Reading(when, counters, {})

    def rates(self) -> dict[str, Rates]:
        """The latest per-second rates of every present link (empty before the second tick)."""
        sampler = self._sampler
        if sampler is None or sampler.ticks < 2:
            return {}
        return {name: sampler.last_rates(slot) for slot, name in sampler.active_slots()}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener(reading) after every tick (on the ticking thread: be quick); returns the
        unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def run(self, stop: threading.Event, period: float = 1.0) -> threading.Thread:
        """Tick every `period` seconds in a thread of its own until `stop` (one-shot runs)."""
        def loop() -> None:
            due = _core.monotonic()
            while not stop.is_set():
                try:
                    self.tick()
                except OSError as exc:
                    log.warning("link sampler: %s", exc.strerror or exc)
                due += period
                stop.wait(max(0.0, due - _core.monotonic()))
        thread = threading.Thread(target=loop, name="rtk-qos-sampler", daemon=True)
        thread.start()
        return thread
