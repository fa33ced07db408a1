"""The dashboard's overview (the guide's `generateQoSOverview`), every figure from stored samples.

performance_summary covers the last `WINDOW_S` (15 min) of samples: the per-minute tier
for complete minutes, the raw tier for the rest, so the means are exact.
  avg_latency_ms, avg_packet_loss: the mean of every probe sample of every device and target;
  avg_throughput_mbps: the mean of the uplinks' rx+tx samples;
  network_health_score: the mean over devices of 100 minus penalties on that device's means,
  against the agent's default thresholds (REFERENCE): latency up to 40 points (from half the
  reference to twice it), jitter up to 20 (same scale), loss up to 40 (full at 3x the reference).
A figure with no sample behind it is null, never a placeholder.
"""
from __future__ import annotations

from typing import Optional

from .sessions import THROUGHPUT_SERIES
from .store import MINUTE_MS, Agg

WINDOW_S = 900
RECENT_ALERTS_S = 24 * 3600
REFERENCE = {"latency_ms": 100.0, "jitter_ms": 30.0, "packet_loss_percent": 1.0}
SERIES = {"latency": "probe.*.latency_ms", "jitter": "probe.*.jitter_ms", "loss": "probe.*.loss_pct",
          "throughput": THROUGHPUT_SERIES}


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def health_score(latency: Optional[float], jitter: Optional[float], loss: Optional[float]) -> Optional[int]:
    if latency is None and jitter is None and loss is None:
        return None
    penalty = 0.0
    if latency is not None:
        t = REFERENCE["latency_ms"]
        penalty += 40 * _clamp01((latency - 0.5 * t) / (1.5 * t))
    if jitter is not None:
        t = REFERENCE["jitter_ms"]
        penalty += 20 * _clamp01((jitter - 0.5 * t) / (1.5 * t))
    if loss is not None:
        penalty += 40 * _clamp01(loss / (3 * REFERENCE["packet_loss_percent"]))
    return int(round(100 - penalty))


def _mean(per_device: dict[str, Agg]) -> Optional[float]:
    total = Agg()
    for agg in per_device.values():
        total.merge(agg.count, agg.total, agg.low, agg.high)
    return None if total.mean is None else round(total.mean, 3)


def overview(store, now_ms: int, active_sessions: int) -> dict:
    end = now_ms
    start = end - WINDOW_S * 1000
    start -= start % MINUTE_MS  # whole minutes: the minute tier answers most of the window
    stats = {metric: store.stats(glob, start, end) for metric, glob in SERIES.items()}
    devices = set().union(*(s.keys() for s in stats.values()))
    scores = {}
    for device_id in sorted(devices):
        means = {m: (stats[m][device_id].mean if device_id in stats[m] else None) for m in ("latency", "jitter", "loss")}
        score = health_score(means["latency"], means["jitter"], means["loss"])
        if score is not None:
            scores[device_id] = score
    alerts = store.alerts(since_ms=now_ms - RECENT_ALERTS_S * 1000, limit=100)
    return {
        "active_monitoring_sessions": active_sessions,
        "total_devices_monitored": len(devices),
        "recent_alerts": alerts,
        "recent_alerts_open": sum(1 for a in alerts if a["state"] == "open"),
        "performance_summary": {
            "avg_latency_ms": _mean(stats["latency"]),
            "avg_throughput_mbps": _mean(stats["throughput"]),
            "avg_packet_loss": _mean(stats["loss"]),
            "avg_jitter_ms": _mean(stats["jitter"]),
            "network_health_score": round(sum(scores.values()) / len(scores)) if scores else None,
            "device_health_scores": scores,
            "samples": {m: sum(a.count for a in s.values()) for m, s in stats.items()},
            "window": {"start_ms": start, "end_ms": end},
        },
    }
