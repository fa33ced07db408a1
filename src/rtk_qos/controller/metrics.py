"""Prometheus exposition: per-device latency, jitter, loss, throughput and health, and the
controller's own counters, read from the engine's in-memory figures at scrape time."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from .sessions import THROUGHPUT_SERIES, series_metric

HEALTH_LEVELS = {"ok": 0, "warning": 1, "error": 2, "critical": 3}
DEVICE_GAUGES = {"latency": ("rtk_qos_device_latency_ms", "Newest probe round trip, ms"),
                 "jitter": ("rtk_qos_device_jitter_ms", "Newest RFC 3550 jitter of the probe, ms"),
                 "packet_loss": ("rtk_qos_device_packet_loss_percent", "Probe loss over the agent's window, percent")}


class EngineCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        engine = self.engine
        gauges = {metric: GaugeMetricFamily(name, doc, labels=["device_id", "target"])
                  for metric, (name, doc) in DEVICE_GAUGES.items()}
        throughput = GaugeMetricFamily("rtk_qos_device_throughput_mbps", "Newest uplink rx+tx rate, Mbit/s",
                                       labels=["device_id"])
        for device_id, latest in list(engine.latest.items()):
            for name, value in list(latest.items()):
                if name == THROUGHPUT_SERIES:
                    throughput.add_metric([device_id], value)
                    continue
                key = series_metric(name)
                if key is not None:
                    gauges[key[0]].add_metric([device_id, key[1]], value)
        health = GaugeMetricFamily("rtk_qos_device_health", "Device health from its state: 0 ok, 1 warning, "
                                   "2 error, 3 critical", labels=["device_id"])
        online = GaugeMetricFamily("rtk_qos_device_online", "1 when the device's lwt says online",
                                   labels=["device_id"])
        for device_id, device in list(engine.fleet.devices.items()):
            if device.get("health") in HEALTH_LEVELS:
                health.add_metric([device_id], HEALTH_LEVELS[device["health"]])
            online.add_metric([device_id], 1 if device.get("status") == "online" else 0)
        yield from gauges.values()
        yield from (throughput, health, online)
        messages = CounterMetricFamily("rtk_qos_controller_events", "Controller counters by kind",
                                       labels=["kind"])
        for kind, value in sorted(engine.counts.items()):
            messages.add_metric([kind], value)
        yield messages
        yield GaugeMetricFamily("rtk_qos_controller_inbox", "Messages waiting for the ingest thread",
                                value=engine.backlog)
        yield GaugeMetricFamily("rtk_qos_controller_active_sessions", "Active monitoring sessions",
                                value=len(engine.sessions.active))
        requests = CounterMetricFamily("rtk_qos_controller_commands", "Command correlation counters",
                                       labels=["kind"])
        for kind, value in engine.requests.counts.items():
            requests.add_metric([kind], value)
        yield requests


def registry(engine) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(EngineCollector(engine))
    return reg
