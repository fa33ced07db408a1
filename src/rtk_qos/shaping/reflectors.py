"""The reflectors adaptive shaping measures the link's round trip against: up to `active` hosts
probed at once out of the candidates (the default gateway beyond the modem, configured hosts),
each with a slot in the native controller. One that stops answering while the others answer,
loses much more than the others, or whose delay stands far above the others' is rotated out
for the next candidate (reflectors that rate-limit ICMP are the main way such tools fail); it
may come back after `BENCH_S`. When every reflector is silent at once the link is the problem,
not the reflectors: nobody is rotated (the controller's stall rule sets the minimum rate).

Probing reuses the agent's prober (ICMP echo, kernel receive timestamps, losses reported as
they are known); a rotation starts a new prober on the new set at once and lets the old one
wait out its last probes.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from typing import Callable, Optional

from ..services.probing import _ContinuousProber

SEGMENT_S = 300.0       # one prober run; the set is the same until a rotation
SILENT_S = 2.0          # no reply for this long (at least 6 probe intervals) while others answer: rotated out
ANSWERING_INTERVALS = 3  # a reflector with a reply within this many probe intervals is answering
LOSS_WINDOW = 20        # outcomes kept per reflector
LOSS_EXCESS = 0.5       # losing this fraction more than the best reflector: rotated out
ERRATIC_MS = 30.0       # delta EWMA this far above the others' median: its own queue, not the link's
BENCH_S = 60.0          # a rotated-out reflector is not taken back before this
RETRY_S = 5.0           # after probing failed
log = logging.getLogger(__name__)


class Reflector:
    def __init__(self, address: str, slot: int, now: float):
        self.address = address
        self.slot = slot
        self.since = now               # it is counted silent only SILENT_S after it joined
        self.last_reply = -1e9
        self.outcomes: deque = deque(maxlen=LOSS_WINDOW)  # 1 lost, 0 answered

    def loss(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if len(self.outcomes) >= LOSS_WINDOW // 2 else 0.0


class ReflectorPool:
    """Probes the active reflectors; calls on_sample(slot, rtt_ms, now) for each reply (from the
    probe thread) and reset(slot) when a slot gets a new reflector."""

    def __init__(self, candidates: list[str], active: int, interval: float, timeout: float,
                 on_sample: Callable[[int, float, float], None], reset: Callable[[int], None],
                 slots: int, clock: Callable[[], float] = time.monotonic):
        self.candidates = list(dict.fromkeys(candidates))
        self.interval, self.timeout = interval, timeout
        self._on_sample, self._reset, self._clock = on_sample, reset, clock
        self._lock = threading.Lock()
        self._free = list(range(min(slots, max(active, 1))))
        now = clock()
        self.active: dict[str, Reflector] = {}
        self.benched: dict[str, float] = {}   # address -> when it may return
        self._shared_silence = -1e9            # the last check at which no reflector answered
        for address in self.candidates[:len(self._free)]:
            self._take(address, now)
        self._stop = threading.Event()
        self._segment_stop: Optional[threading.Event] = None
        self._threads: list[threading.Thread] = []

    def _take(self, address: str, now: float) -> None:
        slot = self._free.pop(0)
        self._reset(slot)
        self.active[address] = Reflector(address, slot, now)

    def addresses(self) -> list[str]:
        with self._lock:
            return list(self.active)

    # ---- probing ----------------------------------------------------------------------------

    def start(self) -> None:
        self._restart()

    def stop(self) -> None:
        self._stop.set()
        if self._segment_stop is not None:
            self._segment_stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 2)

    def _restart(self) -> None:
        if self._segment_stop is not None:
            self._segment_stop.set()
        self._threads = [t for t in self._threads if t.is_alive()]
        addresses = self.addresses()
        if not addresses or self._stop.is_set():
            self._segment_stop = None
            return
        stop = self._segment_stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(addresses, stop), name="rtk-qos-autorate-probe",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, addresses: list[str], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                prober = _ContinuousProber(addresses, self.interval, self.timeout, self._lost)
                prober.run(SEGMENT_S, stop, self._reply)
            except Exception:  # no ICMP socket, a bug: no samples means the minimum rate; try again
                log.exception("adaptive shaping: probing %s failed", ", ".join(addresses))
                stop.wait(RETRY_S)

    def _reply(self, address: str, _seq: int, rtt_ms: float) -> None:
        now = self._clock()
        with self._lock:
            reflector = self.active.get(address)
            if reflector is None:
                return  # rotated out; its last probes still come back
            reflector.last_reply = now
            reflector.outcomes.append(0)
            slot = reflector.slot
        self._on_sample(slot, rtt_ms, now)

    def _lost(self, address: str, _seq: int) -> None:
        with self._lock:
            reflector = self.active.get(address)
            if reflector is not None:
                reflector.outcomes.append(1)

    # ---- rotation ---------------------------------------------------------------------------

    def check(self, delta_ewma: Callable[[int], float]) -> list[dict]:
        """Rotate out the reflectors that misbehave; returns what was done (address, why, replacement)."""
        now = self._clock()
        with self._lock:
            reflectors = list(self.active.values())
            # Silence they all shared (the link) does not count: each is timed from its end.
            silent_for = {r.address: now - max(r.last_reply, r.since, self._shared_silence) for r in reflectors}
            silent_s = max(SILENT_S, 2 * ANSWERING_INTERVALS * self.interval)
            replied = [r for r in reflectors if now - r.last_reply < ANSWERING_INTERVALS * self.interval]
            if not replied:
                self._shared_silence = now
                return []
            best_loss = min(r.loss() for r in replied)
            deltas = {r.address: delta_ewma(r.slot) for r in replied}
            bad = []
            for r in reflectors:
                others = [d for a, d in deltas.items() if a != r.address]
                if silent_for[r.address] >= silent_s:
                    bad.append((r, f"no reply for {silent_for[r.address]:.1f} s while others answer"))
                elif r.loss() - best_loss >= LOSS_EXCESS:
                    bad.append((r, f"lost {r.loss():.0%} of its last probes, the best {best_loss:.0%}"))
                elif r.address in deltas and others and deltas[r.address] - statistics.median(others) > ERRATIC_MS:
                    bad.append((r, f"its delay {deltas[r.address]:.1f} ms above baseline, the others' "
                                   f"median {statistics.median(others):.1f} ms"))
            done = []
            for r, why in bad:
                del self.active[r.address]
                self._free.append(r.slot)
                self.benched[r.address] = now + BENCH_S
                replacement = self._next(now)
                if replacement:
                    self._take(replacement, now)
                done.append({"address": r.address, "why": why, "replacement": replacement})
            while self._free and (returning := self._next(now)):  # free slots take back benched ones
                self._take(returning, now)
                done.append({"address": None, "why": "a free slot", "replacement": returning})
        if done:
            self._restart()
        return done

    def _next(self, now: float) -> Optional[str]:
        for address in self.candidates:
            if address not in self.active and self.benched.get(address, 0) <= now:
                return address
        return None
