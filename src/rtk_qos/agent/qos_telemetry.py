"""`telemetry/qos`: the agent's 1 Hz measurements, batched, for controllers that watch a fleet.

Every monitor tick adds one sample per series (the history's names: `<if>.rx_mbps`,
`<if>.tx_mbps`, `probe.<target>.latency_ms|jitter_ms|loss_pct`); every
`telemetry.qos_period_s` the batch leaves as one message (schema `telemetry.qos/1.0`,
QoS 0 like the other telemetry, *decided*):

  {"uplink": "eth0", "start_ms": 1699123456000, "step_ms": 1000,
   "series": {"probe.gateway.latency_ms": [1.2, null, 1.3], "eth0.rx_mbps": [...], ...}}

Sample i of every series was taken at start_ms + i * step_ms; null is a second without
a value (no probe reply). A batch breaks early when a tick is late (the step would lie)
or the set of series changes, so the grid is always exact.
"""
from __future__ import annotations

import math
from typing import Optional

SCHEMA = "telemetry.qos/1.0"
# Fleet-scale: 10 series x 60 samples stays far below the agent's 64 KiB payload limit.
MAX_SAMPLES = 60


class QosBatch:
    def __init__(self, period_s: float, step_s: float):
        self.period_ms = int(period_s * 1000)
        self.step_ms = int(step_s * 1000)
        self.start_ms: Optional[int] = None
        self.count = 0
        self.series: dict[str, list] = {}

    def add(self, t_ms: int, rates: dict, probes: dict) -> list[dict]:
        """Add one tick; returns the payloads of the batches it completed (none, one or two)."""
        values = {f"{name}.{k}": r[k] for name, r in rates.items() for k in ("rx_mbps", "tx_mbps")}
        values.update({f"probe.{target}.{k}": v for target, figures in probes.items() for k, v in figures.items()})
        done = []
        on_grid = self.start_ms is not None and abs(t_ms - (self.start_ms + self.count * self.step_ms)) < self.step_ms / 2
        if self.count and (not on_grid or values.keys() != self.series.keys()):
            done.append(self.take())
        if not self.count:
            self.start_ms, self.series = t_ms, {name: [] for name in values}
        for name, value in values.items():
            self.series[name].append(None if value is None or math.isnan(value) else round(value, 3))
        self.count += 1
        if self.count * self.step_ms >= self.period_ms or self.count >= MAX_SAMPLES:
            done.append(self.take())
        return done

    def take(self) -> Optional[dict]:
        if not self.count:
            return None
        payload = {"start_ms": self.start_ms, "step_ms": self.step_ms, "series": self.series}
        self.count, self.start_ms, self.series = 0, None, {}
        return payload
