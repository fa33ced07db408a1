"""qos_performance_monitor: probe hosts and watch the uplink for `monitor_duration` seconds.

Data flow: replies of every target (from the process's continuous probe where
it already probes the address, else from a Prober thread of our own) feed that
host's native rolling series and jitter estimator; the process's link sampler
hands over the uplink's rate each second; once a second this thread evaluates the alert thresholds on the live figures, opening and closing alert
episodes (`alerts.py`, published as events while the monitor runs). At the end
the native core summarises every series, `MonitorResult` assembles the result
and `recommendations.py` words the advice. Formulas are in the README.
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from typing import Optional

from .. import _core
from ..collectors import links
from ..collectors.probe import ProbeUnavailable, Prober, gateway_address, resolve_hosts
from ..protocol.errors import CommandError
from ..vocab.units import mbps
from . import recommendations
from .alerts import Alerts
from .base import CommandSpec, Context, register

OP = "qos_performance_monitor"
PROBED = {"latency", "jitter", "packet_loss"}
# Used for the health score and stability when the request gives no threshold.
DEFAULT_THRESHOLDS = {"latency_ms": 100.0, "jitter_ms": 30.0, "packet_loss_percent": 1.0}
LIVE_LATENCY_PROBES = 5     # latency alerts look at the mean of the last 5 replies
LIVE_LOSS_SECONDS = 10.0    # loss alerts look at the probes resolved in the last 10 s
IDLE_MBPS = 0.1             # below this average the uplink carried no real demand
PROGRESS_EVERY_S = 10.0
PROBE_READY_S = 5.0         # wait at most this long for the continuous probe's first look-up


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


def _default_targets(ctx: Context) -> tuple[list[str], list[str]]:
    """The default gateway and the broker host; notes say what was left out and why."""
    targets, notes = [], []
    gateway, problem = gateway_address()
    if gateway is not None:
        targets.append(gateway)
    else:
        notes.append(problem)
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


class _Probes:
    """Replies and losses of every target: from the process's continuous probe where it already
    probes the address at this rate (the gateway), from a Prober of our own for the rest."""

    def __init__(self, ctx: Context, by_address: dict[str, list[str]], live: dict[str, _Live],
                 interval: float, timeout: float):
        self._by_address = by_address
        self._live = live
        self.subscriptions: dict = {}
        shared = ctx.services.probes
        if shared is not None and shared.interval == interval:
            shared.ready.wait(PROBE_READY_S)
            for address in by_address:
                subscription = shared.subscribe(address)
                if subscription is not None:
                    subscription.on_reply(lambda rtt, a=address: self._reply(a, rtt))
                    self.subscriptions[address] = subscription
        own = [a for a in by_address if a not in self.subscriptions]
        self.prober = Prober(own, interval, timeout) if own else None
        self.reports: dict = {}
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._thread = None

    def _reply(self, address: str, rtt_ms: float) -> None:
        for name in self._by_address.get(address, ()):
            self._live[name].reply(rtt_ms)

    def start(self, duration: float) -> None:
        if self.prober is None:
            return

        def probe() -> None:
            try:
                self.reports.update(self.prober.run(duration, self._stop, lambda a, _seq, rtt: self._reply(a, rtt)))
            except ProbeUnavailable as exc:
                self.error = str(exc)

        self._thread = threading.Thread(target=probe, name="rtk-qos-monitor-probe", daemon=True)
        self._thread.start()

    def live_loss(self, address: str) -> Optional[float]:
        subscription = self.subscriptions.get(address)
        if subscription is not None:
            return subscription.live_loss(LIVE_LOSS_SECONDS)
        return self.prober.live_loss(address, LIVE_LOSS_SECONDS)

    def finish(self) -> dict:
        """address -> ProbeReport of every target probed."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        for address, subscription in self.subscriptions.items():
            self.reports[address] = subscription.close()
        return self.reports


def run(args: dict, ctx: Context) -> dict:
    duration = args["monitor_duration"]
    out = MonitorResult(args, set(args["metrics"]), dict(args.get("alert_thresholds") or {}),
                        float(ctx.settings.get("probe_interval_s", 1.0)))
    timeout = float(ctx.settings.get("probe_timeout_s", 2.0))

    if out.metrics & PROBED:
        names = args.get("target_hosts")
        out.targets_source = "args"
        if not names:
            names, notes = _default_targets(ctx)
            out.warnings.extend(notes)
            out.targets_source = "default: gateway and broker"
        if not names:
            raise CommandError("E_RESOURCE_UNAVAILABLE",
                               "args.target_hosts: none given, and this device has no default gateway or "
                               "remote broker to probe")
        for name, (address, error) in resolve_hosts(names).items():
            if address:
                out.resolved[name] = address
            else:
                out.errors[name] = error
        out.hosts = list(names)

    uplink_rates: list = []
    rates_lock = threading.Lock()
    unsubscribe = None
    if "throughput" in out.metrics:
        primary = links.primary_interface()
        out.uplink = primary.name if primary else None
        if out.uplink is None:
            out.warnings.append("no uplink interface (no default route, no link with a MAC): throughput not measured")
        else:
            def on_tick(reading) -> None:
                rates = reading.rates.get(out.uplink)
                if rates:
                    with rates_lock:
                        uplink_rates.append(mbps(rates[0] + rates[1]))
            unsubscribe = ctx.services.sampler.subscribe(on_tick)

    live = {name: _Live() for name in out.resolved}
    by_address: dict[str, list[str]] = {}
    for name, address in out.resolved.items():
        by_address.setdefault(address, []).append(name)
    judged = {metric: list(out.resolved) for metric in out.metrics & PROBED}
    if unsubscribe:
        judged["throughput"] = [out.uplink]
    alerts = Alerts(ctx.event, ctx.command_id, out.thresholds, judged)
    probes = _Probes(ctx, by_address, live, out.interval, timeout)

    out.started_ms = ctx.clock.wall_ms()
    start = _core.monotonic()
    probes.start(duration)
    next_progress = start + PROGRESS_EVERY_S
    taken = 0
    for k in range(1, duration + 1):
        if not ctx.wait_until(start + k):
            break
        now_ms = out.started_ms + int((_core.monotonic() - start) * 1000)
        with rates_lock:
            fresh, taken = uplink_rates[taken:], len(uplink_rates)
        for value in fresh:
            out.throughput.append(value)
            # An idle uplink says nothing about capacity: no throughput verdict without demand.
            recent = out.throughput[-10:]
            demand = sum(recent) / len(recent) >= IDLE_MBPS
            alerts.evaluate("throughput", out.uplink, value if demand else None, now_ms)
        for name, state in live.items():
            alerts.evaluate("latency", name, state.latency(), now_ms)
            alerts.evaluate("jitter", name, state.jitter_ms(), now_ms)
            alerts.evaluate("packet_loss", name, probes.live_loss(out.resolved[name]), now_ms)
        if _core.monotonic() >= next_progress:
            next_progress += PROGRESS_EVERY_S
            ctx.progress({"op": OP, "stage": "monitoring", "elapsed_s": k, "of_s": duration,
                          "percent": round(100.0 * k / duration, 1), "open_alerts": alerts.open_count})
    if unsubscribe:
        unsubscribe()
    out.reports = probes.finish()
    out.elapsed = _core.monotonic() - start
    if probes.error:
        out.warnings.append(probes.error)
    if ctx.stop_reason:
        out.warnings.append(f"stopped early ({ctx.stop_reason}) after {out.elapsed:.0f} of {duration} s")
    out.alerts = alerts.finish(out.started_ms + int(out.elapsed * 1000))
    return out.build()


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


@dataclass
class MonitorResult:
    """What one run measured, filled in as it goes; `build()` assembles the protocol's result."""
    args: dict
    metrics: set
    thresholds: dict                    # as asked (alert_thresholds)
    interval: float                     # probe interval, seconds
    hosts: list = field(default_factory=list)        # target names, as given
    targets_source: Optional[str] = None
    resolved: dict = field(default_factory=dict)     # name -> address
    errors: dict = field(default_factory=dict)       # name -> why it was not probed
    reports: dict = field(default_factory=dict)      # address -> ProbeReport
    uplink: Optional[str] = None
    throughput: list = field(default_factory=list)   # uplink Mbit/s, one per second
    alerts: list = field(default_factory=list)
    elapsed: float = 0.0
    started_ms: int = 0
    warnings: list = field(default_factory=list)

    def build(self) -> dict:
        limits = {**DEFAULT_THRESHOLDS, **{k: v for k, v in self.thresholds.items() if v is not None}}
        per_host = [_host_figures(name, self.resolved.get(name), self.errors.get(name),
                                  self.reports.get(self.resolved.get(name)), limits["jitter_ms"]) for name in self.hosts]
        probed = [h for h in per_host if h.get("sent")]
        all_rtts = [rtt for address in self.resolved.values() if address in self.reports
                    for rtt in self.reports[address].rtts_ms]
        perf: dict = {}
        unavailable: dict = {}
        if "latency" in self.metrics:
            perf["latency"] = _latency_summary(all_rtts) or {}
            perf["latency"]["per_host"] = {h["host"]: h.get("latency") for h in per_host}
            if not all_rtts:
                unavailable["latency"] = "no probe was answered"
        if "jitter" in self.metrics:
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
        if "packet_loss" in self.metrics:
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
        if "throughput" in self.metrics:
            perf["throughput"] = _throughput(self.throughput, self.uplink, self.thresholds.get("throughput_mbps"))
            idle = perf["throughput"].get("idle", False)
            if not self.throughput:
                unavailable["throughput"] = "no uplink counters were read"
        score, basis = _health(perf, limits, self.thresholds, idle)
        out = {
            "monitoring_summary": {
                "duration": round(self.elapsed, 1), "requested_duration": self.args["monitor_duration"],
                "total_measurements": sum(h.get("sent", 0) for h in per_host) + len(self.throughput),
                "probes_sent": sum(h.get("sent", 0) for h in per_host),
                "probes_answered": sum(h.get("received", 0) for h in per_host),
                "throughput_samples": len(self.throughput), "alerts_triggered": len(self.alerts),
                "overall_health_score": score, "health_basis": basis,
                "targets": self.hosts, "targets_source": self.targets_source, "probe_interval_s": self.interval,
                "thresholds": {k: v for k, v in self.thresholds.items() if v is not None},
            },
            "performance_metrics": perf,
            "hosts": per_host,
            "alerts": self.alerts,
            "recommendations": recommendations.performance(recommendations.Evidence(
                perf, per_host, self.alerts, limits, self.thresholds.get("throughput_mbps"), self.uplink,
                _speed(self.uplink), idle, self.throughput, self.started_ms), LIVE_LOSS_SECONDS),
            "warnings": self.warnings,
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


def _speed(uplink: Optional[str]) -> Optional[float]:
    info = links.link(uplink) if uplink else None
    return info.speed_mbps if info else None


SPEC = register(CommandSpec(op=OP, run=run, estimate_ms=estimate_ms, live=True,
                            summary="Probe hosts and the uplink: latency, jitter, loss, throughput, alerts"))
