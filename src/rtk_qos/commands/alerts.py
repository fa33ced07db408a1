"""Threshold alerts on live figures: one `ThresholdEpisode` per (metric, subject), published as events.

The episode rules (minimum duration, hysteresis, severity grades) are the shared vocabulary's
(`vocab/episodes.py`), so the controller and the shaping command judge an alert the same way.
An alert on the wire: {timestamp, metric, host, value (the peak), threshold, threshold_type,
unit, severity, duration_s, ended_at, ongoing}.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..vocab.episodes import Change, Direction, EpisodeRecord, ThresholdEpisode

UNITS = {"latency": "ms", "jitter": "ms", "packet_loss": "percent", "throughput": "Mbps"}
THRESHOLD_KEYS = {"latency": "latency_ms", "jitter": "jitter_ms", "packet_loss": "packet_loss_percent",
                  "throughput": "throughput_mbps"}
DIRECTIONS = {"latency": Direction.ABOVE, "jitter": Direction.ABOVE, "packet_loss": Direction.ABOVE,
              "throughput": Direction.BELOW}

EventSink = Callable[[str, dict], None]


def alert(metric: str, host: Optional[str], episode: ThresholdEpisode, record: EpisodeRecord) -> dict:
    """One episode of one metric as the protocol's alert object."""
    return {"timestamp": record.start_ms, "metric": metric, "host": host, "value": round(record.peak, 3),
            "threshold": episode.threshold, "threshold_type": episode.direction.value, "unit": UNITS[metric],
            "severity": record.severity.wire, "duration_s": record.duration_s,
            "ended_at": None if record.ongoing else record.end_ms, "ongoing": record.ongoing}


class Alerts:
    """Every (metric, subject) episode of one run, and the events their openings and closings publish."""

    def __init__(self, event: EventSink, command_id: str, thresholds: dict, subjects: dict[str, list]):
        """subjects: metric -> the hosts (or the interface) it is judged for; a metric without a
        threshold in `thresholds` (keyed as the protocol's alert_thresholds) is not judged."""
        self._event = event
        self._command_id = command_id
        self.episodes: dict[tuple, ThresholdEpisode] = {}
        for metric in sorted(subjects):
            threshold = thresholds.get(THRESHOLD_KEYS[metric])
            if threshold is None:
                continue
            for subject in subjects[metric]:
                self.episodes[(metric, subject)] = ThresholdEpisode(float(threshold), DIRECTIONS[metric])

    def evaluate(self, metric: str, subject: Optional[str], value: Optional[float], now_ms: int) -> None:
        episode = self.episodes.get((metric, subject))
        if episode is None:
            return
        change = episode.observe(value, now_ms)
        if change:
            self._publish(metric, subject, episode, change, value, now_ms)

    def _publish(self, metric: str, subject, episode: ThresholdEpisode, change: Change, value: float,
                 now_ms: int) -> None:
        self._event("threshold", {
            "event_type": "threshold_exceeded", "sensor_type": "network", "current_value": round(value, 3),
            "threshold_value": episode.threshold, "threshold_type": episode.direction.value,
            "unit": UNITS[metric], "duration_s": max(0, int(round((now_ms - episode.start_ms) / 1000)))})
        record = episode.closed[-1] if change is Change.CLOSED else episode.current(now_ms)
        body = alert(metric, subject, episode, record)
        self._event("qos_alert", {"event_type": "qos_alert", "severity": body["severity"],
                                  "state": "open" if change is Change.OPENED else "closed",
                                  "command_id": self._command_id, "current_value": round(value, 3), **body})

    def finish(self, end_ms: int) -> list[dict]:
        """Every alert of the run, oldest first; one still open is reported ongoing at `end_ms`."""
        out = [alert(metric, subject, episode, record)
               for (metric, subject), episode in self.episodes.items() for record in episode.finish(end_ms)]
        return sorted(out, key=lambda a: a["timestamp"])

    @property
    def open_count(self) -> int:
        return sum(1 for e in self.episodes.values() if e.is_open)
