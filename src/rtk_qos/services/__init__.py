"""The measurements one process shares: one link sampler and one continuous probe.

The agent builds them once and ticks the sampler in its monitor loop; a one-shot CLI run starts
its own with `running()`. Commands reach them through `Context.services` and subscribe, so the
gateway is probed once a second however many commands want its figures.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from .probing import GATEWAY, ContinuousProbe, Subscription
from .sampling import LinkSampler

__all__ = ["GATEWAY", "ContinuousProbe", "LinkSampler", "Services", "Subscription", "current", "install",
           "running"]


@dataclass
class Services:
    sampler: LinkSampler
    probes: Optional[ContinuousProbe] = None  # None: the process probes nothing continuously


_lock = threading.Lock()
_current: Optional[Services] = None


def install(services: Optional[Services]) -> None:
    """Make `services` the process's (None: none)."""
    global _current
    with _lock:
        _current = services


def current() -> Optional[Services]:
    with _lock:
        return _current


@contextlib.contextmanager
def running(probe_interval_s: float = 1.0, probe_timeout_s: float = 2.0) -> Iterator[Services]:
    """Services for a one-shot run: the sampler ticking at 1 Hz and the gateway probe, installed
    for the duration of the block and stopped after it."""
    stop = threading.Event()
    services = Services(LinkSampler(), ContinuousProbe([], probe_interval_s, probe_timeout_s, stop))
    threads = [services.sampler.run(stop)]
    services.probes.start()
    install(services)
    try:
        yield services
    finally:
        install(None)
        stop.set()
        for thread in threads:
            thread.join(2.0)
        services.probes.join(probe_timeout_s + 1)
