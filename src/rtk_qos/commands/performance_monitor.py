"""qos_performance_monitor: probe hosts and watch the uplink for `monitor_duration` seconds.

Data flow: the prober thread sends paced probes to every target and feeds each
reply into that host's native rolling series and jitter estimator; once a
second this thread reads the uplink's counters through the native sampler and
evaluates the alert thresholds on the live figures, opening and closing alert
episodes (published as events while the monitor runs). At the end the native
core summarises every series. Formulas are in the README.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import _core
from ..collectors import links
from ..collectors.probe import ProbeUnavailable, Prober, resolve_hosts
from ..protocol.errors import CommandError
from .base import CommandSpec, Context, register

OP = "qos_performance_monitor"
PROBED = {"latency", "jitter", "packet_loss"}
# Used for the health score and stability when the request gives no threshold.
DEFAULT_THRESHOLDS = {"latency_ms": 100.0, "jitter_ms": 30.0, "packet_loss_percent": 1.0}
LIVE_LATENCY_PROBES = 5     # latency alerts look at the mean of the last 5 replies
LIVE_LOSS_SECONDS = 10.0    # loss alerts look at the probes resolved in the last 10 s
OPEN_AFTER = 3              # evaluations (seconds) past the threshold before an episode opens
CLOSE_AFTER = 3             # evaluations back inside the hysteresis band before it closes
HYSTERESIS = 0.10           # recovered = 10 % inside the threshold
IDLE_MBPS = 0.1             # below this average the uplink carried no real demand
PROGRESS_EVERY_S = 10.0
BITS_PER_MBIT = 1e6


def estimate_ms(args: dict) -> int:
    return args["monitor_duration"] * 1000 + 3000


@dataclass
class _Live:
    """One host's figures as replies arrive (written by the prober thread)."""
    recent: object = field(default_factory=lambda: _core.Rolling(LIVE_LATENCY_PROBES))
    jitter: object = field(default_factory=_core.Jitter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, rtt_ms: float) -> None:
        with self.lock:
            self.recent.push(rtt_ms)
            self.jitter.update(rtt_ms)

    def latency(self) -> Optional[float]:
        with self.lock:
            return self.recent.mean if self.recent.n else None

    def jitter_ms(self) -> Optional[float]:
        with self.lock:
            return self.jitter.jitter if self.jitter.n >= 2 else None


@dataclass
class Episode:
    """An alert: a run of evaluations past a threshold, with hysteresis and a minimum duration."""
    metric: str
    host: Optional[str]
    threshold: float
    threshold_type: str  # "max": alert above; "min": alert below
    unit: str
    over: int = 0
    under: int = 0
    started_ms: Optional[int] = None
    recovering_since_ms: Optional[int] = None
    peak: Optional[float] = None
    open: bool = False
    closed: list = field(default_factory=list)

    def _exceeds(self, value: float) -> bool:
        return value > self.threshold if self.threshold_type == "max" else value < self.threshold

    def _recovered(self, value: float) -> bool:
        if self.threshold_type == "max":
            return value <= self.threshold * (1 - HYSTERESIS)
        return value >= self.threshold * (1 + HYSTERESIS)

    def _worse(self, value: float) -> bool:
        return self.peak is None or (value > self.peak if self.threshold_type == "max" else value < self.peak)

    def severity(self) -> str:
        peak = self.peak if self.peak is not None else self.threshold
        if self.threshold_type == "max":
            ratio = peak / self.threshold if self.threshold > 0 else float("inf")
        else:
            ratio = self.threshold / peak if peak > 0 else float("inf")
        return "warning" if ratio < 1.5 else "error" if ratio < 3.0 else "critical"

    def evaluate(self, value: Optional[float], now_ms: int) -> Optional[str]:
        """Feed one evaluation; returns "open" or "close" when the episode changes state."""
        if value is None:
            return None
        if not self.open:
            if self._exceeds(value):
                if self.over == 0:
                    self.started_ms, self.peak = now_ms, None
                self.over += 1
                if self._worse(value):
                    self.peak = value
                if self.over >= OPEN_AFTER:
                    self.open, self.under = True, 0
                    return "open"
            else:
                self.over = 0
            return None
        if self._worse(value):
            self.peak = value
        if self._recovered(value):
            if self.under == 0:
                self.recovering_since_ms = now_ms
            self.under += 1
            if self.under >= CLOSE_AFTER:
                self.close(self.recovering_since_ms, ongoing=False)
                return "close"
        else:
            self.under = 0
        return None

    def close(self, end_ms: int, ongoing: bool) -> dict:
        alert = self.as_alert(end_ms, ongoing)
        self.closed.append(alert)
        self.open, self.over, self.under = False, 0, 0
        return alert

    def as_alert(self, end_ms: int, ongoing: bool) -> dict:
        return {"timestamp": self.started_ms, "metric": self.metric, "host": self.host,
                "value": round(self.peak, 3), "threshold": self.threshold, "threshold_type": self.threshold_type,
                "unit": self.unit, "severity": self.severity(),
                "duration_s": max(0, int(round((end_ms - self.started_ms) / 1000))),
                "ended_at": None if ongoing else end_ms, "ongoing": ongoing}


class _Alerts:
    """Every (metric, host) episode tracker, and the events they publish."""

    UNITS = {"latency": "ms", "jitter": "ms", "packet_loss": "percent", "throughput": "Mbps"}
    KEYS = {"latency": "latency_ms", "jitter": "jitter_ms", "packet_loss": "packet_loss_percent",
            "throughput": "throughput_mbps"}

    def __init__(self, ctx: Context, thresholds: dict, metrics: set, hosts: list[str], uplink: Optional[str]):
        self.ctx = ctx
        self.episodes: dict[tuple, Episode] = {}
        for metric in sorted(metrics):
            threshold = thresholds.get(self.KEYS[metric])
            if threshold is None:
                continue
            targets = [uplink] if metric == "throughput" else hosts
            for host in targets:
                self.episodes[(metric, host)] = Episode(metric, host, float(threshold),
                                                        "min" if metric == "throughput" else "max", self.UNITS[metric])

    def evaluate(self, metric: str, host: Optional[str], value: Optional[float], now_ms: int) -> None:
        episode = self.episodes.get((metric, host))
        if episode is None:
            return
        change = episode.evaluate(value, now_ms)
        if change:
            self._publish(episode, change, value, now_ms)

    def _publish(self, episode: Episode, change: str, value: float, now_ms: int) -> None:
        duration = max(0, int(round((now_ms - episode.started_ms) / 1000)))
        self.ctx.event("threshold", {
            "event_type": "threshold_exceeded", "sensor_type": "network", "current_value": round(value, 3),
            "threshold_value": episode.threshold, "threshold_type": episode.threshold_type,
            "unit": episode.unit, "duration_s": duration})
        alert = episode.closed[-1] if change == "close" else episode.as_alert(now_ms, ongoing=True)
        self.ctx.event("qos_alert", {"event_type": "qos_alert", "severity": alert["severity"], "state": change
                                     if change == "open" else "closed", "command_id": self.ctx.command_id,
                                     "current_value": round(value, 3), **alert})

    def finish(self, end_ms: int) -> list[dict]:
        out = []
        for episode in self.episodes.values():
            if episode.open:
                episode.close(end_ms, ongoing=True)
            out.extend(episode.closed)
        return sorted(out, key=lambda a: a["timestamp"])

    @property
    def open_count(self) -> int:
        return sum(1 for e in self.episodes.values() if e.open)


def _default_targets(ctx: Context) -> tuple[list[str], list[str]]:
    """The default gateway and the broker host; notes say what was left out and why."""
    targets, notes = [], []
    route = links.default_gateway(4) or links.default_gateway(6)
    if route is not None:
        targets.append(route.gateway if route.family == 4 or not route.gateway.startswith("fe80")
                       else f"{route.gateway}%{route.ifname}")
    else:
        notes.append("no default gateway to probe")
    broker = ctx.settings.get("broker_host")
    if broker:
        try:
            loopback = ipaddress.ip_address(broker).is_loopback
        except ValueError:
            loopback = broker == "localhost"
        if loopback:
            notes.append(f"broker {broker} is on this device: probing it measures nothing")
        elif broker not in targets:
            targets.append(broker)
    return targets, notes


def run(args: dict, ctx: Context) -> dict:
    duration = args["monitor_duration"]
    metrics = set(args["metrics"])
    thresholds = dict(args.get("alert_thresholds") or {})
    interval = float(ctx.settings.get("probe_interval_s", 1.0))
    timeout = float(ctx.settings.get("probe_timeout_s", 2.0))
    warnings: list[str] = []

    hosts, resolved, errors = [], {}, {}
    if metrics & PROBED:
        names = args.get("target_hosts")
        source = "args"
        if not names:
            names, notes = _default_targets(ctx)
            warnings.extend(notes)
            source = "default: gateway and broker"
        if not names:
            raise CommandError("E_RESOURCE_UNAVAILABLE",
                               "args.target_hosts: none given, and this device has no default gateway or "
                               "remote broker to probe")
        for name, (address, error) in resolve_hosts(names).items():
            if address:
                resolved[name] = address
            else:
                errors[name] = error
        hosts = list(names)
    else:
        source = None

    uplink = None
    sampler = None
    if "throughput" in metrics:
        primary = links.primary_interface()
        uplink = primary.name if primary else None
        if uplink is None:
            warnings.append("no uplink interface (no default route, no link with a MAC): throughput not measured")
        else:
            sampler = _core.Sampler(capacity=2, history=duration + 2, window=min(60, duration))
            sampler.track([uplink])

    live = {name: _Live() for name in resolved}
    by_address = {}
    for name, address in resolved.items():
        by_address.setdefault(address, []).append(name)
    alerts = _Alerts(ctx, thresholds, metrics - {"throughput"} if not sampler else metrics,
                     list(resolved), uplink)

    stop = threading.Event()
    reports: dict = {}
    prober_error: list[str] = []
    prober = Prober(list(by_address), interval, timeout) if by_address else None

    def on_reply(address: str, _seq: int, rtt_ms: float) -> None:
        for name in by_address.get(address, ()):
            live[name].reply(rtt_ms)

    def probe() -> None:
        try:
            reports.update(prober.run(duration, stop, on_reply))
        except ProbeUnavailable as exc:
            prober_error.append(str(exc))

    thread = threading.Thread(target=probe, name="rtk-qos-monitor-probe", daemon=True) if prober else None
    wall0 = ctx.clock.wall_ms()
    start = _core.monotonic()
    if thread:
        thread.start()
    if sampler:
        sampler.tick()
    throughput: list[float] = []
    next_progress = start + PROGRESS_EVERY_S
    for k in range(1, duration + 1):
        if not ctx.wait_until(start + k):
            break
        now_ms = wall0 + int((_core.monotonic() - start) * 1000)
        if sampler:
            sampler.tick()
            slots = dict((name, slot) for slot, name in sampler.active_slots())
            if uplink in slots:
                rates = sampler.last_rates(slots[uplink])
                mbps = (rates[0] + rates[1]) * 8 / BITS_PER_MBIT
                throughput.append(mbps)
                # An idle uplink says nothing about capacity: no throughput verdict without demand.
                recent = throughput[-10:]
                demand = sum(recent) / len(recent) >= IDLE_MBPS
                alerts.evaluate("throughput", uplink, mbps if demand else None, now_ms)
        for name, state in live.items():
            alerts.evaluate("latency", name, state.latency(), now_ms)
            alerts.evaluate("jitter", name, state.jitter_ms(), now_ms)
            alerts.evaluate("packet_loss", name, prober.live_loss(resolved[name], LIVE_LOSS_SECONDS), now_ms)
        if _core.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            ctx.progress({"op": OP, "stage": "monitoring", "elapsed_s": k, "of_s": duration,
                          "percent": round(100.0 * k / duration, 1), "open_alerts": alerts.open_count})
    stop.set()
    if thread:
        thread.join()
    elapsed = _core.monotonic() - start
    end_ms = wall0 + int(elapsed * 1000)
    if prober_error:
        warnings.append(prober_error[0])
    if ctx.stop_reason:
        warnings.append(f"stopped early ({ctx.stop_reason}) after {elapsed:.0f} of {duration} s")
    alert_list = alerts.finish(end_ms)
    return _result(args, metrics, thresholds, hosts, resolved, errors, reports, throughput, uplink, alert_list,
                   elapsed, source, interval, warnings, wall0)


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _latency_summary(rtts) -> Optional[dict]:
    if not len(rtts):
        return None
    series = _core.Rolling(len(rtts), len(rtts))
    series.extend(rtts)
    s = series.summary(len(rtts))
    return {"min_ms": round(s["min"], 3), "max_ms": round(s["max"], 3), "avg_ms": round(s["mean"], 3),
            "std_dev_ms": round(s["std"], 3), "p50_ms": round(s["p50"], 3), "p95_ms": round(s["p95"], 3),
            "percentile_95_ms": round(s["p95"], 3), "p99_ms": round(s["p99"], 3), "samples": len(rtts)}


def _stability(ipdv_mean: float, jitter_threshold: float) -> int:
    """100 with no delay variation, 0 when consecutive replies differ by the jitter threshold on average."""
    return int(round(100 * _clamp01(1 - ipdv_mean / jitter_threshold)))


def _host_figures(name: str, address: Optional[str], error: Optional[str], report, jitter_threshold: float) -> dict:
    out: dict = {"host": name, "address": address}
    if report is None:
        out["error"] = error or "not probed"
        return out
    jitter = _core.Jitter()
    jitter.extend(report.rtts_ms)
    out.update({
        "method": report.method, "timestamps": report.timestamps, "sent": report.sent, "received": report.received,
        "latency": _latency_summary(report.rtts_ms),
        "jitter": ({"rfc3550_ms": round(jitter.jitter, 3), "ipdv_mean_ms": round(jitter.ipdv_mean, 3),
                    "ipdv_max_ms": round(jitter.ipdv_max, 3),
                    "stability_score": _stability(jitter.ipdv_mean, jitter_threshold)} if jitter.n >= 2 else None),
        "packet_loss": {"percent": round(report.loss_percent, 3), "lost": report.lost,
                        "burst_events": len(report.loss_bursts), "max_consecutive_loss": report.max_consecutive_loss,
                        "duplicates": report.duplicates, "reordered": report.reordered} if report.sent else None,
    })
    if report.tried:
        out["no_answer_from"] = report.tried
    if report.errors:
        out["errors"] = report.errors[:5]
    if report.sent and not report.received:
        out["error"] = (f"no answer to any probe ({', '.join(report.tried + [report.method])})" if report.tried
                        else "no answer to any probe")
    return out


def _result(args, metrics, thresholds, hosts, resolved, errors, reports, throughput, uplink, alert_list,
            elapsed, source, interval, warnings, wall0) -> dict:
    limits = {**DEFAULT_THRESHOLDS, **{k: v for k, v in thresholds.items() if v is not None}}
    per_host = [_host_figures(name, resolved.get(name), errors.get(name), reports.get(resolved.get(name)),
                              limits["jitter_ms"]) for name in hosts]
    probed = [h for h in per_host if h.get("sent")]
    all_rtts = [rtt for name in resolved for rtt in (reports[resolved[name]].rtts_ms
                                                     if resolved[name] in reports else ())]
    perf: dict = {}
    unavailable: dict = {}
    if "latency" in metrics:
        perf["latency"] = _latency_summary(all_rtts) or {}
        perf["latency"]["per_host"] = {h["host"]: h.get("latency") for h in per_host}
        if not all_rtts:
            unavailable["latency"] = "no probe was answered"
    if "jitter" in metrics:
        figures = [h["jitter"] for h in probed if h.get("jitter")]
        if figures:
            ipdv_mean = sum(f["ipdv_mean_ms"] for f in figures) / len(figures)
            perf["jitter"] = {"avg_ms": round(sum(f["rfc3550_ms"] for f in figures) / len(figures), 3),
                              "max_ms": round(max(f["ipdv_max_ms"] for f in figures), 3),
                              "ipdv_mean_ms": round(ipdv_mean, 3),
                              "stability_score": _stability(ipdv_mean, limits["jitter_ms"])}
        else:
            perf["jitter"] = {}
            unavailable["jitter"] = "fewer than two answers from every host"
        perf["jitter"]["per_host"] = {h["host"]: h.get("jitter") for h in per_host}
    if "packet_loss" in metrics:
        sent = sum(h["sent"] for h in probed)
        lost = sum(h["packet_loss"]["lost"] for h in probed)
        perf["packet_loss"] = {
            "total_percent": round(100.0 * lost / sent, 3) if sent else None,
            "burst_events": sum(h["packet_loss"]["burst_events"] for h in probed),
            "max_consecutive_loss": max((h["packet_loss"]["max_consecutive_loss"] for h in probed), default=0),
            "duplicates": sum(h["packet_loss"]["duplicates"] for h in probed),
            "reordered": sum(h["packet_loss"]["reordered"] for h in probed),
            "probes_sent": sent, "per_host": {h["host"]: h.get("packet_loss") for h in per_host}}
        if not sent:
            unavailable["packet_loss"] = "no probe was sent"
    idle = False
    if "throughput" in metrics:
        perf["throughput"] = _throughput(throughput, uplink, thresholds.get("throughput_mbps"))
        idle = perf["throughput"].get("idle", False)
        if not throughput:
            unavailable["throughput"] = "no uplink counters were read"
    score, basis = _health(perf, limits, thresholds, idle)
    out = {
        "monitoring_summary": {
            "duration": round(elapsed, 1), "requested_duration": args["monitor_duration"],
            "total_measurements": sum(h.get("sent", 0) for h in per_host) + len(throughput),
            "probes_sent": sum(h.get("sent", 0) for h in per_host),
            "probes_answered": sum(h.get("received", 0) for h in per_host),
            "throughput_samples": len(throughput), "alerts_triggered": len(alert_list),
            "overall_health_score": score, "health_basis": basis,
            "targets": hosts, "targets_source": source, "probe_interval_s": interval,
            "thresholds": {k: v for k, v in thresholds.items() if v is not None},
        },
        "performance_metrics": perf,
        "hosts": per_host,
        "alerts": alert_list,
        "recommendations": _recommendations(perf, per_host, alert_list, limits, thresholds, uplink, idle,
                                            throughput, wall0),
        "warnings": warnings,
    }
    if unavailable:
        out["unavailable"] = unavailable
    return out


def _throughput(samples: list[float], uplink: Optional[str], threshold: Optional[float]) -> dict:
    out: dict = {"interface": uplink, "samples": len(samples)}
    if not samples:
        return out
    series = _core.Rolling(len(samples), len(samples))
    series.extend(samples)
    s = series.summary(len(samples))
    out.update({"min_mbps": round(s["min"], 3), "max_mbps": round(s["max"], 3), "avg_mbps": round(s["mean"], 3),
                "p95_mbps": round(s["p95"], 3),
                # 100 for a perfectly steady rate; minus the coefficient of variation, in percent.
                "consistency_percent": round(100 * _clamp01(1 - s["std"] / s["mean"]), 1) if s["mean"] > 0 else None})
    if s["mean"] < IDLE_MBPS:
        out["idle"] = True
        out["note"] = (f"the uplink was idle (average {s['mean']:.3f} Mbit/s, below {IDLE_MBPS}): these figures show "
                       "the absence of demand, not the link's capacity" +
                       ("; the throughput threshold was not evaluated" if threshold is not None else ""))
    return out


def _health(perf: dict, limits: dict, thresholds: dict, idle: bool) -> tuple[int, dict]:
    """overall_health_score = 100 - penalties (README): latency p95 up to 30 (from half the
    threshold to twice it), jitter up to 20 (same scale), loss up to 30 (full at 3x the threshold),
    throughput below its threshold up to 20 (only when asked and the link was not idle)."""
    basis = {}
    latency = perf.get("latency") or {}
    if latency.get("p95_ms") is not None:
        t = limits["latency_ms"]
        basis["latency"] = round(30 * _clamp01((latency["p95_ms"] - 0.5 * t) / (1.5 * t)), 1)
    jitter = perf.get("jitter") or {}
    if jitter.get("avg_ms") is not None:
        t = limits["jitter_ms"]
        basis["jitter"] = round(20 * _clamp01((jitter["avg_ms"] - 0.5 * t) / (1.5 * t)), 1)
    loss = perf.get("packet_loss") or {}
    if loss.get("total_percent") is not None:
        basis["packet_loss"] = round(30 * _clamp01(loss["total_percent"] / (3 * limits["packet_loss_percent"])), 1)
    throughput = perf.get("throughput") or {}
    if thresholds.get("throughput_mbps") and throughput.get("avg_mbps") is not None and not idle:
        t = thresholds["throughput_mbps"]
        basis["throughput"] = round(20 * _clamp01((t - throughput["avg_mbps"]) / t), 1)
    return int(round(max(0.0, 100.0 - sum(basis.values())))), basis


def _load_during(alert: dict, samples: list[float], wall0: int) -> Optional[tuple[float, float]]:
    """(peak Mbit/s during the episode, median outside it) from the per-second uplink series."""
    if not samples or alert["timestamp"] is None:
        return None
    first = max(0, int((alert["timestamp"] - wall0) / 1000) - 1)  # sample k covers second k..k+1
    last = first + max(1, alert["duration_s"]) + 1
    during, outside = samples[first:last], samples[:first] + samples[last:]
    if not during:
        return None
    return max(during), (_core.median_mad(outside)[0] if outside else 0.0)


def _recommendations(perf, per_host, alerts, limits, thresholds, uplink, idle, samples, wall0) -> list[str]:
    """Advice drawn from the evidence: which metric, which host, how bad, the likely cause."""
    out = []
    by_metric: dict = {}
    for alert in alerts:
        by_metric.setdefault(alert["metric"], []).append(alert)
    throughput = perf.get("throughput") or {}
    speed = None
    if uplink:
        info = links.link(uplink)
        speed = info.speed_mbps if info else None
    for alert in by_metric.get("latency", []):
        load = _load_during(alert, samples, wall0)
        # Bufferbloat: the delay came with the uplink busy, near its speed when known, else
        # carrying several times its usual load.
        if load and load[0] >= 1.0 and ((speed and load[0] >= 0.8 * speed)
                                        or (not speed and load[0] >= 3 * max(load[1], 0.01))):
            share = (f"{round(100 * load[0] / speed)} % of its {speed} Mbit/s" if speed
                     else f"{load[0] / max(load[1], 0.01):.0f}x its {load[1]:.2f} Mbit/s outside the episode")
            out.append(f"Latency to {alert['host']} rose to {alert['value']} ms (threshold {alert['threshold']} ms) "
                       f"while {uplink} carried up to {load[0]:.1f} Mbit/s ({share}): packets queue behind bulk "
                       "traffic at the bottleneck (bufferbloat). Shape egress just below the bottleneck rate so the "
                       "queue stays short: qos_auto_optimization with minimize_latency.")
        else:
            out.append(f"Latency to {alert['host']} exceeded {alert['threshold']} ms for {alert['duration_s']} s "
                       f"(peak {alert['value']} ms, {alert['severity']}) without the uplink being busy: the delay "
                       "is not caused by this device's own traffic.")
    bursts = {h["host"]: (h.get("packet_loss") or {}).get("max_consecutive_loss", 0) for h in per_host}
    for alert in by_metric.get("packet_loss", []):
        cause = ("runs of consecutive losses point to link drops or interference" if bursts.get(alert["host"], 0) > 1
                 else "isolated drops point to congestion or a rate limit on the path")
        out.append(f"Loss to {alert['host']} reached {alert['value']} % over {LIVE_LOSS_SECONDS:.0f} s windows "
                   f"(threshold {alert['threshold']} %) for {alert['duration_s']} s"
                   + (" and was still high at the end" if alert["ongoing"] else "") + f": {cause}.")
    latency = perf.get("latency") or {}
    per_host_latency = {h: v for h, v in (latency.get("per_host") or {}).items() if v}
    slow = [h for h, v in per_host_latency.items() if v["p95_ms"] > limits["latency_ms"]]
    fine = [h for h in per_host_latency if h not in slow]
    if slow and fine:
        out.append(f"Only {', '.join(slow)} is slow (p95 above {limits['latency_ms']} ms) while "
                   f"{', '.join(fine)} is not: the delay is beyond the shared path (that host or its route), "
                   "not the local link.")
    elif slow and len(per_host_latency) > 1:
        out.append(f"Every probed host is slow (p95 above {limits['latency_ms']} ms): look at the local link "
                   "or the router's load first.")
    for host in per_host:
        loss = host.get("packet_loss") or {}
        if loss.get("percent", 0) > limits["packet_loss_percent"] and host.get("received"):
            out.append(f"{host['host']} lost {loss['lost']} of {host['sent']} probes ({loss['percent']} %) in "
                       f"{loss['burst_events']} burst(s), at most {loss['max_consecutive_loss']} in a row: "
                       + ("bursts point to link drops or interference" if loss['max_consecutive_loss'] > 1
                          else "isolated drops point to congestion or a rate limit on the path") + ".")
        if host.get("error"):
            out.append(f"{host['host']}: {host['error']}; check that it is up and reachable, or probe another host.")
    jitter = perf.get("jitter") or {}
    if jitter.get("avg_ms") is not None and jitter["avg_ms"] > limits["jitter_ms"]:
        out.append(f"Jitter averages {jitter['avg_ms']} ms (threshold {limits['jitter_ms']} ms): voice and games "
                   "will stutter; give them priority with qos_config (policy gaming or priority rules).")
    threshold = thresholds.get("throughput_mbps")
    if threshold and throughput.get("avg_mbps") is not None and not idle and throughput["avg_mbps"] < threshold:
        out.append(f"{uplink} averaged {throughput['avg_mbps']} Mbit/s under load, below the {threshold} Mbit/s "
                   "threshold: the uplink or the upstream path is the bottleneck.")
    if idle and threshold:
        out.append(f"{uplink} was idle during the monitor, so the {threshold} Mbit/s throughput threshold could "
                   "not be judged: monitor again while the link is in use.")
    if not out:
        figures = []
        if latency.get("p95_ms") is not None:
            figures.append(f"latency p95 {latency['p95_ms']} ms")
        if jitter.get("avg_ms") is not None:
            figures.append(f"jitter {jitter['avg_ms']} ms")
        loss = perf.get("packet_loss") or {}
        if loss.get("total_percent") is not None:
            figures.append(f"loss {loss['total_percent']} %")
        out.append("Every measured metric stayed within its threshold" +
                   (f" ({', '.join(figures)})." if figures else "."))
    return out


SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms,
                            summary="Probe hosts and the uplink: latency, jitter, loss, throughput, alerts"))
