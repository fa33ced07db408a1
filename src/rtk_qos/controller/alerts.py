"""Alerts: the controller's own threshold episodes (from monitoring sessions) and the agents' own
(`evt/qos_alert` from qos_performance_monitor), in one table and one severity scale.

An episode is one alert however many samples cross the threshold: it opens after the
episode rules' run of evaluations past the threshold and closes after a run back
inside the hysteresis band (`vocab/episodes.py`, the rules the agent uses too). Each
alert has a `key`, so an agent's event delivered twice updates the same row.
Runs in the ingest thread only.
"""
from __future__ import annotations

from typing import Callable, Optional

from ..vocab.episodes import Episode

UNITS = {"latency": "ms", "jitter": "ms", "packet_loss": "percent", "throughput": "Mbps"}
THRESHOLD_KEYS = {"latency": "latency_ms", "jitter": "jitter_ms", "packet_loss": "packet_loss_percent",
                  "throughput": "throughput_mbps"}


def new_episode(metric: str, target: str, threshold: float) -> Episode:
    """Latency, jitter and loss alert above their threshold; throughput below (the guide's semantics)."""
    return Episode(metric, target, float(threshold), "min" if metric == "throughput" else "max", UNITS[metric])


class Alerts:
    def __init__(self, store, notify: Callable[[str, dict], None]):
        self.store = store
        self.notify = notify
        self.counts = {"controller_opened": 0, "controller_closed": 0, "agent": 0}

    def session_episode(self, session: dict, episode: Episode, change: str, value: float, now_ms: int,
                        ongoing: bool = False) -> dict:
        """Save the alert of a session's episode that just opened ("open") or closed ("close")."""
        alert = {
            "key": f"session:{session['id']}:{episode.metric}:{episode.host}:{episode.started_ms}",
            "source": "controller", "device_id": session["device_id"], "session_id": session["id"],
            "metric": episode.metric, "target": episode.host, "severity": episode.severity(),
            "state": "open" if change == "open" else "closed", "opened_ms": episode.started_ms,
            "closed_ms": now_ms if change == "close" else None, "value": round(episode.peak, 3),
            "threshold": episode.threshold, "threshold_type": episode.threshold_type, "unit": episode.unit,
            "description": (f"{episode.metric} to {episode.host} {'above' if episode.threshold_type == 'max' else 'below'}"
                            f" {episode.threshold:g} {episode.unit} (worst {episode.peak:.3g})"),
            "detail": {"last_value": round(value, 3), "ongoing_at_end": ongoing}, "updated_ms": now_ms}
        alert["id"] = self.store.save_alert(alert)
        self.counts["controller_opened" if change == "open" else "controller_closed"] += 1
        self.notify("alert", alert)
        return alert

    def agent_alert(self, device_id: str, payload: dict, now_ms: int) -> Optional[dict]:
        """An agent's `evt/qos_alert` (state open or closed) merged into the alerts table."""
        metric, opened = payload.get("metric"), payload.get("timestamp")
        if not isinstance(metric, str) or not isinstance(opened, int):
            return None
        closed = payload.get("state") == "closed"
        alert = {
            "key": f"agent:{device_id}:{payload.get('command_id')}:{metric}:{payload.get('host')}:{opened}",
            "source": "agent", "device_id": device_id, "session_id": None, "metric": metric,
            "target": payload.get("host"), "severity": payload.get("severity") or "warning",
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
