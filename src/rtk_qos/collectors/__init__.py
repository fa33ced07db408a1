"""Collectors: one module per source of measurements (links, protocol counters, flows, probes).

Each reads the kernel directly, returns plain data, and says where a figure came from or why it
could not be read; none of them keeps state between calls. Each registers a `Collector` (see
`base.py`): importing them through `load_all()` fills the registry.
"""
from __future__ import annotations

import importlib

from .base import REGISTRY, Collector, register

# One entry per collector module; adding a collector is one new module and one line here.
_MODULES = ("links", "snmp", "flows", "probe")


def load_all() -> dict[str, Collector]:
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return REGISTRY


def collect(names: list[str] | None = None) -> dict[str, dict]:
    """name -> reading of the named collectors (default: those enabled by default).
    ValueError naming the unknown ones and listing the known ones."""
    registry = load_all()
    unknown = [n for n in names or () if n not in registry]
    if unknown:
        raise ValueError(f"no collector named {unknown[0]!r}; known: {', '.join(sorted(registry))}")
    chosen = names or [n for n, c in registry.items() if c.enabled]
    return {name: registry[name].collect() for name in chosen}


__all__ = ["Collector", "REGISTRY", "collect", "load_all", "register"]
