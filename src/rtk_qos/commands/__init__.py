"""QoS commands: one module each, found through the registry.

Importing this package registers every command; `get(op)` returns its spec.
"""
from __future__ import annotations

import importlib

from .base import REGISTRY, CommandSpec, Context, register

# One entry per command module; adding a command is one new module and one line here.
_MODULES = ("traffic_analysis", "performance_monitor", "anomaly_detection", "auto_optimization", "config")


def load_all() -> dict[str, CommandSpec]:
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return REGISTRY


def get(op: str) -> CommandSpec | None:
    return load_all().get(op)


__all__ = ["CommandSpec", "Context", "REGISTRY", "get", "load_all", "register"]
