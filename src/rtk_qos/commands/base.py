"""The one shape every QoS command has.

A command module declares a `CommandSpec`: its op name, a function that runs it
with validated args and a `Context`, and what the dispatcher must know before
running it (estimated duration, whether it changes the router, which resource
it needs alone). The dispatcher knows commands only through the registry.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..services import Services, current as current_services

Progress = Callable[[dict], None]
EventSink = Callable[[str, dict], None]


class Clock:
    """Monotonic time for intervals, wall time for timestamps, and waits that end on stop."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def wall_ms() -> int:
        return time.time_ns() // 1_000_000


@dataclass
class Context:
    """What a running command may use: clock, progress, events, cancel, deadline, settings.

    `settings` carries the agent's configuration a command may need (probe rate,
    broker host); `history` is the agent's metric history (a `HistoryStore`; a
    one-shot run loads the saved one, if any); `command_id` names the request in events;
    `services` are the process's shared sampler and continuous probe, to subscribe to
    (None: the process has none). `deadline` is on the
    clock's monotonic scale. A command polls `stopped()` or
    waits with `wait_until()`; when either reports a stop, the command returns
    what it has measured so far and the runner reports `stop_reason`.
    """

    clock: Clock = field(default_factory=Clock)
    progress: Progress = lambda _msg: None
    event: EventSink = lambda _type, _payload: None
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: Optional[float] = None
    command_id: str = ""
    settings: dict = field(default_factory=dict)
    history: Optional[object] = None
    services: Optional[Services] = field(default_factory=current_services)

    @property
    def stop_reason(self) -> Optional[str]:
        if self.cancel.is_set():
            return "cancelled"
        if self.deadline is not None and self.clock.monotonic() >= self.deadline:
            return "timeout"
        return None

    def stopped(self) -> bool:
        return self.stop_reason is not None

    def wait_until(self, when: float) -> bool:
        """Sleep until monotonic `when`; False if cancelled or past the deadline first."""
        end = when if self.deadline is None else min(when, self.deadline)
        remaining = end - self.clock.monotonic()
        if remaining > 0 and self.cancel.wait(remaining):
            return False
        return not self.stopped()


@dataclass(frozen=True)
class CommandSpec:
    op: str
    run: Callable[[dict, Context], dict]
    estimate_ms: Callable[[dict], int]
    changes_router: bool = False  # refused unless the configuration allows it
    resource: Optional[str] = None  # commands naming the same resource never overlap
    live: bool = False  # measures the network now: runs with the process's sampler and probe (started if none)
    summary: str = ""


REGISTRY: dict[str, CommandSpec] = {}


def register(spec: CommandSpec) -> CommandSpec:
    if spec.op in REGISTRY:
        raise ValueError(f"command {spec.op} registered twice")
    REGISTRY[spec.op] = spec
    return spec

