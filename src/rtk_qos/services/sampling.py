"""The process's one link sampler: every link's kernel counters once a second, shared by all.

Its owner ticks it (the agent's monitor loop, or the thread `run()` starts for a one-shot CLI
run); after each tick every subscriber is called with the tick's per-link rates, so a command
that wants the uplink's throughput each second listens instead of reading the counters again.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from .. import _core

log = logging.getLogger(__name__)
LINKS = 64           # links tracked at once; past it (churn) a fresh sampler starts
WINDOW = 60          # samples in the rolling statistics
Rates = tuple        # the native sampler's per-second rates: rx/tx bytes, packets, errors, drops
Listener = Callable[[float, dict[str, Rates]], None]


class LinkSampler:
    def __init__(self, history: int = 60):
        self._history = max(2, history)
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._sampler: Optional[_core.Sampler] = None

    def _new(self) -> "_core.Sampler":
        return _core.Sampler(capacity=LINKS, history=self._history, window=WINDOW)

    @property
    def source(self) -> Optional[str]:
        return self._sampler.source if self._sampler else None

    def tick(self) -> dict[str, Rates]:
        """Read every link's counters; the rates of the last second (none on the first tick).
        OSError when the counters cannot be read."""
        if self._sampler is None or self._sampler.overflow:  # links churned past capacity: start afresh
            self._sampler = self._new()
        self._sampler.tick()
        rates = self.rates()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(self._sampler.last_time, rates)
            except Exception:  # one subscriber's bug must not stop the sampling for the others
                log.exception("link sampler subscriber failed")
        return rates

    def rates(self) -> dict[str, Rates]:
        """The latest per-second rates of every present link (empty before the second tick)."""
        sampler = self._sampler
        if sampler is None or sampler.ticks < 2:
            return {}
        return {name: sampler.last_rates(slot) for slot, name in sampler.active_slots()}

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener(monotonic time, rates by link) after every tick; returns the unsubscribe."""
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
