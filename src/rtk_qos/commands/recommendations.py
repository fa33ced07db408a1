"""Advice drawn from measured evidence: which metric, which host, how bad, the likely cause.

Pure functions of an `Evidence` (what a run measured); no I/O, so the performance monitor, the
controller's sessions and the shaping command can word the same finding the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Optional

BUSY_MBPS = 1.0            # below this peak the uplink was not busy enough to cause queueing
NEAR_SPEED = 0.8           # a peak at this fraction of the link speed fills the bottleneck queue
LOAD_FACTOR = 3.0          # without a known speed: busy = this many times the load outside the episode
LOAD_FLOOR_MBPS = 0.01     # the outside load counted as at least this (an idle link has ~0)


@dataclass
class Evidence:
    """What one monitoring run measured, as the result reports it."""
    perf: dict                          # the result's performance_metrics
    hosts: list[dict]                   # the result's per-host figures
    alerts: list[dict]                  # alert objects (alerts.alert)
    limits: dict                        # thresholds in force (asked, else defaults), keyed as alert_thresholds
    throughput_threshold: Optional[float] = None   # only when asked for
    uplink: Optional[str] = None
    uplink_speed_mbps: Optional[float] = None
    idle: bool = False                  # the uplink carried no real demand
    uplink_mbps: list[float] = field(default_factory=list)  # per-second series, sample k covers second k..k+1
    series_start_ms: int = 0            # wall clock of the series' start


def load_during(alert: dict, samples: list[float], start_ms: int) -> Optional[tuple[float, float]]:
    """(peak Mbit/s during the episode, median outside it) from the per-second uplink series."""
    if not samples or alert["timestamp"] is None:
        return None
    first = max(0, int((alert["timestamp"] - start_ms) / 1000) - 1)
    last = first + max(1, alert["duration_s"]) + 1
    during, outside = samples[first:last], samples[:first] + samples[last:]
    if not during:
        return None
    return max(during), (median(outside) if outside else 0.0)


def loss_cause(max_consecutive: int) -> str:
    return ("runs of consecutive losses point to link drops or interference" if max_consecutive > 1
            else "isolated drops point to congestion or a rate limit on the path")


def latency_alert(alert: dict, ev: Evidence) -> str:
    load = load_during(alert, ev.uplink_mbps, ev.series_start_ms)
    speed = ev.uplink_speed_mbps
    # Bufferbloat: the delay came with the uplink busy, near its speed when known, else carrying
    # several times its usual load.
    if load and load[0] >= BUSY_MBPS and ((speed and load[0] >= NEAR_SPEED * speed) or
                                          (not speed and load[0] >= LOAD_FACTOR * max(load[1], LOAD_FLOOR_MBPS))):
        share = (f"{round(100 * load[0] / speed)} % of its {speed} Mbit/s" if speed
                 else f"{load[0] / max(load[1], LOAD_FLOOR_MBPS):.0f}x its {load[1]:.2f} Mbit/s outside the episode")
        return (f"Latency to {alert['host']} rose to {alert['value']} ms (threshold {alert['threshold']} ms) "
                f"while {ev.uplink} carried up to {load[0]:.1f} Mbit/s ({share}): packets queue behind bulk "
                "traffic at the bottleneck (bufferbloat). Shape egress just below the bottleneck rate so the "
                "queue stays short: qos_auto_optimization with minimize_latency.")
    return (f"Latency to {alert['host']} exceeded {alert['threshold']} ms for {alert['duration_s']} s "
            f"(peak {alert['value']} ms, {alert['severity']}) without the uplink being busy: the delay "
            "is not caused by this device's own traffic.")


def loss_alert(alert: dict, ev: Evidence, window_s: float) -> str:
    runs = {h["host"]: (h.get("packet_loss") or {}).get("max_consecutive_loss", 0) for h in ev.hosts}
    return (f"Loss to {alert['host']} reached {alert['value']} % over {window_s:.0f} s windows "
            f"(threshold {alert['threshold']} %) for {alert['duration_s']} s"
            + (" and was still high at the end" if alert["ongoing"] else "")
            + f": {loss_cause(runs.get(alert['host'], 0))}.")


def where_latency_is(ev: Evidence) -> list[str]:
    """Whether the slow path is shared (every host slow) or beyond it (some hosts slow)."""
    limit = ev.limits["latency_ms"]
    per_host = {h: v for h, v in ((ev.perf.get("latency") or {}).get("per_host") or {}).items() if v}
    slow = [h for h, v in per_host.items() if v["p95_ms"] > limit]
    fine = [h for h in per_host if h not in slow]
    if slow and fine:
        return [f"Only {', '.join(slow)} is slow (p95 above {limit} ms) while {', '.join(fine)} is not: the delay "
                "is beyond the shared path (that host or its route), not the local link."]
    if slow and len(per_host) > 1:
        return [f"Every probed host is slow (p95 above {limit} ms): look at the local link or the router's load "
                "first."]
    return []


def per_host(ev: Evidence) -> list[str]:
    out = []
    for host in ev.hosts:
        loss = host.get("packet_loss") or {}
        if loss.get("percent", 0) > ev.limits["packet_loss_percent"] and host.get("received"):
            out.append(f"{host['host']} lost {loss['lost']} of {host['sent']} probes ({loss['percent']} %) in "
                       f"{loss['burst_events']} burst(s), at most {loss['max_consecutive_loss']} in a row: "
                       f"{loss_cause(loss['max_consecutive_loss'])}.")
        if host.get("error"):
            out.append(f"{host['host']}: {host['error']}; check that it is up and reachable, or probe another host.")
    return out


def jitter_and_throughput(ev: Evidence) -> list[str]:
    out = []
    jitter = ev.perf.get("jitter") or {}
    if jitter.get("avg_ms") is not None and jitter["avg_ms"] > ev.limits["jitter_ms"]:
        out.append(f"Jitter averages {jitter['avg_ms']} ms (threshold {ev.limits['jitter_ms']} ms): voice and games "
                   "will stutter; give them priority with qos_config (policy gaming or priority rules).")
    threshold = ev.throughput_threshold
    throughput = ev.perf.get("throughput") or {}
    if threshold and throughput.get("avg_mbps") is not None and not ev.idle and throughput["avg_mbps"] < threshold:
        out.append(f"{ev.uplink} averaged {throughput['avg_mbps']} Mbit/s under load, below the {threshold} Mbit/s "
                   "threshold: the uplink or the upstream path is the bottleneck.")
    if ev.idle and threshold:
        out.append(f"{ev.uplink} was idle during the monitor, so the {threshold} Mbit/s throughput threshold could "
                   "not be judged: monitor again while the link is in use.")
    return out


def all_clear(ev: Evidence) -> str:
    figures = []
    latency, jitter, loss = (ev.perf.get(k) or {} for k in ("latency", "jitter", "packet_loss"))
    if latency.get("p95_ms") is not None:
        figures.append(f"latency p95 {latency['p95_ms']} ms")
    if jitter.get("avg_ms") is not None:
        figures.append(f"jitter {jitter['avg_ms']} ms")
    if loss.get("total_percent") is not None:
        figures.append(f"loss {loss['total_percent']} %")
    return "Every measured metric stayed within its threshold" + (f" ({', '.join(figures)})." if figures else ".")


def performance(ev: Evidence, loss_window_s: float) -> list[str]:
    """Every recommendation for a monitoring run, most specific first."""
    out = [latency_alert(a, ev) for a in ev.alerts if a["metric"] == "latency"]
    out += [loss_alert(a, ev, loss_window_s) for a in ev.alerts if a["metric"] == "packet_loss"]
    out += where_latency_is(ev) + per_host(ev) + jitter_and_throughput(ev)
    return out or [all_clear(ev)]
