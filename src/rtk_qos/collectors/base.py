"""The one shape every collector has, as node_exporter's collectors share `Update()` and a registry.

A collector module registers one `Collector`: its name, what it reads, what one `collect()` costs
(stated, so whoever enables it knows), whether it is on by default, and `collect()` itself, which
returns plain data (JSON-ready) that says where each figure came from or why it could not be
read. Collectors know no command and no MQTT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Collector:
    name: str
    summary: str
    cost: str                       # what one collect() costs: files read, syscalls, packets sent
    collect: Callable[[], dict]
    enabled: bool = True            # on unless asked otherwise (off: it sends packets or is heavy)


REGISTRY: dict[str, Collector] = {}


def register(collector: Collector) -> Collector:
    if collector.name in REGISTRY:
        raise ValueError(f"collector {collector.name} registered twice")
    REGISTRY[collector.name] = collector
    return collector
