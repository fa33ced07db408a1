"""Threshold episodes: when a metric past a threshold becomes an alert, and when it ends.

A `ThresholdEpisode` watches one metric against one threshold, one evaluation at a time. An episode
opens after `open_after` consecutive evaluations past the threshold (a short spike is not an
episode) and closes after `close_after` consecutive evaluations back inside a hysteresis band (10 %
inside the threshold by default), so a metric hovering at the threshold gives one episode, not one
per sample. While open it keeps the worst value seen (the peak); its severity grades how far the
peak went past the threshold.

Pure: no clock, no I/O. The caller passes the time of each evaluation (milliseconds on any clock it
likes, usually the wall clock of the measurement) and decides what an open or a close means (an
event, a row in a result).

    episode = ThresholdEpisode(100.0, Direction.ABOVE)
    for now_ms, value in samples:
        change = episode.observe(value, now_ms)      # Change.OPENED, Change.CLOSED or None
    records = episode.finish(end_ms)                  # every episode, the open one marked ongoing
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from .severity import Severity, grade


class Direction(str, enum.Enum):
    """Which side of the threshold is bad. The values are the protocol's `threshold_type`."""
    ABOVE = "max"   # alert when the value rises above the threshold (latency, loss)
    BELOW = "min"   # alert when it falls below (throughput)


class Change(str, enum.Enum):
    OPENED = "open"
    CLOSED = "close"


@dataclass(frozen=True)
class EpisodeRules:
    """How eager episodes are. The defaults are the ones the agent's alerts use."""
    open_after: int = 3        # evaluations past the threshold before an episode opens
    close_after: int = 3       # evaluations back inside the hysteresis band before it closes
    hysteresis: float = 0.10   # recovered = this fraction of the threshold inside it
    error_at: float = 1.5      # peak / threshold (inverted for BELOW) from which severity is error
    critical_at: float = 3.0   # ... and critical

    def __post_init__(self):
        if self.open_after < 1 or self.close_after < 1:
            raise ValueError(f"open_after and close_after must be >= 1, got {self.open_after}, {self.close_after}")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {self.hysteresis}")
        grade(1.0, self.error_at, self.critical_at)  # validates the cut points


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode as it was (or is, when `ongoing`)."""
    start_ms: int
    end_ms: int            # when it recovered (the first evaluation of the closing run), or the
                           # end of observation for an ongoing one
    peak: float
    severity: Severity
    ongoing: bool

    @property
    def duration_s(self) -> int:
        return max(0, int(round((self.end_ms - self.start_ms) / 1000)))


@dataclass
class ThresholdEpisode:
    threshold: float
    direction: Direction
    rules: EpisodeRules = EpisodeRules()
    # Observation state; read them, don't write them.
    is_open: bool = False
    start_ms: Optional[int] = None        # first evaluation past the threshold of the current run
    peak: Optional[float] = None
    closed: list[EpisodeRecord] = field(default_factory=list)
    _over: int = 0
    _under: int = 0
    _recovering_since_ms: Optional[int] = None

    def __post_init__(self):
        self.direction = Direction(self.direction)

    def exceeds(self, value: float) -> bool:
        return value > self.threshold if self.direction is Direction.ABOVE else value < self.threshold

    def _recovered(self, value: float) -> bool:
        if self.direction is Direction.ABOVE:
            return value <= self.threshold * (1 - self.rules.hysteresis)
        return value >= self.threshold * (1 + self.rules.hysteresis)

    def _worse(self, value: float) -> bool:
        return self.peak is None or (value > self.peak if self.direction is Direction.ABOVE else value < self.peak)

    def severity(self) -> Severity:
        """How far the peak (the threshold itself before any value) went past the threshold."""
        peak = self.threshold if self.peak is None else self.peak
        if self.direction is Direction.ABOVE:
            ratio = peak / self.threshold if self.threshold > 0 else float("inf")
        else:
            ratio = self.threshold / peak if peak > 0 else float("inf")
        return grade(ratio, self.rules.error_at, self.rules.critical_at)

    def observe(self, value: Optional[float], now_ms: int) -> Optional[Change]:
        """Feed one evaluation (None: no figure this time, nothing changes); says when the episode
        opens or closes."""
        if value is None:
            return None
        if not self.is_open:
            if not self.exceeds(value):
                self._over = 0
                return None
            if self._over == 0:
                self.start_ms, self.peak = now_ms, None
            self._over += 1
            if self._worse(value):
                self.peak = value
            if self._over >= self.rules.open_after:
                self.is_open, self._under = True, 0
                return Change.OPENED
            return None
        if self._worse(value):
            self.peak = value
        if not self._recovered(value):
            self._under = 0
            return None
        if self._under == 0:
            self._recovering_since_ms = now_ms
        self._under += 1
        if self._under >= self.rules.close_after:
            self._close(self._recovering_since_ms, ongoing=False)
            return Change.CLOSED
        return None

    def current(self, now_ms: int) -> EpisodeRecord:
        """The open episode as it stands at `now_ms`."""
        if not self.is_open:
            raise ValueError("no episode is open")
        return EpisodeRecord(self.start_ms, now_ms, self.peak, self.severity(), ongoing=True)

    def finish(self, end_ms: int) -> list[EpisodeRecord]:
        """End observation: an open episode is recorded as ongoing at `end_ms`. Every episode, oldest first."""
        if self.is_open:
            self._close(end_ms, ongoing=True)
        return list(self.closed)

    def _close(self, end_ms: int, ongoing: bool) -> None:
        self.closed.append(EpisodeRecord(self.start_ms, end_ms, self.peak, self.severity(), ongoing))
        self.is_open, self._over, self._under = False, 0, 0
