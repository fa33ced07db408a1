"""One severity scale for the whole product.

The names are the ones the published event schema allows (`event.json`: info, warning, error,
critical): events and alerts carry them. The QoS guide's result shapes (anomaly detection's
`severity_distribution` and anomalies) name the same four grades low, medium, high, critical:
results in those shapes use `guide`. The rank orders them (a worse severity has a higher rank).

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

    @property
    def guide(self) -> str:
        """The name the QoS guide's result shapes use ("medium", ...)."""
        return GUIDE_NAMES[self]

    @classmethod
    def from_guide(cls, name: str) -> "Severity":
        for severity, guide in GUIDE_NAMES.items():
            if guide == name:
                return severity
        raise ValueError(f"severity {name!r} is not one of {', '.join(GUIDE_NAMES.values())}")

    @classmethod
    def parse(cls, name: str) -> "Severity":
        """The severity a wire name stands for; ValueError naming the accepted ones otherwise."""
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"severity {name!r} is not one of {', '.join(WIRE_NAMES)}") from None


WIRE_NAMES = tuple(s.wire for s in Severity)
GUIDE_NAMES = {Severity.INFO: "low", Severity.WARNING: "medium", Severity.ERROR: "high", Severity.CRITICAL: "critical"}


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


def distribution(severities, guide: bool = False) -> dict[str, int]:
    """How many of each, keyed by wire name (guide: by the guide's name), worst first, all present."""
    name = (lambda s: s.guide) if guide else (lambda s: s.wire)
    counts = {name(s): 0 for s in sorted(Severity, reverse=True)}
    for s in severities:
        counts[name(Severity(s))] += 1
    return counts
