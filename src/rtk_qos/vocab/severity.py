"""One severity scale for the whole product.

The names are the ones the published event schema allows (`event.json`: info, warning, error,
critical), so a severity goes on the wire as its name everywhere: events, alerts, anomaly results,
state. The rank orders them (a worse severity has a higher rank).

How a finding is graded is the caller's business (how far past its threshold it went);
`grade` turns that distance into a severity with the caller's two cut points.
"""
from __future__ import annotations

import enum


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    CRITICAL = 3

    @property
    def wire(self) -> str:
        """The name the protocol uses ("warning", ...)."""
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> "Severity":
        """The severity a wire name stands for; ValueError naming the accepted ones otherwise."""
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"severity {name!r} is not one of {', '.join(WIRE_NAMES)}") from None


WIRE_NAMES = tuple(s.wire for s in Severity)


def grade(ratio: float, error_at: float, critical_at: float) -> Severity:
    """A finding past its threshold by `ratio` (1.0 = just at it): warning below `error_at`,
    error below `critical_at`, critical from there on."""
    if not 1.0 <= error_at <= critical_at:
        raise ValueError(f"cut points must satisfy 1 <= error_at <= critical_at, got {error_at}, {critical_at}")
    if ratio < error_at:
        return Severity.WARNING
    return Severity.ERROR if ratio < critical_at else Severity.CRITICAL


def worst(severities) -> Severity:
    """The highest of the given severities (INFO for none)."""
    return max(severities, default=Severity.INFO)


def distribution(severities) -> dict[str, int]:
    """How many of each, keyed by wire name, worst first, every name present."""
    counts = {s.wire: 0 for s in sorted(Severity, reverse=True)}
    for s in severities:
        counts[Severity(s).wire] += 1
    return counts
