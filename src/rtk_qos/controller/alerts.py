"""Alerts: the controller's own threshold episodes (from monitoring sessions) and the agents' own
(`evt/qos_alert` from qos_performance_monitor), in one table and one severity scale (vocab/severity.py).

An episode is one alert however many samples cross the threshold: it opens after the
episode rules' run of evaluations past the threshold and closes after a run back
inside the hysteresis band (`vocab/episodes.py`, the rules the agent uses too). Each
alert has a `key`, so an agent's event delivered twice updates the same row.
Runs in the ingest thread only.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..vocab.episodes import Change, Direction, ThresholdEpisode
from ..vocab.severity import Severity

UNITS = {"latency": "ms", "jitter": "ms", "packet_loss": "percent", "throughput": "Mbps"}
THRESHOLD_KEYS = {"latency": "latency_ms", "jitter": "jitter_ms", "packet_loss": "packet_loss_percent",
                  "throughput": "throughput_mbps"}


def new_episode(metric: str, threshold: float, **state) -> ThresholdEpisode:
    """Latency, jitter and loss alert above their threshold; throughput below (the guide's semantics).
    `state` restores an open episode after a restart (is_open, start_ms, peak)."""
    return ThresholdEpisode(float(threshold), Direction.BELOW if metric == "throughput" else Direction.ABOVE,
                            **state)


class Alerts:
    def __init__(self, store, notify: Callable[[str, dict], None]):
        self.store = store
        self.notify = notify
        self.counts = {"controller_opened": 0, "controller_closed": 0, "agent": 0, "agent_bad_severity": 0}

    def session_episode(self, session: dict, metric: str, target: str, episode: ThresholdEpisode, change: Change,
                        value: float, at_ms: int, ongoing: bool = False) -> dict:
        """Save the alert of a session's episode that just opened or closed (at `at_ms`)."""
        above = episode.direction is Direction.ABOVE
        alert = {
            "key": f"session:{session['id']}:{metric}:{target}:{episode.start_ms}",
            "source": "controller", "device_id": session["device_id"], "session_id": session["id"],
            "metric": metric, "target": target, "severity": episode.severity().wire,
            "state": "open" if change is Change.OPENED else "closed", "opened_ms": episode.start_ms,
            "closed_ms": at_ms if change is Change.CLOSED else None, "value": round(episode.peak, 3),
            "threshold": episode.threshold, "threshold_type": episode.direction.value, "unit": UNITS[metric],
            "description": (f"{metric} to {target} {'above' if above else 'below'} {episode.threshold:g} "
                            f"{UNITS[metric]} (worst {episode.peak:.3g})"),
            "detail": {"last_value": round(value, 3), "ongoing_at_end": ongoing}, "updated_ms": at_ms}
        alert["id"] = self.store.save_alert(alert)
        self.counts["controller_opened" if change is Change.OPENED else "controller_closed"] += 1
        self.notify("alert", alert)
        return alert

    def agent_alert(self, device_id: str, payload: dict, now_ms: int) -> Optional[dict]:
        """An agent's `evt/qos_alert` (state open or closed) merged into the alerts table."""
        metric, opened = payload.get("metric"), payload.get("timestamp")
        if not isinstance(metric, str) or not isinstance(opened, int):
            return None
        closed = payload.get("state") == "closed"
        try:
            severity = Severity.parse(payload.get("severity"))
        except ValueError:
            self.counts["agent_bad_severity"] += 1
            severity = Severity.WARNING  # an alert all the same: the agent saw a threshold crossed
        alert = {
            "key": f"agent:{device_id}:{payload.get('command_id')}:{metric}:{payload.get('host')}:{opened}",
            "source": "agent", "device_id": device_id, "session_id": None, "metric": metric,
            "target": payload.get("host"), "severity": severity.wire,
            "state": "closed" if closed else "open", "opened_ms": opened,
            "closed_ms": payload.get("ended_at") if closed else None, "value": payload.get("value"),
            "threshold": payload.get("threshold"), "threshold_type": payload.get("threshold_type"),
            "unit": payload.get("unit"), "description": f"agent: {metric} to {payload.get('host')}",
            "detail": {"command_id": payload.get("command_id"), "current_value": payload.get("current_value"),
                       "duration_s": payload.get("duration_s")}, "updated_ms": now_ms}
        alert["id"] = self.store.save_alert(alert)
        self.counts["agent"] += 1
        self.notify("alert", alert)
        return alert
