"""Monitoring sessions: the QoS guide's `QoSManager.StartMonitoring(device, config)`.

A session watches one device for `duration` seconds. Its samples are the device's own
measurements, `telemetry/qos` (1 Hz probe latency, jitter and loss per target and the
uplink's throughput, sent in batches): every sample is stored in the raw tier as it
arrives; for the session they are averaged per `sampling_interval` (bucket k covers
[start + k*interval, start + (k+1)*interval)) and each complete bucket is one
evaluation of the alert episode of its (metric, target) against the thresholds. A
bucket is complete when a later sample of its series arrives, so batching delays an
evaluation but never changes it.

One active session per device: a second is refused (the store's unique index refuses
it too). A session stops at its duration (after `sessions.finish_grace_s` for the last
batch to arrive), on request, or when its device has been offline or silent for
`fleet.gone_after_s`; open episodes then close, marked `ongoing_at_end`. Sessions
survive a controller restart: each records per series the start of the bucket it is
filling (`progress`, written in the same transaction as the samples); at start the
controller reloads the active sessions and their open alerts and replays the stored
raw samples from there. Runs in the ingest thread only.
"""
from __future__ import annotations

import uuid
from typing import Callable, Optional

from ..protocol import argspec
from ..protocol.topics import DEVICE_ID
from ..vocab.episodes import Change, ThresholdEpisode
from .alerts import THRESHOLD_KEYS, Alerts, new_episode
from .store import Agg, SessionConflict

_PERF = argspec.ARGS["qos_performance_monitor"].fields
CONFIG = argspec.Obj(fields={
    "device_id": argspec.Str(required=True, max_len=12, pattern=DEVICE_ID.pattern[1:-1],
                             pattern_doc="a device id (12 lower-case hex digits)"),
    "duration": argspec.Int(min=10, max=30 * 86400, required=True, doc="Seconds to monitor."),
    "sampling_interval": argspec.Int(min=1, max=3600, default=10, doc="Seconds per evaluation."),
    "metrics": _PERF["metrics"],
    "thresholds": _PERF["alert_thresholds"],
    "alerting_enabled": argspec.Bool(default=True),
})
PROBE_METRICS = {"latency_ms": "latency", "jitter_ms": "jitter", "loss_pct": "packet_loss"}
THROUGHPUT_SERIES = "uplink.throughput_mbps"


class UnknownDevice(LookupError):
    pass


class NotActive(LookupError):
    pass


def series_metric(name: str) -> Optional[tuple[str, str]]:
    """telemetry/qos series name -> (metric, target), None for series no session watches."""
    if name == THROUGHPUT_SERIES:
        return "throughput", "uplink"
    if name.startswith("probe."):
        target, _, kind = name[len("probe."):].rpartition(".")
        if target and kind in PROBE_METRICS:
            return PROBE_METRICS[kind], target
    return None


class Sessions:
    def __init__(self, store, alerts: Alerts, fleet, notify: Callable[[str, dict], None], gone_after_s: float,
                 finish_grace_s: float):
        self.store = store
        self.alerts = alerts
        self.fleet = fleet
        self.notify = notify
        self.gone_after_ms = int(gone_after_s * 1000)
        self.grace_ms = int(finish_grace_s * 1000)
        self.active: dict[str, dict] = {}  # device_id -> session
        self._buckets: dict[str, dict[str, Agg]] = {}      # session id -> series -> bucket being filled
        self._episodes: dict[str, dict[tuple, ThresholdEpisode]] = {}
        self._dirty: set[str] = set()
        self.late_samples = 0

    # ---- requests -----------------------------------------------------------------------------

    def start(self, body, now_ms: int) -> dict:
        config = CONFIG.check(body, "body")
        device_id = config.pop("device_id")
        if device_id not in self.fleet.devices:
            raise UnknownDevice(f"device {device_id} is not known to this controller")
        running = self.active.get(device_id)
        if running is not None:
            raise SessionConflict(f"device {device_id} is already being monitored (session {running['id']}, "
                                  f"until {running['ends_ms']})")
        config.setdefault("thresholds", {})
        session = {"id": f"ses-{uuid.uuid4().hex[:16]}", "device_id": device_id, "status": "active",
                   "config": config, "started_ms": now_ms, "ends_ms": now_ms + config["duration"] * 1000,
                   "stopped_ms": None, "stop_reason": None, "progress": {}, "evaluations": 0}
        self.store.save_session(session)
        self._track(session)
        self.notify("session", {k: session[k] for k in ("id", "device_id", "status", "started_ms", "ends_ms")})
        return session

    def stop(self, session_id: str, now_ms: int, reason: str = "requested") -> dict:
        session = next((s for s in self.active.values() if s["id"] == session_id), None)
        if session is None:
            raise NotActive(session_id)
        self._finish(session, "stopped", reason, now_ms)
        return session

    # ---- samples ------------------------------------------------------------------------------

    def on_samples(self, device_id: str, rows: list[tuple[str, int, float]]) -> None:
        session = self.active.get(device_id)
        if session is None:
            return
        for name, ts, value in rows:
            self._add(session, name, ts, value)

    def _add(self, session: dict, name: str, ts: int, value: float) -> None:
        key = series_metric(name)
        config = session["config"]
        if key is None or key[0] not in config["metrics"] or not session["started_ms"] <= ts < session["ends_ms"]:
            return
        interval = config["sampling_interval"] * 1000
        bucket = session["started_ms"] + (ts - session["started_ms"]) // interval * interval
        buckets = self._buckets[session["id"]]
        current = session["progress"].get(name)
        if current is not None and bucket < current:
            self.late_samples += 1  # stored, but its bucket was already evaluated
            return
        if current is not None and bucket > current:
            self._evaluate(session, name, current)
            current = None
        if current is None:
            session["progress"][name] = bucket
            buckets[name] = Agg()
        buckets[name].merge(1, value, value, value)
        self._dirty.add(session["device_id"])

    def _evaluate(self, session: dict, name: str, bucket_ms: int) -> None:
        agg = self._buckets[session["id"]].pop(name, None)
        if agg is None or not agg.count:
            return
        session["evaluations"] += 1
        metric, target = series_metric(name)
        threshold = session["config"].get("thresholds", {}).get(THRESHOLD_KEYS[metric])
        if not session["config"]["alerting_enabled"] or threshold is None:
            return
        episodes = self._episodes[session["id"]]
        episode = episodes.get((metric, target))
        if episode is None:
            episode = episodes[(metric, target)] = new_episode(metric, threshold)
        value = agg.mean
        change = episode.observe(value, bucket_ms)
        if change is Change.OPENED:
            self.alerts.session_episode(session, metric, target, episode, change, value, bucket_ms)
        elif change is Change.CLOSED:
            self.alerts.session_episode(session, metric, target, episode, change, value, episode.closed[-1].end_ms)

    # ---- lifecycle ----------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        for session in list(self.active.values()):
            absent = self.fleet.absent_since(session["device_id"])
            if now_ms >= session["ends_ms"] + self.grace_ms:
                self._finish(session, "completed", "duration", session["ends_ms"])
            elif absent is not None and now_ms - absent >= self.gone_after_ms:
                self._finish(session, "stopped", "device_gone", now_ms)

    def _finish(self, session: dict, status: str, reason: str, end_ms: int) -> None:
        for name, bucket in sorted(session["progress"].items(), key=lambda item: item[1]):
            self._evaluate(session, name, bucket)
        for (metric, target), episode in self._episodes[session["id"]].items():
            if episode.is_open:
                episode.finish(end_ms)
                self.alerts.session_episode(session, metric, target, episode, Change.CLOSED, episode.peak, end_ms,
                                            ongoing=True)
        session.update(status=status, stop_reason=reason, stopped_ms=end_ms)
        self.store.save_session(session)
        del self.active[session["device_id"]]
        self._buckets.pop(session["id"])
        self._episodes.pop(session["id"])
        self._dirty.discard(session["device_id"])
        self.notify("session", {k: session[k] for k in ("id", "device_id", "status", "stop_reason", "stopped_ms")})

    def flush(self) -> None:
        for device_id in self._dirty:
            self.store.save_session(self.active[device_id])
        self._dirty.clear()

    def _track(self, session: dict) -> None:
        self.active[session["device_id"]] = session
        self._buckets[session["id"]] = {}
        self._episodes[session["id"]] = {}

    def forget(self, device_ids) -> None:
        """Another instance owns these devices now (their sessions are stored as of the last commit)."""
        for device_id in device_ids:
            session = self.active.pop(device_id, None)
            if session is not None:
                self._buckets.pop(session["id"])
                self._episodes.pop(session["id"])
                self._dirty.discard(device_id)

    def resume(self, now_ms: int, device_ids: Optional[set] = None) -> int:
        """Reload active sessions (of these devices: None, all), their open episodes, and replay
        their stored samples; how many were resumed."""
        resumed = 0
        for session in self.store.sessions(status="active"):
            if device_ids is not None and session["device_id"] not in device_ids:
                continue
            resumed += 1
            session["progress"] = session.get("progress") or {}
            self._track(session)
            for alert in self.store.alerts(session_id=session["id"], state="open"):
                episode = new_episode(alert["metric"], alert["threshold"], is_open=True, start_ms=alert["opened_ms"],
                                      peak=alert["value"])
                self._episodes[session["id"]][(alert["metric"], alert["target"])] = episode
            end = min(now_ms, session["ends_ms"])
            for name in self.store.series_names(session["device_id"]):
                if series_metric(name) is None:
                    continue
                start = session["progress"].get(name, session["started_ms"])
                session["progress"].pop(name, None)
                for ts, value in self.store.raw(session["device_id"], name, start, end):
                    self._add(session, name, ts, value)
        return resumed
